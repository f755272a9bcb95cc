//! `carapace bench`: the same workload natively and in wasm, in one process, and the
//! ratio of their rates. Both must reach the same checkpoint id, or the run fails.

use anyhow::{Result, ensure};
use clap::Args;

use super::run::{WorkloadArgs, print_outcome};
use crate::machines::{Factory, Source};
use crate::wasm::Limits;

/// Measure the component against the native baseline on one workload.
#[derive(Debug, Args)]
pub struct BenchCommand {
    #[command(flatten)]
    workload: WorkloadArgs,
    /// The embedded machine to measure: `echo` (the default) or `kv`.
    #[arg(long, value_name = "NAME", default_value = "echo")]
    machine: String,
}

impl BenchCommand {
    /// Run natively, then in wasm; print both and the ratio.
    pub fn execute(self, out: &mut dyn std::io::Write) -> Result<()> {
        let native = Factory::load(&Source::Native(self.machine.clone()), Limits::default())?;
        let wasm = Factory::load(&Source::Embedded(self.machine.clone()), Limits::default())?;
        let native = self.workload.execute(&native, false)?;
        let wasm = self.workload.execute(&wasm, false)?;
        say!(out, "== native")?;
        print_outcome(out, &native)?;
        say!(out, "== wasm")?;
        print_outcome(out, &wasm)?;
        ensure!(
            native.checkpoint == wasm.checkpoint,
            "native and wasm diverged: checkpoints {:?} and {:?}",
            native.checkpoint,
            wasm.checkpoint
        );
        let ratio = native.elapsed.as_secs_f64() / wasm.elapsed.as_secs_f64();
        say!(
            out,
            "== wasm/native throughput {ratio:.2} (1.00 = as fast as native)"
        )?;
        Ok(())
    }
}

//! `carapace bench`: the same workload natively and in wasm, in one process, and the
//! ratio of their rates. Both must reach the same checkpoint id, or the run fails.

use anyhow::{Result, ensure};
use clap::Args;

use super::run::{Target, WorkloadArgs, print_outcome};

/// Measure the component against the native baseline on one workload.
#[derive(Debug, Args)]
pub struct BenchCommand {
    #[command(flatten)]
    workload: WorkloadArgs,
}

impl BenchCommand {
    /// Run natively, then in wasm; print both and the ratio.
    pub fn execute(self) -> Result<()> {
        let native = self.workload.execute_on(Target::Native, &[], false)?;
        let wasm = self
            .workload
            .execute_on(Target::Wasm, crate::ECHO_COMPONENT, false)?;
        println!("== native");
        print_outcome(&native, self.workload.checkpoint_interval());
        println!("== wasm");
        print_outcome(&wasm, self.workload.checkpoint_interval());
        ensure!(
            native.checkpoint == wasm.checkpoint,
            "native and wasm diverged: checkpoints {:?} and {:?}",
            native.checkpoint,
            wasm.checkpoint
        );
        let ratio = native.report.elapsed.as_secs_f64() / wasm.report.elapsed.as_secs_f64();
        println!("== wasm/native throughput {ratio:.2} (1.00 = as fast as native)");
        Ok(())
    }
}

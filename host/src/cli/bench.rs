//! `carapace bench`: the same workload natively, in wasm with fuel metering (the
//! default), and in wasm without it, in one process, and the ratios of their rates. All
//! must reach the same checkpoint id, or the run fails.

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
    /// Print one JSON object (every run and the ratios) instead of text.
    #[arg(long)]
    json: bool,
}

impl BenchCommand {
    /// Run natively, then in wasm with and without fuel; print each and the ratios.
    pub fn execute(self, out: &mut dyn std::io::Write) -> Result<()> {
        let source = Source::Embedded(self.machine.clone());
        let native = Factory::load(&Source::Native(self.machine.clone()), Limits::default())?;
        let wasm = Factory::load(&source, Limits::default())?;
        let unmetered = Limits {
            fuel_per_call: 0,
            ..Limits::default()
        };
        let wasm_without_fuel = Factory::load(&source, unmetered)?;
        let runs = [
            ("native", self.workload.execute(&native, false)?),
            ("wasm", self.workload.execute(&wasm, false)?),
            (
                "wasm without fuel",
                self.workload.execute(&wasm_without_fuel, false)?,
            ),
        ];
        let [(_, native), (_, wasm), (_, unmetered)] = &runs;
        for (name, outcome) in [("wasm", wasm), ("wasm without fuel", unmetered)] {
            ensure!(
                native.checkpoint == outcome.checkpoint,
                "native and {name} diverged: checkpoints {:?} and {:?}",
                native.checkpoint,
                outcome.checkpoint
            );
        }
        let rate = |outcome: &super::run::Outcome| outcome.ops_per_second();
        let wasm_ratio = rate(wasm) / rate(native);
        let unmetered_ratio = rate(unmetered) / rate(native);
        let fuel_cost = 1.0 - rate(wasm) / rate(unmetered);
        if self.json {
            let runs: Vec<_> = runs
                .iter()
                .map(|(name, outcome)| {
                    let seconds = outcome.elapsed.as_secs_f64().max(1e-9);
                    serde_json::json!({
                        "engine": name,
                        "ops": outcome.report.ops,
                        "request_bytes": outcome.report.request_bytes,
                        "seconds": seconds,
                        "ops_per_second": outcome.ops_per_second(),
                        "request_megabytes_per_second":
                            outcome.report.request_bytes as f64 / seconds / 1e6,
                        "checkpoint": outcome.checkpoint.map(|(op, id)| {
                            serde_json::json!({"op": op, "id": format!("{id:032x}")})
                        }),
                    })
                })
                .collect();
            say!(
                out,
                "{}",
                serde_json::json!({
                    "machine": self.machine,
                    "runs": runs,
                    "wasm_over_native": wasm_ratio,
                    "wasm_without_fuel_over_native": unmetered_ratio,
                    "fuel_cost": fuel_cost,
                })
            )?;
            return Ok(());
        }
        for (name, outcome) in &runs {
            say!(out, "== {name}")?;
            print_outcome(out, outcome)?;
        }
        say!(
            out,
            "== wasm/native throughput {wasm_ratio:.2} (1.00 = as fast as native)"
        )?;
        say!(
            out,
            "== wasm without fuel/native {unmetered_ratio:.2}; fuel costs {:.1}% of wasm's \
             throughput",
            100.0 * fuel_cost
        )?;
        Ok(())
    }
}

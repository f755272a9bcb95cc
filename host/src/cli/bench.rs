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
    /// Measure how the cost per op changes with the state's size: one long run per
    /// engine (native, wasm), timed between every power of ten of ops, and the grid's
    /// space against the values stored. Give it many ops (`cargo xtask scale` runs 10^7).
    #[arg(long)]
    scale: bool,
    /// Echo at bodies of 0, 64 B, 1 KiB, 64 KiB and ~1 MiB: native and wasm over memory
    /// and over a data directory, and fjall doing the same work; ops/s, MB/s, p50 and
    /// p99 latency, the ratios, and a chart (`--chart`).
    #[arg(long, conflicts_with = "scale")]
    matrix: bool,
    /// With `--matrix`: few ops per cell, to show it works (no figure is meaningful).
    #[arg(long, requires = "matrix")]
    quick: bool,
    /// With `--matrix`: run every cell this many times, the engines of a body size taking
    /// turns, and report each cell's fastest round: interference from the rest of the
    /// machine only ever slows a round down. Every round must reach the same checkpoint.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 3,
        value_parser = clap::value_parser!(u32).range(1..=100),
        requires = "matrix"
    )]
    rounds: u32,
    /// With `--matrix`: where to write the SVG chart of ops/s against body size.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "carapace-bench.svg",
        requires = "matrix"
    )]
    chart: std::path::PathBuf,
}

/// A run's last checkpoint in `--json` output: `{"op", "id"}` (hex), or null.
pub fn checkpoint_json(checkpoint: Option<(u64, u128)>) -> serde_json::Value {
    checkpoint.map_or(
        serde_json::Value::Null,
        |(op, id)| serde_json::json!({"op": op, "id": format!("{id:032x}")}),
    )
}

/// The first op count of a `--scale` run's stops: segments before it are warm-up.
const SCALE_FIRST_STOP: u64 = 10_000;

/// One engine's `--scale` run: the marginal rate of each segment between stops.
struct ScaleRun {
    engine: &'static str,
    /// `(first op, last op, ops per second)` per segment.
    segments: Vec<(u64, u64, f64)>,
    outcome: super::run::Outcome,
}

impl ScaleRun {
    fn new(engine: &'static str, outcome: super::run::Outcome) -> ScaleRun {
        let mut start = 0;
        let segments = outcome
            .segments
            .iter()
            .map(|&(stop, took)| {
                let segment = (
                    start,
                    stop,
                    (stop - start) as f64 / took.as_secs_f64().max(1e-9),
                );
                start = stop;
                segment
            })
            .collect();
        ScaleRun {
            engine,
            segments,
            outcome,
        }
    }

    /// The fastest marginal rate over the slowest, among segments from the second stop
    /// on (the first is warm-up: caches and memory tables still filling).
    fn flatness(&self) -> Option<f64> {
        let rates: Vec<f64> = self
            .segments
            .iter()
            .filter(|&&(start, _, _)| start >= SCALE_FIRST_STOP * 10)
            .map(|&(_, _, rate)| rate)
            .collect();
        let fastest = rates.iter().copied().reduce(f64::max)?;
        let slowest = rates.iter().copied().reduce(f64::min)?;
        Some(fastest / slowest)
    }

    /// Grid bytes in use over the bytes of the values stored, from the machine's
    /// figures (machines on `carapace-lsm` report both).
    fn space_amplification(&self, block_size: u32) -> Option<(u64, u64, f64)> {
        let figure = |name: &str| {
            self.outcome
                .statistics
                .iter()
                .find(|statistic| statistic.name == name)
                .and_then(|statistic| statistic.values.first().copied())
        };
        let grid = figure("grid blocks in use")? * u64::from(block_size);
        let values = figure("value bytes stored")?;
        Some((grid, values, grid as f64 / values.max(1) as f64))
    }
}

impl BenchCommand {
    /// Run natively, then in wasm with and without fuel; print each and the ratios.
    pub fn execute(self, out: &mut dyn std::io::Write) -> Result<()> {
        if self.scale {
            return self.execute_scale(out);
        }
        if self.matrix {
            return self.execute_matrix(out);
        }
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
                        "checkpoint": checkpoint_json(outcome.checkpoint),
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

    /// `--matrix`: every body size, engine and storage; then the chart.
    #[cfg(feature = "peer")]
    fn execute_matrix(self, out: &mut dyn std::io::Write) -> Result<()> {
        use super::matrix;
        ensure!(
            self.machine == "echo",
            "--matrix measures the echo machine (fjall does echo's work), not `{}`",
            self.machine
        );
        ensure!(
            self.workload.body_size.is_none(),
            "--matrix runs bodies of every size it measures (0, 64 B, 1 KiB, 64 KiB and \
             ~1 MiB); without --matrix, --body-size measures one size"
        );
        let runs = (matrix::BODY_SIZES.len() * matrix::SUBJECTS.len()) as u64;
        let bar = super::progress_bar(runs * u64::from(self.rounds), "runs");
        let engines = matrix::Engines::load()?;
        let cells = matrix::run_matrix(&engines, self.quick, self.rounds, &bar)?;
        bar.finish_and_clear();
        let copies = engines.copy_rates(*matrix::BODY_SIZES.last().unwrap())?;
        matrix::write_chart(&self.chart, &cells)?;
        if self.json {
            say!(out, "{}", matrix::json(&cells, copies))?;
        } else {
            matrix::print(out, &cells, copies)?;
            say!(out, "== chart written to {}", self.chart.display())?;
        }
        Ok(())
    }

    #[cfg(not(feature = "peer"))]
    fn execute_matrix(self, _: &mut dyn std::io::Write) -> Result<()> {
        anyhow::bail!("this build of carapace has no peer to measure against (feature `peer`)")
    }

    /// `--scale`: native, then wasm, each stopping at every power of ten of ops.
    fn execute_scale(self, out: &mut dyn std::io::Write) -> Result<()> {
        let mut workload = self.workload.clone();
        workload.memory_at =
            std::iter::successors(Some(SCALE_FIRST_STOP), |stop| stop.checked_mul(10))
                .take_while(|&stop| stop < self.workload.ops)
                .collect();
        let block_size = workload.options()?.block_size;
        let mut runs = Vec::new();
        for (engine, source) in [
            ("native", Source::Native(self.machine.clone())),
            ("wasm", Source::Embedded(self.machine.clone())),
        ] {
            let factory = Factory::load(&source, Limits::default())?;
            runs.push(ScaleRun::new(engine, workload.execute(&factory, false)?));
        }
        let [native, wasm] = &runs[..] else {
            unreachable!("two engines")
        };
        ensure!(
            native.outcome.checkpoint == wasm.outcome.checkpoint,
            "native and wasm diverged: checkpoints {:?} and {:?}",
            native.outcome.checkpoint,
            wasm.outcome.checkpoint
        );
        let space = native.space_amplification(block_size);
        if self.json {
            let runs: Vec<_> = runs
                .iter()
                .map(|run| {
                    serde_json::json!({
                        "engine": run.engine,
                        "segments": run.segments.iter().map(|&(start, end, rate)| {
                            serde_json::json!({"from_op": start, "to_op": end, "ops_per_second": rate})
                        }).collect::<Vec<_>>(),
                        "flatness": run.flatness(),
                        "checkpoint": checkpoint_json(run.outcome.checkpoint),
                    })
                })
                .collect();
            say!(
                out,
                "{}",
                serde_json::json!({
                    "machine": self.machine,
                    "ops": self.workload.ops,
                    "runs": runs,
                    "space": space.map(|(grid, values, ratio)| serde_json::json!({
                        "grid_bytes_in_use": grid,
                        "value_bytes_stored": values,
                        "grid_over_values": ratio,
                    })),
                })
            )?;
            return Ok(());
        }
        say!(
            out,
            "== scale: {} ops of `{}`; marginal ops/s between stops",
            self.workload.ops,
            self.machine
        )?;
        say!(
            out,
            "{:>24}  {:>12}  {:>12}  {:>11}",
            "ops",
            "native",
            "wasm",
            "wasm/native"
        )?;
        for (native, wasm) in native.segments.iter().zip(&wasm.segments) {
            say!(
                out,
                "{:>24}  {:>12.0}  {:>12.0}  {:>11.2}",
                format!("{} to {}", native.0, native.1),
                native.2,
                wasm.2,
                wasm.2 / native.2
            )?;
        }
        for run in &runs {
            match run.flatness() {
                Some(flatness) => say!(
                    out,
                    "== {}: fastest/slowest marginal rate from op {} on: {flatness:.2}",
                    run.engine,
                    SCALE_FIRST_STOP * 10
                )?,
                None => say!(
                    out,
                    "== {}: too few ops for a flatness figure (stops every power of ten from {})",
                    run.engine,
                    SCALE_FIRST_STOP * 10
                )?,
            }
        }
        if let Some((grid, values, ratio)) = space {
            say!(
                out,
                "== space: {grid} grid bytes in use for {values} value bytes stored: {ratio:.2}x"
            )?;
        }
        if let Some((op, id)) = native.outcome.checkpoint {
            say!(out, "== checkpoint op {op} id {id:032x} (native and wasm)")?;
        }
        Ok(())
    }
}

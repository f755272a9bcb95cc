//! `carapace sim`: deterministic simulation of a durable replica's life, faults and
//! crashes included (see `carapace_core::sim`). `--seed S` runs one seed and prints what
//! it chose, a trace hash and a verdict; `--seeds N` sweeps seeds and prints, for each
//! failing one, the command that reproduces it. Exit status 1 if any seed failed.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Result;
use clap::Args;

use super::run::MachineArgs;
use crate::disk::FaultKind;
use crate::imports::{HostImports, IoOrder};
use crate::machines::{Factory, Source};
use crate::sim::{SimConfig, SimReport, Verdict, simulate};
use crate::storage::MemoryStorage;

/// Simulate a replica's life from a seed: workload, I/O order, faults and crashes.
#[derive(Debug, Args)]
pub struct SimCommand {
    /// Run this one seed.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Sweep this many seeds.
    #[arg(long)]
    seeds: Option<u64>,
    /// The first seed of a sweep.
    #[arg(long, default_value_t = 0, requires = "seeds")]
    from: u64,
    /// Ops each seed acknowledges.
    #[arg(long, default_value_t = 1_000)]
    ops: u64,
    /// The machine (`echo` by default, or `kv`; a `--module` must be one of them:
    /// the simulator needs a workload for it).
    #[command(flatten)]
    machine: MachineArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Simulate a deliberately broken host that acknowledges ops before their journal
    /// entries are synced: for testing that the checkers catch it.
    #[arg(long, hide = true)]
    broken_skip_journal_sync: bool,
}

/// Seeds that failed a sweep (or the one seed run): exit status 1.
#[derive(Debug)]
pub struct SimulationFailed {
    /// How many.
    pub seeds: u64,
}

impl std::fmt::Display for SimulationFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} seed(s) failed the simulation", self.seeds)
    }
}

impl std::error::Error for SimulationFailed {}

impl SimCommand {
    /// Run the seed or the sweep and report.
    pub fn execute(self, out: &mut dyn std::io::Write) -> Result<()> {
        if self.ops == 0 {
            return Err(crate::Error::Refused("`--ops` must be at least 1".into()).into());
        }
        let (source, factory) = self.machine.load("echo")?;
        let machine = machine_name(&factory)?;
        if crate::workload::for_machine(&machine, 0, 1).is_none() {
            return Err(crate::Error::Refused(format!(
                "the simulator has workloads for `echo` and `kv`; the module is `{machine}`"
            ))
            .into());
        }
        match (self.seed, self.seeds) {
            (_, Some(0)) => {
                Err(crate::Error::Refused("`--seeds` must be at least 1".into()).into())
            }
            (_, Some(seeds)) => self.sweep(out, &source, &factory, &machine, seeds),
            (seed, None) => self.one(out, &source, &factory, &machine, seed.unwrap_or(0)),
        }
    }

    fn one(
        &self,
        out: &mut dyn std::io::Write,
        source: &Source,
        factory: &Factory,
        machine: &str,
        seed: u64,
    ) -> Result<()> {
        let started = Instant::now();
        let report = simulate(&self.config(seed, machine), factory.as_fn());
        let seconds = started.elapsed().as_secs_f64();
        if self.json {
            say!(out, "{}", report_json(&report, seconds))?;
        } else {
            say!(out, "seed {seed}: {}", describe_config(&report.config))?;
            say!(out, "trace {:032x}", report.trace_hash)?;
            say!(
                out,
                "{} ops acknowledged, {} checkpoints checked, {} crashes, {} restarts after \
                 I/O errors, {} superblock copies damaged{} in {seconds:.2} s",
                report.ops_acknowledged,
                report.checkpoints_checked,
                report.crashes,
                report.restarts_after_errors,
                report.superblock_copies_damaged,
                if report.healed { ", then healed" } else { "" },
            )?;
            say!(out, "faults injected: {}", describe_faults(&report.faults))?;
            say!(out, "verdict: {}", report.verdict)?;
        }
        if let Verdict::Failed { .. } = report.verdict {
            if !self.json {
                say!(out, "rerun: {}", self.rerun_command(source, seed))?;
            }
            return Err(SimulationFailed { seeds: 1 }.into());
        }
        Ok(())
    }

    fn sweep(
        &self,
        out: &mut dyn std::io::Write,
        source: &Source,
        factory: &Factory,
        machine: &str,
        seeds: u64,
    ) -> Result<()> {
        let started = Instant::now();
        let bar = super::progress_bar(seeds, "seeds");
        let mut totals = Totals::default();
        let mut failing = Vec::new();
        let end = self.from.saturating_add(seeds);
        for seed in self.from..end {
            let report = simulate(&self.config(seed, machine), factory.as_fn());
            totals.add(&report);
            if let Verdict::Failed { .. } = report.verdict {
                let line = format!(
                    "seed {seed} {}; rerun: {}",
                    report.verdict,
                    self.rerun_command(source, seed)
                );
                bar.suspend(|| eprintln!("{line}"));
                failing.push((seed, report.verdict.to_string(), line));
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
        let seconds = started.elapsed().as_secs_f64();
        if self.json {
            let failing: Vec<_> = failing
                .iter()
                .map(|(seed, verdict, _)| {
                    serde_json::json!({
                        "seed": seed,
                        "verdict": verdict,
                        "rerun": self.rerun_command(source, *seed),
                    })
                })
                .collect();
            say!(
                out,
                "{}",
                serde_json::json!({
                    "machine": machine,
                    "from": self.from,
                    "seeds": seeds,
                    "ops_per_seed": self.ops,
                    "passed": totals.passed,
                    "detected": totals.detected,
                    "failed": failing.len(),
                    "ops_acknowledged": totals.ops,
                    "checkpoints_checked": totals.checkpoints,
                    "crashes": totals.crashes,
                    "restarts_after_errors": totals.restarts_after_errors,
                    "superblock_copies_damaged": totals.superblock_copies_damaged,
                    "faults": faults_json(&totals.faults),
                    "seconds": seconds,
                    "failing": failing,
                })
            )?;
        } else {
            for (_, _, line) in &failing {
                say!(out, "{line}")?;
            }
            say!(
                out,
                "{seeds} seeds of {machine} from {}: {} passed, {} detected, {} failed; \
                 {} ops, {} checkpoints checked, {} crashes, {} restarts after I/O errors, \
                 {} superblock copies damaged, in {seconds:.1} s",
                self.from,
                totals.passed,
                totals.detected,
                failing.len(),
                totals.ops,
                totals.checkpoints,
                totals.crashes,
                totals.restarts_after_errors,
                totals.superblock_copies_damaged,
            )?;
            say!(out, "faults injected: {}", describe_faults(&totals.faults))?;
        }
        if !failing.is_empty() {
            return Err(SimulationFailed {
                seeds: failing.len() as u64,
            }
            .into());
        }
        Ok(())
    }

    fn config(&self, seed: u64, machine: &str) -> SimConfig {
        SimConfig {
            journal_sync: !self.broken_skip_journal_sync,
            ..SimConfig::from_seed(seed, machine, self.ops)
        }
    }

    /// The command that reruns `seed` alone, with the same machine and ops.
    fn rerun_command(&self, source: &Source, seed: u64) -> String {
        let machine = match source {
            Source::Embedded(name) => format!(" --machine {name}"),
            Source::File(path) => format!(" --module {}", path.display()),
            Source::Native(name) => format!(" --machine {name} --target native"),
        };
        let broken = if self.broken_skip_journal_sync {
            " --broken-skip-journal-sync"
        } else {
            ""
        };
        format!(
            "carapace sim --seed {seed} --ops {}{machine}{broken}",
            self.ops
        )
    }
}

/// The name of the machine `factory` makes.
fn machine_name(factory: &Factory) -> crate::Result<String> {
    let imports = HostImports::new(Box::new(MemoryStorage::new()), 4096, 1, IoOrder::Fifo);
    let mut instance = factory.instance(imports)?;
    Ok(crate::replica::identify(instance.as_mut())?.name)
}

fn describe_config(config: &SimConfig) -> String {
    config
        .describe()
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn describe_faults(faults: &BTreeMap<FaultKind, u64>) -> String {
    if faults.is_empty() {
        return "none".into();
    }
    faults
        .iter()
        .map(|(kind, count)| format!("{} {count}", kind.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn faults_json(faults: &BTreeMap<FaultKind, u64>) -> serde_json::Value {
    faults
        .iter()
        .map(|(kind, count)| (kind.name().to_string(), serde_json::json!(count)))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn report_json(report: &SimReport, seconds: f64) -> serde_json::Value {
    let config: serde_json::Map<_, _> = report
        .config
        .describe()
        .into_iter()
        .map(|(name, value)| (name, serde_json::Value::String(value)))
        .collect();
    serde_json::json!({
        "seed": report.config.seed,
        "config": config,
        "trace": format!("{:032x}", report.trace_hash),
        "verdict": report.verdict.name(),
        "detail": report.verdict.to_string(),
        "ops_acknowledged": report.ops_acknowledged,
        "checkpoints_checked": report.checkpoints_checked,
        "crashes": report.crashes,
        "restarts_after_errors": report.restarts_after_errors,
        "superblock_copies_damaged": report.superblock_copies_damaged,
        "healed": report.healed,
        "faults": faults_json(&report.faults),
        "seconds": seconds,
    })
}

/// A sweep's sums.
#[derive(Debug, Default)]
struct Totals {
    passed: u64,
    detected: u64,
    ops: u64,
    checkpoints: u64,
    crashes: u64,
    restarts_after_errors: u64,
    superblock_copies_damaged: u64,
    faults: BTreeMap<FaultKind, u64>,
}

impl Totals {
    fn add(&mut self, report: &SimReport) {
        match report.verdict {
            Verdict::Passed => self.passed += 1,
            Verdict::Detected { .. } => self.detected += 1,
            Verdict::Failed { .. } => {}
        }
        self.ops += report.ops_acknowledged;
        self.checkpoints += report.checkpoints_checked;
        self.crashes += report.crashes;
        self.restarts_after_errors += report.restarts_after_errors;
        self.superblock_copies_damaged += report.superblock_copies_damaged;
        for (kind, count) in &report.faults {
            *self.faults.entry(*kind).or_insert(0) += count;
        }
    }
}

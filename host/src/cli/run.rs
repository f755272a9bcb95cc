//! `carapace run`: TigerBeetle's echo workload against a state machine module.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};

use crate::context::{HostContext, IoOrder};
use crate::machine::{Machine, NativeMachine, Options};
use crate::replica::{Replica, ReplicaConfig};
use crate::storage::MemoryStorage;
use crate::wasm::{Limits, Runtime};
use crate::workload::{self, RunReport, Workload};

/// Where the state machine runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// The component in wasmtime's sandbox.
    Wasm,
    /// The echo guest core compiled into the host: the baseline.
    Native,
}

/// The workload and the machine's options, shared by `run` and `bench`.
#[derive(Clone, Debug, Args)]
pub struct WorkloadArgs {
    /// Ops to commit.
    #[arg(long, default_value_t = 100_000)]
    pub ops: u64,
    /// Seed of the workload and of the I/O completion order.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The largest request body in bytes; bodies are uniform in 0..=this.
    #[arg(long, default_value_t = 4096)]
    pub batch_size_limit: u32,
    /// Bytes per grid block.
    #[arg(long, default_value_t = 4096)]
    pub block_size: u32,
    /// Blocks in the grid.
    #[arg(long, default_value_t = 1 << 18)]
    pub grid_blocks: u64,
    /// Checkpoint after every this many ops.
    #[arg(long, default_value_t = 1024)]
    pub checkpoint_interval: u64,
    /// A machine setting `name=value` (repeatable), for example `lsm-profile=test`.
    #[arg(long = "setting", value_name = "NAME=VALUE")]
    pub settings: Vec<String>,
    /// Also report the guest's memory after this many ops (repeatable); it is always
    /// reported at the end. Equal figures show that memory does not grow with ops.
    #[arg(long = "memory-at", value_name = "OPS")]
    pub memory_at: Vec<u64>,
}

/// What one workload run produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Counts and timing.
    pub report: RunReport,
    /// The last checkpoint's op and id, if any was taken.
    pub checkpoint: Option<(u64, u128)>,
    /// Guest memory in bytes after some ops, where the host can see it.
    pub memory: Vec<(u64, usize)>,
}

impl WorkloadArgs {
    fn replica_config(&self) -> Result<ReplicaConfig> {
        let settings = self
            .settings
            .iter()
            .map(|setting| match setting.split_once('=') {
                Some((name, value)) if !name.is_empty() => {
                    Ok((name.to_string(), value.to_string()))
                }
                _ => bail!("setting `{setting}` is not of the form NAME=VALUE"),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ReplicaConfig {
            options: Options {
                batch_size_limit: self.batch_size_limit,
                block_size: self.block_size,
                block_count: self.grid_blocks,
                settings,
            },
            checkpoint_interval_ops: self.checkpoint_interval,
        })
    }

    /// Run the workload on `target`; `module` is a component's bytes (wasm only).
    pub fn execute_on(&self, target: Target, module: &[u8], echo_log: bool) -> Result<Outcome> {
        let config = self.replica_config()?;
        let mut context = HostContext::new(
            Box::new(MemoryStorage::new()),
            self.block_size,
            self.grid_blocks,
            IoOrder::Seeded(self.seed),
        );
        context.set_echo_log(echo_log);
        match target {
            Target::Wasm => {
                let runtime = Runtime::new(Limits::default())?;
                let component = runtime.load(module)?;
                self.execute(runtime.instantiate(&component, context)?, config)
            }
            Target::Native => self.execute(NativeMachine::new(context), config),
        }
    }

    fn execute<M: Machine>(&self, machine: M, config: ReplicaConfig) -> Result<Outcome> {
        let mut replica = Replica::open(machine, config, None)?;
        let mut workload = Workload::new(self.seed, self.batch_size_limit);
        let mut stops: Vec<u64> = self
            .memory_at
            .iter()
            .copied()
            .filter(|&ops| ops < self.ops)
            .collect();
        stops.sort_unstable();
        stops.dedup();
        stops.push(self.ops);
        let mut report = RunReport::default();
        let mut memory = Vec::new();
        for stop in stops {
            let ops = stop - replica.op();
            let segment = workload::run(&mut replica, &mut workload, ops)?;
            report.add(&segment);
            if let Some(bytes) = replica.machine_mut().memory_bytes() {
                memory.push((stop, bytes));
            }
        }
        let checkpoint = replica
            .checkpoint()
            .map(|checkpoint| (checkpoint.op, checkpoint.id()));
        Ok(Outcome {
            report,
            checkpoint,
            memory,
        })
    }
}

/// Run the seeded echo workload: every reply is checked equal to its request, and the
/// last checkpoint's id is printed (the same seed and options give the same id).
#[derive(Debug, Args)]
pub struct RunCommand {
    #[command(flatten)]
    workload: WorkloadArgs,
    /// The state machine component; the embedded echo machine by default.
    #[arg(long)]
    module: Option<PathBuf>,
    /// Where the state machine runs (`native` only runs the embedded echo machine).
    #[arg(long, value_enum, default_value_t = Target::Wasm)]
    target: Target,
    /// Print the guest's log messages.
    #[arg(long)]
    log: bool,
}

impl RunCommand {
    /// Run the workload and print the report.
    pub fn execute(self) -> Result<()> {
        let module = match (&self.module, self.target) {
            (Some(_), Target::Native) => {
                bail!("`--target native` runs the built-in echo machine; drop `--module`")
            }
            (Some(path), Target::Wasm) => {
                std::fs::read(path).with_context(|| format!("reading `{}`", path.display()))?
            }
            (None, _) => crate::ECHO_COMPONENT.to_vec(),
        };
        let name = match &self.module {
            Some(path) => format!("`{}`", path.display()),
            None => "embedded echo".into(),
        };
        let outcome = self
            .workload
            .execute_on(self.target, &module, self.log)
            .with_context(|| format!("running {name}"))?;
        println!("module      {name}");
        println!("target      {:?}", self.target);
        println!("seed        {}", self.workload.seed);
        print_outcome(&outcome, self.workload.checkpoint_interval);
        Ok(())
    }
}

/// Print counts, rate and checkpoint of a run.
pub fn print_outcome(outcome: &Outcome, checkpoint_interval: u64) {
    let report = &outcome.report;
    println!("ops         {}", report.ops);
    println!(
        "bytes       {} (request bodies, each echoed back)",
        report.bytes
    );
    println!("elapsed     {:.3} s", report.elapsed.as_secs_f64());
    println!("ops/s       {:.0}", report.ops_per_second());
    match outcome.checkpoint {
        Some((op, id)) => println!("checkpoint  op {op} id {id:032x}"),
        None => println!("checkpoint  none (fewer than {checkpoint_interval} ops)"),
    }
    for (ops, bytes) in &outcome.memory {
        println!("memory      {bytes} bytes of guest memory after {ops} ops");
    }
}

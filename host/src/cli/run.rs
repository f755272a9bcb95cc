//! `carapace run`: TigerBeetle's echo workload against a state machine module.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};

use crate::context::{HostContext, IoOrder};
use crate::durable::{DataDir, Durable, Recovery};
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
    /// The largest request body in bytes; bodies are uniform in 0..=this [default: 4096].
    #[arg(long, value_name = "BYTES")]
    pub batch_size_limit: Option<u32>,
    /// Bytes per grid block [default: 4096].
    #[arg(long, value_name = "BYTES")]
    pub block_size: Option<u32>,
    /// Blocks in the grid [default: 262144].
    #[arg(long, value_name = "BLOCKS")]
    pub grid_blocks: Option<u64>,
    /// Checkpoint after every this many ops [default: 1024].
    #[arg(long, value_name = "OPS")]
    pub checkpoint_interval: Option<u64>,
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

/// Defaults of the options a data directory records.
const BATCH_SIZE_LIMIT_DEFAULT: u32 = 4096;
const BLOCK_SIZE_DEFAULT: u32 = 4096;
const GRID_BLOCKS_DEFAULT: u64 = 1 << 18;
const CHECKPOINT_INTERVAL_DEFAULT: u64 = 1024;

impl WorkloadArgs {
    /// Checkpoint interval in ops, given or default.
    pub fn checkpoint_interval(&self) -> u64 {
        self.checkpoint_interval
            .unwrap_or(CHECKPOINT_INTERVAL_DEFAULT)
    }

    /// Refuse options given on the command line that differ from those `stored` in a
    /// data directory (which keeps its own; silently ignoring a flag would mislead).
    fn check_against(&self, stored: &ReplicaConfig) -> Result<()> {
        let given = self.replica_config()?;
        let differs = [
            (
                "--batch-size-limit",
                self.batch_size_limit.is_some()
                    && given.options.batch_size_limit != stored.options.batch_size_limit,
            ),
            (
                "--block-size",
                self.block_size.is_some() && given.options.block_size != stored.options.block_size,
            ),
            (
                "--grid-blocks",
                self.grid_blocks.is_some()
                    && given.options.block_count != stored.options.block_count,
            ),
            (
                "--checkpoint-interval",
                self.checkpoint_interval.is_some()
                    && given.checkpoint_interval_ops != stored.checkpoint_interval_ops,
            ),
            (
                "--setting",
                !self.settings.is_empty() && given.options.settings != stored.options.settings,
            ),
        ];
        if let Some((flag, _)) = differs.iter().find(|(_, differs)| *differs) {
            bail!("`{flag}` differs from what the data directory was created with: {stored:?}");
        }
        Ok(())
    }

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
                batch_size_limit: self.batch_size_limit.unwrap_or(BATCH_SIZE_LIMIT_DEFAULT),
                block_size: self.block_size.unwrap_or(BLOCK_SIZE_DEFAULT),
                block_count: self.grid_blocks.unwrap_or(GRID_BLOCKS_DEFAULT),
                settings,
            },
            checkpoint_interval_ops: self.checkpoint_interval(),
        })
    }

    /// Run the workload on `target`; `module` is a component's bytes (wasm only).
    pub fn execute_on(&self, target: Target, module: &[u8], echo_log: bool) -> Result<Outcome> {
        let config = self.replica_config()?;
        let mut context = HostContext::new(
            Box::new(MemoryStorage::new()),
            config.options.block_size,
            config.options.block_count,
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
        let mut workload = Workload::new(self.seed, replica.config().options.batch_size_limit);
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
    /// Keep the grid, journal and superblock in this directory: the run recovers
    /// what is there and continues it (op numbers and timestamps go on). A new
    /// directory takes the options given; an existing one keeps its own.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
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
        println!("module      {name}");
        println!("target      {:?}", self.target);
        println!("seed        {}", self.workload.seed);
        let outcome = match &self.data {
            None => self.workload.execute_on(self.target, &module, self.log),
            Some(path) => self.execute_durable(path, &module),
        }
        .with_context(|| format!("running {name}"))?;
        let interval = self
            .data
            .as_deref()
            .and_then(stored_config)
            .map_or(self.workload.checkpoint_interval(), |config| {
                config.checkpoint_interval_ops
            });
        print_outcome(&outcome, interval);
        Ok(())
    }

    fn execute_durable(&self, path: &std::path::Path, module: &[u8]) -> Result<Outcome> {
        if !self.workload.memory_at.is_empty() {
            bail!(
                "`--memory-at` is not supported with `--data`: the run reports memory at its end"
            );
        }
        // An existing directory keeps its options (flags that differ are refused); a new
        // one, or one whose creation never finished, takes the flags.
        let stored = stored_config(path);
        let config = match &stored {
            Some(stored) => {
                self.workload.check_against(stored)?;
                None
            }
            None => Some(self.workload.replica_config()?),
        };
        let dir = DataDir::open(path)?;
        let order = IoOrder::Seeded(self.workload.seed);
        match self.target {
            Target::Wasm => {
                let runtime = Runtime::new(Limits::default())?;
                let component = runtime.load(module)?;
                let (durable, recovery) = Durable::open(dir, config, order, |mut context| {
                    context.set_echo_log(self.log);
                    runtime.instantiate(&component, context)
                })?;
                self.continue_durable(durable, &recovery, path)
            }
            Target::Native => {
                let (durable, recovery) = Durable::open(dir, config, order, |mut context| {
                    context.set_echo_log(self.log);
                    Ok(NativeMachine::new(context))
                })?;
                self.continue_durable(durable, &recovery, path)
            }
        }
    }

    fn continue_durable<M: Machine>(
        &self,
        mut durable: Durable<M>,
        recovery: &Recovery,
        path: &std::path::Path,
    ) -> Result<Outcome> {
        println!("data        {}", path.display());
        println!(
            "recovered   checkpoint op {}, {} ops replayed from the journal, {} torn bytes cut",
            recovery.checkpoint_op, recovery.replayed_ops, recovery.torn_bytes
        );
        let start = durable.replica().op();
        // A continuing run must not repeat the bodies of the first: seed by where it starts.
        let batch_size_limit = durable.replica().config().options.batch_size_limit;
        let mut workload = Workload::new(self.workload.seed.wrapping_add(start), batch_size_limit);
        let report = workload::run(&mut durable, &mut workload, self.workload.ops)?;
        println!("ops         {} to {}", start + 1, durable.replica().op());
        let checkpoint = durable
            .replica()
            .checkpoint()
            .map(|checkpoint| (checkpoint.op, checkpoint.id()));
        let memory = durable
            .replica_mut()
            .machine_mut()
            .memory_bytes()
            .map(|bytes| (durable.replica().op(), bytes));
        Ok(Outcome {
            report,
            checkpoint,
            memory: memory.into_iter().collect(),
        })
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

/// The options a data directory at `path` holds, if it is one.
fn stored_config(path: &std::path::Path) -> Option<ReplicaConfig> {
    if !DataDir::exists(path) {
        return None;
    }
    crate::cli::inspect::stored_config(path).ok()
}

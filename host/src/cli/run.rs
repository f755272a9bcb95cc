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

/// Run the seeded echo workload: every reply is checked equal to its request, and the
/// last checkpoint's id is printed (the same seed and options give the same id).
#[derive(Debug, Args)]
pub struct RunCommand {
    /// Ops to commit.
    #[arg(long, default_value_t = 20_000)]
    pub ops: u64,
    /// Seed of the workload and of the I/O completion order.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The state machine component; the embedded echo machine by default.
    #[arg(long)]
    pub module: Option<PathBuf>,
    /// Where the state machine runs (`native` only runs the embedded echo machine).
    #[arg(long, value_enum, default_value_t = Target::Wasm)]
    pub target: Target,
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
    /// A machine setting `name=value` (repeatable), for example `bar-ops=4`.
    #[arg(long = "setting", value_name = "NAME=VALUE")]
    pub settings: Vec<String>,
    /// Print the guest's log messages.
    #[arg(long)]
    pub log: bool,
}

impl RunCommand {
    /// Run the workload and print the report.
    pub fn execute(self) -> Result<()> {
        let config = self.replica_config()?;
        let mut context = HostContext::new(
            Box::new(MemoryStorage::new()),
            self.block_size,
            self.grid_blocks,
            IoOrder::Seeded(self.seed),
        );
        context.set_echo_log(self.log);
        let mut workload = Workload::new(self.seed, self.batch_size_limit);
        let (report, checkpoint) = match self.target {
            Target::Wasm => {
                let bytes = match &self.module {
                    Some(path) => std::fs::read(path)
                        .with_context(|| format!("reading `{}`", path.display()))?,
                    None => crate::ECHO_COMPONENT.to_vec(),
                };
                let runtime = Runtime::new(Limits::default())?;
                let component = runtime.load(&bytes).with_context(|| self.module_name())?;
                let machine = runtime.instantiate(&component, context)?;
                run(machine, config, &mut workload, self.ops)?
            }
            Target::Native => {
                if self.module.is_some() {
                    bail!("`--target native` runs the built-in echo machine; drop `--module`");
                }
                run(NativeMachine::new(context), config, &mut workload, self.ops)?
            }
        };
        println!("module      {}", self.module_name());
        println!("target      {:?}", self.target);
        println!("seed        {}", self.seed);
        println!("ops         {}", report.ops);
        println!(
            "bytes       {} (request bodies, each echoed back)",
            report.bytes
        );
        println!("elapsed     {:.3} s", report.elapsed.as_secs_f64());
        println!("ops/s       {:.0}", report.ops_per_second());
        match checkpoint {
            Some((op, id)) => println!("checkpoint  op {op} id {id:032x}"),
            None => println!(
                "checkpoint  none (fewer than {} ops)",
                self.checkpoint_interval
            ),
        }
        Ok(())
    }

    fn module_name(&self) -> String {
        match &self.module {
            Some(path) => format!("`{}`", path.display()),
            None => "embedded echo".into(),
        }
    }

    fn replica_config(&self) -> Result<ReplicaConfig> {
        let settings = self
            .settings
            .iter()
            .map(|setting| match setting.split_once('=') {
                Some((name, value)) => Ok((name.to_string(), value.to_string())),
                None => bail!("setting `{setting}` is not of the form NAME=VALUE"),
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
}

/// The last checkpoint's op and id.
type CheckpointSummary = Option<(u64, u128)>;

fn run<M: Machine>(
    machine: M,
    config: ReplicaConfig,
    workload: &mut Workload,
    ops: u64,
) -> Result<(RunReport, CheckpointSummary)> {
    let mut replica = Replica::open(machine, config, None)?;
    let report = workload::run(&mut replica, workload, ops)?;
    let checkpoint = replica
        .checkpoint()
        .map(|checkpoint| (checkpoint.op, checkpoint.id()));
    Ok((report, checkpoint))
}

//! `carapace run`: a machine's seeded workload, or a file of requests, against a state
//! machine module, in memory or in a data directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use clap::{Args, ValueEnum};

use crate::durable::{Durable, Recovery};
use crate::imports::{HostImports, IoOrder};
use crate::instance::{Options, Statistic};
use crate::machines::{Factory, Source, default_options};
use crate::replica::{Committer, Replica, Request};
use crate::storage::MemoryStorage;
use crate::wasm::Limits;
use crate::workload::{self, RunReport, Workload};

/// Where the state machine runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// The component in wasmtime's sandbox.
    #[default]
    Wasm,
    /// The guest core compiled into the host: the baseline.
    Native,
}

/// Which machine, and where it runs: shared by every command that loads one. The
/// default is the embedded machine a data directory names, or `echo`.
#[derive(Clone, Debug, Default, Args)]
pub struct MachineArgs {
    /// An embedded machine by name: `echo` (the default) or `kv`.
    #[arg(long, value_name = "NAME")]
    pub machine: Option<String>,
    /// A state machine component file, instead of an embedded machine.
    #[arg(long, value_name = "FILE.wasm")]
    pub module: Option<PathBuf>,
    /// Where the state machine runs.
    #[arg(long, value_enum, default_value_t = Target::Wasm)]
    pub target: Target,
    /// Fuel for one export call, or one step with its completions [default:
    /// 10000000000]; running out traps, deterministically. 0 turns metering off (a
    /// looping guest is then stopped only by the deadline).
    #[arg(long, value_name = "UNITS")]
    pub fuel_per_step: Option<u64>,
    /// Linear memory the guest may grow to, in bytes [default: 1073741824].
    #[arg(long, value_name = "BYTES")]
    pub memory_max: Option<usize>,
    /// Native stack the guest's wasm may use, in bytes [default: 524288].
    #[arg(long, value_name = "BYTES")]
    pub stack_max: Option<usize>,
    /// A wall-clock safety net per export call, in milliseconds; 0 for none [default:
    /// 60000]. Hitting it is a host fault that stops the run.
    #[arg(long, value_name = "MS")]
    pub deadline_ms: Option<u64>,
    /// Keep precompiled components here, so that a start loads native code instead of
    /// compiling [default: $XDG_CACHE_HOME/carapace, or ~/.cache/carapace].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile the component at every start; use no cache.
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,
}

impl MachineArgs {
    /// The limits given, over the defaults.
    pub fn limits(&self) -> Limits {
        let defaults = Limits::default();
        Limits {
            fuel_per_call: self.fuel_per_step.unwrap_or(defaults.fuel_per_call),
            memory_bytes_max: self.memory_max.unwrap_or(defaults.memory_bytes_max),
            stack_bytes_max: self.stack_max.unwrap_or(defaults.stack_bytes_max),
            deadline_ms: self.deadline_ms.unwrap_or(defaults.deadline_ms),
            ..defaults
        }
    }

    /// Load the chosen machine, `default` naming it when none is given.
    pub fn load(&self, default: &str) -> crate::Result<(Source, Factory)> {
        let source = self.source(default)?;
        let factory = Factory::load_cached(&source, self.limits(), self.cache_dir().as_deref())?;
        Ok((source, factory))
    }

    /// The component cache to use, if any.
    pub fn cache_dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        self.cache_dir.clone().or_else(crate::cache::default_dir)
    }

    /// The source chosen, `default` naming the machine when none is given.
    pub fn source(&self, default: &str) -> crate::Result<Source> {
        Source::choose(
            self.machine.as_deref(),
            self.module.as_deref(),
            self.target == Target::Native,
            default,
        )
    }
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
    /// The largest request body in bytes [default: 4096].
    #[arg(long, value_name = "BYTES")]
    pub batch_size_limit: Option<u32>,
    /// The largest reply in bytes [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    pub reply_size_limit: Option<u32>,
    /// Bytes per grid block [default: 4096].
    #[arg(long, value_name = "BYTES")]
    pub block_size: Option<u32>,
    /// Blocks in the grid [default: 1048576, 4 GiB of 4 KiB blocks; sparse, in memory and on disk].
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
    /// Echo only: every request body this many bytes (at most the batch size limit,
    /// which it sets if that is not given), instead of sizes drawn up to the limit.
    #[arg(long, value_name = "BYTES")]
    pub body_size: Option<u32>,
    /// Ops handed to the replica at a time: delivered to the machine in batches (up to
    /// a checkpoint, 1,024 ops or 1 MiB of bodies each) and, with `--data`, made
    /// durable with one journal write and sync, each reply released only once its op
    /// is durable. 1 delivers and syncs op by op.
    #[arg(long, value_name = "OPS", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub group_size: u64,
}

/// What one run produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Counts.
    pub report: RunReport,
    /// Wall-clock time of the commits; for reports only, never for state.
    pub elapsed: Duration,
    /// The last checkpoint's op and id, if any was taken.
    pub checkpoint: Option<(u64, u128)>,
    /// Guest memory in bytes after some ops, where the host can see it.
    pub memory: Vec<(u64, usize)>,
    /// Instantiating the machine and opening it (empty, or at the directory's
    /// checkpoint with the journal replayed): the start after the load.
    pub opened: Duration,
    /// Each stop of the run (see `--memory-at`) and the time its slice of ops took.
    pub segments: Vec<(u64, Duration)>,
    /// The machine's figures (`describe`) at the end, where the run asked for them.
    pub statistics: Vec<Statistic>,
}

impl Outcome {
    /// Committed ops per second.
    pub fn ops_per_second(&self) -> f64 {
        self.report.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl WorkloadArgs {
    /// The options given, over the defaults.
    pub fn options(&self) -> Result<Options> {
        let defaults = default_options();
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
        let batch_size_limit = self
            .batch_size_limit
            .or(self.body_size)
            .unwrap_or(defaults.batch_size_limit);
        if let Some(body_size) = self.body_size {
            ensure!(
                body_size <= batch_size_limit,
                "--body-size {body_size} is above the batch size limit {batch_size_limit}"
            );
        }
        Ok(Options {
            batch_size_limit,
            reply_size_limit: self.reply_size_limit.unwrap_or(defaults.reply_size_limit),
            checkpoint_interval_ops: self
                .checkpoint_interval
                .unwrap_or(defaults.checkpoint_interval_ops),
            block_size: self.block_size.unwrap_or(defaults.block_size),
            block_count: self.grid_blocks.unwrap_or(defaults.block_count),
            settings,
        })
    }

    /// Refuse options given on the command line that differ from those `stored` in a
    /// data directory (which keeps its own; silently ignoring a flag would mislead).
    fn check_against(&self, stored: &Options) -> Result<()> {
        let given = self.options()?;
        let differs = [
            (
                "--batch-size-limit",
                self.batch_size_limit.is_some()
                    && given.batch_size_limit != stored.batch_size_limit,
            ),
            (
                "--reply-size-limit",
                self.reply_size_limit.is_some()
                    && given.reply_size_limit != stored.reply_size_limit,
            ),
            (
                "--block-size",
                self.block_size.is_some() && given.block_size != stored.block_size,
            ),
            (
                "--grid-blocks",
                self.grid_blocks.is_some() && given.block_count != stored.block_count,
            ),
            (
                "--checkpoint-interval",
                self.checkpoint_interval.is_some()
                    && given.checkpoint_interval_ops != stored.checkpoint_interval_ops,
            ),
            (
                "--setting",
                !self.settings.is_empty() && given.settings != stored.settings,
            ),
        ];
        if let Some((flag, _)) = differs.iter().find(|(_, differs)| *differs) {
            bail!("`{flag}` differs from what the data directory was created with: {stored:?}");
        }
        Ok(())
    }

    /// The workload of the machine `replica` runs, chosen by its name.
    fn workload_for(&self, replica: &Replica) -> Result<Box<dyn Workload>> {
        let name = &replica.identity().name;
        if let Some(body_size) = self.body_size {
            ensure!(
                name == "echo",
                "--body-size is for the echo workload; machine `{name}` has its own request sizes"
            );
            return Ok(Box::new(workload::EchoWorkload::with_body_size(
                self.seed, body_size,
            )));
        }
        workload::for_machine(name, self.seed, replica.options().batch_size_limit).with_context(
            || {
                format!(
                    "carapace has no workload for machine `{name}`: drive it with `--requests FILE`"
                )
            },
        )
    }

    /// Run the machine's workload in memory with `factory`'s instances.
    pub fn execute(&self, factory: &Factory, echo_log: bool) -> Result<Outcome> {
        let options = self.options()?;
        let mut imports = HostImports::new(
            Box::new(MemoryStorage::new()),
            options.block_size,
            options.block_count,
            IoOrder::Seeded(self.seed),
        );
        imports.set_echo_log(echo_log);
        let opening = Instant::now();
        let mut replica = Replica::open(factory.instance(imports)?, options, None)?;
        let opened = opening.elapsed();
        let mut workload = self.workload_for(&replica)?;
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
        let mut elapsed = Duration::ZERO;
        let mut memory = Vec::new();
        let mut segments = Vec::new();
        let bar = super::progress_bar(self.ops, "ops");
        for stop in stops {
            let start = Instant::now();
            report.add(&run_with_progress(
                &mut replica,
                workload.as_mut(),
                stop,
                &bar,
                self.group_size,
            )?);
            let took = start.elapsed();
            elapsed += took;
            segments.push((stop, took));
            if let Some(bytes) = replica.instance_mut().memory_bytes() {
                memory.push((stop, bytes));
            }
        }
        bar.finish_and_clear();
        Ok(Outcome {
            report,
            elapsed,
            checkpoint: last_checkpoint(&replica),
            memory,
            opened,
            segments,
            statistics: replica.describe()?,
        })
    }
}

/// Commit `workload`'s requests until op `stop`, `group_size` at a time, in slices,
/// moving `bar` after each.
fn run_with_progress(
    replica: &mut impl Committer,
    workload: &mut dyn Workload,
    stop: u64,
    bar: &indicatif::ProgressBar,
    group_size: u64,
) -> crate::Result<RunReport> {
    let slice = bar.length().unwrap_or(0).div_ceil(200).max(group_size);
    let mut report = RunReport::default();
    while replica.last_op() < stop {
        let ops = slice.min(stop - replica.last_op());
        report.add(&workload::run_in_groups(
            replica, workload, ops, group_size,
        )?);
        bar.inc(ops);
    }
    Ok(report)
}

fn last_checkpoint(replica: &Replica) -> Option<(u64, u128)> {
    replica
        .checkpoint()
        .map(|checkpoint| (checkpoint.op, checkpoint.id()))
}

/// Run a machine: its seeded workload (every reply checked; the last checkpoint id is
/// printed, and the same seed and options give the same id), or the requests of a
/// file (every reply printed).
#[derive(Debug, Args)]
pub struct RunCommand {
    #[command(flatten)]
    workload: WorkloadArgs,
    #[command(flatten)]
    machine: MachineArgs,
    /// Commit the requests of this file instead of a workload, and print each reply.
    /// One request per line: `CLIENT OPERATION BODY`, the body in hex (or `-` for an
    /// empty one); blank lines and lines starting with `#` are skipped.
    #[arg(long, value_name = "FILE")]
    requests: Option<PathBuf>,
    /// Print the guest's log messages.
    #[arg(long)]
    log: bool,
    /// Keep the grid, journal and superblock in this directory: the run recovers
    /// what is there and continues it (op numbers and timestamps go on). A new
    /// directory takes the options given; an existing one keeps its own, and the
    /// machine it was written by (`--machine`, `--module` must be that machine).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
}

impl RunCommand {
    /// Run and write the report to `out`.
    pub fn execute(self, out: &mut dyn std::io::Write) -> Result<()> {
        let default = match &self.data {
            Some(path) if crate::os::data_dir_exists(path) => stored_machine(path)?,
            _ => "echo".to_string(),
        };
        let (source, factory) = self.machine.load(&default)?;
        say!(out, "module      {}", source.describe())?;
        let loaded = factory.loaded();
        if let Some(cache) = &loaded.cache {
            say!(
                out,
                "load        {:.2} ms ({cache})",
                loaded.took.as_secs_f64() * 1e3
            )?;
        }
        say!(out, "seed        {}", self.workload.seed)?;
        if self.requests.is_some() && !self.workload.memory_at.is_empty() {
            bail!("`--memory-at` is for workloads, not `--requests`");
        }
        let outcome = match &self.data {
            None => match &self.requests {
                None => self.workload.execute(&factory, self.log)?,
                Some(path) => {
                    let options = self.workload.options()?;
                    let imports = HostImports::new(
                        Box::new(MemoryStorage::new()),
                        options.block_size,
                        options.block_count,
                        IoOrder::Seeded(self.workload.seed),
                    );
                    let mut replica = Replica::open(factory.instance(imports)?, options, None)?;
                    let outcome =
                        commit_requests(&mut replica, path, self.workload.group_size, out)?;
                    Outcome {
                        checkpoint: last_checkpoint(&replica),
                        ..outcome
                    }
                }
            },
            Some(path) => self.execute_durable(path, &factory, out)?,
        };
        print_outcome(out, &outcome)?;
        Ok(())
    }

    fn execute_durable(
        &self,
        path: &Path,
        factory: &Factory,
        out: &mut dyn std::io::Write,
    ) -> Result<Outcome> {
        if !self.workload.memory_at.is_empty() {
            bail!(
                "`--memory-at` is not supported with `--data`: the run reports memory at its end"
            );
        }
        // An existing directory keeps its options (flags that differ are refused); a new
        // one, or one whose creation never finished, takes the flags.
        let options = match stored_options(path) {
            Some(stored) => {
                self.workload.check_against(&stored)?;
                None
            }
            None => Some(self.workload.options()?),
        };
        let dir = crate::os::open_data_dir(path)?;
        let order = IoOrder::Seeded(self.workload.seed);
        let log = self.log;
        let make = |mut imports: HostImports| {
            imports.set_echo_log(log);
            factory.instance(imports)
        };
        let opening = Instant::now();
        let (mut durable, recovery) = Durable::open(dir, options, order, make)?;
        let opened = opening.elapsed();
        print_recovery(out, path, &recovery)?;
        let start_op = durable.replica().op();
        let outcome = match &self.requests {
            Some(requests) => {
                commit_requests(&mut durable, requests, self.workload.group_size, out)?
            }
            None => {
                // A continuing run must not repeat the bodies of the first: seed by where
                // it starts.
                let workload_args = WorkloadArgs {
                    seed: self.workload.seed.wrapping_add(start_op),
                    ..self.workload.clone()
                };
                let mut workload = workload_args.workload_for(durable.replica())?;
                // The workload's model learns the state the journal built.
                durable.read_journal(|entry, _| {
                    workload.observe(&entry.request);
                    Ok(())
                })?;
                let start = Instant::now();
                let bar = super::progress_bar(self.workload.ops, "ops");
                let end = start_op + self.workload.ops;
                let report = run_with_progress(
                    &mut durable,
                    workload.as_mut(),
                    end,
                    &bar,
                    self.workload.group_size,
                )?;
                bar.finish_and_clear();
                Outcome {
                    report,
                    elapsed: start.elapsed(),
                    opened,
                    ..Outcome::default()
                }
            }
        };
        say!(
            out,
            "ops         {} to {}",
            start_op + 1,
            durable.replica().op()
        )?;
        say!(
            out,
            "rebuilt     {} instances after a guest trapped; {} requests refused as poison",
            durable.rebuilds(),
            durable.poisoned()
        )?;
        let writes = durable.journal_writes();
        if writes > 0 {
            say!(
                out,
                "journal     {writes} writes, each synced: {:.1} ops a write, {:.0} syncs/s",
                outcome.report.ops as f64 / writes as f64,
                writes as f64 / outcome.elapsed.as_secs_f64().max(1e-9)
            )?;
        }
        let op = durable.replica().op();
        let memory = durable.replica_mut().instance_mut().memory_bytes();
        Ok(Outcome {
            checkpoint: last_checkpoint(durable.replica()),
            memory: memory.map(|bytes| (op, bytes)).into_iter().collect(),
            opened,
            ..outcome
        })
    }
}

fn print_recovery(out: &mut dyn std::io::Write, path: &Path, recovery: &Recovery) -> Result<()> {
    say!(out, "data        {}", path.display())?;
    say!(
        out,
        "recovered   checkpoint op {}, {} ops replayed from the journal, {} torn bytes cut",
        recovery.checkpoint_op,
        recovery.replayed_ops,
        recovery.torn_bytes
    )
}

/// The requests of a request file: `CLIENT OPERATION BODY` per line, the body in hex.
pub fn parse_requests(text: &str) -> Result<Vec<(u128, u8, Vec<u8>)>> {
    let mut requests = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let number = index + 1;
        let [client, operation, body] = fields[..] else {
            bail!("line {number}: `{line}` is not `CLIENT OPERATION BODY`");
        };
        let client = client
            .parse::<u128>()
            .with_context(|| format!("line {number}: client `{client}` is not a number"))?;
        let operation = operation.parse::<u8>().with_context(|| {
            format!("line {number}: operation `{operation}` is not a number in 0..=255")
        })?;
        let body = if body == "-" {
            Vec::new()
        } else {
            decode_hex(body).with_context(|| format!("line {number}: the body is not hex"))?
        };
        requests.push((client, operation, body));
    }
    Ok(requests)
}

fn decode_hex(text: &str) -> Result<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        bail!("an odd number of hex digits");
    }
    (0..text.len())
        .step_by(2)
        .map(|at| {
            u8::from_str_radix(&text[at..at + 2], 16)
                .with_context(|| format!("`{}` is not a hex byte", &text[at..at + 2]))
        })
        .collect()
}

/// The timestamp step between the requests of a file: one logical unit per op.
const REQUEST_FILE_TIMESTAMP_STEP: u64 = 1;

/// Commit the requests of the file at `path`, `group_size` at a time, printing each
/// reply in hex once the committer returns it (a durable one: once its op is durable).
/// A request the machine refuses is reported and skipped (the next takes its op
/// number); any other error stops the run.
fn commit_requests(
    committer: &mut impl Committer,
    path: &Path,
    group_size: u64,
    out: &mut dyn std::io::Write,
) -> Result<Outcome> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading `{}`", path.display()))?
        .len();
    if size > REQUEST_FILE_SIZE_MAX {
        bail!(
            "`{}` holds {size} bytes, over the {REQUEST_FILE_SIZE_MAX} a request file may",
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading `{}`", path.display()))?;
    let requests = parse_requests(&text).with_context(|| format!("in `{}`", path.display()))?;
    let mut report = RunReport::default();
    let start = Instant::now();
    let mut left = requests.as_slice();
    let mut group = Vec::new();
    while !left.is_empty() {
        // Numbered from the last committed op: a refused request gives its number to
        // the next.
        group.clear();
        let (mut op, mut timestamp) = (committer.last_op(), committer.last_timestamp());
        for (client, operation, body) in left.iter().take(group_size as usize) {
            op += 1;
            timestamp += REQUEST_FILE_TIMESTAMP_STEP;
            group.push(Request {
                client: *client,
                op,
                timestamp,
                operation: *operation,
                body: body.clone(),
            });
        }
        let committed = committer.commit_group(&group);
        for (request, reply) in group.iter().zip(&committed.replies) {
            let hex: String = reply.iter().map(|byte| format!("{byte:02x}")).collect();
            say!(
                out,
                "reply       op {} {}",
                request.op,
                if hex.is_empty() { "-" } else { &hex }
            )?;
            report.record(request, reply);
        }
        left = &left[committed.replies.len()..];
        match committed.stopped {
            None => {}
            Some(error @ (crate::Error::Refused(_) | crate::Error::Poison { .. })) => {
                say!(out, "refused     {error}")?;
                left = &left[1..];
            }
            Some(error) => return Err(error.into()),
        }
    }
    Ok(Outcome {
        report,
        elapsed: start.elapsed(),
        ..Outcome::default()
    })
}

/// The largest request file `run --requests` reads.
pub const REQUEST_FILE_SIZE_MAX: u64 = 256 << 20;

/// Write counts, rate and checkpoint of a run to `out`.
pub fn print_outcome(out: &mut dyn std::io::Write, outcome: &Outcome) -> Result<()> {
    let report = &outcome.report;
    say!(out, "ops         {}", report.ops)?;
    say!(
        out,
        "bytes       {} in requests, {} in replies",
        report.request_bytes,
        report.reply_bytes
    )?;
    if !outcome.opened.is_zero() {
        say!(
            out,
            "open        {:.2} ms (instantiate, init, open)",
            outcome.opened.as_secs_f64() * 1e3
        )?;
    }
    say!(out, "elapsed     {:.3} s", outcome.elapsed.as_secs_f64())?;
    say!(out, "ops/s       {:.0}", outcome.ops_per_second())?;
    match outcome.checkpoint {
        Some((op, id)) => say!(out, "checkpoint  op {op} id {id:032x}"),
        None => say!(out, "checkpoint  none yet"),
    }?;
    for (ops, bytes) in &outcome.memory {
        say!(
            out,
            "memory      {bytes} bytes of guest memory after {ops} ops"
        )?;
    }
    Ok(())
}

/// The options a data directory at `path` holds, if it is one.
fn stored_options(path: &Path) -> Option<Options> {
    if !crate::os::data_dir_exists(path) {
        return None;
    }
    super::inspect::read_state(path)
        .ok()
        .map(|state| state.options)
}

/// The name of the machine that wrote the data directory at `path`.
fn stored_machine(path: &Path) -> Result<String> {
    Ok(super::inspect::read_state(path)?.identity.name)
}

//! Deterministic simulation: one seed decides a whole life of a durable replica — the
//! machine's options, the workload, the latency and completion order of every I/O, the
//! faults its disk injects, where it crashes, and how each crash leaves the files — and
//! checkers judge it as it runs. The same seed gives the same run, byte for byte, so
//! any failure is one command to rerun: `carapace sim --seed S`.
//!
//! The fault model (what may fail and what may not) is `docs/design.md`'s. The checkers:
//!
//! - every acknowledged reply is right (the workload's check: echo's equals its request,
//!   kv's equals its model's), and equals the reply of a fault-free run of the same ops
//!   (a second replica over memory, completing I/O in submission order, fed every op
//!   that committed);
//! - every checkpoint id equals the fault-free run's at the same op: completion order,
//!   latency, faults that were repaired and crashes that were recovered change no byte
//!   of state;
//! - after each recovery nothing acknowledged is missing: the replica is at the last
//!   acknowledged op or the one after it (an op in flight at the crash may have become
//!   durable), the journal holds exactly the acknowledged requests and replies, and the
//!   checkpoint it opened is the fault-free run's;
//! - a `corrupt-block` failure names an address where a fault was injected (then the run
//!   ends as *detected*: one replica has no second copy to repair the block from); a
//!   damaged journal or superblock fails (their synced bytes are trusted), as does
//!   anything else that stops the replica but a crash or an injected I/O error;
//! - liveness: after [`RESTARTS_BEFORE_HEALING`] restarts the disk heals (no more faults
//!   or crashes) and the run must finish within a bound of steps.

use std::collections::BTreeMap;

use crate::checksum::checksum;
use crate::disk::{CrashMode, FaultKind, File, FileFaults, SimDisk};
use crate::durable::{
    DataDir, Durable, GRID_FILE, JOURNAL_FILE, MakeInstance, SUPERBLOCK_FILE, reply_checksum,
};
use crate::error::{Error, FailureKind, Fault, GuestError, Result};
use crate::imports::{HostImports, IoOrder};
use crate::instance::Options;
use crate::prng::Prng;
use crate::replica::{Replica, Request};
use crate::storage::MemoryStorage;
use crate::superblock::{COPIES, COPY_SIZE, Superblock};
use crate::workload::{self, Workload};

/// Restarts after which the disk heals: no more faults or crashes, so that the run can
/// finish (TigerBeetle's simulator ends with such a liveness phase).
pub const RESTARTS_BEFORE_HEALING: u64 = 48;

/// Parts per million: the unit of every chance below.
const MILLION: u64 = 1_000_000;

/// Everything a seed decides before the run, printed so that a person can see what was
/// simulated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// The seed.
    pub seed: u64,
    /// The machine's name (it picks the workload).
    pub machine: String,
    /// Ops to acknowledge.
    pub ops: u64,
    /// The options the data directory is created with.
    pub options: Options,
    /// The usual bound of an I/O's latency, in ticks (see [`IoOrder::Latency`]).
    pub latency_max: u64,
    /// Faults injected into the grid file.
    pub grid_faults: FileFaults,
    /// Faults injected into the journal and superblock files: I/O errors only (their
    /// synced bytes are trusted; see the fault model).
    pub log_faults: FileFaults,
    /// Mean disk operations between crashes; 0 never crashes.
    pub crash_mean_operations: u64,
    /// Chance, in parts per million, that a restart finds one superblock copy damaged.
    pub superblock_damage: u32,
    /// The host syncs the journal. `false` is a deliberately broken host (a journal
    /// append acknowledged before it is durable), for testing the checkers.
    pub journal_sync: bool,
    /// Requests handed to the replica at a time: it commits them with one journal
    /// write and sync (group commit).
    pub group_size: u64,
}

/// Pick one of `choices`.
fn pick<T: Copy>(prng: &mut Prng, choices: &[T]) -> T {
    choices[prng.below(choices.len() as u64) as usize]
}

/// A chance in parts per million, on for one seed in `one_in`.
fn chance_one_in(prng: &mut Prng, one_in: u64, levels: &[u32]) -> u32 {
    if prng.below(one_in) == 0 {
        pick(prng, levels)
    } else {
        0
    }
}

/// A chance in parts per million, off half the time.
fn chance(prng: &mut Prng, levels: &[u32]) -> u32 {
    chance_one_in(prng, 2, levels)
}

impl SimConfig {
    /// The configuration seed `seed` decides for `ops` ops of machine `machine` (`echo`
    /// or `kv`: a machine with a workload, built on the forest's settings).
    pub fn from_seed(seed: u64, machine: &str, ops: u64) -> SimConfig {
        let mut prng = Prng::new(seed);
        let block_size = pick(&mut prng, &[1024, 2048, 4096]);
        let bar_ops = pick(&mut prng, &[2, 4, 8]);
        let checkpoint_interval_ops = bar_ops * pick(&mut prng, &[1, 2, 4, 8]);
        // kv's puts are 80 bytes: every limit holds at least one.
        let batch_size_limit = pick(&mut prng, &[128, 512, 2048]);
        let scrub_interval = pick(&mut prng, &[0, 2_000, 20_000]);
        let scrub_blocks = pick(&mut prng, &[1, 8, 64]);
        let mut settings = vec![
            ("lsm-profile", "test".to_string()),
            ("bar-ops", bar_ops.to_string()),
            ("scrub-interval", scrub_interval.to_string()),
            ("scrub-blocks", scrub_blocks.to_string()),
        ];
        let options = Options {
            batch_size_limit,
            reply_size_limit: 1 << 20,
            checkpoint_interval_ops,
            block_size,
            block_count: 1 << 14,
            settings: Vec::new(),
        };
        let io_errors = [100, 1_000, 5_000];
        let grid_faults = FileFaults {
            read_error: chance(&mut prng, &io_errors),
            write_error: chance(&mut prng, &io_errors),
            sync_error: chance(&mut prng, &io_errors),
            read_corrupt: chance(&mut prng, &[1_000, 5_000, 20_000]),
            read_misdirect: chance(&mut prng, &[1_000, 5_000, 20_000]),
            // Damage at rest ends most runs it strikes (detected): rarer, so that most
            // seeds run to the end.
            write_lost: chance_one_in(&mut prng, 4, &[100, 1_000, 3_000]),
            write_torn: chance_one_in(&mut prng, 4, &[100, 1_000, 3_000]),
            unit: u64::from(block_size),
        };
        let log_faults = FileFaults {
            read_error: chance(&mut prng, &io_errors),
            write_error: chance(&mut prng, &io_errors),
            sync_error: chance(&mut prng, &io_errors),
            ..FileFaults::default()
        };
        let latency_max = pick(&mut prng, &[1, 4, 16, 64]);
        let crash_mean_operations = pick(&mut prng, &[0, 200, 2_000, 20_000]);
        let superblock_damage = chance(&mut prng, &[100_000, 500_000]);
        // Drawn after the others, so that those stay what they were for each seed.
        let group_size = pick(&mut prng, &[1, 4, 16, 64]);
        // 0: the immutable table absorbs bars until it holds a table's worth.
        let flush_bars_max = pick(&mut prng, &[0, 1, 2]);
        settings.push(("flush-bars-max", flush_bars_max.to_string()));
        let options = Options {
            settings: settings
                .into_iter()
                .map(|(name, value)| (name.to_string(), value))
                .collect(),
            ..options
        };
        SimConfig {
            seed,
            machine: machine.to_string(),
            ops,
            options,
            latency_max,
            grid_faults,
            log_faults,
            crash_mean_operations,
            superblock_damage,
            journal_sync: true,
            group_size,
        }
    }

    /// The configuration as `name=value` pairs, for people and for `--json`.
    pub fn describe(&self) -> Vec<(String, String)> {
        let options = &self.options;
        let mut pairs = vec![
            ("machine".to_string(), self.machine.clone()),
            ("ops".into(), self.ops.to_string()),
            ("block-size".into(), options.block_size.to_string()),
            ("block-count".into(), options.block_count.to_string()),
            (
                "checkpoint-interval".into(),
                options.checkpoint_interval_ops.to_string(),
            ),
            (
                "batch-size-limit".into(),
                options.batch_size_limit.to_string(),
            ),
        ];
        pairs.extend(options.settings.iter().cloned());
        pairs.push(("latency-max".into(), self.latency_max.to_string()));
        pairs.push(("group-size".into(), self.group_size.to_string()));
        pairs.push((
            "crash-every".into(),
            match self.crash_mean_operations {
                0 => "never".into(),
                mean => format!("~{mean} disk operations"),
            },
        ));
        let faults = |pairs: &mut Vec<(String, String)>, file: &str, faults: &FileFaults| {
            for (kind, chance) in [
                (FaultKind::ReadError, faults.read_error),
                (FaultKind::WriteError, faults.write_error),
                (FaultKind::SyncError, faults.sync_error),
                (FaultKind::ReadCorrupt, faults.read_corrupt),
                (FaultKind::ReadMisdirect, faults.read_misdirect),
                (FaultKind::WriteLost, faults.write_lost),
                (FaultKind::WriteTorn, faults.write_torn),
            ] {
                if chance > 0 {
                    pairs.push((format!("{file}-{}", kind.name()), format!("{chance}ppm")));
                }
            }
        };
        faults(&mut pairs, GRID_FILE, &self.grid_faults);
        faults(&mut pairs, "log", &self.log_faults);
        if self.superblock_damage > 0 {
            pairs.push((
                "superblock-copy-damage".into(),
                format!("{}ppm per restart", self.superblock_damage),
            ));
        }
        if !self.journal_sync {
            pairs.push(("journal-sync".into(), "skipped (broken host)".into()));
        }
        pairs
    }
}

/// How a simulation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every op acknowledged, every checker satisfied.
    Passed,
    /// A fault damaged the only copy of a block, and the replica stopped with a
    /// `corrupt-block` error naming it: detected, never a wrong reply.
    Detected {
        /// The block's address.
        address: u64,
        /// The op being worked on (or recovered to).
        op: u64,
    },
    /// A checker failed.
    Failed {
        /// The checker.
        checker: &'static str,
        /// What it saw.
        detail: String,
    },
}

impl Verdict {
    /// `passed`, `detected` or `failed`.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Detected { .. } => "detected",
            Verdict::Failed { .. } => "failed",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Passed => f.write_str("passed"),
            Verdict::Detected { address, op } => write!(
                f,
                "detected: a fault damaged block {address}, its only copy; the replica \
                 stopped with corrupt-block at op {op}"
            ),
            Verdict::Failed { checker, detail } => write!(f, "failed: {checker}: {detail}"),
        }
    }
}

/// What a simulation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimReport {
    /// The configuration the seed decided.
    pub config: SimConfig,
    /// How it ended.
    pub verdict: Verdict,
    /// A checksum of everything that happened (ops, replies, checkpoint ids, faults,
    /// crashes, recoveries): the same seed gives the same hash.
    pub trace_hash: u128,
    /// Ops acknowledged.
    pub ops_acknowledged: u64,
    /// Checkpoints compared with the fault-free run's.
    pub checkpoints_checked: u64,
    /// Crashes (each followed by a restart and recovery).
    pub crashes: u64,
    /// Restarts after an injected I/O error.
    pub restarts_after_errors: u64,
    /// Superblock copies damaged at restarts.
    pub superblock_copies_damaged: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<FaultKind, u64>,
    /// Whether the disk healed before the end (see [`RESTARTS_BEFORE_HEALING`]).
    pub healed: bool,
}

/// Run the simulation `config` describes with instances of `make`.
pub fn simulate(config: &SimConfig, make: &MakeInstance<'_>) -> SimReport {
    let mut simulation = Simulation::new(config, make);
    let verdict = simulation.run().err().unwrap_or(Verdict::Passed);
    simulation.trace(format!("verdict {verdict}").as_bytes());
    let mut faults = BTreeMap::new();
    for fault in simulation.disk.injected() {
        *faults.entry(fault.kind).or_insert(0) += 1;
        simulation
            .trace(format!("fault {:?} {} {}", fault.kind, fault.file, fault.offset).as_bytes());
    }
    SimReport {
        config: config.clone(),
        verdict,
        trace_hash: simulation.trace_hash,
        ops_acknowledged: simulation.acknowledged.len() as u64,
        checkpoints_checked: simulation.checkpoints_checked,
        crashes: simulation.crashes,
        restarts_after_errors: simulation.restarts_after_errors,
        superblock_copies_damaged: simulation.superblock_copies_damaged,
        faults,
        healed: simulation.healed,
    }
}

/// An op known to be committed: its request and its reply's checksum.
#[derive(Debug)]
struct Committed {
    request: Request,
    reply_checksum: u128,
}

struct Simulation<'c, 'm> {
    config: &'c SimConfig,
    make: &'c MakeInstance<'m>,
    disk: SimDisk,
    /// Draws crash points, crash outcomes and superblock damage.
    prng: Prng,
    workload: Box<dyn Workload>,
    /// The fault-free run: memory storage, I/O in submission order.
    reference: Replica,
    /// The fault-free run's checkpoint ids, by op.
    reference_checkpoints: BTreeMap<u64, u128>,
    /// Ops committed, in order (acknowledged, or found durable after a crash).
    acknowledged: Vec<Committed>,
    /// The requests in flight when the replica stopped, not acknowledged: they are
    /// retried, but for those recovery finds durable.
    pending: Vec<Request>,
    steps: u64,
    crashes: u64,
    restarts_after_errors: u64,
    superblock_copies_damaged: u64,
    checkpoints_checked: u64,
    healed: bool,
    trace_hash: u128,
}

type Checked<T = ()> = std::result::Result<T, Verdict>;

fn failed(checker: &'static str, detail: impl Into<String>) -> Verdict {
    Verdict::Failed {
        checker,
        detail: detail.into(),
    }
}

impl<'c, 'm> Simulation<'c, 'm> {
    fn new(config: &'c SimConfig, make: &'c MakeInstance<'m>) -> Simulation<'c, 'm> {
        let mut prng = Prng::new(config.seed ^ 0x5151_5151_5151_5151);
        let disk = SimDisk::with_faults(prng.next_u64());
        let workload_seed = prng.next_u64();
        let workload = workload::for_machine(
            &config.machine,
            workload_seed,
            config.options.batch_size_limit,
        )
        .unwrap_or_else(|| panic!("no workload for machine `{}`", config.machine));
        let reference = make(HostImports::new(
            Box::new(MemoryStorage::new()),
            config.options.block_size,
            config.options.block_count,
            IoOrder::Fifo,
        ))
        .and_then(|instance| Replica::open(instance, config.options.clone(), None))
        .unwrap_or_else(|error| panic!("the fault-free replica does not open: {error}"));
        let mut simulation = Simulation {
            config,
            make,
            disk,
            prng,
            workload,
            reference,
            reference_checkpoints: BTreeMap::new(),
            acknowledged: Vec::new(),
            pending: Vec::new(),
            steps: 0,
            crashes: 0,
            restarts_after_errors: 0,
            superblock_copies_damaged: 0,
            checkpoints_checked: 0,
            healed: false,
            trace_hash: 0,
        };
        simulation.trace(format!("{:?}", config).as_bytes());
        simulation.set_faults();
        simulation.arm_crash();
        simulation
    }

    fn trace(&mut self, event: &[u8]) {
        let mut bytes = self.trace_hash.to_le_bytes().to_vec();
        bytes.extend_from_slice(event);
        self.trace_hash = checksum(&bytes);
    }

    fn set_faults(&self) {
        let (grid, log) = if self.healed {
            (FileFaults::default(), FileFaults::default())
        } else {
            (self.config.grid_faults, self.config.log_faults)
        };
        self.disk.set_faults(GRID_FILE, grid);
        self.disk.set_faults(JOURNAL_FILE, log);
        self.disk.set_faults(SUPERBLOCK_FILE, log);
    }

    /// Choose where the disk crashes next: uniformly within twice the mean from now.
    fn arm_crash(&mut self) {
        let mean = self.config.crash_mean_operations;
        if mean > 0 && !self.healed {
            let after = 1 + self.prng.below(2 * mean);
            self.disk.crash_at_operation(self.disk.operations() + after);
        }
    }

    /// The steps (opens and commits) a run may take: every op once, a retry per
    /// restart, and each restart's open.
    fn steps_max(&self) -> u64 {
        self.config.ops + 4 * (RESTARTS_BEFORE_HEALING + 2) + 16
    }

    fn step(&mut self) -> Checked {
        self.steps += 1;
        if self.steps > self.steps_max() {
            return Err(failed(
                "liveness",
                format!(
                    "{} steps without finishing {} ops ({} acknowledged, {} crashes)",
                    self.steps_max(),
                    self.config.ops,
                    self.acknowledged.len(),
                    self.crashes
                ),
            ));
        }
        Ok(())
    }

    fn run(&mut self) -> Checked {
        loop {
            self.step()?;
            let (mut durable, recovery_op) = match self.open() {
                Ok(durable) => durable,
                Err(error) => {
                    self.judge(error)?;
                    self.restart();
                    continue;
                }
            };
            self.trace(format!("recovered to op {recovery_op}").as_bytes());
            self.check_recovery(&mut durable)?;
            if self.acknowledged.len() as u64 >= self.config.ops {
                if self.healed {
                    return Ok(());
                }
                // A last clean restart: the finished directory must recover too.
                drop(durable);
                self.heal();
                self.restart();
                continue;
            }
            let stopped = self.commit_until_error(&mut durable)?;
            drop(durable);
            match stopped {
                Some(error) => self.judge(error)?,
                None => self.heal(),
            }
            self.restart();
        }
    }

    fn open(&mut self) -> Result<(Durable<'c>, u64)> {
        let mut dir = DataDir::simulated(&self.disk);
        if !self.config.journal_sync {
            dir.journal = Box::new(SkipSync(dir.journal));
        }
        let order = IoOrder::Latency {
            seed: self.prng.next_u64(),
            latency_max: self.config.latency_max,
        };
        let make = self.make;
        let (durable, recovery) =
            Durable::open(dir, Some(self.config.options.clone()), order, make)?;
        Ok((durable, recovery.checkpoint_op + recovery.replayed_ops))
    }

    /// Commit until every op is acknowledged (`None`) or the replica stops (what
    /// stopped it).
    fn commit_until_error(&mut self, durable: &mut Durable<'_>) -> Checked<Option<Error>> {
        while (self.acknowledged.len() as u64) < self.config.ops {
            self.step()?;
            // The requests in flight at the last stop first, then new ones.
            let mut group = std::mem::take(&mut self.pending);
            let left = self.config.ops - self.acknowledged.len() as u64;
            let wanted = self
                .config
                .group_size
                .min(left)
                .saturating_sub(group.len() as u64);
            let (op, timestamp) = match group.last() {
                Some(request) => (request.op, request.timestamp),
                None => (durable.replica().op(), durable.replica().timestamp()),
            };
            group.extend(workload::requests_after(
                self.workload.as_mut(),
                op,
                timestamp,
                wanted,
            ));
            let committed = durable.commit_group(&group);
            for (request, reply) in group.iter().zip(&committed.replies) {
                self.workload
                    .check_reply(request, reply)
                    .map_err(|detail| failed("reply", format!("op {}: {detail}", request.op)))?;
                let checkpoint = durable
                    .group_checkpoints()
                    .iter()
                    .find(|&&(op, _)| op == request.op)
                    .map(|&(_, id)| id);
                self.trace(format!("ack {} {:x}", request.op, reply_checksum(reply)).as_bytes());
                self.commit_reference(request, reply_checksum(reply), checkpoint)?;
            }
            if let Some(error) = committed.stopped {
                self.pending = group.split_off(committed.replies.len());
                return Ok(Some(error));
            }
        }
        Ok(None)
    }

    /// Feed the fault-free run `request`, which committed with `reply_checksum` (and
    /// took checkpoint `checkpoint`, if known), and compare.
    fn commit_reference(
        &mut self,
        request: &Request,
        reply_checksum: u128,
        checkpoint: Option<u128>,
    ) -> Checked {
        let reference_reply = self.reference.commit(request).map_err(|error| {
            failed(
                "fault-free run",
                format!("op {} fails there: {error}", request.op),
            )
        })?;
        if crate::durable::reply_checksum(&reference_reply) != reply_checksum {
            return Err(failed(
                "fault-free run",
                format!(
                    "op {}: the reply differs from the fault-free run's",
                    request.op
                ),
            ));
        }
        if let Some(taken) = self.reference.checkpoint_taken_at(request.op) {
            let id = taken.id();
            self.reference_checkpoints.insert(request.op, id);
            if let Some(checkpoint) = checkpoint {
                self.compare_checkpoint(request.op, checkpoint)?;
            }
        }
        self.acknowledged.push(Committed {
            request: request.clone(),
            reply_checksum,
        });
        Ok(())
    }

    fn compare_checkpoint(&mut self, op: u64, id: u128) -> Checked {
        self.checkpoints_checked += 1;
        self.trace(format!("checkpoint {op} {id:x}").as_bytes());
        match self.reference_checkpoints.get(&op) {
            Some(&expected) if expected == id => Ok(()),
            Some(&expected) => Err(failed(
                "checkpoint",
                format!(
                    "the checkpoint at op {op} is {id:032x}; the fault-free run's is \
                     {expected:032x}"
                ),
            )),
            None => Err(failed(
                "checkpoint",
                format!("a checkpoint at op {op}, where the fault-free run took none"),
            )),
        }
    }

    /// After a recovery: nothing acknowledged is missing, the journal holds what was
    /// acknowledged, an op in flight found durable is taken in, and the checkpoint
    /// opened is the fault-free run's.
    fn check_recovery(&mut self, durable: &mut Durable<'_>) -> Checked {
        let acknowledged = self.acknowledged.len() as u64;
        let recovered = durable.replica().op();
        let in_flight = self.pending.len() as u64;
        if recovered < acknowledged {
            return Err(failed(
                "recovery",
                format!("recovered to op {recovered}: acknowledged op {acknowledged} is missing"),
            ));
        }
        if recovered > acknowledged + in_flight {
            return Err(failed(
                "recovery",
                format!(
                    "recovered to op {recovered}, past the last acknowledged op \
                     {acknowledged} and the {in_flight} ops in flight"
                ),
            ));
        }
        let mut entries = Vec::new();
        self.disk
            .observe(|| {
                durable.read_journal(|entry, _| {
                    entries.push(entry);
                    Ok(())
                })
            })
            .map_err(|error| failed("recovery", format!("reading the journal: {error}")))?;
        if entries.len() as u64 != recovered {
            return Err(failed(
                "recovery",
                format!(
                    "the journal holds {} entries; the replica recovered to op {recovered}",
                    entries.len()
                ),
            ));
        }
        for (entry, committed) in entries.iter().zip(&self.acknowledged) {
            if entry.request != committed.request
                || entry.reply_checksum != committed.reply_checksum
            {
                return Err(failed(
                    "recovery",
                    format!(
                        "the journal's op {} is not what was acknowledged",
                        committed.request.op
                    ),
                ));
            }
        }
        // Ops in flight that became durable before the crash committed.
        let durable_in_flight = (recovered - acknowledged) as usize;
        let rest = self.pending.split_off(durable_in_flight);
        let taken = std::mem::replace(&mut self.pending, rest);
        for (request, entry) in taken.into_iter().zip(&entries[acknowledged as usize..]) {
            if entry.request != request {
                return Err(failed(
                    "recovery",
                    format!(
                        "the journal's op {} is not the request in flight",
                        request.op
                    ),
                ));
            }
            self.workload.observe(&request);
            self.trace(format!("durable in flight {}", request.op).as_bytes());
            self.commit_reference(&request, entry.reply_checksum, entry.checkpoint_id)?;
        }
        if let Some(checkpoint) = durable.replica().checkpoint().cloned() {
            self.compare_checkpoint(checkpoint.op, checkpoint.id())?;
        }
        Ok(())
    }

    /// Judge an error from the replica under test: `Ok` (restart and recover) for a
    /// crash or an injected I/O error; a `corrupt-block` at a faulted address is a
    /// detection; anything else is a failure.
    fn judge(&mut self, error: Error) -> Checked {
        if self.disk.is_crashed() {
            self.crashes += 1;
            self.trace(format!("crash at operation {}", self.disk.operations()).as_bytes());
            return Ok(());
        }
        match error {
            Error::Io { ref source, .. } if !self.healed && is_injected(source) => {
                self.restarts_after_errors += 1;
                self.trace(format!("restart after {error}").as_bytes());
                Ok(())
            }
            Error::Guest(GuestError {
                fault:
                    Fault::Failure {
                        kind: FailureKind::CorruptBlock,
                        ref message,
                    },
                op,
                ..
            }) => Err(self.judge_corrupt_block(message, op)),
            // Within the fault model the journal's and superblock's synced bytes are
            // trusted: damage there means something acknowledged was not durable.
            Error::Corrupt { .. } => Err(failed("durability", error.to_string())),
            error => Err(failed("unexpected error", error.to_string())),
        }
    }

    /// A `corrupt-block` failure must name an address where a fault was injected.
    fn judge_corrupt_block(&self, message: &str, op: u64) -> Verdict {
        let Some(address) = address_in(message) else {
            return failed(
                "corrupt-block",
                format!("at op {op}, naming no address: {message}"),
            );
        };
        let block_size = u64::from(self.config.options.block_size);
        let offset = (address.max(1) - 1) * block_size;
        let faulted = self
            .disk
            .injected()
            .iter()
            .any(|fault| fault.file == GRID_FILE && fault.offset == offset);
        if !faulted {
            return failed(
                "corrupt-block",
                format!("at op {op}, block {address}, where no fault was injected: {message}"),
            );
        }
        Verdict::Detected { address, op }
    }

    /// Stop injecting faults and crashes: the liveness phase.
    fn heal(&mut self) {
        self.healed = true;
        self.trace(b"healed");
        self.set_faults();
    }

    /// The process died (or was stopped): the disk crashes, unsynced writes landing
    /// whole, torn or not at all as the seed says, one superblock copy may be damaged,
    /// and the next crash point is chosen.
    fn restart(&mut self) {
        self.disk.crash(CrashMode::Random(self.prng.next_u64()));
        let restarts = self.crashes + self.restarts_after_errors;
        if restarts >= RESTARTS_BEFORE_HEALING && !self.healed {
            self.heal();
        }
        if !self.healed
            && self.prng.below(MILLION) < u64::from(self.config.superblock_damage)
            && self.damage_a_superblock_copy()
        {
            self.superblock_copies_damaged += 1;
        }
        self.arm_crash();
    }

    /// Damage one superblock copy, only if all are valid now: the fault model never
    /// lets every copy be lost at once.
    fn damage_a_superblock_copy(&mut self) -> bool {
        // Copies past the end of a short file read as zeros: not valid.
        let all_valid = self.disk.observe(|| {
            Superblock::read_copies(&mut self.disk.file(SUPERBLOCK_FILE))
                .is_ok_and(|(_, valid)| valid.iter().all(|valid| *valid))
        });
        if !all_valid {
            return false;
        }
        let copy = self.prng.below(COPIES as u64) as usize;
        let offset = copy * COPY_SIZE + self.prng.below(128) as usize;
        self.disk.corrupt(SUPERBLOCK_FILE, offset, 0x10);
        self.trace(format!("superblock copy {copy} damaged").as_bytes());
        true
    }
}

/// Whether an I/O error is one the simulated disk injected (or its crash).
fn is_injected(error: &std::io::Error) -> bool {
    let text = error.to_string();
    text.starts_with("injected fault") || text == "simulated crash"
}

/// The number after the first "address " in a failure's message.
fn address_in(message: &str) -> Option<u64> {
    let (_, rest) = message.split_once("address ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// A deliberately broken file layer: syncs do nothing, so an append is acknowledged
/// before it is durable. Only [`SimConfig::journal_sync`] `= false` uses it.
struct SkipSync(Box<dyn File>);

impl File for SkipSync {
    fn read_at(&mut self, offset: u64, buffer: &mut [u8]) -> std::io::Result<()> {
        self.0.read_at(offset, buffer)
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.write_at(offset, data)
    }

    fn sync(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    fn length(&mut self) -> std::io::Result<u64> {
        self.0.length()
    }

    fn set_len(&mut self, length: u64) -> std::io::Result<()> {
        self.0.set_len(length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_message_names_its_address() {
        assert_eq!(
            address_in("block at address 1234 (expected Value ...): body checksum mismatch"),
            Some(1234)
        );
        assert_eq!(address_in("no number here"), None);
    }

    #[test]
    fn the_same_seed_decides_the_same_configuration() {
        assert_eq!(
            SimConfig::from_seed(7, "echo", 100),
            SimConfig::from_seed(7, "echo", 100)
        );
        let configs: std::collections::BTreeSet<String> = (0..32)
            .map(|seed| format!("{:?}", SimConfig::from_seed(seed, "kv", 100).describe()))
            .collect();
        assert!(configs.len() > 16, "seeds decide different configurations");
    }
}

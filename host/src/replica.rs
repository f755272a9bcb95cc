//! The lifecycle, as the host drives it: `init` -> `open`, then for each committed op
//! (due timers) -> `prefetch` -> `commit` -> `compact`, and a `checkpoint` every
//! checkpoint interval. Every asynchronous step is run to `done` by completing the
//! guest's I/O one operation at a time, in the host context's deterministic order.

use anyhow::{Context as _, Result, bail, ensure};

use crate::machine::{Machine, Options, Step};

/// Completions delivered to finish one step, at most: far above what a checkpoint of
/// the largest grid needs. A guest whose step stays pending longer is treated as stuck
/// (a component also runs out of the fuel its step started with).
pub const COMPLETIONS_PER_STEP_MAX: u64 = 1 << 20;

/// Timers delivered before one op, at most: a guest that keeps re-arming timers in
/// the past must not stall the host.
pub const TIMERS_PER_OP_MAX: usize = 64;

/// The largest checkpoint state a guest may return: it is published in every superblock
/// copy (see `superblock`).
pub const CHECKPOINT_STATE_SIZE_MAX: usize = 1024;

/// A committed request, as the log records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The client that sent it.
    pub client: u128,
    /// Its op number: one more than the previous committed op.
    pub op: u64,
    /// Its timestamp: greater than the previous op's.
    pub timestamp: u64,
    /// The state machine operation.
    pub operation: u8,
    /// The body.
    pub body: Vec<u8>,
}

/// A checkpoint as the host keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The op it is at.
    pub op: u64,
    /// The timestamp of that op (the clock a reopened guest sees).
    pub timestamp: u64,
    /// The guest's checkpoint state.
    pub state: Vec<u8>,
}

impl Checkpoint {
    /// The checkpoint id: the checksum of the state. Because the state names its blocks
    /// by checksum, the id covers the whole durable state of the machine.
    pub fn id(&self) -> u128 {
        carapace_lsm::checksum::checksum(&self.state)
    }
}

/// How the host paces a machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// Options for `init`.
    pub options: Options,
    /// Checkpoint after every op that is a multiple of this.
    pub checkpoint_interval_ops: u64,
}

/// A state machine instance and where it stands in the log.
#[derive(Debug)]
pub struct Replica<M: Machine> {
    machine: M,
    config: ReplicaConfig,
    /// The last committed op.
    op: u64,
    /// Its timestamp.
    timestamp: u64,
    checkpoint: Option<Checkpoint>,
    /// Why the machine stopped, once it has: the instance is unusable after an error.
    failed: Option<String>,
}

impl<M: Machine> Replica<M> {
    /// `init` and `open` `machine`, empty or at `checkpoint`.
    pub fn open(
        mut machine: M,
        config: ReplicaConfig,
        checkpoint: Option<Checkpoint>,
    ) -> Result<Replica<M>> {
        ensure!(
            config.checkpoint_interval_ops > 0,
            "the checkpoint interval must be at least one op"
        );
        machine.init(&config.options).context("`init`")?;
        let (op, timestamp) = checkpoint
            .as_ref()
            .map_or((0, 0), |checkpoint| (checkpoint.op, checkpoint.timestamp));
        machine.with_context(|context| {
            context.clear_timers();
            context.set_clock(op, timestamp);
        });
        let mut replica = Replica {
            machine,
            config,
            op,
            timestamp,
            checkpoint,
            failed: None,
        };
        let state = replica
            .checkpoint
            .as_ref()
            .map(|checkpoint| checkpoint.state.clone());
        replica.run_step("open", |machine| machine.open(state.as_deref()))?;
        Ok(replica)
    }

    /// The last committed op.
    pub fn op(&self) -> u64 {
        self.op
    }

    /// How the machine is paced.
    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    /// The timestamp of the last committed op.
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }

    /// The latest checkpoint, taken or opened.
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        self.checkpoint.as_ref()
    }

    /// The checkpoint taken right after op `op`, if one was (the latest, at that op).
    pub fn checkpoint_taken_at(&self, op: u64) -> Option<&Checkpoint> {
        self.checkpoint
            .as_ref()
            .filter(|checkpoint| checkpoint.op == op)
    }

    /// The machine (for its host context, mostly).
    pub fn machine_mut(&mut self) -> &mut M {
        &mut self.machine
    }

    /// Whether the machine accepts a request; the error is the reason for the client.
    pub fn input_valid(&mut self, operation: u8, body: &[u8]) -> Result<Result<(), String>> {
        self.machine.input_valid(operation, body)
    }

    /// Commit `request` and return its reply: due timers, prefetch, commit, compact,
    /// and a checkpoint if the op ends an interval. The request must be the next op,
    /// with a later timestamp, and valid (see [`Replica::input_valid`]).
    pub fn commit(&mut self, request: &Request) -> Result<Vec<u8>> {
        if let Some(reason) = &self.failed {
            bail!("the state machine failed earlier and must be reopened: {reason}");
        }
        ensure!(
            request.op == self.op + 1,
            "op {} does not follow the last committed op {}",
            request.op,
            self.op
        );
        ensure!(
            request.timestamp > self.timestamp,
            "op {} has timestamp {}, not after the previous {}",
            request.op,
            request.timestamp,
            self.timestamp
        );
        if let Err(reason) = self.machine.input_valid(request.operation, &request.body)? {
            bail!("op {} is not valid input: {reason}", request.op);
        }
        self.execute(request)
            .inspect_err(|error| self.failed = Some(format!("{error:#}")))
    }

    /// Everything after validation; any error leaves the machine unusable.
    fn execute(&mut self, request: &Request) -> Result<Vec<u8>> {
        self.deliver_due_timers(request.timestamp)?;

        let op = request.op;
        self.machine
            .with_context(|context| context.set_clock(op - 1, request.timestamp));
        self.run_step("prefetch", |machine| {
            machine.prefetch(op, request.operation, &request.body)
        })
        .with_context(|| format!("op {op}"))?;
        let reply = self
            .machine
            .commit(
                request.client,
                op,
                request.timestamp,
                request.operation,
                &request.body,
            )
            .with_context(|| format!("`commit` of op {op}"))?;
        self.op = op;
        self.timestamp = request.timestamp;
        self.machine
            .with_context(|context| context.set_clock(op, request.timestamp));
        self.run_step("compact", |machine| machine.compact(op))
            .with_context(|| format!("op {op}"))?;
        if op.is_multiple_of(self.config.checkpoint_interval_ops) {
            self.take_checkpoint()?;
        }
        Ok(reply)
    }

    fn deliver_due_timers(&mut self, timestamp: u64) -> Result<()> {
        let op = self.op;
        for delivered in 0..=TIMERS_PER_OP_MAX {
            // A due timer fires as the op that reaches its deadline arrives: the guest
            // sees that op's timestamp, so time never goes backwards, and a periodic
            // timer re-armed from `now` fires at most once per op.
            let Some(id) = self.machine.with_context(|context| {
                let (id, _) = context.take_due_timer(timestamp)?;
                context.set_clock(op, timestamp);
                Some(id)
            }) else {
                return Ok(());
            };
            ensure!(
                delivered < TIMERS_PER_OP_MAX,
                "more than {TIMERS_PER_OP_MAX} timers fell due before op {}: the guest keeps \
                 re-arming them",
                op + 1
            );
            self.run_step("timer", |machine| machine.timer(id))
                .with_context(|| format!("timer {id} before op {}", op + 1))?;
        }
        unreachable!("the loop returns or fails by its last turn")
    }

    fn take_checkpoint(&mut self) -> Result<()> {
        let op = self.op;
        self.run_step("checkpoint", |machine| machine.checkpoint(op))
            .with_context(|| format!("op {op}"))?;
        self.machine.with_context(|context| context.sync())?;
        let state = self
            .machine
            .checkpoint_state()
            .context("`checkpoint-state`")?;
        ensure!(
            (1..=CHECKPOINT_STATE_SIZE_MAX).contains(&state.len()),
            "the guest returned a checkpoint state of {} bytes at op {op}; it must hold 1 to \
             {CHECKPOINT_STATE_SIZE_MAX}",
            state.len()
        );
        self.checkpoint = Some(Checkpoint {
            op,
            timestamp: self.timestamp,
            state,
        });
        Ok(())
    }

    /// Start a step with `start` and deliver completions until it is done. Grid I/O and
    /// timers are the business of steps: the host refuses them outside one.
    fn run_step(&mut self, what: &str, start: impl FnOnce(&mut M) -> Result<Step>) -> Result<()> {
        self.machine
            .with_context(|context| context.set_step_active(true));
        let first = start(&mut self.machine);
        let result = self.finish_step(what, first);
        self.machine
            .with_context(|context| context.set_step_active(false));
        result
    }

    /// Deliver completions until the step in flight is done.
    fn finish_step(&mut self, what: &str, first: Result<Step>) -> Result<()> {
        let mut step = first.with_context(|| format!("`{what}`"))?;
        let mut completions = 0;
        while step == Step::Pending {
            ensure!(
                completions < COMPLETIONS_PER_STEP_MAX,
                "`{what}` still pending after {COMPLETIONS_PER_STEP_MAX} completions"
            );
            let completion = self
                .machine
                .with_context(|context| context.complete_next())?;
            step = match completion {
                None => bail!("`{what}` is pending with no I/O in flight"),
                Some(crate::context::Completion::Read { address, block }) => self
                    .machine
                    .read_done(address, block)
                    .with_context(|| format!("`read-done` of address {address} during `{what}`"))?,
                Some(crate::context::Completion::Write { address }) => {
                    self.machine.write_done(address).with_context(|| {
                        format!("`write-done` of address {address} during `{what}`")
                    })?
                }
            };
            completions += 1;
        }
        let stray = self.machine.with_context(|context| context.has_in_flight());
        ensure!(!stray, "`{what}` is done with I/O still in flight");
        Ok(())
    }
}

/// Something that commits requests in op order: a [`Replica`], or a durable one.
pub trait Committer {
    /// The last committed op.
    fn last_op(&self) -> u64;
    /// Its timestamp.
    fn last_timestamp(&self) -> u64;
    /// Commit `request` (the next op) and return its reply.
    fn commit_request(&mut self, request: &Request) -> Result<Vec<u8>>;
}

impl<M: Machine> Committer for Replica<M> {
    fn last_op(&self) -> u64 {
        self.op
    }

    fn last_timestamp(&self) -> u64 {
        self.timestamp
    }

    fn commit_request(&mut self, request: &Request) -> Result<Vec<u8>> {
        self.commit(request)
    }
}

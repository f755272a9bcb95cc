//! The lifecycle, as the host drives it: `init` -> `open`, then deliveries of committed
//! ops (each op's due timers -> prefetch -> commit -> compact, run by the guest and
//! followed by the host imports), and a `checkpoint` every checkpoint interval. Every
//! asynchronous step is run to `done` by completing the guest's I/O one operation at
//! a time, in the host imports' deterministic order.
//!
//! A delivery carries one op or many ([`Replica::commit`], [`Replica::commit_batch`]):
//! the guest runs the same steps for each op either way, so state, replies and
//! checkpoint ids do not depend on how ops are batched. Batching saves the calls into
//! the guest and the copies of each body that one delivery per op costs.

use crate::checksum::checksum;
use crate::error::{Error, Fault, GuestError, Result};
use crate::imports::{Completion, Delivered, Phase};
pub use crate::instance::Request;
use crate::instance::{Identity, Instance, Options, Step};

/// Completions delivered to finish one step, at most: far above what a checkpoint of
/// the largest grid needs. A guest whose step stays pending longer is treated as stuck
/// (a component also runs out of the fuel its step started with).
pub const COMPLETIONS_PER_STEP_MAX: u64 = 1 << 20;

/// Ops in one delivery, at most.
pub const DELIVERY_OPS_MAX: usize = 1024;

/// Request body bytes in one delivery, at most (a delivery holds at least one op):
/// the guest holds a delivery's requests in its memory.
pub const DELIVERY_BYTES_MAX: usize = 1 << 20;

/// The largest checkpoint state a guest may return: it is published in every superblock
/// copy (see `superblock`).
pub const CHECKPOINT_STATE_SIZE_MAX: usize = 1024;

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
        checksum(&self.state)
    }
}

/// A state machine instance and where it stands in the log.
pub struct Replica {
    instance: Box<dyn Instance>,
    identity: Identity,
    options: Options,
    /// The last committed op.
    op: u64,
    /// Its timestamp.
    timestamp: u64,
    checkpoint: Option<Checkpoint>,
    /// Why the instance stopped, once it has: it is unusable after a guest error.
    failed: Option<String>,
    /// Where a completed read's block is put before it is handed to the instance.
    read_buffer: Vec<u8>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("identity", &self.identity)
            .field("op", &self.op)
            .finish_non_exhaustive()
    }
}

impl Replica {
    /// Check `options`, then `init` and `open` `instance`, empty or at `checkpoint`.
    pub fn open(
        mut instance: Box<dyn Instance>,
        options: Options,
        checkpoint: Option<Checkpoint>,
    ) -> Result<Replica> {
        options.validate()?;
        let identity = identify(instance.as_mut())?;
        let (op, timestamp) = checkpoint
            .as_ref()
            .map_or((0, 0), |checkpoint| (checkpoint.op, checkpoint.timestamp));
        instance.with_imports(|imports| {
            imports.clear_timers();
            imports.set_clock(op, timestamp);
        });
        // Options the machine refuses are refused input: nothing has run yet.
        if let Err(fault) = instance.init(&options) {
            return Err(match fault {
                Fault::Failure { message, .. } => Error::Refused(format!(
                    "the machine {identity} refuses the options: {message}"
                )),
                fault => guest_error("init", None, op, fault),
            });
        }
        let mut replica = Replica {
            instance,
            identity,
            options,
            op,
            timestamp,
            checkpoint,
            failed: None,
            read_buffer: Vec::new(),
        };
        let state = replica
            .checkpoint
            .as_ref()
            .map(|checkpoint| checkpoint.state.clone());
        replica.run_step("open", |instance| instance.open(state.as_deref()))?;
        Ok(replica)
    }

    /// Who the machine is.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The last committed op.
    pub fn op(&self) -> u64 {
        self.op
    }

    /// The options the machine runs with.
    pub fn options(&self) -> &Options {
        &self.options
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

    /// The instance (for its host imports and memory, mostly).
    pub fn instance_mut(&mut self) -> &mut dyn Instance {
        self.instance.as_mut()
    }

    /// The machine's figures of its state, between ops.
    pub fn describe(&mut self) -> Result<Vec<crate::instance::Statistic>> {
        let op = self.op;
        self.instance
            .describe()
            .map_err(|fault| guest_error("describe", None, op, fault))
    }

    /// Whether the machine accepts a request; the error is the reason for the client.
    pub fn input_valid(&mut self, operation: u8, body: &[u8]) -> Result<Result<(), String>> {
        let op = self.op;
        self.instance
            .input_valid(operation, body)
            .map_err(|fault| self.stop(guest_error("input-valid", None, op, fault)))
    }

    /// Commit `request` and return its reply: due timers, prefetch, commit, compact,
    /// and a checkpoint if the op ends an interval. The request must be the next op,
    /// with a later timestamp, and valid (see [`Replica::input_valid`]); otherwise it
    /// is [`Error::Refused`] and the replica goes on.
    pub fn commit(&mut self, request: &Request) -> Result<Vec<u8>> {
        self.commit_batch(std::slice::from_ref(request))
            .into_only_reply()
    }

    /// Commit `requests` (the next ops, in order) as [`Replica::commit`] would one by
    /// one, in as few deliveries as the bounds allow: a delivery ends at a checkpoint
    /// op and holds at most [`DELIVERY_OPS_MAX`] ops and [`DELIVERY_BYTES_MAX`] bytes
    /// of bodies. The replies are of a prefix of `requests`; `stopped` says why the
    /// next one did not commit, if one did not.
    pub fn commit_batch(&mut self, requests: &[Request]) -> Committed {
        let mut replies = Vec::with_capacity(requests.len());
        let mut rest = requests;
        while !rest.is_empty() {
            let length = match self.deliverable(rest) {
                Ok(length) => length,
                Err(error) => {
                    return Committed {
                        replies,
                        stopped: Some(error),
                    };
                }
            };
            let (batch, after) = rest.split_at(length);
            let committed = self.deliver(batch);
            replies.extend(committed.replies);
            if committed.stopped.is_some() {
                return Committed {
                    replies,
                    stopped: committed.stopped,
                };
            }
            rest = after;
        }
        Committed {
            replies,
            stopped: None,
        }
    }

    /// How many of `requests`, at least one, the next delivery takes; the error if the
    /// first is refused by the host's own checks. A later request the checks refuse
    /// ends the delivery before it, so that it is refused in turn.
    fn deliverable(&self, requests: &[Request]) -> Result<usize> {
        if let Some(reason) = &self.failed {
            return Err(Error::Stopped(reason.clone()));
        }
        let (mut op, mut timestamp, mut bytes) = (self.op, self.timestamp, 0);
        for (index, request) in requests.iter().take(DELIVERY_OPS_MAX).enumerate() {
            if let Err(error) = self.check_request(request, op, timestamp) {
                return if index == 0 { Err(error) } else { Ok(index) };
            }
            bytes += request.body.len();
            if index > 0 && bytes > DELIVERY_BYTES_MAX {
                return Ok(index);
            }
            (op, timestamp) = (request.op, request.timestamp);
            if op.is_multiple_of(self.options.checkpoint_interval_ops) {
                return Ok(index + 1);
            }
        }
        Ok(requests.len().min(DELIVERY_OPS_MAX))
    }

    /// The host's own checks of a request that follows op `op` at `timestamp`.
    fn check_request(&self, request: &Request, op: u64, timestamp: u64) -> Result<()> {
        if request.op != op + 1 {
            return Err(Error::Refused(format!(
                "op {} does not follow the last committed op {op}",
                request.op
            )));
        }
        if request.timestamp <= timestamp {
            return Err(Error::Refused(format!(
                "op {} has timestamp {}, not after the previous {timestamp}",
                request.op, request.timestamp
            )));
        }
        // The host's own bound, whatever the machine says: the journal keeps no more.
        if request.body.len() > self.options.batch_size_limit as usize {
            return Err(Error::Refused(format!(
                "op {} has a body of {} bytes, over the batch size limit of {} bytes",
                request.op,
                request.body.len(),
                self.options.batch_size_limit
            )));
        }
        Ok(())
    }

    /// Deliver `requests`, which pass the host's checks and end at most at a
    /// checkpoint op, and take the checkpoint if the last of them ends an interval.
    /// Any error but a refused request leaves the instance unusable.
    fn deliver(&mut self, requests: &[Request]) -> Committed {
        let limit = self.options.reply_size_limit;
        self.instance
            .with_imports(|imports| imports.begin_delivery(requests, limit));
        let result = self.try_step("deliver", |instance| instance.deliver(requests));
        let Delivered { replies, op, phase } =
            self.instance.with_imports(|imports| imports.end_delivery());
        let mut committed = Committed {
            replies,
            stopped: None,
        };
        if let Err(mut error) = result {
            // The op in progress and its phase, as the guest reported them. That op
            // did not finish (if it was compacting, it did not finish compacting): it
            // is not counted as committed.
            if let Error::Guest(guest) = &mut error {
                guest.op = op;
                guest.step = Some(phase.step());
            }
            let first_op = requests.first().map_or(op, |request| request.op);
            committed
                .replies
                .truncate(op.saturating_sub(first_op) as usize);
            self.advance(requests, committed.replies.len());
            committed.stopped = Some(self.stop(error));
            return committed;
        }
        self.advance(requests, committed.replies.len());
        let Some(next) = requests.get(committed.replies.len()) else {
            if self.op.is_multiple_of(self.options.checkpoint_interval_ops)
                && let Err(error) = self.take_checkpoint()
            {
                committed.replies.pop();
                committed.stopped = Some(error);
            }
            return committed;
        };
        // The guest stopped before `next`: it must be a request the machine refuses,
        // and the guest must not have begun it.
        if phase != Phase::Compact && phase != Phase::Waiting {
            let fault = Fault::Violation(format!(
                "the delivery ended during the `{}` of op {op}",
                phase.step()
            ));
            committed.stopped = Some(self.stop(guest_error("deliver", None, op, fault)));
            return committed;
        }
        committed.stopped = Some(match self.input_valid(next.operation, &next.body) {
            Ok(Err(reason)) => {
                Error::Refused(format!("op {} is not valid input: {reason}", next.op))
            }
            Ok(Ok(())) => {
                let fault = Fault::Violation(format!(
                    "the delivery stopped before op {}, which the machine accepts",
                    next.op
                ));
                self.stop(guest_error("deliver", None, next.op, fault))
            }
            Err(error) => error,
        });
        committed
    }

    /// The first `count` of `requests` committed.
    fn advance(&mut self, requests: &[Request], count: usize) {
        if let Some(last) = count.checked_sub(1).map(|index| &requests[index]) {
            self.op = last.op;
            self.timestamp = last.timestamp;
        }
    }

    /// Record why the instance can do no more, and return the error.
    fn stop(&mut self, error: Error) -> Error {
        self.failed.get_or_insert_with(|| error.to_string());
        error
    }

    fn take_checkpoint(&mut self) -> Result<()> {
        let op = self.op;
        self.run_step("checkpoint", |instance| instance.checkpoint(op))?;
        self.instance
            .with_imports(|imports| imports.sync())
            .map_err(|error| self.stop(error))?;
        let state = self
            .instance
            .checkpoint_state()
            .map_err(|fault| self.stop(guest_error("checkpoint-state", None, op, fault)))?;
        if !(1..=CHECKPOINT_STATE_SIZE_MAX).contains(&state.len()) {
            let fault = Fault::Violation(format!(
                "a checkpoint state of {} bytes at op {op}; it must hold 1 to \
                 {CHECKPOINT_STATE_SIZE_MAX}",
                state.len()
            ));
            return Err(self.stop(guest_error("checkpoint-state", None, op, fault)));
        }
        self.checkpoint = Some(Checkpoint {
            op,
            timestamp: self.timestamp,
            state,
        });
        Ok(())
    }

    /// Start a step with `start` and deliver completions until it is done. Grid I/O and
    /// timers are the business of steps: the host refuses them outside one.
    fn run_step(
        &mut self,
        step: &'static str,
        start: impl FnOnce(&mut dyn Instance) -> Result<Step, Fault>,
    ) -> Result<()> {
        self.try_step(step, start).map_err(|error| self.stop(error))
    }

    /// [`Replica::run_step`], leaving it to the caller to stop the replica on an error.
    fn try_step(
        &mut self,
        step: &'static str,
        start: impl FnOnce(&mut dyn Instance) -> Result<Step, Fault>,
    ) -> Result<()> {
        if let Some(reason) = &self.failed {
            return Err(Error::Stopped(reason.clone()));
        }
        self.instance
            .with_imports(|imports| imports.set_step_active(true));
        let first = start(self.instance.as_mut()).map_err(|fault| (step, fault));
        let result = self.finish_step(step, first);
        self.instance
            .with_imports(|imports| imports.set_step_active(false));
        result
    }

    /// Deliver completions until the step in flight is done.
    fn finish_step(
        &mut self,
        step: &'static str,
        first: Result<Step, (&'static str, Fault)>,
    ) -> Result<()> {
        let op = self.op;
        let fail =
            |(export, fault): (&'static str, Fault)| guest_error(export, Some(step), op, fault);
        let mut state = first.map_err(fail)?;
        let mut completions = 0;
        while state == Step::Pending {
            if completions == COMPLETIONS_PER_STEP_MAX {
                let fault = Fault::Violation(format!(
                    "still pending after {COMPLETIONS_PER_STEP_MAX} completions"
                ));
                return Err(fail((step, fault)));
            }
            let block = &mut self.read_buffer;
            let completion = self
                .instance
                .with_imports(|imports| imports.complete_next(block))?;
            state = match completion {
                None => {
                    let fault = Fault::Violation("pending with no I/O in flight".into());
                    return Err(fail((step, fault)));
                }
                Some(Completion::Read { address }) => self
                    .instance
                    .read_done(address, &self.read_buffer)
                    .map_err(|fault| fail(("read-done", fault)))?,
                Some(Completion::Write { address }) => self
                    .instance
                    .write_done(address)
                    .map_err(|fault| fail(("write-done", fault)))?,
            };
            completions += 1;
        }
        if self
            .instance
            .with_imports(|imports| imports.has_in_flight())
        {
            let fault = Fault::Violation("done with I/O still in flight".into());
            return Err(fail((step, fault)));
        }
        Ok(())
    }
}

fn guest_error(export: &'static str, step: Option<&'static str>, op: u64, fault: Fault) -> Error {
    Error::Guest(GuestError {
        export,
        step,
        op,
        fault,
    })
}

/// Ask `instance` who it is, checking what the host records of it.
pub fn identify(instance: &mut dyn Instance) -> Result<Identity> {
    let identity = instance
        .identify()
        .map_err(|fault| guest_error("identify", None, 0, fault))?;
    let too_long = [&identity.name, &identity.version]
        .iter()
        .any(|text| text.len() > crate::instance::IDENTITY_TEXT_SIZE_MAX);
    if identity.name.is_empty() || too_long {
        let fault = Fault::Violation(format!(
            "an identity's name must be 1 to {} bytes and its version at most as long: {identity}",
            crate::instance::IDENTITY_TEXT_SIZE_MAX
        ));
        return Err(guest_error("identify", None, 0, fault));
    }
    Ok(identity)
}

/// Something that commits requests in op order: a [`Replica`], or a durable one.
pub trait Committer {
    /// The last committed op.
    fn last_op(&self) -> u64;
    /// Its timestamp.
    fn last_timestamp(&self) -> u64;
    /// Commit `request` (the next op) and return its reply.
    fn commit_request(&mut self, request: &Request) -> Result<Vec<u8>>;
    /// Commit `requests` (the next ops, in order): the replies of those that
    /// committed, a prefix, and the error that stopped the next one if any. A durable
    /// replica makes the group durable at once (group commit); by default, one by one.
    fn commit_group(&mut self, requests: &[Request]) -> Committed {
        let mut replies = Vec::with_capacity(requests.len());
        for request in requests {
            match self.commit_request(request) {
                Ok(reply) => replies.push(reply),
                Err(error) => {
                    return Committed {
                        replies,
                        stopped: Some(error),
                    };
                }
            }
        }
        Committed {
            replies,
            stopped: None,
        }
    }
}

/// What [`Committer::commit_group`] committed.
#[derive(Debug)]
pub struct Committed {
    /// The replies of the first `replies.len()` requests, in order.
    pub replies: Vec<Vec<u8>>,
    /// Why the next request did not commit, if one did not.
    pub stopped: Option<Error>,
}

impl Committed {
    /// The outcome of a group of one request: its reply, or why it did not commit.
    pub fn into_only_reply(mut self) -> Result<Vec<u8>> {
        match self.stopped {
            Some(error) => Err(error),
            None => Ok(self.replies.pop().expect("one reply per committed request")),
        }
    }
}

impl Committer for Replica {
    fn last_op(&self) -> u64 {
        self.op
    }

    fn last_timestamp(&self) -> u64 {
        self.timestamp
    }

    fn commit_request(&mut self, request: &Request) -> Result<Vec<u8>> {
        self.commit(request)
    }

    fn commit_group(&mut self, requests: &[Request]) -> Committed {
        self.commit_batch(requests)
    }
}

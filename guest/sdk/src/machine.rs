//! The exports of the `state-machine` world, as a trait in plain Rust, and the runner
//! that runs its asynchronous steps one at a time.
//!
//! A [`StateMachine`] writes its asynchronous steps as `async fn`s that await grid I/O.
//! The [`Runner`] owns the machine; starting a step moves the machine into the step's
//! future, which is polled once when the step starts and again after every completion.
//! When it finishes it hands the machine back. At most one step is in flight, as the
//! contract requires, and a step runs to completion without re-entrancy: there is no
//! waker and no other task, so the order of execution is a pure function of the order
//! of calls.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll, Waker};

use crate::failure::Failure;
use crate::io::{BodyReply, Context};

/// Options passed to `init`, as in the contract's `options`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The largest request body, in bytes, that `input-valid` accepts.
    pub batch_size_limit: u32,
    /// The largest reply, in bytes, that `commit` may return; a machine refuses at
    /// `init` a limit below what its replies can need.
    pub reply_size_limit: u32,
    /// The host takes a checkpoint after every op that is a multiple of this; a machine
    /// refuses at `init` an interval it cannot checkpoint at.
    pub checkpoint_interval_ops: u64,
    /// The size of every grid block, in bytes.
    pub block_size: u32,
    /// How many blocks the grid holds; valid addresses are `1..=block_count`.
    pub block_count: u64,
    /// Machine-specific settings as `(name, value)` pairs.
    pub settings: Vec<(String, String)>,
}

/// A committed request, as in the contract's `request`: its body is the next
/// `body_size` bytes of its [`Delivery`]'s bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// The client that sent it.
    pub client: u128,
    /// Its op number.
    pub op: u64,
    /// Its timestamp, assigned by the host.
    pub timestamp: u64,
    /// The machine's operation.
    pub operation: u8,
    /// The size of its body.
    pub body_size: u32,
}

/// The committed requests of one delivery, as the contract's `deliver` passes them: the
/// requests in order, and their bodies end to end in one buffer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    requests: Vec<Request>,
    bodies: Vec<u8>,
}

impl Delivery {
    /// The delivery of `requests` whose bodies are `bodies`, end to end; a protocol
    /// failure if the requests' body sizes do not add up to the length of `bodies`.
    pub fn new(requests: Vec<Request>, bodies: Vec<u8>) -> Result<Delivery, Failure> {
        let sizes: u64 = requests
            .iter()
            .map(|request| u64::from(request.body_size))
            .sum();
        if sizes != bodies.len() as u64 {
            return Err(Failure::Protocol(format!(
                "a delivery's requests have bodies of {sizes} bytes in all, but it brought \
                 {} bytes of bodies",
                bodies.len()
            )));
        }
        Ok(Delivery { requests, bodies })
    }

    /// An empty delivery with room for `requests` requests and `bytes` bytes of bodies.
    pub fn with_capacity(requests: usize, bytes: usize) -> Delivery {
        Delivery {
            requests: Vec::with_capacity(requests),
            bodies: Vec::with_capacity(bytes),
        }
    }

    /// Append a request with its body.
    ///
    /// # Panics
    ///
    /// If the body is 4 GiB or longer: no contract's request is.
    pub fn push(&mut self, client: u128, op: u64, timestamp: u64, operation: u8, body: &[u8]) {
        self.requests.push(Request {
            client,
            op,
            timestamp,
            operation,
            body_size: u32::try_from(body.len()).expect("a body under 4 GiB"),
        });
        self.bodies.extend_from_slice(body);
    }

    /// How many requests it holds.
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Whether it holds no request.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// Each request with its body, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&Request, &[u8])> {
        with_bodies(&self.requests, &self.bodies).map(|(request, body, _)| (request, body))
    }
}

/// Each of `requests` with its body, and where that begins among `bodies`.
fn with_bodies<'a>(
    requests: &'a [Request],
    bodies: &'a [u8],
) -> impl Iterator<Item = (&'a Request, &'a [u8], usize)> {
    let mut start = 0;
    requests.iter().map(move |request| {
        let end = start + request.body_size as usize;
        let offset = std::mem::replace(&mut start, end);
        (request, &bodies[offset..end], offset)
    })
}

/// An op's reply, as [`StateMachine::commit`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The bytes `commit` wrote into its `reply` buffer.
    Written,
    /// Bytes `range` of the op's own request body, which `commit` leaves as they are:
    /// they are handed to the host where they lie, so that a reply repeating its
    /// request (an echo) costs no copy inside the guest, however large.
    Body(Range<usize>),
}

/// Where an asynchronous step stands, as in the contract's `step`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Waiting for I/O completions.
    Pending,
    /// Complete.
    Done,
}

/// Who a machine is, as the contract's `identity`: a host records it in a data directory
/// and refuses to open one written by another machine or state format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The machine's name, stable across versions (`echo`, `kv`).
    pub name: &'static str,
    /// This build's version, for people (`0.3.0`).
    pub version: &'static str,
    /// The version of the state's format in the grid and in checkpoint states: bump it
    /// whenever a new version could not open what an older one wrote.
    pub state_format: u32,
}

/// One named figure of a machine's state (the contract's `statistic`), for people and
/// tools: `carapace inspect` prints them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statistic {
    /// What the figure is, for example `tree 1 tables per level`.
    pub name: String,
    /// Its values.
    pub values: Vec<u64>,
}

/// A deterministic state machine. Adapters bind it to a target through [`Runner`].
///
/// The `async fn`s are never sent across threads: a guest is single-threaded by contract.
#[allow(async_fn_in_trait)]
pub trait StateMachine: Sized + 'static {
    /// Who this machine is.
    const IDENTITY: Identity;

    /// Allocate everything from `options`.
    fn init(context: Context, options: &Options) -> Result<Self, Failure>;

    /// Open empty (`None`) or at a checkpoint state returned earlier.
    async fn open(&mut self, checkpoint: Option<&[u8]>) -> Result<(), Failure>;

    /// Whether a request may be committed; the error is the reason, for the client.
    fn input_valid(&self, operation: u8, body: &[u8]) -> Result<(), String>;

    /// Load what `commit` of this op will read.
    async fn prefetch(&mut self, op: u64, operation: u8, body: &[u8]) -> Result<(), Failure>;

    /// Apply the op, and say what its reply is: bytes written into `reply` (empty on
    /// entry), or bytes of `body`.
    fn commit(
        &mut self,
        client: u128,
        op: u64,
        timestamp: u64,
        operation: u8,
        body: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<Reply, Failure>;

    /// A bounded beat of background work after committing `op`.
    async fn compact(&mut self, op: u64) -> Result<(), Failure>;

    /// Make the state as of `op` durable in the grid.
    async fn checkpoint(&mut self, op: u64) -> Result<(), Failure>;

    /// The state naming the latest checkpoint.
    fn checkpoint_state(&self) -> Vec<u8>;

    /// Timer `id` fired.
    async fn timer(&mut self, id: u64) -> Result<(), Failure>;

    /// Figures of the state for people and tools; none by default.
    fn describe(&self) -> Vec<Statistic> {
        Vec::new()
    }
}

/// Commit each of `requests` by the contract's `delivery` protocol: its due timers,
/// prefetch, commit and compact, reported to the host as they happen. Stops before a
/// request the machine refuses: the host refuses it.
async fn deliver<M: StateMachine>(
    machine: &mut M,
    context: &Context,
    requests: &[Request],
    bodies: &Rc<Vec<u8>>,
) -> Result<(), Failure> {
    // Reply buffers for the batch: a commit writes into one while the last op's reply
    // waits in the context to be reported, and the host copies each out.
    let mut reply = Vec::new();
    let last = requests.len().saturating_sub(1);
    for (index, (request, body, offset)) in with_bodies(requests, bodies).enumerate() {
        let (op, operation) = (request.op, request.operation);
        if machine.input_valid(operation, body).is_err() {
            break;
        }
        // The first call begins the op, with the op before's reply if that waits.
        while let Some(id) = context.due_timer(op) {
            machine.timer(id).await?;
        }
        machine.prefetch(op, operation, body).await?;
        context.prefetched(op);
        reply.clear();
        let kind = machine.commit(
            request.client,
            op,
            request.timestamp,
            operation,
            body,
            &mut reply,
        )?;
        let from_body = match kind {
            Reply::Written => None,
            Reply::Body(range) => Some(body_reply(bodies, offset, body.len(), op, range)?),
        };
        // Reported with the next op's first `due-timer`, which saves the host a call;
        // the last op of the batch at once, so that the host can tell a trap in its
        // compaction from one in its commit.
        if index == last {
            let bytes = from_body.as_ref().map_or(&reply[..], BodyReply::bytes);
            context.committed(op, bytes);
        } else {
            context.committed_later(op, &mut reply, from_body);
        }
        // Compaction is polled from a function of its own: inlined, it made the loop
        // one function too large for Cranelift to keep its values in registers.
        OutOfLine(std::pin::pin!(machine.compact(op))).await?;
    }
    Ok(())
}

/// Op `op`'s reply `range` of its body, which begins at `offset` among `bodies` and is
/// `body_size` bytes long; a failure if the range is not within the body (a machine's
/// bug, reported as a failure rather than a panic).
#[inline]
fn body_reply(
    bodies: &Rc<Vec<u8>>,
    offset: usize,
    body_size: usize,
    op: u64,
    range: Range<usize>,
) -> Result<BodyReply, Failure> {
    if range.start > range.end || range.end > body_size {
        return Err(reply_outside_body(op, range, body_size));
    }
    Ok(BodyReply {
        bodies: Rc::clone(bodies),
        range: offset + range.start..offset + range.end,
    })
}

#[cold]
fn reply_outside_body(op: u64, range: Range<usize>, body_size: usize) -> Failure {
    Failure::Protocol(format!(
        "the reply to op {op} is bytes {range:?} of its body, which is {body_size} bytes long"
    ))
}

/// A future polled from a function of its own, never inlined into its caller's poll.
struct OutOfLine<'a, F>(Pin<&'a mut F>);

impl<F: Future> Future for OutOfLine<'_, F> {
    type Output = F::Output;

    #[inline(never)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        self.0.as_mut().poll(cx)
    }
}

type StepFuture<M> = Pin<Box<dyn Future<Output = (M, Result<(), Failure>)>>>;

enum State<M> {
    /// No step in flight.
    Idle(M),
    /// A step owns the machine until it finishes.
    Busy(StepFuture<M>),
    /// A step failed; the instance is unusable and says why on every call.
    Failed(Failure),
}

/// Runs a [`StateMachine`] by the contract: one asynchronous step at a time, polled
/// after every completion. Every export of the world maps onto one method here.
pub struct Runner<M: StateMachine> {
    context: Context,
    state: State<M>,
}

impl<M: StateMachine> std::fmt::Debug for Runner<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Idle(_) => "idle",
            State::Busy(_) => "busy",
            State::Failed(_) => "failed",
        };
        f.debug_struct("Runner").field("state", &state).finish()
    }
}

impl<M: StateMachine> Runner<M> {
    /// `init`.
    pub fn init(context: Context, options: &Options) -> Result<Runner<M>, Failure> {
        let machine = M::init(context.clone(), options)?;
        Ok(Runner {
            context,
            state: State::Idle(machine),
        })
    }

    /// `open`.
    pub fn open(&mut self, checkpoint: Option<Vec<u8>>) -> Result<Step, Failure> {
        self.start(|mut machine| async move {
            let result = machine.open(checkpoint.as_deref()).await;
            (machine, result)
        })
    }

    /// `input-valid`. A machine that is busy or failed refuses everything.
    pub fn input_valid(&self, operation: u8, body: &[u8]) -> Result<(), String> {
        match &self.state {
            State::Idle(machine) => machine.input_valid(operation, body),
            State::Busy(_) => Err("the state machine is busy with a step".to_string()),
            State::Failed(failure) => Err(format!("the state machine failed: {failure}")),
        }
    }

    /// `deliver`: commit `requests` in order as one step, each op reported to the host
    /// through the context (`due-timer`, `prefetched`, and `committed`, which may
    /// ride on the next op's first `due-timer`).
    pub fn deliver(&mut self, delivery: Delivery) -> Result<Step, Failure> {
        let context = self.context.clone();
        let Delivery { requests, bodies } = delivery;
        // Shared with the replies that are bytes of a body while they wait to be
        // reported (see `Reply::Body`).
        let bodies = Rc::new(bodies);
        self.start(move |mut machine| async move {
            let result = deliver(&mut machine, &context, &requests, &bodies).await;
            (machine, result)
        })
    }

    /// `checkpoint`.
    pub fn checkpoint(&mut self, op: u64) -> Result<Step, Failure> {
        self.start(move |mut machine| async move {
            let result = machine.checkpoint(op).await;
            (machine, result)
        })
    }

    /// `checkpoint-state`; empty while a step is in flight or after a failure.
    pub fn checkpoint_state(&self) -> Vec<u8> {
        match &self.state {
            State::Idle(machine) => machine.checkpoint_state(),
            State::Busy(_) | State::Failed(_) => Vec::new(),
        }
    }

    /// `read-done`.
    pub fn read_done(&mut self, address: u64, block: Vec<u8>) -> Result<Step, Failure> {
        self.guard(|context| context.complete_read(address, block))?;
        self.poll()
    }

    /// `write-done`.
    pub fn write_done(&mut self, address: u64) -> Result<Step, Failure> {
        self.guard(|context| context.complete_write(address))?;
        self.poll()
    }

    /// `describe`; empty while a step is in flight or after a failure.
    pub fn describe(&self) -> Vec<Statistic> {
        match &self.state {
            State::Idle(machine) => machine.describe(),
            State::Busy(_) | State::Failed(_) => Vec::new(),
        }
    }

    /// The machine, when no step is in flight (for tests and inspection).
    pub fn machine(&self) -> Option<&M> {
        match &self.state {
            State::Idle(machine) => Some(machine),
            State::Busy(_) | State::Failed(_) => None,
        }
    }

    fn idle(&mut self, what: &str) -> Result<&mut M, Failure> {
        match &mut self.state {
            State::Idle(machine) => Ok(machine),
            State::Busy(_) => Err(Failure::Protocol(format!(
                "{what} while another step is in flight"
            ))),
            State::Failed(failure) => Err(failure.clone()),
        }
    }

    /// Run `action`, recording its failure so every later call reports it.
    fn guard(
        &mut self,
        action: impl FnOnce(&Context) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        if let State::Failed(failure) = &self.state {
            return Err(failure.clone());
        }
        action(&self.context).inspect_err(|failure| self.state = State::Failed(failure.clone()))
    }

    fn start<F, Fut>(&mut self, step: F) -> Result<Step, Failure>
    where
        F: FnOnce(M) -> Fut,
        Fut: Future<Output = (M, Result<(), Failure>)> + 'static,
    {
        self.idle("a step")?;
        let State::Idle(machine) = std::mem::replace(
            &mut self.state,
            State::Failed(Failure::Protocol("a step is starting".into())),
        ) else {
            unreachable!("checked idle above");
        };
        self.state = State::Busy(Box::pin(step(machine)));
        self.poll()
    }

    fn poll(&mut self) -> Result<Step, Failure> {
        let State::Busy(future) = &mut self.state else {
            return match &self.state {
                State::Failed(failure) => Err(failure.clone()),
                _ => Err(Failure::Protocol(
                    "a completion arrived with no step in flight".into(),
                )),
            };
        };
        let mut task_context = TaskContext::from_waker(Waker::noop());
        let polled = future.as_mut().poll(&mut task_context);
        // Whatever the step did, the host learns of every op it committed.
        self.context.report_committed();
        // What the step left in flight, once it has run as far as it can.
        let in_flight = self.context.in_flight_count();
        // A machine's bug, reported as a failure rather than a panic, so that a native
        // host survives it: a pending step must be waiting for I/O (or no completion
        // could ever wake it), and a finished one must have awaited all it submitted.
        let result = match polled {
            Poll::Pending if in_flight == 0 => Err(Failure::Protocol(
                "the step is pending with no I/O in flight".into(),
            )),
            Poll::Pending => return Ok(Step::Pending),
            Poll::Ready((_, Ok(()))) if in_flight > 0 => Err(Failure::Protocol(
                "the step finished with I/O in flight".into(),
            )),
            Poll::Ready((machine, Ok(()))) => {
                self.state = State::Idle(machine);
                return Ok(Step::Done);
            }
            Poll::Ready((_, Err(failure))) => Err(failure),
        };
        result.inspect_err(|failure| self.state = State::Failed(failure.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(op: u64, body_size: u32) -> Request {
        Request {
            client: 7,
            op,
            timestamp: 10 * op,
            operation: 1,
            body_size,
        }
    }

    #[test]
    fn a_delivery_hands_each_request_its_own_body() {
        let mut delivery = Delivery::default();
        delivery.push(7, 1, 10, 1, b"first");
        delivery.push(7, 2, 20, 1, b"");
        delivery.push(7, 3, 30, 2, b"third body");
        let bodies: Vec<(u64, &[u8])> = delivery
            .iter()
            .map(|(request, body)| (request.op, body))
            .collect();
        assert_eq!(
            bodies,
            [(1, &b"first"[..]), (2, &b""[..]), (3, &b"third body"[..])]
        );
        let rebuilt = Delivery::new(
            vec![request(1, 5), request(2, 0), {
                let mut third = request(3, 10);
                third.operation = 2;
                third
            }],
            b"firstthird body".to_vec(),
        )
        .unwrap();
        assert_eq!(rebuilt, delivery);
        assert_eq!(rebuilt.len(), 3);
    }

    #[test]
    fn a_delivery_whose_body_sizes_do_not_add_up_is_a_protocol_failure() {
        for (sizes, bodies) in [
            (&[3, 4][..], &b"abcdef"[..]),
            (&[3, 4][..], &b"abcdefgh"[..]),
            (&[][..], &b"x"[..]),
            (&[u32::MAX, u32::MAX][..], &b""[..]),
        ] {
            let requests = sizes
                .iter()
                .enumerate()
                .map(|(index, &size)| request(index as u64 + 1, size))
                .collect();
            let error = Delivery::new(requests, bodies.to_vec()).unwrap_err();
            let total: u64 = sizes.iter().map(|&size| u64::from(size)).sum();
            assert_eq!(
                error,
                Failure::Protocol(format!(
                    "a delivery's requests have bodies of {total} bytes in all, but it \
                     brought {} bytes of bodies",
                    bodies.len()
                ))
            );
        }
        assert!(Delivery::new(Vec::new(), Vec::new()).unwrap().is_empty());
    }
}

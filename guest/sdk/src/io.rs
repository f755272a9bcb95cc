//! What a guest imports from its host, and how I/O completions reach the step in flight.
//!
//! The guest core never calls bindings: it calls [`Imports`], which each adapter
//! implements over its target's imports (the component's WIT imports, or the native host
//! directly).
//! A read or write is submitted when its future is created; the future resolves once the
//! adapter hands the matching completion to [`Context::complete_read`] or
//! [`Context::complete_write`]. Completions may arrive in any order the host chooses.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll};

use crate::failure::Failure;

/// Grid reads and writes in flight at once, at most: TigerBeetle's grid uses 32 read and
/// 32 write I/O slots. Trailers submit their blocks in batches of this size; tables are
/// written a block at a time.
pub const IO_IN_FLIGHT_MAX: usize = 64;

/// Severity of a diagnostic message, as in the contract's `level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Detail useful only when chasing a problem.
    Debug,
    /// Normal operation worth reporting.
    Info,
    /// Something unexpected that the guest handled.
    Warn,
    /// Something the guest could not handle.
    Error,
}

/// The imports of the `state-machine` world, as the guest core sees them.
pub trait Imports {
    /// `grid.submit-read`.
    fn submit_read(&self, address: u64);
    /// `grid.submit-write`.
    fn submit_write(&self, address: u64, block: &[u8]);
    /// `clock.now`.
    fn now(&self) -> u64;
    /// `clock.set-timer`.
    fn set_timer(&self, id: u64, at: u64);
    /// `clock.cancel-timer`.
    fn cancel_timer(&self, id: u64);
    /// `delivery.due-timer`, with the reply of the op before `op` if that op's commit
    /// is not yet reported.
    fn due_timer(&self, op: u64, previous_reply: Option<&[u8]>) -> Option<u64>;
    /// `delivery.prefetched`.
    fn prefetched(&self, op: u64);
    /// `delivery.committed`.
    fn committed(&self, op: u64, reply: &[u8]);
    /// `log.log`.
    fn log(&self, level: Level, message: &str);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IoKind {
    Read,
    Write,
}

#[derive(Debug)]
struct InFlight {
    address: u64,
    kind: IoKind,
    done: bool,
    /// The block, for a completed read.
    block: Option<Vec<u8>>,
}

struct Inner {
    imports: Box<dyn Imports>,
    in_flight: RefCell<Vec<InFlight>>,
    /// The last op committed, while its report waits to ride on the next op's first
    /// `due-timer`: most ops then cost the host two calls, not three.
    unreported_op: Cell<Option<u64>>,
    /// Its reply, if the machine wrote it. Only the runner borrows it mutably, between
    /// calls to the host.
    unreported_reply: RefCell<Vec<u8>>,
    /// Its reply, if that is bytes of its request's body: those bytes where they lie.
    unreported_body: RefCell<Option<BodyReply>>,
}

/// A reply that is bytes of its request's body, where they lie among its delivery's
/// bodies: reported from there, it is never copied inside the guest.
#[derive(Clone, Debug)]
pub(crate) struct BodyReply {
    /// The delivery's bodies, end to end.
    pub bodies: Rc<Vec<u8>>,
    /// Where the reply lies in them.
    pub range: Range<usize>,
}

impl BodyReply {
    /// The reply's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bodies[self.range.clone()]
    }
}

/// The guest's handle on its host: clock, timers, log and grid I/O. Cheap to clone; all
/// clones share the table of I/O in flight.
#[derive(Clone)]
pub struct Context {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("in_flight", &self.inner.in_flight.borrow().len())
            .finish()
    }
}

impl Context {
    /// A context over `imports`, with no I/O in flight.
    pub fn new(imports: Box<dyn Imports>) -> Context {
        Context {
            inner: Rc::new(Inner {
                imports,
                in_flight: RefCell::new(Vec::with_capacity(IO_IN_FLIGHT_MAX)),
                unreported_op: Cell::new(None),
                unreported_reply: RefCell::new(Vec::new()),
                unreported_body: RefCell::new(None),
            }),
        }
    }

    /// The timestamp of the op being committed (or of the last one, between ops).
    pub fn now(&self) -> u64 {
        self.host().now()
    }

    /// Arm timer `id` to fire at logical timestamp `at`.
    pub fn set_timer(&self, id: u64, at: u64) {
        self.host().set_timer(id, at);
    }

    /// Disarm timer `id`.
    pub fn cancel_timer(&self, id: u64) {
        self.host().cancel_timer(id);
    }

    /// The next timer due before op `op`, which the runner runs first: see the
    /// contract's `delivery` interface. The first call for an op carries the reply of
    /// the op before it, if that waits to be reported.
    pub(crate) fn due_timer(&self, op: u64) -> Option<u64> {
        match self.inner.unreported_op.get() {
            Some(previous) if previous + 1 == op => {
                self.inner.unreported_op.set(None);
                self.take_unreported_reply(|reply| self.inner.imports.due_timer(op, Some(reply)))
            }
            // Only the op before may ride; any other report goes on its own first.
            _ => self.host().due_timer(op, None),
        }
    }

    /// Tell the host op `op` is prefetched.
    pub(crate) fn prefetched(&self, op: u64) {
        self.host().prefetched(op);
    }

    /// Hand the host op `op`'s reply now.
    pub(crate) fn committed(&self, op: u64, reply: &[u8]) {
        self.host().committed(op, reply);
    }

    /// Hand the host op `op`'s reply with the next op's first `due-timer`, or before any
    /// other call to the host, whichever comes first. The reply is `from_body` if given,
    /// else `reply`, which is then taken (swapped for the emptied buffer of the last
    /// report, so the guest allocates nothing again).
    #[inline]
    pub(crate) fn committed_later(
        &self,
        op: u64,
        reply: &mut Vec<u8>,
        from_body: Option<BodyReply>,
    ) {
        // The op before rode on this op's `due-timer`; if it somehow did not, it is
        // reported now rather than lost.
        self.report_committed();
        match from_body {
            Some(body) => *self.inner.unreported_body.borrow_mut() = Some(body),
            None => {
                let mut unreported = self.inner.unreported_reply.borrow_mut();
                std::mem::swap(&mut *unreported, reply);
                reply.clear();
            }
        }
        self.inner.unreported_op.set(Some(op));
    }

    /// Report the last op committed, if its report still waits: before any other call
    /// to the host and before an export call returns, so that the host knows of every
    /// op that committed before it answers anything.
    pub(crate) fn report_committed(&self) {
        if let Some(op) = self.inner.unreported_op.take() {
            self.take_unreported_reply(|reply| self.inner.imports.committed(op, reply));
        }
    }

    /// Hand the reply waiting to be reported to `report`, letting go of the bodies it
    /// lies in, if it does.
    fn take_unreported_reply<T>(&self, report: impl FnOnce(&[u8]) -> T) -> T {
        match self.inner.unreported_body.take() {
            Some(body) => report(body.bytes()),
            None => report(&self.inner.unreported_reply.borrow()),
        }
    }

    /// The host's imports, once it knows of every op committed.
    fn host(&self) -> &dyn Imports {
        self.report_committed();
        &*self.inner.imports
    }

    /// Emit a diagnostic message.
    pub fn log(&self, level: Level, message: &str) {
        self.host().log(level, message);
    }

    /// Reads and writes submitted and not yet consumed.
    pub fn in_flight_count(&self) -> usize {
        self.inner.in_flight.borrow().len()
    }

    /// Submit a read of `address` now; the future resolves to the block's bytes,
    /// unverified (the grid verifies them).
    pub fn read(&self, address: u64) -> ReadBlock {
        self.submit(address, IoKind::Read);
        self.host().submit_read(address);
        ReadBlock {
            context: self.clone(),
            address,
        }
    }

    /// Submit a write of `block` to `address` now; the future resolves once it is done.
    pub fn write(&self, address: u64, block: &[u8]) -> WriteBlock {
        self.submit(address, IoKind::Write);
        self.host().submit_write(address, block);
        WriteBlock {
            context: self.clone(),
            address,
        }
    }

    fn submit(&self, address: u64, kind: IoKind) {
        let mut in_flight = self.inner.in_flight.borrow_mut();
        // Both are programming errors of the guest: the grid keeps at most one I/O per
        // address and bounds how many it submits before awaiting them.
        assert!(in_flight.len() < IO_IN_FLIGHT_MAX, "too much I/O in flight");
        assert!(
            in_flight.iter().all(|io| io.address != address),
            "address {address} already has I/O in flight"
        );
        in_flight.push(InFlight {
            address,
            kind,
            done: false,
            block: None,
        });
    }

    /// Hand a completed read to the future waiting for it.
    pub fn complete_read(&self, address: u64, block: Vec<u8>) -> Result<(), Failure> {
        let mut in_flight = self.inner.in_flight.borrow_mut();
        let io = Self::find_pending(&mut in_flight, address, IoKind::Read)?;
        io.done = true;
        io.block = Some(block);
        Ok(())
    }

    /// Mark a submitted write done.
    pub fn complete_write(&self, address: u64) -> Result<(), Failure> {
        let mut in_flight = self.inner.in_flight.borrow_mut();
        let io = Self::find_pending(&mut in_flight, address, IoKind::Write)?;
        io.done = true;
        Ok(())
    }

    fn find_pending(
        in_flight: &mut [InFlight],
        address: u64,
        kind: IoKind,
    ) -> Result<&mut InFlight, Failure> {
        in_flight
            .iter_mut()
            .find(|io| io.address == address && io.kind == kind && !io.done)
            .ok_or_else(|| {
                let kind = match kind {
                    IoKind::Read => "read",
                    IoKind::Write => "write",
                };
                Failure::Protocol(format!(
                    "{kind} completion for address {address}, which has no {kind} in flight"
                ))
            })
    }

    /// Take the finished I/O at `address`, if it is finished.
    fn take_done(&self, address: u64) -> Option<InFlight> {
        let mut in_flight = self.inner.in_flight.borrow_mut();
        let index = in_flight
            .iter()
            .position(|io| io.address == address && io.done)?;
        Some(in_flight.swap_remove(index))
    }
}

/// A read in flight; see [`Context::read`].
#[derive(Debug)]
#[must_use = "a read is only consumed by awaiting it"]
pub struct ReadBlock {
    context: Context,
    address: u64,
}

impl Future for ReadBlock {
    type Output = Vec<u8>;

    fn poll(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<Vec<u8>> {
        match self.context.take_done(self.address) {
            Some(io) => {
                assert_eq!(io.kind, IoKind::Read);
                Poll::Ready(io.block.expect("a completed read holds its block"))
            }
            None => Poll::Pending,
        }
    }
}

/// A write in flight; see [`Context::write`].
#[derive(Debug)]
#[must_use = "a write is only consumed by awaiting it"]
pub struct WriteBlock {
    context: Context,
    address: u64,
}

impl Future for WriteBlock {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _: &mut TaskContext<'_>) -> Poll<()> {
        match self.context.take_done(self.address) {
            Some(io) => {
                assert_eq!(io.kind, IoKind::Write);
                Poll::Ready(())
            }
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Imports that record every call.
    #[derive(Default)]
    struct Recorder {
        calls: RefCell<Vec<String>>,
    }

    impl Imports for Rc<Recorder> {
        fn submit_read(&self, address: u64) {
            self.calls.borrow_mut().push(format!("read {address}"));
        }
        fn submit_write(&self, address: u64, _: &[u8]) {
            self.calls.borrow_mut().push(format!("write {address}"));
        }
        fn now(&self) -> u64 {
            self.calls.borrow_mut().push("now".into());
            0
        }
        fn set_timer(&self, id: u64, at: u64) {
            self.calls.borrow_mut().push(format!("set-timer {id} {at}"));
        }
        fn cancel_timer(&self, id: u64) {
            self.calls.borrow_mut().push(format!("cancel-timer {id}"));
        }
        fn due_timer(&self, op: u64, previous_reply: Option<&[u8]>) -> Option<u64> {
            let call = format!("due-timer {op} {previous_reply:?}");
            self.calls.borrow_mut().push(call);
            None
        }
        fn prefetched(&self, op: u64) {
            self.calls.borrow_mut().push(format!("prefetched {op}"));
        }
        fn committed(&self, op: u64, reply: &[u8]) {
            self.calls
                .borrow_mut()
                .push(format!("committed {op} {reply:?}"));
        }
        fn log(&self, _: Level, message: &str) {
            self.calls.borrow_mut().push(format!("log {message}"));
        }
    }

    /// A context whose host records every call.
    fn recorded() -> (Context, Rc<Recorder>) {
        let recorder = Rc::new(Recorder::default());
        (Context::new(Box::new(recorder.clone())), recorder)
    }

    /// A machine that refuses operation 9 and fails to compact the op its
    /// `fail-compact-at` setting names. Its reply is the body for operation 1, the body
    /// reversed (written) for 2, the body but its first byte for 3, and one byte past
    /// the body for 4 (a bug).
    struct Toy {
        fail_compact_at: u64,
    }

    impl crate::machine::StateMachine for Toy {
        const IDENTITY: crate::machine::Identity = crate::machine::Identity {
            name: "toy",
            version: "1.0.0",
            state_format: 1,
        };

        fn init(_: Context, options: &crate::machine::Options) -> Result<Toy, Failure> {
            let fail_compact_at = options
                .settings
                .iter()
                .find(|(name, _)| name == "fail-compact-at")
                .map_or(0, |(_, value)| value.parse().unwrap());
            Ok(Toy { fail_compact_at })
        }

        async fn open(&mut self, _: Option<&[u8]>) -> Result<(), Failure> {
            Ok(())
        }

        fn input_valid(&self, operation: u8, _: &[u8]) -> Result<(), String> {
            match operation {
                9 => Err("refused".into()),
                _ => Ok(()),
            }
        }

        async fn prefetch(&mut self, _: u64, _: u8, _: &[u8]) -> Result<(), Failure> {
            Ok(())
        }

        fn commit(
            &mut self,
            _: u128,
            _: u64,
            _: u64,
            operation: u8,
            body: &[u8],
            reply: &mut Vec<u8>,
        ) -> Result<crate::machine::Reply, Failure> {
            use crate::machine::Reply;
            Ok(match operation {
                2 => {
                    reply.extend(body.iter().rev());
                    Reply::Written
                }
                3 => Reply::Body(1..body.len()),
                4 => Reply::Body(0..body.len() + 1),
                _ => Reply::Body(0..body.len()),
            })
        }

        async fn compact(&mut self, op: u64) -> Result<(), Failure> {
            if op == self.fail_compact_at {
                return Err(Failure::OutOfSpace("full".into()));
            }
            Ok(())
        }

        async fn checkpoint(&mut self, _: u64) -> Result<(), Failure> {
            Ok(())
        }

        fn checkpoint_state(&self) -> Vec<u8> {
            Vec::new()
        }

        async fn timer(&mut self, _: u64) -> Result<(), Failure> {
            Ok(())
        }
    }

    /// Deliver `(operation, body)` requests as ops 1, 2, … to a new [`Toy`] failing to
    /// compact op `fail_compact_at`: what the step returned, and the host's calls.
    fn deliver_to_toy(
        requests: &[(u8, &[u8])],
        fail_compact_at: u64,
    ) -> (Result<crate::machine::Step, Failure>, Vec<String>) {
        let (context, recorder) = recorded();
        let options = crate::machine::Options {
            batch_size_limit: 64,
            reply_size_limit: 64,
            checkpoint_interval_ops: 64,
            block_size: 4096,
            block_count: 64,
            settings: vec![("fail-compact-at".into(), fail_compact_at.to_string())],
        };
        let mut runner = crate::machine::Runner::<Toy>::init(context, &options).unwrap();
        runner.open(None).unwrap();
        let mut delivery = crate::machine::Delivery::default();
        for (index, &(operation, body)) in requests.iter().enumerate() {
            let op = index as u64 + 1;
            delivery.push(7, op, 10 * op, operation, body);
        }
        let step = runner.deliver(delivery);
        (step, recorder.calls.take())
    }

    #[test]
    fn a_delivery_reports_every_commit_however_it_ends() {
        // Each op's reply rides on the next op's first `due-timer`; the last op's goes
        // at once.
        let (step, calls) = deliver_to_toy(&[(1, b"a"), (1, b"b")], 0);
        assert_eq!(step, Ok(crate::machine::Step::Done));
        assert_eq!(
            calls,
            [
                "due-timer 1 None",
                "prefetched 1",
                "due-timer 2 Some([97])",
                "prefetched 2",
                "committed 2 [98]",
            ]
        );
        // Stopped before a refused request: the held reply goes before the call returns.
        let (step, calls) = deliver_to_toy(&[(1, b"a"), (9, b"x"), (1, b"c")], 0);
        assert_eq!(step, Ok(crate::machine::Step::Done));
        assert_eq!(
            calls,
            ["due-timer 1 None", "prefetched 1", "committed 1 [97]"]
        );
        // A compaction that fails: its op's commit is still reported, once.
        let (step, calls) = deliver_to_toy(&[(1, b"a"), (1, b"b")], 1);
        assert_eq!(step, Err(Failure::OutOfSpace("full".into())));
        assert_eq!(
            calls,
            ["due-timer 1 None", "prefetched 1", "committed 1 [97]"]
        );
    }

    #[test]
    fn a_reply_from_the_body_is_the_bytes_it_names_whether_it_rides_or_goes_at_once() {
        // Body, written, part of a body, body: each reply as the machine said, however
        // the written one's buffer and the bodies' replies alternate.
        let (step, calls) = deliver_to_toy(&[(1, b"ab"), (2, b"cd"), (3, b"efg"), (1, b"h")], 0);
        assert_eq!(step, Ok(crate::machine::Step::Done));
        assert_eq!(
            calls,
            [
                "due-timer 1 None",
                "prefetched 1",
                "due-timer 2 Some([97, 98])",
                "prefetched 2",
                "due-timer 3 Some([100, 99])",
                "prefetched 3",
                "due-timer 4 Some([102, 103])",
                "prefetched 4",
                "committed 4 [104]",
            ]
        );
        // The last op's reply, part of its body, goes at once.
        let (_, calls) = deliver_to_toy(&[(2, b"ab"), (3, b"cd")], 0);
        assert_eq!(calls.last().unwrap(), "committed 2 [100]");
    }

    #[test]
    fn a_reply_past_the_end_of_its_body_is_the_machines_failure_and_is_not_reported() {
        let (step, calls) = deliver_to_toy(&[(1, b"a"), (4, b"bc"), (1, b"d")], 0);
        assert_eq!(
            step,
            Err(Failure::Protocol(
                "the reply to op 2 is bytes 0..3 of its body, which is 2 bytes long".into()
            ))
        );
        assert_eq!(
            calls,
            [
                "due-timer 1 None",
                "prefetched 1",
                "due-timer 2 Some([97])",
                "prefetched 2",
            ]
        );
    }

    #[test]
    fn only_the_op_before_rides_and_a_reply_is_never_dropped() {
        let (context, recorder) = recorded();
        let mut reply = b"one".to_vec();
        context.committed_later(1, &mut reply, None);
        // Not the op after it: reported on its own first.
        context.due_timer(5);
        reply.extend_from_slice(b"two");
        context.committed_later(2, &mut reply, None);
        reply.extend_from_slice(b"three");
        context.committed_later(3, &mut reply, None);
        context.report_committed();
        assert_eq!(
            recorder.calls.take(),
            [
                "committed 1 [111, 110, 101]",
                "due-timer 5 None",
                "committed 2 [116, 119, 111]",
                "committed 3 [116, 104, 114, 101, 101]",
            ]
        );
    }

    #[test]
    fn a_reply_held_back_rides_on_the_next_due_timer_or_goes_before_any_other_call() {
        let (context, recorder) = recorded();
        let mut reply = b"one".to_vec();
        context.committed_later(1, &mut reply, None);
        assert!(reply.is_empty());
        context.due_timer(2);
        context.due_timer(2);
        reply.extend_from_slice(b"two");
        context.committed_later(2, &mut reply, None);
        context.log(Level::Info, "compacting");
        context.due_timer(3);
        reply.extend_from_slice(b"three");
        context.committed_later(3, &mut reply, None);
        drop(context.read(9));
        reply.extend_from_slice(b"four");
        context.committed_later(4, &mut reply, None);
        context.report_committed();
        context.report_committed();
        assert_eq!(
            *recorder.calls.borrow(),
            [
                "due-timer 2 Some([111, 110, 101])",
                "due-timer 2 None",
                "committed 2 [116, 119, 111]",
                "log compacting",
                "due-timer 3 None",
                "committed 3 [116, 104, 114, 101, 101]",
                "read 9",
                "committed 4 [102, 111, 117, 114]",
            ]
        );
    }
}

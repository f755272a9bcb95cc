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
    /// `delivery.due-timer`.
    fn due_timer(&self, op: u64) -> Option<u64>;
    /// `delivery.prefetched`, with the reply of the op before it if that op's commit is
    /// not yet reported.
    fn prefetched(&self, op: u64, previous_reply: Option<&[u8]>);
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
    /// The timers this instance armed, as `(id, at)`: the host's record is the
    /// contract's, and this copy tells the runner when to ask for a due one, so that an
    /// op with none due costs no `due-timer` call.
    timers: RefCell<Vec<(u64, u64)>>,
    /// The earliest `at` among `timers` (`u64::MAX` with none): the check before
    /// every op is one comparison.
    earliest_timer: Cell<u64>,
    /// The last op committed and its reply, while its report waits to ride on the next
    /// op's `prefetched`: most ops then cost the host one call.
    unreported: RefCell<Unreported>,
}

#[derive(Default)]
struct Unreported {
    op: Option<u64>,
    reply: Vec<u8>,
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
                timers: RefCell::new(Vec::new()),
                earliest_timer: Cell::new(u64::MAX),
                unreported: RefCell::new(Unreported::default()),
            }),
        }
    }

    /// The timestamp of the op being delivered, from its first report on (its first due
    /// timer, or else its `prefetched`: while an op with no timer due is prefetched, the
    /// last op's), or of the last committed op between ops.
    pub fn now(&self) -> u64 {
        self.host().now()
    }

    /// Arm timer `id` to fire at logical timestamp `at`.
    pub fn set_timer(&self, id: u64, at: u64) {
        self.host().set_timer(id, at);
        let mut timers = self.inner.timers.borrow_mut();
        match timers.iter_mut().find(|(armed, _)| *armed == id) {
            Some(timer) => timer.1 = at,
            None => timers.push((id, at)),
        }
        self.note_earliest_timer(&timers);
    }

    /// Disarm timer `id`.
    pub fn cancel_timer(&self, id: u64) {
        self.host().cancel_timer(id);
        let mut timers = self.inner.timers.borrow_mut();
        timers.retain(|(armed, _)| *armed != id);
        self.note_earliest_timer(&timers);
    }

    fn note_earliest_timer(&self, timers: &[(u64, u64)]) {
        let earliest = timers.iter().map(|&(_, at)| at).min();
        self.inner.earliest_timer.set(earliest.unwrap_or(u64::MAX));
    }

    /// Whether a timer this instance armed is due by op timestamp `timestamp`.
    pub(crate) fn timer_due_by(&self, timestamp: u64) -> bool {
        self.inner.earliest_timer.get() <= timestamp
    }

    /// The next timer due before op `op`, at `timestamp`, which the runner runs first:
    /// see the contract's `delivery` interface. Once the host has none due, neither
    /// has this instance's copy of its timers.
    pub(crate) fn due_timer(&self, op: u64, timestamp: u64) -> Option<u64> {
        let due = self.host().due_timer(op);
        let mut timers = self.inner.timers.borrow_mut();
        match due {
            Some(id) => timers.retain(|(armed, _)| *armed != id),
            None => timers.retain(|&(_, at)| at > timestamp),
        }
        self.note_earliest_timer(&timers);
        due
    }

    /// The host's imports, once it knows of every op committed: a report that waits
    /// for the next `prefetched` is made first (the contract's order holds for every
    /// other call).
    fn host(&self) -> &dyn Imports {
        self.report_committed();
        &*self.inner.imports
    }

    /// Tell the host op `op` is prefetched, with the reply of the op before it if that
    /// waits to be reported.
    pub(crate) fn prefetched(&self, op: u64) {
        let mut unreported = self.inner.unreported.borrow_mut();
        let previous_reply = unreported.op.take().map(|_| &unreported.reply[..]);
        self.inner.imports.prefetched(op, previous_reply);
    }

    /// Hand the host op `op`'s reply now.
    pub(crate) fn committed(&self, op: u64, reply: &[u8]) {
        self.host().committed(op, reply);
    }

    /// Hand the host op `op`'s reply with the next op's `prefetched`, or before any
    /// other call to the host, whichever comes first. `reply` is taken (swapped for an
    /// empty buffer, so that neither side allocates again).
    pub(crate) fn committed_later(&self, op: u64, reply: &mut Vec<u8>) {
        let mut unreported = self.inner.unreported.borrow_mut();
        debug_assert!(unreported.op.is_none(), "the op before was reported");
        std::mem::swap(&mut unreported.reply, reply);
        reply.clear();
        unreported.op = Some(op);
    }

    /// Report the last op committed, if its report still waits: before an export call
    /// returns, so that the host knows of every op that committed in it.
    pub(crate) fn report_committed(&self) {
        let mut unreported = self.inner.unreported.borrow_mut();
        if let Some(op) = unreported.op.take() {
            self.inner.imports.committed(op, &unreported.reply);
        }
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

    /// Imports that record every call, answering `due-timer` from `due`.
    #[derive(Default)]
    struct Recorder {
        calls: RefCell<Vec<String>>,
        due: RefCell<Vec<Option<u64>>>,
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
        fn due_timer(&self, op: u64) -> Option<u64> {
            self.calls.borrow_mut().push(format!("due-timer {op}"));
            self.due.borrow_mut().remove(0)
        }
        fn prefetched(&self, op: u64, previous_reply: Option<&[u8]>) {
            let call = format!("prefetched {op} {previous_reply:?}");
            self.calls.borrow_mut().push(call);
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

    fn context() -> (Context, Rc<Recorder>) {
        let recorder = Rc::new(Recorder::default());
        (Context::new(Box::new(recorder.clone())), recorder)
    }

    #[test]
    fn the_context_knows_when_a_timer_it_armed_is_due() {
        let (context, recorder) = context();
        assert!(!context.timer_due_by(u64::MAX - 1));
        context.set_timer(1, 50);
        context.set_timer(2, 30);
        assert!(context.timer_due_by(30) && !context.timer_due_by(29));
        // Re-arming moves a timer; cancelling forgets it.
        context.set_timer(2, 70);
        assert!(!context.timer_due_by(49) && context.timer_due_by(50));
        context.cancel_timer(1);
        assert!(!context.timer_due_by(69) && context.timer_due_by(70));
        // A timer the host hands out is no longer armed.
        recorder.due.borrow_mut().push(Some(2));
        assert_eq!(context.due_timer(9, 70), Some(2));
        assert!(!context.timer_due_by(u64::MAX - 1));
        // The host's record is the contract's: once it has none due, neither has this.
        context.set_timer(3, 10);
        recorder.due.borrow_mut().push(None);
        assert_eq!(context.due_timer(10, 20), None);
        assert!(!context.timer_due_by(20));
    }

    #[test]
    fn a_reply_held_back_rides_on_the_next_prefetched_or_goes_before_any_other_call() {
        let (context, recorder) = context();
        context.prefetched(1);
        let mut reply = b"one".to_vec();
        context.committed_later(1, &mut reply);
        assert!(reply.is_empty());
        context.prefetched(2);
        reply.extend_from_slice(b"two");
        context.committed_later(2, &mut reply);
        context.log(Level::Info, "compacting");
        context.prefetched(3);
        reply.extend_from_slice(b"three");
        context.committed_later(3, &mut reply);
        context.report_committed();
        context.report_committed();
        assert_eq!(
            *recorder.calls.borrow(),
            [
                "prefetched 1 None",
                "prefetched 2 Some([111, 110, 101])",
                "committed 2 [116, 119, 111]",
                "log compacting",
                "prefetched 3 None",
                "committed 3 [116, 104, 114, 101, 101]",
            ]
        );
    }
}

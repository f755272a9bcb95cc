//! [`HostImports`]: the host's side of the imports — grid I/O queued until the host
//! completes it, the logical clock and timers, and the guest's log. Every kind of
//! [`Instance`](crate::instance::Instance) (wasmtime, the browser, native) calls the same
//! code, so each sees exactly the same host.

use std::collections::{BTreeMap, VecDeque};

use crate::error::{Error, Result};
use crate::prng::Prng;
use crate::storage::Storage;

/// Grid I/O a guest may have in flight at once. Generous above the guest's own bound
/// (the SDK's `IO_IN_FLIGHT_MAX`); exceeding it is a contract violation.
pub const IO_IN_FLIGHT_MAX: usize = 256;

/// Log messages kept for inspection; older ones are dropped first.
pub const LOG_MESSAGES_MAX: usize = 4096;

/// Bytes of a log message kept; the rest is cut, so the log stays bounded whatever a
/// guest sends.
pub const LOG_MESSAGE_SIZE_MAX: usize = 4096;

/// Timers a guest may have armed at once.
pub const TIMERS_ARMED_MAX: usize = 64;

/// Timers handed out before one op, at most: a guest that keeps re-arming timers in
/// the past must not stall the host.
pub const TIMERS_PER_OP_MAX: usize = 64;

/// Where the op in progress of a delivery stands, by the guest's reports (the
/// contract's `delivery` interface).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Not begun: no `due-timer` for it yet.
    Waiting,
    /// Running a timer `due-timer` handed out.
    Timer,
    /// No timer due: prefetching.
    Prefetch,
    /// Prefetched: committing, which is pure.
    Commit,
    /// Committed: compacting.
    Compact,
}

impl Phase {
    /// The step of the lifecycle the phase is, as errors name it.
    pub fn step(self) -> &'static str {
        match self {
            Phase::Waiting => "deliver",
            Phase::Timer => "timer",
            Phase::Prefetch => "prefetch",
            Phase::Commit => "commit",
            Phase::Compact => "compact",
        }
    }
}

/// A delivery in progress, as the host follows it.
#[derive(Debug)]
struct Delivery {
    /// The first op of the batch.
    first_op: u64,
    /// The timestamps of the batch's ops, in op order.
    timestamps: Vec<u64>,
    reply_size_limit: usize,
    /// The replies of the ops committed so far, in op order.
    replies: Vec<Vec<u8>>,
    /// The op in progress: the last committed while compacting, the next otherwise.
    op: u64,
    phase: Phase,
    /// Timers handed out before `op`.
    timers: usize,
    /// Where the delivery stood at the first contract violation: a native guest runs
    /// on after one, to the end of its call.
    violated_at: Option<(u64, Phase)>,
}

impl Delivery {
    /// Check a `due-timer` for `op`, moving on to it if the op before it is done:
    /// whether `op` begins now, and its timestamp.
    fn due_timer(&mut self, op: u64) -> Result<(bool, u64), String> {
        // The op after the one compacting begins now: that one is done. Past the end of
        // the delivery, the violation stays with the last op, which did finish.
        if self.phase == Phase::Compact && op == self.op + 1 {
            if !self.holds(op) {
                return Err(format!(
                    "`due-timer` for op {op}, past the end of the delivery"
                ));
            }
            self.op = op;
            self.phase = Phase::Waiting;
        }
        let timestamp = self.timestamp_of(op, "due-timer")?;
        if !matches!(self.phase, Phase::Waiting | Phase::Timer | Phase::Prefetch) {
            return Err(format!(
                "`due-timer` for op {op} out of order: it comes before the op's prefetch"
            ));
        }
        let began = self.phase == Phase::Waiting;
        if began {
            self.timers = 0;
        }
        Ok((began, timestamp))
    }

    /// Record what `due-timer` answered for `op`: a timer to run first, or none.
    fn timer_handed_out(&mut self, op: u64, id: Option<u64>) -> Result<(), String> {
        if id.is_none() {
            self.phase = Phase::Prefetch;
            return Ok(());
        }
        self.phase = Phase::Timer;
        self.timers += 1;
        if self.timers > TIMERS_PER_OP_MAX {
            return Err(format!(
                "more than {TIMERS_PER_OP_MAX} timers fell due before op {op}: the guest \
                 keeps re-arming them"
            ));
        }
        Ok(())
    }

    /// Check a `prefetched` for `op`.
    fn prefetched(&mut self, op: u64) -> Result<(), String> {
        self.timestamp_of(op, "prefetched")?;
        if self.phase != Phase::Prefetch {
            return Err(format!(
                "`prefetched` for op {op} out of order: it comes once, after `due-timer` \
                 answers none"
            ));
        }
        self.phase = Phase::Commit;
        Ok(())
    }

    /// Check a `committed` for `op` and keep its reply; returns the op's timestamp.
    fn committed(&mut self, op: u64, reply: Vec<u8>) -> Result<u64, String> {
        let timestamp = self.timestamp_of(op, "committed")?;
        if self.phase != Phase::Commit {
            return Err(format!(
                "`committed` for op {op} out of order: it comes once, after `prefetched`"
            ));
        }
        if reply.len() > self.reply_size_limit {
            return Err(format!(
                "a reply of {} bytes to op {op} is over the reply size limit of {} bytes",
                reply.len(),
                self.reply_size_limit
            ));
        }
        self.replies.push(reply);
        self.phase = Phase::Compact;
        Ok(timestamp)
    }

    /// Whether `op` is one of the delivery's ops.
    fn holds(&self, op: u64) -> bool {
        op >= self.first_op && op - self.first_op < self.timestamps.len() as u64
    }

    /// The timestamp of `op`, which must be the op in progress.
    fn timestamp_of(&self, op: u64, what: &str) -> Result<u64, String> {
        if op != self.op {
            return Err(format!(
                "`{what}` for op {op} while op {} is in progress",
                self.op
            ));
        }
        self.timestamps
            .get((op - self.first_op) as usize)
            .copied()
            .ok_or_else(|| format!("`{what}` for op {op}, past the end of the delivery"))
    }
}

/// What a delivery did, as the host followed it: see [`HostImports::end_delivery`].
#[derive(Debug)]
pub struct Delivered {
    /// The replies of the ops committed, in op order. If the delivery failed, only
    /// those of the ops before `op` count: `op` did not finish.
    pub replies: Vec<Vec<u8>>,
    /// The op in progress when the delivery ended, or when it broke the contract.
    pub op: u64,
    /// Where it stood.
    pub phase: Phase,
}

/// What `delivery.due-timer` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DueTimer {
    /// The timer to run before the op, if one is due.
    pub id: Option<u64>,
    /// Whether this call began the op: a component's fuel is refilled then, so that
    /// each op of a delivery has a budget of its own.
    pub began: bool,
}

/// A contract violation by the guest, returned by an import so that the instance can
/// trap; [`HostImports::take_violation`] reports it once the export returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "guest broke the contract: {}", self.0)
    }
}

impl std::error::Error for Violation {}

/// Severity of a guest's log message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Detail.
    Debug,
    /// Normal operation.
    Info,
    /// Handled surprise.
    Warn,
    /// Unhandled problem.
    Error,
}

/// A message the guest logged, with the op it was logged during (or after).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogMessage {
    /// The last committed op when the message was logged.
    pub op: u64,
    /// Its severity.
    pub level: Level,
    /// Its text.
    pub message: String,
}

/// In which order the host completes I/O that is in flight together.
#[derive(Clone, Debug)]
pub enum IoOrder {
    /// In submission order.
    Fifo,
    /// In an order drawn from a PRNG with this seed: the same seed, the same order.
    Seeded(u64),
    /// By simulated latency: each I/O takes a latency drawn from a PRNG with `seed`
    /// (`1..=latency_max` ticks, and one in 32 eight times that: a slow device), and
    /// the one due first completes first, reads and writes alike.
    Latency {
        /// The PRNG's seed.
        seed: u64,
        /// The usual latency's bound, in ticks (at least 1).
        latency_max: u64,
    },
}

/// How the host picks the next completion.
#[derive(Debug)]
enum Order {
    Fifo,
    Seeded(Prng),
    Latency {
        prng: Prng,
        latency_max: u64,
        /// The simulated time: the due tick of the last completion.
        now: u64,
    },
}

impl Order {
    fn new(order: IoOrder) -> Order {
        match order {
            IoOrder::Fifo => Order::Fifo,
            IoOrder::Seeded(seed) => Order::Seeded(Prng::new(seed)),
            IoOrder::Latency { seed, latency_max } => Order::Latency {
                prng: Prng::new(seed),
                latency_max: latency_max.max(1),
                now: 0,
            },
        }
    }

    /// The tick at which an I/O submitted now is due.
    fn due(&mut self) -> u64 {
        match self {
            Order::Fifo | Order::Seeded(_) => 0,
            Order::Latency {
                prng,
                latency_max,
                now,
            } => {
                let mut latency = prng.range_inclusive(1, *latency_max);
                if prng.below(32) == 0 {
                    latency *= 8;
                }
                *now + latency
            }
        }
    }

    /// The position in `in_flight` (in submission order) to complete next.
    fn next(&mut self, in_flight: &[(u64, Submitted)]) -> usize {
        match self {
            Order::Fifo => 0,
            Order::Seeded(prng) => prng.below(in_flight.len() as u64) as usize,
            Order::Latency { now, .. } => {
                // The earliest due; of equals, the first submitted.
                let (index, (due, _)) = in_flight
                    .iter()
                    .enumerate()
                    .min_by_key(|(index, (due, _))| (*due, *index))
                    .expect("something is in flight");
                *now = (*now).max(*due);
                index
            }
        }
    }
}

/// A submitted grid operation.
#[derive(Debug)]
enum Submitted {
    Read {
        address: u64,
    },
    Write {
        address: u64,
        block: Vec<u8>,
        /// Whether `block` is the host's, to be reused (see `spare_blocks`).
        spare: bool,
    },
}

impl Submitted {
    fn address(&self) -> u64 {
        match self {
            Submitted::Read { address } | Submitted::Write { address, .. } => *address,
        }
    }
}

/// A completed grid operation, to deliver to the guest.
#[derive(Debug)]
pub enum Completion {
    /// A read finished; the block is in the buffer given to
    /// [`HostImports::complete_next`].
    Read {
        /// The block's address.
        address: u64,
    },
    /// A write finished.
    Write {
        /// The block's address.
        address: u64,
    },
}

/// Everything the host provides to one guest instance.
pub struct HostImports {
    storage: Box<dyn Storage>,
    block_size: u32,
    block_count: u64,
    /// Each with the tick it is due at (under [`IoOrder::Latency`]).
    in_flight: Vec<(u64, Submitted)>,
    order: Order,
    /// The timestamp `clock.now` returns.
    now: u64,
    /// The last committed op, for log messages.
    op: u64,
    /// Armed timers: id -> timestamp.
    timers: BTreeMap<u64, u64>,
    log: VecDeque<LogMessage>,
    echo_log: bool,
    /// The first contract violation by the guest, reported when its call returns.
    violation: Option<String>,
    /// Whether an asynchronous step is running: grid I/O and timers belong to steps.
    step_active: bool,
    delivery: Option<Delivery>,
    /// Block buffers of completed writes, for [`HostImports::submit_write_copy`]: never
    /// more than were in flight at once.
    spare_blocks: Vec<Vec<u8>>,
}

impl std::fmt::Debug for HostImports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostImports")
            .field("block_size", &self.block_size)
            .field("block_count", &self.block_count)
            .field("in_flight", &self.in_flight.len())
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

impl HostImports {
    /// A host over `storage` with the grid's geometry.
    pub fn new(
        storage: Box<dyn Storage>,
        block_size: u32,
        block_count: u64,
        order: IoOrder,
    ) -> HostImports {
        HostImports {
            storage,
            block_size,
            block_count,
            in_flight: Vec::with_capacity(IO_IN_FLIGHT_MAX),
            order: Order::new(order),
            now: 0,
            op: 0,
            timers: BTreeMap::new(),
            log: VecDeque::with_capacity(LOG_MESSAGES_MAX),
            echo_log: false,
            violation: None,
            step_active: false,
            delivery: None,
            spare_blocks: Vec::new(),
        }
    }

    /// Print the guest's log messages to stderr as they arrive (natively; where there is
    /// no stderr, read [`HostImports::log_messages`]).
    pub fn set_echo_log(&mut self, echo: bool) {
        self.echo_log = echo;
    }

    /// The messages the guest logged (the newest [`LOG_MESSAGES_MAX`]), oldest first.
    pub fn log_messages(&self) -> impl Iterator<Item = &LogMessage> {
        self.log.iter()
    }

    pub(crate) fn set_clock(&mut self, op: u64, now: u64) {
        self.op = op;
        self.now = now;
    }

    /// Forget armed timers: they do not survive a restart (the guest re-arms in `open`).
    pub(crate) fn clear_timers(&mut self) {
        self.timers.clear();
    }

    /// The earliest armed timer due at or before `timestamp`, disarmed: its id and
    /// deadline.
    pub(crate) fn take_due_timer(&mut self, timestamp: u64) -> Option<(u64, u64)> {
        let (&id, &at) = self
            .timers
            .iter()
            .filter(|(_, at)| **at <= timestamp)
            .min_by_key(|(id, at)| (**at, **id))?;
        self.timers.remove(&id);
        Some((id, at))
    }

    pub(crate) fn set_step_active(&mut self, active: bool) {
        self.step_active = active;
    }

    /// Follow a delivery of `requests` (the ops after the last committed), checking
    /// the guest's reports against them; replies over `reply_size_limit` bytes break
    /// the contract.
    pub fn begin_delivery(&mut self, requests: &[crate::instance::Request], reply_size_limit: u32) {
        let first_op = requests.first().map_or(self.op + 1, |request| request.op);
        self.delivery = Some(Delivery {
            first_op,
            timestamps: requests.iter().map(|request| request.timestamp).collect(),
            reply_size_limit: reply_size_limit as usize,
            replies: Vec::with_capacity(requests.len()),
            op: first_op,
            phase: Phase::Waiting,
            timers: 0,
            violated_at: None,
        });
    }

    /// Stop following the delivery and say what it did.
    pub fn end_delivery(&mut self) -> Delivered {
        let delivery = self.delivery.take().expect("a delivery was begun");
        let (op, phase) = delivery
            .violated_at
            .unwrap_or((delivery.op, delivery.phase));
        Delivered {
            replies: delivery.replies,
            op,
            phase,
        }
    }

    /// Run `check` on the delivery in progress; what it refuses is a contract violation.
    fn in_delivery<T>(
        &mut self,
        what: &str,
        check: impl FnOnce(&mut Delivery) -> Result<T, String>,
    ) -> Result<T, Violation> {
        let result = match &mut self.delivery {
            Some(delivery) => check(delivery),
            None => Err(format!("`{what}` outside a delivery")),
        };
        result.map_err(|violation| self.violate(violation))
    }

    /// `delivery.due-timer`. `previous_reply`, if given, is the `committed` report of
    /// the op before, made with this one.
    pub fn due_timer(
        &mut self,
        op: u64,
        previous_reply: Option<Vec<u8>>,
    ) -> Result<DueTimer, Violation> {
        if let Some(reply) = previous_reply {
            let Some(previous) = op.checked_sub(1) else {
                return Err(self.violate("`due-timer` for op 0 with a reply".into()));
            };
            self.committed(previous, reply)?;
        }
        let (began, timestamp) =
            self.in_delivery("due-timer", |delivery| delivery.due_timer(op))?;
        if began {
            self.set_clock(op - 1, timestamp);
        }
        let id = self.take_due_timer(timestamp).map(|(id, _)| id);
        self.in_delivery("due-timer", |delivery| delivery.timer_handed_out(op, id))?;
        Ok(DueTimer { id, began })
    }

    /// `delivery.prefetched`: from here to `committed` the guest commits, which is pure.
    pub fn prefetched(&mut self, op: u64) -> Result<(), Violation> {
        self.in_delivery("prefetched", |delivery| delivery.prefetched(op))?;
        self.step_active = false;
        Ok(())
    }

    /// `delivery.committed`.
    pub fn committed(&mut self, op: u64, reply: Vec<u8>) -> Result<(), Violation> {
        let timestamp = self.in_delivery("committed", |delivery| delivery.committed(op, reply))?;
        self.set_clock(op, timestamp);
        self.step_active = true;
        Ok(())
    }

    fn check_in_step(&mut self, what: &str) -> Result<(), Violation> {
        if self.step_active {
            return Ok(());
        }
        Err(self.violate(format!("{what} outside an asynchronous step")))
    }

    /// Take the first contract violation recorded during the last guest call: an
    /// instance reports it in place of whatever the call returned.
    pub fn take_violation(&mut self) -> Option<String> {
        self.violation.take()
    }

    /// Record a contract violation; the first one recorded is reported.
    fn violate(&mut self, what: String) -> Violation {
        if self.violation.is_none()
            && let Some(delivery) = &mut self.delivery
        {
            delivery.violated_at = Some((delivery.op, delivery.phase));
        }
        self.violation.get_or_insert(what.clone());
        Violation(what)
    }

    /// Whether I/O is in flight.
    pub(crate) fn has_in_flight(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// Complete one operation in flight, chosen by the I/O order, against storage; a
    /// read's block is read into `block` (one buffer serves every read of a step).
    pub(crate) fn complete_next(&mut self, block: &mut Vec<u8>) -> Result<Option<Completion>> {
        if self.in_flight.is_empty() {
            return Ok(None);
        }
        let index = self.order.next(&self.in_flight);
        // `remove` keeps the rest in submission order, so FIFO stays FIFO.
        Ok(Some(match self.in_flight.remove(index).1 {
            Submitted::Read { address } => {
                block.resize(self.block_size as usize, 0);
                self.storage.read(address, block).map_err(|error| {
                    Error::io("grid", format!("reading block {address} of"), error)
                })?;
                Completion::Read { address }
            }
            Submitted::Write {
                address,
                block,
                spare,
            } => {
                self.storage.write(address, &block).map_err(|error| {
                    Error::io("grid", format!("writing block {address} of"), error)
                })?;
                if spare {
                    self.spare_blocks.push(block);
                }
                Completion::Write { address }
            }
        }))
    }

    /// Make every completed write durable.
    pub(crate) fn sync(&mut self) -> Result<()> {
        self.storage
            .sync()
            .map_err(|error| Error::io("grid", "syncing", error))
    }

    fn check_submission(&mut self, address: u64) -> Result<(), Violation> {
        self.check_in_step("grid I/O")?;
        if !(1..=self.block_count).contains(&address) {
            return Err(self.violate(format!(
                "grid address {address} outside 1..={}",
                self.block_count
            )));
        }
        if self.in_flight.len() == IO_IN_FLIGHT_MAX {
            return Err(self.violate(format!("more than {IO_IN_FLIGHT_MAX} grid I/Os in flight")));
        }
        if self.in_flight.iter().any(|(_, io)| io.address() == address) {
            return Err(self.violate(format!(
                "second I/O on grid address {address} while one is in flight"
            )));
        }
        Ok(())
    }

    /// `grid.submit-read`.
    pub fn submit_read(&mut self, address: u64) -> Result<(), Violation> {
        self.check_submission(address)?;
        let due = self.order.due();
        self.in_flight.push((due, Submitted::Read { address }));
        Ok(())
    }

    /// `grid.submit-write`.
    pub fn submit_write(&mut self, address: u64, block: Vec<u8>) -> Result<(), Violation> {
        self.submit_write_of(address, block, false)
    }

    /// `grid.submit-write` of a block the caller lends: it is copied into a buffer
    /// of the host's, which serves again once the write completes (a native guest's
    /// writes then allocate nothing).
    pub fn submit_write_copy(&mut self, address: u64, block: &[u8]) -> Result<(), Violation> {
        let mut buffer = self.spare_blocks.pop().unwrap_or_default();
        buffer.clear();
        buffer.extend_from_slice(block);
        self.submit_write_of(address, buffer, true)
    }

    fn submit_write_of(
        &mut self,
        address: u64,
        block: Vec<u8>,
        spare: bool,
    ) -> Result<(), Violation> {
        self.check_submission(address)?;
        if block.len() != self.block_size as usize {
            return Err(self.violate(format!(
                "write of {} bytes to grid address {address}; blocks are {} bytes",
                block.len(),
                self.block_size
            )));
        }
        let due = self.order.due();
        self.in_flight.push((
            due,
            Submitted::Write {
                address,
                block,
                spare,
            },
        ));
        Ok(())
    }

    /// `clock.now`.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// `clock.set-timer`.
    pub fn set_timer(&mut self, id: u64, at: u64) -> Result<(), Violation> {
        self.check_in_step("`set-timer`")?;
        if !self.timers.contains_key(&id) && self.timers.len() == TIMERS_ARMED_MAX {
            return Err(self.violate(format!("more than {TIMERS_ARMED_MAX} timers armed")));
        }
        self.timers.insert(id, at);
        Ok(())
    }

    /// `clock.cancel-timer`.
    pub fn cancel_timer(&mut self, id: u64) -> Result<(), Violation> {
        self.check_in_step("`cancel-timer`")?;
        self.timers.remove(&id);
        Ok(())
    }

    /// `log.log`.
    pub fn log(&mut self, level: Level, mut message: String) {
        if message.len() > LOG_MESSAGE_SIZE_MAX {
            let mut cut = LOG_MESSAGE_SIZE_MAX;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str(" [cut]");
        }
        #[cfg(not(target_family = "wasm"))]
        if self.echo_log {
            eprintln!("guest [{level:?}] op {}: {message}", self.op);
        }
        if self.log.len() == LOG_MESSAGES_MAX {
            self.log.pop_front();
        }
        self.log.push_back(LogMessage {
            op: self.op,
            level,
            message,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::Request;
    use crate::storage::MemoryStorage;

    fn imports() -> HostImports {
        let mut imports = HostImports::new(Box::new(MemoryStorage::new()), 512, 64, IoOrder::Fifo);
        imports.set_step_active(true);
        imports
    }

    /// Requests for ops `first..first + count`, op `n` at timestamp `10 n`.
    fn requests(first: u64, count: u64) -> Vec<Request> {
        (first..first + count)
            .map(|op| Request {
                client: 1,
                op,
                timestamp: 10 * op,
                operation: 0,
                body: Vec::new(),
            })
            .collect()
    }

    /// Report op `op` as a well-behaved guest would, with no timer due.
    fn deliver_op(imports: &mut HostImports, op: u64) {
        assert_eq!(imports.due_timer(op, None).unwrap().id, None);
        imports.prefetched(op).unwrap();
        imports.committed(op, vec![op as u8]).unwrap();
    }

    #[test]
    fn a_delivery_in_order_keeps_replies_moves_the_clock_and_hands_out_due_timers() {
        let mut imports = imports();
        imports.begin_delivery(&requests(1, 3), 16);
        deliver_op(&mut imports, 1);
        assert_eq!(imports.now(), 10);
        // Armed while compacting op 1, due by op 2's timestamp: handed out before op 2,
        // which begins (its fuel is refilled) at the first call only.
        imports.set_timer(7, 15).unwrap();
        assert_eq!(
            imports.due_timer(2, None).unwrap(),
            DueTimer {
                id: Some(7),
                began: true
            }
        );
        assert_eq!(imports.now(), 20);
        assert_eq!(
            imports.due_timer(2, None).unwrap(),
            DueTimer {
                id: None,
                began: false
            }
        );
        imports.prefetched(2).unwrap();
        imports.committed(2, vec![2]).unwrap();
        deliver_op(&mut imports, 3);
        let delivered = imports.end_delivery();
        assert_eq!(delivered.replies, [vec![1], vec![2], vec![3]]);
        assert_eq!((delivered.op, delivered.phase), (3, Phase::Compact));
        assert_eq!(imports.take_violation(), None);
    }

    #[test]
    fn a_reply_may_ride_on_the_next_ops_first_due_timer() {
        let mut imports = imports();
        imports.begin_delivery(&requests(1, 3), 16);
        assert!(imports.due_timer(1, None).unwrap().began);
        imports.prefetched(1).unwrap();
        // Op 1 committed and compacted; op 2 begins.
        let due = imports.due_timer(2, Some(vec![1])).unwrap();
        assert_eq!((due.id, due.began, imports.now()), (None, true, 20));
        imports.prefetched(2).unwrap();
        imports.committed(2, vec![2]).unwrap();
        deliver_op(&mut imports, 3);
        assert_eq!(imports.end_delivery().replies, [vec![1], vec![2], vec![3]]);
        assert_eq!(imports.take_violation(), None);
    }

    #[test]
    fn a_riding_reply_is_checked_as_its_own_committed_would_be() {
        type Misstep = fn(&mut HostImports) -> Result<(), Violation>;
        let cases: [(&str, Misstep, &str, (u64, Phase)); 4] = [
            (
                "the next op without the reply",
                |imports| imports.due_timer(2, None).map(drop),
                "`due-timer` for op 2 while op 1 is in progress",
                (1, Phase::Commit),
            ),
            (
                "a reply of an op not committing",
                |imports| imports.due_timer(1, Some(vec![0])).map(drop),
                "`committed` for op 0 while op 1 is in progress",
                (1, Phase::Commit),
            ),
            (
                "a reply over the limit",
                |imports| imports.due_timer(2, Some(vec![0; 17])).map(drop),
                "a reply of 17 bytes to op 1 is over the reply size limit of 16 bytes",
                (1, Phase::Commit),
            ),
            (
                "the reply of an op already reported",
                |imports| {
                    imports.committed(1, vec![1])?;
                    imports.due_timer(2, Some(vec![1])).map(drop)
                },
                "`committed` for op 1 out of order",
                (1, Phase::Compact),
            ),
        ];
        for (case, misstep, says, at) in cases {
            let mut imports = imports();
            imports.begin_delivery(&requests(1, 2), 16);
            imports.due_timer(1, None).unwrap();
            imports.prefetched(1).unwrap();
            let violation = misstep(&mut imports).expect_err(case);
            assert!(violation.0.contains(says), "{case}: {violation}");
            let delivered = imports.end_delivery();
            assert_eq!((delivered.op, delivered.phase), at, "{case}");
            assert!(delivered.replies.len() <= 1, "{case}");
        }
    }

    #[test]
    fn a_report_past_the_end_of_a_delivery_is_the_last_ops_violation() {
        let mut imports = imports();
        imports.begin_delivery(&requests(1, 2), 16);
        deliver_op(&mut imports, 1);
        deliver_op(&mut imports, 2);
        let violation = imports.due_timer(3, None).unwrap_err();
        assert!(
            violation.0.contains("past the end of the delivery"),
            "{violation}"
        );
        // Both ops committed; the delivery stands after the last, which did finish.
        let delivered = imports.end_delivery();
        assert_eq!(delivered.replies, [vec![1], vec![2]]);
        assert_eq!((delivered.op, delivered.phase), (2, Phase::Compact));
    }

    #[test]
    fn reports_out_of_order_are_violations_naming_the_op() {
        type Misstep = fn(&mut HostImports) -> Result<(), Violation>;
        let cases: [(&str, Misstep, &str); 7] = [
            (
                "another op",
                |imports| imports.due_timer(2, None).map(drop),
                "`due-timer` for op 2 while op 1 is in progress",
            ),
            (
                "committed before prefetched",
                |imports| {
                    imports.due_timer(1, None)?;
                    imports.committed(1, Vec::new())
                },
                "`committed` for op 1 out of order",
            ),
            (
                "prefetched before due-timer",
                |imports| imports.prefetched(1),
                "`prefetched` for op 1 out of order",
            ),
            (
                "due-timer after the prefetch",
                |imports| {
                    imports.due_timer(1, None)?;
                    imports.prefetched(1)?;
                    imports.due_timer(1, None).map(drop)
                },
                "`due-timer` for op 1 out of order",
            ),
            (
                "past the end",
                |imports| {
                    deliver_op(imports, 1);
                    deliver_op(imports, 2);
                    imports.due_timer(3, None).map(drop)
                },
                "`due-timer` for op 3, past the end of the delivery",
            ),
            (
                "a reply over the limit",
                |imports| {
                    imports.due_timer(1, None)?;
                    imports.prefetched(1)?;
                    imports.committed(1, vec![0; 17])
                },
                "a reply of 17 bytes to op 1 is over the reply size limit of 16 bytes",
            ),
            (
                "grid I/O while committing",
                |imports| {
                    imports.due_timer(1, None)?;
                    imports.prefetched(1)?;
                    imports.submit_read(1)
                },
                "grid I/O outside an asynchronous step",
            ),
        ];
        for (case, misstep, says) in cases {
            let mut imports = imports();
            imports.begin_delivery(&requests(1, 2), 16);
            let violation = misstep(&mut imports).expect_err(case);
            assert!(violation.0.contains(says), "{case}: {violation}");
            assert_eq!(imports.take_violation(), Some(violation.0), "{case}");
        }
        // Outside a delivery, the reports are refused too.
        let mut imports = imports();
        let violation = imports.due_timer(1, None).unwrap_err();
        assert!(violation.0.contains("outside a delivery"), "{violation}");
    }

    #[test]
    fn a_lent_block_is_copied_into_a_buffer_that_serves_again_once_written() {
        let storage = MemoryStorage::new();
        let mut imports = HostImports::new(Box::new(storage.clone()), 512, 64, IoOrder::Fifo);
        imports.set_step_active(true);
        let mut read = Vec::new();
        for round in 1..=3u8 {
            imports.submit_write_copy(1, &[round; 512]).unwrap();
            imports.submit_write_copy(2, &[round + 10; 512]).unwrap();
            while imports.complete_next(&mut read).unwrap().is_some() {}
            // No more buffers than were ever in flight at once.
            assert_eq!(imports.spare_blocks.len(), 2);
            let mut block = [0; 512];
            Storage::read(&mut storage.clone(), 2, &mut block).unwrap();
            assert_eq!(block, [round + 10; 512]);
        }
    }

    #[test]
    fn a_timer_re_armed_in_the_past_is_handed_out_at_most_64_times_before_an_op() {
        let mut imports = imports();
        imports.begin_delivery(&requests(1, 1), 16);
        for _ in 0..TIMERS_PER_OP_MAX {
            imports.set_timer(1, 0).unwrap();
            assert_eq!(imports.due_timer(1, None).unwrap().id, Some(1));
        }
        imports.set_timer(1, 0).unwrap();
        let violation = imports.due_timer(1, None).unwrap_err();
        assert!(
            violation
                .0
                .contains("more than 64 timers fell due before op 1")
        );
    }
}

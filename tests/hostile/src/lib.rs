//! A deliberately hostile state machine, written against the raw bindings (not the SDK,
//! whose runner would catch some of this inside the guest): an echo machine that keeps
//! no state but its op, and misbehaves when a request's body names a misbehaviour.
//!
//! Every misbehaviour is something a plugin could do to its host; the host must stop
//! the instance with the right error, refuse the request, and go on. The names are in
//! [`Misbehaviour::from_body`].

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

wit_bindgen::generate!({
    path: "../../wit",
    world: "state-machine",
});

use carapace::state_machine::types::{Failure, Identity, Level, Options, Request, Statistic, Step};
use carapace::state_machine::{clock, delivery, grid, log};
use exports::carapace::state_machine::machine::Guest;

/// An op of the delivery in flight, with its body.
struct Queued {
    op: u64,
    body: Vec<u8>,
}

/// What a request asks the guest to do wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Misbehaviour {
    /// Loop for ever in `commit`: only fuel stops it.
    Loop,
    /// Allocate without end in `commit`: only the memory limit stops it.
    MemoryBomb,
    /// Recurse without end in `commit`: only the stack limit stops it.
    Recursion,
    /// Panic in `commit`.
    TrapInCommit,
    /// Submit a read in `prefetch`, then panic in `read-done`.
    TrapInReadDone,
    /// Submit a read from `commit`, which must be pure.
    IoFromCommit,
    /// Submit two reads of one address in `prefetch`.
    TwoIosOnOneAddress,
    /// Read the last address of the grid in `prefetch`: allowed.
    LastAddress,
    /// Read one past the last address.
    PastLastAddress,
    /// Write a block one byte short.
    WrongBlockSize,
    /// Arm a million timers in `prefetch`.
    TimerFlood,
    /// Log a hundred thousand long messages in `prefetch`: the host keeps a bounded log.
    LogFlood,
    /// Answer `pending` from `prefetch` with nothing in flight.
    PendingWithNothing,
    /// Return a checkpoint state over the host's bound at the next checkpoint.
    HugeCheckpointState,
    /// Reply with more than the reply size limit.
    HugeReply,
    /// Compute for a while in `commit`: tens of millions of instructions, within one
    /// op's fuel but not within five ops'.
    Spin,
    /// Compute half as long again as `spin`, in `prefetch`.
    SpinInPrefetch,
    /// Report the commit without reporting the prefetch first.
    SkipPrefetched,
    /// Prefetch without asking for due timers first.
    SkipDueTimer,
    /// After its op, a `due-timer` for the op after it, past the end of the delivery.
    ReportPastTheEnd,
    /// End the delivery after this op, leaving the rest of the batch undone.
    StopDelivery,
}

impl Misbehaviour {
    fn from_body(body: &[u8]) -> Option<Misbehaviour> {
        Some(match body {
            b"loop" => Misbehaviour::Loop,
            b"memory-bomb" => Misbehaviour::MemoryBomb,
            b"recursion" => Misbehaviour::Recursion,
            b"trap-in-commit" => Misbehaviour::TrapInCommit,
            b"trap-in-read-done" => Misbehaviour::TrapInReadDone,
            b"io-from-commit" => Misbehaviour::IoFromCommit,
            b"two-ios-on-one-address" => Misbehaviour::TwoIosOnOneAddress,
            b"last-address" => Misbehaviour::LastAddress,
            b"past-last-address" => Misbehaviour::PastLastAddress,
            b"wrong-block-size" => Misbehaviour::WrongBlockSize,
            b"timer-flood" => Misbehaviour::TimerFlood,
            b"log-flood" => Misbehaviour::LogFlood,
            b"pending-with-nothing" => Misbehaviour::PendingWithNothing,
            b"huge-checkpoint-state" => Misbehaviour::HugeCheckpointState,
            b"huge-reply" => Misbehaviour::HugeReply,
            b"spin" => Misbehaviour::Spin,
            b"spin-in-prefetch" => Misbehaviour::SpinInPrefetch,
            b"skip-prefetched" => Misbehaviour::SkipPrefetched,
            b"skip-due-timer" => Misbehaviour::SkipDueTimer,
            b"report-past-the-end" => Misbehaviour::ReportPastTheEnd,
            b"stop-delivery" => Misbehaviour::StopDelivery,
            _ => return None,
        })
    }
}

thread_local! {
    static OP: Cell<u64> = const { Cell::new(0) };
    static BLOCK_SIZE: Cell<u32> = const { Cell::new(0) };
    static BLOCK_COUNT: Cell<u64> = const { Cell::new(0) };
    static REPLY_SIZE_LIMIT: Cell<u32> = const { Cell::new(0) };
    /// Reads submitted and not yet completed.
    static READS_IN_FLIGHT: Cell<u32> = const { Cell::new(0) };
    static TRAP_ON_READ_DONE: Cell<bool> = const { Cell::new(false) };
    static HUGE_STATE: Cell<bool> = const { Cell::new(false) };
    /// The requests of the delivery in flight not yet begun.
    static QUEUE: RefCell<VecDeque<Queued>> = const { RefCell::new(VecDeque::new()) };
    /// The request whose prefetch is waiting for its reads.
    static PREFETCHING: RefCell<Option<Queued>> = const { RefCell::new(None) };
}

/// Recursion without end, on purpose: the stack limit must stop it.
#[allow(unconditional_recursion)]
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    // `black_box` keeps the recursion from becoming a loop.
    std::hint::black_box(depth) + recurse(depth + 1)
}

/// The turns of `spin`'s loop: tens of millions of instructions.
const SPIN_TURNS: u64 = 8_000_000;

fn spin(turns: u64) {
    for turn in 0..turns {
        std::hint::black_box(turn);
    }
}

struct Hostile;

/// The delivery in flight, by hand: each op is prefetched (perhaps waiting for reads),
/// reported, committed and reported, until the queue is empty.
impl Hostile {
    fn run() -> Result<Step, Failure> {
        loop {
            if READS_IN_FLIGHT.get() > 0 {
                return Ok(Step::Pending);
            }
            if let Some(request) = PREFETCHING.take() {
                let misbehaviour = Misbehaviour::from_body(&request.body);
                if misbehaviour != Some(Misbehaviour::SkipPrefetched) {
                    delivery::prefetched(request.op);
                }
                let reply = Hostile::commit(request.op, &request.body)?;
                delivery::committed(request.op, &reply);
                if misbehaviour == Some(Misbehaviour::ReportPastTheEnd) {
                    delivery::due_timer(request.op + 1, None);
                }
                if misbehaviour == Some(Misbehaviour::StopDelivery) {
                    QUEUE.with_borrow_mut(VecDeque::clear);
                }
                continue;
            }
            let Some(request) = QUEUE.with_borrow_mut(VecDeque::pop_front) else {
                return Ok(Step::Done);
            };
            // It arms no timers, so none is ever due.
            if Misbehaviour::from_body(&request.body) != Some(Misbehaviour::SkipDueTimer) {
                while delivery::due_timer(request.op, None).is_some() {}
            }
            let step = Hostile::prefetch(&request.body)?;
            let pending_with_nothing = step == Step::Pending && READS_IN_FLIGHT.get() == 0;
            PREFETCHING.set(Some(request));
            if pending_with_nothing {
                return Ok(Step::Pending);
            }
        }
    }

    fn prefetch(body: &[u8]) -> Result<Step, Failure> {
        let read = |address| {
            grid::submit_read(address);
            READS_IN_FLIGHT.set(READS_IN_FLIGHT.get() + 1);
        };
        match Misbehaviour::from_body(body) {
            Some(Misbehaviour::TrapInReadDone) => {
                TRAP_ON_READ_DONE.set(true);
                read(1);
            }
            Some(Misbehaviour::TwoIosOnOneAddress) => {
                read(1);
                read(1);
            }
            Some(Misbehaviour::LastAddress) => read(BLOCK_COUNT.get()),
            Some(Misbehaviour::PastLastAddress) => read(BLOCK_COUNT.get() + 1),
            Some(Misbehaviour::WrongBlockSize) => {
                grid::submit_write(1, &vec![0; BLOCK_SIZE.get() as usize - 1]);
                READS_IN_FLIGHT.set(READS_IN_FLIGHT.get() + 1);
            }
            Some(Misbehaviour::SpinInPrefetch) => spin(SPIN_TURNS * 3 / 2),
            Some(Misbehaviour::TimerFlood) => {
                for id in 0..1_000_000 {
                    clock::set_timer(id, u64::MAX);
                }
            }
            Some(Misbehaviour::LogFlood) => {
                let message = "x".repeat(10_000);
                for _ in 0..100_000 {
                    log::log(Level::Debug, &message);
                }
            }
            Some(Misbehaviour::PendingWithNothing) => return Ok(Step::Pending),
            Some(Misbehaviour::HugeCheckpointState) => HUGE_STATE.set(true),
            _ => {}
        }
        Ok(if READS_IN_FLIGHT.get() > 0 {
            Step::Pending
        } else {
            Step::Done
        })
    }

    fn commit(op: u64, body: &[u8]) -> Result<Vec<u8>, Failure> {
        match Misbehaviour::from_body(body) {
            Some(Misbehaviour::Loop) => loop {
                std::hint::black_box(op);
            },
            Some(Misbehaviour::MemoryBomb) => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            Some(Misbehaviour::Recursion) => {
                std::hint::black_box(recurse(0));
            }
            Some(Misbehaviour::TrapInCommit) => panic!("a trap in commit"),
            Some(Misbehaviour::IoFromCommit) => grid::submit_read(1),
            Some(Misbehaviour::HugeReply) => {
                return Ok(vec![0; REPLY_SIZE_LIMIT.get() as usize + 1]);
            }
            Some(Misbehaviour::Spin) => spin(SPIN_TURNS),
            _ => {}
        }
        OP.set(op);
        Ok(body.to_vec())
    }
}

impl Guest for Hostile {
    fn identify() -> Identity {
        Identity {
            name: "hostile".into(),
            version: "1.0.0".into(),
            state_format: 1,
        }
    }

    fn init(options: Options) -> Result<(), Failure> {
        BLOCK_SIZE.set(options.block_size);
        BLOCK_COUNT.set(options.block_count);
        REPLY_SIZE_LIMIT.set(options.reply_size_limit);
        Ok(())
    }

    fn open(checkpoint: Option<Vec<u8>>) -> Result<Step, Failure> {
        if let Some(state) = checkpoint {
            let op = state
                .try_into()
                .map_err(|_| Failure::InvalidArgument("a checkpoint state of 8 bytes".into()))?;
            OP.set(u64::from_le_bytes(op));
        }
        Ok(Step::Done)
    }

    fn input_valid(_: u8, _: Vec<u8>) -> Result<(), String> {
        Ok(())
    }

    fn deliver(requests: Vec<Request>, bodies: Vec<u8>) -> Result<Step, Failure> {
        let mut rest = &bodies[..];
        let queue = requests
            .iter()
            .map(|request| {
                let (body, after) = rest.split_at(request.body_size as usize);
                rest = after;
                Queued {
                    op: request.op,
                    body: body.to_vec(),
                }
            })
            .collect();
        QUEUE.set(queue);
        Hostile::run()
    }

    fn checkpoint(_: u64) -> Result<Step, Failure> {
        Ok(Step::Done)
    }

    fn checkpoint_state() -> Vec<u8> {
        if HUGE_STATE.get() {
            return vec![0; 1 << 20];
        }
        OP.get().to_le_bytes().to_vec()
    }

    fn read_done(_: u64, _: Vec<u8>) -> Result<Step, Failure> {
        assert!(!TRAP_ON_READ_DONE.get(), "a trap in read-done");
        READS_IN_FLIGHT.set(READS_IN_FLIGHT.get() - 1);
        Hostile::run()
    }

    fn write_done(_: u64) -> Result<Step, Failure> {
        Self::read_done(0, Vec::new())
    }

    fn describe() -> Vec<Statistic> {
        vec![Statistic {
            name: "op".into(),
            values: vec![OP.get()],
        }]
    }
}

export!(Hostile);

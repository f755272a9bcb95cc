//! A host for a machine's unit tests, natively and without the carapace host: grid I/O
//! over an in-memory block map, completed one at a time in submission order; `drive`
//! finishes a [`Runner`]'s step and `block_on` any future over a [`Context`] (a storage
//! engine's, say).
//!
//! Writes land in the map when submitted, so a block is readable as soon as its write is;
//! there is no durable image apart from the live one (the carapace host's tests crash
//! the grid), and the clock stays at 0 with timers ignored. [`MemoryHost::deliver`]
//! delivers ops and returns their replies.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context as TaskContext, Poll, Waker};

use crate::{Context, Delivery, Failure, Imports, Level, Runner, StateMachine, Step};

/// SplitMix64 (Steele, Lea and Flood, 2014), for seeded test inputs: the generator the
/// host uses for its own choices, with no dependency.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound > 0`); the slight bias of a modulo is no matter
    /// for tests.
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}

#[derive(Clone, Copy, Debug)]
enum Io {
    Read(u64),
    Write(u64),
}

#[derive(Debug, Default)]
struct State {
    blocks: HashMap<u64, Vec<u8>>,
    submitted: VecDeque<Io>,
    read_count: u64,
    /// Reads still to damage, by address: each returns the block with a bit flipped.
    damaged_reads: HashMap<u64, u32>,
    /// Replies of delivered ops not yet taken.
    replies: Vec<Vec<u8>>,
}

/// The blocks and the I/O queue; clones share them, so a forest reopened over a clone
/// sees every block written before.
#[derive(Clone, Debug)]
pub struct MemoryHost {
    state: Rc<RefCell<State>>,
    block_size: usize,
}

impl MemoryHost {
    /// A host of blocks of `block_size` bytes, none written yet.
    pub fn new(block_size: u32) -> MemoryHost {
        MemoryHost {
            state: Rc::default(),
            block_size: block_size as usize,
        }
    }

    /// Reads submitted so far.
    pub fn read_count(&self) -> u64 {
        self.state.borrow().read_count
    }

    /// Flip a bit of what the next `reads` reads of `address` return (the stored block
    /// stays whole): one damaged read is a fault in transit, many a damaged block.
    pub fn damage_reads(&self, address: u64, reads: u32) {
        self.state.borrow_mut().damaged_reads.insert(address, reads);
    }

    /// A context whose imports are this host's.
    pub fn context(&self) -> Context {
        Context::new(Box::new(self.clone()))
    }

    /// Deliver `delivery` to `runner` and complete I/O until the delivery is done;
    /// returns the replies of the ops it committed.
    pub fn deliver<M: StateMachine>(
        &self,
        runner: &mut Runner<M>,
        delivery: Delivery,
    ) -> Result<Vec<Vec<u8>>, Failure> {
        let step = runner.deliver(delivery);
        self.drive(runner, step)?;
        Ok(std::mem::take(&mut self.state.borrow_mut().replies))
    }

    /// Complete I/O until the step `step` started is done.
    pub fn drive<M: StateMachine>(
        &self,
        runner: &mut Runner<M>,
        step: Result<Step, Failure>,
    ) -> Result<(), Failure> {
        let mut step = step?;
        while step == Step::Pending {
            let io = self
                .state
                .borrow_mut()
                .submitted
                .pop_front()
                .expect("a pending step waits for I/O");
            step = match io {
                Io::Read(address) => runner.read_done(address, self.block(address))?,
                Io::Write(address) => runner.write_done(address)?,
            };
        }
        Ok(())
    }

    fn block(&self, address: u64) -> Vec<u8> {
        let mut state = self.state.borrow_mut();
        let mut block = state
            .blocks
            .get(&address)
            .cloned()
            .unwrap_or_else(|| vec![0; self.block_size]);
        if let Some(reads) = state
            .damaged_reads
            .get_mut(&address)
            .filter(|reads| **reads > 0)
        {
            *reads -= 1;
            block[self.block_size / 2] ^= 1;
        }
        block
    }

    /// Run `future` to completion, completing its I/O in submission order.
    pub fn block_on<F: Future>(&self, context: &Context, future: F) -> F::Output {
        let mut future = pin!(future);
        let mut task_context = TaskContext::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(output) = future.as_mut().poll(&mut task_context) {
                assert!(self.state.borrow().submitted.is_empty());
                return output;
            }
            let io = self
                .state
                .borrow_mut()
                .submitted
                .pop_front()
                .expect("a pending future waits for I/O");
            match io {
                Io::Read(address) => context.complete_read(address, self.block(address)).unwrap(),
                Io::Write(address) => context.complete_write(address).unwrap(),
            }
        }
    }
}

impl Imports for MemoryHost {
    fn submit_read(&self, address: u64) {
        let mut state = self.state.borrow_mut();
        state.read_count += 1;
        state.submitted.push_back(Io::Read(address));
    }

    fn submit_write(&self, address: u64, block: &[u8]) {
        let mut state = self.state.borrow_mut();
        state.blocks.insert(address, block.to_vec());
        state.submitted.push_back(Io::Write(address));
    }

    fn now(&self) -> u64 {
        0
    }

    fn set_timer(&self, _: u64, _: u64) {}

    fn cancel_timer(&self, _: u64) {}

    fn due_timer(&self, _: u64, previous_reply: Option<&[u8]>) -> Option<u64> {
        if let Some(reply) = previous_reply {
            self.state.borrow_mut().replies.push(reply.to_vec());
        }
        None
    }

    fn prefetched(&self, _: u64) {}

    fn committed(&self, _: u64, reply: &[u8]) {
        self.state.borrow_mut().replies.push(reply.to_vec());
    }

    fn log(&self, _: Level, _: &str) {}
}

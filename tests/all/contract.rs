//! A guest that breaks the contract is stopped with an error naming what it did.

use carapace::imports::IoOrder;
use carapace::native::NativeInstance;
use carapace::replica::Replica;
use carapace::storage::MemoryStorage;
use carapace_sdk::{Context, Failure, Reply, StateMachine};

use crate::support::*;

/// A machine that breaks the contract: arms a timer in `init` (when told to) and
/// submits a read from `commit`.
struct Rogue {
    context: Context,
}

thread_local! {
    static MISBEHAVE_IN_INIT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl StateMachine for Rogue {
    const IDENTITY: carapace_sdk::Identity = carapace_sdk::Identity {
        name: "rogue",
        version: "0.0.0",
        state_format: 1,
    };

    fn init(context: Context, _: &carapace_sdk::Options) -> Result<Rogue, Failure> {
        if MISBEHAVE_IN_INIT.get() {
            context.set_timer(1, 10);
        }
        Ok(Rogue { context })
    }
    async fn open(&mut self, _: Option<&[u8]>) -> Result<(), Failure> {
        Ok(())
    }
    fn input_valid(&self, _: u8, _: &[u8]) -> Result<(), String> {
        Ok(())
    }
    async fn prefetch(&mut self, _: u64, _: u8, _: &[u8]) -> Result<(), Failure> {
        Ok(())
    }
    fn commit(
        &mut self,
        _: u128,
        _: u64,
        _: u64,
        _: u8,
        _: &[u8],
        _: &mut Vec<u8>,
    ) -> Result<Reply, Failure> {
        // Commit must be pure: submitting I/O here breaks the contract.
        let _read = self.context.read(5);
        Ok(Reply::Written)
    }
    async fn compact(&mut self, _: u64) -> Result<(), Failure> {
        Ok(())
    }
    async fn checkpoint(&mut self, _: u64) -> Result<(), Failure> {
        Ok(())
    }
    fn checkpoint_state(&self) -> Vec<u8> {
        vec![1]
    }
    async fn timer(&mut self, _: u64) -> Result<(), Failure> {
        Ok(())
    }
}

fn open_rogue() -> carapace::Result<Replica> {
    let context = context(&MemoryStorage::new(), IoOrder::Fifo);
    Replica::open(
        Box::new(NativeInstance::<Rogue>::new(context)),
        config(),
        None,
    )
}

#[test]
fn timers_and_io_outside_a_step_are_refused() {
    MISBEHAVE_IN_INIT.set(true);
    match guest_fault(open_rogue().unwrap_err()) {
        ("init", carapace::Fault::Violation(violation)) => assert!(
            violation.contains("`set-timer` outside an asynchronous step"),
            "{violation}"
        ),
        other => panic!("expected a violation in `init`, got {other:?}"),
    }

    MISBEHAVE_IN_INIT.set(false);
    let mut replica = open_rogue().unwrap();
    let request = carapace::replica::Request {
        client: 1,
        op: 1,
        timestamp: 1,
        operation: 1,
        body: Vec::new(),
    };
    match guest_fault(replica.commit(&request).unwrap_err()) {
        ("commit", carapace::Fault::Violation(violation)) => assert!(
            violation.contains("grid I/O outside an asynchronous step"),
            "{violation}"
        ),
        other => panic!("expected a violation in `commit`, got {other:?}"),
    }
}

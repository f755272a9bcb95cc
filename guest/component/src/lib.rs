//! Binds the echo state machine to the `state-machine` world as a wasm component.
//!
//! Everything here is translation: WIT types to the guest core's types and back, and
//! the imports behind [`carapace_lsm::Host`]. No state machine logic lives here.

use std::cell::RefCell;

use carapace_echo::Echo;
use carapace_lsm::{Context, Driver, Failure, Host, Level, Options, Step};

wit_bindgen::generate!({
    path: "../../wit",
    world: "state-machine",
});

use carapace::state_machine::types as wit;
use carapace::state_machine::{clock, grid, log};
use exports::carapace::state_machine::machine::Guest;

/// The imports, as the guest core's [`Host`].
struct Imports;

impl Host for Imports {
    fn submit_read(&self, address: u64) {
        grid::submit_read(address);
    }

    fn submit_write(&self, address: u64, block: &[u8]) {
        grid::submit_write(address, block);
    }

    fn now(&self) -> u64 {
        clock::now()
    }

    fn set_timer(&self, id: u64, at: u64) {
        clock::set_timer(id, at);
    }

    fn cancel_timer(&self, id: u64) {
        clock::cancel_timer(id);
    }

    fn log(&self, level: Level, message: &str) {
        let level = match level {
            Level::Debug => wit::Level::Debug,
            Level::Info => wit::Level::Info,
            Level::Warn => wit::Level::Warn,
            Level::Error => wit::Level::Error,
        };
        log::log(level, message);
    }
}

thread_local! {
    /// The one machine of this instance; `None` until `init`. A component instance is
    /// single-threaded, so this is only ever borrowed by the export being called.
    static DRIVER: RefCell<Option<Driver<Echo>>> = const { RefCell::new(None) };
}

fn with_driver<T>(
    action: impl FnOnce(&mut Driver<Echo>) -> Result<T, Failure>,
) -> Result<T, wit::Failure> {
    DRIVER
        .with_borrow_mut(|driver| match driver {
            Some(driver) => action(driver),
            None => Err(Failure::Protocol(
                "the machine was called before `init`".into(),
            )),
        })
        .map_err(to_wit_failure)
}

fn to_wit_failure(failure: Failure) -> wit::Failure {
    match failure {
        Failure::InvalidArgument(message) => wit::Failure::InvalidArgument(message),
        Failure::CorruptBlock(message) => wit::Failure::CorruptBlock(message),
        Failure::OutOfSpace(message) => wit::Failure::OutOfSpace(message),
        Failure::Protocol(message) => wit::Failure::Protocol(message),
    }
}

fn to_wit_step(step: Step) -> wit::Step {
    match step {
        Step::Pending => wit::Step::Pending,
        Step::Done => wit::Step::Done,
    }
}

fn step(
    action: impl FnOnce(&mut Driver<Echo>) -> Result<Step, Failure>,
) -> Result<wit::Step, wit::Failure> {
    with_driver(action).map(to_wit_step)
}

/// The first op whose reply the `divergent-test-version` build changes.
#[cfg(feature = "divergent-test-version")]
const DIVERGENT_FROM_OP: u64 = 100;

struct Component;

impl Guest for Component {
    fn init(options: wit::Options) -> Result<(), wit::Failure> {
        DRIVER
            .with_borrow_mut(|driver| {
                if driver.is_some() {
                    return Err(Failure::Protocol("`init` called twice".into()));
                }
                let options = Options {
                    batch_size_limit: options.batch_size_limit,
                    block_size: options.block_size,
                    block_count: options.block_count,
                    settings: options.settings,
                };
                *driver = Some(Driver::init(Context::new(Box::new(Imports)), &options)?);
                Ok(())
            })
            .map_err(to_wit_failure)
    }

    fn open(checkpoint: Option<Vec<u8>>) -> Result<wit::Step, wit::Failure> {
        step(|driver| driver.open(checkpoint))
    }

    fn input_valid(operation: u8, body: Vec<u8>) -> Result<(), String> {
        DRIVER.with_borrow(|driver| match driver {
            Some(driver) => driver.input_valid(operation, &body),
            None => Err("the machine was called before `init`".into()),
        })
    }

    fn prefetch(op: u64, operation: u8, body: Vec<u8>) -> Result<wit::Step, wit::Failure> {
        step(|driver| driver.prefetch(op, operation, body))
    }

    fn commit(
        client: wit::U128,
        op: u64,
        timestamp: u64,
        operation: u8,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, wit::Failure> {
        let client = (u128::from(client.high) << 64) | u128::from(client.low);
        let reply = with_driver(|driver| driver.commit(client, op, timestamp, operation, &body));
        #[cfg(feature = "divergent-test-version")]
        let reply = reply.map(|mut reply| {
            if op >= DIVERGENT_FROM_OP {
                reply.push(0);
            }
            reply
        });
        reply
    }

    fn compact(op: u64) -> Result<wit::Step, wit::Failure> {
        step(|driver| driver.compact(op))
    }

    fn checkpoint(op: u64) -> Result<wit::Step, wit::Failure> {
        step(|driver| driver.checkpoint(op))
    }

    fn checkpoint_state() -> Vec<u8> {
        DRIVER.with_borrow(|driver| {
            driver
                .as_ref()
                .map(Driver::checkpoint_state)
                .unwrap_or_default()
        })
    }

    fn read_done(address: u64, block: Vec<u8>) -> Result<wit::Step, wit::Failure> {
        step(|driver| driver.read_done(address, block))
    }

    fn write_done(address: u64) -> Result<wit::Step, wit::Failure> {
        step(|driver| driver.write_done(address))
    }

    fn timer(id: u64) -> Result<wit::Step, wit::Failure> {
        step(|driver| driver.timer(id))
    }
}

export!(Component);

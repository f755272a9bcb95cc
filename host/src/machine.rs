//! The exports of the `state-machine` world as the host drives them, with two
//! implementations: [`WasmMachine`], a component in wasmtime (the product), and
//! [`NativeMachine`], the echo guest core compiled into the host (the baseline that
//! the component is checked and measured against).

use std::cell::RefCell;
use std::rc::Rc;

use anyhow::Result;

use crate::context::HostContext;

/// Where an asynchronous step stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Waiting for I/O completions.
    Pending,
    /// Complete.
    Done,
}

/// Options passed to `init`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The largest request body in bytes.
    pub batch_size_limit: u32,
    /// Bytes per grid block.
    pub block_size: u32,
    /// Blocks in the grid.
    pub block_count: u64,
    /// Machine-specific settings.
    pub settings: Vec<(String, String)>,
}

impl Options {
    /// Check what the host itself relies on: the grid's geometry.
    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(
            self.block_size.is_power_of_two() && (512..=512 * 1024).contains(&self.block_size),
            "block size {} is not a power of two in 512..=524288",
            self.block_size
        );
        anyhow::ensure!(
            self.block_count > 0
                && self
                    .block_count
                    .checked_mul(u64::from(self.block_size))
                    .is_some(),
            "a grid of {} blocks of {} bytes cannot be addressed",
            self.block_count,
            self.block_size
        );
        Ok(())
    }
}

/// Why the guest stopped: a failure it reported, as the contract's `failure` variant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestFailure {
    /// The variant's name, as in the WIT (`corrupt-block`, ...).
    pub kind: &'static str,
    /// Its message.
    pub message: String,
}

impl std::fmt::Display for GuestFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "guest failure `{}`: {}", self.kind, self.message)
    }
}

impl std::error::Error for GuestFailure {}

/// A state machine instance, as the host drives it. Every method is one export call;
/// an `Err` means the instance is unusable (a failure, a trap, a contract violation).
pub trait Machine {
    /// `init`.
    fn init(&mut self, options: &Options) -> Result<()>;
    /// `open`.
    fn open(&mut self, checkpoint: Option<&[u8]>) -> Result<Step>;
    /// `input-valid`: `Ok(Err(reason))` is a refused request, not an error.
    fn input_valid(&mut self, operation: u8, body: &[u8]) -> Result<Result<(), String>>;
    /// `prefetch`.
    fn prefetch(&mut self, op: u64, operation: u8, body: &[u8]) -> Result<Step>;
    /// `commit`.
    fn commit(
        &mut self,
        client: u128,
        op: u64,
        timestamp: u64,
        operation: u8,
        body: &[u8],
    ) -> Result<Vec<u8>>;
    /// `compact`.
    fn compact(&mut self, op: u64) -> Result<Step>;
    /// `checkpoint`.
    fn checkpoint(&mut self, op: u64) -> Result<Step>;
    /// `checkpoint-state`.
    fn checkpoint_state(&mut self) -> Result<Vec<u8>>;
    /// `read-done`.
    fn read_done(&mut self, address: u64, block: Vec<u8>) -> Result<Step>;
    /// `write-done`.
    fn write_done(&mut self, address: u64) -> Result<Step>;
    /// `timer`.
    fn timer(&mut self, id: u64) -> Result<Step>;
    /// Run `action` on the host context the instance's imports use.
    fn with_context<R>(&mut self, action: impl FnOnce(&mut HostContext) -> R) -> R;
    /// The guest's memory in bytes, where the host can see it (a component's linear
    /// memory; not a native build's heap).
    fn memory_bytes(&self) -> Option<usize> {
        None
    }
}

pub use crate::wasm::WasmMachine;

/// A guest core compiled into the host and driven through the same contract: the echo
/// machine by default (the baseline of the component), or any other
/// [`carapace_lsm::StateMachine`] (tests drive model machines this way).
pub struct NativeMachine<M: carapace_lsm::StateMachine = carapace_echo::Echo> {
    context: Rc<RefCell<HostContext>>,
    driver: Option<carapace_lsm::Driver<M>>,
}

impl<M: carapace_lsm::StateMachine> std::fmt::Debug for NativeMachine<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeMachine")
            .field("driver", &self.driver)
            .finish()
    }
}

/// The native guest's imports: straight calls into the shared host context.
struct NativeImports(Rc<RefCell<HostContext>>);

impl carapace_lsm::Host for NativeImports {
    fn submit_read(&self, address: u64) {
        // A contract violation is recorded in the context and reported when the
        // export returns, as a trap would be for a component.
        let _ = self.0.borrow_mut().submit_read(address);
    }

    fn submit_write(&self, address: u64, block: &[u8]) {
        let _ = self.0.borrow_mut().submit_write(address, block.to_vec());
    }

    fn now(&self) -> u64 {
        self.0.borrow().now()
    }

    fn set_timer(&self, id: u64, at: u64) {
        let _ = self.0.borrow_mut().set_timer(id, at);
    }

    fn cancel_timer(&self, id: u64) {
        let _ = self.0.borrow_mut().cancel_timer(id);
    }

    fn log(&self, level: carapace_lsm::Level, message: &str) {
        let level = match level {
            carapace_lsm::Level::Debug => crate::context::Level::Debug,
            carapace_lsm::Level::Info => crate::context::Level::Info,
            carapace_lsm::Level::Warn => crate::context::Level::Warn,
            carapace_lsm::Level::Error => crate::context::Level::Error,
        };
        self.0.borrow_mut().log(level, message.to_string());
    }
}

impl NativeMachine {
    /// A native echo machine over `context`; call [`Machine::init`] next.
    pub fn new(context: HostContext) -> NativeMachine {
        NativeMachine::of(context)
    }
}

impl<M: carapace_lsm::StateMachine> NativeMachine<M> {
    /// A native machine of type `M` over `context`; call [`Machine::init`] next.
    pub fn of(context: HostContext) -> NativeMachine<M> {
        NativeMachine {
            context: Rc::new(RefCell::new(context)),
            driver: None,
        }
    }

    /// The machine, when no step is in flight.
    pub fn machine(&self) -> Option<&M> {
        self.driver.as_ref().and_then(carapace_lsm::Driver::machine)
    }

    fn driver(&mut self) -> Result<&mut carapace_lsm::Driver<M>> {
        self.driver
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("the machine was called before `init`"))
    }

    /// Turn the guest core's result into the host's, reporting a contract violation
    /// recorded during the call first.
    fn finish<T>(&mut self, result: Result<T, carapace_lsm::Failure>) -> Result<T> {
        if let Some(violation) = self.context.borrow_mut().take_violation() {
            anyhow::bail!("guest broke the contract: {violation}");
        }
        result.map_err(|failure| native_failure(&failure).into())
    }

    fn step(&mut self, result: Result<carapace_lsm::Step, carapace_lsm::Failure>) -> Result<Step> {
        self.finish(result).map(|step| match step {
            carapace_lsm::Step::Pending => Step::Pending,
            carapace_lsm::Step::Done => Step::Done,
        })
    }
}

fn native_failure(failure: &carapace_lsm::Failure) -> GuestFailure {
    use carapace_lsm::Failure;
    let kind = match failure {
        Failure::InvalidArgument(_) => "invalid-argument",
        Failure::CorruptBlock(_) => "corrupt-block",
        Failure::OutOfSpace(_) => "out-of-space",
        Failure::Protocol(_) => "protocol",
    };
    GuestFailure {
        kind,
        message: failure.message().to_string(),
    }
}

impl<M: carapace_lsm::StateMachine> Machine for NativeMachine<M> {
    fn init(&mut self, options: &Options) -> Result<()> {
        anyhow::ensure!(self.driver.is_none(), "`init` called twice");
        let options = carapace_lsm::Options {
            batch_size_limit: options.batch_size_limit,
            block_size: options.block_size,
            block_count: options.block_count,
            settings: options.settings.clone(),
        };
        let context = carapace_lsm::Context::new(Box::new(NativeImports(self.context.clone())));
        let driver = carapace_lsm::Driver::init(context, &options);
        self.driver = Some(self.finish(driver)?);
        Ok(())
    }

    fn open(&mut self, checkpoint: Option<&[u8]>) -> Result<Step> {
        let result = self.driver()?.open(checkpoint.map(<[u8]>::to_vec));
        self.step(result)
    }

    fn input_valid(&mut self, operation: u8, body: &[u8]) -> Result<Result<(), String>> {
        Ok(self.driver()?.input_valid(operation, body))
    }

    fn prefetch(&mut self, op: u64, operation: u8, body: &[u8]) -> Result<Step> {
        let result = self.driver()?.prefetch(op, operation, body.to_vec());
        self.step(result)
    }

    fn commit(
        &mut self,
        client: u128,
        op: u64,
        timestamp: u64,
        operation: u8,
        body: &[u8],
    ) -> Result<Vec<u8>> {
        let result = self
            .driver()?
            .commit(client, op, timestamp, operation, body);
        self.finish(result)
    }

    fn compact(&mut self, op: u64) -> Result<Step> {
        let result = self.driver()?.compact(op);
        self.step(result)
    }

    fn checkpoint(&mut self, op: u64) -> Result<Step> {
        let result = self.driver()?.checkpoint(op);
        self.step(result)
    }

    fn checkpoint_state(&mut self) -> Result<Vec<u8>> {
        Ok(self.driver()?.checkpoint_state())
    }

    fn read_done(&mut self, address: u64, block: Vec<u8>) -> Result<Step> {
        let result = self.driver()?.read_done(address, block);
        self.step(result)
    }

    fn write_done(&mut self, address: u64) -> Result<Step> {
        let result = self.driver()?.write_done(address);
        self.step(result)
    }

    fn timer(&mut self, id: u64) -> Result<Step> {
        let result = self.driver()?.timer(id);
        self.step(result)
    }

    fn with_context<R>(&mut self, action: impl FnOnce(&mut HostContext) -> R) -> R {
        action(&mut self.context.borrow_mut())
    }
}

//! The native baseline: a guest core compiled into the host and driven through the same
//! [`Instance`] trait and the same [`HostImports`] as a component. It is the correctness
//! oracle (same replies, same checkpoint ids) and the performance baseline of the wasm
//! build. The only host crate that depends on guest crates: the host library and the
//! CLI reach it through a feature, and know machines only by the contract.

#![warn(missing_docs)]

use std::cell::RefCell;
use std::rc::Rc;

use carapace_core::error::{FailureKind, Fault};
use carapace_core::imports::{HostImports, Level};
use carapace_core::instance::{Identity, Instance, Options, Request, Statistic, Step};
use carapace_sdk::{Failure, Runner, StateMachine};

/// The machines compiled into the host, by name.
pub const MACHINES: [&str; 2] = ["echo", "kv"];

/// A native instance of the machine named `name` over `imports`, if it is compiled in.
pub fn instance(name: &str, imports: HostImports) -> Option<Box<dyn Instance>> {
    match name {
        "echo" => Some(Box::new(NativeInstance::<carapace_echo::Echo>::new(
            imports,
        ))),
        "kv" => Some(Box::new(NativeInstance::<carapace_kv::Kv>::new(imports))),
        _ => None,
    }
}

/// A guest core of type `M` driven natively through the contract.
pub struct NativeInstance<M: StateMachine> {
    imports: Rc<RefCell<HostImports>>,
    runner: Option<Runner<M>>,
}

impl<M: StateMachine> std::fmt::Debug for NativeInstance<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeInstance")
            .field("runner", &self.runner)
            .finish()
    }
}

/// The native guest's imports: straight calls into the shared host imports.
struct NativeImports(Rc<RefCell<HostImports>>);

impl carapace_sdk::Imports for NativeImports {
    fn submit_read(&self, address: u64) {
        // A contract violation is recorded in the host imports and reported when the
        // export returns, as a trap would be for a component.
        let _ = self.0.borrow_mut().submit_read(address);
    }

    fn submit_write(&self, address: u64, block: &[u8]) {
        let _ = self.0.borrow_mut().submit_write_copy(address, block);
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

    fn due_timer(&self, op: u64, previous_reply: Option<&[u8]>) -> Option<u64> {
        let previous_reply = previous_reply.map(<[u8]>::to_vec);
        self.0
            .borrow_mut()
            .due_timer(op, previous_reply)
            .ok()
            .and_then(|due| due.id)
    }

    fn prefetched(&self, op: u64) {
        let _ = self.0.borrow_mut().prefetched(op);
    }

    fn committed(&self, op: u64, reply: &[u8]) {
        let _ = self.0.borrow_mut().committed(op, reply.to_vec());
    }

    fn log(&self, level: carapace_sdk::Level, message: &str) {
        let level = match level {
            carapace_sdk::Level::Debug => Level::Debug,
            carapace_sdk::Level::Info => Level::Info,
            carapace_sdk::Level::Warn => Level::Warn,
            carapace_sdk::Level::Error => Level::Error,
        };
        self.0.borrow_mut().log(level, message.to_string());
    }
}

impl<M: StateMachine> NativeInstance<M> {
    /// A native instance of `M` over `imports`; the host calls `init` next.
    pub fn new(imports: HostImports) -> NativeInstance<M> {
        NativeInstance {
            imports: Rc::new(RefCell::new(imports)),
            runner: None,
        }
    }

    /// The machine, when no step is in flight.
    pub fn machine(&self) -> Option<&M> {
        self.runner.as_ref().and_then(Runner::machine)
    }

    fn runner(&mut self) -> Result<&mut Runner<M>, Fault> {
        self.runner
            .as_mut()
            .ok_or_else(|| Fault::Violation("the machine was called before `init`".into()))
    }

    /// Turn the guest core's result into the host's, reporting a contract violation
    /// recorded during the call first.
    fn finish<T>(&mut self, result: Result<T, Failure>) -> Result<T, Fault> {
        if let Some(violation) = self.imports.borrow_mut().take_violation() {
            return Err(Fault::Violation(violation));
        }
        result.map_err(|failure| fault(&failure))
    }

    fn step(&mut self, result: Result<carapace_sdk::Step, Failure>) -> Result<Step, Fault> {
        self.finish(result).map(|step| match step {
            carapace_sdk::Step::Pending => Step::Pending,
            carapace_sdk::Step::Done => Step::Done,
        })
    }
}

fn fault(failure: &Failure) -> Fault {
    let kind = match failure {
        Failure::InvalidArgument(_) => FailureKind::InvalidArgument,
        Failure::CorruptBlock(_) => FailureKind::CorruptBlock,
        Failure::OutOfSpace(_) => FailureKind::OutOfSpace,
        Failure::Protocol(_) => FailureKind::Protocol,
    };
    Fault::Failure {
        kind,
        message: failure.message().to_string(),
    }
}

impl<M: StateMachine> Instance for NativeInstance<M> {
    fn identify(&mut self) -> Result<Identity, Fault> {
        Ok(Identity {
            name: M::IDENTITY.name.into(),
            version: M::IDENTITY.version.into(),
            state_format: M::IDENTITY.state_format,
        })
    }

    fn init(&mut self, options: &Options) -> Result<(), Fault> {
        if self.runner.is_some() {
            return Err(Fault::Violation("`init` called twice".into()));
        }
        let options = carapace_sdk::Options {
            batch_size_limit: options.batch_size_limit,
            reply_size_limit: options.reply_size_limit,
            checkpoint_interval_ops: options.checkpoint_interval_ops,
            block_size: options.block_size,
            block_count: options.block_count,
            settings: options.settings.clone(),
        };
        let context = carapace_sdk::Context::new(Box::new(NativeImports(self.imports.clone())));
        let runner = Runner::init(context, &options);
        self.runner = Some(self.finish(runner)?);
        Ok(())
    }

    fn open(&mut self, checkpoint: Option<&[u8]>) -> Result<Step, Fault> {
        let result = self.runner()?.open(checkpoint.map(<[u8]>::to_vec));
        self.step(result)
    }

    fn input_valid(&mut self, operation: u8, body: &[u8]) -> Result<Result<(), String>, Fault> {
        Ok(self.runner()?.input_valid(operation, body))
    }

    fn deliver(&mut self, requests: &[Request]) -> Result<Step, Fault> {
        let bytes = requests.iter().map(|request| request.body.len()).sum();
        let mut delivery = carapace_sdk::Delivery::with_capacity(requests.len(), bytes);
        for request in requests {
            delivery.push(
                request.client,
                request.op,
                request.timestamp,
                request.operation,
                &request.body,
            );
        }
        let result = self.runner()?.deliver(delivery);
        self.step(result)
    }

    fn checkpoint(&mut self, op: u64) -> Result<Step, Fault> {
        let result = self.runner()?.checkpoint(op);
        self.step(result)
    }

    fn checkpoint_state(&mut self) -> Result<Vec<u8>, Fault> {
        Ok(self.runner()?.checkpoint_state())
    }

    fn read_done(&mut self, address: u64, block: &[u8]) -> Result<Step, Fault> {
        let result = self.runner()?.read_done(address, block.to_vec());
        self.step(result)
    }

    fn write_done(&mut self, address: u64) -> Result<Step, Fault> {
        let result = self.runner()?.write_done(address);
        self.step(result)
    }

    fn describe(&mut self) -> Result<Vec<Statistic>, Fault> {
        Ok(self
            .runner()?
            .describe()
            .into_iter()
            .map(|statistic| Statistic {
                name: statistic.name,
                values: statistic.values,
            })
            .collect())
    }

    fn with_imports_dyn(&mut self, action: &mut dyn FnMut(&mut HostImports)) {
        action(&mut self.imports.borrow_mut());
    }
}

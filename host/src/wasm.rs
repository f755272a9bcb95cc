//! The wasmtime side: an engine configured for determinism, components checked against
//! the `state-machine` world before they run, and [`WasmInstance`], one instance driven
//! through the generated bindings.

use carapace_core::error::{Error, FailureKind, Fault, Result};
use carapace_core::imports::{HostImports, Level, Violation};
use carapace_core::instance::{Identity, Instance, Options, Request, Statistic, Step};
pub use wasmtime::component::Component;
use wasmtime::component::{HasSelf, Linker, WasmList};
use wasmtime::{Config, Engine, ResourceLimiter, Store, StoreContextMut};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "state-machine",
        imports: { default: trappable },
    });
}

mod requests;

use bindings::carapace::state_machine::{clock, grid, log, types};
use bindings::exports::carapace::state_machine::machine::Guest as MachineExports;

/// The interfaces a component may import: the world's, and nothing else.
pub const WORLD_IMPORTS: [&str; 5] = [
    "carapace:state-machine/types@0.5.0",
    "carapace:state-machine/grid@0.5.0",
    "carapace:state-machine/clock@0.5.0",
    "carapace:state-machine/delivery@0.5.0",
    "carapace:state-machine/log@0.5.0",
];

/// The interface the machine's exports are in.
const MACHINE_EXPORT: &str = "carapace:state-machine/machine@0.5.0";

/// The world's `delivery` interface, which the host links by hand: beginning an op
/// refills the fuel, which needs the store.
const DELIVERY_INTERFACE: &str = "carapace:state-machine/delivery@0.5.0";

/// Limits on one guest instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Fuel for one export call, or for one asynchronous step with all the completion
    /// callbacks that finish it (they do not refill it, so a step that keeps asking for
    /// I/O runs out); in a delivery, for each op from its first `due-timer` on, so that
    /// a batch of ops has as much per op as one op alone. Deterministic: the same call
    /// on the same state uses the same fuel, so running out is reproducible, unlike a
    /// wall-clock timeout. 0 turns fuel metering off: faster (`carapace bench` measures
    /// by how much), but a guest that loops is then stopped only by the deadline, a
    /// host fault, never as a poison op.
    pub fuel_per_call: u64,
    /// Linear memory a guest may grow to, in bytes, all its memories together; a
    /// growth past it traps (deterministically: the limit is on the size asked for).
    pub memory_bytes_max: usize,
    /// Elements a guest's table may grow to; a growth past it traps.
    pub table_elements_max: usize,
    /// Native stack a guest's wasm may use, in bytes; deeper recursion traps. Not
    /// precise across wasmtime versions, so a replay on another version could trap at
    /// another depth: keep guests far from it.
    pub stack_bytes_max: usize,
    /// A wall-clock safety net per export call, in milliseconds (0: none). Unlike fuel
    /// it is not deterministic, so hitting it is a host fault that stops the replica,
    /// never a poison op.
    pub deadline_ms: u64,
}

/// The interval at which a runtime's clock thread advances the engine's epoch: the
/// granularity of [`Limits::deadline_ms`].
pub const EPOCH_TICK_MS: u64 = 10;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            // Generous: a checkpoint of a large grid touches every free-set word.
            fuel_per_call: 10_000_000_000,
            memory_bytes_max: 1 << 30,
            table_elements_max: 1 << 16,
            // wasmtime's own default.
            stack_bytes_max: 512 << 10,
            // Far above any legitimate call (fuel stops a loop within seconds).
            deadline_ms: 60_000,
        }
    }
}

/// A wasmtime engine and linker for the `state-machine` world.
pub struct Runtime {
    engine: Engine,
    linker: Linker<WasmState>,
    limits: Limits,
    /// Tells the clock thread to end when the runtime is dropped.
    clock_stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(stop) = &self.clock_stop {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Advance `engine`'s epoch every [`EPOCH_TICK_MS`] until `stop` is set: the clock of
/// the wall-clock deadline. A thread per runtime, and a tick is a counter increment.
fn start_epoch_clock(engine: &Engine) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (engine, stopped) = (engine.clone(), stop.clone());
    std::thread::spawn(move || {
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(EPOCH_TICK_MS));
            engine.increment_epoch();
        }
    });
    stop
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// What a store holds: the host imports the guest calls, and the store's limits.
struct WasmState {
    imports: HostImports,
    limiter: GuestLimiter,
}

/// Enforces the memory limit (a growth past it traps, deterministically) and records
/// how far the guest's memory has grown.
#[derive(Debug)]
struct GuestLimiter {
    memory_bytes_max: usize,
    memory_bytes: usize,
    table_elements_max: usize,
}

/// Core instances, memories and tables a component may create: a Rust guest made by
/// wit-component has a handful of each.
const INSTANCES_MAX: usize = 16;
const MEMORIES_MAX: usize = 4;
const TABLES_MAX: usize = 16;

impl ResourceLimiter for GuestLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // The limit is on all of the guest's memories together.
        let total = self.memory_bytes - current.min(self.memory_bytes) + desired;
        if total > self.memory_bytes_max {
            return Err(wasmtime::Error::msg(format!(
                "guest memory growing to {total} bytes exceeds its limit of {} bytes",
                self.memory_bytes_max
            )));
        }
        self.memory_bytes = total;
        Ok(true)
    }

    fn instances(&self) -> usize {
        INSTANCES_MAX
    }

    fn memories(&self) -> usize {
        MEMORIES_MAX
    }

    fn tables(&self) -> usize {
        TABLES_MAX
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements_max {
            return Err(wasmtime::Error::msg(format!(
                "guest table growing to {desired} elements exceeds its limit of {}",
                self.table_elements_max
            )));
        }
        Ok(true)
    }
}

/// A linker with the world's imports over [`WasmState`]: the generated ones, and
/// `delivery` by hand.
fn link_imports(engine: &Engine, fuel_per_op: u64) -> wasmtime::Result<Linker<WasmState>> {
    let mut linker = Linker::new(engine);
    types::add_to_linker::<WasmState, HasSelf<WasmState>>(&mut linker, |state| state)?;
    grid::add_to_linker::<WasmState, HasSelf<WasmState>>(&mut linker, |state| state)?;
    clock::add_to_linker::<WasmState, HasSelf<WasmState>>(&mut linker, |state| state)?;
    log::add_to_linker::<WasmState, HasSelf<WasmState>>(&mut linker, |state| state)?;
    let mut delivery = linker.instance(DELIVERY_INTERFACE)?;
    delivery.func_wrap(
        "due-timer",
        move |mut store: StoreContextMut<'_, WasmState>,
              (op, previous_reply): (u64, Option<WasmList<u8>>)| {
            let previous_reply = previous_reply.map(|reply| copied_out(&store, reply));
            let due = store
                .data_mut()
                .imports
                .due_timer(op, previous_reply)
                .map_err(trap)?;
            if due.began && fuel_per_op > 0 {
                store.set_fuel(fuel_per_op)?;
            }
            Ok((due.id,))
        },
    )?;
    delivery.func_wrap(
        "prefetched",
        |mut store: StoreContextMut<'_, WasmState>, (op,): (u64,)| {
            store.data_mut().imports.prefetched(op).map_err(trap)
        },
    )?;
    delivery.func_wrap(
        "committed",
        |mut store: StoreContextMut<'_, WasmState>, (op, reply): (u64, WasmList<u8>)| {
            let reply = copied_out(&store, reply);
            store.data_mut().imports.committed(op, reply).map_err(trap)
        },
    )?;
    Ok(linker)
}

/// A reply copied out of the guest's memory in one piece: wasmtime's lifting of a
/// `list<u8>` into a `Vec` moves it element by element (~8 bytes an instruction, against
/// memcpy's tens).
fn copied_out(store: &StoreContextMut<'_, WasmState>, reply: WasmList<u8>) -> Vec<u8> {
    reply.as_le_slice(store).to_vec()
}

impl Runtime {
    /// An engine configured for deterministic execution.
    pub fn new(limits: Limits) -> Result<Runtime> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        // Every source of nondeterminism wasm has, switched off (docs.wasmtime.dev,
        // "Deterministic Wasm Execution").
        config.cranelift_nan_canonicalization(true);
        // Threads are compiled out: this build of wasmtime has no `threads` feature.
        config.wasm_relaxed_simd(false);
        config.consume_fuel(limits.fuel_per_call > 0);
        // `CARAPACE_PERFMAP=1` names the guest's compiled functions for `perf report`
        // (a /tmp/perf-PID.map); it changes nothing the guest can observe.
        if std::env::var_os("CARAPACE_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        config.max_wasm_stack(limits.stack_bytes_max);
        config.epoch_interruption(limits.deadline_ms > 0);
        let engine =
            Engine::new(&config).map_err(|error| refused("configuring the engine", error))?;
        let linker = link_imports(&engine, limits.fuel_per_call)
            .map_err(|error| refused("linking the host imports", error))?;
        let clock_stop = (limits.deadline_ms > 0).then(|| start_epoch_clock(&engine));
        Ok(Runtime {
            engine,
            linker,
            limits,
            clock_stop,
        })
    }

    /// Compile `bytes` as a component and check that it imports nothing outside the
    /// world; the error ([`Error::Refused`]) names the first import that is.
    pub fn load(&self, bytes: &[u8]) -> Result<Component> {
        let component = Component::new(&self.engine, bytes)
            .map_err(|error| refused("compiling the component", error))?;
        self.check_imports(component)
    }

    /// The engine components are compiled for.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Refuse a component that imports anything outside the world, naming the import.
    pub(crate) fn check_imports(&self, component: Component) -> Result<Component> {
        let component_type = component.component_type();
        for (name, _) in component_type.imports(&self.engine) {
            if !WORLD_IMPORTS.contains(&name) {
                return Err(Error::Refused(format!(
                    "the component imports `{name}`, which is outside the `state-machine` world \
                     (allowed: {})",
                    WORLD_IMPORTS.join(", ")
                )));
            }
        }
        Ok(component)
    }

    /// Instantiate `component` over `context`.
    pub fn instantiate(&self, component: &Component, imports: HostImports) -> Result<WasmInstance> {
        let limiter = GuestLimiter {
            memory_bytes_max: self.limits.memory_bytes_max,
            memory_bytes: 0,
            table_elements_max: self.limits.table_elements_max,
        };
        let mut store = Store::new(&self.engine, WasmState { imports, limiter });
        store.limiter(|state| &mut state.limiter);
        if self.limits.fuel_per_call > 0 {
            store
                .set_fuel(self.limits.fuel_per_call)
                .map_err(|error| refused("fuelling the store", error))?;
        }
        if self.limits.deadline_ms > 0 {
            store.set_epoch_deadline(self.limits.deadline_ms.div_ceil(EPOCH_TICK_MS));
        }
        let instance = self
            .linker
            .instantiate(&mut store, component)
            .map_err(|error| refused("instantiating the component", error))?;
        let bindings = bindings::StateMachine::new(&mut store, &instance)
            .map_err(|error| refused("instantiating the component", error))?;
        let deliver = deliver_export(&mut store, &instance)
            .map_err(|error| refused("instantiating the component", error))?;
        Ok(WasmInstance {
            store,
            bindings,
            deliver,
            fuel_per_call: self.limits.fuel_per_call,
            deadline_ticks: self.limits.deadline_ms.div_ceil(EPOCH_TICK_MS),
        })
    }
}

/// One component instance in its own store.
pub struct WasmInstance {
    store: Store<WasmState>,
    bindings: bindings::StateMachine,
    /// The `deliver` export, called with requests lowered by [`requests`].
    deliver: wasmtime::component::Func,
    fuel_per_call: u64,
    /// Epoch ticks each export call may take (0: no deadline).
    deadline_ticks: u64,
}

impl std::fmt::Debug for WasmInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmInstance").finish_non_exhaustive()
    }
}

impl WasmInstance {
    /// The size the guest's linear memories have grown to together, in bytes. All of a guest's
    /// memory is allocated at init, so this must not change with the number of ops.
    pub fn memory_bytes(&self) -> usize {
        self.store.data().limiter.memory_bytes
    }

    /// Call one export, with a full tank of fuel unless it continues a step (a
    /// completion callback); a trap or a contract violation during the call becomes a
    /// [`Fault`].
    fn call<T>(
        &mut self,
        export: &str,
        call: impl FnOnce(&MachineExports, &mut Store<WasmState>) -> wasmtime::Result<T>,
    ) -> Result<T, Fault> {
        let continues_step = matches!(export, "read-done" | "write-done");
        if !continues_step && self.fuel_per_call > 0 {
            self.store
                .set_fuel(self.fuel_per_call)
                .map_err(|error| Fault::Trap(format!("{error:#}")))?;
        }
        if self.deadline_ticks > 0 {
            self.store.set_epoch_deadline(self.deadline_ticks);
        }
        let result = call(
            self.bindings.carapace_state_machine_machine(),
            &mut self.store,
        );
        if let Some(violation) = self.store.data_mut().imports.take_violation() {
            return Err(Fault::Violation(violation));
        }
        result.map_err(|error| {
            if error.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
                return Fault::Deadline(format!(
                    "`{export}` ran past its wall-clock deadline of {} ms",
                    self.deadline_ticks * EPOCH_TICK_MS
                ));
            }
            Fault::Trap(format!("{error:#}"))
        })
    }

    fn step(
        &mut self,
        export: &str,
        call: impl FnOnce(
            &MachineExports,
            &mut Store<WasmState>,
        ) -> wasmtime::Result<Result<types::Step, types::Failure>>,
    ) -> Result<Step, Fault> {
        match self.call(export, call)? {
            Ok(types::Step::Pending) => Ok(Step::Pending),
            Ok(types::Step::Done) => Ok(Step::Done),
            Err(failure) => Err(wasm_failure(failure)),
        }
    }
}

fn wasm_failure(failure: types::Failure) -> Fault {
    let (kind, message) = match failure {
        types::Failure::InvalidArgument(message) => (FailureKind::InvalidArgument, message),
        types::Failure::CorruptBlock(message) => (FailureKind::CorruptBlock, message),
        types::Failure::OutOfSpace(message) => (FailureKind::OutOfSpace, message),
        types::Failure::Protocol(message) => (FailureKind::Protocol, message),
    };
    Fault::Failure { kind, message }
}

/// The parameters of `machine.deliver`, and its results.
type DeliverParams<'a> = (&'a [requests::LoweredRequest], requests::LoweredBodies<'a>);
type DeliverResults = (Result<types::Step, types::Failure>,);

/// The `machine` interface's `deliver` export of `instance`.
fn deliver_export(
    store: &mut Store<WasmState>,
    instance: &wasmtime::component::Instance,
) -> wasmtime::Result<wasmtime::component::Func> {
    let machine = instance
        .get_export_index(&mut *store, None, MACHINE_EXPORT)
        .ok_or_else(|| wasmtime::format_err!("no `{MACHINE_EXPORT}` export"))?;
    let deliver = instance
        .get_export_index(&mut *store, Some(&machine), "deliver")
        .ok_or_else(|| wasmtime::format_err!("no `deliver` in `{MACHINE_EXPORT}`"))?;
    let func = instance
        .get_func(&mut *store, deliver)
        .ok_or_else(|| wasmtime::format_err!("`deliver` is not a function"))?;
    // Type-checked once, here: a component whose `deliver` differs is refused at
    // instantiation, as bindgen's exports are, and `deliver` calls it unchecked.
    func.typed::<DeliverParams<'_>, DeliverResults>(&*store)?;
    Ok(func)
}

impl Instance for WasmInstance {
    fn identify(&mut self) -> Result<Identity, Fault> {
        let identity = self.call("identify", |exports, store| exports.call_identify(store))?;
        Ok(Identity {
            name: identity.name,
            version: identity.version,
            state_format: identity.state_format,
        })
    }

    fn init(&mut self, options: &Options) -> Result<(), Fault> {
        let options = types::Options {
            batch_size_limit: options.batch_size_limit,
            reply_size_limit: options.reply_size_limit,
            checkpoint_interval_ops: options.checkpoint_interval_ops,
            block_size: options.block_size,
            block_count: options.block_count,
            settings: options.settings.clone(),
        };
        self.call("init", |exports, store| exports.call_init(store, &options))?
            .map_err(wasm_failure)
    }

    fn open(&mut self, checkpoint: Option<&[u8]>) -> Result<Step, Fault> {
        self.step("open", |exports, store| {
            exports.call_open(store, checkpoint)
        })
    }

    fn input_valid(&mut self, operation: u8, body: &[u8]) -> Result<Result<(), String>, Fault> {
        self.call("input-valid", |exports, store| {
            exports.call_input_valid(store, operation, body)
        })
    }

    fn deliver(&mut self, requests: &[Request]) -> Result<Step, Fault> {
        let headers: Vec<_> = requests
            .iter()
            .map(|request| {
                requests::LoweredRequest(types::Request {
                    client: types::U128 {
                        high: (request.client >> 64) as u64,
                        low: request.client as u64,
                    },
                    op: request.op,
                    timestamp: request.timestamp,
                    operation: request.operation,
                    body_size: request.body_size(),
                })
            })
            .collect();
        // The bodies cross into the guest in one piece: one allocation there, and each
        // copied once, from its request.
        let bodies = requests::LoweredBodies(requests);
        // SAFETY: `deliver_export` type-checked the function against these types when
        // the instance was made (as bindgen's exports are checked once, then called
        // unchecked); checking again would cost ~1,700 instructions a delivery.
        let deliver = unsafe {
            wasmtime::component::TypedFunc::<DeliverParams<'_>, DeliverResults>::new_unchecked(
                self.deliver,
            )
        };
        self.step("deliver", |_, store| {
            Ok(deliver.call(store, (&headers, bodies))?.0)
        })
    }

    fn checkpoint(&mut self, op: u64) -> Result<Step, Fault> {
        self.step("checkpoint", |exports, store| {
            exports.call_checkpoint(store, op)
        })
    }

    fn checkpoint_state(&mut self) -> Result<Vec<u8>, Fault> {
        self.call("checkpoint-state", |exports, store| {
            exports.call_checkpoint_state(store)
        })
    }

    fn read_done(&mut self, address: u64, block: &[u8]) -> Result<Step, Fault> {
        self.step("read-done", |exports, store| {
            exports.call_read_done(store, address, block)
        })
    }

    fn write_done(&mut self, address: u64) -> Result<Step, Fault> {
        self.step("write-done", |exports, store| {
            exports.call_write_done(store, address)
        })
    }

    fn describe(&mut self) -> Result<Vec<Statistic>, Fault> {
        let statistics = self.call("describe", |exports, store| exports.call_describe(store))?;
        Ok(statistics
            .into_iter()
            .map(|statistic| Statistic {
                name: statistic.name,
                values: statistic.values,
            })
            .collect())
    }

    fn with_imports_dyn(&mut self, action: &mut dyn FnMut(&mut HostImports)) {
        action(&mut self.store.data_mut().imports);
    }

    fn memory_bytes(&self) -> Option<usize> {
        Some(WasmInstance::memory_bytes(self))
    }
}

/// A component wasmtime will not take, or an engine it cannot make, as refused input.
fn refused(action: &str, error: wasmtime::Error) -> Error {
    Error::Refused(format!("{action}: {error:#}"))
}

/// A violation as the trap that ends the export call.
fn trap(violation: Violation) -> wasmtime::Error {
    wasmtime::Error::msg(violation.to_string())
}

impl types::Host for WasmState {}

impl grid::Host for WasmState {
    fn submit_read(&mut self, address: u64) -> wasmtime::Result<()> {
        self.imports.submit_read(address).map_err(trap)
    }

    fn submit_write(&mut self, address: u64, block: Vec<u8>) -> wasmtime::Result<()> {
        self.imports.submit_write(address, block).map_err(trap)
    }
}

impl clock::Host for WasmState {
    fn now(&mut self) -> wasmtime::Result<u64> {
        Ok(self.imports.now())
    }

    fn set_timer(&mut self, id: u64, at: u64) -> wasmtime::Result<()> {
        self.imports.set_timer(id, at).map_err(trap)
    }

    fn cancel_timer(&mut self, id: u64) -> wasmtime::Result<()> {
        self.imports.cancel_timer(id).map_err(trap)
    }
}

impl log::Host for WasmState {
    fn log(&mut self, level: types::Level, message: String) -> wasmtime::Result<()> {
        let level = match level {
            types::Level::Debug => Level::Debug,
            types::Level::Info => Level::Info,
            types::Level::Warn => Level::Warn,
            types::Level::Error => Level::Error,
        };
        self.imports.log(level, message);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machines::{ECHO_COMPONENT, default_options};
    use carapace_core::imports::IoOrder;
    use carapace_core::storage::MemoryStorage;

    /// The echo component, initialized: the adapter checks a delivery's bodies before
    /// the machine sees it, open or not.
    fn echo() -> WasmInstance {
        let runtime = Runtime::new(Limits::default()).unwrap();
        let component = runtime.load(ECHO_COMPONENT).unwrap();
        let options = default_options();
        let imports = HostImports::new(
            Box::new(MemoryStorage::new()),
            options.block_size,
            options.block_count,
            IoOrder::Fifo,
        );
        let mut instance = runtime.instantiate(&component, imports).unwrap();
        instance.init(&options).unwrap();
        instance
    }

    #[test]
    fn a_delivery_whose_body_sizes_do_not_add_up_is_the_machines_protocol_failure() {
        // The host's own `deliver` cannot send such a delivery: the export is called
        // by hand, as another host could.
        for (body_size, bodies) in [(8, &[0_u8; 3][..]), (2, &[0_u8; 3][..])] {
            let mut instance = echo();
            let request = types::Request {
                client: types::U128 { high: 0, low: 7 },
                op: 1,
                timestamp: 1,
                operation: 1,
                body_size,
            };
            let fault = instance
                .step("deliver", |exports, store| {
                    exports.call_deliver(store, &[request], bodies)
                })
                .unwrap_err();
            assert_eq!(
                fault,
                Fault::Failure {
                    kind: FailureKind::Protocol,
                    message: format!(
                        "a delivery's requests have bodies of {body_size} bytes in all, but \
                         it brought 3 bytes of bodies"
                    ),
                }
            );
        }
    }
}

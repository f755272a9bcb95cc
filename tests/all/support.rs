//! Shared set-up: the small test configuration and replicas over memory storage.

use carapace::Result;
use carapace::imports::{HostImports, IoOrder};
use carapace::native::NativeInstance;
use carapace::replica::{Checkpoint, Replica};
use carapace::storage::MemoryStorage;
use carapace::wasm::{Limits, Runtime, WasmInstance};
use carapace::{Instance, Options};

/// Small blocks, short bars and small levels (the echo machine's `test` profile), so
/// that tests exercise many levels and checkpoints fast.
pub const BLOCK_SIZE: u32 = 1024;
pub const BLOCK_COUNT: u64 = 1 << 14;
pub const BATCH_SIZE_LIMIT: u32 = 512;
pub const REPLY_SIZE_LIMIT: u32 = 4096;
pub const CHECKPOINT_INTERVAL_OPS: u64 = 16;

pub fn config() -> Options {
    config_with(&[])
}

pub fn config_with(settings: &[(&str, &str)]) -> Options {
    let mut all = vec![("lsm-profile".to_string(), "test".to_string())];
    all.extend(
        settings
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string())),
    );
    Options {
        batch_size_limit: BATCH_SIZE_LIMIT,
        reply_size_limit: REPLY_SIZE_LIMIT,
        checkpoint_interval_ops: CHECKPOINT_INTERVAL_OPS,
        block_size: BLOCK_SIZE,
        block_count: BLOCK_COUNT,
        settings: all,
    }
}

pub fn context(storage: &MemoryStorage, order: IoOrder) -> HostImports {
    HostImports::new(Box::new(storage.clone()), BLOCK_SIZE, BLOCK_COUNT, order)
}

pub fn wasm_machine_of(
    component: &[u8],
    storage: &MemoryStorage,
    order: IoOrder,
) -> Result<WasmInstance> {
    let runtime = Runtime::new(Limits::default())?;
    let component = runtime.load(component)?;
    runtime.instantiate(&component, context(storage, order))
}

pub fn wasm_machine(storage: &MemoryStorage, order: IoOrder) -> Result<WasmInstance> {
    wasm_machine_of(carapace::machines::ECHO_COMPONENT, storage, order)
}

pub fn wasm_replica(
    storage: &MemoryStorage,
    order: IoOrder,
    config: Options,
    checkpoint: Option<Checkpoint>,
) -> Result<Replica> {
    Replica::open(Box::new(wasm_machine(storage, order)?), config, checkpoint)
}

/// A native echo instance over `storage`.
pub fn native_echo(storage: &MemoryStorage, order: IoOrder) -> Box<dyn Instance> {
    Box::new(NativeInstance::<carapace_echo::Echo>::new(context(
        storage, order,
    )))
}

pub fn native_replica(
    storage: &MemoryStorage,
    order: IoOrder,
    config: Options,
    checkpoint: Option<Checkpoint>,
) -> Result<Replica> {
    Replica::open(native_echo(storage, order), config, checkpoint)
}

/// The reason of an [`carapace::Error::Refused`]; panics on any other error.
pub fn refused(error: carapace::Error) -> String {
    match error {
        carapace::Error::Refused(reason) => reason,
        error => panic!("expected a refusal, got {error}"),
    }
}

/// Where an [`carapace::Error::Guest`] happened (the step of a delivery it happened
/// in, or else the export) and its fault; panics on any other error.
pub fn guest_fault(error: carapace::Error) -> (&'static str, carapace::Fault) {
    match error {
        carapace::Error::Guest(guest) => (guest.step.unwrap_or(guest.export), guest.fault),
        error => panic!("expected a guest error, got {error}"),
    }
}

/// The message of a guest's `corrupt-block` failure; panics on any other error.
pub fn corrupt_block(error: carapace::Error) -> String {
    match guest_fault(error) {
        (
            _,
            carapace::Fault::Failure {
                kind: carapace::FailureKind::CorruptBlock,
                message,
            },
        ) => message,
        other => panic!("expected a corrupt block, got {other:?}"),
    }
}

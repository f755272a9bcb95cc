//! Shared set-up: the small test configuration and replicas over memory storage.

use anyhow::Result;
use carapace::context::{HostContext, IoOrder};
use carapace::machine::{NativeMachine, Options};
use carapace::replica::{Checkpoint, Replica, ReplicaConfig};
use carapace::storage::MemoryStorage;
use carapace::wasm::{Limits, Runtime, WasmMachine};

/// Small blocks, short bars and small levels (the echo machine's `test` profile), so
/// that tests exercise many levels and checkpoints fast.
pub const BLOCK_SIZE: u32 = 1024;
pub const BLOCK_COUNT: u64 = 1 << 14;
pub const BATCH_SIZE_LIMIT: u32 = 512;
pub const CHECKPOINT_INTERVAL_OPS: u64 = 16;

pub fn config() -> ReplicaConfig {
    config_with(&[])
}

pub fn config_with(settings: &[(&str, &str)]) -> ReplicaConfig {
    let mut all = vec![("lsm-profile".to_string(), "test".to_string())];
    all.extend(
        settings
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string())),
    );
    ReplicaConfig {
        options: Options {
            batch_size_limit: BATCH_SIZE_LIMIT,
            block_size: BLOCK_SIZE,
            block_count: BLOCK_COUNT,
            settings: all,
        },
        checkpoint_interval_ops: CHECKPOINT_INTERVAL_OPS,
    }
}

pub fn context(storage: &MemoryStorage, order: IoOrder) -> HostContext {
    HostContext::new(Box::new(storage.clone()), BLOCK_SIZE, BLOCK_COUNT, order)
}

pub fn wasm_machine(storage: &MemoryStorage, order: IoOrder) -> Result<WasmMachine> {
    let runtime = Runtime::new(Limits::default())?;
    let component = runtime.load(carapace::ECHO_COMPONENT)?;
    runtime.instantiate(&component, context(storage, order))
}

pub fn wasm_replica(
    storage: &MemoryStorage,
    order: IoOrder,
    config: ReplicaConfig,
    checkpoint: Option<Checkpoint>,
) -> Result<Replica<WasmMachine>> {
    Replica::open(wasm_machine(storage, order)?, config, checkpoint)
}

pub fn native_replica(
    storage: &MemoryStorage,
    order: IoOrder,
    config: ReplicaConfig,
    checkpoint: Option<Checkpoint>,
) -> Result<Replica<NativeMachine>> {
    Replica::open(
        NativeMachine::new(context(storage, order)),
        config,
        checkpoint,
    )
}

//! carapace: a deterministic, sandboxed state-machine runtime.
//!
//! The host loads a state machine compiled to a WebAssembly component ([`wasm`]),
//! provides its storage, clock and log ([`context`], [`storage`]), and drives it
//! through the lifecycle of the `state-machine` world ([`replica`]). [`machine`] is the
//! seam: the same lifecycle drives the component and, as a baseline, the echo guest
//! compiled natively.

pub mod cli;
pub mod context;
pub mod disk;
pub mod durable;
pub mod journal;
pub mod machine;
pub mod prng;
pub mod replica;
pub mod storage;
pub mod superblock;
pub mod wasm;
pub mod workload;

/// The echo state machine as a component, built from `guest/` by the build script.
pub const ECHO_COMPONENT: &[u8] = include_bytes!(env!("CARAPACE_ECHO_COMPONENT"));

/// Where the build script left a deliberately different version of the echo component
/// (replies grow by a byte from op 100 on), for tests of `carapace replay --module`.
pub const ECHO_DIVERGENT_COMPONENT_PATH: &str = env!("CARAPACE_ECHO_DIVERGENT_COMPONENT");

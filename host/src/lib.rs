//! carapace: a deterministic, sandboxed state-machine runtime.
//!
//! The host loads a state machine compiled to a WebAssembly component ([`wasm`]) and
//! drives it through the lifecycle of the `state-machine` world. Everything the host
//! decides lives in the pure core, `carapace-core`, re-exported here ([`replica`],
//! [`imports`], [`durable`], [`replay`], ...); this crate adds the wasmtime runtime,
//! the operating system's files ([`os`]), the machines it embeds ([`machines`]) and the
//! `carapace` command line ([`cli`]). With the `native` feature, [`native`] runs guest
//! cores compiled into the host, as the baseline the components are measured against.
//!
//! Embedding in a few lines (see `examples/embed.rs`):
//!
//! ```no_run
//! use carapace::imports::IoOrder;
//! use carapace::durable::Durable;
//! use carapace::wasm::{Limits, Runtime};
//!
//! # fn main() -> carapace::Result<()> {
//! let runtime = Runtime::new(Limits::default())?;
//! let component = runtime.load(carapace::machines::ECHO_COMPONENT)?;
//! let dir = carapace::os::open_data_dir("data".as_ref())?;
//! let options = carapace::machines::default_options();
//! let (mut durable, _) = Durable::open(dir, Some(options), IoOrder::Fifo, |imports| {
//!     Ok(Box::new(runtime.instantiate(&component, imports)?))
//! })?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub use carapace_core::{
    Error, FailureKind, Fault, GuestError, Identity, Instance, Options, Result, Statistic, Step,
    checksum, disk, durable, error, imports, instance, journal, prng, replay, replica, sim,
    storage, superblock, workload,
};

pub mod cache;
pub mod cli;
pub mod machines;
pub mod os;
#[cfg(feature = "peer")]
pub mod peer;
pub mod wasm;

#[cfg(feature = "native")]
pub use carapace_native as native;

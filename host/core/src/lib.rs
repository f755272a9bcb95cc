//! The pure host core of carapace: everything the host decides, with no wasmtime, no
//! OS file and no clock, so that the native host and the browser run the same code.
//!
//! - [`instance`]: [`Instance`](instance::Instance), a loaded machine as the host
//!   drives it (one method per export), and the contract's types on the host's side;
//! - [`imports`]: [`HostImports`](imports::HostImports), the host's side of the
//!   imports — grid I/O and its completion order, the logical clock, timers, the log;
//! - [`replica`]: the lifecycle (`init`, `open`, then deliveries of ops — each op's
//!   timers, prefetch, commit and compact — and checkpoints) over any instance;
//! - [`storage`] and [`disk`]: where blocks and files live (memory, a file, a
//!   simulated disk that crashes);
//! - [`journal`], [`superblock`], [`durable`]: the data directory and its commit
//!   protocol and recovery; [`replay`]: re-execution checked against a journal;
//! - [`workload`]: seeded workloads with reply checkers; [`prng`]: the host's PRNG;
//! - [`sim`]: deterministic simulation of a durable replica's life, faults and crashes
//!   included, judged by checkers;
//! - [`error`]: the host's typed errors.
//!
//! `cargo check --target wasm32-unknown-unknown -p carapace-core` proves that it needs
//! nothing but the standard library's portable parts.

#![warn(missing_docs)]

pub mod checksum;
pub mod disk;
pub mod durable;
pub mod error;
pub mod imports;
pub mod instance;
pub mod journal;
pub mod prng;
pub mod replay;
pub mod replica;
pub mod sim;
pub mod storage;
pub mod superblock;
pub mod workload;

pub use error::{Error, FailureKind, Fault, GuestError, Result};
pub use instance::{Identity, Instance, Options, Request, Statistic, Step};

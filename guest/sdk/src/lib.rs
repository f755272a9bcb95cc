//! The guest toolkit of carapace: what a state machine is, in plain Rust, and how it
//! becomes a component.
//!
//! - [`StateMachine`]: the exports of the `state-machine` world as a trait whose
//!   asynchronous steps are `async fn`s; [`Identity`] says which machine it is.
//! - [`Context`]: the machine's handle on its host (clock, timers, log, grid I/O),
//!   over an [`Imports`] implementation that each target provides.
//! - [`Runner`]: runs a [`StateMachine`] by the contract, one step at a time.
//! - `export!`: with the `component` feature, turns any [`StateMachine`] into the
//!   wit-bindgen adapter of a component, in one line;
//! - `testing::MemoryHost`: with the `testing` feature, an in-memory host for a
//!   machine's unit tests.
//!
//! A machine crate depends on this crate alone (and on a storage engine such as
//! `carapace-lsm`, if it wants one); its component crate is a `cdylib` whose whole
//! source is `carapace_sdk::export!(MyMachine);`. `docs/writing-a-machine.md` walks
//! through it.

#![warn(missing_docs)]

pub mod failure;
pub mod io;
pub mod machine;

#[cfg(feature = "component")]
pub mod component;

// A component's global allocator (tested natively).
#[cfg(any(test, all(feature = "component", target_arch = "wasm32")))]
mod pages;

#[cfg(feature = "testing")]
pub mod testing;

pub use failure::Failure;
pub use io::{Context, Imports, Level};
pub use machine::{
    Delivery, Identity, Options, Reply, Request, Runner, StateMachine, Statistic, Step,
};

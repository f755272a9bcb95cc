//! The storage engine of carapace guests: an LSM forest after TigerBeetle's, in plain
//! Rust with no bindings, that reads and writes its blocks only through the host's grid.
//!
//! - [`io`]: the host imports as a trait, and the routing of I/O completions;
//! - [`machine`]: the exports as a trait, and the driver that runs asynchronous steps;
//! - [`block`], [`grid`], [`cache`], [`free_set`], [`trailer`]: checksummed blocks, their
//!   cache and their placement;
//! - [`tree`]: memory table and on-disk tables of fixed-size values;
//! - [`checkpoint`]: the checkpoint state and how it is written and opened.

pub mod block;
pub mod cache;
pub mod checkpoint;
pub mod checksum;
pub mod failure;
pub mod free_set;
pub mod grid;
pub mod io;
pub mod machine;
pub mod trailer;
pub mod tree;

pub use failure::Failure;
pub use io::{Context, Host, Level};
pub use machine::{Driver, Options, StateMachine, Step};

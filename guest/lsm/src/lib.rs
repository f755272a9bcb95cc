//! The storage engine of carapace guests: an LSM forest after TigerBeetle's, in plain
//! Rust with no bindings, that reads and writes its blocks only through the host's grid.
//!
//! - [`io`]: the host imports as a trait, and the routing of I/O completions;
//! - [`machine`]: the exports as a trait, and the driver that runs asynchronous steps;
//! - [`block`], [`grid`], [`cache`], [`free_set`], [`trailer`]: checksummed blocks, their
//!   cache and their placement;
//! - [`table`], [`tree`], [`compaction`]: on-disk tables, trees of memory tables and
//!   levels, and the compactions that move values down the levels;
//! - [`manifest_log`]: the append-only log of table changes;
//! - [`forest`]: the trees of a machine, paced by op number, and checkpoints;
//! - [`checkpoint`]: the checkpoint state.

pub mod block;
pub mod cache;
pub mod checkpoint;
pub mod checksum;
pub mod compaction;
pub mod failure;
pub mod forest;
pub mod free_set;
pub mod grid;
pub mod groove;
pub mod io;
pub mod machine;
pub mod manifest_log;
pub mod table;
pub mod trailer;
pub mod tree;

pub use failure::Failure;
pub use io::{Context, Host, Level};
pub use machine::{Driver, Options, StateMachine, Step};

//! The storage engine of carapace guests: an LSM forest after TigerBeetle's, in plain
//! Rust with no bindings, that reads and writes its blocks only through the host's grid.
//!
//! - [`block`], [`grid`], [`cache`], [`free_set`], [`trailer`]: checksummed blocks, their
//!   cache and their placement;
//! - [`table`], [`tree`], [`compaction`]: on-disk tables, trees of memory tables and
//!   levels, and the compactions that move values down the levels;
//! - [`scan`]: bounded range scans of a tree, in key order;
//! - [`scrub`]: the grid scrubber, which re-reads and verifies tables' blocks on a timer;
//! - [`manifest_log`]: the append-only log of table changes;
//! - [`forest`]: the trees of a machine, paced by op number, and checkpoints;
//! - [`checkpoint`]: the checkpoint state.
//!
//! It is only the storage engine: what a state machine is, and how it reaches its host,
//! is `carapace-sdk`'s.

#![warn(missing_docs)]

pub mod block;
pub mod cache;
pub mod checkpoint;
pub mod checksum;
pub mod compaction;
pub mod forest;
pub mod free_set;
pub mod grid;
pub mod groove;
pub mod manifest_log;
pub mod scan;
pub mod scrub;
pub mod settings;
pub mod table;
pub mod trailer;
pub mod tree;

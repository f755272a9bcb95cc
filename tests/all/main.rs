//! One integration test binary, a module per topic.

mod support;

mod cli;
mod components;
mod determinism;
mod durability;
mod input;
mod model;
mod recovery;
mod replay;
mod storage;
mod timers;
mod workload;

//! One integration test binary, a module per topic.

mod support;

mod cache;
mod cli;
mod components;
mod contract;
mod delivery;
mod determinism;
mod durability;
mod fuzzing;
mod hostile;
mod input;
mod machines;
mod model;
mod recovery;
mod replay;
mod sim;
mod storage;
mod timers;
mod workload;

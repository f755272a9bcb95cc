//! Fuzz target: see `carapace_fuzzing::checkpoint_state`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| carapace_fuzzing::checkpoint_state(data));

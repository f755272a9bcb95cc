//! Fuzz target: see `carapace_fuzzing::block`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| carapace_fuzzing::block(data));

//! Fuzz target: see `carapace_fuzzing::request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| carapace_fuzzing::request(data));

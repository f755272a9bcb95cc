//! Fuzz target: see `carapace_fuzzing::journal`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| carapace_fuzzing::journal(data));

//! Fuzz target: see `carapace_fuzzing::superblock`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| carapace_fuzzing::superblock(data));

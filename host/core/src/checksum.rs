//! The host's checksum: XXH3-128, over journal entries, superblock copies and checkpoint
//! states (a checkpoint id is the checksum of its state). The same function guests use
//! for their blocks, chosen here on its own: the host depends on no guest crate.

/// The 128-bit checksum of `bytes`.
pub fn checksum(bytes: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(bytes)
}

//! The host's checksum: XXH3-128, over journal entries, superblock copies and checkpoint
//! states (a checkpoint id is the checksum of its state). The same function guests use
//! for their blocks, chosen here on its own: the host depends on no guest crate.

/// The 128-bit checksum of `bytes`.
pub fn checksum(bytes: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(bytes)
}

/// [`checksum`] over bytes that arrive in pieces: the same value as over their
/// concatenation.
#[derive(Clone, Default)]
pub struct Checksummer(xxhash_rust::xxh3::Xxh3);

impl std::fmt::Debug for Checksummer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checksummer").finish_non_exhaustive()
    }
}

impl Checksummer {
    /// Take in the next piece.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The checksum of every piece taken in.
    pub fn finish(&self) -> u128 {
        self.0.digest128()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_checksum_as_their_concatenation() {
        let bytes: Vec<u8> = (0..5000u32).map(|index| (index * 7) as u8).collect();
        let mut checksummer = Checksummer::default();
        for piece in bytes.chunks(333) {
            checksummer.update(piece);
        }
        assert_eq!(checksummer.finish(), checksum(&bytes));
    }
}

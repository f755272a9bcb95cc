//! The one checksum of the project: XXH3-128 over bytes.
//!
//! Every block, every reference to a block and every checkpoint state is named by this
//! checksum. It detects corruption and misdirected I/O; it is not a MAC against an
//! adversary, which the sandbox makes unnecessary (a guest only sees its own grid).

/// The 128-bit checksum of `bytes`.
pub fn checksum(bytes: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(bytes)
}

/// A streaming form of [`checksum`], for values made of several fields.
#[derive(Clone)]
pub struct Checksummer(xxhash_rust::xxh3::Xxh3);

impl std::fmt::Debug for Checksummer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Checksummer")
    }
}

impl Default for Checksummer {
    fn default() -> Self {
        Self::new()
    }
}

impl Checksummer {
    /// A checksummer over no bytes yet.
    pub fn new() -> Self {
        Self(xxhash_rust::xxh3::Xxh3::new())
    }

    /// Feed `bytes`.
    pub fn update(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update(bytes);
        self
    }

    /// The checksum of everything fed so far; equal to [`checksum`] of the concatenation.
    pub fn finish(&self) -> u128 {
        self.0.digest128()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_equals_one_shot() {
        let bytes: Vec<u8> = (0..=255).collect();
        let mut streaming = Checksummer::new();
        streaming.update(&bytes[..100]).update(&bytes[100..]);
        assert_eq!(streaming.finish(), checksum(&bytes));
    }

    #[test]
    fn known_value_is_stable() {
        // The checksum names blocks on disk: it must never change across versions.
        assert_eq!(checksum(b""), 0x99aa_06d3_0147_98d8_6001_c324_468d_497f);
    }
}

//! The value types of a groove's index trees, after TigerBeetle's: a unique key maps a
//! field to the object's timestamp; a composite key `(field, timestamp)` indexes a
//! field that many objects may share. Timestamps are below 2^63: bit 63 marks a
//! tombstone, as in TigerBeetle.

use crate::block;
use crate::table::Value;

/// The timestamp bit that marks a tombstone.
pub const TOMBSTONE_BIT: u64 = 1 << 63;

/// A unique index entry: `key -> timestamp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UniqueKey {
    /// The indexed field.
    pub key: u128,
    /// The object's timestamp (its key in the object tree), or a tombstone.
    pub timestamp: u64,
}

impl Value for UniqueKey {
    /// key (16), timestamp (8).
    const SIZE: usize = 24;

    fn key(&self) -> u128 {
        self.key
    }

    fn is_tombstone(&self) -> bool {
        self.timestamp & TOMBSTONE_BIT != 0
    }

    fn tombstone(key: u128) -> UniqueKey {
        UniqueKey {
            key,
            timestamp: TOMBSTONE_BIT,
        }
    }

    fn encode(&self, out: &mut [u8]) {
        out[0..16].copy_from_slice(&self.key.to_le_bytes());
        out[16..24].copy_from_slice(&self.timestamp.to_le_bytes());
    }

    fn decode(bytes: &[u8]) -> UniqueKey {
        UniqueKey {
            key: block::u128_at(bytes, 0),
            timestamp: block::u64_at(bytes, 16),
        }
    }
}

/// A composite index entry: the key is `field << 64 | timestamp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompositeKey {
    /// The indexed field.
    pub field: u64,
    /// The object's timestamp, with [`TOMBSTONE_BIT`] set for a tombstone.
    pub timestamp: u64,
}

impl Value for CompositeKey {
    /// field (8), timestamp (8).
    const SIZE: usize = 16;

    fn key(&self) -> u128 {
        (u128::from(self.field) << 64) | u128::from(self.timestamp & !TOMBSTONE_BIT)
    }

    fn is_tombstone(&self) -> bool {
        self.timestamp & TOMBSTONE_BIT != 0
    }

    fn tombstone(key: u128) -> CompositeKey {
        CompositeKey {
            field: (key >> 64) as u64,
            timestamp: key as u64 | TOMBSTONE_BIT,
        }
    }

    fn encode(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.field.to_le_bytes());
        out[8..16].copy_from_slice(&self.timestamp.to_le_bytes());
    }

    fn decode(bytes: &[u8]) -> CompositeKey {
        CompositeKey {
            field: block::u64_at(bytes, 0),
            timestamp: block::u64_at(bytes, 8),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tombstones_keep_their_key() {
        let unique = UniqueKey::tombstone(42);
        assert!(unique.is_tombstone());
        assert_eq!(unique.key(), 42);
        let composite = CompositeKey {
            field: 7,
            timestamp: 9,
        };
        let tombstone = CompositeKey::tombstone(composite.key());
        assert!(tombstone.is_tombstone() && !composite.is_tombstone());
        assert_eq!(tombstone.key(), composite.key());
        let mut bytes = [0; 16];
        tombstone.encode(&mut bytes);
        assert_eq!(CompositeKey::decode(&bytes), tombstone);
    }
}

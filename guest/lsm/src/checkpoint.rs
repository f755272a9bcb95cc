//! The checkpoint state: the small record that names a durable checkpoint.
//!
//! Layout (little-endian, 192 bytes; `docs/design.md` is normative):
//!
//! | offset | size | field                                                    |
//! |-------:|-----:|----------------------------------------------------------|
//! |      0 |    8 | magic `b"carapace"`                                      |
//! |      8 |    4 | format version: 3                                        |
//! |     12 |    4 | reserved, zero                                           |
//! |     16 |    8 | `op` the checkpoint is at                                |
//! |     24 |    8 | `block_count` of the grid                                |
//! |     32 |   32 | free set trailer: head (24), block count (4), size (4)   |
//! |     64 |   32 | immutable tables trailer: the same                       |
//! |     96 |   24 | manifest log: newest block reference                     |
//! |    120 |    4 | manifest log: block count                                |
//! |    124 |    4 | reserved, zero                                           |
//! |    128 |    8 | manifest log: next block sequence                        |
//! |    136 |   40 | reserved, zero                                           |
//! |    176 |   16 | checksum of bytes `[0, 176)`                             |

use crate::block;
use crate::checksum::checksum;
use crate::grid::BlockRef;
use crate::manifest_log::LogRef;
use crate::trailer::TrailerRef;
use carapace_sdk::Failure;

const MAGIC: &[u8; 8] = b"carapace";
const VERSION: u32 = 3;
const CHECKSUM_OFFSET: usize = 176;

/// The decoded checkpoint state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointState {
    /// The op the checkpoint is at: replay resumes at `op + 1`.
    pub op: u64,
    /// The grid's block count when written; a grid of another size cannot open it.
    pub block_count: u64,
    /// The free set image.
    pub free_set: TrailerRef,
    /// Every tree's immutable table (the last bar's values, not yet in tables).
    pub immutable: TrailerRef,
    /// The manifest log.
    pub manifest_log: LogRef,
}

impl CheckpointState {
    /// Encoded size in bytes.
    pub const SIZE: usize = 192;

    /// The encoded form.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![0; Self::SIZE];
        bytes[0..8].copy_from_slice(MAGIC);
        bytes[8..12].copy_from_slice(&VERSION.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.op.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.block_count.to_le_bytes());
        encode_trailer(&self.free_set, &mut bytes[32..64]);
        encode_trailer(&self.immutable, &mut bytes[64..96]);
        self.manifest_log.newest.encode(&mut bytes[96..120]);
        bytes[120..124].copy_from_slice(&self.manifest_log.block_count.to_le_bytes());
        bytes[128..136].copy_from_slice(&self.manifest_log.sequence_next.to_le_bytes());
        let checksum = checksum(&bytes[..CHECKSUM_OFFSET]);
        bytes[CHECKSUM_OFFSET..].copy_from_slice(&checksum.to_le_bytes());
        bytes
    }

    /// Decode, refusing anything that is not a state this code wrote.
    pub fn decode(bytes: &[u8]) -> Result<CheckpointState, Failure> {
        let invalid = |what: &str| Failure::InvalidArgument(format!("checkpoint state: {what}"));
        if bytes.len() != Self::SIZE {
            return Err(invalid(&format!(
                "{} bytes, expected {}",
                bytes.len(),
                Self::SIZE
            )));
        }
        if checksum(&bytes[..CHECKSUM_OFFSET]) != block::u128_at(bytes, CHECKSUM_OFFSET) {
            return Err(invalid("checksum mismatch"));
        }
        if &bytes[0..8] != MAGIC {
            return Err(invalid("bad magic"));
        }
        let version = block::u32_at(bytes, 8);
        if version != VERSION {
            return Err(invalid(&format!("unknown version {version}")));
        }
        Ok(CheckpointState {
            op: block::u64_at(bytes, 16),
            block_count: block::u64_at(bytes, 24),
            free_set: decode_trailer(&bytes[32..64]),
            immutable: decode_trailer(&bytes[64..96]),
            manifest_log: LogRef {
                newest: BlockRef::decode(&bytes[96..120]),
                block_count: block::u32_at(bytes, 120),
                sequence_next: block::u64_at(bytes, 128),
            },
        })
    }
}

fn encode_trailer(trailer: &TrailerRef, out: &mut [u8]) {
    trailer.head.encode(&mut out[0..24]);
    out[24..28].copy_from_slice(&trailer.block_count.to_le_bytes());
    out[28..32].copy_from_slice(&trailer.size.to_le_bytes());
}

fn decode_trailer(bytes: &[u8]) -> TrailerRef {
    TrailerRef {
        head: BlockRef::decode(&bytes[0..24]),
        block_count: block::u32_at(bytes, 24),
        size: block::u32_at(bytes, 28),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let state = CheckpointState {
            op: 64,
            block_count: 1024,
            free_set: TrailerRef {
                head: BlockRef {
                    address: 9,
                    checksum: 7,
                },
                block_count: 1,
                size: 128,
            },
            immutable: TrailerRef::default(),
            manifest_log: LogRef {
                newest: BlockRef {
                    address: 3,
                    checksum: 5,
                },
                block_count: 2,
                sequence_next: 4,
            },
        };
        let bytes = state.encode();
        assert_eq!(CheckpointState::decode(&bytes).unwrap(), state);
        for offset in [0, 16, 100, 180] {
            let mut damaged = bytes.clone();
            damaged[offset] ^= 1;
            assert!(
                CheckpointState::decode(&damaged).is_err(),
                "offset {offset}"
            );
        }
        assert!(CheckpointState::decode(&bytes[..100]).is_err());
    }
}

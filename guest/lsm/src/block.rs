//! The block format: a fixed-size block with a 64-byte header, a body, and zeroed padding.
//!
//! A block is named by `(address, checksum)`, where `checksum` is the header checksum;
//! since the header holds the body's checksum, the name covers every used byte. The
//! referrer (a parent block or the checkpoint state) stores the checksum, so a read that
//! returns another block, an older version of this one, or a damaged one is caught.
//!
//! Header layout (little-endian; `docs/design.md` is the normative copy):
//!
//! | offset | size | field                                             |
//! |-------:|-----:|---------------------------------------------------|
//! |      0 |   16 | `checksum`: of header bytes `[16, 64)`            |
//! |     16 |   16 | `checksum_body`: of bytes `[64, size)`            |
//! |     32 |    8 | `address` the block was written to                |
//! |     40 |    8 | `snapshot`: the op the block's contents belong to |
//! |     48 |    4 | `size`: header plus used body, in bytes           |
//! |     52 |    2 | `tree_id`, or 0 for blocks of no tree             |
//! |     54 |    1 | `block_type`                                      |
//! |     55 |    1 | `version` of this format: 1                       |
//! |     56 |    8 | reserved, zero                                    |

use crate::checksum::checksum;
use carapace_sdk::Failure;

/// Size of the block header in bytes.
pub const HEADER_SIZE: usize = 64;

/// The version of the block format written by this code.
pub const FORMAT_VERSION: u8 = 1;

/// The smallest block size the forest accepts: a header plus room for a useful body.
pub const BLOCK_SIZE_MIN: u32 = 512;

/// The largest block size: TigerBeetle's production block size. Larger blocks would make
/// every single-value read move more bytes than it is worth.
pub const BLOCK_SIZE_MAX: u32 = 512 * 1024;

/// What a block holds. The numbers are part of the disk format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum BlockType {
    /// A chunk of the encoded free set.
    FreeSet = 1,
    /// A chunk of the immutable memory tables a checkpoint carries.
    Immutable = 2,
    /// A chunk of the manifest: table infos.
    Manifest = 3,
    /// A table's index block: one entry per value block.
    Index = 4,
    /// A table's value block: sorted values.
    Value = 5,
}

impl BlockType {
    fn from_u8(byte: u8) -> Option<BlockType> {
        match byte {
            1 => Some(BlockType::FreeSet),
            2 => Some(BlockType::Immutable),
            3 => Some(BlockType::Manifest),
            4 => Some(BlockType::Index),
            5 => Some(BlockType::Value),
            _ => None,
        }
    }
}

/// The decoded header of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Checksum of header bytes `[16, 64)`: the block's name.
    pub checksum: u128,
    /// Checksum of body bytes `[64, size)`.
    pub checksum_body: u128,
    /// The address the block belongs at.
    pub address: u64,
    /// The op the contents belong to.
    pub snapshot: u64,
    /// Header plus used body, in bytes.
    pub size: u32,
    /// The tree the block belongs to, or 0.
    pub tree_id: u16,
    /// What the block holds.
    pub block_type: BlockType,
}

/// The fields a writer chooses; checksums and size are computed by [`seal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockInfo {
    /// The address the block will be written to.
    pub address: u64,
    /// The op the contents belong to.
    pub snapshot: u64,
    /// The tree the block belongs to, or 0.
    pub tree_id: u16,
    /// What the block holds.
    pub block_type: BlockType,
}

/// The body of `block` (everything after the header, padding included).
pub fn body(block: &[u8]) -> &[u8] {
    &block[HEADER_SIZE..]
}

/// The body of `block`, for writing.
pub fn body_mut(block: &mut [u8]) -> &mut [u8] {
    &mut block[HEADER_SIZE..]
}

/// Finish a block whose body holds `body_size` used bytes: zero the padding, write the
/// header and its checksums. Returns the block's checksum, which names it.
pub fn seal(block: &mut [u8], info: BlockInfo, body_size: usize) -> u128 {
    assert!(info.address > 0);
    assert!(block.len() >= BLOCK_SIZE_MIN as usize);
    assert!(HEADER_SIZE + body_size <= block.len());
    let size = HEADER_SIZE + body_size;
    block[size..].fill(0);
    let checksum_body = checksum(&block[HEADER_SIZE..size]);
    block[16..32].copy_from_slice(&checksum_body.to_le_bytes());
    block[32..40].copy_from_slice(&info.address.to_le_bytes());
    block[40..48].copy_from_slice(&info.snapshot.to_le_bytes());
    block[48..52].copy_from_slice(&(size as u32).to_le_bytes());
    block[52..54].copy_from_slice(&info.tree_id.to_le_bytes());
    block[54] = info.block_type as u8;
    block[55] = FORMAT_VERSION;
    block[56..64].fill(0);
    let header_checksum = checksum(&block[16..HEADER_SIZE]);
    block[0..16].copy_from_slice(&header_checksum.to_le_bytes());
    debug_assert!(verify(block, info.address, header_checksum, info.block_type).is_ok());
    header_checksum
}

/// Verify a block read from `address` against the checksum its referrer stored, and that
/// it holds `block_type`. Checks, in order: header checksum, format version, body
/// checksum, zero padding, address, type, expected checksum. Never returns data that
/// failed any check.
pub fn verify(
    block: &[u8],
    address: u64,
    expected_checksum: u128,
    block_type: BlockType,
) -> Result<Header, Failure> {
    let corrupt = |what: &str| {
        Failure::CorruptBlock(format!(
            "block at address {address} (expected {block_type:?} with checksum \
             {expected_checksum:032x}): {what}"
        ))
    };
    if block.len() < BLOCK_SIZE_MIN as usize {
        return Err(corrupt(&format!("read returned {} bytes", block.len())));
    }
    let checksum_header = u128_at(block, 0);
    if checksum(&block[16..HEADER_SIZE]) != checksum_header {
        return Err(corrupt("header checksum mismatch"));
    }
    if block[55] != FORMAT_VERSION {
        return Err(corrupt(&format!("unknown format version {}", block[55])));
    }
    let size = u32_at(block, 48) as usize;
    if !(HEADER_SIZE..=block.len()).contains(&size) {
        return Err(corrupt(&format!("size {size} out of range")));
    }
    let checksum_body = u128_at(block, 16);
    if checksum(&block[HEADER_SIZE..size]) != checksum_body {
        return Err(corrupt("body checksum mismatch"));
    }
    if block[size..].iter().any(|&byte| byte != 0) {
        return Err(corrupt("padding is not zero"));
    }
    let header = Header {
        checksum: checksum_header,
        checksum_body,
        address: u64_at(block, 32),
        snapshot: u64_at(block, 40),
        size: size as u32,
        tree_id: u16::from_le_bytes([block[52], block[53]]),
        block_type: BlockType::from_u8(block[54])
            .ok_or_else(|| corrupt(&format!("unknown block type {}", block[54])))?,
    };
    if header.address != address {
        return Err(corrupt(&format!(
            "misdirected: holds address {}",
            header.address
        )));
    }
    if header.checksum != expected_checksum {
        return Err(corrupt(&format!("holds checksum {:032x}", header.checksum)));
    }
    if header.block_type != block_type {
        return Err(corrupt(&format!("holds type {:?}", header.block_type)));
    }
    Ok(header)
}

/// Little-endian field readers. Callers have checked the bounds (slices panic otherwise,
/// which is a programming error, never an input error).
pub(crate) fn u16_at(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes(bytes[offset..offset + 2].try_into().unwrap())
}
pub(crate) fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap())
}
pub(crate) fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap())
}
pub(crate) fn u128_at(bytes: &[u8], offset: usize) -> u128 {
    u128::from_le_bytes(bytes[offset..offset + 16].try_into().unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed() -> (Vec<u8>, u128) {
        let mut block = vec![0xAA; 4096];
        body_mut(&mut block)[..5].copy_from_slice(b"hello");
        let info = BlockInfo {
            address: 7,
            snapshot: 3,
            tree_id: 2,
            block_type: BlockType::Value,
        };
        let checksum = seal(&mut block, info, 5);
        (block, checksum)
    }

    #[test]
    fn seal_then_verify_round_trips() {
        let (block, checksum) = sealed();
        let header = verify(&block, 7, checksum, BlockType::Value).unwrap();
        assert_eq!(header.size as usize, HEADER_SIZE + 5);
        assert_eq!((header.snapshot, header.tree_id), (3, 2));
        assert_eq!(&body(&block)[..5], b"hello");
        assert!(body(&block)[5..].iter().all(|&byte| byte == 0));
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let (block, checksum) = sealed();
        for offset in (0..block.len()).step_by(7) {
            let mut damaged = block.clone();
            damaged[offset] ^= 0x10;
            let error = verify(&damaged, 7, checksum, BlockType::Value).unwrap_err();
            assert!(matches!(error, Failure::CorruptBlock(_)));
            assert!(error.message().contains("address 7"), "{error}");
        }
    }

    #[test]
    fn misdirected_and_stale_blocks_are_detected() {
        let (block, checksum) = sealed();
        let error = verify(&block, 8, checksum, BlockType::Value).unwrap_err();
        assert!(error.message().contains("misdirected"), "{error}");
        let error = verify(&block, 7, checksum ^ 1, BlockType::Value).unwrap_err();
        assert!(error.message().contains("holds checksum"), "{error}");
        let error = verify(&block, 7, checksum, BlockType::Index).unwrap_err();
        assert!(error.message().contains("holds type"), "{error}");
        let error = verify(&vec![0; 4096], 7, checksum, BlockType::Value).unwrap_err();
        assert!(error.message().contains("header checksum"), "{error}");
    }
}

//! Trailers: a byte string of any length stored as a chain of blocks linked backwards,
//! each naming its predecessor by address and checksum. The checkpoint stores the free
//! set and the manifest this way and keeps only a reference to the newest block.
//!
//! Body of a trailer block: the previous block's [`BlockRef`] (24 bytes, zero for the
//! first), then up to `block_size - 88` bytes of the payload.

use crate::block::{self, BlockInfo, BlockType};
use crate::grid::{BlockRef, Grid};
use carapace_sdk::Failure;
use carapace_sdk::io::IO_IN_FLIGHT_MAX;

/// A stored trailer: its newest block and how many blocks it has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrailerRef {
    /// The newest block, or [`BlockRef::NONE`] for an empty trailer.
    pub head: BlockRef,
    /// Blocks in the chain.
    pub block_count: u32,
    /// Payload bytes in all.
    pub size: u32,
}

fn payload_size_max(grid: &Grid) -> usize {
    grid.body_size_max() - BlockRef::SIZE
}

/// Blocks a payload of `size` bytes occupies.
pub fn block_count_for(grid: &Grid, size: usize) -> usize {
    size.div_ceil(payload_size_max(grid))
}

/// Acquire the addresses of a chain for a payload of `size` bytes, lowest first.
pub fn acquire(grid: &mut Grid, size: usize) -> Result<Vec<u64>, Failure> {
    (0..block_count_for(grid, size))
        .map(|_| grid.free_set_mut().acquire())
        .collect()
}

/// Write `payload` as a chain of `block_type` blocks at `addresses` (from [`acquire`],
/// oldest block first). Writes go out in batches of at most [`IO_IN_FLIGHT_MAX`].
pub async fn write(
    grid: &Grid,
    addresses: &[u64],
    block_type: BlockType,
    snapshot: u64,
    payload: &[u8],
) -> TrailerRef {
    let chunks: Vec<&[u8]> = payload.chunks(payload_size_max(grid)).collect();
    assert_eq!(chunks.len(), addresses.len());
    let mut previous = BlockRef::NONE;
    let mut block = grid.new_block();
    for (batch, batch_addresses) in chunks
        .chunks(IO_IN_FLIGHT_MAX)
        .zip(addresses.chunks(IO_IN_FLIGHT_MAX))
    {
        let mut writes = Vec::with_capacity(batch.len());
        for (chunk, &address) in batch.iter().zip(batch_addresses) {
            let body = block::body_mut(&mut block);
            previous.encode(&mut body[..BlockRef::SIZE]);
            body[BlockRef::SIZE..BlockRef::SIZE + chunk.len()].copy_from_slice(chunk);
            let info = BlockInfo {
                address,
                snapshot,
                tree_id: 0,
                block_type,
            };
            let checksum = block::seal(&mut block, info, BlockRef::SIZE + chunk.len());
            writes.push(grid.write(address, &block));
            previous = BlockRef { address, checksum };
        }
        for write in writes {
            write.await;
        }
    }
    TrailerRef {
        head: previous,
        block_count: chunks.len() as u32,
        size: payload.len() as u32,
    }
}

/// Read a chain back: its payload and the addresses of its blocks, oldest first.
pub async fn read(
    grid: &Grid,
    trailer: TrailerRef,
    block_type: BlockType,
) -> Result<(Vec<u8>, Vec<u64>), Failure> {
    let expected_blocks = block_count_for(grid, trailer.size as usize);
    if expected_blocks != trailer.block_count as usize
        || trailer.head.is_none() != (expected_blocks == 0)
    {
        return Err(Failure::InvalidArgument(format!(
            "{block_type:?} trailer of {} bytes cannot span {} blocks",
            trailer.size, trailer.block_count
        )));
    }
    let mut chunks = Vec::with_capacity(expected_blocks);
    let mut addresses = Vec::with_capacity(expected_blocks);
    let mut reference = trailer.head;
    while !reference.is_none() {
        // The bound makes a cycle in damaged data an error rather than a hang.
        if chunks.len() == expected_blocks {
            return Err(Failure::CorruptBlock(format!(
                "{block_type:?} trailer at address {} is longer than {expected_blocks} blocks",
                reference.address
            )));
        }
        let block = grid.read(reference, block_type).await?;
        let size = block::u32_at(&block, 48) as usize;
        let body = &block[block::HEADER_SIZE..size];
        if body.len() < BlockRef::SIZE {
            return Err(Failure::CorruptBlock(format!(
                "{block_type:?} trailer block at address {} has no link",
                reference.address
            )));
        }
        addresses.push(reference.address);
        chunks.push(body[BlockRef::SIZE..].to_vec());
        reference = BlockRef::decode(body);
    }
    if chunks.len() != expected_blocks {
        return Err(Failure::CorruptBlock(format!(
            "{block_type:?} trailer ends after {} of {expected_blocks} blocks",
            chunks.len()
        )));
    }
    chunks.reverse();
    addresses.reverse();
    let payload = chunks.concat();
    if payload.len() != trailer.size as usize {
        return Err(Failure::CorruptBlock(format!(
            "{block_type:?} trailer holds {} bytes, its reference says {}",
            payload.len(),
            trailer.size
        )));
    }
    Ok((payload, addresses))
}

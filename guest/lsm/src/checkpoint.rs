//! Checkpoints: the manifest and the free set written as trailers, named by a small
//! checkpoint state that the host stores and hands back to `open`.
//!
//! Checkpoint state layout (little-endian, 128 bytes; `docs/design.md` is normative):
//!
//! | offset | size | field                                              |
//! |-------:|-----:|----------------------------------------------------|
//! |      0 |    8 | magic `b"carapace"`                                |
//! |      8 |    4 | format version: 1                                  |
//! |     12 |    4 | reserved, zero                                     |
//! |     16 |    8 | `op` the checkpoint is at                          |
//! |     24 |    8 | `block_count` of the grid                          |
//! |     32 |   32 | free set trailer: head (24), block count (4), size (4) |
//! |     64 |   32 | manifest trailer: head (24), block count (4), size (4) |
//! |     96 |   16 | reserved, zero                                     |
//! |    112 |   16 | checksum of bytes `[0, 112)`                       |
//!
//! Blocks released during a checkpoint interval stay allocated until the checkpoint
//! that ends the interval is durable (the contract: the host makes a checkpoint durable
//! before it starts another step), so the previous checkpoint stays readable until then.
//! The trailer blocks themselves are released as soon as they are written, and are
//! reused after the next checkpoint; `open` reproduces exactly that state.

use crate::block::{self, BlockType};
use crate::checksum::checksum;
use crate::failure::Failure;
use crate::free_set::FreeSet;
use crate::grid::{BlockRef, Grid};
use crate::trailer::{self, TrailerRef};
use crate::tree::TableInfo;

const MAGIC: &[u8; 8] = b"carapace";
const VERSION: u32 = 1;

/// The decoded checkpoint state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointState {
    /// The op the checkpoint is at: replay resumes at `op + 1`.
    pub op: u64,
    /// The grid's block count when written; a grid of another size cannot open it.
    pub block_count: u64,
    /// The free set image.
    pub free_set: TrailerRef,
    /// The table infos of every tree.
    pub manifest: TrailerRef,
}

impl CheckpointState {
    /// Encoded size in bytes.
    pub const SIZE: usize = 128;

    /// The encoded form.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = vec![0; Self::SIZE];
        bytes[0..8].copy_from_slice(MAGIC);
        bytes[8..12].copy_from_slice(&VERSION.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.op.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.block_count.to_le_bytes());
        encode_trailer(&self.free_set, &mut bytes[32..64]);
        encode_trailer(&self.manifest, &mut bytes[64..96]);
        let checksum = checksum(&bytes[..112]);
        bytes[112..128].copy_from_slice(&checksum.to_le_bytes());
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
        if checksum(&bytes[..112]) != block::u128_at(bytes, 112) {
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
            manifest: decode_trailer(&bytes[64..96]),
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

/// Write a checkpoint at `op` of `tables` (every tree's, in a fixed order) and return
/// its state. Blocks released before it are free once it returns.
pub async fn write(
    grid: &mut Grid,
    op: u64,
    tables: &[TableInfo],
) -> Result<CheckpointState, Failure> {
    let mut manifest = Vec::with_capacity(tables.len() * TableInfo::SIZE);
    for table in tables {
        let start = manifest.len();
        manifest.resize(start + TableInfo::SIZE, 0);
        table.encode(&mut manifest[start..]);
    }
    let manifest_addresses = trailer::acquire(grid, manifest.len())?;
    // The free set's own blocks are acquired before it is encoded, so its image
    // includes them; a reopened checkpoint finds them allocated, as here.
    let block_count = grid.free_set().block_count();
    let free_set_addresses = trailer::acquire(grid, FreeSet::encoded_size(block_count))?;
    let image = grid.free_set().encode();

    let manifest = trailer::write(
        grid,
        &manifest_addresses,
        BlockType::Manifest,
        op,
        &manifest,
    )
    .await;
    let free_set = trailer::write(grid, &free_set_addresses, BlockType::FreeSet, op, &image).await;

    let free_set_mut = grid.free_set_mut();
    free_set_mut.checkpoint_durable();
    for &address in manifest_addresses.iter().chain(&free_set_addresses) {
        free_set_mut.release(address);
    }
    Ok(CheckpointState {
        op,
        block_count,
        free_set,
        manifest,
    })
}

/// Open the checkpoint `bytes` names: restore the free set into `grid` and return the
/// state and the table infos, in the order they were written.
pub async fn open(
    grid: &mut Grid,
    bytes: &[u8],
) -> Result<(CheckpointState, Vec<TableInfo>), Failure> {
    let state = CheckpointState::decode(bytes)?;
    let block_count = grid.free_set().block_count();
    if state.block_count != block_count {
        return Err(Failure::InvalidArgument(format!(
            "checkpoint state is for a grid of {} blocks, this grid has {block_count}",
            state.block_count
        )));
    }
    let (image, free_set_addresses) =
        trailer::read(grid, state.free_set, BlockType::FreeSet).await?;
    let mut free_set = FreeSet::decode(block_count, &image)?;
    let (manifest, manifest_addresses) =
        trailer::read(grid, state.manifest, BlockType::Manifest).await?;
    if manifest.len() % TableInfo::SIZE != 0 {
        return Err(Failure::CorruptBlock(format!(
            "manifest at address {} holds {} bytes, not a whole number of tables",
            state.manifest.head.address,
            manifest.len()
        )));
    }
    let tables: Vec<TableInfo> = manifest
        .chunks_exact(TableInfo::SIZE)
        .map(TableInfo::decode)
        .collect();
    for &address in manifest_addresses.iter().chain(&free_set_addresses) {
        if !free_set.is_acquired(address) {
            return Err(Failure::CorruptBlock(format!(
                "checkpoint trailer block at address {address} is free in its own free set"
            )));
        }
        free_set.release(address);
    }
    grid.set_free_set(free_set);
    Ok((state, tables))
}

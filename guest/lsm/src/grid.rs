//! The grid client: verified block reads and writes over the host's block I/O, and the
//! free set that places new blocks.

use std::cell::{Cell, RefCell};

use crate::block::{self, BLOCK_SIZE_MAX, BLOCK_SIZE_MIN, BlockType};
use crate::cache::BlockCache;
use crate::free_set::FreeSet;
use carapace_sdk::io::{Context, WriteBlock};
use carapace_sdk::{Failure, Level};

/// A reference to a block by the name its referrer stores: address and checksum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlockRef {
    /// The block's address; 0 means "no block".
    pub address: u64,
    /// The block's header checksum.
    pub checksum: u128,
}

impl BlockRef {
    /// The reference to no block.
    pub const NONE: BlockRef = BlockRef {
        address: 0,
        checksum: 0,
    };

    /// Whether this refers to no block.
    pub fn is_none(&self) -> bool {
        self.address == 0
    }

    /// Bytes in the encoded form: address (8) then checksum (16), little-endian.
    pub const SIZE: usize = 24;

    /// Write the encoded form into `out[..24]`.
    pub fn encode(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.address.to_le_bytes());
        out[8..24].copy_from_slice(&self.checksum.to_le_bytes());
    }

    /// Read the encoded form from `bytes[..24]`.
    pub fn decode(bytes: &[u8]) -> BlockRef {
        BlockRef {
            address: block::u64_at(bytes, 0),
            checksum: block::u128_at(bytes, 8),
        }
    }
}

/// Block I/O with verification, a block cache, and block placement.
#[derive(Debug)]
pub struct Grid {
    context: Context,
    block_size: usize,
    free_set: FreeSet,
    /// Interior mutability: reads take `&self` so that a tree can read while the
    /// machine holds other borrows; the guest is single-threaded.
    cache: RefCell<BlockCache>,
    /// Reads that failed verification and verified when read again: a fault between
    /// the disk and the guest (a flipped bit in transit, a misdirected read), not in
    /// the stored block.
    reads_repaired: Cell<u64>,
}

/// The largest grid a forest tracks: its free set takes a bit per block in memory
/// (128 MiB at this bound: a grid of 4 TiB in 4 KiB blocks).
pub const BLOCK_COUNT_MAX: u64 = 1 << 30;

/// The largest block cache, in bytes: a quarter of the 1 GiB a host gives a guest, so
/// that the cache can never take the memory the trees need.
pub const CACHE_BYTES_MAX: u64 = 256 << 20;

impl Grid {
    /// A grid of `block_count` blocks of `block_size` bytes, all free, with a cache of
    /// `cache_blocks` blocks.
    pub fn new(
        context: Context,
        block_size: u32,
        block_count: u64,
        cache_blocks: usize,
    ) -> Result<Grid, Failure> {
        if !block_size.is_power_of_two() || !(BLOCK_SIZE_MIN..=BLOCK_SIZE_MAX).contains(&block_size)
        {
            return Err(Failure::InvalidArgument(format!(
                "block size {block_size} is not a power of two in \
                 {BLOCK_SIZE_MIN}..={BLOCK_SIZE_MAX}"
            )));
        }
        if !(1..=BLOCK_COUNT_MAX).contains(&block_count) {
            return Err(Failure::InvalidArgument(format!(
                "a grid of {block_count} blocks is not in 1..={BLOCK_COUNT_MAX}, the blocks \
                 the free set tracks in memory"
            )));
        }
        // In u64, so that a 32-bit guest and a 64-bit native build refuse the same
        // options with the same message rather than wrapping.
        let cache_bytes = (cache_blocks as u64).checked_mul(u64::from(block_size));
        if cache_bytes.is_none_or(|bytes| bytes > CACHE_BYTES_MAX) {
            return Err(Failure::InvalidArgument(format!(
                "a grid cache of {cache_blocks} blocks of {block_size} bytes is over \
                 {CACHE_BYTES_MAX} bytes"
            )));
        }
        Ok(Grid {
            context,
            block_size: block_size as usize,
            free_set: FreeSet::new(block_count),
            cache: RefCell::new(BlockCache::new(block_size as usize, cache_blocks)),
            reads_repaired: Cell::new(0),
        })
    }

    /// The size of every block, in bytes.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// The body capacity of a block, in bytes.
    pub fn body_size_max(&self) -> usize {
        self.block_size - block::HEADER_SIZE
    }

    /// The free set.
    pub fn free_set(&self) -> &FreeSet {
        &self.free_set
    }

    /// The free set, to acquire and release blocks.
    pub fn free_set_mut(&mut self) -> &mut FreeSet {
        &mut self.free_set
    }

    /// Replace the free set (when opening a checkpoint).
    pub fn set_free_set(&mut self, free_set: FreeSet) {
        assert_eq!(free_set.block_count(), self.free_set.block_count());
        self.free_set = free_set;
    }

    /// A zeroed block buffer.
    pub fn new_block(&self) -> Vec<u8> {
        vec![0; self.block_size]
    }

    /// Read the block `reference` names and verify it holds `block_type`; a block that
    /// fails verification is an error naming its address, never data.
    pub async fn read(
        &self,
        reference: BlockRef,
        block_type: BlockType,
    ) -> Result<Vec<u8>, Failure> {
        match self.with_cached(reference, block_type, <[u8]>::to_vec)? {
            Some(block) => Ok(block),
            None => self.read_uncached(reference, block_type).await,
        }
    }

    /// [`Grid::read`] into a buffer the caller owns (one allocated at init), so that
    /// long-lived readers keep no allocation of their own per read; a cache hit is
    /// copied once, straight from the cache.
    pub async fn read_into(
        &self,
        reference: BlockRef,
        block_type: BlockType,
        out: &mut [u8],
    ) -> Result<(), Failure> {
        assert_eq!(out.len(), self.block_size);
        if self
            .with_cached(reference, block_type, |block| out.copy_from_slice(block))?
            .is_none()
        {
            let block = self.read_uncached(reference, block_type).await?;
            out.copy_from_slice(&block);
        }
        Ok(())
    }

    /// Run `visit` on the cached block `reference` names, if the cache holds that very
    /// block. Cached blocks were verified when read or sealed when written, so comparing
    /// the header's name, address and type with the reference is enough; a block since
    /// rewritten at the same address is a miss.
    fn with_cached<R>(
        &self,
        reference: BlockRef,
        block_type: BlockType,
        visit: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>, Failure> {
        assert!(!reference.is_none());
        if reference.address > self.free_set.block_count() {
            return Err(Failure::CorruptBlock(format!(
                "reference to address {} outside the grid of {} blocks",
                reference.address,
                self.free_set.block_count()
            )));
        }
        let mut cache = self.cache.borrow_mut();
        let Some(block) = cache.get(reference.address) else {
            return Ok(None);
        };
        let is_same_block = block::u128_at(block, 0) == reference.checksum
            && block::u64_at(block, 32) == reference.address
            && block[54] == block_type as u8;
        Ok(is_same_block.then(|| visit(block)))
    }

    /// Read from the host, verify, and cache.
    async fn read_uncached(
        &self,
        reference: BlockRef,
        block_type: BlockType,
    ) -> Result<Vec<u8>, Failure> {
        let block = self.read_stored(reference, block_type).await?;
        self.cache.borrow_mut().insert(reference.address, &block);
        Ok(block)
    }

    /// Read the block `reference` names from the host, past the cache, and verify it;
    /// nothing is cached. The scrubber's read: it checks the disk, not the cache.
    pub async fn read_stored(
        &self,
        reference: BlockRef,
        block_type: BlockType,
    ) -> Result<Vec<u8>, Failure> {
        let first = self.read_and_verify(reference, block_type).await?;
        let Err(failure) = first else {
            return first;
        };
        // Once more: a fault on the way (a flipped bit, a misdirected read) passes;
        // a damaged block fails again, and that failure names the address. One
        // replica has no second copy to repair the block from.
        let second = self.read_and_verify(reference, block_type).await?;
        if second.is_ok() {
            self.reads_repaired.set(self.reads_repaired.get() + 1);
            self.context.log(
                Level::Warn,
                &format!("a read failed verification and the next read verified: {failure}"),
            );
        }
        second
    }

    /// One read of `reference` from the host: a block of the wrong size breaks the
    /// contract (the outer error); one that fails verification is the inner error.
    async fn read_and_verify(
        &self,
        reference: BlockRef,
        block_type: BlockType,
    ) -> Result<Result<Vec<u8>, Failure>, Failure> {
        let block = self.context.read(reference.address).await;
        if block.len() != self.block_size {
            return Err(Failure::Protocol(format!(
                "read of address {} returned {} bytes, not one block of {}",
                reference.address,
                block.len(),
                self.block_size
            )));
        }
        Ok(block::verify(&block, reference.address, reference.checksum, block_type).map(|_| block))
    }

    /// Reads that failed verification once and verified when read again.
    pub fn reads_repaired(&self) -> u64 {
        self.reads_repaired.get()
    }

    /// The host this grid reads and writes through.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// Submit the write of a sealed block; await the result to know it is done.
    pub fn write(&self, address: u64, block: &[u8]) -> WriteBlock {
        assert_eq!(block.len(), self.block_size);
        assert!(self.free_set.is_acquired(address));
        self.cache.borrow_mut().insert(address, block);
        self.context.write(address, block)
    }
}

//! The block cache: set-associative, CLOCK replacement, keyed by address, with all of its
//! memory allocated at init. Its blocks' memory is reserved then, and written only as
//! ways are first used: a machine that opens does not pay for touching megabytes of
//! cache it has not filled yet (in wasm, zeroing them was most of `init`).
//!
//! A hit is only as good as its checksum: the grid checks that the cached block's header
//! names the checksum its referrer expects before using it (a block rewritten at the
//! same address after a checkpoint is a different block). Replacement depends only on
//! the sequence of lookups and inserts, so it is deterministic.

/// Ways per set, at most: TigerBeetle's grid cache is 16-way set-associative.
pub const WAYS_MAX: usize = 16;

/// Address 0 is never a block, so it marks an empty way.
const EMPTY: u64 = 0;

/// A bounded cache of whole blocks.
#[derive(Debug)]
pub struct BlockCache {
    block_size: usize,
    ways: usize,
    sets: usize,
    /// The address in each way, or [`EMPTY`].
    tags: Vec<u64>,
    /// CLOCK reference bits, one per way: set on use, cleared as the hand passes.
    referenced: Vec<bool>,
    /// The CLOCK hand of each set.
    hands: Vec<u8>,
    /// Where each way's block sits in `blocks`, once the way has held one.
    slots: Vec<u32>,
    /// The blocks of the ways used so far, in the order they were first used; its
    /// capacity (`ways * sets` blocks) is reserved at init.
    blocks: Vec<u8>,
}

/// `hash`'s high 32 bits, its best mixed, scaled from `0..2^32` down to `0..range`
/// (Lemire's fast range reduction) in one 64-bit product: a 128-bit one is a call to
/// `__multi3` of ~100 instructions in wasm, and LLVM turns one assembled from 32-bit
/// halves back into that call.
fn scale_to(hash: u64, range: u32) -> u64 {
    ((hash >> 32) * u64::from(range)) >> 32
}

/// A way that has not held a block yet.
const NO_SLOT: u32 = u32::MAX;

impl BlockCache {
    /// A cache of at most `capacity_blocks` blocks (rounded down to whole sets; zero
    /// disables it).
    ///
    /// # Panics
    ///
    /// If that is 2^32 sets or more.
    pub fn new(block_size: usize, capacity_blocks: usize) -> BlockCache {
        let ways = capacity_blocks.clamp(1, WAYS_MAX);
        let sets = capacity_blocks / ways;
        assert!(u32::try_from(sets).is_ok(), "a cache of under 2^32 sets");
        BlockCache {
            block_size,
            ways,
            sets,
            tags: vec![EMPTY; ways * sets],
            referenced: vec![false; ways * sets],
            hands: vec![0; sets],
            slots: vec![NO_SLOT; ways * sets],
            blocks: Vec::with_capacity(ways * sets * block_size),
        }
    }

    /// Blocks the cache holds at most.
    pub fn capacity(&self) -> usize {
        self.ways * self.sets
    }

    fn set_of(&self, address: u64) -> usize {
        // Fibonacci hashing spreads consecutive addresses over the sets.
        let hash = address.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        scale_to(hash, self.sets as u32) as usize
    }

    fn find(&self, address: u64) -> Option<usize> {
        if self.sets == 0 {
            return None;
        }
        let first = self.set_of(address) * self.ways;
        (first..first + self.ways).find(|&way| self.tags[way] == address)
    }

    fn block(&self, way: usize) -> &[u8] {
        let start = self.slots[way] as usize * self.block_size;
        &self.blocks[start..start + self.block_size]
    }

    /// The cached block at `address`, marked recently used.
    pub fn get(&mut self, address: u64) -> Option<&[u8]> {
        assert_ne!(address, EMPTY);
        let way = self.find(address)?;
        self.referenced[way] = true;
        Some(self.block(way))
    }

    /// Cache `block` at `address`, replacing an older copy or evicting by CLOCK.
    pub fn insert(&mut self, address: u64, block: &[u8]) {
        assert_ne!(address, EMPTY);
        assert_eq!(block.len(), self.block_size);
        if self.sets == 0 {
            return;
        }
        let way = match self.find(address) {
            Some(way) => way,
            None => self.evict(self.set_of(address)),
        };
        self.tags[way] = address;
        self.referenced[way] = false;
        if self.slots[way] == NO_SLOT {
            self.slots[way] = (self.blocks.len() / self.block_size) as u32;
            // Within the capacity reserved at init: no allocation.
            assert!(self.blocks.len() + self.block_size <= self.blocks.capacity());
            self.blocks.extend_from_slice(block);
        } else {
            let start = self.slots[way] as usize * self.block_size;
            self.blocks[start..start + self.block_size].copy_from_slice(block);
        }
    }

    /// Forget the block at `address`, if cached.
    pub fn remove(&mut self, address: u64) {
        if let Some(way) = self.find(address) {
            self.tags[way] = EMPTY;
            self.referenced[way] = false;
        }
    }

    /// The way to reuse in `set`: an empty one, or the first unreferenced one the hand
    /// reaches, clearing reference bits as it passes (at most two turns).
    fn evict(&mut self, set: usize) -> usize {
        let first = set * self.ways;
        if let Some(way) = (first..first + self.ways).find(|&way| self.tags[way] == EMPTY) {
            return way;
        }
        loop {
            let way = first + usize::from(self.hands[set]);
            self.hands[set] = ((usize::from(self.hands[set]) + 1) % self.ways) as u8;
            if !self.referenced[way] {
                return way;
            }
            self.referenced[way] = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(fill: u8) -> Vec<u8> {
        vec![fill; 64]
    }

    #[test]
    fn scale_to_maps_the_high_half_onto_the_range_in_order() {
        let mut prng = carapace_sdk::testing::SplitMix64::new(7);
        for _ in 0..10_000 {
            let (hash, range) = (prng.next_u64(), (prng.next_u64() as u32).max(1));
            for range in [range, u32::MAX, 1] {
                let expected = (u128::from(hash >> 32) * u128::from(range)) >> 32;
                assert_eq!(u128::from(scale_to(hash, range)), expected);
                assert!(scale_to(hash, range) < u64::from(range));
            }
        }
        assert_eq!(scale_to(u64::MAX, 16), 15);
        assert_eq!(scale_to((1 << 32) - 1, 16), 0);
        assert_eq!(scale_to(1 << 63, 16), 8);
    }

    #[test]
    fn block_memory_is_written_as_ways_are_first_used_and_never_reallocated() {
        let mut cache = BlockCache::new(64, 32);
        let reserved = cache.blocks.as_ptr();
        assert!(cache.blocks.is_empty() && cache.blocks.capacity() >= 32 * 64);
        for round in 0..3u8 {
            for address in 1..=200 {
                cache.insert(address, &block(address as u8 ^ round));
                assert_eq!(cache.get(address), Some(&block(address as u8 ^ round)[..]));
            }
        }
        // Every way was used, each once given its slot; the buffer never moved.
        assert_eq!(cache.blocks.len(), 32 * 64);
        assert_eq!(cache.blocks.as_ptr(), reserved);
    }

    #[test]
    fn holds_what_fits_and_finds_it() {
        let mut cache = BlockCache::new(64, 32);
        assert_eq!(cache.capacity(), 32);
        cache.insert(5, &block(5));
        cache.insert(6, &block(6));
        assert_eq!(cache.get(5), Some(&block(5)[..]));
        cache.insert(5, &block(9));
        assert_eq!(cache.get(5), Some(&block(9)[..]));
        cache.remove(5);
        assert_eq!(cache.get(5), None);
        assert_eq!(cache.get(7), None);
    }

    #[test]
    fn never_holds_more_than_its_capacity_and_keeps_referenced_blocks() {
        let mut cache = BlockCache::new(64, 16);
        for address in 1..=16 {
            cache.insert(address, &block(address as u8));
        }
        // One set of 16 ways: every block fits; touch block 1, then overflow by one.
        assert!((1..=16).all(|address| cache.get(address).is_some()));
        for address in 2..=16 {
            cache.remove(address);
            cache.insert(address, &block(address as u8));
        }
        assert!(cache.get(1).is_some());
        cache.insert(17, &block(17));
        assert!(
            cache.get(1).is_some(),
            "a referenced block gets a second chance"
        );
        assert_eq!(
            (1..=17)
                .filter(|&address| cache.get(address).is_some())
                .count(),
            16
        );
    }

    #[test]
    fn a_zero_capacity_cache_holds_nothing() {
        let mut cache = BlockCache::new(64, 0);
        cache.insert(1, &block(1));
        assert_eq!(cache.get(1), None);
        assert_eq!(cache.capacity(), 0);
    }
}

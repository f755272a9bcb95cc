//! Range scans: the live values of a key range in ascending key order, as lookups at a
//! snapshot see them, and the buffer they work in.
//!
//! A scan ([`Tree::scan`]) merges `2 + levels` sorted sources, newest first: the mutable
//! memory table, the immutable one, then one level cursor per level. Each step takes
//! the smallest key at the head of any source; the newest source holding it decides (a
//! value is returned, a tombstone hides the key) and every source holding it moves past
//! it. Precedence and visibility are exactly [`Tree::get`]'s: memory first, then level 0
//! downwards, and within a level only the tables visible at the snapshot count. Tables of
//! one level are disjoint, so each level is one sorted run.
//!
//! Work is bounded by what the scan passes, never by the size of the tree:
//! - a level cursor finds its start by binary searches (the level's tables by key range,
//!   the index entries of one table, the values of one block) and stops at the first
//!   table or value block that starts past `key_max`;
//! - it reads a block only when the merge reaches it, so each level reads the blocks
//!   holding the keys it passes, the index block of each table it enters, and at most
//!   one block whose keys all lie past the range;
//! - a scan returning `limit` values takes at most `limit + hidden` steps of `2 + levels`
//!   comparisons each, where `hidden` counts the keys in the range whose newest version
//!   is a tombstone that the scan passes on its way. Tombstones are the one cost a scan
//!   cannot bound by its limit (TigerBeetle's scans share it); compaction drops them
//!   once nothing deeper holds their key.
//!
//! The mutable table is in arrival order, not sorted, so a scan sorts the keys of the
//! range it holds into [`ScanBuffer`]'s memory buffer: one bar's updates at most.
//!
//! [`Tree::scan`]: crate::tree::Tree::scan
//! [`Tree::get`]: crate::tree::Tree::get

use crate::block::{BlockType, HEADER_SIZE};
use crate::grid::Grid;
use crate::table::{self, IndexEntry, Layout};
use crate::tree::Table;
use carapace_sdk::Failure;

/// What a scan works in, allocated at init: one cursor (an index block and a value block)
/// per level, and room for the keys of a full mutable table. A forest owns one and lends
/// it to one scan at a time.
#[derive(Debug)]
pub struct ScanBuffer {
    /// `(key, position)` of the mutable table's values in the scanned range, sorted: the
    /// last entry of a key's run is its newest value, as positions follow arrival order.
    pub(crate) memory: Vec<(u128, u32)>,
    /// One cursor per level.
    pub(crate) levels: Vec<LevelCursor>,
}

impl ScanBuffer {
    /// A buffer for scans of trees of at most `levels` levels whose mutable tables hold at
    /// most `memory_values_max` values, over `grid`'s blocks.
    pub fn new(grid: &Grid, levels: u8, memory_values_max: usize) -> ScanBuffer {
        ScanBuffer {
            memory: Vec::with_capacity(memory_values_max),
            levels: (0..levels).map(|_| LevelCursor::new(grid)).collect(),
        }
    }

    /// Levels this buffer has cursors for.
    pub fn level_count(&self) -> usize {
        self.levels.len()
    }

    /// Values of a mutable table this buffer can sort.
    pub fn memory_values_max(&self) -> usize {
        self.memory.capacity()
    }
}

/// Reads one level's values in a key range, in key order, one block at a time: the
/// level's visible tables, each table's index entries, each entry's value block.
#[derive(Debug)]
pub(crate) struct LevelCursor {
    /// The position, among the level's tables, of the next table to enter.
    table_next: usize,
    /// The index block of the table entered last.
    index_block: Vec<u8>,
    /// Entries in `index_block`; 0 before the first table is entered.
    entry_count: usize,
    /// The next entry whose value block to read.
    entry_next: usize,
    /// The value block read last.
    value_block: Vec<u8>,
    /// Its address, for messages.
    value_block_address: u64,
    /// Values in `value_block`; 0 before the first block is read.
    value_count: usize,
    /// The current value's position in `value_block`; `value_count` once it is used up.
    value: usize,
    /// The key of the last value passed, to check that keys strictly increase.
    key_last: Option<u128>,
    /// No value of the level is left in the range.
    exhausted: bool,
}

impl LevelCursor {
    fn new(grid: &Grid) -> LevelCursor {
        LevelCursor {
            table_next: 0,
            index_block: grid.new_block(),
            entry_count: 0,
            entry_next: 0,
            value_block: grid.new_block(),
            value_block_address: 0,
            value_count: 0,
            value: 0,
            key_last: None,
            exhausted: true,
        }
    }

    /// Start before the first table of `tables` (one level's, by key) that may hold
    /// `key_min` or a later key; nothing is read until [`LevelCursor::settle`].
    pub(crate) fn reset(&mut self, tables: &[Table], key_min: u128) {
        self.table_next = tables.partition_point(|table| table.info.key_max < key_min);
        self.entry_count = 0;
        self.entry_next = 0;
        self.value_count = 0;
        self.value = 0;
        self.key_last = None;
        self.exhausted = false;
    }

    /// Read until the cursor holds a current value in `key_min..=key_max`, or is
    /// exhausted. Reads nothing when it already holds one.
    pub(crate) async fn settle(
        &mut self,
        grid: &Grid,
        layout: &Layout,
        tables: &[Table],
        key_min: u128,
        key_max: u128,
        snapshot: u64,
    ) -> Result<(), Failure> {
        let size = layout.value_size;
        loop {
            if self.exhausted {
                return Ok(());
            }
            if self.value < self.value_count {
                let key = (layout.key_of)(self.value_at(self.value, size));
                if key > key_max {
                    self.exhausted = true;
                    return Ok(());
                }
                // Blocks are verified, so this is a bug in whoever wrote them; still an
                // error, not a panic, as the bytes came from the grid.
                if let Some(key_last) = self.key_last.filter(|&key_last| key_last >= key) {
                    return Err(Failure::CorruptBlock(format!(
                        "value block at address {} holds key {key} after key {key_last} in one level",
                        self.value_block_address
                    )));
                }
                return Ok(());
            }
            if self.entry_next < self.entry_count {
                let entry =
                    table::index_entry_at(table::used_body(&self.index_block), self.entry_next);
                self.entry_next += 1;
                if entry.key_min > key_max {
                    self.exhausted = true;
                    return Ok(());
                }
                grid.read_into(entry.block, BlockType::Value, &mut self.value_block)
                    .await?;
                let count =
                    table::values(&self.value_block, entry.block.address, size)?.len() / size;
                self.value_block_address = entry.block.address;
                self.value_count = count;
                // Only the first block of a scan can hold keys below `key_min`; for the
                // others this finds position 0.
                self.value = table::partition_point(count, |position| {
                    (layout.key_of)(self.value_at(position, size)) < key_min
                });
                continue;
            }
            let Some(table) = tables.get(self.table_next) else {
                self.exhausted = true;
                return Ok(());
            };
            self.table_next += 1;
            if table.info.key_min > key_max {
                self.exhausted = true;
                return Ok(());
            }
            // As in `Tree::get`: a table the snapshot does not see does not count.
            if !table.info.visible(snapshot) {
                continue;
            }
            grid.read_into(table.info.index, BlockType::Index, &mut self.index_block)
                .await?;
            let body = table::index_body(&self.index_block, table.info.index.address)?;
            let count = body.len() / IndexEntry::SIZE;
            self.entry_count = count;
            self.entry_next = table::partition_point(count, |position| {
                table::index_entry_at(body, position).key_max < key_min
            });
        }
    }

    fn value_at(&self, position: usize, size: usize) -> &[u8] {
        let start = HEADER_SIZE + position * size;
        &self.value_block[start..start + size]
    }

    /// The current value, if the cursor holds one (after [`LevelCursor::settle`]).
    pub(crate) fn current(&self, layout: &Layout) -> Option<&[u8]> {
        if self.exhausted {
            return None;
        }
        assert!(self.value < self.value_count, "level cursor not settled");
        Some(self.value_at(self.value, layout.value_size))
    }

    /// Move past the current value.
    pub(crate) fn advance(&mut self, layout: &Layout) {
        let current = self.current(layout).expect("a current value to pass");
        self.key_last = Some((layout.key_of)(current));
        self.value += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use crate::forest::Forest;
    use crate::groove::UniqueKey;
    use crate::table::{Layout, Value};
    use crate::tree::{Shape, TreeConfig};
    use carapace_sdk::Context;
    use carapace_sdk::testing::MemoryHost;

    /// The smallest blocks, so that a few hundred ops fill every level: 18 values of 24
    /// bytes per value block, 8 entries per index block.
    const BLOCK_SIZE: u32 = 512;
    const BLOCK_COUNT: u64 = 1 << 14;
    const UPDATES_PER_OP_MAX: u64 = 16;
    /// Short bars and a growth factor of 2: levels 0 to 3 hold 2, 4, 8 and 16 tables
    /// before compacting, so values reach the last level within a few hundred ops.
    const SHAPE: Shape = Shape {
        bar_ops: 4,
        levels: 4,
        growth_factor: 2,
        value_blocks_per_table_max: 2,
        flush_bars_max: 1,
    };

    /// The SDK's test generator, with the draws these tests make.
    struct Prng(carapace_sdk::testing::SplitMix64);

    impl Prng {
        fn new(seed: u64) -> Prng {
            Prng(carapace_sdk::testing::SplitMix64::new(seed))
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.0.below(bound)
        }

        /// Mostly keys of a small space, so that keys are overwritten and deleted again
        /// and again; sometimes the ends of the key space.
        fn key(&mut self, key_space: u64) -> u128 {
            match self.below(64) {
                0 => 0,
                1 => u128::MAX,
                2 => u128::MAX - 1,
                _ => u128::from(self.below(key_space)) + 1,
            }
        }
    }

    fn new_forest(host: &MemoryHost, cache_blocks: usize) -> (Context, Forest) {
        let context = host.context();
        let tree = TreeConfig {
            tree_id: 1,
            layout: Layout::of::<UniqueKey>(),
            values_per_bar_max: (SHAPE.bar_ops * UPDATES_PER_OP_MAX) as usize,
            table_count_max: 1024,
        };
        let forest = Forest::new(
            context.clone(),
            BLOCK_SIZE,
            BLOCK_COUNT,
            cache_blocks,
            SHAPE,
            &[tree],
        )
        .unwrap();
        (context, forest)
    }

    fn scan(
        host: &MemoryHost,
        context: &Context,
        forest: &Forest,
        range: (u128, u128),
        snapshot: u64,
        limit: usize,
    ) -> Vec<(u128, u64)> {
        let mut out = Vec::new();
        host.block_on(
            context,
            forest.scan(0, range.0, range.1, snapshot, limit, &mut out),
        )
        .unwrap();
        assert_eq!(out.len() % UniqueKey::SIZE, 0);
        out.chunks_exact(UniqueKey::SIZE)
            .map(|bytes| {
                let value = UniqueKey::decode(bytes);
                (value.key, value.timestamp)
            })
            .collect()
    }

    /// The model's answer: live keys in the range, ascending, at most `limit`.
    fn expected(
        model: &BTreeMap<u128, u64>,
        range: (u128, u128),
        limit: usize,
    ) -> Vec<(u128, u64)> {
        model
            .range(range.0..=range.1)
            .take(limit)
            .map(|(&key, &timestamp)| (key, timestamp))
            .collect()
    }

    /// What lookups at `snapshot` see for every key ever written in the range: the
    /// definition a scan must agree with, at any snapshot.
    fn by_lookups(
        host: &MemoryHost,
        context: &Context,
        forest: &Forest,
        written: &BTreeSet<u128>,
        range: (u128, u128),
        snapshot: u64,
        limit: usize,
    ) -> Vec<(u128, u64)> {
        let mut found = Vec::new();
        for &key in written.range(range.0..=range.1) {
            if found.len() == limit {
                break;
            }
            let mut bytes = [0; UniqueKey::SIZE];
            if host
                .block_on(context, forest.get(0, key, snapshot, &mut bytes))
                .unwrap()
            {
                let value = UniqueKey::decode(&bytes);
                found.push((value.key, value.timestamp));
            }
        }
        found
    }

    fn random_range(prng: &mut Prng, key_space: u64) -> (u128, u128) {
        match prng.below(16) {
            0 => (0, u128::MAX),
            1 => (u128::MAX - 1, u128::MAX),
            2 => {
                let key = prng.key(key_space);
                (key, key)
            }
            _ => {
                let key_min = prng.key(key_space);
                let width = u128::from(prng.below(key_space / 4));
                (key_min, key_min.saturating_add(width))
            }
        }
    }

    /// Runs `ops` ops of random puts and removes, checking scans before each op against
    /// the model (at the op's snapshot) and against lookups (at the previous op's, where
    /// tables the last half-bar made are not visible), reopening at some checkpoints.
    /// Returns the deepest level that held a table.
    fn run(seed: u64, ops: u64, key_space: u64, cache_blocks: usize) -> u8 {
        let mut prng = Prng::new(seed);
        let host = MemoryHost::new(BLOCK_SIZE);
        let (mut context, mut forest) = new_forest(&host, cache_blocks);
        let mut model = BTreeMap::new();
        let mut written = BTreeSet::new();
        let mut level_deepest = 0;
        for op in 1..=ops {
            for _ in 0..4 {
                let range = random_range(&mut prng, key_space);
                let limit = 1 + prng.below(40) as usize;
                let scanned = scan(&host, &context, &forest, range, op, limit);
                assert_eq!(
                    scanned,
                    expected(&model, range, limit),
                    "seed {seed}, op {op}, range {range:?}, limit {limit}"
                );
            }
            let range = random_range(&mut prng, key_space);
            let limit = 1 + prng.below(16) as usize;
            assert_eq!(
                scan(&host, &context, &forest, range, op - 1, limit),
                by_lookups(&host, &context, &forest, &written, range, op - 1, limit),
                "seed {seed}, op {op}, snapshot {}, range {range:?}, limit {limit}",
                op - 1
            );

            for _ in 0..prng.below(UPDATES_PER_OP_MAX + 1) {
                let key = prng.key(key_space);
                written.insert(key);
                if prng.below(4) == 0 {
                    forest.remove(0, key);
                    model.remove(&key);
                } else {
                    let value = UniqueKey { key, timestamp: op };
                    let mut bytes = [0; UniqueKey::SIZE];
                    value.encode(&mut bytes);
                    forest.put(0, &bytes);
                    model.insert(key, op);
                }
            }
            host.block_on(&context, forest.compact(op)).unwrap();
            for level in 0..SHAPE.levels {
                if !forest.tree(0).level(level).is_empty() {
                    level_deepest = level_deepest.max(level);
                }
            }

            if op % (4 * SHAPE.bar_ops) == 0 && prng.below(2) == 0 {
                let state = host.block_on(&context, forest.checkpoint(op)).unwrap();
                (context, forest) = new_forest(&host, cache_blocks);
                let opened = host
                    .block_on(&context, forest.open(&state.encode()))
                    .unwrap();
                assert_eq!(opened, op);
            }
        }
        level_deepest
    }

    #[test]
    fn scans_agree_with_a_model_across_memory_levels_and_reopens() {
        for seed in 0..24 {
            let cache_blocks = [0, 4, 64][seed as usize % 3];
            let level_deepest = run(seed, 320, 3000, cache_blocks);
            assert_eq!(level_deepest, SHAPE.levels - 1, "seed {seed}");
        }
    }

    #[test]
    fn scans_agree_with_a_model_over_few_keys() {
        // Few keys: every key is overwritten and deleted many times over, so most of
        // what the levels hold is shadowed or a tombstone.
        for seed in 100..112 {
            run(seed, 200, 40, 8);
        }
    }

    #[test]
    fn a_small_scan_of_a_large_tree_reads_a_few_blocks() {
        let host = MemoryHost::new(BLOCK_SIZE);
        let (context, mut forest) = new_forest(&host, 0);
        let mut prng = Prng::new(7);
        let mut model = BTreeMap::new();
        for op in 1..=240 {
            for _ in 0..UPDATES_PER_OP_MAX {
                let key = u128::from(prng.below(1 << 20));
                let mut bytes = [0; UniqueKey::SIZE];
                UniqueKey { key, timestamp: op }.encode(&mut bytes);
                forest.put(0, &bytes);
                model.insert(key, op);
            }
            host.block_on(&context, forest.compact(op)).unwrap();
        }
        let tables: usize = forest.tree(0).tables().len();
        assert!(tables > 100, "{tables} tables");
        for _ in 0..32 {
            let range = (u128::from(prng.below(1 << 20)), u128::MAX);
            let reads_before = host.read_count();
            let scanned = scan(&host, &context, &forest, range, 241, 4);
            assert_eq!(scanned, expected(&model, range, 4));
            // Without a cache: per level one index block, and the value block holding
            // the start, the next one if the start is at a block's end, and the one
            // after if four values straddle it.
            let reads = host.read_count() - reads_before;
            assert!(
                reads <= u64::from(SHAPE.levels) * 4,
                "{reads} reads for a scan of 4 values in {tables} tables"
            );
        }
    }
}

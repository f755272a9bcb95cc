//! A tree: a mutable memory table collecting one bar of updates, an immutable one
//! collecting bars until it holds a table's worth, and on-disk tables in levels that
//! grow by a constant factor.
//!
//! The immutable table absorbs each bar's values (sorted, newest wins) until another
//! bar might not fit; only then is it flushed into level 0. Tables therefore hold about
//! a full table's values however short a bar is, so the number of tables, the manifest
//! and the grid's space grow with the live values, not with the number of bars.
//!
//! Lookups go through the mutable table, the immutable table, then level 0 downwards,
//! taking in each level the one visible table whose key range holds the key; the
//! first hit wins and a tombstone means "absent". Scans (see [`crate::scan`]) merge
//! the same sources with the same precedence over a key range. Compactions (see
//! [`crate::compaction`]) move data down one level per half-bar; their results become
//! visible together at the half-bar's end, applied here in a fixed order and recorded
//! in the manifest log.

use std::cell::RefCell;

use crate::compaction::{Compaction, Mode, VALUE_SIZE_MAX};
use crate::grid::Grid;
use crate::manifest_log::{Event, EventKind, LogPosition, ManifestLog};
use crate::scan::ScanBuffer;
use crate::table::{self, IndexEntry, Layout, TableBuilder, TableInfo};
use carapace_sdk::Failure;

/// Levels a forest may have at most (TigerBeetle's count).
pub const LEVELS_MAX: u8 = 7;
// A tree keeps its compactions in flight as bits of a `u8`.
const _: () = assert!(LEVELS_MAX <= 8);

/// How a forest shapes its trees; the same for every tree of the forest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Ops per bar: the memory tables swap at the end of each; even.
    pub bar_ops: u64,
    /// Levels of on-disk tables, `1..=LEVELS_MAX`.
    pub levels: u8,
    /// Level `l` holds at most `growth_factor^(l + 1)` tables before it compacts.
    pub growth_factor: u32,
    /// Value blocks a table built by compaction holds at most.
    pub value_blocks_per_table_max: usize,
    /// The immutable table is flushed at least every this many bars (0: only once
    /// another bar might not fit a table). Small values make tables sooner, for tests.
    pub flush_bars_max: u64,
}

impl Shape {
    /// Tables level `level` holds before it compacts into the next.
    pub fn level_table_count_limit(&self, level: u8) -> u64 {
        let (growth, exponent) = (u64::from(self.growth_factor), u32::from(level) + 1);
        // A growth below 2^bits raised to `exponent` stays below 2^(bits * exponent):
        // when that fits, the power needs no overflow checks. Checked, each 64-bit
        // multiply is a call to `__multi3` (~80 instructions) in wasm, and this runs
        // every beat.
        let bits = u64::BITS - growth.leading_zeros();
        if bits * exponent <= u64::BITS {
            growth.wrapping_pow(exponent)
        } else {
            growth.saturating_pow(exponent)
        }
    }

    /// Beats in a half-bar.
    pub fn half_bar_beats(&self) -> u64 {
        self.bar_ops / 2
    }
}

/// What a tree holds, fixed at init.
#[derive(Clone, Copy, Debug)]
pub struct TreeConfig {
    /// Recorded in the tree's blocks and table infos; unique in the forest, non-zero.
    pub tree_id: u16,
    /// Its values.
    pub layout: Layout,
    /// Updates one bar may bring, at most: the size of each memory table.
    pub values_per_bar_max: usize,
    /// Tables the tree holds at most, over all levels.
    pub table_count_max: usize,
}

/// A table of the tree and the position of its latest event in the manifest log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Table {
    /// The table.
    pub info: TableInfo,
    /// Where its latest event sits in the manifest log.
    pub log_position: LogPosition,
}

/// The sort key of `tables`: deeper levels first, then `key_min`.
fn order_key(level: u8, key_min: u128) -> (u8, u128) {
    (LEVELS_MAX - level, key_min)
}

/// A tree of fixed-size values.
#[derive(Debug)]
pub struct Tree {
    config: TreeConfig,
    shape: Shape,
    /// Values of the current bar, in arrival order; the newest of a key wins.
    mutable: Vec<u8>,
    /// The smallest and largest key in `mutable`, so that a lookup of a key outside
    /// them (a new sequential id, above all) does not scan it.
    mutable_keys: Option<(u128, u128)>,
    /// The values of the bars since the last flush, sorted with unique keys.
    immutable: Vec<u8>,
    /// Values the immutable table holds at most: a table's worth, and at least a bar.
    immutable_values_max: usize,
    sort_scratch: Vec<(u128, u32)>,
    /// Where a bar is merged into the immutable table; then swapped with it.
    merge_scratch: Vec<u8>,
    /// Tables sorted by level, deepest first, then by `key_min`; tables of one level
    /// are disjoint. Deepest first because the deep levels hold nearly all tables and
    /// change least: a flush into level 0 appends, a move shifts only shallow levels.
    tables: Vec<Table>,
    /// `level_starts[LEVELS_MAX - 1 - level]..level_starts[LEVELS_MAX - level]` are the
    /// positions of `level`'s tables: recomputed whenever `tables` changes (a half-bar's
    /// end, an open), so that a lookup finds each level without searching for it.
    level_starts: [usize; LEVELS_MAX as usize + 1],
    /// The largest key in any table, recomputed with `level_starts`: a lookup of a
    /// larger key, such as a new sequential id, looks at no level.
    tables_key_max: Option<u128>,
    /// One compaction per target level, allocated at init.
    compactions: Vec<Compaction>,
    /// Bit `target` is set while the compaction into level `target` is in flight: a
    /// beat visits only those (there are none in most beats of most trees).
    active: u8,
    lookup_entries: RefCell<Vec<IndexEntry>>,
}

impl Tree {
    /// A tree shaped by `shape`; everything it needs is allocated now.
    pub fn new(grid: &Grid, shape: Shape, config: TreeConfig) -> Result<Tree, Failure> {
        assert!(config.tree_id > 0);
        let layout = config.layout;
        assert!(layout.value_size <= VALUE_SIZE_MAX);
        let entries_max = grid.body_size_max() / IndexEntry::SIZE;
        if shape.value_blocks_per_table_max == 0 || shape.value_blocks_per_table_max > entries_max {
            return Err(Failure::InvalidArgument(format!(
                "{} value blocks per table do not fit an index block of {} bytes (at most {entries_max})",
                shape.value_blocks_per_table_max,
                grid.block_size()
            )));
        }
        // A merge reads one table and the tables of the next level it overlaps (about
        // `growth_factor` when levels are full) and writes about as many.
        let outputs_max = 2 * (shape.growth_factor as usize + 1);
        let values_per_block = grid.body_size_max() / layout.value_size;
        let immutable_values_max =
            (values_per_block * shape.value_blocks_per_table_max).max(config.values_per_bar_max);
        let compactions = (0..shape.levels)
            .map(|_| {
                let builder = TableBuilder::new(
                    grid,
                    layout,
                    config.tree_id,
                    shape.value_blocks_per_table_max,
                );
                Compaction::new(grid, builder, outputs_max, entries_max)
            })
            .collect();
        Ok(Tree {
            config,
            shape,
            mutable: Vec::with_capacity(config.values_per_bar_max * layout.value_size),
            mutable_keys: None,
            immutable: Vec::with_capacity(immutable_values_max * layout.value_size),
            immutable_values_max,
            sort_scratch: Vec::with_capacity(config.values_per_bar_max),
            merge_scratch: Vec::with_capacity(immutable_values_max * layout.value_size),
            tables: Vec::with_capacity(config.table_count_max),
            level_starts: [0; LEVELS_MAX as usize + 1],
            tables_key_max: None,
            compactions,
            active: 0,
            lookup_entries: RefCell::new(Vec::with_capacity(entries_max)),
        })
    }

    /// The tree's id.
    pub fn tree_id(&self) -> u16 {
        self.config.tree_id
    }

    /// Its values' layout.
    pub fn layout(&self) -> &Layout {
        &self.config.layout
    }

    /// Tables the tree holds at most.
    pub fn table_count_max(&self) -> usize {
        self.config.table_count_max
    }

    /// Every table, deepest level first, then by key.
    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    /// The tables of `level`, by key.
    pub fn level(&self, level: u8) -> &[Table] {
        &self.tables[self.level_range(level)]
    }

    /// Where a table of `level` starting at `key_min` sits in the order of `tables`.
    fn position_for(&self, level: u8, key_min: u128) -> usize {
        let order = order_key(level, key_min);
        self.tables
            .partition_point(|table| order_key(table.info.level, table.info.key_min) < order)
    }

    /// Values in the memory tables (mutable, immutable).
    pub fn memory_counts(&self) -> (usize, usize) {
        let size = self.config.layout.value_size;
        (self.mutable.len() / size, self.immutable.len() / size)
    }

    /// Bytes of the values the tree holds, in tables and in memory: every version and
    /// tombstone counts, so for a tree whose keys are written once it is the live data.
    pub fn value_bytes_stored(&self) -> u64 {
        let in_tables: u64 = self
            .tables
            .iter()
            .map(|table| u64::from(table.info.value_count))
            .sum();
        let size = self.config.layout.value_size;
        in_tables * size as u64 + (self.mutable.len() + self.immutable.len()) as u64
    }

    /// Insert or replace a value.
    pub fn put(&mut self, value: &[u8]) {
        let size = self.config.layout.value_size;
        assert_eq!(value.len(), size);
        assert!(
            self.mutable.len() < self.mutable.capacity(),
            "memory table of tree {} is full",
            self.config.tree_id
        );
        let key = (self.config.layout.push)(&mut self.mutable, value);
        self.mutable_keys = Some(match self.mutable_keys {
            Some((min, max)) => (min.min(key), max.max(key)),
            None => (key, key),
        });
    }

    /// Delete `key` (a tombstone that compaction carries down and finally drops).
    pub fn remove(&mut self, key: u128) {
        let mut tombstone = [0; VALUE_SIZE_MAX];
        let size = self.config.layout.value_size;
        (self.config.layout.tombstone_of)(key, &mut tombstone[..size]);
        self.put(&tombstone[..size]);
    }

    /// Find `key` in the memory tables: `Some(found)` if they decide it.
    fn get_from_memory(&self, key: u128, out: &mut [u8]) -> Option<bool> {
        let layout = &self.config.layout;
        let size = layout.value_size;
        let in_mutable = self
            .mutable_keys
            .is_some_and(|(min, max)| (min..=max).contains(&key));
        let (values, position) = match in_mutable
            .then(|| (layout.find_newest)(&self.mutable, key))
            .flatten()
        {
            Some(position) => (&self.mutable, position),
            None => (&self.immutable, (layout.search)(&self.immutable, key).ok()?),
        };
        let found = &values[position * size..(position + 1) * size];
        out[..size].copy_from_slice(found);
        Some(!(layout.is_tombstone)(found))
    }

    /// [`Tree::get`] where it needs no block: `Some(found)` if the memory tables hold
    /// `key`, or no table holds a key as large; `None` if the levels must be read.
    pub fn get_without_io(&self, key: u128, out: &mut [u8]) -> Option<bool> {
        if let Some(found) = self.get_from_memory(key, out) {
            return Some(found);
        }
        self.tables_key_max
            .is_none_or(|max| max < key)
            .then_some(false)
    }

    /// The value of `key` as lookups at op `snapshot` see it, copied into `out`;
    /// whether there is one.
    pub async fn get(
        &self,
        grid: &Grid,
        key: u128,
        snapshot: u64,
        out: &mut [u8],
    ) -> Result<bool, Failure> {
        if let Some(found) = self.get_without_io(key, out) {
            return Ok(found);
        }
        let layout = self.config.layout;
        for level in 0..self.shape.levels {
            let tables = self.level(level);
            let position = tables.partition_point(|table| table.info.key_max < key);
            let Some(table) = tables
                .get(position)
                .filter(|table| table.info.key_min <= key)
            else {
                continue;
            };
            if !table.info.visible(snapshot) {
                continue;
            }
            // The buffer is taken out for the await, not borrowed across it.
            let mut entries = self.lookup_entries.take();
            let found = table::lookup(grid, &layout, &table.info, key, &mut entries, out).await;
            self.lookup_entries.replace(entries);
            if found? {
                return Ok(!(layout.is_tombstone)(&out[..layout.value_size]));
            }
        }
        Ok(false)
    }

    /// Append to `out` the values of at most `limit` live keys in `key_min..=key_max`, in
    /// ascending key order, as lookups at op `snapshot` see them: the newest version of
    /// each key wins, by the precedence and visibility rules of [`Tree::get`], and a
    /// tombstone hides its key. `buffer` is the scan's working memory (see
    /// [`crate::scan`], which also bounds the work).
    #[expect(
        clippy::too_many_arguments,
        reason = "a scan's range, snapshot and limit, and the grid and buffer it works with"
    )]
    pub async fn scan(
        &self,
        grid: &Grid,
        buffer: &mut ScanBuffer,
        key_min: u128,
        key_max: u128,
        snapshot: u64,
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), Failure> {
        assert!(key_min <= key_max, "scan of an empty key range");
        let levels = usize::from(self.shape.levels);
        assert!(buffer.level_count() >= levels);
        assert!(buffer.memory_values_max() >= self.config.values_per_bar_max);
        let layout = self.config.layout;
        let key_of = layout.key_of;
        let size = layout.value_size;
        let out_size_start = out.len();
        if limit == 0 {
            return Ok(());
        }
        let ScanBuffer {
            memory,
            levels: cursors,
        } = buffer;
        let cursors = &mut cursors[..levels];

        // The mutable table's keys in the range, sorted by key then arrival.
        memory.clear();
        memory.extend(self.mutable.chunks_exact(size).enumerate().filter_map(
            |(position, value)| {
                let key = key_of(value);
                (key_min..=key_max)
                    .contains(&key)
                    .then_some((key, position as u32))
            },
        ));
        // Unstable sort: allocates nothing, and the pairs are unique.
        memory.sort_unstable();
        let mutable_at = |position: u32| {
            let start = position as usize * size;
            &self.mutable[start..start + size]
        };
        let mut memory_next = 0;

        let immutable_count = self.immutable.len() / size;
        let immutable_at =
            |position: usize| &self.immutable[position * size..(position + 1) * size];
        let mut immutable_next = table::partition_point(immutable_count, |position| {
            key_of(immutable_at(position)) < key_min
        });

        // Each level's tables, found once: the tree does not change during the scan.
        let mut level_tables: [&[Table]; LEVELS_MAX as usize] = [&[]; LEVELS_MAX as usize];
        for (level, tables) in level_tables[..levels].iter_mut().enumerate() {
            *tables = self.level(level as u8);
        }
        for (level, cursor) in cursors.iter_mut().enumerate() {
            cursor.reset(level_tables[level], key_min);
        }

        let mut emitted = 0;
        let mut key_emitted_last = None;
        while emitted < limit {
            for (level, cursor) in cursors.iter_mut().enumerate() {
                cursor
                    .settle(
                        grid,
                        &layout,
                        level_tables[level],
                        key_min,
                        key_max,
                        snapshot,
                    )
                    .await?;
            }
            // The head of each source: the mutable table's is the newest value of its
            // smallest key (the last of that key's run).
            let memory_head = memory.get(memory_next).map(|&(key, _)| {
                let run = memory[memory_next..]
                    .iter()
                    .take_while(|&&(other, _)| other == key)
                    .count();
                (key, memory_next + run)
            });
            let immutable_head = (immutable_next < immutable_count)
                .then(|| key_of(immutable_at(immutable_next)))
                .filter(|&key| key <= key_max);
            let level_heads = cursors
                .iter()
                .filter_map(|cursor| cursor.current(&layout).map(key_of));
            let Some(key) = memory_head
                .map(|(key, _)| key)
                .into_iter()
                .chain(immutable_head)
                .chain(level_heads)
                .min()
            else {
                break;
            };

            // The newest source holding `key` decides it.
            let newest = match memory_head {
                Some((head, run_end)) if head == key => mutable_at(memory[run_end - 1].1),
                _ if immutable_head == Some(key) => immutable_at(immutable_next),
                _ => cursors
                    .iter()
                    .filter_map(|cursor| cursor.current(&layout))
                    .find(|value| key_of(value) == key)
                    .expect("some source holds the smallest head"),
            };
            assert_eq!(key_of(newest), key);
            if !(layout.is_tombstone)(newest) {
                assert!(key_emitted_last.is_none_or(|last| last < key));
                key_emitted_last = Some(key);
                out.extend_from_slice(newest);
                emitted += 1;
            }

            // Every source holding `key` moves past it.
            if let Some((head, run_end)) = memory_head
                && head == key
            {
                memory_next = run_end;
            }
            if immutable_head == Some(key) {
                immutable_next += 1;
            }
            for cursor in cursors.iter_mut() {
                if cursor.current(&layout).map(key_of) == Some(key) {
                    cursor.advance(&layout);
                }
            }
        }
        assert_eq!(out.len() - out_size_start, emitted * size);
        Ok(())
    }

    /// End of a bar: the mutable table, sorted and with one value per key (the
    /// newest), is absorbed into the immutable table (its values win over older ones of
    /// the same key), which has room for it: see [`Tree::immutable_flushes`].
    // Once a bar: kept out of the per-op compaction's code, whose values Cranelift
    // keeps in registers better without it.
    #[inline(never)]
    pub fn swap_memory_tables(&mut self) {
        let layout = self.config.layout;
        let size = layout.value_size;
        self.sort_scratch.clear();
        (layout.keys)(&self.mutable, &mut self.sort_scratch);
        if self.sort_scratch.is_empty() {
            return;
        }
        // Stable: arrival order within a key is kept, so the last of a run is newest.
        // Keys that only grow arrive sorted already.
        if !self.sort_scratch.is_sorted_by_key(|&(key, _)| key) {
            self.sort_scratch.sort_by_key(|&(key, _)| key);
        }
        (layout.absorb)(
            &mut self.immutable,
            &mut self.merge_scratch,
            &self.sort_scratch,
            &self.mutable,
        );
        assert!(self.immutable.len() <= self.immutable_values_max * size);
        self.mutable.clear();
        self.mutable_keys = None;
    }

    /// Whether the immutable table is flushed in the bar whose second half's outputs
    /// become visible at `snapshot_output`: when another bar might not fit, or at the
    /// shape's bar interval (a function of the op, so a reopened replica agrees).
    fn immutable_flushes(&self, snapshot_output: u64) -> bool {
        let count = self.immutable.len() / self.config.layout.value_size;
        let full = count + self.config.values_per_bar_max > self.immutable_values_max;
        let bar = (snapshot_output - 1) / self.shape.bar_ops;
        full || bar
            .checked_rem(self.shape.flush_bars_max)
            .is_some_and(|rest| rest == 0)
    }

    /// Replace the immutable table (when opening a checkpoint).
    pub fn restore_immutable(&mut self, values: &[u8]) -> Result<(), Failure> {
        let layout = self.config.layout;
        let size = layout.value_size;
        let sorted = values
            .chunks_exact(size)
            .zip(values.chunks_exact(size).skip(1))
            .all(|(a, b)| (layout.key_of)(a) < (layout.key_of)(b));
        let fits = values.len() <= self.immutable_values_max * size;
        if !values.len().is_multiple_of(size) || !fits || !sorted {
            return Err(Failure::InvalidArgument(format!(
                "checkpoint's immutable table of tree {} ({} bytes) is not sorted values of {size} bytes \
                 within the table's capacity",
                self.config.tree_id,
                values.len()
            )));
        }
        self.immutable.clear();
        self.immutable.extend_from_slice(values);
        Ok(())
    }

    /// The immutable table's values, sorted.
    pub fn immutable(&self) -> &[u8] {
        &self.immutable
    }

    /// Insert a table (when opening a checkpoint, or at a half-bar's end).
    pub fn insert_table(&mut self, table: Table) -> Result<(), Failure> {
        if self.tables.len() == self.config.table_count_max {
            return Err(Failure::OutOfSpace(format!(
                "tree {} holds its maximum of {} tables",
                self.config.tree_id, self.config.table_count_max
            )));
        }
        let info = table.info;
        if info.level >= self.shape.levels
            || info.key_min > info.key_max
            || info.tree_id != self.config.tree_id
        {
            return Err(Failure::InvalidArgument(format!(
                "table at address {} (tree {}, level {}) does not fit tree {}",
                info.index.address, info.tree_id, info.level, self.config.tree_id
            )));
        }
        let position = self.position_for(info.level, info.key_min);
        // Tables of a level are disjoint and sorted, so only the neighbours can overlap.
        let overlapping = [position.checked_sub(1), Some(position)]
            .into_iter()
            .flatten()
            .filter_map(|neighbour| self.tables.get(neighbour))
            .any(|other| {
                other.info.level == info.level && other.info.overlaps(info.key_min, info.key_max)
            });
        if overlapping {
            return Err(Failure::CorruptBlock(format!(
                "table at address {} overlaps another table of level {} in tree {}",
                info.index.address, info.level, self.config.tree_id
            )));
        }
        self.tables.insert(position, table);
        self.index_levels();
        Ok(())
    }

    fn position_of(&self, info: &TableInfo) -> usize {
        let start = self.position_for(info.level, info.key_min);
        assert!(
            self.tables
                .get(start)
                .is_some_and(|other| other.info.index == info.index),
            "table at address {} is not in tree {}",
            info.index.address,
            self.config.tree_id
        );
        start
    }

    /// Whether `event_table`'s latest event is at `position` (then the event is live),
    /// and the table if so. `event_table` is the table as the event recorded it: a live event records the
    /// table as it is now, so its level and key find it.
    pub fn table_with_event_at(
        &self,
        event_table: &TableInfo,
        position: LogPosition,
    ) -> Option<TableInfo> {
        self.tables
            .get(self.position_for(event_table.level, event_table.key_min))
            .filter(|table| table.info.index == event_table.index && table.log_position == position)
            .map(|table| table.info)
    }

    /// Record that the latest event of `table` (as it is now) moved to `position`.
    pub fn set_log_position(&mut self, table: &TableInfo, position: LogPosition) {
        let index = self.position_of(table);
        self.tables[index].log_position = position;
    }

    /// Whether a compaction is in flight.
    pub fn is_compacting(&self) -> bool {
        self.active != 0
    }

    /// Start the compactions of a half-bar: odd target levels in the first half, even
    /// ones (and the immutable table into level 0) in the second. Outputs become
    /// visible at `snapshot_output`.
    // Once a half bar: kept out of the per-op compaction's code (see
    // `swap_memory_tables`).
    #[inline(never)]
    pub fn start_half_bar(&mut self, first_half: bool, snapshot_output: u64) {
        assert!(!self.is_compacting());
        let first_target = if first_half { 1 } else { 0 };
        for target in (first_target..self.shape.levels).step_by(2) {
            if self.start_compaction(target, snapshot_output) {
                self.active |= 1 << target;
            }
        }
    }

    fn start_compaction(&mut self, target: u8, snapshot_output: u64) -> bool {
        let layout = self.config.layout;
        let (a, b, key_min, key_max, immutable_count) = if target == 0 {
            let size = layout.value_size;
            let count = self.immutable.len() / size;
            if count == 0 || !self.immutable_flushes(snapshot_output) {
                return false;
            }
            let key_min = (layout.key_of)(&self.immutable[..size]);
            let key_max = (layout.key_of)(&self.immutable[(count - 1) * size..]);
            let b = self.overlapping(0, key_min, key_max);
            // The merge rewrites every key of the level-0 tables it takes, not only those
            // in the immutable table's range: tombstones may be dropped only if nothing
            // deeper overlaps the whole of it.
            let (key_min, key_max) = if b.is_empty() {
                (key_min, key_max)
            } else {
                (
                    key_min.min(self.tables[b.start].info.key_min),
                    key_max.max(self.tables[b.end - 1].info.key_max),
                )
            };
            (None, b, key_min, key_max, count)
        } else {
            let source = target - 1;
            let sources = self.level_range(source);
            if (sources.len() as u64) < self.shape.level_table_count_limit(source) {
                return false;
            }
            let chosen = self.compaction_source(source, target, snapshot_output);
            let info = self.tables[chosen].info;
            let b = self.overlapping(target, info.key_min, info.key_max);
            if b.is_empty() {
                self.compactions[usize::from(target)].start_move(target, info);
                return true;
            }
            let key_min = info.key_min.min(self.tables[b.start].info.key_min);
            let key_max = info.key_max.max(self.tables[b.end - 1].info.key_max);
            (Some(chosen), b, key_min, key_max, 0)
        };
        let drop_tombstones = (target + 1..self.shape.levels)
            .all(|level| self.overlapping(level, key_min, key_max).is_empty());
        self.compactions[usize::from(target)].start_merge(
            target,
            a,
            immutable_count,
            b,
            &self.tables,
            drop_tombstones,
            snapshot_output,
        );
        true
    }

    /// The table of level `source` to compact into `target`: of a window of at most
    /// `growth_factor` consecutive tables, the one that overlaps the fewest tables of
    /// `target` (the first in key order among equals). The window's start walks the
    /// level as bars pass (a function of the op, so every replica chooses alike), which
    /// bounds the search however many tables the level holds.
    fn compaction_source(&self, source: u8, target: u8, snapshot_output: u64) -> usize {
        let sources = self.level_range(source);
        let window = (self.shape.growth_factor as usize).min(sources.len());
        assert!(window > 0, "a full level has tables");
        let bar = snapshot_output / self.shape.bar_ops;
        let start = sources.start + (bar % (sources.len() - window + 1) as u64) as usize;
        (start..start + window)
            .min_by_key(|&index| {
                let info = &self.tables[index].info;
                self.overlapping(target, info.key_min, info.key_max).len()
            })
            .expect("the window holds tables")
    }

    /// The positions in `tables` of `level`'s tables.
    fn level_range(&self, level: u8) -> std::ops::Range<usize> {
        let slot = usize::from(LEVELS_MAX - 1 - level);
        self.level_starts[slot]..self.level_starts[slot + 1]
    }

    /// Recompute `level_starts` after `tables` changed.
    fn index_levels(&mut self) {
        for (slot, start) in self.level_starts.iter_mut().enumerate() {
            // Slot `s` starts the tables of level `LEVELS_MAX - 1 - s`: those of deeper
            // levels come before it.
            let level = LEVELS_MAX as usize - slot;
            *start = self
                .tables
                .partition_point(|table| usize::from(table.info.level) >= level);
        }
        // A level's tables are disjoint and sorted, so its last holds its largest key.
        self.tables_key_max = (0..self.shape.levels)
            .filter_map(|level| self.level(level).last())
            .map(|table| table.info.key_max)
            .max();
    }

    /// The positions in `tables` of `level`'s tables that overlap `[key_min, key_max]`.
    fn overlapping(&self, level: u8, key_min: u128, key_max: u128) -> std::ops::Range<usize> {
        let range = self.level_range(level);
        let tables = &self.tables[range.clone()];
        let start = tables.partition_point(|table| table.info.key_max < key_min);
        let end = tables.partition_point(|table| table.info.key_min <= key_max);
        range.start + start..range.start + end.max(start)
    }

    /// One beat of every compaction in flight: a quota of `remaining / beats_left`
    /// input values each (everything left on the half-bar's last beat).
    pub async fn beat(&mut self, grid: &mut Grid, beats_left: u64) -> Result<(), Failure> {
        assert!(beats_left > 0);
        let layout = self.config.layout;
        let mut active = self.active;
        while active != 0 {
            let target = active.trailing_zeros() as usize;
            active &= active - 1;
            let compaction = &mut self.compactions[target];
            let quota = compaction.remaining.div_ceil(beats_left);
            compaction
                .beat(
                    grid,
                    &layout,
                    &self.immutable,
                    &self.tables,
                    quota,
                    beats_left == 1,
                )
                .await?;
        }
        Ok(())
    }

    /// End of a half-bar: make every compaction's results visible, in target order:
    /// inputs end at `snapshot_max` and are removed (their blocks released), outputs
    /// are inserted; every change is appended to the manifest log.
    pub async fn finish_half_bar(
        &mut self,
        grid: &mut Grid,
        log: &mut ManifestLog,
        snapshot_max: u64,
    ) -> Result<(), Failure> {
        for target in 0..usize::from(self.shape.levels) {
            if self.active & (1 << target) == 0 {
                continue;
            }
            self.active &= !(1 << target);
            let compaction = &mut self.compactions[target];
            assert_eq!(compaction.remaining, 0);
            match compaction.mode {
                Mode::Move(table) => {
                    let from = self.position_of(&table);
                    let mut moved = self.tables[from];
                    moved.info.level = target as u8;
                    let event = Event {
                        kind: EventKind::Update,
                        table: moved.info,
                    };
                    moved.log_position = log.append(grid, event, snapshot_max).await?;
                    // Nothing in the target level overlaps the table (or it would have
                    // been merged), so it slides into place: rotate the tables between.
                    let to = self.position_for(moved.info.level, moved.info.key_min);
                    assert!(to <= from, "the deeper level comes first");
                    self.tables[to..=from].rotate_right(1);
                    self.tables[to] = moved;
                    self.index_levels();
                }
                Mode::Merge => {
                    let a = compaction.a.tables();
                    let b = compaction.b.tables();
                    let from_immutable = compaction.from_immutable;
                    let outputs = std::mem::take(&mut compaction.outputs);
                    if from_immutable {
                        self.immutable.clear();
                    }
                    // The inputs' blocks were released as the merge consumed them.
                    for position in a.clone().chain(b.clone()) {
                        let mut input = self.tables[position].info;
                        input.snapshot_max = snapshot_max;
                        let event = Event {
                            kind: EventKind::Remove,
                            table: input,
                        };
                        log.append(grid, event, snapshot_max).await?;
                    }
                    // Table `a` is of the shallower level, so it sits after `b`: remove
                    // it first and `b`'s positions still hold.
                    assert!(a.is_empty() || b.end <= a.start);
                    self.tables.drain(a);
                    self.tables.drain(b);
                    self.index_levels();
                    for mut output in outputs.iter().copied() {
                        output.level = target as u8;
                        let event = Event {
                            kind: EventKind::Insert,
                            table: output,
                        };
                        let log_position = log.append(grid, event, snapshot_max).await?;
                        self.insert_table(Table {
                            info: output,
                            log_position,
                        })?;
                    }
                    // Hand the buffer back, keeping its capacity.
                    let compaction = &mut self.compactions[target];
                    compaction.outputs = outputs;
                    compaction.outputs.clear();
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forest::Forest;
    use crate::groove::UniqueKey;
    use crate::table::Value;
    use carapace_sdk::Context;
    use carapace_sdk::testing::MemoryHost;
    use std::collections::BTreeMap;

    const BLOCK_SIZE: u32 = 512;
    const SHAPE: Shape = Shape {
        bar_ops: 4,
        levels: 4,
        growth_factor: 4,
        value_blocks_per_table_max: 4,
        flush_bars_max: 0,
    };
    /// Values per op: a bar brings 16, far fewer than a table holds.
    const PUTS_PER_OP: u64 = 4;

    #[test]
    fn level_table_count_limit_is_the_saturating_power() {
        for growth_factor in (1..=70).chain([255, 256, 65_535, 1 << 20, u32::MAX]) {
            let shape = Shape {
                growth_factor,
                ..SHAPE
            };
            for level in 0..=u8::MAX {
                assert_eq!(
                    shape.level_table_count_limit(level),
                    u64::from(growth_factor).saturating_pow(u32::from(level) + 1),
                    "{growth_factor}^({level} + 1)"
                );
            }
        }
    }

    fn forest(host: &MemoryHost) -> (Context, Forest) {
        let context = host.context();
        let tree = TreeConfig {
            tree_id: 1,
            layout: Layout::of::<UniqueKey>(),
            values_per_bar_max: (SHAPE.bar_ops * PUTS_PER_OP) as usize,
            table_count_max: 4096,
        };
        let forest = Forest::new(context.clone(), BLOCK_SIZE, 1 << 14, 16, SHAPE, &[tree]).unwrap();
        (context, forest)
    }

    fn put(forest: &mut Forest, key: u128, timestamp: u64) {
        let mut bytes = [0; UniqueKey::SIZE];
        UniqueKey { key, timestamp }.encode(&mut bytes);
        forest.put(0, &bytes);
    }

    #[test]
    fn short_bars_of_growing_keys_fill_whole_tables() {
        let host = MemoryHost::new(BLOCK_SIZE);
        let (context, mut forest) = forest(&host);
        let ops = 2000;
        for op in 1..=ops {
            for index in 0..PUTS_PER_OP {
                put(&mut forest, u128::from(op * PUTS_PER_OP + index), op);
            }
            host.block_on(&context, forest.compact(op)).unwrap();
        }
        let tree = forest.tree(0);
        let per_block = forest.grid().body_size_max() / UniqueKey::SIZE;
        let table_values = (per_block * SHAPE.value_blocks_per_table_max) as u32;
        let bar_values = (SHAPE.bar_ops * PUTS_PER_OP) as u32;
        // Every table was one flush of an immutable table that could not take another
        // bar: full but for less than a bar's values.
        for table in tree.tables() {
            assert!(
                table.info.value_count + bar_values > table_values,
                "a table of {} values, {table_values} fit",
                table.info.value_count
            );
        }
        let stored = (ops * PUTS_PER_OP) as usize;
        assert_eq!(tree.value_bytes_stored(), (stored * UniqueKey::SIZE) as u64);
        assert!(tree.tables().len() <= stored / (table_values - bar_values) as usize);
        // Tables of one bar each would be 500 tables of 2 blocks: ~2.7x. Full tables of
        // 512-byte blocks hold 432 value bytes a block and an index block per 4: ~1.5x,
        // and the manifest log adds a little. Released blocks wait for a checkpoint this
        // test does not take: they are not counted.
        let free_set = forest.grid().free_set();
        let blocks = free_set.acquired_count() - free_set.released_count();
        let grid_bytes = blocks * u64::from(BLOCK_SIZE);
        let amplification = grid_bytes as f64 / tree.value_bytes_stored() as f64;
        assert!(
            amplification < 2.0,
            "space amplification {amplification:.2}"
        );
    }

    #[test]
    fn absorbed_and_flushed_bars_keep_the_newest_value_of_each_key() {
        let host = MemoryHost::new(BLOCK_SIZE);
        let (context, mut forest) = forest(&host);
        let mut model = BTreeMap::new();
        let mut prng = carapace_sdk::testing::SplitMix64::new(0x9e37_79b9_7f4a_7c15);
        let mut next = move |bound: u64| prng.below(bound);
        let mut flushes = 0;
        let (mut decided, mut undecided) = (0, 0);
        for op in 1..=600 {
            for _ in 0..PUTS_PER_OP {
                let key = u128::from(next(200));
                if next(8) == 0 {
                    forest.remove(0, key);
                    model.remove(&key);
                } else {
                    put(&mut forest, key, op);
                    model.insert(key, op);
                }
            }
            let immutable_before = forest.tree(0).memory_counts().1;
            host.block_on(&context, forest.compact(op)).unwrap();
            if forest.tree(0).memory_counts().1 < immutable_before {
                flushes += 1;
            }
            for key in 0..200 {
                let mut out = [0; UniqueKey::SIZE];
                let found = host
                    .block_on(&context, forest.get(0, key, op + 1, &mut out))
                    .unwrap();
                let expected = model.get(&key).copied();
                assert_eq!(
                    found.then(|| UniqueKey::decode(&out).timestamp),
                    expected,
                    "key {key} before op {}",
                    op + 1
                );
                // Where the lookup needs no block, it says the same without one.
                let mut without_io = [0; UniqueKey::SIZE];
                match forest.get_without_io(0, key, &mut without_io) {
                    Some(found) => {
                        decided += 1;
                        assert_eq!(
                            found.then(|| UniqueKey::decode(&without_io).timestamp),
                            expected,
                            "key {key} without I/O before op {}",
                            op + 1
                        );
                    }
                    None => undecided += 1,
                }
            }
            // A key above every key the tree has held is absent, whatever the levels.
            assert_eq!(
                forest.get_without_io(0, 200, &mut [0; UniqueKey::SIZE]),
                Some(false)
            );
        }
        assert!(flushes > 10, "{flushes} flushes");
        assert!(
            decided > 1000 && undecided > 1000,
            "{decided} decided, {undecided} not"
        );
    }
}

//! One compaction: a table of level `a` (or the immutable memory table, for target
//! level 0) merged with the tables of level `a + 1` it overlaps, into new tables of
//! level `a + 1`, a quota of input values per beat.
//!
//! The newer input (level `a`) wins on equal keys. Tombstones are dropped when no
//! deeper level overlaps the compaction's key range. Outputs and the removal of inputs
//! take effect at the end of the half-bar, applied by the tree in a fixed order.

use crate::block::BlockType;
use crate::grid::Grid;
use crate::table::{self, IndexEntry, Layout, TableBuilder, TableInfo};
use crate::tree::Table;
use carapace_sdk::Failure;

/// Reads the values of a run of disjoint tables in key order, one block at a time.
/// The tables are a range of the tree's table list, which does not change while a
/// compaction is in flight (changes are applied at the half-bar's end). Each block is
/// released once its last value is consumed, as TigerBeetle does: it stays readable,
/// and is reused only after the next checkpoint.
#[derive(Debug)]
pub(crate) struct TableCursor {
    tables: std::ops::Range<usize>,
    table: usize,
    entries: Vec<IndexEntry>,
    entries_loaded: bool,
    entry: usize,
    block: Vec<u8>,
    block_loaded: bool,
    value: usize,
    value_count: usize,
}

impl TableCursor {
    pub(crate) fn new(grid: &Grid, entries_max: usize) -> TableCursor {
        TableCursor {
            tables: 0..0,
            table: 0,
            entries: Vec::with_capacity(entries_max),
            entries_loaded: false,
            entry: 0,
            block: grid.new_block(),
            block_loaded: false,
            value: 0,
            value_count: 0,
        }
    }

    pub(crate) fn reset(&mut self, tables: std::ops::Range<usize>) {
        self.table = tables.start;
        self.tables = tables;
        self.entries_loaded = false;
        self.block_loaded = false;
    }

    /// The range of the tree's tables this cursor reads.
    pub(crate) fn tables(&self) -> std::ops::Range<usize> {
        self.tables.clone()
    }

    /// Make a current value available; `false` once every table is exhausted.
    async fn fill(
        &mut self,
        grid: &mut Grid,
        layout: &Layout,
        tables: &[Table],
    ) -> Result<bool, Failure> {
        loop {
            if self.table == self.tables.end {
                return Ok(false);
            }
            let table = &tables[self.table].info;
            if !self.entries_loaded {
                let index = grid.read(table.index, BlockType::Index).await?;
                table::index_entries(&index, table.index.address, &mut self.entries)?;
                self.entries_loaded = true;
                self.entry = 0;
                self.block_loaded = false;
            }
            let Some(entry) = self.entries.get(self.entry) else {
                grid.free_set_mut().release(table.index.address);
                self.table += 1;
                self.entries_loaded = false;
                continue;
            };
            if !self.block_loaded {
                grid.read_into(entry.block, BlockType::Value, &mut self.block)
                    .await?;
                let values = table::values(&self.block, entry.block.address, layout.value_size)?;
                self.value_count = values.len() / layout.value_size;
                self.block_loaded = true;
                self.value = 0;
            }
            if self.value == self.value_count {
                grid.free_set_mut().release(entry.block.address);
                self.entry += 1;
                self.block_loaded = false;
                continue;
            }
            return Ok(true);
        }
    }

    /// Whether a current value is available without I/O.
    fn ready(&self) -> bool {
        self.entries_loaded && self.block_loaded && self.value < self.value_count
    }

    /// The values of the current block not consumed yet.
    fn rest<'a>(&'a self, layout: &Layout) -> &'a [u8] {
        let start = crate::block::HEADER_SIZE;
        &self.block
            [start + self.value * layout.value_size..start + self.value_count * layout.value_size]
    }
}

/// What a compaction does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Nothing overlaps the chosen table: it only changes level.
    Move(TableInfo),
    /// Merge the inputs into new tables.
    Merge,
}

/// A compaction into `target_level`, in flight during one half-bar.
#[derive(Debug)]
pub(crate) struct Compaction {
    pub(crate) target_level: u8,
    pub(crate) mode: Mode,
    /// Input `a` is the immutable memory table (target level 0) rather than a table.
    pub(crate) from_immutable: bool,
    immutable_position: usize,
    pub(crate) a: TableCursor,
    pub(crate) b: TableCursor,
    drop_tombstones: bool,
    /// Input values not yet consumed.
    pub(crate) remaining: u64,
    builder: TableBuilder,
    pub(crate) outputs: Vec<TableInfo>,
    /// `snapshot_min` of the outputs: the first op of the next half-bar.
    pub(crate) snapshot_output: u64,
}

impl Compaction {
    pub(crate) fn new(
        grid: &Grid,
        builder: TableBuilder,
        outputs_max: usize,
        entries_max: usize,
    ) -> Compaction {
        Compaction {
            target_level: 0,
            mode: Mode::Merge,
            from_immutable: false,
            immutable_position: 0,
            a: TableCursor::new(grid, entries_max),
            b: TableCursor::new(grid, entries_max),
            drop_tombstones: false,
            remaining: 0,
            builder,
            outputs: Vec::with_capacity(outputs_max),
            snapshot_output: 0,
        }
    }

    /// Set up a merge of the tree's table `a` (or, if `None`, the immutable table's
    /// `immutable_count` values) with its tables `b`, into `target_level`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start_merge(
        &mut self,
        target_level: u8,
        a: Option<usize>,
        immutable_count: usize,
        b: std::ops::Range<usize>,
        tables: &[Table],
        drop_tombstones: bool,
        snapshot_output: u64,
    ) {
        assert!(self.builder.is_empty());
        self.target_level = target_level;
        self.mode = Mode::Merge;
        self.from_immutable = a.is_none();
        self.immutable_position = 0;
        self.a.reset(a.map_or(0..0, |index| index..index + 1));
        self.b.reset(b.clone());
        self.drop_tombstones = drop_tombstones;
        let a_values = match a {
            Some(index) => u64::from(tables[index].info.value_count),
            None => immutable_count as u64,
        };
        self.remaining = a_values
            + tables[b]
                .iter()
                .map(|table| u64::from(table.info.value_count))
                .sum::<u64>();
        self.outputs.clear();
        self.snapshot_output = snapshot_output;
    }

    /// Set up a move of `table` into `target_level`.
    pub(crate) fn start_move(&mut self, target_level: u8, table: TableInfo) {
        self.target_level = target_level;
        self.mode = Mode::Move(table);
        self.from_immutable = false;
        self.a.reset(0..0);
        self.b.reset(0..0);
        self.remaining = 0;
        self.outputs.clear();
    }

    /// Merge up to `quota` input values (all that are left if `last`). `immutable`
    /// holds the immutable table's sorted values.
    pub(crate) async fn beat(
        &mut self,
        grid: &mut Grid,
        layout: &Layout,
        immutable: &[u8],
        tables: &[Table],
        quota: u64,
        last: bool,
    ) -> Result<(), Failure> {
        if self.mode != Mode::Merge {
            return Ok(());
        }
        let size = layout.value_size;
        let mut consumed = 0;
        while last || consumed < quota {
            // The cursors' I/O is awaited only when a block runs out; between, the merge
            // runs over the values in memory in one call of the layout's merge loop.
            let a: &[u8] = if self.from_immutable {
                &immutable[self.immutable_position * size..]
            } else if self.a.ready() || self.a.fill(grid, layout, tables).await? {
                self.a.rest(layout)
            } else {
                &[]
            };
            let b: &[u8] = if self.b.ready() || self.b.fill(grid, layout, tables).await? {
                self.b.rest(layout)
            } else {
                &[]
            };
            if a.is_empty() && b.is_empty() {
                break;
            }
            let key_last = self.builder.key_last();
            let mut run = table::Merge::new(
                a,
                b,
                self.builder.block_space(),
                if last { u64::MAX } else { quota - consumed },
                self.drop_tombstones,
                key_last,
            );
            (layout.merge)(&mut run);
            let (a_taken, b_taken) = (run.a_taken, run.b_taken);
            let (written, key_first, key_last) = (run.written, run.key_first, run.key_last);
            consumed += run.consumed;
            if self.from_immutable {
                self.immutable_position += a_taken;
            } else {
                self.a.value += a_taken;
            }
            self.b.value += b_taken;
            // Adding is synchronous and the builder is apart from the cursors, so values
            // went straight from the input blocks into the output block.
            let block_full = written > 0
                && self.builder.appended(
                    written,
                    key_first,
                    key_last.expect("a run that wrote values has a last key"),
                );
            if block_full
                && let Some(table) = self
                    .builder
                    .write_full_block(grid, self.snapshot_output)
                    .await?
            {
                self.outputs.push(table);
            }
        }
        self.remaining = self.remaining.saturating_sub(consumed);
        if last {
            self.remaining = 0;
            if let Some(table) = self.builder.flush(grid, self.snapshot_output).await? {
                self.outputs.push(table);
            }
        }
        Ok(())
    }
}

/// The largest value any tree may have, in bytes: bounds the scratch of a tombstone.
pub const VALUE_SIZE_MAX: usize = 256;

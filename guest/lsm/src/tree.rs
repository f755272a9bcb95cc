//! A tree of fixed-size values keyed by `u128`: a memory table that collects one bar of
//! updates, flushed at the bar's end into an on-disk table of sorted value blocks and
//! one index block. Point lookups look in memory first, then in tables newest first.
//!
//! Value block body: `value_count` values of `V::SIZE` bytes, sorted by key, unique.
//! Index block body: one [`IndexEntry`] per value block, in key order.

use std::marker::PhantomData;

use crate::block::{self, BlockInfo, BlockType};
use crate::failure::Failure;
use crate::grid::{BlockRef, Grid};
use crate::io::IO_IN_FLIGHT_MAX;

/// A fixed-size value that carries its key.
pub trait Value: Copy + std::fmt::Debug + PartialEq {
    /// Encoded size in bytes.
    const SIZE: usize;
    /// The key the tree orders and finds the value by.
    fn key(&self) -> u128;
    /// Write the encoded form into `out[..Self::SIZE]`.
    fn encode(&self, out: &mut [u8]);
    /// Read the encoded form from `bytes[..Self::SIZE]`.
    fn decode(bytes: &[u8]) -> Self;
}

/// Value blocks a table may have at most: every block of a flush is submitted at once,
/// and the index block needs one more I/O slot.
pub const VALUE_BLOCKS_PER_TABLE_MAX: usize = IO_IN_FLIGHT_MAX - 1;

/// An on-disk table, as the manifest records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableInfo {
    /// The smallest key in the table.
    pub key_min: u128,
    /// The largest key in the table.
    pub key_max: u128,
    /// The table's index block.
    pub index: BlockRef,
    /// The op whose flush wrote the table.
    pub snapshot_min: u64,
    /// Values in the table.
    pub value_count: u32,
    /// The tree the table belongs to.
    pub tree_id: u16,
    /// The level the table sits in.
    pub level: u8,
}

impl TableInfo {
    /// Encoded size: key_min 16, key_max 16, index checksum 16, index address 8,
    /// snapshot_min 8, value_count 4, tree_id 2, level 1, reserved 1.
    pub const SIZE: usize = 72;

    /// Write the encoded form into `out[..72]`.
    pub fn encode(&self, out: &mut [u8]) {
        out[0..16].copy_from_slice(&self.key_min.to_le_bytes());
        out[16..32].copy_from_slice(&self.key_max.to_le_bytes());
        out[32..48].copy_from_slice(&self.index.checksum.to_le_bytes());
        out[48..56].copy_from_slice(&self.index.address.to_le_bytes());
        out[56..64].copy_from_slice(&self.snapshot_min.to_le_bytes());
        out[64..68].copy_from_slice(&self.value_count.to_le_bytes());
        out[68..70].copy_from_slice(&self.tree_id.to_le_bytes());
        out[70] = self.level;
        out[71] = 0;
    }

    /// Read the encoded form from `bytes[..72]`.
    pub fn decode(bytes: &[u8]) -> TableInfo {
        TableInfo {
            key_min: block::u128_at(bytes, 0),
            key_max: block::u128_at(bytes, 16),
            index: BlockRef {
                checksum: block::u128_at(bytes, 32),
                address: block::u64_at(bytes, 48),
            },
            snapshot_min: block::u64_at(bytes, 56),
            value_count: block::u32_at(bytes, 64),
            tree_id: block::u16_at(bytes, 68),
            level: bytes[70],
        }
    }
}

/// One value block as its index block describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IndexEntry {
    key_min: u128,
    key_max: u128,
    block: BlockRef,
}

impl IndexEntry {
    const SIZE: usize = 56;

    fn encode(&self, out: &mut [u8]) {
        out[0..16].copy_from_slice(&self.key_min.to_le_bytes());
        out[16..32].copy_from_slice(&self.key_max.to_le_bytes());
        out[32..48].copy_from_slice(&self.block.checksum.to_le_bytes());
        out[48..56].copy_from_slice(&self.block.address.to_le_bytes());
    }

    fn decode(bytes: &[u8]) -> IndexEntry {
        IndexEntry {
            key_min: block::u128_at(bytes, 0),
            key_max: block::u128_at(bytes, 16),
            block: BlockRef {
                checksum: block::u128_at(bytes, 32),
                address: block::u64_at(bytes, 48),
            },
        }
    }
}

/// A tree of `V`s.
#[derive(Debug)]
pub struct Tree<V: Value> {
    tree_id: u16,
    /// Updates of the current bar, in arrival order; the newest of a key wins.
    mutable: Vec<V>,
    /// On-disk tables, oldest first.
    tables: Vec<TableInfo>,
    /// The smallest and largest key of any table: a lookup outside it needs no I/O
    /// (TigerBeetle keeps the same per-tree range).
    table_key_range: Option<(u128, u128)>,
    table_count_max: usize,
    _value: PhantomData<V>,
}

impl<V: Value> Tree<V> {
    /// A tree whose memory table holds `values_per_bar_max` updates and whose manifest
    /// holds `table_count_max` tables; both are allocated now.
    pub fn new(
        grid: &Grid,
        tree_id: u16,
        values_per_bar_max: usize,
        table_count_max: usize,
    ) -> Result<Tree<V>, Failure> {
        assert!(tree_id > 0);
        let values_per_block = Self::values_per_block(grid);
        let blocks = values_per_bar_max.div_ceil(values_per_block);
        let index_entries_max = grid.body_size_max() / IndexEntry::SIZE;
        if values_per_block == 0
            || blocks > VALUE_BLOCKS_PER_TABLE_MAX
            || blocks > index_entries_max
        {
            return Err(Failure::InvalidArgument(format!(
                "a bar of {values_per_bar_max} values of tree {tree_id} needs {blocks} value \
                 blocks of {} bytes; a table has at most {}",
                grid.block_size(),
                VALUE_BLOCKS_PER_TABLE_MAX.min(index_entries_max)
            )));
        }
        Ok(Tree {
            tree_id,
            mutable: Vec::with_capacity(values_per_bar_max),
            tables: Vec::with_capacity(table_count_max),
            table_key_range: None,
            table_count_max,
            _value: PhantomData,
        })
    }

    fn values_per_block(grid: &Grid) -> usize {
        grid.body_size_max() / V::SIZE
    }

    /// The tree's id, recorded in its blocks and table infos.
    pub fn tree_id(&self) -> u16 {
        self.tree_id
    }

    /// The on-disk tables, oldest first.
    pub fn tables(&self) -> &[TableInfo] {
        &self.tables
    }

    /// Updates waiting in memory for the bar's flush.
    pub fn memory_count(&self) -> usize {
        self.mutable.len()
    }

    /// Insert or replace a value.
    pub fn put(&mut self, value: V) {
        assert!(
            self.mutable.len() < self.mutable.capacity(),
            "memory table of tree {} is full",
            self.tree_id
        );
        self.mutable.push(value);
    }

    /// The newest value for `key` in memory, if any.
    pub fn get_from_memory(&self, key: u128) -> Option<V> {
        self.mutable
            .iter()
            .rev()
            .find(|value| value.key() == key)
            .copied()
    }

    /// The newest value for `key`, from memory or the tables.
    pub async fn get(&self, grid: &Grid, key: u128) -> Result<Option<V>, Failure> {
        if let Some(value) = self.get_from_memory(key) {
            return Ok(Some(value));
        }
        if !self
            .table_key_range
            .is_some_and(|(min, max)| (min..=max).contains(&key))
        {
            return Ok(None);
        }
        for table in self.tables.iter().rev() {
            if !(table.key_min..=table.key_max).contains(&key) {
                continue;
            }
            if let Some(value) = self.get_from_table(grid, table, key).await? {
                return Ok(Some(value));
            }
        }
        Ok(None)
    }

    async fn get_from_table(
        &self,
        grid: &Grid,
        table: &TableInfo,
        key: u128,
    ) -> Result<Option<V>, Failure> {
        let index = grid.read(table.index, BlockType::Index).await?;
        let entries = Self::entries(&index, table.index.address)?;
        // The first value block whose key_max reaches the key is the only candidate.
        let position = entries.partition_point(|entry| entry.key_max < key);
        let Some(entry) = entries.get(position).filter(|entry| entry.key_min <= key) else {
            return Ok(None);
        };
        let values = grid.read(entry.block, BlockType::Value).await?;
        let body = Self::used_body(&values);
        if body.len() % V::SIZE != 0 {
            return Err(Failure::CorruptBlock(format!(
                "value block at address {} holds {} bytes, not a whole number of values",
                entry.block.address,
                body.len()
            )));
        }
        let count = body.len() / V::SIZE;
        let value_at = |index: usize| V::decode(&body[index * V::SIZE..]);
        let position = partition_point(count, |index| value_at(index).key() < key);
        Ok((position < count)
            .then(|| value_at(position))
            .filter(|value| value.key() == key))
    }

    fn used_body(block: &[u8]) -> &[u8] {
        let size = block::u32_at(block, 48) as usize;
        &block[block::HEADER_SIZE..size]
    }

    fn entries(index: &[u8], address: u64) -> Result<Vec<IndexEntry>, Failure> {
        let body = Self::used_body(index);
        if body.len() % IndexEntry::SIZE != 0 {
            return Err(Failure::CorruptBlock(format!(
                "index block at address {address} holds {} bytes, not a whole number of entries",
                body.len()
            )));
        }
        Ok(body
            .chunks_exact(IndexEntry::SIZE)
            .map(IndexEntry::decode)
            .collect())
    }

    /// Write the memory table out as a table (the end of a bar). Values are sorted, and
    /// of several updates to one key only the newest is kept.
    pub async fn flush(&mut self, grid: &mut Grid, snapshot: u64) -> Result<(), Failure> {
        if self.mutable.is_empty() {
            return Ok(());
        }
        if self.tables.len() == self.table_count_max {
            return Err(Failure::OutOfSpace(format!(
                "tree {} holds its maximum of {} tables",
                self.tree_id, self.table_count_max
            )));
        }
        // Stable sort keeps arrival order within a key; the last of each run is newest.
        self.mutable.sort_by_key(|value| value.key());
        let mut write = 0;
        for read in 0..self.mutable.len() {
            let is_last_of_key = read + 1 == self.mutable.len()
                || self.mutable[read + 1].key() != self.mutable[read].key();
            if is_last_of_key {
                self.mutable[write] = self.mutable[read];
                write += 1;
            }
        }
        self.mutable.truncate(write);

        let values_per_block = Self::values_per_block(grid);
        let mut block = grid.new_block();
        let mut index = grid.new_block();
        let mut writes = Vec::with_capacity(VALUE_BLOCKS_PER_TABLE_MAX + 1);
        let mut index_size = 0;
        for chunk in self.mutable.chunks(values_per_block) {
            let address = grid.free_set_mut().acquire()?;
            let body = block::body_mut(&mut block);
            for (value, out) in chunk.iter().zip(body.chunks_exact_mut(V::SIZE)) {
                value.encode(out);
            }
            let info = self.block_info(address, snapshot, BlockType::Value);
            let checksum = block::seal(&mut block, info, chunk.len() * V::SIZE);
            writes.push(grid.write(address, &block));
            let entry = IndexEntry {
                key_min: chunk[0].key(),
                key_max: chunk[chunk.len() - 1].key(),
                block: BlockRef { address, checksum },
            };
            entry.encode(&mut block::body_mut(&mut index)[index_size..]);
            index_size += IndexEntry::SIZE;
        }
        let address = grid.free_set_mut().acquire()?;
        let info = self.block_info(address, snapshot, BlockType::Index);
        let checksum = block::seal(&mut index, info, index_size);
        writes.push(grid.write(address, &index));
        for write in writes {
            write.await;
        }
        let (key_min, key_max) = (
            self.mutable[0].key(),
            self.mutable[self.mutable.len() - 1].key(),
        );
        self.widen_key_range(key_min, key_max);
        self.tables.push(TableInfo {
            key_min,
            key_max,
            index: BlockRef { address, checksum },
            snapshot_min: snapshot,
            value_count: self.mutable.len() as u32,
            tree_id: self.tree_id,
            level: 0,
        });
        self.mutable.clear();
        Ok(())
    }

    fn block_info(&self, address: u64, snapshot: u64, block_type: BlockType) -> BlockInfo {
        BlockInfo {
            address,
            snapshot,
            tree_id: self.tree_id,
            block_type,
        }
    }

    /// Replace the tables (when opening a checkpoint). The memory table must be empty.
    pub fn restore_tables(&mut self, tables: &[TableInfo]) -> Result<(), Failure> {
        assert!(self.mutable.is_empty());
        if tables.len() > self.table_count_max {
            return Err(Failure::InvalidArgument(format!(
                "the checkpoint holds {} tables of tree {}, more than its maximum of {}",
                tables.len(),
                self.tree_id,
                self.table_count_max
            )));
        }
        self.tables.clear();
        self.tables.extend_from_slice(tables);
        self.table_key_range = None;
        for table in tables {
            if table.key_min > table.key_max {
                return Err(Failure::InvalidArgument(format!(
                    "table at address {} of tree {} has key_min above key_max",
                    table.index.address, self.tree_id
                )));
            }
            self.widen_key_range(table.key_min, table.key_max);
        }
        Ok(())
    }

    fn widen_key_range(&mut self, key_min: u128, key_max: u128) {
        self.table_key_range = Some(match self.table_key_range {
            None => (key_min, key_max),
            Some((min, max)) => (min.min(key_min), max.max(key_max)),
        });
    }
}

/// The first index in `0..count` for which `is_before` is false; `is_before` must be
/// true for a prefix and false after it.
fn partition_point(count: usize, is_before: impl Fn(usize) -> bool) -> usize {
    let (mut low, mut high) = (0, count);
    while low < high {
        let middle = low + (high - low) / 2;
        if is_before(middle) {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    low
}

//! Values, and on-disk tables: one index block plus sorted value blocks.
//!
//! Trees store fixed-size values as bytes, described by a [`Layout`]; the [`Value`]
//! trait is the typed view. Value block body: values sorted by key, keys unique. Index
//! block body: one [`IndexEntry`] (56 bytes) per value block, in key order.

use crate::block::{self, BlockInfo, BlockType};
use crate::grid::{BlockRef, Grid};
use carapace_sdk::Failure;

/// A fixed-size value that carries its key.
pub trait Value: Copy + std::fmt::Debug + PartialEq {
    /// Encoded size in bytes.
    const SIZE: usize;
    /// The key the tree orders and finds the value by.
    fn key(&self) -> u128;
    /// Whether this value marks its key deleted.
    fn is_tombstone(&self) -> bool;
    /// The tombstone of `key`.
    fn tombstone(key: u128) -> Self;
    /// Write the encoded form into `out[..Self::SIZE]`.
    fn encode(&self, out: &mut [u8]);
    /// Read the encoded form from `bytes[..Self::SIZE]`.
    fn decode(bytes: &[u8]) -> Self;
}

/// How a tree's values are laid out in bytes.
#[derive(Clone, Copy)]
pub struct Layout {
    /// Bytes per value.
    pub value_size: usize,
    /// The key of an encoded value.
    pub key_of: fn(&[u8]) -> u128,
    /// Whether an encoded value is a tombstone.
    pub is_tombstone: fn(&[u8]) -> bool,
    /// Encode the tombstone of a key into `out[..value_size]`.
    pub tombstone_of: fn(u128, &mut [u8]),
}

impl std::fmt::Debug for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Layout")
            .field("value_size", &self.value_size)
            .finish()
    }
}

impl Layout {
    /// The layout of `V`.
    pub fn of<V: Value>() -> Layout {
        fn key_of<V: Value>(bytes: &[u8]) -> u128 {
            V::decode(bytes).key()
        }
        fn is_tombstone<V: Value>(bytes: &[u8]) -> bool {
            V::decode(bytes).is_tombstone()
        }
        fn tombstone_of<V: Value>(key: u128, out: &mut [u8]) {
            V::tombstone(key).encode(out);
        }
        Layout {
            value_size: V::SIZE,
            key_of: key_of::<V>,
            is_tombstone: is_tombstone::<V>,
            tombstone_of: tombstone_of::<V>,
        }
    }
}

/// An on-disk table, as the manifest records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableInfo {
    /// The smallest key in the table.
    pub key_min: u128,
    /// The largest key in the table.
    pub key_max: u128,
    /// The table's index block.
    pub index: BlockRef,
    /// The first op whose lookups see the table.
    pub snapshot_min: u64,
    /// The last op whose lookups see the table (`u64::MAX` while it is current).
    pub snapshot_max: u64,
    /// Values in the table.
    pub value_count: u32,
    /// The tree the table belongs to.
    pub tree_id: u16,
    /// The level the table sits in.
    pub level: u8,
}

impl TableInfo {
    /// Whether lookups at `snapshot` see the table.
    pub fn visible(&self, snapshot: u64) -> bool {
        (self.snapshot_min..=self.snapshot_max).contains(&snapshot)
    }

    /// Whether the table's key range meets `[key_min, key_max]`.
    pub fn overlaps(&self, key_min: u128, key_max: u128) -> bool {
        self.key_min <= key_max && key_min <= self.key_max
    }
}

/// One value block as its index block describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// The smallest key in the value block.
    pub key_min: u128,
    /// The largest key in the value block.
    pub key_max: u128,
    /// The value block.
    pub block: BlockRef,
}

impl IndexEntry {
    /// Encoded size: key_min 16, key_max 16, checksum 16, address 8.
    pub const SIZE: usize = 56;

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

/// The used body of a verified block.
pub fn used_body(block: &[u8]) -> &[u8] {
    let size = block::u32_at(block, 48) as usize;
    &block[block::HEADER_SIZE..size]
}

/// The used body of a verified index block, checked to be one or more whole entries.
pub fn index_body(index: &[u8], address: u64) -> Result<&[u8], Failure> {
    let body = used_body(index);
    if body.is_empty() || !body.len().is_multiple_of(IndexEntry::SIZE) {
        return Err(Failure::CorruptBlock(format!(
            "index block at address {address} holds {} bytes, not one or more entries",
            body.len()
        )));
    }
    Ok(body)
}

/// Entry `position` of an index body that [`index_body`] checked: decodes one entry, so
/// that a binary search over the entries reads only the entries it probes.
pub fn index_entry_at(body: &[u8], position: usize) -> IndexEntry {
    IndexEntry::decode(&body[position * IndexEntry::SIZE..(position + 1) * IndexEntry::SIZE])
}

/// The entries of a verified index block.
pub fn index_entries(
    index: &[u8],
    address: u64,
    entries: &mut Vec<IndexEntry>,
) -> Result<(), Failure> {
    let body = index_body(index, address)?;
    entries.clear();
    entries.extend(body.chunks_exact(IndexEntry::SIZE).map(IndexEntry::decode));
    Ok(())
}

/// The values of a verified value block, checked to be whole values.
pub fn values(block: &[u8], address: u64, value_size: usize) -> Result<&[u8], Failure> {
    let body = used_body(block);
    if body.is_empty() || !body.len().is_multiple_of(value_size) {
        return Err(Failure::CorruptBlock(format!(
            "value block at address {address} holds {} bytes, not one or more values of {value_size}",
            body.len()
        )));
    }
    Ok(body)
}

/// Find `key` in a table: read its index block, pick the one candidate value block, and
/// binary-search it. Copies the value into `out` and returns whether it was found.
pub async fn lookup(
    grid: &Grid,
    layout: &Layout,
    table: &TableInfo,
    key: u128,
    entries: &mut Vec<IndexEntry>,
    out: &mut [u8],
) -> Result<bool, Failure> {
    let index = grid.read(table.index, BlockType::Index).await?;
    index_entries(&index, table.index.address, entries)?;
    let position = entries.partition_point(|entry| entry.key_max < key);
    let Some(entry) = entries.get(position).filter(|entry| entry.key_min <= key) else {
        return Ok(false);
    };
    let block = grid.read(entry.block, BlockType::Value).await?;
    let body = values(&block, entry.block.address, layout.value_size)?;
    let count = body.len() / layout.value_size;
    let value_at = |index: usize| &body[index * layout.value_size..(index + 1) * layout.value_size];
    let position = partition_point(count, |index| (layout.key_of)(value_at(index)) < key);
    if position < count && (layout.key_of)(value_at(position)) == key {
        out[..layout.value_size].copy_from_slice(value_at(position));
        return Ok(true);
    }
    Ok(false)
}

/// The first index in `0..count` for which `is_before` is false; `is_before` must be
/// true for a prefix and false after it.
pub fn partition_point(count: usize, is_before: impl Fn(usize) -> bool) -> usize {
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

/// Builds tables from values pushed in key order, writing each block as it fills.
/// Its buffers are allocated once, at init.
#[derive(Debug)]
pub struct TableBuilder {
    layout: Layout,
    tree_id: u16,
    value_block: Vec<u8>,
    value_block_count: usize,
    index_block: Vec<u8>,
    index_size: usize,
    values_per_block: usize,
    value_blocks_per_table_max: usize,
    table_value_count: u32,
    table_key_min: u128,
    block_key_min: u128,
    last_key: Option<u128>,
}

impl TableBuilder {
    /// A builder for tables of at most `value_blocks_per_table_max` value blocks.
    pub fn new(
        grid: &Grid,
        layout: Layout,
        tree_id: u16,
        value_blocks_per_table_max: usize,
    ) -> TableBuilder {
        let values_per_block = grid.body_size_max() / layout.value_size;
        assert!(values_per_block > 0);
        assert!(value_blocks_per_table_max * IndexEntry::SIZE <= grid.body_size_max());
        TableBuilder {
            layout,
            tree_id,
            value_block: grid.new_block(),
            value_block_count: 0,
            index_block: grid.new_block(),
            index_size: 0,
            values_per_block,
            value_blocks_per_table_max,
            table_value_count: 0,
            table_key_min: 0,
            block_key_min: 0,
            last_key: None,
        }
    }

    /// Values a table built here holds at most.
    pub fn table_value_count_max(&self) -> usize {
        self.values_per_block * self.value_blocks_per_table_max
    }

    /// Whether no value is waiting to be written.
    pub fn is_empty(&self) -> bool {
        self.table_value_count == 0
    }

    /// Add the next value (keys strictly increasing). Synchronous, as it runs once per
    /// value; returns whether the value block is now full, in which case the caller
    /// must [`TableBuilder::write_full_block`] before adding more.
    pub fn add(&mut self, value: &[u8]) -> bool {
        self.add_keyed(value, (self.layout.key_of)(value))
    }

    /// [`TableBuilder::add`] of a value whose key the caller has decoded already.
    pub fn add_keyed(&mut self, value: &[u8], key: u128) -> bool {
        debug_assert_eq!(key, (self.layout.key_of)(value));
        assert!(
            self.last_key.is_none_or(|last| last < key),
            "values out of order"
        );
        let size = self.layout.value_size;
        let values_in_block = self.table_value_count as usize % self.values_per_block;
        if values_in_block == 0 {
            self.block_key_min = key;
            if self.table_value_count == 0 {
                self.table_key_min = key;
            }
        }
        block::body_mut(&mut self.value_block)
            [values_in_block * size..(values_in_block + 1) * size]
            .copy_from_slice(value);
        self.table_value_count += 1;
        self.last_key = Some(key);
        values_in_block + 1 == self.values_per_block
    }

    /// Write the full value block, and the table if it is full too (returning it).
    pub async fn write_full_block(
        &mut self,
        grid: &mut Grid,
        snapshot: u64,
    ) -> Result<Option<TableInfo>, Failure> {
        assert!((self.table_value_count as usize).is_multiple_of(self.values_per_block));
        self.write_value_block(grid, snapshot).await?;
        if self.value_block_count == self.value_blocks_per_table_max {
            return self.finish(grid, snapshot).await.map(Some);
        }
        Ok(None)
    }

    async fn write_value_block(&mut self, grid: &mut Grid, snapshot: u64) -> Result<(), Failure> {
        let values_in_block = match self.table_value_count as usize % self.values_per_block {
            0 => self.values_per_block,
            partial => partial,
        };
        let address = grid.free_set_mut().acquire()?;
        let info = self.block_info(address, snapshot, BlockType::Value);
        let checksum = block::seal(
            &mut self.value_block,
            info,
            values_in_block * self.layout.value_size,
        );
        grid.write(address, &self.value_block).await;
        let entry = IndexEntry {
            key_min: self.block_key_min,
            key_max: self.last_key.expect("a value block holds values"),
            block: BlockRef { address, checksum },
        };
        entry.encode(&mut block::body_mut(&mut self.index_block)[self.index_size..]);
        self.index_size += IndexEntry::SIZE;
        self.value_block_count += 1;
        Ok(())
    }

    /// Write what is pending as a table (the end of the input); `None` if nothing is.
    pub async fn flush(
        &mut self,
        grid: &mut Grid,
        snapshot: u64,
    ) -> Result<Option<TableInfo>, Failure> {
        if self.is_empty() {
            return Ok(None);
        }
        if !(self.table_value_count as usize).is_multiple_of(self.values_per_block) {
            self.write_value_block(grid, snapshot).await?;
        }
        self.finish(grid, snapshot).await.map(Some)
    }

    async fn finish(&mut self, grid: &mut Grid, snapshot: u64) -> Result<TableInfo, Failure> {
        let address = grid.free_set_mut().acquire()?;
        let info = self.block_info(address, snapshot, BlockType::Index);
        let checksum = block::seal(&mut self.index_block, info, self.index_size);
        grid.write(address, &self.index_block).await;
        let table = TableInfo {
            key_min: self.table_key_min,
            key_max: self.last_key.expect("a table holds values"),
            index: BlockRef { address, checksum },
            snapshot_min: snapshot,
            snapshot_max: u64::MAX,
            value_count: self.table_value_count,
            tree_id: self.tree_id,
            level: 0,
        };
        self.value_block_count = 0;
        self.index_size = 0;
        self.table_value_count = 0;
        self.last_key = None;
        Ok(table)
    }

    fn block_info(&self, address: u64, snapshot: u64, block_type: BlockType) -> BlockInfo {
        BlockInfo {
            address,
            snapshot,
            tree_id: self.tree_id,
            block_type,
        }
    }
}

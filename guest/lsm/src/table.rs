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

/// How a tree's values are laid out in bytes, and the loops that run once per value,
/// compiled for the value type by [`Layout::of`]: a tree calls a loop once per lookup,
/// bar or block, so no call through a pointer is made per value (through wasm, that
/// call and the copy of a value whose size is not a constant cost more than the
/// comparison itself).
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
    /// The position of `key` in sorted values: `Ok` where it is, `Err` where it would go.
    pub(crate) search: fn(&[u8], u128) -> Result<usize, usize>,
    /// The position of the last value of `key` in values in arrival order.
    pub(crate) find_newest: fn(&[u8], u128) -> Option<usize>,
    /// Append `(key, position)` of each value.
    pub(crate) keys: fn(&[u8], &mut Vec<(u128, u32)>),
    /// Append one value to values; returns its key.
    pub(crate) push: fn(&mut Vec<u8>, &[u8]) -> u128,
    /// One run of a compaction's merge; see [`Merge`].
    pub(crate) merge: fn(&mut Merge<'_>),
    /// A bar absorbed into the immutable table; see [`absorb`].
    pub(crate) absorb: Absorb,
}

/// `absorb(immutable, scratch, bar, values)`: see [`absorb`].
pub(crate) type Absorb = fn(&mut Vec<u8>, &mut Vec<u8>, &[(u128, u32)], &[u8]);

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
            key_at::<V>(bytes, 0)
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
            search: search::<V>,
            find_newest: find_newest::<V>,
            keys: keys::<V>,
            push: push::<V>,
            merge: merge::<V>,
            absorb: absorb::<V>,
        }
    }
}

/// The key of value `position` of `values`.
#[inline(always)]
fn key_at<V: Value>(values: &[u8], position: usize) -> u128 {
    key_at_offset::<V>(values, position * V::SIZE)
}

/// The key of the value at byte `offset` of `values`.
#[inline(always)]
fn key_at_offset<V: Value>(values: &[u8], offset: usize) -> u128 {
    V::decode(&values[offset..offset + V::SIZE]).key()
}

fn search<V: Value>(values: &[u8], key: u128) -> Result<usize, usize> {
    let count = values.len() / V::SIZE;
    // Keys that only grow (timestamps, sequential ids) are looked up past the last.
    if count == 0 || key_at::<V>(values, count - 1) < key {
        return Err(count);
    }
    let position = partition_point(count, |index| key_at::<V>(values, index) < key);
    if position < count && key_at::<V>(values, position) == key {
        Ok(position)
    } else {
        Err(position)
    }
}

fn find_newest<V: Value>(values: &[u8], key: u128) -> Option<usize> {
    (0..values.len() / V::SIZE)
        .rev()
        .find(|&index| key_at::<V>(values, index) == key)
}

fn keys<V: Value>(values: &[u8], out: &mut Vec<(u128, u32)>) {
    out.extend(
        values
            .chunks_exact(V::SIZE)
            .enumerate()
            .map(|(index, value)| (V::decode(value).key(), index as u32)),
    );
}

/// Absorb a bar into the immutable table `immutable` (sorted values): `bar` is the
/// bar's `(key, position in values)` sorted by key, arrival order kept within a key,
/// and the last of a key's run, the newest, wins over the others and over an older
/// value of that key. Keys that only grow (timestamps, sequential ids) are appended.
/// Otherwise the bar is merged into `scratch`, which then becomes the immutable table:
/// a bar is short and the table long, so each new key is found by binary search and
/// the older values between new keys are copied in bulk, rather than every older value
/// compared.
fn absorb<V: Value>(
    immutable: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    bar: &[(u128, u32)],
    values: &[u8],
) {
    let newest = bar
        .iter()
        .enumerate()
        .filter(|&(position, &(key, _))| bar.get(position + 1).is_none_or(|&(next, _)| next != key))
        .map(|(_, &(key, index))| {
            let start = index as usize * V::SIZE;
            // A slice of a constant size: copied inline, not by a call to copy memory.
            (key, &values[start..start + V::SIZE])
        });
    let Some(&(key_min, _)) = bar.first() else {
        return;
    };
    let key_max = immutable
        .len()
        .checked_sub(V::SIZE)
        .map(|last| key_at_offset::<V>(immutable, last));
    if key_max.is_none_or(|key_max| key_max < key_min) {
        for (_, value) in newest {
            immutable.extend_from_slice(value);
        }
        return;
    }
    scratch.clear();
    let mut copied = 0;
    for (key, value) in newest {
        let rest = &immutable[copied..];
        let (below, superseded) = match search::<V>(rest, key) {
            Ok(found) => (found, 1),
            Err(below) => (below, 0),
        };
        scratch.extend_from_slice(&rest[..below * V::SIZE]);
        scratch.extend_from_slice(value);
        copied += (below + superseded) * V::SIZE;
    }
    scratch.extend_from_slice(&immutable[copied..]);
    std::mem::swap(immutable, scratch);
}

fn push<V: Value>(values: &mut Vec<u8>, value: &[u8]) -> u128 {
    // A copy of a constant size: inline, rather than a call to copy memory.
    let value = &value[..V::SIZE];
    values.extend_from_slice(value);
    V::decode(value).key()
}

/// One run of a compaction's merge of two sorted inputs into an output block, over the
/// values in memory now: the merge stops where an input's slice runs out (the cursor
/// reads its next block, or the input has ended), where the output is full (the block
/// is written), or where the budget of input values is spent.
#[derive(Debug)]
pub(crate) struct Merge<'a> {
    /// The newer input's values in memory; empty once it has ended.
    pub a: &'a [u8],
    /// The older input's values in memory; empty once it has ended.
    pub b: &'a [u8],
    /// Where the output values go: the free part of the block being built.
    pub out: &'a mut [u8],
    /// Input values this run may consume (a value superseded by the same key in `a`
    /// counts, as does a dropped tombstone).
    pub budget: u64,
    /// Drop tombstones rather than keep them (nothing deeper holds their key).
    pub drop_tombstones: bool,
    /// The last key written before this run, which every key written must exceed.
    pub key_last: Option<u128>,
    /// Values taken from `a`, from `b`, and written to `out`; input values consumed.
    pub a_taken: usize,
    pub b_taken: usize,
    pub written: usize,
    pub consumed: u64,
    /// The first key this run wrote (when `written > 0`).
    pub key_first: u128,
}

impl<'a> Merge<'a> {
    /// A run over `a` (newer) and `b` into `out`, nothing taken yet.
    pub fn new(
        a: &'a [u8],
        b: &'a [u8],
        out: &'a mut [u8],
        budget: u64,
        drop_tombstones: bool,
        key_last: Option<u128>,
    ) -> Merge<'a> {
        Merge {
            a,
            b,
            out,
            budget,
            drop_tombstones,
            key_last,
            a_taken: 0,
            b_taken: 0,
            written: 0,
            consumed: 0,
            key_first: 0,
        }
    }
}

/// The merge: the newer input wins on equal keys, and the older value is consumed
/// with it.
fn merge<V: Value>(run: &mut Merge<'_>) {
    // The loop compiled twice, so that the common one has no tombstone check and one
    // value fewer to keep live.
    if run.drop_tombstones {
        merge_dropping::<V, true>(run);
    } else {
        merge_dropping::<V, false>(run);
    }
}

/// [`merge`], dropping tombstones if `DROP_TOMBSTONES`.
///
/// The cursors are byte offsets: an index times the value's size would be a checked
/// multiply for every value (the guests are built with overflow checks).
fn merge_dropping<V: Value, const DROP_TOMBSTONES: bool>(run: &mut Merge<'_>) {
    let size = V::SIZE;
    let a_end = run.a.len() - run.a.len() % size;
    let b_end = run.b.len() - run.b.len() % size;
    let out_end = run.out.len() - run.out.len() % size;
    let (mut a, mut b, mut out, mut consumed) = (0, 0, 0, 0);
    let mut key_last = run.key_last;
    while consumed < run.budget && out < out_end {
        let (value, key) = match (a < a_end, b < b_end) {
            (true, true) => {
                let (a_key, b_key) = (key_at_offset::<V>(run.a, a), key_at_offset::<V>(run.b, b));
                if a_key <= b_key {
                    a += size;
                    if a_key == b_key {
                        b += size;
                        consumed += 1;
                    }
                    (&run.a[a - size..a], a_key)
                } else {
                    b += size;
                    (&run.b[b - size..b], b_key)
                }
            }
            // The other input has ended: its slice was empty from the start.
            (true, false) if b_end == 0 => {
                a += size;
                (&run.a[a - size..a], key_at_offset::<V>(run.a, a - size))
            }
            (false, true) if a_end == 0 => {
                b += size;
                (&run.b[b - size..b], key_at_offset::<V>(run.b, b - size))
            }
            // Both have ended, or a slice ran out and its cursor must read on.
            _ => break,
        };
        consumed += 1;
        if DROP_TOMBSTONES && V::decode(value).is_tombstone() {
            continue;
        }
        assert!(
            key_last.is_none_or(|last| last < key),
            "values out of order"
        );
        if out == 0 {
            run.key_first = key;
        }
        key_last = Some(key);
        run.out[out..out + size].copy_from_slice(value);
        out += size;
    }
    run.a_taken = a / size;
    run.b_taken = b / size;
    run.written = out / size;
    run.consumed = consumed;
    run.key_last = key_last;
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
    let size = layout.value_size;
    let Ok(position) = (layout.search)(body, key) else {
        return Ok(false);
    };
    out[..size].copy_from_slice(&body[position * size..(position + 1) * size]);
    Ok(true)
}

/// The first index in `0..count` for which `is_before` is false; `is_before` must be
/// true for a prefix and false after it.
pub fn partition_point(count: usize, is_before: impl Fn(usize) -> bool) -> usize {
    if count == 0 {
        return 0;
    }
    // The answer lies in `base..=base + size`. Each turn halves `size` whatever the
    // comparison says, so the loop's shape does not depend on the keys and its body
    // is a conditional move (fewer branches and live values for Cranelift).
    let (mut base, mut size) = (0, count);
    let halve = |base: &mut usize, size: &mut usize| {
        let half = *size / 2;
        let middle = *base + half;
        if is_before(middle) {
            *base = middle;
        }
        *size -= half;
    };
    // Four halvings a turn: a loop's turn pays wasm's fuel and interruption checks.
    // From 16 up, each of the four halves a size of at least 2, as the loop below does.
    while size > 15 {
        halve(&mut base, &mut size);
        halve(&mut base, &mut size);
        halve(&mut base, &mut size);
        halve(&mut base, &mut size);
    }
    while size > 1 {
        halve(&mut base, &mut size);
    }
    // `base` moved only onto indexes before the answer: then the answer is the next
    // one. Index 0 alone was never probed.
    if base > 0 {
        base + 1
    } else {
        usize::from(is_before(0))
    }
}

/// Builds tables from values pushed in key order, writing each block as it fills.
/// Its buffers are allocated once, at init.
#[derive(Debug)]
pub struct TableBuilder {
    layout: Layout,
    tree_id: u16,
    value_block: Vec<u8>,
    /// Values in the value block being filled.
    block_value_count: usize,
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
            block_value_count: 0,
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

    /// The free part of the value block being filled, where a merge writes values.
    pub(crate) fn block_space(&mut self) -> &mut [u8] {
        let size = self.layout.value_size;
        let used = self.block_value_count * size;
        &mut block::body_mut(&mut self.value_block)[used..self.values_per_block * size]
    }

    /// The last key added, which the next must exceed.
    pub(crate) fn key_last(&self) -> Option<u128> {
        self.last_key
    }

    /// Account for `count` values a merge wrote into [`TableBuilder::block_space`],
    /// keys `key_first..=key_last` increasing from [`TableBuilder::key_last`]. Returns
    /// whether the value block is now full, in which case the caller must
    /// [`TableBuilder::write_full_block`] before adding more.
    pub(crate) fn appended(&mut self, count: usize, key_first: u128, key_last: u128) -> bool {
        if count == 0 {
            return false;
        }
        assert!(self.block_value_count + count <= self.values_per_block);
        assert!(self.last_key.is_none_or(|last| last < key_first) && key_first <= key_last);
        if self.block_value_count == 0 {
            self.block_key_min = key_first;
            if self.table_value_count == 0 {
                self.table_key_min = key_first;
            }
        }
        self.block_value_count += count;
        self.table_value_count += count as u32;
        self.last_key = Some(key_last);
        self.block_value_count == self.values_per_block
    }

    /// Write the full value block, and the table if it is full too (returning it).
    pub async fn write_full_block(
        &mut self,
        grid: &mut Grid,
        snapshot: u64,
    ) -> Result<Option<TableInfo>, Failure> {
        assert_eq!(self.block_value_count, self.values_per_block);
        self.write_value_block(grid, snapshot).await?;
        if self.value_block_count == self.value_blocks_per_table_max {
            return self.finish(grid, snapshot).await.map(Some);
        }
        Ok(None)
    }

    async fn write_value_block(&mut self, grid: &mut Grid, snapshot: u64) -> Result<(), Failure> {
        let values_in_block = self.block_value_count;
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
        self.block_value_count = 0;
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
        if self.block_value_count > 0 {
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{Merge, Value, absorb, merge, partition_point};
    use crate::groove::{TOMBSTONE_BIT, UniqueKey};
    use carapace_sdk::testing::SplitMix64;

    fn encoded(key: u128, timestamp: u64) -> Vec<u8> {
        let mut bytes = vec![0; UniqueKey::SIZE];
        UniqueKey { key, timestamp }.encode(&mut bytes);
        bytes
    }

    #[test]
    fn absorb_keeps_each_keys_newest_value_in_key_order() {
        // Older values at even keys; bars of keys below, between, on and above them,
        // some repeated within the bar (arrival order decides the newest), and one bar
        // wholly above them.
        let older: Vec<u8> = (1..=40_u128).flat_map(|key| encoded(key * 2, 1)).collect();
        let bars: [&[u128]; 6] = [
            &[0, 1, 2, 81, 100],
            &[7, 7, 8, 8, 8, 3],
            &[80, 2, 40, 41, 40],
            &[50],
            &[5, 4, 3, 2, 1, 0],
            // All above the older keys: appended.
            &[81, 90, 90, 85],
        ];
        for bar_keys in bars {
            let values: Vec<u8> = (0..)
                .zip(bar_keys)
                .flat_map(|(arrival, &key)| encoded(key, 100 + arrival))
                .collect();
            let mut bar: Vec<(u128, u32)> =
                (0..).zip(bar_keys).map(|(at, &key)| (key, at)).collect();
            bar.sort_by_key(|&(key, _)| key);
            let mut merged = older.clone();
            absorb::<UniqueKey>(&mut merged, &mut Vec::new(), &bar, &values);

            let mut model = BTreeMap::new();
            for value in older
                .chunks(UniqueKey::SIZE)
                .chain(values.chunks(UniqueKey::SIZE))
            {
                model.insert(UniqueKey::decode(value).key(), value.to_vec());
            }
            let expected: Vec<u8> = model.into_values().flatten().collect();
            assert_eq!(merged, expected, "bar {bar_keys:?}");
        }
    }

    /// Sorted values of `count` distinct keys below `key_bound`, a tenth of them
    /// tombstones, the timestamp naming the input.
    fn input(numbers: &mut SplitMix64, count: usize, key_bound: u64, name: u64) -> Vec<u8> {
        let mut keys = std::collections::BTreeSet::new();
        while keys.len() < count {
            keys.insert(u128::from(numbers.below(key_bound)));
        }
        keys.into_iter()
            .flat_map(|key| {
                let tombstone = if numbers.below(10) == 0 {
                    TOMBSTONE_BIT
                } else {
                    0
                };
                encoded(key, name | tombstone)
            })
            .collect()
    }

    /// A compaction's merge of `a` (newer) over `b`, as the compaction runs it: over
    /// slices of blocks of `block_values` (cut shorter at random, as when a cursor's
    /// block is only partly in memory), into output blocks of `out_values`, with a
    /// random budget at every run. Returns the output and the values consumed.
    fn merged(
        numbers: &mut SplitMix64,
        a: &[u8],
        b: &[u8],
        drop_tombstones: bool,
        block_values: usize,
        out_values: usize,
    ) -> (Vec<u8>, u64) {
        let size = UniqueKey::SIZE;
        let (mut a_at, mut b_at) = (0, 0);
        let mut out = vec![0; out_values * size];
        let (mut out_at, mut output, mut consumed) = (0, Vec::new(), 0);
        let mut key_last = None;
        // The slice of an input in memory: to the end of its block, or shorter.
        let slice = |input: &[u8], at: usize, numbers: &mut SplitMix64| -> std::ops::Range<usize> {
            let block_end = (at / (block_values * size) + 1) * block_values * size;
            let end = block_end.min(input.len());
            if at == end || numbers.below(3) != 0 {
                return at..end;
            }
            let values = (end - at) / size;
            at..at + (1 + numbers.below(values as u64) as usize) * size
        };
        while a_at < a.len() || b_at < b.len() {
            let a_slice = slice(a, a_at, numbers);
            let b_slice = slice(b, b_at, numbers);
            let mut run = Merge::new(
                &a[a_slice],
                &b[b_slice],
                &mut out[out_at..],
                1 + numbers.below(12),
                drop_tombstones,
                key_last,
            );
            merge::<UniqueKey>(&mut run);
            // Budget and room are never zero, and an input's slice is empty only once
            // the input has ended: every run takes a value.
            assert!(run.consumed > 0, "no progress");
            assert_eq!(run.consumed as usize, run.a_taken + run.b_taken);
            if run.written > 0 {
                let first = UniqueKey::decode(&run.out[..size]).key();
                assert_eq!(run.key_first, first);
            }
            a_at += run.a_taken * size;
            b_at += run.b_taken * size;
            out_at += run.written * size;
            consumed += run.consumed;
            key_last = run.key_last;
            if out_at == out.len() {
                output.extend_from_slice(&out);
                out_at = 0;
            }
        }
        output.extend_from_slice(&out[..out_at]);
        (output, consumed)
    }

    #[test]
    fn merge_keeps_the_newer_value_of_each_key_across_slices_budgets_and_blocks() {
        let mut numbers = SplitMix64::new(7);
        for round in 0..200 {
            // From disjoint to dense overlaps, and inputs of very different lengths
            // (a level's tables are a growth factor apart).
            let key_bound = [40, 400, 1 << 40][round % 3];
            let a_count = numbers.below(30).min(key_bound) as usize;
            let b_count = numbers.below(240).min(key_bound) as usize;
            let a = input(&mut numbers, a_count, key_bound, 1);
            let b = input(&mut numbers, b_count, key_bound, 2);
            let drop_tombstones = round % 2 == 1;
            let block_values = 1 + numbers.below(9) as usize;
            let out_values = 1 + numbers.below(9) as usize;
            let (output, consumed) = merged(
                &mut numbers,
                &a,
                &b,
                drop_tombstones,
                block_values,
                out_values,
            );

            let mut model = BTreeMap::new();
            for value in b.chunks(UniqueKey::SIZE).chain(a.chunks(UniqueKey::SIZE)) {
                model.insert(UniqueKey::decode(value).key(), value.to_vec());
            }
            let expected: Vec<u8> = model
                .into_values()
                .filter(|value| !(drop_tombstones && UniqueKey::decode(value).is_tombstone()))
                .flatten()
                .collect();
            assert_eq!(output, expected, "round {round}");
            assert_eq!(consumed as usize, (a.len() + b.len()) / UniqueKey::SIZE);
        }
    }

    #[test]
    #[should_panic(expected = "values out of order")]
    fn merge_refuses_an_input_out_of_order() {
        let a: Vec<u8> = [5, 3].into_iter().flat_map(|key| encoded(key, 1)).collect();
        let b = encoded(9, 2);
        let mut out = vec![0; 4 * UniqueKey::SIZE];
        let mut run = Merge::new(&a, &b, &mut out, 10, false, None);
        merge::<UniqueKey>(&mut run);
    }

    #[test]
    fn partition_point_finds_the_end_of_every_prefix() {
        for count in 0..80 {
            for prefix in 0..=count {
                let probed = std::cell::Cell::new(0);
                let found = partition_point(count, |index| {
                    assert!(index < count, "probed {index} of {count}");
                    probed.set(probed.get() + 1);
                    index < prefix
                });
                assert_eq!(found, prefix, "{prefix} of {count}");
                // Halving to one candidate, then checking it: at most ⌈log2⌉ + 1 probes.
                let bound = usize::BITS - count.leading_zeros() + 1;
                assert!(
                    probed.get() <= bound as usize,
                    "{} probes for {count}",
                    probed.get()
                );
                // One probe a halving, and a last one only when the halvings never
                // moved off index 0 (an index the search moved onto is known to be
                // before the answer, so it is not compared again).
                let halvings = (usize::BITS - count.saturating_sub(1).leading_zeros()) as usize;
                assert!(
                    probed.get() <= halvings + usize::from(found <= 1),
                    "{} probes for {prefix} of {count}",
                    probed.get()
                );
            }
        }
    }
}

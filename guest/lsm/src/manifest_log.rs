//! The manifest log: every change to the set of tables, appended as an event to blocks
//! linked backwards, replayed newest first on open, and compacted a little at a time.
//!
//! Block body: the previous block's [`BlockRef`] (24 bytes), this block's `sequence`
//! (u64), then [`Event`]s of 80 bytes. A table's latest event decides its fate on open;
//! compaction re-appends the live events of the oldest block and releases it.

use std::collections::{BTreeSet, VecDeque};

use crate::block::{self, BlockInfo, BlockType};
use crate::grid::{BlockRef, Grid};
use crate::table::{self, TableInfo};
use carapace_sdk::Failure;

/// What happened to a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EventKind {
    /// The table was written.
    Insert = 1,
    /// The table moved to another level (or its event was re-appended).
    Update = 2,
    /// The table is gone.
    Remove = 3,
}

/// One entry of the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The table as of the event.
    pub table: TableInfo,
}

impl Event {
    /// Encoded size: key_min 16, key_max 16, index checksum 16, index address 8,
    /// snapshot_min 8, snapshot_max 8, value_count 4, tree_id 2, level 1, kind 1.
    pub const SIZE: usize = 80;

    fn encode(&self, out: &mut [u8]) {
        let table = &self.table;
        out[0..16].copy_from_slice(&table.key_min.to_le_bytes());
        out[16..32].copy_from_slice(&table.key_max.to_le_bytes());
        out[32..48].copy_from_slice(&table.index.checksum.to_le_bytes());
        out[48..56].copy_from_slice(&table.index.address.to_le_bytes());
        out[56..64].copy_from_slice(&table.snapshot_min.to_le_bytes());
        out[64..72].copy_from_slice(&table.snapshot_max.to_le_bytes());
        out[72..76].copy_from_slice(&table.value_count.to_le_bytes());
        out[76..78].copy_from_slice(&table.tree_id.to_le_bytes());
        out[78] = table.level;
        out[79] = self.kind as u8;
    }

    fn decode(bytes: &[u8], address: u64) -> Result<Event, Failure> {
        let kind = match bytes[79] {
            1 => EventKind::Insert,
            2 => EventKind::Update,
            3 => EventKind::Remove,
            other => {
                return Err(Failure::CorruptBlock(format!(
                    "manifest log block at address {address} holds an event of unknown kind {other}"
                )));
            }
        };
        Ok(Event {
            kind,
            table: TableInfo {
                key_min: block::u128_at(bytes, 0),
                key_max: block::u128_at(bytes, 16),
                index: BlockRef {
                    checksum: block::u128_at(bytes, 32),
                    address: block::u64_at(bytes, 48),
                },
                snapshot_min: block::u64_at(bytes, 56),
                snapshot_max: block::u64_at(bytes, 64),
                value_count: block::u32_at(bytes, 72),
                tree_id: block::u16_at(bytes, 76),
                level: bytes[78],
            },
        })
    }
}

/// Where an event sits: the block's sequence number and the entry's index in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogPosition {
    /// The block's sequence number (increasing from 0 over the life of the log).
    pub sequence: u64,
    /// The entry's index in the block.
    pub entry: u32,
}

/// A written block of the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LogBlock {
    reference: BlockRef,
    sequence: u64,
}

/// Blocks of the log compacted per half-bar, at most: the bound on that work.
pub const COMPACT_BLOCKS_PER_HALF_BAR_MAX: usize = 4;

/// Blocks beyond twice those the live events need that the log may keep before
/// compacting.
pub const SLACK_BLOCKS: usize = 2;

const HEADER_SIZE: usize = BlockRef::SIZE + 8;

/// The log's durable part, as a checkpoint records it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogRef {
    /// The newest written block, or none.
    pub newest: BlockRef,
    /// Written blocks in the log.
    pub block_count: u32,
    /// The sequence number the next block will get.
    pub sequence_next: u64,
}

/// The manifest log.
#[derive(Debug)]
pub struct ManifestLog {
    /// Written blocks, oldest first.
    blocks: VecDeque<LogBlock>,
    blocks_max: usize,
    /// The block being filled; written when full or at a checkpoint.
    open: Vec<u8>,
    open_count: usize,
    sequence_next: u64,
    entries_per_block: usize,
}

/// A table a compacted event may belong to, to ask whether the event is still the
/// table's latest: `(tree_id, index address)`.
pub type TableKey = (u16, u64);

impl ManifestLog {
    /// Events a block of `grid` holds.
    pub fn entries_per_block_for(grid: &Grid) -> usize {
        (grid.body_size_max() - HEADER_SIZE) / Event::SIZE
    }

    /// A log of at most `blocks_max` blocks.
    pub fn new(grid: &Grid, blocks_max: usize) -> ManifestLog {
        let entries_per_block = Self::entries_per_block_for(grid);
        assert!(entries_per_block > 0);
        ManifestLog {
            blocks: VecDeque::with_capacity(blocks_max),
            blocks_max,
            open: grid.new_block(),
            open_count: 0,
            sequence_next: 0,
            entries_per_block,
        }
    }

    /// Events a block holds.
    pub fn entries_per_block(&self) -> usize {
        self.entries_per_block
    }

    /// Written blocks.
    pub fn block_count(&self) -> usize {
        self.blocks.len()
    }

    /// Append `event`, writing the open block first if it is full; returns where the
    /// event sits.
    pub async fn append(
        &mut self,
        grid: &mut Grid,
        event: Event,
        snapshot: u64,
    ) -> Result<LogPosition, Failure> {
        if self.open_count == self.entries_per_block {
            self.write_open_block(grid, snapshot).await?;
        }
        let start = HEADER_SIZE + self.open_count * Event::SIZE;
        event.encode(&mut block::body_mut(&mut self.open)[start..start + Event::SIZE]);
        self.open_count += 1;
        Ok(LogPosition {
            sequence: self.sequence_next,
            entry: (self.open_count - 1) as u32,
        })
    }

    /// Write the open block if it holds events (at a checkpoint, or when full).
    pub async fn write_open_block(
        &mut self,
        grid: &mut Grid,
        snapshot: u64,
    ) -> Result<(), Failure> {
        if self.open_count == 0 {
            return Ok(());
        }
        if self.blocks.len() == self.blocks_max {
            return Err(Failure::OutOfSpace(format!(
                "the manifest log holds its maximum of {} blocks",
                self.blocks_max
            )));
        }
        let address = grid.free_set_mut().acquire()?;
        let previous = self
            .blocks
            .back()
            .map_or(BlockRef::NONE, |block| block.reference);
        let body = block::body_mut(&mut self.open);
        previous.encode(&mut body[..BlockRef::SIZE]);
        body[BlockRef::SIZE..HEADER_SIZE].copy_from_slice(&self.sequence_next.to_le_bytes());
        let info = BlockInfo {
            address,
            snapshot,
            tree_id: 0,
            block_type: BlockType::Manifest,
        };
        let checksum = block::seal(
            &mut self.open,
            info,
            HEADER_SIZE + self.open_count * Event::SIZE,
        );
        grid.write(address, &self.open).await;
        self.blocks.push_back(LogBlock {
            reference: BlockRef { address, checksum },
            sequence: self.sequence_next,
        });
        self.sequence_next += 1;
        self.open_count = 0;
        Ok(())
    }

    /// The durable part, for a checkpoint; the open block must have been written.
    pub fn reference(&self) -> LogRef {
        assert_eq!(self.open_count, 0);
        LogRef {
            newest: self
                .blocks
                .back()
                .map_or(BlockRef::NONE, |block| block.reference),
            block_count: self.blocks.len() as u32,
            sequence_next: self.sequence_next,
        }
    }

    /// Whether the log holds enough blocks beyond what `live_count` events need to be
    /// worth compacting: as many of dead events as of live ones (and a little slack).
    ///
    /// The bound is in proportion to the live events so that compaction's cost per
    /// dead event stays constant as the forest grows: compacting the oldest block then
    /// re-appends about one live event for each dead one it drops. Were the garbage
    /// held to a fixed number of blocks, the oldest block of a large log would be
    /// nearly all live, and each dead event dropped would cost re-appending a block's
    /// worth of live ones.
    pub fn wants_compaction(&self, live_count: usize) -> bool {
        self.blocks.len() > 2 * live_count.div_ceil(self.entries_per_block) + SLACK_BLOCKS
    }

    /// Read the oldest block and remove it from the log: its events and positions, for
    /// the caller to re-append those still live; the block is released.
    pub async fn take_oldest(
        &mut self,
        grid: &mut Grid,
        events: &mut Vec<(Event, LogPosition)>,
    ) -> Result<(), Failure> {
        let oldest = *self.blocks.front().expect("compaction of an empty log");
        read_block(grid, oldest.reference, Some(oldest.sequence), events).await?;
        self.blocks.pop_front();
        grid.free_set_mut().release(oldest.reference.address);
        Ok(())
    }

    /// Open the log `reference` names: every event, newest first, with its position,
    /// each table's first (newest) event only. `visit` sees the live ones.
    pub async fn open(
        &mut self,
        grid: &Grid,
        reference: LogRef,
        mut visit: impl FnMut(Event, LogPosition) -> Result<(), Failure>,
    ) -> Result<(), Failure> {
        if reference.block_count as usize > self.blocks_max
            || reference.newest.is_none() != (reference.block_count == 0)
        {
            return Err(Failure::InvalidArgument(format!(
                "manifest log of {} blocks (newest at address {}) does not fit a log of at most {}",
                reference.block_count, reference.newest.address, self.blocks_max
            )));
        }
        self.blocks.clear();
        self.open_count = 0;
        self.sequence_next = reference.sequence_next;
        let mut seen: BTreeSet<TableKey> = BTreeSet::new();
        let mut events = Vec::with_capacity(self.entries_per_block);
        let mut next = reference.newest;
        let mut expected_sequence = reference.sequence_next;
        for _ in 0..reference.block_count {
            if next.is_none() {
                return Err(Failure::CorruptBlock(format!(
                    "manifest log ends after {} of {} blocks",
                    self.blocks.len(),
                    reference.block_count
                )));
            }
            expected_sequence = expected_sequence.checked_sub(1).ok_or_else(|| {
                Failure::CorruptBlock(format!(
                    "manifest log block at address {} has no sequence",
                    next.address
                ))
            })?;
            let previous = read_block(grid, next, None, &mut events).await?;
            let sequence = events
                .first()
                .map_or(expected_sequence, |(_, position)| position.sequence);
            if sequence > expected_sequence {
                return Err(Failure::CorruptBlock(format!(
                    "manifest log block at address {} has sequence {sequence}, expected at most {expected_sequence}",
                    next.address
                )));
            }
            expected_sequence = sequence;
            self.blocks.push_front(LogBlock {
                reference: next,
                sequence,
            });
            for &(event, position) in events.iter().rev() {
                if seen.insert((event.table.tree_id, event.table.index.address))
                    && event.kind != EventKind::Remove
                {
                    visit(event, position)?;
                }
            }
            next = previous;
        }
        Ok(())
    }

    /// Addresses of the written blocks (all allocated).
    pub fn addresses(&self) -> impl Iterator<Item = u64> + '_ {
        self.blocks.iter().map(|block| block.reference.address)
    }
}

/// Read one log block: its events with positions into `events`; returns the link to
/// the previous block.
async fn read_block(
    grid: &Grid,
    reference: BlockRef,
    expected_sequence: Option<u64>,
    events: &mut Vec<(Event, LogPosition)>,
) -> Result<BlockRef, Failure> {
    let block = grid.read(reference, BlockType::Manifest).await?;
    let body = table::used_body(&block);
    let address = reference.address;
    if body.len() < HEADER_SIZE || !(body.len() - HEADER_SIZE).is_multiple_of(Event::SIZE) {
        return Err(Failure::CorruptBlock(format!(
            "manifest log block at address {address} holds {} bytes, not whole events",
            body.len()
        )));
    }
    let previous = BlockRef::decode(&body[..BlockRef::SIZE]);
    let sequence = block::u64_at(body, BlockRef::SIZE);
    if expected_sequence.is_some_and(|expected| expected != sequence) {
        return Err(Failure::CorruptBlock(format!(
            "manifest log block at address {address} has sequence {sequence}"
        )));
    }
    events.clear();
    for (entry, bytes) in body[HEADER_SIZE..].chunks_exact(Event::SIZE).enumerate() {
        let position = LogPosition {
            sequence,
            entry: entry as u32,
        };
        events.push((Event::decode(bytes, address)?, position));
    }
    Ok(previous)
}

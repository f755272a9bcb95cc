//! The grid scrubber: on a timer in logical time, re-read a bounded number of the blocks
//! the trees' tables hold, past the cache, and verify each against the checksum its
//! referrer stores, so that a block damaged on disk is found while it is cold, not when
//! a lookup or a compaction first needs it.
//!
//! A tour visits every table of every tree, level by level, by key; each tick takes up
//! whole tables until it has read its budget of blocks (a table's index block and each
//! of its value blocks). The cursor is a position, not a table: between ticks
//! compactions move tables, so a tour may skip or repeat a few, which costs a little
//! coverage and nothing else. Only tables in the levels are visited: their blocks are
//! written and stay allocated while the table is there (inputs of a compaction in
//! progress stay until its half-bar ends, and released blocks are reused only after the
//! next checkpoint, which no half-bar straddles).
//!
//! A block that fails verification twice is a `corrupt-block` failure naming its
//! address: one replica has no second copy to repair it from, and going on would risk
//! a wrong reply later.

use carapace_sdk::{Failure, Statistic};

use crate::block::BlockType;
use crate::grid::{BlockRef, Grid};
use crate::table;
use crate::tree::Tree;

/// The timer id of the scrubber. A machine's own timers must use other ids.
pub const SCRUB_TIMER_ID: u64 = 1 << 63;

/// When and how much the scrubber reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScrubSettings {
    /// Scrub every this many timestamp units; 0 never.
    pub interval: u64,
    /// Blocks a tick reads at least (whole tables, so a little more), if there are
    /// that many.
    pub blocks_per_tick: u64,
}

impl ScrubSettings {
    /// The production default: 64 blocks every 1,000,000 timestamp units (about 2,000
    /// ops of the host's workloads), so a grid of a million blocks is toured about every
    /// 30 million ops at a cost of one read per 30 ops.
    pub const PRODUCTION: ScrubSettings = ScrubSettings {
        interval: 1_000_000,
        blocks_per_tick: 64,
    };

    /// The test profile's: 8 blocks every 5,000 units (about 10 ops), so that tests
    /// tour their small grids many times.
    pub const TEST: ScrubSettings = ScrubSettings {
        interval: 5_000,
        blocks_per_tick: 8,
    };

    /// No scrubbing.
    pub const OFF: ScrubSettings = ScrubSettings {
        interval: 0,
        blocks_per_tick: 0,
    };
}

/// Where a tour stands: the next table to visit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Cursor {
    tree: usize,
    level: u8,
    position: usize,
}

/// The scrubber's state: settings, cursor and counts.
#[derive(Debug)]
pub struct Scrubber {
    settings: ScrubSettings,
    cursor: Cursor,
    blocks_verified: u64,
    tours: u64,
}

impl Scrubber {
    /// A scrubber at the start of its first tour.
    pub fn new(settings: ScrubSettings) -> Scrubber {
        Scrubber {
            settings,
            cursor: Cursor::default(),
            blocks_verified: 0,
            tours: 0,
        }
    }

    /// Its settings.
    pub fn settings(&self) -> ScrubSettings {
        self.settings
    }

    /// The timestamp to fire at next: the next multiple of the interval after `now`,
    /// so that a machine reopened at a checkpoint arms it for the same timestamp as
    /// the one that ran on. `None` if scrubbing is off.
    pub fn next_deadline(&self, now: u64) -> Option<u64> {
        let intervals = now.checked_div(self.settings.interval)?;
        Some(
            intervals
                .saturating_add(1)
                .saturating_mul(self.settings.interval),
        )
    }

    /// One tick: verify whole tables from the cursor on until the budget is read or
    /// every table has been visited once in this tick. Returns the blocks verified.
    pub async fn tick(&mut self, grid: &Grid, trees: &[Tree], levels: u8) -> Result<u64, Failure> {
        let mut verified = 0;
        let mut tables_left: usize = trees.iter().map(|tree| tree.tables().len()).sum();
        while verified < self.settings.blocks_per_tick && tables_left > 0 {
            let index = self.next_table(trees, levels);
            verified += verify_table(grid, index).await?;
            tables_left -= 1;
        }
        self.blocks_verified += verified;
        Ok(verified)
    }

    /// The index block of the table at the cursor, moving the cursor past it (to the
    /// next level, tree, or a new tour). There must be a table.
    fn next_table(&mut self, trees: &[Tree], levels: u8) -> BlockRef {
        loop {
            let Cursor {
                tree,
                level,
                position,
            } = self.cursor;
            if let Some(table) = trees[tree].level(level).get(position) {
                self.cursor.position += 1;
                return table.info.index;
            }
            self.cursor = if level + 1 < levels {
                Cursor {
                    tree,
                    level: level + 1,
                    position: 0,
                }
            } else if tree + 1 < trees.len() {
                Cursor {
                    tree: tree + 1,
                    level: 0,
                    position: 0,
                }
            } else {
                self.tours += 1;
                Cursor::default()
            };
        }
    }

    /// Its figures for `describe`.
    pub fn describe(&self, grid: &Grid) -> Statistic {
        Statistic {
            name: "scrubber blocks verified, tours, reads repaired".into(),
            values: vec![self.blocks_verified, self.tours, grid.reads_repaired()],
        }
    }
}

/// Read and verify a table's index block and every value block it names; returns the
/// blocks read.
async fn verify_table(grid: &Grid, index: BlockRef) -> Result<u64, Failure> {
    let block = grid.read_stored(index, BlockType::Index).await?;
    let body = table::index_body(&block, index.address)?;
    let count = body.len() / table::IndexEntry::SIZE;
    for position in 0..count {
        let entry = table::index_entry_at(body, position);
        grid.read_stored(entry.block, BlockType::Value).await?;
    }
    Ok(1 + count as u64)
}

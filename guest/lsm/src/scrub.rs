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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forest::Forest;
    use crate::groove::UniqueKey;
    use crate::table::{Layout, Value};
    use crate::tree::{Shape, TreeConfig};
    use carapace_sdk::Context;
    use carapace_sdk::testing::MemoryHost;

    const SHAPE: Shape = Shape {
        bar_ops: 4,
        levels: 3,
        growth_factor: 2,
        value_blocks_per_table_max: 2,
        flush_bars_max: 1,
    };

    /// A forest with tables in several levels, scrubbing `blocks_per_tick` blocks a tick.
    fn forest_with_tables(host: &MemoryHost, blocks_per_tick: u64) -> (Context, Forest) {
        let context = host.context();
        let tree = TreeConfig {
            tree_id: 1,
            layout: Layout::of::<UniqueKey>(),
            values_per_bar_max: 4 * 16,
            table_count_max: 1024,
        };
        let mut forest = Forest::new(context.clone(), 512, 1 << 12, 16, SHAPE, &[tree]).unwrap();
        forest.set_scrub(ScrubSettings {
            interval: 1,
            blocks_per_tick,
        });
        for op in 1..=64u64 {
            for index in 0..16 {
                let mut bytes = [0; UniqueKey::SIZE];
                UniqueKey {
                    key: u128::from(op * 16 + index),
                    timestamp: op,
                }
                .encode(&mut bytes);
                forest.put(0, &bytes);
            }
            host.block_on(&context, forest.compact(op)).unwrap();
        }
        assert!(forest.tree(0).tables().len() > 4);
        (context, forest)
    }

    fn tick(host: &MemoryHost, context: &Context, forest: &mut Forest) -> Result<(), Failure> {
        host.block_on(context, forest.timer(SCRUB_TIMER_ID))
    }

    fn verified_tours_repaired(forest: &Forest) -> Vec<u64> {
        let statistics = forest.describe();
        statistics.last().unwrap().values.clone()
    }

    #[test]
    fn ticks_read_their_budget_and_tour_every_table() {
        let host = MemoryHost::new(512);
        let (context, mut forest) = forest_with_tables(&host, 3);
        let blocks: u64 = forest
            .tree(0)
            .tables()
            .iter()
            .map(|table| {
                let index = host.block_on(
                    &context,
                    forest.grid().read(table.info.index, BlockType::Index),
                );
                1 + (table::index_body(&index.unwrap(), table.info.index.address)
                    .unwrap()
                    .len()
                    / table::IndexEntry::SIZE) as u64
            })
            .sum();
        let reads_before = host.read_count();
        tick(&host, &context, &mut forest).unwrap();
        let [verified, tours, repaired] = verified_tours_repaired(&forest)[..] else {
            panic!("three figures")
        };
        assert!(
            (3..3 + 3).contains(&verified),
            "{verified} blocks in a tick of 3"
        );
        assert_eq!(
            host.read_count() - reads_before,
            verified,
            "the cache is passed by"
        );
        assert_eq!((tours, repaired), (0, 0));
        while verified_tours_repaired(&forest)[1] == 0 {
            tick(&host, &context, &mut forest).unwrap();
        }
        let verified = verified_tours_repaired(&forest)[0];
        assert!(
            (blocks..blocks + 6).contains(&verified),
            "a tour verifies every table's {blocks} blocks once: {verified}"
        );
    }

    #[test]
    fn a_damaged_read_is_repaired_by_reading_again_and_a_damaged_block_is_corrupt_block() {
        let host = MemoryHost::new(512);
        let (context, mut forest) = forest_with_tables(&host, 1);
        let first = forest.tree(0).level(0).first().copied().or_else(|| {
            (1..SHAPE.levels).find_map(|level| forest.tree(0).level(level).first().copied())
        });
        let address = first.unwrap().info.index.address;
        host.damage_reads(address, 1);
        tick(&host, &context, &mut forest).unwrap();
        assert_eq!(verified_tours_repaired(&forest)[2], 1);
        assert_eq!(forest.grid().reads_repaired(), 1);

        // The same table again, on the next tour: damaged on disk now.
        while verified_tours_repaired(&forest)[1] == 0 {
            tick(&host, &context, &mut forest).unwrap();
        }
        host.damage_reads(address, u32::MAX);
        let failure = (0..64)
            .find_map(|_| tick(&host, &context, &mut forest).err())
            .expect("the tour reaches the damaged block");
        assert!(matches!(failure, Failure::CorruptBlock(_)), "{failure}");
        assert!(
            failure.message().contains(&format!("address {address} ")),
            "{failure}"
        );
    }
}

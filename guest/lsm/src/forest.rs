//! The forest: the grid, the trees of a state machine, the manifest log, and the
//! pacing that drives compaction by op number.
//!
//! A bar is `bar_ops` ops; op `o` is beat `(o - 1) % bar_ops` of its bar. On a
//! half-bar's first beat every tree starts its compactions; each beat does a quota of
//! each; on the half-bar's last beat the results become visible (trees in order, levels
//! in order) and the manifest log compacts a little; on the bar's last beat every
//! tree's mutable table becomes its immutable table. Nothing here depends on time or on
//! I/O completion order, so the same ops give the same blocks at the same addresses.

use crate::block::BlockType;
use crate::checkpoint::CheckpointState;
use crate::free_set::FreeSet;
use crate::grid::Grid;
use crate::manifest_log::{COMPACT_BLOCKS_PER_HALF_BAR_MAX, Event, EventKind, ManifestLog};
use crate::scan::ScanBuffer;
use crate::scrub::{SCRUB_TIMER_ID, ScrubSettings, Scrubber};
use crate::trailer;
use crate::tree::{LEVELS_MAX, Shape, Table, Tree, TreeConfig};
use carapace_sdk::Failure;
use carapace_sdk::{Context, Statistic};
use std::cell::RefCell;

/// The forest of a state machine.
#[derive(Debug)]
pub struct Forest {
    grid: Grid,
    shape: Shape,
    trees: Vec<Tree>,
    log: ManifestLog,
    /// Lent to one scan at a time (scans take `&self`, as lookups do); `None` while lent.
    /// One for all trees: a machine scans one tree at a time, and the buffer's blocks
    /// would be wasted on trees that are never scanned.
    scan_buffer: RefCell<Option<ScanBuffer>>,
    scrubber: Scrubber,
}

impl Forest {
    /// A forest over a grid of `block_count` blocks of `block_size` bytes, with a block
    /// cache of `cache_blocks`, holding `trees` (in this fixed order).
    pub fn new(
        context: Context,
        block_size: u32,
        block_count: u64,
        cache_blocks: usize,
        shape: Shape,
        trees: &[TreeConfig],
    ) -> Result<Forest, Failure> {
        if shape.bar_ops < 2 || !shape.bar_ops.is_multiple_of(2) {
            return Err(Failure::InvalidArgument(format!(
                "a bar of {} ops has no two halves",
                shape.bar_ops
            )));
        }
        if !(1..=LEVELS_MAX).contains(&shape.levels) || shape.growth_factor < 2 {
            return Err(Failure::InvalidArgument(format!(
                "{} levels with growth factor {}: levels must be in 1..={LEVELS_MAX}, growth at least 2",
                shape.levels, shape.growth_factor
            )));
        }
        for (index, tree) in trees.iter().enumerate() {
            assert!(
                trees[..index]
                    .iter()
                    .all(|other| other.tree_id != tree.tree_id)
            );
        }
        let grid = Grid::new(context, block_size, block_count, cache_blocks)?;
        let memory_values_max = trees
            .iter()
            .map(|config| config.values_per_bar_max)
            .max()
            .unwrap_or(0);
        let scan_buffer = ScanBuffer::new(&grid, shape.levels, memory_values_max);
        let trees = trees
            .iter()
            .map(|config| Tree::new(&grid, shape, *config))
            .collect::<Result<Vec<_>, _>>()?;
        let live_events_max: usize = trees_table_count_max(&trees);
        let entries_per_block = ManifestLog::entries_per_block_for(&grid);
        // Live events need this many blocks; compaction keeps the log within twice that.
        let blocks_max = 2 * live_events_max.div_ceil(entries_per_block) + 16;
        let log = ManifestLog::new(&grid, blocks_max);
        Ok(Forest {
            grid,
            shape,
            trees,
            log,
            scan_buffer: RefCell::new(Some(scan_buffer)),
            scrubber: Scrubber::new(ScrubSettings::OFF),
        })
    }

    /// Scrub the grid as `settings` say, from the next [`Forest::arm_scrubber`] on.
    pub fn set_scrub(&mut self, settings: ScrubSettings) {
        self.scrubber = Scrubber::new(settings);
    }

    /// Arm the scrubber's timer (if scrubbing is on) for its next deadline after now:
    /// at `open`, and after each tick.
    pub fn arm_scrubber(&self) {
        let context = self.grid.context();
        if let Some(at) = self.scrubber.next_deadline(context.now()) {
            context.set_timer(SCRUB_TIMER_ID, at);
        }
    }

    /// Whether timer `id` is the forest's: a machine passes those to
    /// [`Forest::timer`].
    pub fn owns_timer(id: u64) -> bool {
        id == SCRUB_TIMER_ID
    }

    /// A timer of the forest's fired: scrub a tick's worth of blocks and re-arm. A
    /// block that fails verification is a `corrupt-block` failure naming its address.
    pub async fn timer(&mut self, id: u64) -> Result<(), Failure> {
        assert!(Forest::owns_timer(id));
        self.scrubber
            .tick(&self.grid, &self.trees, self.shape.levels)
            .await?;
        self.arm_scrubber();
        Ok(())
    }

    /// The grid.
    pub fn grid(&self) -> &Grid {
        &self.grid
    }

    /// The forest's shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The tree at `index` (the order given to [`Forest::new`]).
    pub fn tree(&self, index: usize) -> &Tree {
        &self.trees[index]
    }

    /// The manifest log.
    pub fn manifest_log(&self) -> &ManifestLog {
        &self.log
    }

    /// The forest's figures for `describe`: per tree its tables per level, grid blocks
    /// in use, the bytes of every value its tables and memory tables hold (the
    /// denominator of space amplification), and the manifest log's blocks.
    pub fn describe(&self) -> Vec<Statistic> {
        let mut statistics = Vec::with_capacity(self.trees.len() + 2);
        for tree in &self.trees {
            statistics.push(Statistic {
                name: format!("tree {} tables per level", tree.tree_id()),
                values: (0..self.shape.levels)
                    .map(|level| tree.level(level).len() as u64)
                    .collect(),
            });
        }
        statistics.push(Statistic {
            name: "grid blocks in use".into(),
            values: vec![self.grid.free_set().acquired_count()],
        });
        statistics.push(Statistic {
            name: "value bytes stored".into(),
            values: vec![self.trees.iter().map(Tree::value_bytes_stored).sum()],
        });
        statistics.push(Statistic {
            name: "manifest log blocks".into(),
            values: vec![self.log.block_count() as u64],
        });
        statistics.push(self.scrubber.describe(&self.grid));
        statistics
    }

    /// Insert or replace a value in tree `index`.
    pub fn put(&mut self, index: usize, value: &[u8]) {
        self.trees[index].put(value);
    }

    /// Delete `key` from tree `index`.
    pub fn remove(&mut self, index: usize, key: u128) {
        self.trees[index].remove(key);
    }

    /// [`Forest::get`] where it needs no block (see [`Tree::get_without_io`]): a caller
    /// that awaits `get` only when this is `None` makes no future for the lookups the
    /// memory tables or the key ranges decide, as a new key's are.
    pub fn get_without_io(&self, index: usize, key: u128, out: &mut [u8]) -> Option<bool> {
        self.trees[index].get_without_io(key, out)
    }

    /// The value of `key` in tree `index` as op `snapshot` sees it.
    pub async fn get(
        &self,
        index: usize,
        key: u128,
        snapshot: u64,
        out: &mut [u8],
    ) -> Result<bool, Failure> {
        self.trees[index].get(&self.grid, key, snapshot, out).await
    }

    /// Append to `out` the values of at most `limit` live keys of tree `index` in
    /// `key_min..=key_max`, ascending, as op `snapshot` sees them; see [`Tree::scan`].
    /// One scan at a time: the forest has one scan buffer.
    pub async fn scan(
        &self,
        index: usize,
        key_min: u128,
        key_max: u128,
        snapshot: u64,
        limit: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), Failure> {
        // Taken out for the awaits rather than borrowed across them.
        let mut buffer = self
            .scan_buffer
            .take()
            .expect("one scan at a time: the forest has one scan buffer");
        let result = self.trees[index]
            .scan(
                &self.grid,
                &mut buffer,
                key_min,
                key_max,
                snapshot,
                limit,
                out,
            )
            .await;
        self.scan_buffer.replace(Some(buffer));
        result
    }

    /// One beat of compaction, after op `op` committed.
    pub async fn compact(&mut self, op: u64) -> Result<(), Failure> {
        assert!(op > 0);
        let Forest {
            grid,
            shape,
            trees,
            log,
            ..
        } = self;
        let half_beats = shape.half_bar_beats();
        let beat = (op - 1) % shape.bar_ops;
        let beat_in_half = beat % half_beats;
        let half_bar_op_min = op - beat_in_half;
        if beat_in_half == 0 {
            for tree in trees.iter_mut() {
                tree.start_half_bar(beat < half_beats, half_bar_op_min + half_beats);
            }
        }
        // Most beats find a tree with no compaction in flight: then its beat, a future
        // to set up and poll, is not even made.
        for tree in trees.iter_mut().filter(|tree| tree.is_compacting()) {
            tree.beat(grid, half_beats - beat_in_half).await?;
        }
        if beat_in_half + 1 == half_beats {
            for tree in trees.iter_mut() {
                tree.finish_half_bar(grid, log, half_bar_op_min + half_beats - 1)
                    .await?;
            }
            compact_log(grid, trees, log, op).await?;
        }
        if beat + 1 == shape.bar_ops {
            for tree in trees.iter_mut() {
                tree.swap_memory_tables();
            }
        }
        Ok(())
    }

    /// Refuse a checkpoint interval that would ask for a checkpoint in the middle of a
    /// bar: machines check it at `init`, so that no data directory is created with it.
    pub fn check_checkpoint_interval(&self, checkpoint_interval_ops: u64) -> Result<(), Failure> {
        if checkpoint_interval_ops == 0
            || !checkpoint_interval_ops.is_multiple_of(self.shape.bar_ops)
        {
            return Err(Failure::InvalidArgument(format!(
                "checkpoint interval of {checkpoint_interval_ops} ops is not a positive multiple \
                 of the bar of {} ops: checkpoints are taken at the end of a bar",
                self.shape.bar_ops
            )));
        }
        Ok(())
    }

    /// Write a checkpoint at `op`, which must end a bar, and return its state. Blocks
    /// released before it are free once it returns (the host makes it durable before
    /// the next step).
    pub async fn checkpoint(&mut self, op: u64) -> Result<CheckpointState, Failure> {
        if !op.is_multiple_of(self.shape.bar_ops) {
            return Err(Failure::InvalidArgument(format!(
                "checkpoint at op {op} is not at the end of a bar of {} ops",
                self.shape.bar_ops
            )));
        }
        let Forest {
            grid, trees, log, ..
        } = self;
        for tree in trees.iter() {
            assert_eq!(
                tree.memory_counts().0,
                0,
                "mutable table not swapped at a bar's end"
            );
            assert!(!tree.is_compacting());
        }
        log.write_open_block(grid, op).await?;
        let mut immutable = Vec::new();
        for tree in trees.iter() {
            let values = tree.immutable();
            let count = values.len() / tree.layout().value_size;
            immutable.extend_from_slice(&(count as u32).to_le_bytes());
            immutable.extend_from_slice(values);
        }
        let immutable_addresses = trailer::acquire(grid, immutable.len())?;
        let block_count = grid.free_set().block_count();
        // The free set's own blocks are acquired before it is encoded, so its image
        // includes them; a reopened checkpoint finds them allocated, as here. Acquiring
        // them may lengthen the image (it ends at the highest block in use), so they are
        // acquired until the image fits.
        let mut free_set_addresses = Vec::new();
        while free_set_addresses.len()
            < trailer::block_count_for(grid, grid.free_set().encoded_size())
        {
            free_set_addresses.push(grid.free_set_mut().acquire()?);
        }
        let image = grid.free_set().encode();
        let immutable = trailer::write(
            grid,
            &immutable_addresses,
            BlockType::Immutable,
            op,
            &immutable,
        )
        .await;
        let free_set =
            trailer::write(grid, &free_set_addresses, BlockType::FreeSet, op, &image).await;
        let free_set_mut = grid.free_set_mut();
        free_set_mut.checkpoint_durable();
        for &address in immutable_addresses.iter().chain(&free_set_addresses) {
            free_set_mut.release(address);
        }
        let state = CheckpointState {
            op,
            block_count,
            free_set,
            immutable,
            manifest_log: log.reference(),
        };
        Ok(state)
    }

    /// Open the checkpoint `bytes` names, reproducing the forest exactly as it was
    /// right after that checkpoint was written. Returns its op.
    pub async fn open(&mut self, bytes: &[u8]) -> Result<u64, Failure> {
        let state = CheckpointState::decode(bytes)?;
        let Forest {
            grid,
            shape,
            trees,
            log,
            ..
        } = self;
        let block_count = grid.free_set().block_count();
        if state.block_count != block_count {
            return Err(Failure::InvalidArgument(format!(
                "checkpoint state is for a grid of {} blocks, this grid has {block_count}",
                state.block_count
            )));
        }
        if !state.op.is_multiple_of(shape.bar_ops) {
            return Err(Failure::InvalidArgument(format!(
                "checkpoint op {} is not at the end of a bar of {} ops",
                state.op, shape.bar_ops
            )));
        }
        let (image, free_set_addresses) =
            trailer::read(grid, state.free_set, BlockType::FreeSet).await?;
        let mut free_set = FreeSet::decode(block_count, &image)?;
        log.open(grid, state.manifest_log, |event, log_position| {
            let tree = trees
                .iter_mut()
                .find(|tree| tree.tree_id() == event.table.tree_id)
                .ok_or_else(|| {
                    Failure::CorruptBlock(format!(
                        "manifest log names table at address {} of unknown tree {}",
                        event.table.index.address, event.table.tree_id
                    ))
                })?;
            tree.insert_table(Table {
                info: event.table,
                log_position,
            })
        })
        .await?;
        let (immutable, immutable_addresses) =
            trailer::read(grid, state.immutable, BlockType::Immutable).await?;
        let mut rest = immutable.as_slice();
        for tree in trees.iter_mut() {
            let size = tree.layout().value_size;
            let count = rest
                .get(..4)
                .map(|bytes| u32::from_le_bytes(bytes.try_into().unwrap()) as usize);
            let values = count
                .and_then(|count| count.checked_mul(size)?.checked_add(4))
                .and_then(|end| rest.get(4..end));
            let Some(values) = values else {
                return Err(Failure::CorruptBlock(format!(
                    "immutable tables trailer at address {} is short",
                    state.immutable.head.address
                )));
            };
            tree.restore_immutable(values)?;
            rest = &rest[4 + values.len()..];
        }
        if !rest.is_empty() {
            return Err(Failure::CorruptBlock(format!(
                "immutable tables trailer at address {} holds {} bytes past its last tree",
                state.immutable.head.address,
                rest.len()
            )));
        }
        let referenced = trees
            .iter()
            .flat_map(|tree| tree.tables().iter().map(|table| table.info.index.address))
            .chain(log.addresses());
        for address in referenced
            .chain(immutable_addresses.iter().copied())
            .chain(free_set_addresses.iter().copied())
        {
            if !(1..=block_count).contains(&address) || !free_set.is_acquired(address) {
                return Err(Failure::CorruptBlock(format!(
                    "block at address {address}, which the checkpoint refers to, is free in its free set"
                )));
            }
        }
        for &address in immutable_addresses.iter().chain(&free_set_addresses) {
            free_set.release(address);
        }
        grid.set_free_set(free_set);
        Ok(state.op)
    }
}

fn trees_table_count_max(trees: &[Tree]) -> usize {
    trees.iter().map(Tree::table_count_max).sum()
}

/// Compact the manifest log a little: while it holds more blocks than its live events
/// need, re-append the live events of its oldest block and release that block, at
/// most [`COMPACT_BLOCKS_PER_HALF_BAR_MAX`] blocks per half-bar.
async fn compact_log(
    grid: &mut Grid,
    trees: &mut [Tree],
    log: &mut ManifestLog,
    op: u64,
) -> Result<(), Failure> {
    let live_count: usize = trees.iter().map(|tree| tree.tables().len()).sum();
    let mut events = Vec::with_capacity(log.entries_per_block());
    for _ in 0..COMPACT_BLOCKS_PER_HALF_BAR_MAX {
        if !log.wants_compaction(live_count) {
            break;
        }
        log.take_oldest(grid, &mut events).await?;
        for &(event, position) in &events {
            let Some(tree) = trees
                .iter_mut()
                .find(|tree| tree.tree_id() == event.table.tree_id)
            else {
                continue;
            };
            if let Some(table) = tree.table_with_event_at(&event.table, position) {
                let event = Event {
                    kind: EventKind::Update,
                    table,
                };
                let position = log.append(grid, event, op).await?;
                tree.set_log_position(&table, position);
            }
        }
    }
    Ok(())
}

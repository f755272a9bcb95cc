//! `carapace inspect DIR`: what a data directory holds — the superblock copies, the
//! checkpoint, the journal's range, and the shape of the echo machine's LSM forest at
//! the checkpoint — as text or `--json`. It only reads.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::Args;
use serde::Serialize;

use crate::context::{HostContext, IoOrder};
use crate::disk::OsFile;
use crate::durable::{GRID_FILE, JOURNAL_FILE, SUPERBLOCK_FILE};
use crate::journal::Journal;
use crate::machine::NativeMachine;
use crate::replica::Replica;
use crate::storage::FileStorage;
use crate::superblock::{COPIES, Superblock, SuperblockState};

/// Describe a data directory.
#[derive(Debug, Args)]
pub struct InspectCommand {
    /// The data directory (`carapace run --data DIR`); it is only read.
    dir: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// What `inspect` reports.
#[derive(Clone, Debug, Serialize)]
pub struct InspectReport {
    /// Which superblock copies are valid.
    pub superblock_copies_valid: [bool; COPIES],
    /// The newest valid copy's sequence.
    pub superblock_sequence: u64,
    /// The published checkpoint, if any.
    pub checkpoint: Option<CheckpointReport>,
    /// Ops in the journal (1 to this).
    pub journal_ops: u64,
    /// Bytes of valid journal entries.
    pub journal_bytes: u64,
    /// Bytes of a torn tail after them (cut at the next recovery).
    pub journal_torn_bytes: u64,
    /// The echo machine's forest at the checkpoint, if it could be opened.
    pub lsm: Option<LsmReport>,
    /// Why the forest could not be opened, if it could not.
    pub lsm_error: Option<String>,
}

/// The published checkpoint.
#[derive(Clone, Debug, Serialize)]
pub struct CheckpointReport {
    /// Its op.
    pub op: u64,
    /// That op's timestamp.
    pub timestamp: u64,
    /// Its id, in hex.
    pub id: String,
}

/// The shape of the forest.
#[derive(Clone, Debug, Serialize)]
pub struct LsmReport {
    /// Per tree: its id and its tables per level.
    pub trees: Vec<TreeReport>,
    /// Grid blocks allocated.
    pub blocks_in_use: u64,
    /// Blocks of the manifest log.
    pub manifest_log_blocks: usize,
}

/// One tree's shape.
#[derive(Clone, Debug, Serialize)]
pub struct TreeReport {
    /// The tree id.
    pub tree_id: u16,
    /// Tables in each level, from level 0.
    pub tables_per_level: Vec<usize>,
}

impl InspectCommand {
    /// Print the report.
    pub fn execute(self) -> Result<()> {
        let report = inspect(&self.dir)?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
            return Ok(());
        }
        let valid: Vec<&str> = report
            .superblock_copies_valid
            .iter()
            .map(|&valid| if valid { "valid" } else { "damaged" })
            .collect();
        println!(
            "superblock  sequence {}, copies {}",
            report.superblock_sequence,
            valid.join(" ")
        );
        match &report.checkpoint {
            Some(checkpoint) => {
                println!(
                    "checkpoint  op {} timestamp {} id {}",
                    checkpoint.op, checkpoint.timestamp, checkpoint.id
                )
            }
            None => println!("checkpoint  none yet"),
        }
        println!(
            "journal     ops 1..={}, {} bytes, {} torn bytes",
            report.journal_ops, report.journal_bytes, report.journal_torn_bytes
        );
        if let Some(lsm) = &report.lsm {
            println!(
                "grid        {} blocks in use, manifest log {} blocks",
                lsm.blocks_in_use, lsm.manifest_log_blocks
            );
            for tree in &lsm.trees {
                println!(
                    "tree {}      tables per level {:?}",
                    tree.tree_id, tree.tables_per_level
                );
            }
        }
        if let Some(error) = &report.lsm_error {
            println!("lsm         not opened: {error}");
        }
        Ok(())
    }
}

/// The options the data directory at `dir` was created with.
pub fn stored_config(dir: &Path) -> Result<crate::replica::ReplicaConfig> {
    let mut file = OsFile::open_read_only(&dir.join(SUPERBLOCK_FILE))
        .with_context(|| format!("opening the superblock of `{}`", dir.display()))?;
    let (state, _) = Superblock::read_copies(&mut file)?;
    Ok(state
        .with_context(|| format!("`{}` holds no valid superblock", dir.display()))?
        .config)
}

/// Read what `dir` holds, changing nothing.
pub fn inspect(dir: &Path) -> Result<InspectReport> {
    let mut superblock_file = OsFile::open_read_only(&dir.join(SUPERBLOCK_FILE))
        .with_context(|| format!("opening the superblock of `{}`", dir.display()))?;
    let (state, valid) = Superblock::read_copies(&mut superblock_file)?;
    let state = state.with_context(|| format!("`{}` holds no valid superblock", dir.display()))?;
    let journal_file = OsFile::open_read_only(&dir.join(JOURNAL_FILE))?;
    let (_, journal) = Journal::open_read_only(Box::new(journal_file))?;
    let (lsm, lsm_error) = match lsm_shape(dir, &state) {
        Ok(lsm) => (Some(lsm), None),
        Err(error) => (None, Some(format!("{error:#}"))),
    };
    Ok(InspectReport {
        superblock_copies_valid: valid,
        superblock_sequence: state.sequence,
        checkpoint: state
            .checkpoint
            .as_ref()
            .map(|checkpoint| CheckpointReport {
                op: checkpoint.op,
                timestamp: checkpoint.timestamp,
                id: format!("{:032x}", checkpoint.id()),
            }),
        journal_ops: journal.end.op,
        journal_bytes: journal.end.offset,
        journal_torn_bytes: journal.torn_bytes,
        lsm,
        lsm_error,
    })
}

/// Open the echo machine natively at the checkpoint, over the grid file read-only.
fn lsm_shape(dir: &Path, state: &SuperblockState) -> Result<LsmReport> {
    let grid = OsFile::open_read_only(&dir.join(GRID_FILE))?;
    let options = &state.config.options;
    let storage = FileStorage::new(Box::new(grid), options.block_size);
    let context = HostContext::new(
        Box::new(storage),
        options.block_size,
        options.block_count,
        IoOrder::Fifo,
    );
    let mut replica = Replica::open(
        NativeMachine::new(context),
        state.config.clone(),
        state.checkpoint.clone(),
    )?;
    let echo = replica
        .machine_mut()
        .machine()
        .context("the machine is busy")?;
    let forest = echo.forest();
    let levels = forest.shape().levels;
    let trees = (0..3)
        .map(|index| {
            let tree = forest.tree(index);
            TreeReport {
                tree_id: tree.tree_id(),
                tables_per_level: (0..levels).map(|level| tree.level(level).len()).collect(),
            }
        })
        .collect();
    Ok(LsmReport {
        trees,
        blocks_in_use: forest.grid().free_set().acquired_count(),
        manifest_log_blocks: forest.manifest_log().block_count(),
    })
}

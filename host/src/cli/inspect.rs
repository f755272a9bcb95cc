//! `carapace inspect DIR`: what a data directory holds, as the host sees it — the
//! superblock copies, the machine that wrote it, its options, the checkpoint, the
//! journal's range, the grid file — and the machine's own figures at the checkpoint
//! (for machines on `carapace-lsm`, its trees' tables per level), as text or `--json`.
//! It only reads.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::Args;
use serde::Serialize;

use super::run::MachineArgs;
use crate::durable::{GRID_FILE, JOURNAL_FILE, SUPERBLOCK_FILE, read_superblock};
use crate::imports::{HostImports, IoOrder};
use crate::journal::Journal;
use crate::os::OsFile;
use crate::replica::Replica;
use crate::storage::{FileStorage, OverlayStorage};
use crate::superblock::{COPIES, Superblock, SuperblockState};

/// Describe a data directory.
#[derive(Debug, Args)]
pub struct InspectCommand {
    /// The data directory (`carapace run --data DIR`); it is only read.
    dir: PathBuf,
    /// The machine to open the checkpoint with; by default the embedded machine the
    /// directory names.
    #[command(flatten)]
    machine: MachineArgs,
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
    /// The machine that wrote the directory.
    pub machine: MachineReport,
    /// The options the directory was created with.
    pub options: OptionsReport,
    /// The published checkpoint, if any.
    pub checkpoint: Option<CheckpointReport>,
    /// Ops in the journal (1 to this).
    pub journal_ops: u64,
    /// Bytes of valid journal entries.
    pub journal_bytes: u64,
    /// Bytes of a torn tail after them (cut at the next recovery).
    pub journal_torn_bytes: u64,
    /// The grid file's length in bytes (it is sparse).
    pub grid_file_bytes: u64,
    /// Bytes the file system has allocated to the grid file: the grid in use.
    pub grid_allocated_bytes: u64,
    /// The machine's figures at the checkpoint, if it could be opened.
    pub statistics: Vec<StatisticReport>,
    /// Why the machine could not be opened, if it could not.
    pub machine_error: Option<String>,
}

/// The machine's identity as recorded.
#[derive(Clone, Debug, Serialize)]
pub struct MachineReport {
    /// Its name.
    pub name: String,
    /// The version that published last.
    pub version: String,
    /// Its state format.
    pub state_format: u32,
}

/// The recorded options.
#[derive(Clone, Debug, Serialize)]
pub struct OptionsReport {
    /// The largest request body.
    pub batch_size_limit: u32,
    /// The largest reply.
    pub reply_size_limit: u32,
    /// Ops between checkpoints.
    pub checkpoint_interval_ops: u64,
    /// Bytes per block.
    pub block_size: u32,
    /// Blocks in the grid.
    pub block_count: u64,
    /// Machine settings.
    pub settings: Vec<(String, String)>,
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

/// One figure the machine reports.
#[derive(Clone, Debug, Serialize)]
pub struct StatisticReport {
    /// What it is.
    pub name: String,
    /// Its values.
    pub values: Vec<u64>,
}

impl InspectCommand {
    /// Print the report.
    pub fn execute(self, out: &mut dyn std::io::Write) -> Result<()> {
        let report = inspect(&self.dir, &self.machine)?;
        if self.json {
            say!(out, "{}", serde_json::to_string_pretty(&report)?)?;
            return Ok(());
        }
        let valid: Vec<&str> = report
            .superblock_copies_valid
            .iter()
            .map(|&valid| if valid { "valid" } else { "damaged" })
            .collect();
        say!(
            out,
            "superblock  sequence {}, copies {}",
            report.superblock_sequence,
            valid.join(" ")
        )?;
        let machine = &report.machine;
        say!(
            out,
            "machine     `{}` {} (state format {})",
            machine.name,
            machine.version,
            machine.state_format
        )?;
        let options = &report.options;
        say!(
            out,
            "options     batch {} B, reply {} B, checkpoint every {} ops, {} blocks of {} B, \
             settings {:?}",
            options.batch_size_limit,
            options.reply_size_limit,
            options.checkpoint_interval_ops,
            options.block_count,
            options.block_size,
            options.settings
        )?;
        match &report.checkpoint {
            Some(checkpoint) => say!(
                out,
                "checkpoint  op {} timestamp {} id {}",
                checkpoint.op,
                checkpoint.timestamp,
                checkpoint.id
            ),
            None => say!(out, "checkpoint  none yet"),
        }?;
        say!(
            out,
            "journal     ops 1..={}, {} bytes, {} torn bytes",
            report.journal_ops,
            report.journal_bytes,
            report.journal_torn_bytes
        )?;
        say!(
            out,
            "grid        file of {} bytes, {} allocated",
            report.grid_file_bytes,
            report.grid_allocated_bytes
        )?;
        for statistic in &report.statistics {
            say!(out, "machine     {} {:?}", statistic.name, statistic.values)?;
        }
        if let Some(error) = &report.machine_error {
            say!(out, "machine     not opened: {error}")?;
        }
        Ok(())
    }
}

/// The superblock state of the data directory at `dir`.
pub fn read_state(dir: &Path) -> Result<SuperblockState> {
    let path = dir.join(SUPERBLOCK_FILE);
    let mut file =
        OsFile::open_read_only(&path).with_context(|| format!("opening `{}`", path.display()))?;
    Ok(read_superblock(&mut file)?)
}

/// Read what `dir` holds, changing nothing.
pub fn inspect(dir: &Path, machine: &MachineArgs) -> Result<InspectReport> {
    let superblock_path = dir.join(SUPERBLOCK_FILE);
    let mut superblock_file = OsFile::open_read_only(&superblock_path)
        .with_context(|| format!("opening `{}`", superblock_path.display()))?;
    let (_, valid) = Superblock::read_copies(&mut superblock_file)?;
    let state = read_superblock(&mut superblock_file)?;
    let journal_path = dir.join(JOURNAL_FILE);
    let journal_file = OsFile::open_read_only(&journal_path)
        .with_context(|| format!("opening `{}`", journal_path.display()))?;
    let (mut journal, journal_report) =
        Journal::open_read_only(Box::new(journal_file), state.directory_id)?;
    crate::replay::tie_journal_to_superblock(&state, &mut journal)?;
    let grid_path = dir.join(GRID_FILE);
    let grid_metadata = std::fs::metadata(&grid_path)
        .with_context(|| format!("reading `{}`", grid_path.display()))?;
    let grid_file_bytes = grid_metadata.len();
    // `st_blocks` counts 512-byte units, whatever the file system's block size.
    let grid_allocated_bytes = std::os::unix::fs::MetadataExt::blocks(&grid_metadata) * 512;
    let (statistics, machine_error) = match machine_statistics(dir, &state, machine) {
        Ok(statistics) => (statistics, None),
        Err(error) => (Vec::new(), Some(format!("{error:#}"))),
    };
    let options = &state.options;
    Ok(InspectReport {
        superblock_copies_valid: valid,
        superblock_sequence: state.sequence,
        machine: MachineReport {
            name: state.identity.name.clone(),
            version: state.identity.version.clone(),
            state_format: state.identity.state_format,
        },
        options: OptionsReport {
            batch_size_limit: options.batch_size_limit,
            reply_size_limit: options.reply_size_limit,
            checkpoint_interval_ops: options.checkpoint_interval_ops,
            block_size: options.block_size,
            block_count: options.block_count,
            settings: options.settings.clone(),
        },
        checkpoint: state
            .checkpoint
            .as_ref()
            .map(|checkpoint| CheckpointReport {
                op: checkpoint.op,
                timestamp: checkpoint.timestamp,
                id: format!("{:032x}", checkpoint.id()),
            }),
        journal_ops: journal_report.end.op,
        journal_bytes: journal_report.end.offset,
        journal_torn_bytes: journal_report.torn_bytes,
        grid_file_bytes,
        grid_allocated_bytes,
        statistics,
        machine_error,
    })
}

/// Open the machine at the checkpoint over the grid file (writes stay in memory) and
/// ask for its figures.
fn machine_statistics(
    dir: &Path,
    state: &SuperblockState,
    machine: &MachineArgs,
) -> Result<Vec<StatisticReport>> {
    let (_, factory) = machine.load(&state.identity.name)?;
    let grid = OsFile::open_read_only(&dir.join(GRID_FILE))?;
    let options = &state.options;
    let storage = OverlayStorage::new(Box::new(FileStorage::new(
        Box::new(grid),
        options.block_size,
    )));
    let imports = HostImports::new(
        Box::new(storage),
        options.block_size,
        options.block_count,
        IoOrder::Fifo,
    );
    let mut instance = factory.instance(imports)?;
    crate::durable::check_identity(
        &state.identity,
        &crate::replica::identify(instance.as_mut())?,
    )?;
    let mut replica = Replica::open(instance, options.clone(), state.checkpoint.clone())?;
    Ok(replica
        .describe()?
        .into_iter()
        .map(|statistic| StatisticReport {
            name: statistic.name,
            values: statistic.values,
        })
        .collect())
}

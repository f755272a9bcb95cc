//! `carapace replay DIR`: re-execute a data directory's journal from genesis on a fresh
//! grid, checking every reply checksum and checkpoint id against what was recorded;
//! against another module, the check to run before upgrading.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::Args;

use super::run::Target;
use crate::context::{HostContext, IoOrder};
use crate::disk::OsFile;
use crate::durable::{self, GRID_FILE, JOURNAL_FILE, SUPERBLOCK_FILE};
use crate::journal::{Journal, Position};
use crate::machine::{Machine, NativeMachine};
use crate::replica::{Checkpoint, Replica, ReplicaConfig};
use crate::storage::{FileStorage, MemoryStorage, OverlayStorage};
use crate::superblock::Superblock;
use crate::wasm::{Limits, Runtime};

/// Replay a recorded log and report the first divergence, if any.
#[derive(Debug, Args)]
pub struct ReplayCommand {
    /// The data directory (`carapace run --data DIR`); it is only read.
    dir: PathBuf,
    /// The module to replay with; the embedded echo machine by default.
    #[arg(long)]
    module: Option<PathBuf>,
    /// Where the state machine runs (`native` runs the built-in echo machine).
    #[arg(long, value_enum, default_value_t = Target::Wasm)]
    target: Target,
    /// Start at the directory's published checkpoint (its grid is read, never
    /// written) instead of at genesis.
    #[arg(long)]
    from_checkpoint: bool,
}

/// How a replay ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayReport {
    /// Ops replayed identically.
    pub identical_through: u64,
    /// Checkpoint ids verified on the way.
    pub checkpoints_verified: u64,
    /// The first divergence, if the replay found one.
    pub divergence: Option<String>,
}

impl ReplayCommand {
    /// Replay and print the verdict; a divergence is an error (exit status 1).
    pub fn execute(self) -> Result<()> {
        let progress = std::io::stderr().is_terminal();
        let report = replay(
            &self.dir,
            self.module.as_deref(),
            self.target,
            self.from_checkpoint,
            progress,
        )?;
        match &report.divergence {
            None => {
                println!(
                    "identical through op {} ({} checkpoint ids verified)",
                    report.identical_through, report.checkpoints_verified
                );
                Ok(())
            }
            Some(divergence) => bail!(
                "identical through op {}, then: {divergence}",
                report.identical_through
            ),
        }
    }
}

/// Replay the journal of `dir` from genesis with `module` (or the embedded echo
/// machine) on a fresh in-memory grid.
pub fn replay(
    dir: &std::path::Path,
    module: Option<&std::path::Path>,
    target: Target,
    from_checkpoint: bool,
    progress: bool,
) -> Result<ReplayReport> {
    let mut superblock_file = OsFile::open_read_only(&dir.join(SUPERBLOCK_FILE))
        .with_context(|| format!("opening the superblock of `{}`", dir.display()))?;
    let (state, _) = Superblock::read_copies(&mut superblock_file)?;
    let state = state.with_context(|| format!("`{}` holds no valid superblock", dir.display()))?;
    let journal_file = OsFile::open_read_only(&dir.join(JOURNAL_FILE))?;
    let (journal, journal_report) = Journal::open_read_only(Box::new(journal_file))?;
    let config = state.config;
    let (storage, checkpoint): (Box<dyn crate::storage::Storage>, _) = if from_checkpoint {
        let grid = OsFile::open_read_only(&dir.join(GRID_FILE))
            .with_context(|| format!("opening the grid of `{}`", dir.display()))?;
        let base = FileStorage::new(Box::new(grid), config.options.block_size);
        let checkpoint = state
            .checkpoint
            .map(|checkpoint| (checkpoint, state.journal));
        (Box::new(OverlayStorage::new(Box::new(base))), checkpoint)
    } else {
        (Box::new(MemoryStorage::new()), None)
    };
    let context = HostContext::new(
        storage,
        config.options.block_size,
        config.options.block_count,
        IoOrder::Fifo,
    );
    let total = journal_report.end.op;
    match target {
        Target::Wasm => {
            let bytes = match module {
                Some(path) => {
                    std::fs::read(path).with_context(|| format!("reading `{}`", path.display()))?
                }
                None => crate::ECHO_COMPONENT.to_vec(),
            };
            let runtime = Runtime::new(Limits::default())?;
            let component = runtime.load(&bytes)?;
            replay_with(
                runtime.instantiate(&component, context)?,
                config,
                checkpoint,
                journal,
                total,
                progress,
            )
        }
        Target::Native => {
            if module.is_some() {
                bail!("`--target native` replays with the built-in echo machine; drop `--module`");
            }
            replay_with(
                NativeMachine::new(context),
                config,
                checkpoint,
                journal,
                total,
                progress,
            )
        }
    }
}

/// Replay the entries of `journal` after `checkpoint` (all of them without one) on
/// `machine`, whose storage holds that checkpoint (or nothing), checking replies and
/// checkpoint ids; stops at the first divergence and reports it. A checkpoint comes
/// with the journal position its superblock recorded, which the journal must match.
pub fn replay_with<M: Machine>(
    machine: M,
    config: ReplicaConfig,
    checkpoint: Option<(Checkpoint, Position)>,
    mut journal: Journal,
    total: u64,
    progress: bool,
) -> Result<ReplayReport> {
    let start = checkpoint
        .as_ref()
        .map_or(0, |(checkpoint, _)| checkpoint.op);
    let published = checkpoint.as_ref().map(|(_, position)| *position);
    let mut replica = Replica::open(
        machine,
        config,
        checkpoint.map(|(checkpoint, _)| checkpoint),
    )?;
    let mut report = ReplayReport {
        identical_through: start,
        checkpoints_verified: 0,
        divergence: None,
    };
    let step = (total / 50).max(1);
    let result = journal.read_all(|entry, position| {
        if entry.request.op < start {
            return Ok(());
        }
        if entry.request.op == start {
            anyhow::ensure!(
                Some(position) == published,
                "the journal entry of checkpoint op {start} does not match the superblock"
            );
            return Ok(());
        }
        durable::replay_one(&mut replica, &entry)?;
        report.identical_through = entry.request.op;
        report.checkpoints_verified += u64::from(entry.checkpoint_id.is_some());
        if progress && entry.request.op % step == 0 {
            let done = (entry.request.op * 50 / total.max(1)) as usize;
            eprint!(
                "\r[{}{}] op {} of {total}",
                "#".repeat(done),
                " ".repeat(50 - done),
                entry.request.op
            );
            let _ = std::io::stderr().flush();
        }
        Ok(())
    });
    if progress {
        eprintln!();
    }
    if let Err(error) = result {
        report.divergence = Some(format!("{error:#}"));
    }
    Ok(report)
}

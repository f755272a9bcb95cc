//! `carapace replay DIR`: re-execute a data directory's journal, from genesis on a fresh
//! grid or from its published checkpoint, checking every reply checksum and checkpoint
//! id against what was recorded; against another module version, the check to run
//! before upgrading. Exit status: 0 identical, 1 diverged, 2 could not replay.

use std::io::IsTerminal as _;
use std::path::Path;

use anyhow::{Context as _, Result};
use clap::Args;

use super::run::MachineArgs;
use crate::durable::{check_identity, read_superblock};
use crate::imports::{HostImports, IoOrder};
use crate::journal::Journal;
use crate::os::open_data_dir_read_only;
use crate::replay::{ReplayReport, check_journal_covers, replay_journal};
use crate::replica::Replica;
use crate::storage::{FileStorage, MemoryStorage, OverlayStorage, Storage};

/// Replay a recorded log and report the first divergence, if any.
#[derive(Debug, Args)]
pub struct ReplayCommand {
    /// The data directory (`carapace run --data DIR`); it is only read.
    dir: std::path::PathBuf,
    /// The machine to replay with; by default the embedded machine the directory
    /// names. A `--module` may be a new version of that machine.
    #[command(flatten)]
    machine: MachineArgs,
    /// Start at the directory's published checkpoint (its grid is read, never
    /// written) instead of at genesis.
    #[arg(long)]
    from_checkpoint: bool,
}

impl ReplayCommand {
    /// Replay and print the verdict. A divergence or any other error is returned as
    /// an error; the binary maps a divergence to exit status 1, anything else to 2.
    pub fn execute(self, out: &mut dyn std::io::Write) -> Result<()> {
        let progress = std::io::stderr().is_terminal();
        let (report, took) = replay(&self.dir, &self.machine, self.from_checkpoint, progress)?;
        match report.outcome {
            Ok(()) => {
                let ops = report.identical_through - report.checkpoint_op;
                say!(
                    out,
                    "identical through op {} ({} checkpoint ids verified; {ops} ops in {} ms, \
                     {:.0} ops/s)",
                    report.identical_through,
                    report.checkpoints_verified,
                    took.as_millis(),
                    ops as f64 / took.as_secs_f64().max(1e-9)
                )?;
                Ok(())
            }
            Err(error) => Err(anyhow::Error::from(error)
                .context(format!("identical through op {}", report.identical_through))),
        }
    }
}

/// Replay the journal of `dir` with the chosen machine, from genesis on a fresh grid in
/// memory, or from the published checkpoint over the directory's grid (writes stay in
/// memory). Returns the report and the time the replay itself took (not loading).
pub fn replay(
    dir: &Path,
    machine: &MachineArgs,
    from_checkpoint: bool,
    progress: bool,
) -> Result<(ReplayReport, std::time::Duration)> {
    let files = open_data_dir_read_only(dir)
        .with_context(|| format!("opening the data directory `{}`", dir.display()))?;
    let mut superblock = files.superblock;
    let stored = read_superblock(superblock.as_mut())?;
    let (_, factory) = machine.load(&stored.identity.name)?;
    let (mut journal, _) = Journal::open_read_only(files.journal, stored.directory_id)?;
    check_journal_covers(&stored, &journal)?;
    let options = &stored.options;
    let (storage, checkpoint): (Box<dyn Storage>, _) = if from_checkpoint {
        let base = FileStorage::new(files.grid, options.block_size);
        (
            Box::new(OverlayStorage::new(Box::new(base))),
            stored.checkpoint.clone(),
        )
    } else {
        (Box::new(MemoryStorage::new()), None)
    };
    let imports = HostImports::new(
        storage,
        options.block_size,
        options.block_count,
        IoOrder::Fifo,
    );
    let mut instance = factory.instance(imports)?;
    check_identity(
        &stored.identity,
        &crate::replica::identify(instance.as_mut())?,
    )?;
    let mut replica = Replica::open(instance, options.clone(), checkpoint)?;
    let bar = if progress {
        super::progress_bar(journal.end().op, "ops")
    } else {
        indicatif::ProgressBar::hidden()
    };
    let started = std::time::Instant::now();
    let report = replay_journal(&mut replica, &mut journal, &stored, |_, entry, _| {
        bar.set_position(entry.request.op);
        Ok(())
    });
    let took = started.elapsed();
    bar.finish_and_clear();
    Ok((report, took))
}

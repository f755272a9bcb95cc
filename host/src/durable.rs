//! A replica whose acknowledged ops survive a crash: the grid in a file, a journal of
//! every committed request, and a superblock that publishes each checkpoint.
//!
//! Per op: the machine commits (and, at a checkpoint op, writes its checkpoint and the
//! grid is synced); the journal entry, with the reply's checksum and any checkpoint
//! id, is appended and synced — the op is now acknowledged; at a checkpoint op the
//! superblock then publishes the checkpoint. Recovery opens the machine at the
//! superblock's checkpoint and replays the journal after it through the same
//! lifecycle, checking every reply and checkpoint id against what was recorded.
//! `docs/design.md` argues each crash point.

use std::path::Path;

use anyhow::{Context as _, Result, bail, ensure};
use carapace_lsm::checksum::checksum;

use crate::context::{HostContext, IoOrder};
use crate::disk::{File, OsFile, SimDisk};
use crate::journal::{Entry, Journal, Position};
use crate::machine::Machine;
use crate::replica::{Checkpoint, Committer, Replica, ReplicaConfig, Request};
use crate::storage::FileStorage;
use crate::superblock::Superblock;

/// The files of a data directory: `superblock`, `journal`, `grid`.
pub struct DataDir {
    superblock: Box<dyn File>,
    journal: Box<dyn File>,
    grid: Box<dyn File>,
}

impl std::fmt::Debug for DataDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataDir").finish_non_exhaustive()
    }
}

/// File names in a data directory.
pub const SUPERBLOCK_FILE: &str = "superblock";
/// See [`SUPERBLOCK_FILE`].
pub const JOURNAL_FILE: &str = "journal";
/// See [`SUPERBLOCK_FILE`].
pub const GRID_FILE: &str = "grid";

impl DataDir {
    /// The data directory at `path`, created if missing.
    pub fn open(path: &Path) -> Result<DataDir> {
        let created = !path.exists();
        std::fs::create_dir_all(path).with_context(|| format!("creating `{}`", path.display()))?;
        let file = |name: &str| -> Result<Box<dyn File>> {
            let path = path.join(name);
            Ok(Box::new(OsFile::open(&path).with_context(|| {
                format!("opening `{}`", path.display())
            })?))
        };
        let dir = DataDir {
            superblock: file(SUPERBLOCK_FILE)?,
            journal: file(JOURNAL_FILE)?,
            grid: file(GRID_FILE)?,
        };
        // The files' names must be as durable as their contents: a synced journal in
        // a file whose directory entry was lost would lose acknowledged ops.
        let sync = |directory: &Path| {
            std::fs::File::open(directory)
                .and_then(|directory| directory.sync_all())
                .with_context(|| format!("syncing the directory `{}`", directory.display()))
        };
        sync(path)?;
        // A new directory's own name lives in its parent.
        if created
            && let Some(parent) = path
                .parent()
                .filter(|parent| !parent.as_os_str().is_empty())
        {
            sync(parent)?;
        }
        Ok(dir)
    }

    /// Whether `path` holds a data directory already (a non-empty superblock file).
    pub fn exists(path: &Path) -> bool {
        std::fs::metadata(path.join(SUPERBLOCK_FILE)).is_ok_and(|metadata| metadata.len() > 0)
    }

    /// A data directory on a simulated disk, for crash tests.
    pub fn simulated(disk: &SimDisk) -> DataDir {
        DataDir {
            superblock: Box::new(disk.file(SUPERBLOCK_FILE)),
            journal: Box::new(disk.file(JOURNAL_FILE)),
            grid: Box::new(disk.file(GRID_FILE)),
        }
    }
}

/// What recovery found and did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// The checkpoint opened, if any.
    pub checkpoint_op: u64,
    /// Ops replayed from the journal after it.
    pub replayed_ops: u64,
    /// Bytes of a torn journal tail cut off.
    pub torn_bytes: u64,
    /// Superblock sequence.
    pub superblock_sequence: u64,
}

/// A replica over a data directory.
pub struct Durable<M: Machine> {
    replica: Replica<M>,
    journal: Journal,
    superblock: Superblock,
}

impl<M: Machine> std::fmt::Debug for Durable<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durable")
            .field("journal", &self.journal)
            .finish_non_exhaustive()
    }
}

/// The checksum a journal records for a reply.
pub fn reply_checksum(reply: &[u8]) -> u128 {
    checksum(reply)
}

impl<M: Machine> Durable<M> {
    /// Open the data directory, creating it with `config` if it is new (an existing
    /// one keeps its own options; `config`, if given, must match them), and recover:
    /// open the machine `make` builds at the published checkpoint and replay the
    /// journal after it, checking every reply and checkpoint id.
    pub fn open(
        dir: DataDir,
        config: Option<ReplicaConfig>,
        order: IoOrder,
        make: impl Fn(HostContext) -> Result<M>,
    ) -> Result<(Durable<M>, Recovery)> {
        let DataDir {
            mut superblock,
            mut journal,
            grid,
        } = dir;
        // A directory whose creation never finished (no valid superblock copy, nothing
        // journaled) acknowledged nothing: create it again.
        let (newest, _) = Superblock::read_copies(&mut *superblock)?;
        let is_new = newest.is_none() && journal.length().context("reading the journal")? == 0;
        let mut superblock = if is_new {
            let config = config
                .clone()
                .context("a new data directory needs options")?;
            // Try the options on the machine before recording them: a directory created
            // with options it cannot run would refuse every later start.
            let context = HostContext::new(
                Box::new(crate::storage::MemoryStorage::new()),
                config.options.block_size,
                config.options.block_count,
                order.clone(),
            );
            Replica::open(make(context)?, config.clone(), None)
                .context("the options do not suit the state machine")?;
            Superblock::create(superblock, config)?
        } else {
            Superblock::open(superblock)?.0
        };
        let stored = superblock.state().clone();
        if let Some(config) = &config {
            ensure!(
                *config == stored.config,
                "the data directory was created with other options: {:?}",
                stored.config
            );
        }
        // Check the journal against the superblock before cutting anything: damage where
        // acknowledged entries should be must stay on disk for whoever looks next.
        let (mut journal, journal_report) = Journal::open_read_only(journal)?;
        let checkpoint = stored.checkpoint.clone();
        let checkpoint_op = checkpoint.as_ref().map_or(0, |checkpoint| checkpoint.op);
        ensure!(
            journal.end().op >= checkpoint_op,
            "the journal ends at op {} before the checkpoint at op {checkpoint_op}: it lost \
             acknowledged entries",
            journal.end().op
        );
        journal.cut_torn_tail()?;
        // A copy left damaged or behind (a crash mid-publication, or a bad sector) is
        // rewritten now, so that four good copies guard the checkpoint again before
        // any block only an older checkpoint needs can be reused.
        if superblock.needs_repair() {
            superblock.repair()?;
        }
        let options = &stored.config.options;
        let storage = FileStorage::new(grid, options.block_size);
        let context = HostContext::new(
            Box::new(storage),
            options.block_size,
            options.block_count,
            order,
        );
        let mut replica = Replica::open(make(context)?, stored.config.clone(), checkpoint)
            .context("opening the state machine at the checkpoint")?;
        let mut replayed_ops = 0;
        let published = stored.journal;
        journal.read_all(|entry, position| {
            if entry.request.op < checkpoint_op {
                return Ok(());
            }
            if entry.request.op == checkpoint_op {
                // The chain up to here was verified on open; this ties it to the
                // superblock before anything is replayed on top.
                ensure!(
                    position == published,
                    "the journal entry of checkpoint op {checkpoint_op} ends at byte {} with checksum \
                     {:032x}; the superblock says byte {} with checksum {:032x}",
                    position.offset,
                    position.checksum,
                    published.offset,
                    published.checksum
                );
                return Ok(());
            }
            replay_one(&mut replica, &entry)?;
            replayed_ops += 1;
            // The machine reuses blocks that only older checkpoints need once it has
            // taken a new one: publish it before the next op, as in `commit`.
            if let Some(checkpoint) = replica.checkpoint_taken_at(entry.request.op) {
                superblock.publish(checkpoint, position)?;
            }
            Ok(())
        })?;
        let recovery = Recovery {
            checkpoint_op,
            replayed_ops,
            torn_bytes: journal_report.torn_bytes,
            superblock_sequence: stored.sequence,
        };
        let durable = Durable {
            replica,
            journal,
            superblock,
        };
        Ok((durable, recovery))
    }

    /// The replica.
    pub fn replica(&self) -> &Replica<M> {
        &self.replica
    }

    /// The replica, mutably (for its machine's host context).
    pub fn replica_mut(&mut self) -> &mut Replica<M> {
        &mut self.replica
    }

    /// The published state.
    pub fn superblock(&self) -> &Superblock {
        &self.superblock
    }

    /// Where the journal ends.
    pub fn journal_end(&self) -> Position {
        self.journal.end()
    }

    /// Commit `request` durably; when this returns the op is acknowledged.
    pub fn commit(&mut self, request: &Request) -> Result<Vec<u8>> {
        let reply = self.replica.commit(request)?;
        let checkpoint_id = self
            .replica
            .checkpoint_taken_at(request.op)
            .map(Checkpoint::id);
        self.journal.append(&Entry {
            request: request.clone(),
            reply_checksum: reply_checksum(&reply),
            checkpoint_id,
        })?;
        // The op is acknowledged. A checkpoint taken at it is published before the
        // next op: from then on the machine may reuse blocks only older ones need.
        if let Some(checkpoint) = self.replica.checkpoint_taken_at(request.op).cloned() {
            self.superblock.publish(&checkpoint, self.journal.end())?;
        }
        Ok(reply)
    }
}

impl<M: Machine> Committer for Durable<M> {
    fn last_op(&self) -> u64 {
        self.replica.op()
    }

    fn last_timestamp(&self) -> u64 {
        self.replica.timestamp()
    }

    fn commit_request(&mut self, request: &Request) -> Result<Vec<u8>> {
        self.commit(request)
    }
}

/// Re-execute one journal entry and check it against what was recorded: an error
/// names the op and what differed.
pub fn replay_one<M: Machine>(replica: &mut Replica<M>, entry: &Entry) -> Result<()> {
    let op = entry.request.op;
    let reply = replica
        .commit(&entry.request)
        .with_context(|| format!("replaying op {op}"))?;
    let got = reply_checksum(&reply);
    if got != entry.reply_checksum {
        bail!(
            "replay diverged at op {op}: reply checksum {got:032x}, recorded {:032x}",
            entry.reply_checksum
        );
    }
    let taken = replica.checkpoint_taken_at(op).map(Checkpoint::id);
    if taken != entry.checkpoint_id {
        bail!(
            "replay diverged at op {op}: checkpoint id {}, recorded {}",
            taken.map_or("none".into(), |id| format!("{id:032x}")),
            entry
                .checkpoint_id
                .map_or("none".into(), |id| format!("{id:032x}"))
        );
    }
    Ok(())
}

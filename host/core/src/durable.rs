//! A replica whose acknowledged ops survive a crash: the grid in a file, a journal of
//! every committed request, and a superblock that publishes each checkpoint.
//!
//! Per op: the machine commits (and, at a checkpoint op, writes its checkpoint and the
//! grid is synced); the journal entry, with the reply's checksum and any checkpoint
//! id, is appended and synced — the op is now acknowledged; at a checkpoint op the
//! superblock then publishes the checkpoint. Group commit does the same for many ops
//! at once: they commit one after another, their entries are appended with one write
//! and one sync, and only then are their replies released. A group ends at a
//! checkpoint op, so that its checkpoint is published before any later op runs.
//! Recovery opens the machine at the superblock's checkpoint and replays the journal
//! after it through the same lifecycle, checking every reply and checkpoint id against
//! what was recorded.
//! `docs/design.md` argues each crash point.

use crate::checksum::checksum;
use crate::disk::{File, SharedFile, SimDisk};
use crate::error::{Error, Fault, Result};
use crate::imports::{HostImports, IoOrder};
use crate::instance::{Identity, Instance, Options};
use crate::journal::{Entry, Journal, Position};
use crate::replay::{self, ReplayReport};
use crate::replica::{Checkpoint, Committed, Committer, Replica, Request};
use crate::storage::{FileStorage, MemoryStorage};
use crate::superblock::{Superblock, SuperblockState};

/// The files of a data directory: `superblock`, `journal`, `grid`. The native host opens
/// them as OS files, the browser as OPFS files, tests on a [`SimDisk`].
pub struct DataDir {
    /// The id to give the directory if it is new (an existing one keeps its own): any
    /// number unlikely to be another directory's.
    pub new_directory_id: u128,
    /// The superblock file.
    pub superblock: Box<dyn File>,
    /// The journal file.
    pub journal: Box<dyn File>,
    /// The grid file.
    pub grid: Box<dyn File>,
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
    /// A data directory on a simulated disk, for crash tests.
    pub fn simulated(disk: &SimDisk) -> DataDir {
        DataDir {
            new_directory_id: checksum(b"simulated data directory"),
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

/// Makes a fresh instance of the machine over the host imports it is given.
pub type MakeInstance<'a> = dyn Fn(HostImports) -> Result<Box<dyn Instance>> + 'a;

/// A replica over a data directory.
pub struct Durable<'a> {
    replica: Replica,
    journal: Journal,
    superblock: Superblock,
    /// The grid file, shared with the instance that runs now; a rebuilt instance
    /// opens it again.
    grid: SharedFile,
    make: Box<MakeInstance<'a>>,
    order: IoOrder,
    /// Why the commit protocol stopped, once it has: the guest may already have
    /// released blocks on the promise that its checkpoint would be published, so
    /// nothing may be committed until the directory is reopened (and recovered).
    failed: Option<String>,
    /// Instances rebuilt after a guest trapped or broke the contract.
    rebuilds: u64,
    /// Requests refused as poison: they stopped a rebuilt instance too.
    poisoned: u64,
    /// `(op, id)` of each checkpoint published during the last group commit.
    group_checkpoints: Vec<(u64, u128)>,
}

impl std::fmt::Debug for Durable<'_> {
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

/// Refuse a directory written by another machine or in another state format, naming
/// both; a new version of the same machine may open it.
pub fn check_identity(stored: &Identity, module: &Identity) -> Result<()> {
    if stored.name != module.name || stored.state_format != module.state_format {
        return Err(Error::Incompatible(format!(
            "it holds the state of machine {stored}; the module is machine {module}"
        )));
    }
    Ok(())
}

/// Ask a fresh instance of `make` who it is.
fn identify(make: &MakeInstance<'_>, options: &Options, order: &IoOrder) -> Result<Identity> {
    let mut instance = make(scratch_imports(options, order))?;
    crate::replica::identify(instance.as_mut())
}

/// Host imports over memory, for trying options or asking a machine who it is.
fn scratch_imports(options: &Options, order: &IoOrder) -> HostImports {
    HostImports::new(
        Box::new(MemoryStorage::new()),
        options.block_size,
        options.block_count,
        order.clone(),
    )
}

impl<'a> Durable<'a> {
    /// Open the data directory, creating it with `options` if it is new (an existing
    /// one keeps its own options; `options`, if given, must match them), and recover:
    /// open the machine `make` builds at the published checkpoint and replay the
    /// journal after it, checking every reply and checkpoint id. A directory of another
    /// machine or state format is refused before anything is read from its grid.
    pub fn open(
        dir: DataDir,
        options: Option<Options>,
        order: IoOrder,
        make: impl Fn(HostImports) -> Result<Box<dyn Instance>> + 'a,
    ) -> Result<(Durable<'a>, Recovery)> {
        let make: Box<MakeInstance<'a>> = Box::new(make);
        let DataDir {
            new_directory_id,
            mut superblock,
            mut journal,
            grid,
        } = dir;
        // A directory whose creation never finished (no valid superblock copy, nothing
        // journaled) acknowledged nothing: create it again.
        let (newest, _) = Superblock::read_copies(&mut *superblock)?;
        let journal_length = journal
            .length()
            .map_err(|error| Error::io(JOURNAL_FILE, "reading the length of", error))?;
        let is_new = newest.is_none() && journal_length == 0;
        let mut superblock = if is_new {
            let options = options
                .clone()
                .ok_or_else(|| Error::Refused("a new data directory needs options".into()))?;
            // Try the options on the machine before recording them: a directory created
            // with options it cannot run would refuse every later start.
            let instance = make(scratch_imports(&options, &order))?;
            let replica = Replica::open(instance, options.clone(), None)?;
            let identity = replica.identity().clone();
            Superblock::create(superblock, options, identity, new_directory_id)?
        } else {
            Superblock::open(superblock)?.0
        };
        let stored = superblock.state().clone();
        // Before anything is written (a torn tail cut, a superblock repaired) or read
        // from the grid: a fresh instance of its own, since the replica's comes later.
        check_identity(
            &stored.identity,
            &identify(&*make, &stored.options, &order)?,
        )?;
        if let Some(options) = &options
            && *options != stored.options
        {
            return Err(Error::Incompatible(format!(
                "it was created with other options: {:?}",
                stored.options
            )));
        }
        // Check the journal against the superblock before cutting anything: damage where
        // acknowledged entries should be must stay on disk for whoever looks next. Only
        // the entries after the published checkpoint are read: recovery takes time in
        // proportion to the journal's tail.
        let (mut journal, journal_report) = match &stored.checkpoint {
            Some(_) if stored.journal_entry_size > 0 => Journal::open_after(
                journal,
                stored.directory_id,
                stored.journal,
                stored.journal_entry_size,
            )?,
            // No checkpoint yet, or one published before the superblock recorded its
            // entry's size: the whole journal.
            _ => Journal::open_read_only(journal, stored.directory_id)?,
        };
        replay::check_journal_covers(&stored, &journal)?;
        journal.cut_torn_tail()?;
        // A copy left damaged or behind (a crash mid-publication, or a bad sector) is
        // rewritten now, so that four good copies guard the checkpoint again before
        // any block only an older checkpoint needs can be reused.
        if superblock.needs_repair() {
            superblock.repair()?;
        }
        let grid = SharedFile::new(grid);
        let (replica, checkpoint_op, replayed_ops) =
            Self::rebuild_replica(&*make, &grid, &order, &mut superblock, &mut journal)?;
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
            grid,
            make,
            order,
            failed: None,
            rebuilds: 0,
            poisoned: 0,
            group_checkpoints: Vec::new(),
        };
        Ok((durable, recovery))
    }

    /// A fresh instance at the published checkpoint, with the journal after it
    /// replayed (every reply and checkpoint id checked, and retaken checkpoints
    /// published): recovery after a crash, and the rebuild after a guest trapped.
    /// Returns the replica, the checkpoint op and the ops replayed after it.
    fn rebuild_replica(
        make: &MakeInstance<'_>,
        grid: &SharedFile,
        order: &IoOrder,
        superblock: &mut Superblock,
        journal: &mut Journal,
    ) -> Result<(Replica, u64, u64)> {
        let stored = superblock.state().clone();
        let options = &stored.options;
        let storage = FileStorage::new(Box::new(grid.clone()), options.block_size);
        let imports = HostImports::new(
            Box::new(storage),
            options.block_size,
            options.block_count,
            order.clone(),
        );
        let mut replica =
            Replica::open(make(imports)?, options.clone(), stored.checkpoint.clone())?;
        let report = replay::replay_journal(
            &mut replica,
            journal,
            &stored,
            |replica, entry, position| {
                // The machine reuses blocks that only older checkpoints need once it has
                // taken a new one: publish it before the next op, as in `commit`.
                if let Some(checkpoint) = replica.checkpoint_taken_at(position.op) {
                    let version = replica.identity().version.clone();
                    superblock.publish(checkpoint, position, entry_size(entry), &version)?;
                }
                Ok(())
            },
        );
        let ReplayReport {
            checkpoint_op,
            identical_through,
            outcome,
            ..
        } = report;
        outcome?;
        Ok((replica, checkpoint_op, identical_through - checkpoint_op))
    }

    /// Tear the instance down and build a fresh one from what is durable.
    fn rebuild(&mut self) -> Result<()> {
        let (replica, _, _) = Self::rebuild_replica(
            &*self.make,
            &self.grid,
            &self.order,
            &mut self.superblock,
            &mut self.journal,
        )?;
        self.replica = replica;
        self.rebuilds += 1;
        Ok(())
    }

    /// Instances rebuilt after a guest trapped or broke the contract.
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds
    }

    /// Requests refused as poison ops.
    pub fn poisoned(&self) -> u64 {
        self.poisoned
    }

    /// Journal writes this replica made (each synced): with group commit, fewer than
    /// the ops it committed.
    pub fn journal_writes(&self) -> u64 {
        self.journal.writes()
    }

    /// `(op, id)` of each checkpoint the last [`Durable::commit_group`] published, in
    /// op order: a group may run past several.
    pub fn group_checkpoints(&self) -> &[(u64, u128)] {
        &self.group_checkpoints
    }

    /// The replica.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// The replica, mutably (for its instance's host imports).
    pub fn replica_mut(&mut self) -> &mut Replica {
        &mut self.replica
    }

    /// The published state.
    pub fn superblock(&self) -> &Superblock {
        &self.superblock
    }

    /// Read every journaled entry, in op order.
    pub fn read_journal(&mut self, visit: impl FnMut(Entry, Position) -> Result<()>) -> Result<()> {
        self.journal.read_all(visit)
    }

    /// Where the journal ends.
    pub fn journal_end(&self) -> Position {
        self.journal.end()
    }

    /// Commit `request` durably; when this returns the op is acknowledged. See
    /// [`Durable::commit_group`], of which this is a group of one.
    pub fn commit(&mut self, request: &Request) -> Result<Vec<u8>> {
        self.commit_group(std::slice::from_ref(request))
            .into_only_reply()
    }

    /// Commit `requests` (the next ops, in order) durably, with one journal write and
    /// sync for the lot (more where a checkpoint falls inside): every reply returned is
    /// of an acknowledged op, and none is returned before its op is durable. The
    /// replies are of a prefix of `requests`; if it is not all of them, `stopped` says
    /// why the next one did not commit.
    ///
    /// A guest that traps or breaks the contract is torn down: the ops before it are
    /// made durable, its op is not acknowledged, and a fresh instance is rebuilt from
    /// the published checkpoint and the journal, then given the op again. If the op
    /// stops that instance too, it is a poison op: refused with [`Error::Poison`]
    /// (never journaled), the instance is rebuilt once more, and the next request
    /// takes its op number (so the group stops there). After any other error but a
    /// refused request, the replica refuses every later commit with
    /// [`Error::Stopped`] until the directory is reopened.
    pub fn commit_group(&mut self, requests: &[Request]) -> Committed {
        self.group_checkpoints.clear();
        let mut group = Group::default();
        let stopped = match &self.failed {
            Some(reason) => Some(Error::Stopped(reason.clone())),
            None => self.commit_each(requests, &mut group).err(),
        };
        // Whatever committed before an error is made durable, then acknowledged.
        let stopped = match self.make_durable(&mut group) {
            Ok(()) => stopped,
            Err(error) => Some(error),
        };
        if let Some(error) = &stopped
            && !matches!(
                error,
                Error::Refused(_) | Error::Poison { .. } | Error::Stopped(_)
            )
        {
            self.failed = Some(error.to_string());
        }
        Committed {
            replies: group.acknowledged,
            stopped,
        }
    }

    fn commit_each(&mut self, requests: &[Request], group: &mut Group) -> Result<()> {
        let interval = self.replica.options().checkpoint_interval_ops;
        let mut rest = requests;
        while !rest.is_empty() {
            // Up to the next checkpoint op, which is published before any later op runs.
            let length = rest
                .iter()
                .position(|request| request.op.is_multiple_of(interval))
                .map_or(rest.len(), |index| index + 1);
            // A body the journal could not read back is refused before the machine runs
            // it, by the replica's own bound: the batch size limit is at most the
            // journal's (`Options::validate`, `journal::BODY_SIZE_MAX`).
            let Committed { replies, stopped } = self.replica.commit_batch(&rest[..length]);
            let committed = replies.len();
            for (request, reply) in rest.iter().zip(replies) {
                self.record(request, reply, group)?;
            }
            rest = &rest[committed..];
            match stopped {
                None => {}
                Some(Error::Guest(guest)) if tears_down(&guest.fault) => {
                    // The rebuild replays the journal: the ops before this one must be
                    // in it. The op is then given to the new instance alone.
                    self.make_durable(group)?;
                    self.rebuild()?;
                    let reply = self.commit_again(&rest[0])?;
                    self.record(&rest[0], reply, group)?;
                    rest = &rest[1..];
                }
                Some(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Commit `request` on an instance rebuilt after it stopped the last one: if it
    /// stops this one too, it is a poison op.
    fn commit_again(&mut self, request: &Request) -> Result<Vec<u8>> {
        match self.replica.commit(request) {
            Err(Error::Guest(again)) if tears_down(&again.fault) => {
                self.rebuild()?;
                self.poisoned += 1;
                Err(Error::Poison {
                    op: request.op,
                    guest: again,
                })
            }
            result => result,
        }
    }

    /// Add a committed op to the group, and make the group durable at a checkpoint op
    /// or once its journal write is large.
    fn record(&mut self, request: &Request, reply: Vec<u8>, group: &mut Group) -> Result<()> {
        let checkpoint_id = self
            .replica
            .checkpoint_taken_at(request.op)
            .map(Checkpoint::id);
        let entry = Entry {
            request: request.clone(),
            reply_checksum: reply_checksum(&reply),
            checkpoint_id,
        };
        group.bytes += entry_size(&entry) as usize;
        group.entries.push(entry);
        group.replies.push(reply);
        // A checkpoint is published before the next op: from then on the machine may
        // reuse blocks only older checkpoints need. A group of large bodies is written
        // in parts, so that one write stays bounded.
        if checkpoint_id.is_some() || group.bytes >= JOURNAL_WRITE_BYTES_MAX {
            self.make_durable(group)?;
        }
        Ok(())
    }

    /// Append the group's entries with one write and one sync, publish a checkpoint
    /// taken at its last op, and acknowledge its replies.
    fn make_durable(&mut self, group: &mut Group) -> Result<()> {
        // Taken out first: after a failed write or sync nothing is retried (a failed
        // sync may have dropped the pages it should have written), and nothing of the
        // group is acknowledged.
        let entries = std::mem::take(&mut group.entries);
        let replies = std::mem::take(&mut group.replies);
        group.bytes = 0;
        let Some(last) = entries.last() else {
            return Ok(());
        };
        self.journal.append_group(&entries)?;
        if let Some(checkpoint) = self.replica.checkpoint_taken_at(last.request.op).cloned() {
            let version = self.replica.identity().version.clone();
            self.superblock
                .publish(&checkpoint, self.journal.end(), entry_size(last), &version)?;
            self.group_checkpoints
                .push((checkpoint.op, checkpoint.id()));
        }
        group.acknowledged.extend(replies);
        Ok(())
    }
}

/// Bytes `entry` takes in the journal.
fn entry_size(entry: &Entry) -> u32 {
    (crate::journal::HEADER_SIZE + entry.request.body.len()) as u32
}

/// Ops of a group commit: committed by the machine and not yet durable (`entries`,
/// `replies`), and acknowledged (`acknowledged`).
#[derive(Debug, Default)]
struct Group {
    entries: Vec<Entry>,
    /// Bytes the entries take in the journal.
    bytes: usize,
    replies: Vec<Vec<u8>>,
    acknowledged: Vec<Vec<u8>>,
}

/// A group commit's journal write is at most about this many bytes (one entry more):
/// a group of large bodies is made durable in parts.
pub const JOURNAL_WRITE_BYTES_MAX: usize = 4 << 20;

/// Whether a fault ends only this instance, which the host rebuilds: a trap (a panic,
/// fuel or memory run out) or a broken contract. A failure the guest reports (a corrupt
/// block, a full grid) is about the state, which a rebuild would find again.
fn tears_down(fault: &Fault) -> bool {
    matches!(fault, Fault::Trap(_) | Fault::Violation(_))
}

impl Committer for Durable<'_> {
    fn last_op(&self) -> u64 {
        self.replica.op()
    }

    fn last_timestamp(&self) -> u64 {
        self.replica.timestamp()
    }

    fn commit_request(&mut self, request: &Request) -> Result<Vec<u8>> {
        self.commit(request)
    }

    fn commit_group(&mut self, requests: &[Request]) -> Committed {
        Durable::commit_group(self, requests)
    }
}

/// The superblock state of a data directory, read without changing anything.
pub fn read_superblock(file: &mut dyn File) -> Result<SuperblockState> {
    let (state, _) = Superblock::read_copies(file)?;
    state.ok_or_else(|| {
        Error::corrupt(
            SUPERBLOCK_FILE,
            "no valid superblock copy: the data directory is damaged or not carapace's",
        )
    })
}

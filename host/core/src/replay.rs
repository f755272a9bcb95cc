//! Replay: re-execute a journal on a replica, checking every reply checksum and
//! checkpoint id against what was recorded. One path serves recovery (from the
//! published checkpoint, publishing new checkpoints as it goes) and `carapace replay`
//! (from genesis or the checkpoint, against the same or a new module), so both tie the
//! journal to the superblock the same way.

use crate::durable::{JOURNAL_FILE, reply_checksum};
use crate::error::{Error, Result};
use crate::instance::Request;
use crate::journal::{Entry, Journal, Position};
use crate::replica::{Checkpoint, Committed, DELIVERY_BYTES_MAX, DELIVERY_OPS_MAX, Replica};
use crate::superblock::SuperblockState;

/// How a replay went.
#[derive(Debug)]
pub struct ReplayReport {
    /// The op the replay started after (the checkpoint's, or 0 from genesis).
    pub checkpoint_op: u64,
    /// The last op replayed identically.
    pub identical_through: u64,
    /// Checkpoint ids verified on the way.
    pub checkpoints_verified: u64,
    /// `Ok` if every entry replayed identically; otherwise the first
    /// [`Error::Divergence`], or what stopped the replay (a trap, an I/O error, ...).
    pub outcome: Result<()>,
}

/// Refuse a journal that ends before the superblock's checkpoint: it lost acknowledged
/// entries, whatever else is wrong with it.
pub fn check_journal_covers(stored: &SuperblockState, journal: &Journal) -> Result<()> {
    let checkpoint_op = stored
        .checkpoint
        .as_ref()
        .map_or(0, |checkpoint| checkpoint.op);
    if journal.end().op < checkpoint_op {
        return Err(Error::corrupt(
            JOURNAL_FILE,
            format!(
                "it ends at op {} before the checkpoint at op {checkpoint_op}: it lost \
                 acknowledged entries",
                journal.end().op
            ),
        ));
    }
    Ok(())
}

/// Tie the journal to the superblock without replaying it (what `inspect` does): it
/// must reach the checkpoint, and the checkpoint op's entry must end at the offset,
/// with the checksum, the superblock recorded.
pub fn tie_journal_to_superblock(stored: &SuperblockState, journal: &mut Journal) -> Result<()> {
    check_journal_covers(stored, journal)?;
    let Some(checkpoint) = &stored.checkpoint else {
        return Ok(());
    };
    let mut found = None;
    journal.read_all(|entry, position| {
        if entry.request.op == checkpoint.op {
            found = Some(position);
        }
        Ok(())
    })?;
    match found {
        Some(position) if position == stored.journal => Ok(()),
        _ => Err(Error::corrupt(
            JOURNAL_FILE,
            format!(
                "the entry of checkpoint op {} does not end where the superblock says (byte \
                 {}, checksum {:032x})",
                checkpoint.op, stored.journal.offset, stored.journal.checksum
            ),
        )),
    }
}

/// Replay the entries of `journal` after the replica's starting point: the checkpoint
/// of `stored` if the replica was opened there, or genesis. The checkpoint op's entry
/// must end where the superblock says. Entries are delivered in batches that end at
/// checkpoint ops, as a live replica's group commits are; after each replayed entry,
/// once its batch is done, `after_entry` runs (recovery publishes checkpoints there;
/// a command may show progress).
pub fn replay_journal(
    replica: &mut Replica,
    journal: &mut Journal,
    stored: &SuperblockState,
    mut after_entry: impl FnMut(&mut Replica, &Entry, Position) -> Result<()>,
) -> ReplayReport {
    let start = replica.op();
    let published = stored
        .checkpoint
        .as_ref()
        .is_some_and(|checkpoint| checkpoint.op == start && start > 0)
        .then_some(stored.journal);
    let mut report = ReplayReport {
        checkpoint_op: start,
        identical_through: start,
        checkpoints_verified: 0,
        outcome: Ok(()),
    };
    let mut batch = Batch::default();
    // The entries opening verified: from op 1, or (recovery) from the checkpoint's own
    // entry, which ties the journal to the superblock either way.
    let read = journal.read_verified(|entry, position| {
        let op = entry.request.op;
        if op < start {
            return Ok(());
        }
        if op == start {
            // The chain up to here was verified on open; this ties it to the
            // superblock before anything is replayed on top.
            if let Some(published) = published
                && position != published
            {
                return Err(Error::corrupt(
                    JOURNAL_FILE,
                    format!(
                        "the entry of checkpoint op {start} ends at byte {} with checksum \
                         {:032x}; the superblock says byte {} with checksum {:032x}",
                        position.offset, position.checksum, published.offset, published.checksum
                    ),
                ));
            }
            return Ok(());
        }
        batch.push(entry, position);
        let interval = replica.options().checkpoint_interval_ops;
        if op.is_multiple_of(interval)
            || batch.requests.len() == DELIVERY_OPS_MAX
            || batch.bytes >= DELIVERY_BYTES_MAX
        {
            replay_batch(replica, &mut batch, &mut report, &mut after_entry)?;
        }
        Ok(())
    });
    // What was read before the journal ended (or failed to read) is replayed too.
    let replayed = replay_batch(replica, &mut batch, &mut report, &mut after_entry);
    report.outcome = replayed.and(read);
    report
}

/// Entries read and not yet replayed: their requests, apart (to be delivered as they
/// are), and what the journal recorded of each.
#[derive(Default)]
struct Batch {
    requests: Vec<Request>,
    /// Each entry's reply checksum, checkpoint id and position.
    recorded: Vec<(u128, Option<u128>, Position)>,
    /// Bytes of the requests' bodies.
    bytes: usize,
}

impl Batch {
    fn push(&mut self, entry: Entry, position: Position) {
        self.bytes += entry.request.body.len();
        self.recorded
            .push((entry.reply_checksum, entry.checkpoint_id, position));
        self.requests.push(entry.request);
    }
}

/// Deliver the batch's requests at once, then check each entry in op order.
fn replay_batch(
    replica: &mut Replica,
    batch: &mut Batch,
    report: &mut ReplayReport,
    after_entry: &mut impl FnMut(&mut Replica, &Entry, Position) -> Result<()>,
) -> Result<()> {
    let Batch {
        requests, recorded, ..
    } = std::mem::take(batch);
    let Committed { replies, stopped } = replica.commit_batch(&requests);
    let refused_op = requests.get(replies.len()).map(|request| request.op);
    for ((request, (reply_checksum, checkpoint_id, position)), reply) in
        requests.into_iter().zip(recorded).zip(replies)
    {
        let entry = Entry {
            request,
            reply_checksum,
            checkpoint_id,
        };
        check_entry(replica, &entry, &reply)?;
        report.identical_through = entry.request.op;
        report.checkpoints_verified += u64::from(entry.checkpoint_id.is_some());
        after_entry(replica, &entry, position)?;
    }
    match (stopped, refused_op) {
        (None, _) => Ok(()),
        // A module that refuses a request the log's module accepted behaves differently.
        (Some(Error::Refused(reason)), Some(op)) => Err(Error::Divergence {
            op,
            detail: format!("the module refuses the request: {reason}"),
        }),
        (Some(error), _) => Err(error),
    }
}

/// Check what replaying `entry` gave against what was recorded: a different reply or
/// checkpoint id is an [`Error::Divergence`].
fn check_entry(replica: &Replica, entry: &Entry, reply: &[u8]) -> Result<()> {
    let op = entry.request.op;
    let got = reply_checksum(reply);
    if got != entry.reply_checksum {
        return Err(Error::Divergence {
            op,
            detail: format!(
                "reply checksum {got:032x}, recorded {:032x}",
                entry.reply_checksum
            ),
        });
    }
    let taken = replica.checkpoint_taken_at(op).map(Checkpoint::id);
    if taken != entry.checkpoint_id {
        let show = |id: Option<u128>| id.map_or("none".into(), |id| format!("{id:032x}"));
        return Err(Error::Divergence {
            op,
            detail: format!(
                "checkpoint id {}, recorded {}",
                show(taken),
                show(entry.checkpoint_id)
            ),
        });
    }
    Ok(())
}

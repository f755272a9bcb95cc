//! The superblock: which checkpoint is current, in four copies, each with a sequence
//! number and a checksum, so that publishing a checkpoint is atomic: a crash while
//! writing damages at most the copy being written, and open takes the valid copy with
//! the highest sequence.
//!
//! Copy layout (4,096 bytes, little-endian; `docs/design.md` is normative):
//! `checksum` of bytes `[16, 4096)` (16), magic `b"carasupr"` (8), version 2 (4), copy
//! index (4), `sequence` (8), checkpoint `op` (8), checkpoint `timestamp` (8),
//! checkpoint id (16), journal `offset` (8) and `checksum` (16) after the checkpoint op,
//! state size (4), options size (4), the machine's state format (4), the directory id
//! (16), reserved to 128;
//! the guest's checkpoint state at 128 (at most 1,024 bytes); the machine's name and
//! version at 1,152 (64 bytes each, zero-padded); the options at 1,280.

use crate::checksum::checksum;
use crate::disk::File;
use crate::error::{Error, Result};
use crate::instance::{IDENTITY_TEXT_SIZE_MAX, Identity, Options};
use crate::journal::Position;
use crate::replica::Checkpoint;

/// Copies of the superblock.
pub const COPIES: usize = 4;
/// Bytes of one copy.
pub const COPY_SIZE: usize = 4096;
const MAGIC: &[u8; 8] = b"carasupr";
const VERSION: u32 = 2;
const STATE_OFFSET: usize = 128;
/// The largest guest checkpoint state the superblock holds.
pub const STATE_SIZE_MAX: usize = crate::replica::CHECKPOINT_STATE_SIZE_MAX;
const IDENTITY_OFFSET: usize = STATE_OFFSET + STATE_SIZE_MAX;
const OPTIONS_OFFSET: usize = IDENTITY_OFFSET + 2 * IDENTITY_TEXT_SIZE_MAX;
/// The largest encoded options the superblock holds.
pub const OPTIONS_SIZE_MAX: usize = COPY_SIZE - OPTIONS_OFFSET;

/// What the superblock publishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuperblockState {
    /// Increases by one with every publication.
    pub sequence: u64,
    /// The current checkpoint; `None` before the first.
    pub checkpoint: Option<Checkpoint>,
    /// The journal position right after the checkpoint op's entry.
    pub journal: Position,
    /// Bytes of the checkpoint op's journal entry, so that recovery finds its start and
    /// verifies it without reading the journal before it; 0 before the first
    /// checkpoint, and in copies written before it was recorded.
    pub journal_entry_size: u32,
    /// The options the data directory was created with.
    pub options: Options,
    /// The machine that wrote the directory: its name and state format never change;
    /// its version is the one that published last.
    pub identity: Identity,
    /// Chosen when the directory is created, never changed: the parent of the journal's
    /// first entry, so that a journal of another directory is refused.
    pub directory_id: u128,
}

/// The options encoded as the superblock stores them; refused if they do not fit.
pub fn encode_options(options: &Options) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&options.batch_size_limit.to_le_bytes());
    bytes.extend_from_slice(&options.reply_size_limit.to_le_bytes());
    bytes.extend_from_slice(&options.block_size.to_le_bytes());
    bytes.extend_from_slice(&options.block_count.to_le_bytes());
    bytes.extend_from_slice(&options.checkpoint_interval_ops.to_le_bytes());
    bytes.extend_from_slice(&(options.settings.len() as u32).to_le_bytes());
    for (name, value) in &options.settings {
        for text in [name, value] {
            let Ok(length) = u16::try_from(text.len()) else {
                return Err(Error::Refused(format!("setting `{name}` is too long")));
            };
            bytes.extend_from_slice(&length.to_le_bytes());
            bytes.extend_from_slice(text.as_bytes());
        }
    }
    if bytes.len() > OPTIONS_SIZE_MAX {
        return Err(Error::Refused(format!(
            "the options take {} bytes, more than the superblock's {OPTIONS_SIZE_MAX}",
            bytes.len()
        )));
    }
    Ok(bytes)
}

fn decode_options(bytes: &[u8]) -> Option<Options> {
    let mut rest = bytes;
    let mut take = |count: usize| -> Option<&[u8]> {
        let (head, tail) = rest.split_at_checked(count)?;
        rest = tail;
        Some(head)
    };
    let batch_size_limit = u32::from_le_bytes(take(4)?.try_into().ok()?);
    let reply_size_limit = u32::from_le_bytes(take(4)?.try_into().ok()?);
    let block_size = u32::from_le_bytes(take(4)?.try_into().ok()?);
    let block_count = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let checkpoint_interval_ops = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let count = u32::from_le_bytes(take(4)?.try_into().ok()?);
    let mut settings = Vec::new();
    for _ in 0..count.min(1024) {
        let mut text = || -> Option<String> {
            let length = u16::from_le_bytes(take(2)?.try_into().ok()?);
            String::from_utf8(take(length as usize)?.to_vec()).ok()
        };
        settings.push((text()?, text()?));
    }
    Some(Options {
        batch_size_limit,
        reply_size_limit,
        checkpoint_interval_ops,
        block_size,
        block_count,
        settings,
    })
}

/// Write `text` zero-padded into a field of [`IDENTITY_TEXT_SIZE_MAX`] bytes.
fn encode_text(text: &str, field: &mut [u8]) {
    assert!(text.len() <= field.len(), "identity checked on load");
    field[..text.len()].copy_from_slice(text.as_bytes());
}

fn decode_text(field: &[u8]) -> Option<String> {
    let length = field
        .iter()
        .position(|&byte| byte == 0)
        .unwrap_or(field.len());
    String::from_utf8(field[..length].to_vec()).ok()
}

fn encode_copy(state: &SuperblockState, copy: usize) -> Result<Vec<u8>> {
    let mut bytes = vec![0; COPY_SIZE];
    bytes[16..24].copy_from_slice(MAGIC);
    bytes[24..28].copy_from_slice(&VERSION.to_le_bytes());
    bytes[28..32].copy_from_slice(&(copy as u32).to_le_bytes());
    bytes[32..40].copy_from_slice(&state.sequence.to_le_bytes());
    if let Some(checkpoint) = &state.checkpoint {
        // The replica refuses a larger state from the guest before it gets here.
        assert!(checkpoint.state.len() <= STATE_SIZE_MAX);
        bytes[40..48].copy_from_slice(&checkpoint.op.to_le_bytes());
        bytes[48..56].copy_from_slice(&checkpoint.timestamp.to_le_bytes());
        bytes[56..72].copy_from_slice(&checkpoint.id().to_le_bytes());
        bytes[96..100].copy_from_slice(&(checkpoint.state.len() as u32).to_le_bytes());
        bytes[STATE_OFFSET..STATE_OFFSET + checkpoint.state.len()]
            .copy_from_slice(&checkpoint.state);
    }
    bytes[72..80].copy_from_slice(&state.journal.offset.to_le_bytes());
    bytes[80..96].copy_from_slice(&state.journal.checksum.to_le_bytes());
    bytes[104..108].copy_from_slice(&state.identity.state_format.to_le_bytes());
    bytes[108..124].copy_from_slice(&state.directory_id.to_le_bytes());
    bytes[124..128].copy_from_slice(&state.journal_entry_size.to_le_bytes());
    let (name, version) =
        bytes[IDENTITY_OFFSET..OPTIONS_OFFSET].split_at_mut(IDENTITY_TEXT_SIZE_MAX);
    encode_text(&state.identity.name, name);
    encode_text(&state.identity.version, version);
    let config = encode_options(&state.options)?;
    bytes[100..104].copy_from_slice(&(config.len() as u32).to_le_bytes());
    bytes[OPTIONS_OFFSET..OPTIONS_OFFSET + config.len()].copy_from_slice(&config);
    let checksum = checksum(&bytes[16..]);
    bytes[0..16].copy_from_slice(&checksum.to_le_bytes());
    Ok(bytes)
}

/// Decode one copy; `None` if it is damaged, torn or not a superblock.
fn decode_copy(bytes: &[u8]) -> Option<SuperblockState> {
    let u32_at = |offset: usize| u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap());
    let u64_at = |offset: usize| u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap());
    let u128_at =
        |offset: usize| u128::from_le_bytes(bytes[offset..offset + 16].try_into().unwrap());
    let valid =
        checksum(&bytes[16..]) == u128_at(0) && &bytes[16..24] == MAGIC && u32_at(24) == VERSION;
    if !valid {
        return None;
    }
    let state_size = u32_at(96) as usize;
    let config_size = u32_at(100) as usize;
    if state_size > STATE_SIZE_MAX || config_size > OPTIONS_SIZE_MAX {
        return None;
    }
    let op = u64_at(40);
    let checkpoint = (state_size > 0).then(|| Checkpoint {
        op,
        timestamp: u64_at(48),
        state: bytes[STATE_OFFSET..STATE_OFFSET + state_size].to_vec(),
    });
    if checkpoint
        .as_ref()
        .is_some_and(|checkpoint| checkpoint.id() != u128_at(56))
    {
        return None;
    }
    let identity = Identity {
        name: decode_text(&bytes[IDENTITY_OFFSET..IDENTITY_OFFSET + IDENTITY_TEXT_SIZE_MAX])?,
        version: decode_text(&bytes[IDENTITY_OFFSET + IDENTITY_TEXT_SIZE_MAX..OPTIONS_OFFSET])?,
        state_format: u32_at(104),
    };
    Some(SuperblockState {
        sequence: u64_at(32),
        checkpoint,
        journal: Position {
            offset: u64_at(72),
            op,
            checksum: u128_at(80),
        },
        journal_entry_size: u32_at(124),
        options: decode_options(&bytes[OPTIONS_OFFSET..OPTIONS_OFFSET + config_size])?,
        identity,
        directory_id: u128_at(108),
    })
}

/// The superblock file.
pub struct Superblock {
    file: Box<dyn File>,
    state: SuperblockState,
    /// Whether every copy was valid and current when opened.
    copies_current: bool,
}

impl std::fmt::Debug for Superblock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Superblock")
            .field("state", &self.state)
            .finish()
    }
}

impl Superblock {
    /// Format `file` for a new data directory `directory_id` of machine `identity` with
    /// `options`.
    pub fn create(
        file: Box<dyn File>,
        options: Options,
        identity: Identity,
        directory_id: u128,
    ) -> Result<Superblock> {
        let mut superblock = Superblock {
            file,
            state: SuperblockState {
                sequence: 0,
                checkpoint: None,
                journal: Position::start(directory_id),
                journal_entry_size: 0,
                options,
                identity,
                directory_id,
            },
            copies_current: true,
        };
        superblock.write(superblock.state.clone())?;
        Ok(superblock)
    }

    /// Open: the valid copy with the highest sequence wins. Returns which copies were
    /// valid.
    pub fn open(mut file: Box<dyn File>) -> Result<(Superblock, [bool; COPIES])> {
        let (newest, valid, sequences) = Self::read_all_copies(&mut *file)?;
        let Some(state) = newest else {
            return Err(Error::corrupt(
                "superblock",
                "no valid superblock copy: the data directory is damaged or not carapace's",
            ));
        };
        let copies_current = sequences
            .iter()
            .all(|&sequence| sequence == Some(state.sequence));
        Ok((
            Superblock {
                file,
                state,
                copies_current,
            },
            valid,
        ))
    }

    /// Read every copy: the newest valid state, if any, and which copies are valid.
    pub fn read_copies(file: &mut dyn File) -> Result<(Option<SuperblockState>, [bool; COPIES])> {
        let (newest, valid, _) = Self::read_all_copies(file)?;
        Ok((newest, valid))
    }

    #[allow(clippy::type_complexity)]
    fn read_all_copies(
        file: &mut dyn File,
    ) -> Result<(
        Option<SuperblockState>,
        [bool; COPIES],
        [Option<u64>; COPIES],
    )> {
        let mut sequences = [None; COPIES];
        let mut valid = [false; COPIES];
        let mut newest: Option<SuperblockState> = None;
        let mut bytes = vec![0; COPY_SIZE];
        for (copy, valid) in valid.iter_mut().enumerate() {
            file.read_at((copy * COPY_SIZE) as u64, &mut bytes)
                .map_err(|error| Error::io("superblock", "reading", error))?;
            let Some(state) = decode_copy(&bytes) else {
                continue;
            };
            *valid = true;
            sequences[copy] = Some(state.sequence);
            if newest
                .as_ref()
                .is_none_or(|newest| state.sequence > newest.sequence)
            {
                newest = Some(state);
            }
        }
        Ok((newest, valid, sequences))
    }

    /// Whether some copy was damaged or older than the newest when opened.
    pub fn needs_repair(&self) -> bool {
        !self.copies_current
    }

    /// Write the current state to every copy again, as a new publication.
    pub fn repair(&mut self) -> Result<()> {
        let state = SuperblockState {
            sequence: self.state.sequence + 1,
            ..self.state.clone()
        };
        self.write(state)
    }

    /// What is published.
    pub fn state(&self) -> &SuperblockState {
        &self.state
    }

    /// Publish `checkpoint`, whose op's journal entry (of `journal_entry_size` bytes)
    /// ends at `journal`, written by machine version `version`. The grid and the journal
    /// must be durable already.
    pub fn publish(
        &mut self,
        checkpoint: &Checkpoint,
        journal: Position,
        journal_entry_size: u32,
        version: &str,
    ) -> Result<()> {
        assert_eq!(journal.op, checkpoint.op);
        let state = SuperblockState {
            sequence: self.state.sequence + 1,
            checkpoint: Some(checkpoint.clone()),
            journal,
            journal_entry_size,
            options: self.state.options.clone(),
            identity: Identity {
                version: version.to_string(),
                ..self.state.identity.clone()
            },
            directory_id: self.state.directory_id,
        };
        self.write(state)
    }

    /// Write every copy in turn, syncing after each: a crash tears at most one copy,
    /// and every copy before it already holds the new state.
    fn write(&mut self, state: SuperblockState) -> Result<()> {
        let state = SuperblockState {
            sequence: state.sequence.max(1),
            ..state
        };
        for copy in 0..COPIES {
            let bytes = encode_copy(&state, copy)?;
            self.file
                .write_at((copy * COPY_SIZE) as u64, &bytes)
                .map_err(|error| Error::io("superblock", "writing", error))?;
            self.file
                .sync()
                .map_err(|error| Error::io("superblock", "syncing", error))?;
        }
        self.state = state;
        self.copies_current = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::{CrashMode, SimDisk};

    fn config() -> Options {
        Options {
            batch_size_limit: 512,
            reply_size_limit: 1024,
            checkpoint_interval_ops: 16,
            block_size: 1024,
            block_count: 4096,
            settings: vec![("lsm-profile".into(), "test".into())],
        }
    }

    fn identity() -> Identity {
        Identity {
            name: "echo".into(),
            version: "1.0.0".into(),
            state_format: 3,
        }
    }

    fn checkpoint(op: u64) -> Checkpoint {
        Checkpoint {
            op,
            timestamp: op * 10,
            state: vec![op as u8; 192],
        }
    }

    fn position(op: u64) -> Position {
        Position {
            offset: op * 100,
            op,
            checksum: u128::from(op) + 7,
        }
    }

    #[test]
    fn publishes_and_reopens_the_newest_checkpoint() {
        let disk = SimDisk::new();
        let mut superblock = Superblock::create(
            Box::new(disk.file("superblock")),
            config(),
            identity(),
            0xd1,
        )
        .unwrap();
        superblock
            .publish(&checkpoint(16), position(16), 200, "1.0.0")
            .unwrap();
        superblock
            .publish(&checkpoint(32), position(32), 200, "1.1.0")
            .unwrap();
        let (reopened, valid) = Superblock::open(Box::new(disk.file("superblock"))).unwrap();
        assert_eq!(valid, [true; COPIES]);
        assert_eq!(reopened.state().checkpoint, Some(checkpoint(32)));
        assert_eq!(reopened.state().journal, position(32));
        assert_eq!(reopened.state().options, config());
        assert_eq!(
            reopened.state().identity,
            Identity {
                version: "1.1.0".into(),
                ..identity()
            }
        );
        assert_eq!(reopened.state().sequence, 3);
        assert_eq!(reopened.state().directory_id, 0xd1);
    }

    #[test]
    fn a_crash_at_any_copy_leaves_the_old_or_the_new_checkpoint() {
        for crash_at in 1..=COPIES as u64 {
            for mode in [CrashMode::Lose, CrashMode::TearLast] {
                let disk = SimDisk::new();
                let mut superblock = Superblock::create(
                    Box::new(disk.file("superblock")),
                    config(),
                    identity(),
                    0xd1,
                )
                .unwrap();
                superblock
                    .publish(&checkpoint(16), position(16), 200, "1.0.0")
                    .unwrap();
                disk.crash_at_sync(disk.syncs() + crash_at);
                assert!(
                    superblock
                        .publish(&checkpoint(32), position(32), 200, "1.1.0")
                        .is_err()
                );
                disk.crash(mode);
                let (reopened, _) = Superblock::open(Box::new(disk.file("superblock"))).unwrap();
                let op = reopened.state().checkpoint.as_ref().unwrap().op;
                // Copies synced before the crash hold the new state; a torn first copy
                // may hold either (here its torn half equals the old one, so it is new).
                match (crash_at, mode) {
                    (1, CrashMode::Lose) => assert_eq!(op, 16),
                    (1, CrashMode::TearLast) => assert!(op == 16 || op == 32),
                    _ => assert_eq!(op, 32, "crash at copy {crash_at}, {mode:?}"),
                }
            }
        }
    }

    #[test]
    fn damaged_copies_are_skipped_and_all_damaged_is_an_error() {
        let disk = SimDisk::new();
        let mut superblock = Superblock::create(
            Box::new(disk.file("superblock")),
            config(),
            identity(),
            0xd1,
        )
        .unwrap();
        superblock
            .publish(&checkpoint(16), position(16), 200, "1.0.0")
            .unwrap();
        disk.corrupt("superblock", 200, 1);
        disk.corrupt("superblock", COPY_SIZE + 40, 1);
        let (reopened, valid) = Superblock::open(Box::new(disk.file("superblock"))).unwrap();
        assert_eq!(valid, [false, false, true, true]);
        assert_eq!(reopened.state().checkpoint, Some(checkpoint(16)));
        for copy in 2..COPIES {
            disk.corrupt("superblock", copy * COPY_SIZE + 3000, 1);
        }
        let error = Superblock::open(Box::new(disk.file("superblock"))).unwrap_err();
        assert!(matches!(error, Error::Corrupt { .. }), "{error}");
        disk.truncate("superblock", 100);
        assert!(Superblock::open(Box::new(disk.file("superblock"))).is_err());
    }
}

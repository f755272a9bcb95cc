//! The journal: every committed request, in op order, each entry checksummed and
//! hash-chained to its parent (TigerBeetle's AOF idea), with the checksum of its reply.
//!
//! Entry layout (little-endian; `docs/design.md` is normative): a 128-byte header —
//! `checksum` of bytes `[16, 128)` (16), `checksum_body` (16), `parent` (the previous
//! entry's `checksum`, 0 for op 1) (16), `op` (8), `timestamp` (8), `client` (16),
//! `reply_checksum` (16), `body_size` (4), `operation` (1), `group_index` (3: the
//! entry's place in the write that appended it, 0 for the first), magic `b"carajrnl"`
//! (8), `checkpoint_id` (16; the id of the checkpoint taken at this op, or 0) — then
//! the body.
//!
//! Entries are appended in groups: one write, one sync (group commit). Opening scans
//! from the start. A damaged or incomplete last entry is a torn tail and is cut off; so
//! is a damaged entry whose later valid entries all belong to its own group (that
//! group's write was never synced: the disk may have landed any of its pages). A
//! damaged entry with a valid entry of a later group after it was synced before that
//! group was written: the journal is corrupt, and the error names its op.

use crate::checksum::checksum;
use crate::disk::File;
use crate::error::{Error, Result};
use crate::replica::Request;

/// Bytes of an entry header.
pub const HEADER_SIZE: usize = 128;
const MAGIC: &[u8; 8] = b"carajrnl";

/// The largest body an entry may hold: bounds what a damaged header can make a reader
/// allocate. The journal refuses to append a larger one (its reader would refuse it).
pub const BODY_SIZE_MAX: u32 = crate::instance::MESSAGE_SIZE_MAX;

fn io(action: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |error| Error::io("journal", action, error)
}

/// A journal entry: a committed request and the checksum of its reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The request.
    pub request: Request,
    /// The checksum of the reply it got.
    pub reply_checksum: u128,
    /// The id of the checkpoint taken right after it, if one was.
    pub checkpoint_id: Option<u128>,
}

/// Where the journal ends: the byte offset after the last entry, and that entry's op
/// and checksum (for an empty journal: op 0 and the directory id, op 1's parent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// Bytes of valid entries.
    pub offset: u64,
    /// The last entry's op.
    pub op: u64,
    /// The last entry's checksum: the next entry's parent.
    pub checksum: u128,
}

impl Position {
    /// The start of the journal of data directory `directory_id`.
    pub fn start(directory_id: u128) -> Position {
        Position {
            offset: 0,
            op: 0,
            checksum: directory_id,
        }
    }
}

/// Entries one group may hold: its index is 24 bits.
pub const GROUP_SIZE_MAX: usize = 1 << 24;

/// Append the encoding of `entry`, the `group_index`th of its group, to `bytes`.
fn encode(entry: &Entry, parent: u128, group_index: u32, bytes: &mut Vec<u8>) {
    let request = &entry.request;
    let start = bytes.len();
    bytes.resize(start + HEADER_SIZE + request.body.len(), 0);
    let bytes = &mut bytes[start..];
    bytes[HEADER_SIZE..].copy_from_slice(&request.body);
    let checksum_body = checksum(&request.body);
    bytes[16..32].copy_from_slice(&checksum_body.to_le_bytes());
    bytes[32..48].copy_from_slice(&parent.to_le_bytes());
    bytes[48..56].copy_from_slice(&request.op.to_le_bytes());
    bytes[56..64].copy_from_slice(&request.timestamp.to_le_bytes());
    bytes[64..80].copy_from_slice(&request.client.to_le_bytes());
    bytes[80..96].copy_from_slice(&entry.reply_checksum.to_le_bytes());
    bytes[96..100].copy_from_slice(&(request.body.len() as u32).to_le_bytes());
    bytes[100] = request.operation;
    bytes[101..104].copy_from_slice(&group_index.to_le_bytes()[..3]);
    bytes[104..112].copy_from_slice(MAGIC);
    bytes[112..128].copy_from_slice(&entry.checkpoint_id.unwrap_or(0).to_le_bytes());
    let checksum_header = checksum(&bytes[16..HEADER_SIZE]);
    bytes[0..16].copy_from_slice(&checksum_header.to_le_bytes());
}

fn u128_at(bytes: &[u8], offset: usize) -> u128 {
    u128::from_le_bytes(bytes[offset..offset + 16].try_into().unwrap())
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap())
}

/// A header whose checksum holds, decoded.
#[derive(Clone, Copy, Debug)]
struct Header {
    checksum: u128,
    checksum_body: u128,
    parent: u128,
    op: u64,
    timestamp: u64,
    client: u128,
    reply_checksum: u128,
    body_size: u32,
    operation: u8,
    group_index: u32,
    checkpoint_id: u128,
}

impl Header {
    /// The first op of the group this entry was written with: every op before it was
    /// durable when the entry was written.
    fn group_first_op(&self) -> u64 {
        self.op.saturating_sub(u64::from(self.group_index))
    }
}

fn decode_header(bytes: &[u8]) -> Option<Header> {
    let valid = bytes.len() >= HEADER_SIZE
        && &bytes[104..112] == MAGIC
        && checksum(&bytes[16..HEADER_SIZE]) == u128_at(bytes, 0);
    valid.then(|| Header {
        checksum: u128_at(bytes, 0),
        checksum_body: u128_at(bytes, 16),
        parent: u128_at(bytes, 32),
        op: u64_at(bytes, 48),
        timestamp: u64_at(bytes, 56),
        client: u128_at(bytes, 64),
        reply_checksum: u128_at(bytes, 80),
        body_size: u32::from_le_bytes(bytes[96..100].try_into().unwrap()),
        operation: bytes[100],
        group_index: u32::from_le_bytes([bytes[101], bytes[102], bytes[103], 0]),
        checkpoint_id: u128_at(bytes, 112),
    })
}

/// The journal file.
pub struct Journal {
    file: Box<dyn File>,
    /// Where verification began: the start, or a published checkpoint's entry's start.
    start: Position,
    end: Position,
    /// Group writes appended since opening, each synced.
    writes: u64,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("end", &self.end).finish()
    }
}

/// What opening found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenReport {
    /// Where the valid entries end.
    pub end: Position,
    /// Bytes of a torn tail that were cut off.
    pub torn_bytes: u64,
}

impl Journal {
    /// Open the journal in `file` of the data directory `directory_id`: verify every
    /// entry and the chain (op 1's parent is the directory id, so a journal of another
    /// directory is refused), cut a torn tail.
    pub fn open(file: Box<dyn File>, directory_id: u128) -> Result<(Journal, OpenReport)> {
        Self::open_with(file, directory_id, true)
    }

    /// Open without changing the file (to replay or inspect it, or to check it before
    /// cutting with [`Journal::cut_torn_tail`]): a torn tail is only reported.
    pub fn open_read_only(
        file: Box<dyn File>,
        directory_id: u128,
    ) -> Result<(Journal, OpenReport)> {
        Self::open_with(file, directory_id, false)
    }

    /// Open without changing the file, verifying the entry of a published checkpoint
    /// (`entry_size` bytes ending at `after`, as the superblock records them) and the
    /// entries after it: what recovery needs, in time bounded by the journal's tail, not
    /// its length. The entries before are not read; `carapace replay` verifies them all.
    /// A damaged checkpoint entry ends the verified journal before the checkpoint, which
    /// recovery reports as lost.
    pub fn open_after(
        mut file: Box<dyn File>,
        directory_id: u128,
        after: Position,
        entry_size: u32,
    ) -> Result<(Journal, OpenReport)> {
        let length = file.length().map_err(io("reading the length of"))?;
        let start = after
            .offset
            .checked_sub(u64::from(entry_size))
            .filter(|&start| {
                entry_size as usize >= HEADER_SIZE && start + HEADER_SIZE as u64 <= length
            });
        let mut header = [0; HEADER_SIZE];
        let decoded = match start {
            Some(start) => {
                file.read_at(start, &mut header).map_err(io("reading"))?;
                decode_header(&header)
            }
            None => None,
        };
        // The header the superblock names gives the chain before it: the scan then
        // verifies that entry's body and everything after, as a whole open would.
        match (start, decoded) {
            (Some(start), Some(decoded))
                if decoded.checksum == after.checksum && decoded.op == after.op =>
            {
                let before = Position {
                    offset: start,
                    op: after.op - 1,
                    checksum: decoded.parent,
                };
                Self::scan(file, directory_id, before, false)
            }
            _ => Err(Error::corrupt(
                "journal",
                format!(
                    "the entry of checkpoint op {} is not where the superblock says (its \
                     {entry_size} bytes end at byte {}; the journal has {length}): it lost \
                     an acknowledged entry before the checkpoint at op {}",
                    after.op, after.offset, after.op
                ),
            )),
        }
    }

    /// Cut what follows the last valid entry, durably.
    pub fn cut_torn_tail(&mut self) -> Result<()> {
        if self.file.length().map_err(io("reading the length of"))? > self.end.offset {
            self.file
                .set_len(self.end.offset)
                .map_err(io("cutting the torn tail of"))?;
            self.file.sync().map_err(io("syncing"))?;
        }
        Ok(())
    }

    fn open_with(
        file: Box<dyn File>,
        directory_id: u128,
        cut_torn_tail: bool,
    ) -> Result<(Journal, OpenReport)> {
        Self::scan(
            file,
            directory_id,
            Position::start(directory_id),
            cut_torn_tail,
        )
    }

    /// Verify every entry from `start` on: headers, bodies, the chain.
    fn scan(
        mut file: Box<dyn File>,
        directory_id: u128,
        start: Position,
        cut_torn_tail: bool,
    ) -> Result<(Journal, OpenReport)> {
        let length = file.length().map_err(io("reading the length of"))?;
        let mut end = start;
        let mut header = [0; HEADER_SIZE];
        while end.offset < length {
            let next = end.op + 1;
            if length - end.offset < HEADER_SIZE as u64 {
                break;
            }
            file.read_at(end.offset, &mut header)
                .map_err(io("reading"))?;
            let Some(decoded) = decode_header(&header) else {
                if Self::synced_before_later_group(file.as_mut(), end.offset + 1, length, next)? {
                    return Err(Error::corrupt(
                        "journal",
                        format!("entry of op {next} at byte {} is corrupt", end.offset),
                    ));
                }
                break;
            };
            if decoded.op == 1 && next == 1 && decoded.parent != directory_id {
                return Err(Error::corrupt(
                    "journal",
                    format!(
                        "it belongs to another data directory: its first entry follows \
                         {:032x}, this directory is {directory_id:032x}",
                        decoded.parent
                    ),
                ));
            }
            if decoded.op != next || decoded.parent != end.checksum {
                return Err(Error::corrupt(
                    "journal",
                    format!(
                        "entry at byte {} holds op {} with parent {:032x}; expected op {next} \
                         after {:032x}",
                        end.offset, decoded.op, decoded.parent, end.checksum
                    ),
                ));
            }
            let entry_end = end.offset + HEADER_SIZE as u64 + u64::from(decoded.body_size);
            if decoded.body_size > BODY_SIZE_MAX {
                return Err(Error::corrupt(
                    "journal",
                    format!(
                        "entry of op {next} declares a body of {} bytes",
                        decoded.body_size
                    ),
                ));
            }
            if entry_end > length {
                break;
            }
            let mut body = vec![0; decoded.body_size as usize];
            file.read_at(end.offset + HEADER_SIZE as u64, &mut body)
                .map_err(io("reading"))?;
            if checksum(&body) != decoded.checksum_body {
                if !Self::synced_before_later_group(file.as_mut(), entry_end, length, next)? {
                    break;
                }
                return Err(Error::corrupt(
                    "journal",
                    format!(
                        "entry of op {next} at byte {} has a corrupt body",
                        end.offset
                    ),
                ));
            }
            end = Position {
                offset: entry_end,
                op: decoded.op,
                checksum: decoded.checksum,
            };
        }
        let torn_bytes = length - end.offset;
        if torn_bytes > 0 && cut_torn_tail {
            file.set_len(end.offset)
                .map_err(io("cutting the torn tail of"))?;
            file.sync().map_err(io("syncing"))?;
        }
        let journal = Journal {
            file,
            start,
            end,
            writes: 0,
        };
        Ok((journal, OpenReport { end, torn_bytes }))
    }

    /// Whether the damaged entry of op `op` must have been synced: a valid entry of a
    /// later group starts somewhere in `[from, length)` (a group is written only once
    /// the one before it is durable). Otherwise the damage is a torn tail, or a torn
    /// last group: never synced, never acknowledged.
    fn synced_before_later_group(
        file: &mut dyn File,
        from: u64,
        length: u64,
        op: u64,
    ) -> Result<bool> {
        // In windows of bounded size, each overlapping the next by a header, so that a
        // long journal damaged near its start costs time, not memory. A read error is
        // an error: guessing "torn tail" would cut acknowledged entries.
        const WINDOW_SIZE: u64 = 1 << 20;
        let mut window = vec![0; (WINDOW_SIZE as usize) + HEADER_SIZE];
        let mut start = from;
        while start + HEADER_SIZE as u64 <= length {
            let size = (length - start).min(WINDOW_SIZE + HEADER_SIZE as u64) as usize;
            file.read_at(start, &mut window[..size])
                .map_err(io("reading"))?;
            for at in 0..=size - HEADER_SIZE {
                if window[at + 104..at + 112] != *MAGIC {
                    continue;
                }
                let Some(header) =
                    decode_header(&window[at..size]).filter(|header| header.op >= op)
                else {
                    continue;
                };
                // A header alone could be forged inside a request body; an entry whose
                // body checksum holds too was written by the journal.
                let body_start = start + (at + HEADER_SIZE) as u64;
                if header.body_size > BODY_SIZE_MAX
                    || body_start + u64::from(header.body_size) > length
                {
                    continue;
                }
                let mut body = vec![0; header.body_size as usize];
                file.read_at(body_start, &mut body).map_err(io("reading"))?;
                if checksum(&body) == header.checksum_body && header.group_first_op() > op {
                    return Ok(true);
                }
            }
            start += WINDOW_SIZE;
        }
        Ok(false)
    }

    /// Where the journal ends.
    pub fn end(&self) -> Position {
        self.end
    }

    /// Group writes appended since opening, each synced.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// Append `entry` (the next op) and sync: once this returns, the op is durable.
    pub fn append(&mut self, entry: &Entry) -> Result<()> {
        self.append_group(std::slice::from_ref(entry))
    }

    /// Refuse a body the reader would refuse, before anything is written.
    pub fn check_body_size(size: usize) -> Result<()> {
        if size > BODY_SIZE_MAX as usize {
            return Err(Error::Refused(format!(
                "a body of {size} bytes is over the journal's {BODY_SIZE_MAX}"
            )));
        }
        Ok(())
    }

    /// Append `entries` (the next ops, in order) with one write and one sync: once this
    /// returns, every one of them is durable (group commit).
    pub fn append_group(&mut self, entries: &[Entry]) -> Result<()> {
        assert!(entries.len() <= GROUP_SIZE_MAX);
        if entries.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::new();
        let mut end = self.end;
        for (index, entry) in entries.iter().enumerate() {
            assert_eq!(entry.request.op, end.op + 1);
            Self::check_body_size(entry.request.body.len())?;
            let start = bytes.len();
            encode(entry, end.checksum, index as u32, &mut bytes);
            end = Position {
                offset: end.offset + (bytes.len() - start) as u64,
                op: entry.request.op,
                checksum: u128_at(&bytes, start),
            };
        }
        self.file
            .write_at(self.end.offset, &bytes)
            .map_err(io("appending to"))?;
        self.file.sync().map_err(io("syncing"))?;
        self.end = end;
        self.writes += 1;
        Ok(())
    }

    /// Read every entry from the start, calling `visit` on each, in op order.
    pub fn read_all(&mut self, visit: impl FnMut(Entry, Position) -> Result<()>) -> Result<()> {
        self.read_from(0, visit)
    }

    /// Read the entries opening verified (all of them, or from the checkpoint entry
    /// that [`Journal::open_after`] started at), in op order.
    pub fn read_verified(
        &mut self,
        visit: impl FnMut(Entry, Position) -> Result<()>,
    ) -> Result<()> {
        self.read_from(self.start.offset, visit)
    }

    fn read_from(
        &mut self,
        offset: u64,
        mut visit: impl FnMut(Entry, Position) -> Result<()>,
    ) -> Result<()> {
        let mut offset = offset;
        let mut header = [0; HEADER_SIZE];
        while offset < self.end.offset {
            self.file
                .read_at(offset, &mut header)
                .map_err(io("reading"))?;
            let decoded = decode_header(&header).ok_or_else(|| {
                Error::corrupt(
                    "journal",
                    format!("entry at byte {offset} changed under its reader"),
                )
            })?;
            let mut body = vec![0; decoded.body_size as usize];
            self.file
                .read_at(offset + HEADER_SIZE as u64, &mut body)
                .map_err(io("reading"))?;
            offset += (HEADER_SIZE + body.len()) as u64;
            let position = Position {
                offset,
                op: decoded.op,
                checksum: decoded.checksum,
            };
            let entry = Entry {
                request: Request {
                    client: decoded.client,
                    op: decoded.op,
                    timestamp: decoded.timestamp,
                    operation: decoded.operation,
                    body,
                },
                reply_checksum: decoded.reply_checksum,
                checkpoint_id: (decoded.checkpoint_id != 0).then_some(decoded.checkpoint_id),
            };
            visit(entry, position)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::SimDisk;

    const DIRECTORY_ID: u128 = 0xd1;

    fn entry(op: u64) -> Entry {
        Entry {
            request: Request {
                client: 3,
                op,
                timestamp: 100 + op,
                operation: 1,
                body: vec![op as u8; (op as usize * 7) % 50],
            },
            reply_checksum: u128::from(op) * 11,
            checkpoint_id: op.is_multiple_of(4).then_some(u128::from(op) << 70),
        }
    }

    fn write(disk: &SimDisk, ops: u64) -> Position {
        let (mut journal, _) = Journal::open(Box::new(disk.file("journal")), DIRECTORY_ID).unwrap();
        for op in 1..=ops {
            journal.append(&entry(op)).unwrap();
        }
        journal.end()
    }

    fn read(disk: &SimDisk) -> Result<(Vec<Entry>, OpenReport)> {
        let (mut journal, report) = Journal::open(Box::new(disk.file("journal")), DIRECTORY_ID)?;
        let mut entries = Vec::new();
        journal.read_all(|entry, _| {
            entries.push(entry);
            Ok(())
        })?;
        Ok((entries, report))
    }

    #[test]
    fn entries_round_trip_in_order() {
        let disk = SimDisk::new();
        let end = write(&disk, 20);
        let (entries, report) = read(&disk).unwrap();
        assert_eq!(entries, (1..=20).map(entry).collect::<Vec<_>>());
        assert_eq!(report.end, end);
        assert_eq!(report.torn_bytes, 0);
    }

    #[test]
    fn a_torn_tail_is_cut_at_the_last_valid_entry() {
        for cut in [1, 60, HEADER_SIZE + 3] {
            let disk = SimDisk::new();
            write(&disk, 10);
            let length = disk.durable_len("journal");
            let last_size = HEADER_SIZE + entry(10).request.body.len();
            disk.truncate("journal", length - last_size + cut.min(last_size - 1));
            let (entries, report) = read(&disk).unwrap();
            assert_eq!(entries.len(), 9, "cut {cut}");
            assert!(report.torn_bytes > 0);
            // Appending continues the chain after the cut.
            let (mut journal, _) =
                Journal::open(Box::new(disk.file("journal")), DIRECTORY_ID).unwrap();
            journal.append(&entry(10)).unwrap();
            assert_eq!(read(&disk).unwrap().0.len(), 10);
        }
    }

    #[test]
    fn damage_to_the_last_entry_is_a_torn_tail() {
        let disk = SimDisk::new();
        write(&disk, 5);
        let length = disk.durable_len("journal");
        disk.corrupt("journal", length - 1, 0x01);
        assert_eq!(read(&disk).unwrap().0.len(), 4);
    }

    /// Ops 1..=5 appended one by one, then ops 6..=11 as one group.
    fn write_with_a_group(disk: &SimDisk) {
        let (mut journal, _) = Journal::open(Box::new(disk.file("journal")), DIRECTORY_ID).unwrap();
        for op in 1..=5 {
            journal.append(&entry(op)).unwrap();
        }
        let group: Vec<Entry> = (6..=11).map(entry).collect();
        journal.append_group(&group).unwrap();
    }

    fn offset_of(op: u64) -> u64 {
        (1..op)
            .map(|op| (HEADER_SIZE + entry(op).request.body.len()) as u64)
            .sum()
    }

    #[test]
    fn a_group_round_trips_like_single_appends() {
        let grouped = SimDisk::new();
        write_with_a_group(&grouped);
        let single = SimDisk::new();
        write(&single, 11);
        let (entries, report) = read(&grouped).unwrap();
        assert_eq!(entries, (1..=11).map(entry).collect::<Vec<_>>());
        assert_eq!(report.torn_bytes, 0);
        // Only the group index differs from entries appended one by one.
        assert_eq!(
            grouped.durable_len("journal"),
            single.durable_len("journal")
        );
    }

    #[test]
    fn damage_inside_the_last_group_is_a_torn_tail_cut_at_the_damage() {
        // The group's write was never synced: a crash may land its later pages and not
        // an earlier one. Damage to op 8's header, then to its body.
        for offset in [offset_of(8) + 40, offset_of(8) + HEADER_SIZE as u64] {
            let disk = SimDisk::new();
            write_with_a_group(&disk);
            disk.corrupt("journal", offset as usize, 0x10);
            let length = disk.durable_len("journal") as u64;
            let (entries, report) = read(&disk).unwrap();
            assert_eq!(entries.len(), 7, "damage at byte {offset}");
            assert_eq!(report.torn_bytes, length - offset_of(8));
            assert_eq!(disk.durable_len("journal") as u64, offset_of(8));
        }
    }

    #[test]
    fn damage_to_an_entry_before_a_later_group_is_an_error_naming_the_op() {
        // Op 4 was synced before the group of ops 6..=11 was written.
        let disk = SimDisk::new();
        write_with_a_group(&disk);
        disk.corrupt("journal", offset_of(4) as usize + 40, 0x10);
        match read(&disk).unwrap_err() {
            Error::Corrupt { detail, .. } => assert!(detail.contains("op 4"), "{detail}"),
            error => panic!("expected a corrupt journal, got {error}"),
        }
    }

    #[test]
    fn damage_in_the_middle_is_an_error_naming_the_op() {
        // A byte of op 3's header, then of op 3's body.
        let offset_of_op_3 = (1..3)
            .map(|op| HEADER_SIZE + entry(op).request.body.len())
            .sum::<usize>();
        for (offset, what) in [
            (offset_of_op_3 + 50, "op 3"),
            (offset_of_op_3 + HEADER_SIZE + 1, "op 3"),
        ] {
            let disk = SimDisk::new();
            write(&disk, 8);
            disk.corrupt("journal", offset, 0x80);
            match read(&disk).unwrap_err() {
                Error::Corrupt { file, detail } => {
                    assert_eq!(file, "journal");
                    assert!(detail.contains(what), "{detail}");
                }
                error => panic!("expected a corrupt journal, got {error}"),
            }
        }
    }

    #[test]
    fn a_journal_of_another_directory_is_refused() {
        let disk = SimDisk::new();
        write(&disk, 3);
        match Journal::open(Box::new(disk.file("journal")), DIRECTORY_ID + 1).unwrap_err() {
            Error::Corrupt { file, detail } => {
                assert_eq!(file, "journal");
                assert!(
                    detail.contains("belongs to another data directory"),
                    "{detail}"
                );
            }
            error => panic!("expected a foreign journal refused, got {error}"),
        }
        // Nothing was cut.
        assert_eq!(read(&disk).unwrap().0.len(), 3);
    }

    #[test]
    fn append_refuses_a_body_the_reader_would_refuse() {
        let disk = SimDisk::new();
        write(&disk, 2);
        let (mut journal, _) = Journal::open(Box::new(disk.file("journal")), DIRECTORY_ID).unwrap();
        let mut oversized = entry(3);
        oversized.request.body = vec![0; BODY_SIZE_MAX as usize + 1];
        let error = journal.append(&oversized).unwrap_err();
        assert!(matches!(error, Error::Refused(_)), "{error}");
        // Nothing was written: the journal still reads back whole, and goes on.
        journal.append(&entry(3)).unwrap();
        assert_eq!(read(&disk).unwrap().0.len(), 3);
    }
}

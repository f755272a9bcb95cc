//! The journal: every committed request, in op order, each entry checksummed and
//! hash-chained to its parent (TigerBeetle's AOF idea), with the checksum of its reply.
//!
//! Entry layout (little-endian; `docs/design.md` is normative): a 128-byte header —
//! `checksum` of bytes `[16, 128)` (16), `checksum_body` (16), `parent` (the previous
//! entry's `checksum`, 0 for op 1) (16), `op` (8), `timestamp` (8), `client` (16),
//! `reply_checksum` (16), `body_size` (4), `operation` (1), reserved (3), magic
//! `b"carajrnl"` (8), `checkpoint_id` (16; the id of the checkpoint taken at this op,
//! or 0) — then the body.
//!
//! Opening scans from the start. A damaged or incomplete last entry is a torn tail and
//! is cut off; a damaged entry with valid entries after it is an error naming its op.

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

fn encode(entry: &Entry, parent: u128) -> Vec<u8> {
    let request = &entry.request;
    let mut bytes = vec![0; HEADER_SIZE + request.body.len()];
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
    bytes[104..112].copy_from_slice(MAGIC);
    bytes[112..128].copy_from_slice(&entry.checkpoint_id.unwrap_or(0).to_le_bytes());
    let checksum_header = checksum(&bytes[16..HEADER_SIZE]);
    bytes[0..16].copy_from_slice(&checksum_header.to_le_bytes());
    bytes
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
    checkpoint_id: u128,
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
        checkpoint_id: u128_at(bytes, 112),
    })
}

/// The journal file.
pub struct Journal {
    file: Box<dyn File>,
    end: Position,
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
        mut file: Box<dyn File>,
        directory_id: u128,
        cut_torn_tail: bool,
    ) -> Result<(Journal, OpenReport)> {
        let length = file.length().map_err(io("reading the length of"))?;
        let mut end = Position::start(directory_id);
        let mut header = [0; HEADER_SIZE];
        while end.offset < length {
            let next = end.op + 1;
            if length - end.offset < HEADER_SIZE as u64 {
                break;
            }
            file.read_at(end.offset, &mut header)
                .map_err(io("reading"))?;
            let Some(decoded) = decode_header(&header) else {
                // A torn write damages only the last entry: a valid entry after the
                // damage means an entry in the middle went bad.
                if Self::valid_entry_after(file.as_mut(), end.offset + 1, length, next)? {
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
                if entry_end == length {
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
        Ok((Journal { file, end }, OpenReport { end, torn_bytes }))
    }

    /// Whether a valid entry header of op `op` or later starts anywhere in
    /// `[from, length)`: if one does, damage before it is not a torn tail.
    fn valid_entry_after(file: &mut dyn File, from: u64, length: u64, op: u64) -> Result<bool> {
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
                if checksum(&body) == header.checksum_body {
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

    /// Append `entry` (the next op) and sync: once this returns, the op is durable. A
    /// body the reader would refuse is refused here, before anything is written.
    pub fn append(&mut self, entry: &Entry) -> Result<()> {
        assert_eq!(entry.request.op, self.end.op + 1);
        if entry.request.body.len() > BODY_SIZE_MAX as usize {
            return Err(Error::Refused(format!(
                "a body of {} bytes is over the journal's {BODY_SIZE_MAX}",
                entry.request.body.len()
            )));
        }
        let bytes = encode(entry, self.end.checksum);
        self.file
            .write_at(self.end.offset, &bytes)
            .map_err(io("appending to"))?;
        self.file.sync().map_err(io("syncing"))?;
        self.end = Position {
            offset: self.end.offset + bytes.len() as u64,
            op: entry.request.op,
            checksum: u128_at(&bytes, 0),
        };
        Ok(())
    }

    /// Read every entry from the start, calling `visit` on each, in op order.
    pub fn read_all(&mut self, mut visit: impl FnMut(Entry, Position) -> Result<()>) -> Result<()> {
        let mut offset = 0;
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

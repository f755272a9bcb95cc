//! Files as the durable parts of a data directory use them: positioned reads and writes,
//! and a sync that makes completed writes durable. The native host's `OsFile` is a real
//! file, the browser's an OPFS handle; [`SimDisk`] keeps each file's durable image apart
//! from its live one, can crash at any sync or any operation, dropping (or tearing)
//! whatever was not synced, and injects the faults of [`FileFaults`], for crash tests
//! and the simulator.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::rc::Rc;

/// A file of a data directory.
pub trait File {
    /// Read `buffer.len()` bytes at `offset`; bytes past the end read as zeros.
    fn read_at(&mut self, offset: u64, buffer: &mut [u8]) -> io::Result<()>;
    /// Write `data` at `offset`, growing the file if needed.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Make every completed write durable.
    fn sync(&mut self) -> io::Result<()>;
    /// The file's length in bytes.
    fn length(&mut self) -> io::Result<u64>;
    /// Cut or extend the file to `length` bytes (durable after the next sync).
    fn set_len(&mut self, length: u64) -> io::Result<()>;
}

/// A file shared by several owners: the grid, which every instance a durable replica
/// builds (at open, and again after a guest traps) reads and writes in turn.
#[derive(Clone)]
pub struct SharedFile(Rc<RefCell<Box<dyn File>>>);

impl std::fmt::Debug for SharedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedFile")
    }
}

impl SharedFile {
    /// Share `file`.
    pub fn new(file: Box<dyn File>) -> SharedFile {
        SharedFile(Rc::new(RefCell::new(file)))
    }
}

impl File for SharedFile {
    fn read_at(&mut self, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        self.0.borrow_mut().read_at(offset, buffer)
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.borrow_mut().write_at(offset, data)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.0.borrow_mut().sync()
    }

    fn length(&mut self) -> io::Result<u64> {
        self.0.borrow_mut().length()
    }

    fn set_len(&mut self, length: u64) -> io::Result<()> {
        self.0.borrow_mut().set_len(length)
    }
}

/// How a crash treats writes that were not synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// They are lost.
    Lose,
    /// The last of them lands halfway (a torn write); the rest are lost.
    TearLast,
    /// The last of them lands but for its first sector; the rest are lost: a disk
    /// that persisted the pages of a write out of order.
    LoseFirstSectorOfLast,
    /// Each lands whole, lands halfway, lands sector by sector (each 512-byte sector
    /// of it or not) or is lost, as a PRNG with this seed decides: a crash at a random
    /// point between syncs, on a disk that reorders writes and the pages of a write.
    Random(u64),
}

/// Faults a [`SimDisk`] injects into one file's operations, each with a chance in
/// parts per million per operation. All are off by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileFaults {
    /// A read fails with an I/O error.
    pub read_error: u32,
    /// A write fails with an I/O error, or with "no space" (half of each), and writes
    /// nothing.
    pub write_error: u32,
    /// A sync fails with an I/O error; the writes it should have made durable may or
    /// may not be (a crash decides).
    pub sync_error: u32,
    /// A read returns the stored bytes with one bit flipped (the stored bytes are
    /// fine: a fault in transit).
    pub read_corrupt: u32,
    /// A read returns the bytes of another unit of the file (a misdirected read).
    pub read_misdirect: u32,
    /// A write reports success and changes nothing (a lost write).
    pub write_lost: u32,
    /// A write reports success and lands only its first half (a torn write).
    pub write_torn: u32,
    /// The unit of misdirected reads: the grid's block size. 0 means none.
    pub unit: u64,
}

/// A fault a [`SimDisk`] injected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectedFault {
    /// The file.
    pub file: String,
    /// What it was.
    pub kind: FaultKind,
    /// The offset of the operation it hit.
    pub offset: u64,
}

/// The kinds of fault a [`SimDisk`] injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// A read failed with an I/O error.
    ReadError,
    /// A write failed with an I/O error or "no space".
    WriteError,
    /// A sync failed.
    SyncError,
    /// A read returned a flipped bit.
    ReadCorrupt,
    /// A read returned another unit's bytes.
    ReadMisdirect,
    /// A write was lost.
    WriteLost,
    /// A write landed half.
    WriteTorn,
}

impl FaultKind {
    /// Every kind, in order.
    pub const ALL: [FaultKind; 7] = [
        FaultKind::ReadError,
        FaultKind::WriteError,
        FaultKind::SyncError,
        FaultKind::ReadCorrupt,
        FaultKind::ReadMisdirect,
        FaultKind::WriteLost,
        FaultKind::WriteTorn,
    ];

    /// Its name, for reports.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::ReadError => "read-error",
            FaultKind::WriteError => "write-error",
            FaultKind::SyncError => "sync-error",
            FaultKind::ReadCorrupt => "read-corrupt",
            FaultKind::ReadMisdirect => "read-misdirect",
            FaultKind::WriteLost => "write-lost",
            FaultKind::WriteTorn => "write-torn",
        }
    }
}

#[derive(Debug, Default)]
struct SimFileState {
    durable: Vec<u8>,
    live: Vec<u8>,
    faults: FileFaults,
    /// Writes since the last sync, in order, with their data (a later write may have
    /// overwritten the live bytes, so a crash replays each from its own copy).
    pending: Vec<(u64, Vec<u8>)>,
}

#[derive(Debug, Default)]
struct SimDiskState {
    files: BTreeMap<String, SimFileState>,
    syncs: u64,
    /// Fail the sync with this number (1-based), as if the process died there.
    crash_at_sync: Option<u64>,
    /// Operations (reads, writes, syncs) on any file so far.
    operations: u64,
    /// Fail the operation with this number (1-based), as if the process died there.
    crash_at_operation: Option<u64>,
    crashed: bool,
    /// Operations pass untouched and uncounted: an observer is reading.
    observing: bool,
    /// Draws the faults; `None` until [`SimDisk::with_faults`].
    fault_prng: Option<crate::prng::Prng>,
    injected: Vec<InjectedFault>,
}

/// An in-memory disk whose files keep their durable image apart from the live one.
#[derive(Clone, Debug, Default)]
pub struct SimDisk {
    state: Rc<RefCell<SimDiskState>>,
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    /// The file `name`, created empty if missing.
    pub fn file(&self, name: &str) -> SimFile {
        self.state
            .borrow_mut()
            .files
            .entry(name.to_string())
            .or_default();
        SimFile {
            disk: self.clone(),
            name: name.to_string(),
        }
    }

    /// Make the sync numbered `sync` (counting from 1 over all files) fail as a crash:
    /// that sync and every later operation fail until [`SimDisk::crash`].
    pub fn crash_at_sync(&self, sync: u64) {
        self.state.borrow_mut().crash_at_sync = Some(sync);
    }

    /// Syncs done so far.
    pub fn syncs(&self) -> u64 {
        self.state.borrow().syncs
    }

    /// A disk that draws the faults files are given ([`SimDisk::set_faults`]) from a
    /// PRNG with `seed`.
    pub fn with_faults(seed: u64) -> SimDisk {
        let disk = SimDisk::new();
        disk.state.borrow_mut().fault_prng = Some(crate::prng::Prng::new(seed));
        disk
    }

    /// Inject `faults` into the operations on file `name` (created empty if missing).
    pub fn set_faults(&self, name: &str, faults: FileFaults) {
        let mut state = self.state.borrow_mut();
        assert!(state.fault_prng.is_some(), "a disk made by `with_faults`");
        state.files.entry(name.to_string()).or_default().faults = faults;
    }

    /// The faults injected so far, oldest first.
    pub fn injected(&self) -> Vec<InjectedFault> {
        self.state.borrow().injected.clone()
    }

    /// Make the operation numbered `operation` (counting reads, writes and syncs from 1
    /// over all files, see [`SimDisk::operations`]) fail as a crash: it and every later
    /// operation fail until [`SimDisk::crash`].
    pub fn crash_at_operation(&self, operation: u64) {
        self.state.borrow_mut().crash_at_operation = Some(operation);
    }

    /// Operations (reads, writes, syncs) done so far, on all files.
    pub fn operations(&self) -> u64 {
        self.state.borrow().operations
    }

    /// Run `observe` with no faults, crash points or counting: a checker reading what
    /// the disk holds, not the replica under test.
    pub fn observe<R>(&self, observe: impl FnOnce() -> R) -> R {
        self.state.borrow_mut().observing = true;
        let result = observe();
        self.state.borrow_mut().observing = false;
        result
    }

    /// Whether the disk is down: a crash point was reached and [`SimDisk::crash`] has
    /// not been called since.
    pub fn is_crashed(&self) -> bool {
        self.state.borrow().crashed
    }

    /// The process died: every file reverts to its durable image, with the last
    /// unsynced write torn if `mode` says so. The disk works again afterwards.
    pub fn crash(&self, mode: CrashMode) {
        let mut state = self.state.borrow_mut();
        let mut prng = match mode {
            CrashMode::Random(seed) => Some(crate::prng::Prng::new(seed)),
            _ => None,
        };
        for file in state.files.values_mut() {
            file.live = file.durable.clone();
            let pending = std::mem::take(&mut file.pending);
            let last = pending.len().saturating_sub(1);
            for (index, (offset, data)) in pending.into_iter().enumerate() {
                let landed = match (&mut prng, mode) {
                    (Some(prng), _) => match prng.below(4) {
                        0 => 0,
                        1 => data.len() / 2,
                        2 => {
                            for (sector, bytes) in data.chunks(SECTOR_SIZE).enumerate() {
                                if prng.below(2) == 0 {
                                    land(
                                        &mut file.live,
                                        offset as usize + sector * SECTOR_SIZE,
                                        bytes,
                                    );
                                }
                            }
                            0
                        }
                        _ => data.len(),
                    },
                    (None, CrashMode::TearLast) if index == last => data.len() / 2,
                    (None, CrashMode::LoseFirstSectorOfLast) if index == last => {
                        if let Some(rest) = data.get(SECTOR_SIZE..) {
                            land(&mut file.live, offset as usize + SECTOR_SIZE, rest);
                        }
                        0
                    }
                    _ => 0,
                };
                land(&mut file.live, offset as usize, &data[..landed]);
            }
            file.durable = file.live.clone();
        }
        state.crashed = false;
        state.crash_at_sync = None;
        state.crash_at_operation = None;
    }

    /// Flip bits of a byte of a file's live and durable images, as a failing disk would.
    pub fn corrupt(&self, name: &str, offset: usize, mask: u8) {
        let mut state = self.state.borrow_mut();
        let file = state.files.get_mut(name).expect("the file exists");
        file.live[offset] ^= mask;
        file.durable[offset] ^= mask;
    }

    /// Cut a file's live and durable images to `length` bytes.
    pub fn truncate(&self, name: &str, length: usize) {
        let mut state = self.state.borrow_mut();
        let file = state.files.get_mut(name).expect("the file exists");
        file.live.truncate(length);
        file.durable.truncate(length);
    }

    /// The length of a file's durable image.
    pub fn durable_len(&self, name: &str) -> usize {
        self.state
            .borrow()
            .files
            .get(name)
            .map_or(0, |file| file.durable.len())
    }
}

/// A file of a [`SimDisk`].
#[derive(Debug)]
pub struct SimFile {
    disk: SimDisk,
    name: String,
}

/// The unit a disk writes atomically: a crash lands each sector of a write or not.
const SECTOR_SIZE: usize = 512;

/// Put `bytes` at `start` of a file's image, growing it as a write past its end does.
fn land(image: &mut Vec<u8>, start: usize, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    if image.len() < start + bytes.len() {
        image.resize(start + bytes.len(), 0);
    }
    image[start..start + bytes.len()].copy_from_slice(bytes);
}

fn crashed() -> io::Error {
    io::Error::other("simulated crash")
}

impl SimDiskState {
    /// Count an operation on `name`; fail it if the disk is down or this is the crash
    /// point.
    fn begin(&mut self) -> io::Result<()> {
        if self.observing {
            return Ok(());
        }
        if self.crashed {
            return Err(crashed());
        }
        self.operations += 1;
        if self.crash_at_operation == Some(self.operations) {
            self.crashed = true;
            return Err(crashed());
        }
        Ok(())
    }

    /// Whether a fault with `chance` (parts per million) strikes this operation.
    fn strikes(&mut self, chance: u32) -> bool {
        chance > 0
            && !self.observing
            && self
                .fault_prng
                .as_mut()
                .is_some_and(|prng| prng.below(1_000_000) < u64::from(chance))
    }

    fn record(&mut self, name: &str, kind: FaultKind, offset: u64) {
        self.injected.push(InjectedFault {
            file: name.to_string(),
            kind,
            offset,
        });
    }

    fn draw(&mut self, bound: u64) -> u64 {
        self.fault_prng.as_mut().map_or(0, |prng| prng.below(bound))
    }
}

fn injected_error(kind: io::ErrorKind, what: &str) -> io::Error {
    io::Error::new(kind, format!("injected fault: {what}"))
}

impl SimFile {
    fn with<R>(&self, action: impl FnOnce(&mut SimFileState) -> R) -> io::Result<R> {
        let mut state = self.disk.state.borrow_mut();
        state.begin()?;
        Ok(action(
            state.files.get_mut(&self.name).expect("the file exists"),
        ))
    }

    fn faults(&self) -> FileFaults {
        self.disk.state.borrow().files[&self.name].faults
    }
}

impl File for SimFile {
    fn read_at(&mut self, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        let faults = self.faults();
        let mut state = self.disk.state.borrow_mut();
        state.begin()?;
        if state.strikes(faults.read_error) {
            state.record(&self.name, FaultKind::ReadError, offset);
            return Err(injected_error(io::ErrorKind::Other, "read error"));
        }
        let units = state.files[&self.name].live.len() as u64 / faults.unit.max(1);
        let mut source = offset;
        if faults.unit > 0 && units >= 2 && state.strikes(faults.read_misdirect) {
            let shift = 1 + state.draw(units - 1);
            source = (offset / faults.unit + shift) % units * faults.unit;
            state.record(&self.name, FaultKind::ReadMisdirect, offset);
        }
        let file = &state.files[&self.name];
        let start = (source as usize).min(file.live.len());
        let end = (source as usize + buffer.len()).min(file.live.len());
        buffer[..end - start].copy_from_slice(&file.live[start..end]);
        buffer[end - start..].fill(0);
        if !buffer.is_empty() && state.strikes(faults.read_corrupt) {
            let bit = state.draw(buffer.len() as u64 * 8);
            buffer[(bit / 8) as usize] ^= 1 << (bit % 8);
            state.record(&self.name, FaultKind::ReadCorrupt, offset);
        }
        Ok(())
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let faults = self.faults();
        let mut state = self.disk.state.borrow_mut();
        state.begin()?;
        if state.strikes(faults.write_error) {
            state.record(&self.name, FaultKind::WriteError, offset);
            let kind = if state.draw(2) == 0 {
                io::ErrorKind::StorageFull
            } else {
                io::ErrorKind::Other
            };
            return Err(injected_error(kind, "write error"));
        }
        let landed = if state.strikes(faults.write_lost) {
            state.record(&self.name, FaultKind::WriteLost, offset);
            &data[..0]
        } else if state.strikes(faults.write_torn) {
            state.record(&self.name, FaultKind::WriteTorn, offset);
            &data[..data.len() / 2]
        } else {
            data
        };
        let file = state.files.get_mut(&self.name).expect("the file exists");
        let end = offset as usize + data.len();
        if file.live.len() < end {
            file.live.resize(end, 0);
        }
        file.live[offset as usize..offset as usize + landed.len()].copy_from_slice(landed);
        file.pending.push((offset, landed.to_vec()));
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let faults = self.faults();
        let mut state = self.disk.state.borrow_mut();
        state.begin()?;
        state.syncs += 1;
        if state.crash_at_sync == Some(state.syncs) {
            state.crashed = true;
            return Err(crashed());
        }
        if state.strikes(faults.sync_error) {
            // The writes stay pending: whether they reached the disk, a crash decides.
            state.record(&self.name, FaultKind::SyncError, 0);
            return Err(injected_error(io::ErrorKind::Other, "sync error"));
        }
        let file = state.files.get_mut(&self.name).expect("the file exists");
        // Copy only what changed: a journal synced per op would otherwise cost its
        // whole length per sync.
        file.durable.resize(file.live.len(), 0);
        for (offset, data) in file.pending.drain(..) {
            let start = (offset as usize).min(file.live.len());
            let end = (offset as usize + data.len()).min(file.live.len());
            file.durable[start..end].copy_from_slice(&file.live[start..end]);
        }
        Ok(())
    }

    fn length(&mut self) -> io::Result<u64> {
        self.with(|file| file.live.len() as u64)
    }

    fn set_len(&mut self, length: u64) -> io::Result<()> {
        // A length change is treated as synced at once: journals only cut torn tails,
        // and they sync right after.
        self.with(|file| {
            file.live.resize(length as usize, 0);
            file.durable.resize(length as usize, 0);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_writes_are_lost_in_a_crash_and_synced_ones_survive() {
        let disk = SimDisk::new();
        let mut file = disk.file("a");
        file.write_at(0, b"durable").unwrap();
        file.sync().unwrap();
        file.write_at(7, b" and lost").unwrap();
        disk.crash(CrashMode::Lose);
        let mut buffer = [0; 16];
        file.read_at(0, &mut buffer).unwrap();
        assert_eq!(&buffer[..7], b"durable");
        assert_eq!(file.length().unwrap(), 7);
    }

    #[test]
    fn a_crash_at_a_sync_fails_it_and_can_tear_the_last_write() {
        let disk = SimDisk::new();
        let mut file = disk.file("a");
        disk.crash_at_sync(2);
        file.write_at(0, b"first").unwrap();
        file.sync().unwrap();
        file.write_at(5, b"secondXX").unwrap();
        assert!(file.sync().is_err());
        assert!(
            file.write_at(0, b"x").is_err(),
            "a dead process does nothing more"
        );
        disk.crash(CrashMode::TearLast);
        let mut buffer = [0; 13];
        file.read_at(0, &mut buffer).unwrap();
        assert_eq!(&buffer[..9], b"firstseco");
        assert_eq!(disk.syncs(), 2);
    }
}

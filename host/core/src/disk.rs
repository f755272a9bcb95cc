//! Files as the durable parts of a data directory use them: positioned reads and writes,
//! and a sync that makes completed writes durable. The native host's `OsFile` is a real
//! file, the browser's an OPFS handle; [`SimDisk`] keeps each file's durable image apart from its live one and can crash at
//! any sync, dropping (or tearing) whatever was not synced, for crash tests.

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
    /// Each lands whole, lands halfway or is lost, as a PRNG with this seed decides:
    /// a crash at a random point between syncs, on a disk that reorders writes.
    Random(u64),
}

#[derive(Debug, Default)]
struct SimFileState {
    durable: Vec<u8>,
    live: Vec<u8>,
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
    crashed: bool,
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
                    (Some(prng), _) => match prng.below(3) {
                        0 => 0,
                        1 => data.len() / 2,
                        _ => data.len(),
                    },
                    (None, CrashMode::TearLast) if index == last => data.len() / 2,
                    _ => 0,
                };
                let start = offset as usize;
                if landed > 0 {
                    if file.live.len() < start + landed {
                        file.live.resize(start + landed, 0);
                    }
                    file.live[start..start + landed].copy_from_slice(&data[..landed]);
                }
            }
            file.durable = file.live.clone();
        }
        state.crashed = false;
        state.crash_at_sync = None;
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

fn crashed() -> io::Error {
    io::Error::other("simulated crash")
}

impl SimFile {
    fn with<R>(&self, action: impl FnOnce(&mut SimFileState) -> R) -> io::Result<R> {
        let mut state = self.disk.state.borrow_mut();
        if state.crashed {
            return Err(crashed());
        }
        Ok(action(
            state.files.get_mut(&self.name).expect("the file exists"),
        ))
    }
}

impl File for SimFile {
    fn read_at(&mut self, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        self.with(|file| {
            let start = (offset as usize).min(file.live.len());
            let end = (offset as usize + buffer.len()).min(file.live.len());
            buffer[..end - start].copy_from_slice(&file.live[start..end]);
            buffer[end - start..].fill(0);
        })
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.with(|file| {
            let end = offset as usize + data.len();
            if file.live.len() < end {
                file.live.resize(end, 0);
            }
            file.live[offset as usize..end].copy_from_slice(data);
            file.pending.push((offset, data.to_vec()));
        })
    }

    fn sync(&mut self) -> io::Result<()> {
        let mut state = self.disk.state.borrow_mut();
        if state.crashed {
            return Err(crashed());
        }
        state.syncs += 1;
        if state.crash_at_sync == Some(state.syncs) {
            state.crashed = true;
            return Err(crashed());
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

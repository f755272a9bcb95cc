//! The data directory on the operating system's files: [`OsFile`] (`pread`, `pwrite`,
//! `fdatasync`) and opening a directory's three files.

use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use carapace_core::disk::File;
use carapace_core::durable::{DataDir, GRID_FILE, JOURNAL_FILE, SUPERBLOCK_FILE};
use carapace_core::error::{Error, Result};

/// A real file: `pread`/`pwrite` and `fdatasync`.
#[derive(Debug)]
pub struct OsFile {
    file: fs::File,
}

impl OsFile {
    /// Open `path` for reading and writing, creating it if missing.
    pub fn open(path: &Path) -> io::Result<OsFile> {
        Self::open_with(path, true)
    }

    /// Open the existing file at `path` for reading and writing.
    pub fn open_existing(path: &Path) -> io::Result<OsFile> {
        Self::open_with(path, false)
    }

    fn open_with(path: &Path, create: bool) -> io::Result<OsFile> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)?;
        Self::checked(file)
    }

    /// Open an existing file at `path` for reading only: writes fail.
    pub fn open_read_only(path: &Path) -> io::Result<OsFile> {
        Self::checked(fs::File::open(path)?)
    }

    /// Refuse what is not a regular file (a directory, a FIFO, a device): positioned
    /// reads and writes and `fdatasync` mean nothing there.
    fn checked(file: fs::File) -> io::Result<OsFile> {
        if !file.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(OsFile { file })
    }

    /// Take the advisory lock on the file: exclusive for the one replica that may write
    /// a data directory, shared for readers. Held until the file is closed.
    fn lock(&self, exclusive: bool) -> std::result::Result<(), fs::TryLockError> {
        if exclusive {
            self.file.try_lock()
        } else {
            self.file.try_lock_shared()
        }
    }
}

impl File for OsFile {
    fn read_at(&mut self, offset: u64, buffer: &mut [u8]) -> io::Result<()> {
        let mut done = 0;
        while done < buffer.len() {
            match self
                .file
                .read_at(&mut buffer[done..], offset + done as u64)?
            {
                0 => {
                    buffer[done..].fill(0);
                    break;
                }
                read => done += read,
            }
        }
        Ok(())
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn length(&mut self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&mut self, length: u64) -> io::Result<()> {
        self.file.set_len(length)
    }
}

/// Open the data directory at `path`, creating it and its files if missing, and take
/// its lock: one replica owns a directory. A second (in this process or another) is
/// refused with [`Error::InUse`]. An existing directory's journal and grid are never
/// created anew: if one is missing, that is an error naming it.
pub fn open_data_dir(path: &Path) -> Result<DataDir> {
    let created = !path.exists();
    let existing = data_dir_exists(path);
    let display = |path: &Path| path.display().to_string();
    fs::create_dir_all(path).map_err(|error| Error::io(display(path), "creating", error))?;
    let superblock_path = path.join(SUPERBLOCK_FILE);
    let superblock = OsFile::open(&superblock_path)
        .map_err(|error| Error::io(display(&superblock_path), "opening", error))?;
    match superblock.lock(true) {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            return Err(Error::InUse(format!(
                "the data directory `{}` is in use by another replica",
                path.display()
            )));
        }
        Err(fs::TryLockError::Error(error)) => {
            return Err(Error::io(display(&superblock_path), "locking", error));
        }
    }
    let file = |name: &str| -> Result<Box<dyn File>> {
        let path = path.join(name);
        let file = if existing {
            OsFile::open_existing(&path)
        } else {
            OsFile::open(&path)
        };
        let file = file.map_err(|error| Error::io(display(&path), "opening", error))?;
        Ok(Box::new(file))
    };
    let dir = DataDir {
        new_directory_id: new_directory_id(path),
        superblock: Box::new(superblock),
        journal: file(JOURNAL_FILE)?,
        grid: file(GRID_FILE)?,
    };
    // The files' names must be as durable as their contents: a synced journal in a
    // file whose directory entry was lost would lose acknowledged ops.
    let sync = |directory: &Path| {
        fs::File::open(directory)
            .and_then(|directory| directory.sync_all())
            .map_err(|error| Error::io(display(directory), "syncing the directory", error))
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

/// Open the files of the data directory at `path` for reading only. It takes a shared
/// lock when it can; while a replica holds the directory it reads anyway, and every
/// structure it reads is checksummed (a journal tail being written reads as torn).
pub fn open_data_dir_read_only(path: &Path) -> Result<DataDir> {
    let file = |name: &str| -> Result<OsFile> {
        let path = path.join(name);
        OsFile::open_read_only(&path)
            .map_err(|error| Error::io(path.display().to_string(), "opening", error))
    };
    let superblock = file(SUPERBLOCK_FILE)?;
    let _ = superblock.lock(false);
    Ok(DataDir {
        // Read only: never creates a directory.
        new_directory_id: 0,
        superblock: Box::new(superblock),
        journal: Box::new(file(JOURNAL_FILE)?),
        grid: Box::new(file(GRID_FILE)?),
    })
}

/// An id for a new data directory: the checksum of its path, this process and the wall
/// clock, so that two directories (or one deleted and made again) differ. It only
/// names the directory; no state depends on it.
fn new_directory_id(path: &Path) -> u128 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    let seed = format!("{}\0{}\0{nanos}", path.display(), std::process::id());
    carapace_core::checksum::checksum(seed.as_bytes())
}

/// Whether `path` holds a data directory already (a non-empty superblock file).
pub fn data_dir_exists(path: &Path) -> bool {
    fs::metadata(path.join(SUPERBLOCK_FILE)).is_ok_and(|metadata| metadata.len() > 0)
}

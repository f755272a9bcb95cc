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
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Ok(OsFile { file })
    }
}

impl OsFile {
    /// Open an existing file at `path` for reading only: writes fail.
    pub fn open_read_only(path: &Path) -> io::Result<OsFile> {
        Ok(OsFile {
            file: fs::File::open(path)?,
        })
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

/// Open the data directory at `path`, creating it and its files if missing.
pub fn open_data_dir(path: &Path) -> Result<DataDir> {
    let created = !path.exists();
    let display = |path: &Path| path.display().to_string();
    fs::create_dir_all(path).map_err(|error| Error::io(display(path), "creating", error))?;
    let file = |name: &str| -> Result<Box<dyn File>> {
        let path = path.join(name);
        let file =
            OsFile::open(&path).map_err(|error| Error::io(display(&path), "opening", error))?;
        Ok(Box::new(file))
    };
    let dir = DataDir {
        superblock: file(SUPERBLOCK_FILE)?,
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

/// Open the files of the data directory at `path` for reading only.
pub fn open_data_dir_read_only(path: &Path) -> Result<DataDir> {
    let file = |name: &str| -> Result<Box<dyn File>> {
        let path = path.join(name);
        let file = OsFile::open_read_only(&path)
            .map_err(|error| Error::io(path.display().to_string(), "opening", error))?;
        Ok(Box::new(file))
    };
    Ok(DataDir {
        superblock: file(SUPERBLOCK_FILE)?,
        journal: file(JOURNAL_FILE)?,
        grid: file(GRID_FILE)?,
    })
}

/// Whether `path` holds a data directory already (a non-empty superblock file).
pub fn data_dir_exists(path: &Path) -> bool {
    fs::metadata(path.join(SUPERBLOCK_FILE)).is_ok_and(|metadata| metadata.len() > 0)
}

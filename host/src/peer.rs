//! The peer `carapace bench --matrix` measures carapace against: the echo machine's
//! work done with fjall, an LSM key-value store written in Rust, in the same process.
//!
//! Per op, as echo does: look the op's id up (it must be absent), then insert the
//! Thing `{timestamp, value, id}` by timestamp, the unique index `id -> timestamp` and
//! the composite index `(value, timestamp)`, each into its own keyspace (fjall's
//! column families), and reply with the request's body. Keys are big-endian so that
//! fjall orders them as echo's trees do. Nothing is fsynced: fjall flushes to the
//! operating system's buffers, like a memory-backed run.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, ensure};

use crate::checksum::checksum;
use crate::replica::{Committer, Request};

/// Echo's work over fjall, in a temporary directory removed when it is dropped.
pub struct FjallEcho {
    directory: PathBuf,
    _database: fjall::Database,
    objects: fjall::Keyspace,
    ids: fjall::Keyspace,
    values: fjall::Keyspace,
    /// The last op committed and its timestamp.
    last: (u64, u64),
}

impl std::fmt::Debug for FjallEcho {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallEcho")
            .field("directory", &self.directory)
            .finish_non_exhaustive()
    }
}

impl FjallEcho {
    /// A new, empty database in `directory`, which must not exist.
    pub fn create(directory: &Path) -> Result<FjallEcho> {
        ensure!(
            !directory.exists(),
            "`{}` exists: fjall's bench database needs a new directory",
            directory.display()
        );
        let database = fjall::Database::builder(directory)
            .temporary(true)
            .open()
            .with_context(|| format!("opening fjall in `{}`", directory.display()))?;
        let keyspace = |name: &str| {
            database
                .keyspace(name, fjall::KeyspaceCreateOptions::default)
                .with_context(|| format!("opening fjall keyspace `{name}`"))
        };
        Ok(FjallEcho {
            directory: directory.to_path_buf(),
            objects: keyspace("objects")?,
            ids: keyspace("ids")?,
            values: keyspace("values")?,
            _database: database,
            last: (0, 0),
        })
    }

    /// Commit `request` as echo does; return the reply (the body).
    pub fn commit(&mut self, request: &Request) -> Result<Vec<u8>> {
        let id = u128::from(request.op).to_be_bytes();
        ensure!(
            self.ids.get(id)?.is_none(),
            "thing {} exists before its op commits",
            request.op
        );
        let value = checksum(&request.body) as u64;
        let timestamp = request.timestamp.to_be_bytes();
        let mut thing = [0; 32];
        thing[0..8].copy_from_slice(&timestamp);
        thing[8..16].copy_from_slice(&value.to_be_bytes());
        thing[16..32].copy_from_slice(&id);
        self.objects.insert(timestamp, thing)?;
        self.ids.insert(id, timestamp)?;
        let mut composite = [0; 16];
        composite[0..8].copy_from_slice(&value.to_be_bytes());
        composite[8..16].copy_from_slice(&timestamp);
        self.values.insert(composite, [])?;
        self.last = (request.op, request.timestamp);
        Ok(request.body.clone())
    }
}

impl Committer for FjallEcho {
    fn last_op(&self) -> u64 {
        self.last.0
    }

    fn last_timestamp(&self) -> u64 {
        self.last.1
    }

    fn commit_request(&mut self, request: &Request) -> crate::Result<Vec<u8>> {
        self.commit(request)
            .map_err(|error| crate::Error::Refused(format!("fjall: {error:#}")))
    }
}

impl Drop for FjallEcho {
    fn drop(&mut self) {
        // `temporary` removes the files; the directory may be left behind.
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

//! Precompiled components cached on disk, so that a start deserializes native code in a
//! millisecond instead of compiling the component for hundreds.
//!
//! An entry is named by the checksum of the component's bytes and of the engine's
//! compatibility hash (wasmtime's `precompile_compatibility_hash`: its version and every
//! setting that changes code), so another component, another configuration (fuel,
//! deadlines, stack) or another wasmtime never finds it. An embedded component's
//! checksum is computed when the binary is built, so a hit never reads its bytes. Its
//! contents: wasmtime's serialized component, then a trailer of a magic and the checksum
//! of what precedes it.
//! The trailer comes last so that wasmtime maps the file itself (`deserialize_file`)
//! rather than copying it into memory: a start reads the entry once, in small pieces,
//! to check it, and the code pages come from the page cache. A damaged entry
//! (checksum), a stale one (wasmtime refuses it) or one that others may write is
//! rebuilt, never loaded. The directory keeps the [`ENTRIES_KEPT`] most recently used
//! entries (a hit refreshes an entry's modification time; storing one removes the
//! oldest beyond the bound).
//!
//! Loading precompiled code runs it as native code in the host: the cache directory is
//! trusted like the `carapace` binary (see `docs/security.md`). It is created readable
//! by its owner only, and an entry that its group or others may write is refused.

use std::hash::{Hash as _, Hasher as _};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use carapace_core::checksum::{Checksummer, checksum};
use carapace_core::error::{Error, Result};

use crate::wasm::{Component, Runtime};

const MAGIC: &[u8; 16] = b"carapace cwasm 2";
/// The trailer: the magic, then the checksum of the serialized component before it.
const TRAILER_SIZE: u64 = 32;

/// What loading through the cache did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheUse {
    /// The entry was there and intact: deserialized, nothing compiled.
    Hit,
    /// There was no entry: compiled and stored.
    Stored,
    /// The entry could not be used (named why): compiled and stored again.
    Rebuilt(String),
}

impl std::fmt::Display for CacheUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheUse::Hit => f.write_str("precompiled, from the cache"),
            CacheUse::Stored => f.write_str("compiled, and stored in the cache"),
            CacheUse::Rebuilt(why) => write!(f, "compiled again: the cached entry {why}"),
        }
    }
}

/// The default cache directory: `$XDG_CACHE_HOME/carapace`, or `~/.cache/carapace`.
pub fn default_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
        .map(|dir| dir.join("carapace"))
}

/// Where the entry of `bytes` for `runtime`'s engine lives in `dir`.
pub fn entry_path(runtime: &Runtime, bytes: &[u8], dir: &Path) -> PathBuf {
    entry_path_of(runtime, checksum(bytes), dir)
}

/// Where the entry of the component whose bytes have the checksum `bytes_checksum`
/// lives in `dir`.
fn entry_path_of(runtime: &Runtime, bytes_checksum: u128, dir: &Path) -> PathBuf {
    let mut hasher = std::hash::DefaultHasher::new();
    runtime
        .engine()
        .precompile_compatibility_hash()
        .hash(&mut hasher);
    let mut key = bytes_checksum.to_le_bytes().to_vec();
    key.extend_from_slice(&hasher.finish().to_le_bytes());
    dir.join(format!("{:032x}.cwasm", checksum(&key)))
}

/// Entries a cache directory keeps: storing one more removes the least recently used
/// beyond this many (each is the size of a compiled component, ~1 MB for echo), so that
/// every rebuilt or upgraded component does not leave its old entry behind for ever.
pub const ENTRIES_KEPT: usize = 32;

/// Load `bytes` as a component through the cache in `dir`.
pub fn load(runtime: &Runtime, bytes: &[u8], dir: &Path) -> Result<(Component, CacheUse)> {
    load_checksummed(runtime, bytes, checksum(bytes), dir)
}

/// [`load`], given the checksum of `bytes` (an embedded component's, computed when the
/// binary was built): on a hit, `bytes` are never read. A wrong checksum would load
/// another component's code, so only the crate passes one.
pub(crate) fn load_checksummed(
    runtime: &Runtime,
    bytes: &[u8],
    bytes_checksum: u128,
    dir: &Path,
) -> Result<(Component, CacheUse)> {
    let path = entry_path_of(runtime, bytes_checksum, dir);
    let why = match read_entry(runtime, &path) {
        Ok(Some(component)) => {
            mark_used(&path);
            return Ok((runtime.check_imports(component)?, CacheUse::Hit));
        }
        Ok(None) => None,
        Err(why) => Some(why),
    };
    let component = store(runtime, bytes, &path)?;
    remove_least_recently_used(dir, &path);
    Ok((component, why.map_or(CacheUse::Stored, CacheUse::Rebuilt)))
}

/// Record that the entry at `path` was used: its modification time is its last use.
/// Best effort: an entry that cannot be touched is only removed sooner.
fn mark_used(path: &Path) {
    if let Ok(file) = std::fs::File::open(path) {
        let _ = file.set_modified(std::time::SystemTime::now());
    }
}

/// Remove the entries of `dir` beyond the [`ENTRIES_KEPT`] most recently used, never
/// `kept` (the one just stored). Best effort: what cannot be listed or removed stays,
/// and a removed entry is only compiled again at its next use.
fn remove_least_recently_used(dir: &Path, kept: &Path) {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<(std::time::SystemTime, PathBuf)> = listing
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let is_entry = path
                .extension()
                .is_some_and(|extension| extension == "cwasm");
            let used = std::fs::metadata(&path).ok()?.modified().ok()?;
            (is_entry && path != kept).then_some((used, path))
        })
        .collect();
    let others_kept = ENTRIES_KEPT - 1;
    if entries.len() <= others_kept {
        return;
    }
    entries.sort_unstable_by(|a, b| b.cmp(a));
    for (_, path) in &entries[others_kept..] {
        let _ = std::fs::remove_file(path);
    }
}

/// The entry at `path`: `None` if there is none, an error saying why it cannot be used.
fn read_entry(runtime: &Runtime, path: &Path) -> std::result::Result<Option<Component>, String> {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(format!("cannot be read: {error}")),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if metadata.permissions().mode() & 0o022 != 0 {
            return Err("may be written by others than its owner".into());
        }
    }
    let length = metadata.len();
    if length < TRAILER_SIZE {
        return Err("is not a carapace cache entry".into());
    }
    let checked = payload_checksum(path, length - TRAILER_SIZE)
        .map_err(|error| format!("cannot be read: {error}"))?;
    let (magic, stored) = checked.trailer.split_at(16);
    if magic != MAGIC {
        return Err("is not a carapace cache entry".into());
    }
    if checked.checksum.to_le_bytes() != stored {
        return Err("is damaged (checksum mismatch)".into());
    }
    // SAFETY: the payload is what `Engine::precompile_component` of an engine with the
    // same compatibility hash produced (the entry's name says so) and wrote here, intact
    // (its checksum matches); the directory is trusted like the binary, entries others
    // may write are refused above, and writers replace an entry only by a rename (a
    // concurrent writer of the same name writes the same bytes). wasmtime checks its
    // version and settings, and ignores the trailer past its image.
    unsafe { Component::deserialize_file(runtime.engine(), path) }
        .map(Some)
        .map_err(|error| format!("was refused by wasmtime: {error:#}"))
}

/// The checksum of an entry's first `payload_size` bytes, read in pieces, and the
/// trailer after them.
struct Checked {
    checksum: u128,
    trailer: [u8; TRAILER_SIZE as usize],
}

fn payload_checksum(path: &Path, payload_size: u64) -> std::io::Result<Checked> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut checksummer = Checksummer::default();
    let mut piece = vec![0; 64 << 10];
    let mut left = payload_size;
    while left > 0 {
        let size = piece.len().min(left as usize);
        file.read_exact(&mut piece[..size])?;
        checksummer.update(&piece[..size]);
        left -= size as u64;
    }
    let mut trailer = [0; TRAILER_SIZE as usize];
    file.read_exact(&mut trailer)?;
    Ok(Checked {
        checksum: checksummer.finish(),
        trailer,
    })
}

/// Compile `bytes`, write the entry (through a temporary file and a rename, so that a
/// crash leaves no half entry), and load it.
fn store(runtime: &Runtime, bytes: &[u8], path: &Path) -> Result<Component> {
    let payload = runtime
        .engine()
        .precompile_component(bytes)
        .map_err(|error| Error::Refused(format!("compiling the component: {error:#}")))?;
    let dir = path.parent().expect("an entry is in a directory");
    create_private_dir(dir)?;
    // Unique per writer (process and call), so that two writers never share one.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let write_number = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temporary = path.with_extension(format!("tmp{}-{write_number}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temporary)?;
        file.write_all(&payload)?;
        file.write_all(MAGIC)?;
        file.write_all(&checksum(&payload).to_le_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    };
    write().map_err(|error| Error::io(path.display().to_string(), "writing", error))?;
    // SAFETY: these bytes were just produced by this engine's `precompile_component`.
    let component = unsafe { Component::deserialize(runtime.engine(), &payload) }
        .map_err(|error| Error::Refused(format!("loading the compiled component: {error:#}")))?;
    runtime.check_imports(component)
}

fn create_private_dir(dir: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|error| Error::io(dir.display().to_string(), "creating", error))
}

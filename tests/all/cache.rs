//! Precompiled components: an entry is stored on a miss and loaded on a hit, and its
//! instances compute exactly what a freshly compiled component's do; a damaged, foreign,
//! stale or loosely permitted entry is rebuilt, never loaded.

use std::path::{Path, PathBuf};

use carapace::cache::{self, CacheUse};
use carapace::imports::IoOrder;
use carapace::machines::ECHO_COMPONENT;
use carapace::replica::Replica;
use carapace::storage::MemoryStorage;
use carapace::wasm::{Component, Limits, Runtime};
use carapace::workload::{self, EchoWorkload};

use crate::support::*;

fn temporary_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("carapace-cache-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn load(runtime: &Runtime, dir: &Path) -> (Component, CacheUse) {
    cache::load(runtime, ECHO_COMPONENT, dir).unwrap()
}

/// The checkpoint id after 64 echo ops with instances of `component`.
fn checkpoint_after_64_ops(runtime: &Runtime, component: &Component) -> u128 {
    let instance = runtime
        .instantiate(
            component,
            context(&MemoryStorage::new(), IoOrder::Seeded(3)),
        )
        .unwrap();
    let mut replica = Replica::open(Box::new(instance), config(), None).unwrap();
    workload::run(
        &mut replica,
        &mut EchoWorkload::new(3, BATCH_SIZE_LIMIT),
        64,
    )
    .unwrap();
    replica.checkpoint().unwrap().id()
}

#[test]
fn a_miss_stores_an_entry_and_a_hit_runs_exactly_like_a_fresh_compile() {
    let dir = temporary_dir("hit");
    let runtime = Runtime::new(Limits::default()).unwrap();
    let (stored, first) = load(&runtime, &dir);
    assert_eq!(first, CacheUse::Stored);
    let (hit, second) = load(&runtime, &dir);
    assert_eq!(second, CacheUse::Hit);
    let fresh = runtime.load(ECHO_COMPONENT).unwrap();
    let expected = checkpoint_after_64_ops(&runtime, &fresh);
    assert_eq!(checkpoint_after_64_ops(&runtime, &stored), expected);
    assert_eq!(checkpoint_after_64_ops(&runtime, &hit), expected);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn another_component_or_engine_configuration_never_finds_the_entry() {
    let dir = temporary_dir("keys");
    let runtime = Runtime::new(Limits::default()).unwrap();
    let other_limits = Runtime::new(Limits {
        deadline_ms: 0,
        ..Limits::default()
    })
    .unwrap();
    let entry = cache::entry_path(&runtime, ECHO_COMPONENT, &dir);
    assert_ne!(
        entry,
        cache::entry_path(&other_limits, ECHO_COMPONENT, &dir)
    );
    assert_ne!(
        entry,
        cache::entry_path(&runtime, carapace::machines::KV_COMPONENT, &dir)
    );
}

#[test]
fn an_embedded_machine_loads_from_the_entry_its_bytes_name() {
    // The build script computes each embedded component's checksum; a stale one would
    // name another component's entry.
    for embedded in carapace::machines::EMBEDDED {
        assert_eq!(
            embedded.checksum,
            carapace::checksum::checksum(embedded.bytes),
            "{}",
            embedded.name
        );
    }
    let dir = temporary_dir("embedded");
    let runtime = Runtime::new(Limits::default()).unwrap();
    let entry = cache::entry_path(&runtime, ECHO_COMPONENT, &dir);
    let source = carapace::machines::Source::Embedded("echo".into());
    let factory =
        carapace::machines::Factory::load_cached(&source, Limits::default(), Some(&dir)).unwrap();
    assert_eq!(factory.loaded().cache, Some(CacheUse::Stored));
    assert!(
        entry.is_file(),
        "the entry is where the bytes' checksum names it"
    );
    assert_eq!(load(&runtime, &dir).1, CacheUse::Hit);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_damaged_foreign_stale_or_loosely_permitted_entry_is_rebuilt() {
    let dir = temporary_dir("damaged");
    let runtime = Runtime::new(Limits::default()).unwrap();
    load(&runtime, &dir);
    let entry = cache::entry_path(&runtime, ECHO_COMPONENT, &dir);
    let good = std::fs::read(&entry).unwrap();
    let rebuilt = |damage: &dyn Fn(&Path), expected: &str| {
        damage(&entry);
        let (component, outcome) = load(&runtime, &dir);
        match outcome {
            CacheUse::Rebuilt(why) => assert!(why.contains(expected), "{why}"),
            outcome => panic!("expected a rebuild ({expected}), got {outcome:?}"),
        }
        assert_eq!(
            std::fs::read(&entry).unwrap(),
            good,
            "the entry is whole again"
        );
        assert_eq!(load(&runtime, &dir).1, CacheUse::Hit);
        component
    };

    // A flipped bit in the native code.
    rebuilt(
        &|path| {
            let mut bytes = std::fs::read(path).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x40;
            std::fs::write(path, bytes).unwrap();
        },
        "checksum mismatch",
    );
    // Cut short, or not ours at all.
    rebuilt(
        &|path| std::fs::write(path, &good[..20]).unwrap(),
        "not a carapace cache entry",
    );
    // Intact, but compiled by another engine configuration: wasmtime refuses it.
    let other = Runtime::new(Limits {
        deadline_ms: 0,
        ..Limits::default()
    })
    .unwrap();
    let foreign_dir = temporary_dir("foreign");
    load(&other, &foreign_dir);
    let foreign = std::fs::read(cache::entry_path(&other, ECHO_COMPONENT, &foreign_dir)).unwrap();
    rebuilt(
        &|path| std::fs::write(path, &foreign).unwrap(),
        "refused by wasmtime",
    );
    // Writable by others: whoever can write it could run code in the host.
    #[cfg(unix)]
    rebuilt(
        &|path| {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).unwrap();
        },
        "written by others",
    );
    let component = rebuilt(
        &|path| std::fs::write(path, b"").unwrap(),
        "not a carapace cache entry",
    );
    let fresh = runtime.load(ECHO_COMPONENT).unwrap();
    assert_eq!(
        checkpoint_after_64_ops(&runtime, &component),
        checkpoint_after_64_ops(&runtime, &fresh)
    );
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&foreign_dir).unwrap();
}

#[test]
fn compile_fills_the_cache_that_run_then_loads_from() {
    use carapace::cli::Cli;
    use clap::Parser;
    let dir = temporary_dir("cli");
    let run = |args: &[&str]| {
        let cli =
            Cli::try_parse_from(["carapace"].iter().chain(args)).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        cli.execute_to(&mut out)
            .map_err(|error| format!("{error:#}"))?;
        Ok::<_, String>(String::from_utf8(out).unwrap())
    };
    let cache = dir.to_str().unwrap();
    let compiled = run(&["compile", "--machine", "kv", "--cache-dir", cache]).unwrap();
    assert!(
        compiled.contains("compiled, and stored in the cache"),
        "{compiled}"
    );
    let ran = run(&["run", "--machine", "kv", "--ops", "8", "--cache-dir", cache]).unwrap();
    assert!(ran.contains("precompiled, from the cache"), "{ran}");
    let error = run(&["compile", "--no-cache"]).unwrap_err();
    assert!(error.contains("drop `--no-cache`"), "{error}");
    let error = run(&["run", "--no-cache", "--cache-dir", cache]).unwrap_err();
    assert!(error.contains("cannot be used with"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Set the modification time of the file at `path` to `seconds_ago` seconds ago.
fn touch(path: &Path, seconds_ago: u64) {
    let time = std::time::SystemTime::now() - std::time::Duration::from_secs(seconds_ago);
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(time).unwrap();
}

#[test]
fn the_cache_keeps_the_most_recently_used_entries_and_removes_the_rest() {
    let dir = temporary_dir("bound");
    std::fs::create_dir_all(&dir).unwrap();
    let fake = |index: usize| dir.join(format!("{index:032x}.cwasm"));
    let extra = 8;
    for index in 0..cache::ENTRIES_KEPT + extra {
        std::fs::write(fake(index), b"an old entry").unwrap();
        // Entry 0 was used most recently of the old ones, the others in order.
        touch(&fake(index), 1_000 + index as u64 * 10);
    }
    let not_an_entry = dir.join("notes.txt");
    std::fs::write(&not_an_entry, b"not the cache's").unwrap();
    touch(&not_an_entry, 1_000_000);

    let runtime = Runtime::new(Limits::default()).unwrap();
    assert_eq!(load(&runtime, &dir).1, CacheUse::Stored);
    let entry = cache::entry_path(&runtime, ECHO_COMPONENT, &dir);
    let entries = || {
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| {
                path.extension()
                    .is_some_and(|extension| extension == "cwasm")
            })
            .count()
    };
    assert_eq!(entries(), cache::ENTRIES_KEPT);
    assert!(entry.exists());
    assert!(not_an_entry.exists());
    for index in 0..cache::ENTRIES_KEPT - 1 {
        assert!(
            fake(index).exists(),
            "entry {index} is among the most recent"
        );
    }
    for index in cache::ENTRIES_KEPT - 1..cache::ENTRIES_KEPT + extra {
        assert!(
            !fake(index).exists(),
            "entry {index} is among the least recent"
        );
    }

    // A hit counts as a use: the entry becomes the most recent again.
    touch(&entry, 1_000_000);
    assert_eq!(load(&runtime, &dir).1, CacheUse::Hit);
    let used = std::fs::metadata(&entry).unwrap().modified().unwrap();
    assert!(used.elapsed().unwrap() < std::time::Duration::from_secs(600));
    std::fs::remove_dir_all(&dir).unwrap();
}

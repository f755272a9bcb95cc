//! Acknowledged ops survive crashes: the durable replica over a simulated disk that
//! dies at every sync point (losing what was not synced, tearing its last write, or
//! landing a seeded random choice of those writes whole, torn or not at all), recovered
//! once and twice, then run on to the end, must give the replies and checkpoint ids of a run
//! that never crashed. Damaged files give a clear error or a correct recovery.

use anyhow::Result;
use carapace::disk::{CrashMode, SimDisk};
use carapace::durable::{DataDir, Durable, GRID_FILE, JOURNAL_FILE, Recovery, SUPERBLOCK_FILE};
use carapace::imports::{HostImports, IoOrder};
use carapace::native::NativeInstance;
use carapace::replica::Request;
use carapace::workload::{EchoWorkload, first_requests};
use carapace_echo::{Operation, Thing, thing_value};
use carapace_lsm::table::Value;

use crate::support::*;

const OPS: usize = 40;

fn requests() -> Vec<Request> {
    first_requests(&mut EchoWorkload::new(31, BATCH_SIZE_LIMIT), OPS as u64)
}

fn native(context: HostImports) -> carapace::Result<Box<dyn carapace::Instance>> {
    Ok(Box::new(NativeInstance::<carapace_echo::Echo>::new(
        context,
    )))
}

/// Makes an instance over the host imports it is given.
type Make = Box<dyn Fn(HostImports) -> carapace::Result<Box<dyn carapace::Instance>>>;

/// The kv component through wasmtime: compiled once, instantiated at every open.
fn kv_component() -> Make {
    let runtime = carapace::wasm::Runtime::new(carapace::wasm::Limits::default()).unwrap();
    let component = runtime.load(carapace::machines::KV_COMPONENT).unwrap();
    Box::new(move |imports| Ok(Box::new(runtime.instantiate(&component, imports)?)))
}

/// A machine, its options and the requests a crash test commits.
struct Subject {
    make: Make,
    options: carapace::Options,
    requests: Vec<Request>,
}

fn echo_subject() -> Subject {
    Subject {
        make: Box::new(native),
        options: config(),
        requests: requests(),
    }
}

/// The kv component over its seeded workload: puts, deletes, gets and scans.
fn kv_subject() -> Subject {
    let options = carapace::Options {
        batch_size_limit: 1024,
        reply_size_limit: 1 << 16,
        ..config()
    };
    let requests = first_requests(
        &mut carapace::workload::KvWorkload::new(5, options.batch_size_limit),
        OPS as u64,
    );
    Subject {
        make: kv_component(),
        options,
        requests,
    }
}

fn open(disk: &SimDisk) -> Result<(Durable<'static>, Recovery)> {
    Ok(Durable::open(
        DataDir::simulated(disk),
        Some(config()),
        IoOrder::Seeded(4),
        native,
    )?)
}

fn open_subject<'a>(subject: &'a Subject, disk: &SimDisk) -> Result<(Durable<'a>, Recovery)> {
    Ok(Durable::open(
        DataDir::simulated(disk),
        Some(subject.options.clone()),
        IoOrder::Seeded(4),
        &*subject.make,
    )?)
}

/// Replies and the checkpoint ids of a run that never crashed.
fn uncrashed(requests: &[Request]) -> (Vec<Vec<u8>>, Vec<(u64, u128)>, u64) {
    uncrashed_subject(&Subject {
        requests: requests.to_vec(),
        ..echo_subject()
    })
}

fn uncrashed_subject(subject: &Subject) -> (Vec<Vec<u8>>, Vec<(u64, u128)>, u64) {
    uncrashed_in_groups(subject, 1)
}

/// [`uncrashed_subject`], committing `group_size` requests at a time.
fn uncrashed_in_groups(
    subject: &Subject,
    group_size: usize,
) -> (Vec<Vec<u8>>, Vec<(u64, u128)>, u64) {
    let disk = SimDisk::new();
    let (mut durable, _) = open_subject(subject, &disk).unwrap();
    let mut replies = Vec::new();
    let mut checkpoints = Vec::new();
    for group in subject.requests.chunks(group_size) {
        let committed = durable.commit_group(group);
        assert!(committed.stopped.is_none());
        replies.extend(committed.replies);
        for request in group {
            if let Some(checkpoint) = durable.replica().checkpoint_taken_at(request.op) {
                checkpoints.push((checkpoint.op, checkpoint.id()));
            }
        }
    }
    (replies, checkpoints, disk.syncs())
}

#[test]
fn a_crash_at_every_sync_point_loses_no_acknowledged_op() {
    crash_at_every_sync_point(&echo_subject());
}

#[test]
fn a_crash_at_every_sync_point_loses_no_acknowledged_kv_op() {
    crash_at_every_sync_point(&kv_subject());
}

#[test]
fn a_crash_at_every_sync_point_of_group_commits_loses_no_acknowledged_op() {
    // Groups of 5 and 7 ops: some end at a checkpoint (every 16 ops), most cross none.
    for group_size in [5, 7] {
        crash_at_every_sync_point_in_groups(&echo_subject(), group_size);
    }
}

fn crash_at_every_sync_point(subject: &Subject) {
    crash_at_every_sync_point_in_groups(subject, 1);
}

/// Crash at every sync of a run that commits `group_size` requests at a time: every
/// acknowledged op survives, and at most the group in flight is recovered beyond them.
fn crash_at_every_sync_point_in_groups(subject: &Subject, group_size: usize) {
    let requests = &subject.requests;
    let open = |disk: &SimDisk| open_subject(subject, disk);
    let (replies, checkpoints, syncs) = uncrashed_in_groups(subject, group_size);
    assert_eq!(replies, uncrashed_subject(subject).0);
    assert_eq!(checkpoints.len(), OPS / CHECKPOINT_INTERVAL_OPS as usize);
    for crash_at in 1..=syncs {
        for mode in [
            CrashMode::Lose,
            CrashMode::TearLast,
            CrashMode::LoseFirstSectorOfLast,
            CrashMode::Random(crash_at),
            CrashMode::Random(!crash_at),
        ] {
            let disk = SimDisk::new();
            disk.crash_at_sync(crash_at);
            let mut acknowledged = 0;
            if let Ok((mut durable, _)) = open(&disk) {
                for group in requests.chunks(group_size) {
                    let committed = durable.commit_group(group);
                    for reply in &committed.replies {
                        assert_eq!(*reply, replies[acknowledged]);
                        acknowledged += 1;
                    }
                    if committed.stopped.is_some() {
                        break;
                    }
                }
            }
            disk.crash(mode);
            let context =
                format!("groups of {group_size}, crash at sync {crash_at} of {syncs}, {mode:?}");

            // Recover twice: the same op and checkpoint both times.
            let (first, _) = open(&disk).unwrap_or_else(|error| panic!("{context}: {error:#}"));
            let recovered = (
                first.replica().op(),
                first.replica().checkpoint().map(|c| c.id()),
            );
            drop(first);
            let (mut durable, recovery) = open(&disk).unwrap();
            assert_eq!(
                (
                    durable.replica().op(),
                    durable.replica().checkpoint().map(|c| c.id())
                ),
                recovered
            );
            assert_eq!(
                recovery.torn_bytes, 0,
                "{context}: the first recovery cut the tail"
            );

            // Every acknowledged op is there; at most the group in flight is too.
            let op = durable.replica().op() as usize;
            assert!(
                op >= acknowledged && op <= acknowledged + group_size,
                "{context}: recovered op {op}, acknowledged {acknowledged}"
            );

            // Run on: the same replies and checkpoint ids as the run that never crashed.
            for (index, request) in requests.iter().enumerate().skip(op) {
                assert_eq!(
                    durable.commit(request).unwrap(),
                    replies[index],
                    "{context}: op {}",
                    request.op
                );
                if let Some(checkpoint) = durable.replica().checkpoint_taken_at(request.op) {
                    assert!(
                        checkpoints.contains(&(checkpoint.op, checkpoint.id())),
                        "{context}: checkpoint {}",
                        checkpoint.op
                    );
                }
            }
        }
    }
}

/// A data directory with all `OPS` ops, checkpointed at 16 and 32.
fn full_disk(requests: &[Request]) -> SimDisk {
    let disk = SimDisk::new();
    let (mut durable, _) = open(&disk).unwrap();
    for request in requests {
        durable.commit(request).unwrap();
    }
    disk
}

#[test]
fn recovery_replays_the_journal_after_the_checkpoint() {
    let requests = requests();
    let disk = full_disk(&requests);
    let (durable, recovery) = open(&disk).unwrap();
    assert_eq!(recovery.checkpoint_op, 32);
    assert_eq!(recovery.replayed_ops, 8);
    assert_eq!(durable.replica().op(), OPS as u64);
    let error = Durable::open(
        DataDir::simulated(&disk),
        Some(config_with(&[("bar-ops", "8")])),
        IoOrder::Fifo,
        native,
    )
    .unwrap_err();
    assert!(
        matches!(&error, carapace::Error::Incompatible(detail) if detail.contains("created with other options")),
        "{error}"
    );
}

/// The Things of ops `1..=count`, as the echo machine stores them.
fn expected_things(requests: &[Request], count: usize) -> Vec<u8> {
    requests[..count]
        .iter()
        .flat_map(|request| {
            let thing = Thing {
                timestamp: request.timestamp,
                value: thing_value(
                    request.client,
                    request.op,
                    request.timestamp,
                    request.operation,
                    &request.body,
                ),
                id: u128::from(request.op),
            };
            let mut bytes = [0; Thing::SIZE];
            thing.encode(&mut bytes);
            bytes
        })
        .collect()
}

#[test]
fn damaged_files_give_a_clear_error_or_a_correct_recovery() {
    let requests = requests();
    let reference = full_disk(&requests);
    let mut recovered_count = 0;
    for name in [SUPERBLOCK_FILE, JOURNAL_FILE, GRID_FILE] {
        let length = reference.durable_len(name);
        for offset in (0..length).step_by(length / 23 + 1) {
            let disk = full_disk(&requests);
            disk.corrupt(name, offset, 0x10);
            let context = format!("{name} byte {offset}");
            match open(&disk) {
                Ok((mut durable, _)) => {
                    // Damage to the last journal entry reads as a torn tail; anything
                    // else recovers every op. What it recovered must be right.
                    let op = durable.replica().op() as usize;
                    assert!(op + 1 >= OPS, "{context}: recovered op {op}");
                    let lookup = Request {
                        client: 1,
                        op: op as u64 + 1,
                        timestamp: durable.replica().timestamp() + 1,
                        operation: Operation::Lookup as u8,
                        body: (1..=32u128).flat_map(|id| id.to_le_bytes()).collect(),
                    };
                    match durable.commit(&lookup) {
                        Ok(reply) => assert_eq!(reply, expected_things(&requests, 32), "{context}"),
                        Err(error) => {
                            let error = format!("{error:#}");
                            assert!(error.contains("corrupt-block"), "{context}: {error}");
                        }
                    }
                    recovered_count += 1;
                }
                Err(error) => {
                    let error = format!("{error:#}");
                    let clear = ["corrupt", "superblock", "journal", "diverged"]
                        .iter()
                        .any(|word| error.contains(word));
                    assert!(clear, "{context}: {error}");
                }
            }
        }
    }
    assert!(recovered_count > 0);

    // Truncated files: the same, a clear error or a correct recovery.
    for name in [SUPERBLOCK_FILE, JOURNAL_FILE, GRID_FILE] {
        let length = reference.durable_len(name);
        for keep in [0, length / 3, length - 1] {
            let disk = full_disk(&requests);
            disk.truncate(name, keep);
            if let Err(error) = open(&disk) {
                let error = format!("{error:#}");
                let clear = ["corrupt", "superblock", "journal", "diverged", "options"]
                    .iter()
                    .any(|word| error.contains(word));
                assert!(clear, "{name} cut to {keep}: {error}");
            }
        }
    }
}

#[test]
fn a_damaged_or_stale_superblock_copy_is_repaired_on_open() {
    let requests = requests();
    let disk = full_disk(&requests);
    disk.corrupt(SUPERBLOCK_FILE, 300, 0x01);
    let (durable, _) = open(&disk).unwrap();
    let sequence = durable.superblock().state().sequence;
    drop(durable);
    let mut file = disk.file(SUPERBLOCK_FILE);
    let (newest, valid) = carapace::superblock::Superblock::read_copies(&mut file).unwrap();
    assert_eq!(valid, [true; 4]);
    assert_eq!(newest.unwrap().sequence, sequence);
}

#[test]
fn a_damaged_checkpoint_entry_is_an_error_and_the_journal_is_left_as_it_was() {
    let requests = requests();
    let disk = SimDisk::new();
    let (mut durable, _) = open(&disk).unwrap();
    for request in &requests[..32] {
        durable.commit(request).unwrap();
    }
    drop(durable);
    // The last entry is the checkpoint op's: damage it.
    let length = disk.durable_len(JOURNAL_FILE);
    disk.corrupt(JOURNAL_FILE, length - 3, 0x40);
    let error = open(&disk).unwrap_err();
    match error.downcast_ref::<carapace::Error>() {
        Some(carapace::Error::Corrupt { file, detail }) => {
            assert_eq!(file, JOURNAL_FILE);
            assert!(
                detail.contains("before the checkpoint at op 32"),
                "{detail}"
            );
        }
        _ => panic!("expected a corrupt journal, got {error:#}"),
    }
    assert_eq!(disk.durable_len(JOURNAL_FILE), length, "nothing was cut");
}

/// A file whose sync number `fail_at` (counted from 1) fails once with an I/O error;
/// every other call goes through to the simulated disk.
struct FlakyFile {
    file: carapace::disk::SimFile,
    syncs: u64,
    fail_at: u64,
}

impl carapace::disk::File for FlakyFile {
    fn read_at(&mut self, offset: u64, buffer: &mut [u8]) -> std::io::Result<()> {
        self.file.read_at(offset, buffer)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.file.write_at(offset, data)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.syncs += 1;
        if self.syncs == self.fail_at {
            return Err(std::io::Error::other("injected EIO"));
        }
        self.file.sync()
    }
    fn length(&mut self) -> std::io::Result<u64> {
        self.file.length()
    }
    fn set_len(&mut self, length: u64) -> std::io::Result<()> {
        self.file.set_len(length)
    }
}

#[test]
fn after_a_failed_publication_the_replica_commits_nothing_until_reopened() {
    let requests = requests();
    let (replies, _, _) = uncrashed(&requests);
    let disk = SimDisk::new();
    // Creating the superblock syncs its four copies; the first publication (at op 16)
    // syncs the next four: the first of those fails.
    let dir = DataDir {
        new_directory_id: 7,
        superblock: Box::new(FlakyFile {
            file: disk.file(SUPERBLOCK_FILE),
            syncs: 0,
            fail_at: 5,
        }),
        ..DataDir::simulated(&disk)
    };
    let (mut durable, _) = Durable::open(dir, Some(config()), IoOrder::Seeded(4), native).unwrap();
    for request in &requests[..15] {
        durable.commit(request).unwrap();
    }
    let error = durable.commit(&requests[15]).unwrap_err();
    assert!(matches!(error, carapace::Error::Io { .. }), "{error}");
    // The machine may already reuse blocks the unpublished checkpoint freed: going on
    // would write over the only checkpoint recovery can open.
    let error = durable.commit(&requests[16]).unwrap_err();
    assert!(matches!(error, carapace::Error::Stopped(_)), "{error}");
    drop(durable);
    // Reopened, it recovers op 16 from the journal and runs on as if nothing happened.
    let (mut durable, _) = open(&disk).unwrap();
    assert_eq!(durable.replica().op(), 16);
    for (index, request) in requests.iter().enumerate().skip(16) {
        assert_eq!(durable.commit(request).unwrap(), replies[index]);
    }
}

#[test]
fn one_data_directory_has_one_owner_and_its_files_are_never_recreated() {
    let dir = std::env::temp_dir().join(format!("carapace-one-owner-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let first = carapace::os::open_data_dir(&dir).unwrap();
    // A second replica in the same process is refused at once.
    let error = carapace::os::open_data_dir(&dir).unwrap_err();
    assert!(matches!(error, carapace::Error::InUse(_)), "{error}");
    let (mut durable, _) = Durable::open(first, Some(config()), IoOrder::Fifo, native).unwrap();
    for request in &requests()[..20] {
        durable.commit(request).unwrap();
    }
    drop(durable);
    // Released when the owner closes it.
    drop(carapace::os::open_data_dir(&dir).unwrap());
    // A journal gone from an existing directory is an error naming it, never a new,
    // empty journal that would forget acknowledged ops.
    std::fs::remove_file(dir.join(JOURNAL_FILE)).unwrap();
    match carapace::os::open_data_dir(&dir).unwrap_err() {
        carapace::Error::Io { file, .. } => assert!(file.ends_with(JOURNAL_FILE), "{file}"),
        error => panic!("expected the missing journal named, got {error}"),
    }
    assert!(!dir.join(JOURNAL_FILE).exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_request_that_traps_the_guest_is_refused_as_poison_and_nothing_acknowledged_is_lost() {
    let runtime = carapace::wasm::Runtime::new(carapace::wasm::Limits::default()).unwrap();
    let bytes = std::fs::read(carapace::machines::ECHO_POISON_COMPONENT_PATH).unwrap();
    let component = runtime.load(&bytes).unwrap();
    let make = |imports| -> carapace::Result<Box<dyn carapace::Instance>> {
        Ok(Box::new(runtime.instantiate(&component, imports)?))
    };
    let disk = SimDisk::new();
    let (mut durable, _) = Durable::open(
        DataDir::simulated(&disk),
        Some(config()),
        IoOrder::Fifo,
        make,
    )
    .unwrap();
    let requests = requests();
    // Past a checkpoint, so that the rebuild replays a journal tail.
    for request in &requests[..20] {
        assert_eq!(durable.commit(request).unwrap(), request.body);
    }
    let poison = Request {
        body: b"poison, said the client".to_vec(),
        ..requests[20].clone()
    };
    match durable.commit(&poison).unwrap_err() {
        carapace::Error::Poison { op, guest } => {
            assert_eq!(op, 21);
            assert_eq!((guest.export, guest.step), ("deliver", Some("commit")));
            assert!(matches!(guest.fault, carapace::Fault::Trap(_)), "{guest}");
        }
        error => panic!("expected a poison op, got {error}"),
    }
    // Torn down and rebuilt twice (once to retry, once after the retry trapped too).
    assert_eq!((durable.rebuilds(), durable.poisoned()), (2, 1));
    assert_eq!(durable.replica().op(), 20);
    // The next request takes op 21, and everything goes on as in a run without it.
    for request in &requests[20..] {
        assert_eq!(durable.commit(request).unwrap(), request.body);
    }
    drop(durable);
    let (durable, _) = Durable::open(DataDir::simulated(&disk), None, IoOrder::Fifo, make).unwrap();
    assert_eq!(durable.replica().op(), requests.len() as u64);
    assert_eq!(
        durable
            .replica()
            .checkpoint()
            .map(|checkpoint| checkpoint.id()),
        {
            let (_, checkpoints, _) = uncrashed(&requests);
            checkpoints.last().map(|(_, id)| *id)
        }
    );
}

#[test]
fn a_journal_of_another_directory_is_refused_by_every_command() {
    let root = std::env::temp_dir().join(format!("carapace-foreign-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (a, b) = (root.join("a"), root.join("b"));
    // Two directories with a few ops each, before their first checkpoint: only the
    // directory id ties a journal to its directory then.
    for (dir, ops) in [(&a, 5), (&b, 3)] {
        let (mut durable, _) = Durable::open(
            carapace::os::open_data_dir(dir).unwrap(),
            Some(config()),
            IoOrder::Fifo,
            native,
        )
        .unwrap();
        for request in &requests()[..ops] {
            durable.commit(request).unwrap();
        }
    }
    std::fs::copy(a.join(JOURNAL_FILE), b.join(JOURNAL_FILE)).unwrap();
    let error = Durable::open(
        carapace::os::open_data_dir(&b).unwrap(),
        None,
        IoOrder::Fifo,
        native,
    )
    .unwrap_err();
    match error {
        carapace::Error::Corrupt { file, detail } => {
            assert_eq!(file, JOURNAL_FILE);
            assert!(
                detail.contains("belongs to another data directory"),
                "{detail}"
            );
        }
        error => panic!("expected a foreign journal, got {error}"),
    }
    for command in ["replay", "inspect"] {
        let cli = <carapace::cli::Cli as clap::Parser>::try_parse_from([
            "carapace",
            command,
            b.to_str().unwrap(),
        ])
        .unwrap();
        let error = format!("{:#}", cli.execute_to(&mut std::io::sink()).unwrap_err());
        assert!(
            error.contains("belongs to another data directory"),
            "{command}: {error}"
        );
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_group_of_large_bodies_is_made_durable_in_bounded_writes() {
    let body_size = carapace_echo::BATCH_SIZE_LIMIT_MAX;
    let options = carapace::Options {
        batch_size_limit: body_size,
        reply_size_limit: body_size,
        ..config()
    };
    let requests = first_requests(&mut EchoWorkload::with_body_size(3, body_size), 10);
    let disk = SimDisk::new();
    let (mut durable, _) = Durable::open(
        DataDir::simulated(&disk),
        Some(options),
        IoOrder::Seeded(4),
        native,
    )
    .unwrap();
    let syncs = disk.syncs();
    let committed = durable.commit_group(&requests);
    assert!(committed.stopped.is_none());
    assert_eq!(committed.replies.len(), 10);
    // Ten bodies of ~1 MiB: a write is made once the group holds 4 MiB, that is after
    // five entries; two writes, each synced, rather than one of 10 MiB.
    assert_eq!(disk.syncs() - syncs, 2);
    assert_eq!(durable.journal_writes(), 2);
    assert_eq!(durable.journal_end().op, 10);
}

#[test]
fn recovery_reads_the_journal_from_the_checkpoint_and_replay_reads_it_all() {
    let requests = requests();
    let disk = full_disk(&requests);
    // Damage op 5's body, long before the published checkpoint at op 32.
    let offset: usize = requests[..4]
        .iter()
        .map(|request| carapace::journal::HEADER_SIZE + request.body.len())
        .sum();
    disk.corrupt(
        JOURNAL_FILE,
        offset + carapace::journal::HEADER_SIZE + requests[4].body.len() / 2,
        0x01,
    );
    // Recovery opens the checkpoint and verifies its entry and what follows: it never
    // reads op 5, so it takes time in proportion to the journal's tail.
    let (durable, recovery) = open(&disk).unwrap();
    assert_eq!((recovery.checkpoint_op, recovery.replayed_ops), (32, 8));
    assert_eq!(durable.replica().op(), OPS as u64);
    drop(durable);
    // A full verification (what `carapace replay` does) finds the damage.
    let directory_id = carapace::durable::read_superblock(&mut disk.file(SUPERBLOCK_FILE))
        .unwrap()
        .directory_id;
    match carapace::journal::Journal::open_read_only(
        Box::new(disk.file(JOURNAL_FILE)),
        directory_id,
    ) {
        Err(carapace::Error::Corrupt { detail, .. }) => {
            assert!(detail.contains("op 5"), "{detail}")
        }
        other => panic!("expected the damage at op 5, got {other:?}"),
    }
}

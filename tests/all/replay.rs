//! Replaying a recorded log: every reply checksum and checkpoint id reproduced, and a
//! different guest caught at its first divergent op. Also `replay` and `inspect` on
//! real data directories, and their bad cases.

use anyhow::Result;
use carapace::Options;
use carapace::cli::Cli;
use carapace::cli::inspect::inspect;
use carapace::disk::SimDisk;
use carapace::durable::{DataDir, Durable, JOURNAL_FILE, SUPERBLOCK_FILE, read_superblock};
use carapace::imports::{HostImports, IoOrder};
use carapace::journal::Journal;
use carapace::native::NativeInstance;
use carapace::replay::{ReplayReport, replay_journal};
use carapace::replica::Replica;
use carapace::storage::MemoryStorage;
use carapace::workload::{self, EchoWorkload};
use carapace::{Error, Instance};
use carapace_echo::Echo;
use carapace_sdk::{Context, Failure, Reply, StateMachine};
use clap::Parser;

fn long_config() -> Options {
    Options {
        batch_size_limit: 16,
        reply_size_limit: 1 << 20,
        checkpoint_interval_ops: 1024,
        block_size: 4096,
        block_count: 1 << 15,
        settings: Vec::new(),
    }
}

fn record(disk: &SimDisk, config: &Options, ops: u64) {
    let (mut durable, _) = Durable::open(
        DataDir::simulated(disk),
        Some(config.clone()),
        IoOrder::Seeded(2),
        |context| -> carapace::Result<Box<dyn Instance>> {
            Ok(Box::new(NativeInstance::<Echo>::new(context)))
        },
    )
    .unwrap();
    workload::run(
        &mut durable,
        &mut EchoWorkload::new(8, config.batch_size_limit),
        ops,
    )
    .unwrap();
}

/// Replay the journal on `disk` from genesis with `instance`.
fn replay_from_genesis(
    disk: &SimDisk,
    instance: Box<dyn Instance>,
    config: Options,
) -> ReplayReport {
    let stored = read_superblock(&mut disk.file(SUPERBLOCK_FILE)).unwrap();
    let (mut journal, _) =
        Journal::open_read_only(Box::new(disk.file(JOURNAL_FILE)), stored.directory_id).unwrap();
    let mut replica = Replica::open(instance, config, None).unwrap();
    replay_journal(&mut replica, &mut journal, &stored, |_, _, _| Ok(()))
}

fn fresh_context(config: &Options) -> HostImports {
    HostImports::new(
        Box::new(MemoryStorage::new()),
        config.block_size,
        config.block_count,
        IoOrder::Fifo,
    )
}

#[test]
fn replay_of_a_100_000_op_log_reproduces_every_checkpoint_id() {
    let config = long_config();
    let disk = SimDisk::new();
    record(&disk, &config, 100_000);
    let instance = Box::new(NativeInstance::<Echo>::new(fresh_context(&config)));
    let report = replay_from_genesis(&disk, instance, config);
    report.outcome.unwrap();
    assert_eq!(report.identical_through, 100_000);
    assert_eq!(report.checkpoints_verified, 100_000 / 1024);
}

/// The echo machine, except that from op `DIVERGENT_OP` on its replies carry an extra
/// byte: a new module version with a behaviour change.
struct Divergent(Echo);

const DIVERGENT_OP: u64 = 777;

impl StateMachine for Divergent {
    const IDENTITY: carapace_sdk::Identity = carapace_sdk::Identity {
        name: "echo",
        version: "0.0.0",
        state_format: 1,
    };

    fn init(context: Context, options: &carapace_sdk::Options) -> Result<Divergent, Failure> {
        Echo::init(context, options).map(Divergent)
    }
    async fn open(&mut self, checkpoint: Option<&[u8]>) -> Result<(), Failure> {
        self.0.open(checkpoint).await
    }
    fn input_valid(&self, operation: u8, body: &[u8]) -> Result<(), String> {
        self.0.input_valid(operation, body)
    }
    async fn prefetch(&mut self, op: u64, operation: u8, body: &[u8]) -> Result<(), Failure> {
        self.0.prefetch(op, operation, body).await
    }
    fn commit(
        &mut self,
        client: u128,
        op: u64,
        timestamp: u64,
        operation: u8,
        body: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<Reply, Failure> {
        let kind = self
            .0
            .commit(client, op, timestamp, operation, body, reply)?;
        if op < DIVERGENT_OP {
            return Ok(kind);
        }
        if let Reply::Body(range) = kind {
            reply.extend_from_slice(&body[range]);
        }
        reply.push(0);
        Ok(Reply::Written)
    }
    async fn compact(&mut self, op: u64) -> Result<(), Failure> {
        self.0.compact(op).await
    }
    async fn checkpoint(&mut self, op: u64) -> Result<(), Failure> {
        self.0.checkpoint(op).await
    }
    fn checkpoint_state(&self) -> Vec<u8> {
        self.0.checkpoint_state()
    }
    async fn timer(&mut self, id: u64) -> Result<(), Failure> {
        self.0.timer(id).await
    }
}

#[test]
fn replay_against_a_different_guest_names_the_first_divergent_op() {
    let config = long_config();
    let disk = SimDisk::new();
    record(&disk, &config, 2_000);
    let instance = Box::new(NativeInstance::<Divergent>::new(fresh_context(&config)));
    let report = replay_from_genesis(&disk, instance, config);
    assert_eq!(report.identical_through, DIVERGENT_OP - 1);
    match report.outcome.unwrap_err() {
        Error::Divergence { op, detail } => {
            assert_eq!(op, DIVERGENT_OP);
            assert!(detail.contains("reply checksum"), "{detail}");
        }
        error => panic!("expected a divergence, got {error}"),
    }
}

fn cli(args: &[&str]) -> Result<(), String> {
    let cli =
        Cli::try_parse_from(["carapace"].iter().chain(args)).map_err(|error| error.to_string())?;
    cli.execute_to(&mut std::io::sink())
        .map_err(|error| format!("{error:#}"))
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("carapace-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    path
}

#[test]
fn a_data_directory_persists_continues_replays_and_inspects() {
    let dir = temp_dir("persist");
    let path = dir.to_str().unwrap();
    let args = [
        "--setting",
        "lsm-profile=test",
        "--checkpoint-interval",
        "16",
        "--batch-size-limit",
        "64",
    ];
    let run = |ops: &str, args: &[&str]| {
        let mut all = vec!["run", "--ops", ops, "--data", path, "--target", "native"];
        all.extend(args);
        cli(&all)
    };
    run("100", &args).unwrap();
    // A continuing run needs no options (the same ones are accepted too).
    run("20", &[]).unwrap();
    // The component recovers what the native build journaled: recovery replays the
    // journal's tail and checks every reply and checkpoint id across targets.
    cli(&["run", "--ops", "10", "--data", path]).unwrap();
    run("20", &args).unwrap();
    let report = inspect(&dir, &Default::default()).unwrap();
    assert_eq!(report.journal_ops, 150);
    assert_eq!(report.checkpoint.as_ref().unwrap().op, 144);
    assert_eq!(report.superblock_copies_valid, [true; 4]);
    let trees: Vec<_> = report
        .statistics
        .iter()
        .filter(|statistic| statistic.name.ends_with("tables per level"))
        .collect();
    assert_eq!(trees.len(), 3, "{:?}", report.statistics);
    assert!(trees[0].values.iter().sum::<u64>() > 0);
    cli(&["replay", path]).unwrap();
    cli(&["replay", path, "--target", "native"]).unwrap();
    cli(&["replay", path, "--from-checkpoint"]).unwrap();
    cli(&["inspect", path, "--json"]).unwrap();

    // A deliberately different version of the component is caught at its first
    // divergent op (it changes replies from op 100 on).
    let error = cli(&[
        "replay",
        path,
        "--module",
        carapace::machines::ECHO_DIVERGENT_COMPONENT_PATH,
    ])
    .unwrap_err();
    assert!(
        error.contains("identical through op 99: diverged at op 100: reply checksum"),
        "{error}"
    );

    // Options of an existing directory are its own.
    let error = cli(&[
        "run",
        "--ops",
        "5",
        "--data",
        path,
        "--target",
        "native",
        "--setting",
        "bar-ops=8",
    ])
    .unwrap_err();
    assert!(
        error.contains("`--setting` differs from what the data directory was created with"),
        "{error}"
    );
    let error = cli(&[
        "run",
        "--ops",
        "5",
        "--data",
        path,
        "--checkpoint-interval",
        "32",
    ])
    .unwrap_err();
    assert!(error.contains("`--checkpoint-interval` differs"), "{error}");

    // A torn journal tail is reported by inspect and cut by the next run.
    let journal = dir.join(JOURNAL_FILE);
    let length = std::fs::metadata(&journal).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .unwrap();
    file.set_len(length - 10).unwrap();
    let report = inspect(&dir, &Default::default()).unwrap();
    assert_eq!(report.journal_ops, 149);
    assert!(report.journal_torn_bytes > 0);
    run("1", &[]).unwrap();
    assert_eq!(inspect(&dir, &Default::default()).unwrap().journal_ops, 150);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn options_the_machine_refuses_do_not_create_a_data_directory() {
    let dir = temp_dir("bad-options");
    let path = dir.to_str().unwrap();
    let error = cli(&[
        "run",
        "--ops",
        "5",
        "--data",
        path,
        "--setting",
        "bar-ops=3",
    ])
    .unwrap_err();
    assert!(error.contains("refuses the options"), "{error}");
    assert!(error.contains("setting `bar-ops`: 3"), "{error}");
    let error = cli(&["run", "--ops", "5", "--data", path, "--block-size", "1000"]).unwrap_err();
    assert!(
        error.contains("block size 1000 is not a power of two"),
        "{error}"
    );
    let error = cli(&["run", "--ops", "5", "--data", path, "--memory-at", "2"]).unwrap_err();
    assert!(
        error.contains("`--memory-at` is not supported with `--data`"),
        "{error}"
    );
    // Nothing was recorded: good options create the directory afterwards.
    cli(&["run", "--ops", "5", "--data", path, "--target", "native"]).unwrap();
    assert_eq!(inspect(&dir, &Default::default()).unwrap().journal_ops, 5);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn replay_and_inspect_refuse_what_is_not_a_data_directory() {
    let missing = temp_dir("missing");
    let error = cli(&["replay", missing.to_str().unwrap()]).unwrap_err();
    assert!(error.contains("superblock`: No such file"), "{error}");
    let error = cli(&["inspect", missing.to_str().unwrap()]).unwrap_err();
    assert!(error.contains("superblock`: No such file"), "{error}");

    let garbage = temp_dir("garbage");
    std::fs::create_dir_all(&garbage).unwrap();
    std::fs::write(garbage.join("superblock"), vec![7; 16384]).unwrap();
    std::fs::write(garbage.join("journal"), b"").unwrap();
    let error = cli(&["inspect", garbage.to_str().unwrap()]).unwrap_err();
    assert!(error.contains("no valid superblock copy"), "{error}");
    std::fs::remove_dir_all(&garbage).unwrap();
}

/// Grid storage whose reads fail once `reads_left` runs out, as a failing disk would.
struct FailingReads {
    base: MemoryStorage,
    reads_left: u64,
}

impl carapace::storage::Storage for FailingReads {
    fn read(&mut self, address: u64, block: &mut [u8]) -> std::io::Result<()> {
        if self.reads_left == 0 {
            return Err(std::io::Error::other("injected read error"));
        }
        self.reads_left -= 1;
        self.base.read(address, block)
    }
    fn write(&mut self, address: u64, block: &[u8]) -> std::io::Result<()> {
        self.base.write(address, block)
    }
    fn sync(&mut self) -> std::io::Result<()> {
        self.base.sync()
    }
}

#[test]
fn replay_reports_an_io_error_as_itself_never_as_a_divergence() {
    // A flush every bar makes merges, which read, from the first bars on.
    let flush_every_bar = ("flush-bars-max".to_string(), "1".to_string());
    let config = Options {
        settings: vec![flush_every_bar.clone()],
        ..long_config()
    };
    let disk = SimDisk::new();
    record(&disk, &config, 3_000);
    // Without a cache every lookup reads the grid (the cache is not state: the same
    // log gives the same replies and checkpoint ids).
    let config = Options {
        settings: vec![flush_every_bar, ("grid-cache-blocks".into(), "0".into())],
        ..config
    };
    let storage = FailingReads {
        base: MemoryStorage::new(),
        reads_left: 50,
    };
    let imports = HostImports::new(
        Box::new(storage),
        config.block_size,
        config.block_count,
        IoOrder::Fifo,
    );
    let instance = Box::new(NativeInstance::<Echo>::new(imports));
    let report = replay_from_genesis(&disk, instance, config);
    match report.outcome.unwrap_err() {
        Error::Io { file, .. } => assert_eq!(file, "grid"),
        error => panic!("expected an I/O error, got {error}"),
    }
    assert!(report.identical_through > 0);
}

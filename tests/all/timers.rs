//! Logical timers fire at the same place in the log, natively, in wasm, and after a
//! restart.

use carapace::imports::IoOrder;
use carapace::replica::Replica;
use carapace::storage::MemoryStorage;
use carapace::workload::{self, EchoWorkload};

use crate::support::*;

fn stats_messages(replica: &mut Replica) -> Vec<(u64, String)> {
    replica.instance_mut().with_imports(|context| {
        context
            .log_messages()
            .filter(|message| message.message.starts_with("stats"))
            .map(|message| (message.op, message.message.clone()))
            .collect()
    })
}

#[test]
fn timers_fire_at_the_same_ops_in_wasm_natively_and_after_reopening() {
    let config = config_with(&[("stats-interval", "5000")]);
    let storage = MemoryStorage::new();
    let mut wasm = wasm_replica(&storage, IoOrder::Seeded(1), config.clone(), None).unwrap();
    let mut native = native_replica(
        &MemoryStorage::new(),
        IoOrder::Seeded(1),
        config.clone(),
        None,
    )
    .unwrap();
    workload::run(&mut wasm, &mut EchoWorkload::new(9, BATCH_SIZE_LIMIT), 64).unwrap();
    workload::run(&mut native, &mut EchoWorkload::new(9, BATCH_SIZE_LIMIT), 64).unwrap();
    let fired = stats_messages(&mut wasm);
    assert!(fired.len() >= 4, "{fired:?}");
    assert_eq!(fired, stats_messages(&mut native));

    // Reopen at the checkpoint of op 32 over the storage as it was then, and replay:
    // the timer is re-armed for the same deadline and fires before the same ops.
    let mut workload = EchoWorkload::new(9, BATCH_SIZE_LIMIT);
    let storage = MemoryStorage::new();
    let mut first_half = wasm_replica(&storage, IoOrder::Fifo, config.clone(), None).unwrap();
    workload::run(&mut first_half, &mut workload, 32).unwrap();
    let checkpoint = first_half.checkpoint().unwrap().clone();
    assert_eq!(checkpoint.op, 32);
    let mut reopened =
        wasm_replica(&storage.snapshot(), IoOrder::Fifo, config, Some(checkpoint)).unwrap();
    workload::run(&mut reopened, &mut workload, 32).unwrap();
    let expected: Vec<_> = fired.iter().filter(|(op, _)| *op >= 32).cloned().collect();
    assert!(!expected.is_empty());
    assert_eq!(stats_messages(&mut reopened), expected);
}

#[test]
fn a_short_timer_interval_fires_at_most_once_per_op() {
    // Timestamps advance by up to 1,000 per op: with an interval of 10 many deadlines
    // pass between two ops, yet the timer fires once, seeing the op's timestamp.
    let config = config_with(&[("stats-interval", "10")]);
    let mut replica = wasm_replica(&MemoryStorage::new(), IoOrder::Fifo, config, None).unwrap();
    workload::run(
        &mut replica,
        &mut EchoWorkload::new(3, BATCH_SIZE_LIMIT),
        200,
    )
    .unwrap();
    let fired = stats_messages(&mut replica);
    assert!(
        fired.len() >= 150 && fired.len() <= 200,
        "{} firings",
        fired.len()
    );
}

/// The scrubber's figures: blocks verified and tours.
fn scrubbed(replica: &mut Replica) -> (u64, u64) {
    let statistics = replica.describe().unwrap();
    let scrubber = statistics
        .iter()
        .find(|statistic| statistic.name.starts_with("scrubber"))
        .expect("the forest reports its scrubber");
    (scrubber.values[0], scrubber.values[1])
}

#[test]
fn the_scrubber_verifies_the_same_blocks_live_natively_and_in_a_replay_of_the_journal() {
    use carapace::durable::{DataDir, Durable, JOURNAL_FILE, SUPERBLOCK_FILE, read_superblock};
    use carapace::journal::Journal;

    let config = config_with(&[("scrub-interval", "3000"), ("scrub-blocks", "4")]);
    let disk = carapace::disk::SimDisk::new();
    let runtime = carapace::wasm::Runtime::new(carapace::wasm::Limits::default()).unwrap();
    let component = runtime.load(carapace::machines::ECHO_COMPONENT).unwrap();
    let (mut durable, _) = Durable::open(
        DataDir::simulated(&disk),
        Some(config.clone()),
        IoOrder::Latency {
            seed: 4,
            latency_max: 16,
        },
        |imports| -> carapace::Result<Box<dyn carapace::Instance>> {
            Ok(Box::new(runtime.instantiate(&component, imports)?))
        },
    )
    .unwrap();
    workload::run(
        &mut durable,
        &mut EchoWorkload::new(5, BATCH_SIZE_LIMIT),
        160,
    )
    .unwrap();
    let live = scrubbed(durable.replica_mut());
    assert!(live.0 > 50 && live.1 > 0, "{live:?}: the scrubber toured");
    drop(durable);

    // Natively, completing I/O in another order: the same figures.
    let mut native = native_replica(
        &MemoryStorage::new(),
        IoOrder::Seeded(9),
        config.clone(),
        None,
    )
    .unwrap();
    workload::run(
        &mut native,
        &mut EchoWorkload::new(5, BATCH_SIZE_LIMIT),
        160,
    )
    .unwrap();
    assert_eq!(scrubbed(&mut native), live);

    // A replay of the journal from genesis fires the scrubber at the same ops.
    let stored = read_superblock(&mut disk.file(SUPERBLOCK_FILE)).unwrap();
    let (mut journal, _) =
        Journal::open_read_only(Box::new(disk.file(JOURNAL_FILE)), stored.directory_id).unwrap();
    let mut replayed = wasm_replica(&MemoryStorage::new(), IoOrder::Fifo, config, None).unwrap();
    carapace::replay::replay_journal(&mut replayed, &mut journal, &stored, |_, _, _| Ok(()))
        .outcome
        .unwrap();
    assert_eq!(scrubbed(&mut replayed), live);
}

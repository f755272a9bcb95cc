//! Machines are plugins: the kv machine runs through wasmtime with every reply checked
//! against a model, natively and in wasm to the same checkpoint ids, and a data
//! directory refuses a machine other than the one that wrote it.

use carapace::disk::SimDisk;
use carapace::durable::{DataDir, Durable};
use carapace::imports::IoOrder;
use carapace::native::NativeInstance;
use carapace::replica::Replica;
use carapace::storage::MemoryStorage;
use carapace::workload::{self, EchoWorkload, KvWorkload};
use carapace::{Error, Instance, Options};

use crate::support::*;

fn kv_config() -> Options {
    Options {
        batch_size_limit: 1024,
        reply_size_limit: 1 << 16,
        ..config()
    }
}

fn kv_wasm(storage: &MemoryStorage, order: IoOrder) -> Box<dyn Instance> {
    Box::new(wasm_machine_of(carapace::machines::KV_COMPONENT, storage, order).unwrap())
}

fn kv_native(storage: &MemoryStorage, order: IoOrder) -> Box<dyn Instance> {
    Box::new(NativeInstance::<carapace_kv::Kv>::new(context(
        storage, order,
    )))
}

/// Run the seeded kv workload (every reply checked against its model) and return the
/// checkpoint ids taken.
fn kv_run(instance: Box<dyn Instance>, seed: u64, ops: u64) -> Vec<u128> {
    let mut replica = Replica::open(instance, kv_config(), None).unwrap();
    let mut workload = KvWorkload::new(seed, kv_config().batch_size_limit);
    let mut ids = Vec::new();
    for _ in 0..ops / CHECKPOINT_INTERVAL_OPS {
        workload::run(&mut replica, &mut workload, CHECKPOINT_INTERVAL_OPS).unwrap();
        ids.push(replica.checkpoint().unwrap().id());
    }
    assert!(
        workload.model().len() > 100,
        "the model holds {} keys",
        workload.model().len()
    );
    ids
}

#[test]
fn kv_replies_match_the_model_in_wasm_and_natively_with_the_same_checkpoint_ids() {
    for seed in [1, 2] {
        let wasm = kv_run(
            kv_wasm(&MemoryStorage::new(), IoOrder::Seeded(seed)),
            seed,
            800,
        );
        let native = kv_run(kv_native(&MemoryStorage::new(), IoOrder::Fifo), seed, 800);
        assert_eq!(wasm, native, "seed {seed}");
    }
}

#[test]
fn a_data_directory_refuses_another_machine_naming_both() {
    let disk = SimDisk::new();
    let echo = |imports| -> carapace::Result<Box<dyn Instance>> {
        Ok(Box::new(NativeInstance::<carapace_echo::Echo>::new(
            imports,
        )))
    };
    let kv = |imports| -> carapace::Result<Box<dyn Instance>> {
        Ok(Box::new(NativeInstance::<carapace_kv::Kv>::new(imports)))
    };
    let (mut durable, _) = Durable::open(
        DataDir::simulated(&disk),
        Some(config()),
        IoOrder::Fifo,
        echo,
    )
    .unwrap();
    let mut workload = EchoWorkload::new(3, BATCH_SIZE_LIMIT);
    workload::run(&mut durable, &mut workload, 20).unwrap();
    drop(durable);
    match Durable::open(DataDir::simulated(&disk), None, IoOrder::Fifo, kv).unwrap_err() {
        Error::Incompatible(detail) => {
            assert!(
                detail.contains("`echo`") && detail.contains("`kv`"),
                "{detail}"
            );
        }
        error => panic!("expected an incompatible directory, got {error}"),
    }
    // And the reverse: a kv directory refuses echo.
    let disk = SimDisk::new();
    Durable::open(
        DataDir::simulated(&disk),
        Some(kv_config()),
        IoOrder::Fifo,
        kv,
    )
    .unwrap();
    let error = Durable::open(DataDir::simulated(&disk), None, IoOrder::Fifo, echo).unwrap_err();
    assert!(matches!(error, Error::Incompatible(_)), "{error}");
    // The right machine still opens it.
    Durable::open(DataDir::simulated(&disk), None, IoOrder::Fifo, kv).unwrap();
}

#[test]
fn a_checkpoint_interval_the_machine_cannot_take_creates_no_directory() {
    let disk = SimDisk::new();
    let echo = |imports| -> carapace::Result<Box<dyn Instance>> {
        Ok(Box::new(NativeInstance::<carapace_echo::Echo>::new(
            imports,
        )))
    };
    let options = Options {
        checkpoint_interval_ops: 3,
        ..config()
    };
    let error = Durable::open(
        DataDir::simulated(&disk),
        Some(options),
        IoOrder::Fifo,
        echo,
    )
    .unwrap_err();
    assert!(matches!(error, Error::Refused(_)), "{error}");
    assert_eq!(disk.durable_len("superblock"), 0);
}

#[test]
fn sizes_from_options_are_refused_the_same_natively_and_in_wasm() {
    // 65,536 cache blocks of 64 KiB are 2^32 bytes: a 32-bit guest that multiplied in
    // `usize` would wrap to an empty cache while a native build allocated 4 GiB.
    let cases = [
        (
            65_536,
            vec![("grid-cache-blocks", "65536")],
            "a grid cache of 65536 blocks of 65536 bytes is over",
        ),
        (
            4096,
            vec![],
            "a grid of 2147483648 blocks is not in 1..=1073741824",
        ),
    ];
    for (block_size, settings, expected) in cases {
        let options = Options {
            block_size,
            block_count: if settings.is_empty() {
                1 << 31
            } else {
                1 << 10
            },
            ..config_with(&settings)
        };
        let refusal =
            |instance: Box<dyn Instance>| match Replica::open(instance, options.clone(), None) {
                Err(Error::Refused(reason)) => reason,
                Err(error) => panic!("expected a refusal, got {error}"),
                Ok(_) => panic!("options accepted"),
            };
        let storage = MemoryStorage::new();
        let native = refusal(native_echo(&storage, IoOrder::Fifo));
        let wasm = refusal(Box::new(wasm_machine(&storage, IoOrder::Fifo).unwrap()));
        assert!(native.contains(expected), "{native}");
        assert_eq!(native, wasm);
    }
}

//! TigerBeetle's echo workload through the wasm host.

use carapace::imports::IoOrder;
use carapace::storage::MemoryStorage;
use carapace::workload::{self, EchoWorkload};

use crate::support::*;

#[test]
fn thousands_of_echo_ops_through_the_wasm_host() {
    let storage = MemoryStorage::new();
    let mut replica = wasm_replica(&storage, IoOrder::Seeded(11), config(), None).unwrap();
    let mut workload = EchoWorkload::new(11, BATCH_SIZE_LIMIT);
    // `workload::run` checks every reply against its request.
    let report = workload::run(&mut replica, &mut workload, 4_000).unwrap();
    assert_eq!(report.ops, 4_000);
    assert!(report.request_bytes > 4_000 * u64::from(BATCH_SIZE_LIMIT) / 3);
    assert_eq!(replica.op(), 4_000);
    assert_eq!(replica.checkpoint().unwrap().op, 4_000);
    // One table (one value block and one index block) per bar of 4 ops, at least.
    assert!(
        storage.written_count() >= 2_000,
        "{} blocks",
        storage.written_count()
    );
}

#[test]
fn guest_memory_does_not_grow_with_the_number_of_ops() {
    let storage = MemoryStorage::new();
    let mut replica = wasm_replica(&storage, IoOrder::Seeded(12), config(), None).unwrap();
    let mut workload = EchoWorkload::new(12, BATCH_SIZE_LIMIT);
    // By 1,000 ops every level of the test profile is in use; from then on memory
    // must stay what `init` allocated.
    workload::run(&mut replica, &mut workload, 1_000).unwrap();
    let early = replica.instance_mut().memory_bytes();
    workload::run(&mut replica, &mut workload, 7_000).unwrap();
    let late = replica.instance_mut().memory_bytes();
    assert_eq!(early, late);
}

/// Regression: under a batch size limit smaller than a put (80 bytes), the kv workload
/// made puts anyway, and every run was refused at its first put.
#[test]
fn the_kv_workload_keeps_to_a_batch_size_limit_smaller_than_a_put() {
    use carapace::workload::{KvWorkload, first_requests};
    for limit in [16, 40, 64, 79] {
        for request in first_requests(&mut KvWorkload::new(1, limit), 500) {
            assert!(
                request.body.len() <= limit as usize,
                "limit {limit}: {request:?}"
            );
        }
    }
    let runtime = carapace::wasm::Runtime::new(carapace::wasm::Limits::default()).unwrap();
    let component = runtime.load(carapace::machines::KV_COMPONENT).unwrap();
    let options = carapace::Options {
        batch_size_limit: 64,
        reply_size_limit: 1 << 20,
        ..config_with(&[("lsm-profile", "test")])
    };
    let instance = runtime
        .instantiate(&component, context(&MemoryStorage::new(), IoOrder::Fifo))
        .unwrap();
    let mut replica = carapace::replica::Replica::open(Box::new(instance), options, None).unwrap();
    workload::run(&mut replica, &mut KvWorkload::new(2, 64), 200).unwrap();
}

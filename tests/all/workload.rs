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

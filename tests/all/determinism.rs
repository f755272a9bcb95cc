//! Same log, same replies and checkpoint ids: across runs, I/O orders, and targets.

use carapace::imports::IoOrder;
use carapace::replica::Replica;
use carapace::storage::MemoryStorage;
use carapace::workload::{EchoWorkload, Workload};

use crate::support::*;

/// Every reply and every checkpoint id of `ops` workload ops.
fn trace(mut replica: Replica, seed: u64, ops: u64) -> (Vec<Vec<u8>>, Vec<u128>) {
    let mut workload = EchoWorkload::new(seed, BATCH_SIZE_LIMIT);
    let mut replies = Vec::new();
    let mut checkpoint_ids = Vec::new();
    for _ in 0..ops {
        let request = workload.next_request(replica.op(), replica.timestamp());
        replies.push(replica.commit(&request).unwrap());
        if let Some(checkpoint) = replica.checkpoint_taken_at(request.op) {
            checkpoint_ids.push(checkpoint.id());
        }
    }
    (replies, checkpoint_ids)
}

fn wasm_trace(seed: u64, order: IoOrder, ops: u64) -> (Vec<Vec<u8>>, Vec<u128>) {
    trace(
        wasm_replica(&MemoryStorage::new(), order, config(), None).unwrap(),
        seed,
        ops,
    )
}

#[test]
fn same_seed_gives_the_same_checkpoint_ids_and_another_seed_does_not() {
    let first = wasm_trace(5, IoOrder::Seeded(5), 600);
    let second = wasm_trace(5, IoOrder::Seeded(5), 600);
    assert_eq!(first, second);
    assert_eq!(first.1.len(), 600 / CHECKPOINT_INTERVAL_OPS as usize);
    let other = wasm_trace(6, IoOrder::Seeded(6), 600);
    assert_ne!(first.1.last(), other.1.last());
}

#[test]
fn io_completion_order_does_not_change_the_state() {
    let fifo = wasm_trace(3, IoOrder::Fifo, 300);
    for order_seed in [1, 2, 99] {
        assert_eq!(
            wasm_trace(3, IoOrder::Seeded(order_seed), 300),
            fifo,
            "order seed {order_seed}"
        );
    }
}

#[test]
fn native_and_wasm_give_the_same_replies_and_checkpoint_ids() {
    let wasm = wasm_trace(8, IoOrder::Seeded(8), 500);
    let native = trace(
        native_replica(&MemoryStorage::new(), IoOrder::Seeded(8), config(), None).unwrap(),
        8,
        500,
    );
    assert_eq!(native, wasm);
}

/// Every reply and checkpoint id of one op per body size in `sizes`, with bodies up to
/// the largest.
fn sizes_trace(mut replica: Replica, sizes: &[u32]) -> (Vec<Vec<u8>>, Vec<u128>) {
    let mut replies = Vec::new();
    let mut checkpoint_ids = Vec::new();
    for &size in sizes {
        let request = EchoWorkload::with_body_size(u64::from(size), size)
            .next_request(replica.op(), replica.timestamp());
        replies.push(replica.commit(&request).unwrap());
        if let Some(checkpoint) = replica.checkpoint_taken_at(request.op) {
            checkpoint_ids.push(checkpoint.id());
        }
    }
    (replies, checkpoint_ids)
}

/// Echo's Thing value hashes the request's header and body, and wasm and native builds
/// hash inputs over 16 bytes with different code (wasm's own XXH3: 64×64-bit products
/// from vector multiplies, long inputs in 128-bit vectors a block of 16 stripes at a
/// time): every body size from empty to past two blocks, and a few large ones, must
/// give the same state.
#[test]
fn native_and_wasm_agree_on_every_body_size() {
    let sizes: Vec<u32> = (0..=2200).chain([4096, 65_536, 100_001]).collect();
    let limit = *sizes.iter().max().unwrap();
    let options = || carapace::Options {
        batch_size_limit: limit,
        reply_size_limit: limit,
        ..config()
    };
    let native = sizes_trace(
        native_replica(&MemoryStorage::new(), IoOrder::Fifo, options(), None).unwrap(),
        &sizes,
    );
    let wasm = sizes_trace(
        wasm_replica(&MemoryStorage::new(), IoOrder::Fifo, options(), None).unwrap(),
        &sizes,
    );
    assert_eq!(
        native.1.len(),
        sizes.len() / CHECKPOINT_INTERVAL_OPS as usize
    );
    assert!(native == wasm, "native and wasm diverged");
}

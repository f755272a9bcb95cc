//! What the guest stores lives in grid blocks, and damage to them is caught on read.

use carapace::context::IoOrder;
use carapace::machine::Machine;
use carapace::replica::{Replica, Request};
use carapace::storage::MemoryStorage;
use carapace_echo::{Operation, Thing, thing_value};
use carapace_lsm::tree::Value;

use crate::support::*;

fn echo(op: u64) -> Request {
    Request {
        client: 7,
        op,
        timestamp: 1_000 + op,
        operation: Operation::Echo as u8,
        body: format!("request {op}").into_bytes(),
    }
}

fn lookup(op: u64, id: u128) -> Request {
    Request {
        client: 7,
        op,
        timestamp: 1_000 + op,
        operation: Operation::Lookup as u8,
        body: id.to_le_bytes().to_vec(),
    }
}

/// Commit ops 1..=8 (two bars of 4: two tables on disk), then look up thing 1.
fn store_two_tables<M: Machine>(replica: &mut Replica<M>) -> Vec<u8> {
    for op in 1..=8 {
        replica.commit(&echo(op)).unwrap();
    }
    replica.commit(&lookup(9, 1)).unwrap()
}

fn check_reads_back_and_detects_damage<M: Machine>(open: impl Fn(&MemoryStorage) -> Replica<M>) {
    let storage = MemoryStorage::new();
    let mut replica = open(&storage);
    let reply = store_two_tables(&mut replica);
    let request = echo(1);
    let expected = Thing {
        timestamp: request.timestamp,
        value: thing_value(7, 1, request.timestamp, request.operation, &request.body),
        id: 1,
    };
    assert_eq!(Thing::decode(&reply), expected);

    // The first bar's flush placed its value block at the lowest address, then its
    // index block. Damage each in turn; the lookup must fail naming the address, and
    // must not be committed.
    for (address, offset) in [(1, 200), (2, 70), (1, 3)] {
        let storage = MemoryStorage::new();
        let mut replica = open(&storage);
        for op in 1..=8 {
            replica.commit(&echo(op)).unwrap();
        }
        assert!(storage.corrupt(address, offset, 0x04));
        let error = format!("{:#}", replica.commit(&lookup(9, 1)).unwrap_err());
        assert!(error.contains("corrupt-block"), "{error}");
        assert!(
            error.contains(&format!("block at address {address}")),
            "{error}"
        );
        assert_eq!(replica.op(), 8);
    }
}

/// Without a block cache, every lookup reads the grid.
fn uncached() -> carapace::replica::ReplicaConfig {
    config_with(&[("grid-cache-blocks", "0")])
}

#[test]
fn things_read_back_from_blocks_and_a_flipped_byte_is_caught_in_wasm() {
    check_reads_back_and_detects_damage(|storage| {
        wasm_replica(storage, IoOrder::Fifo, uncached(), None).unwrap()
    });
}

#[test]
fn things_read_back_from_blocks_and_a_flipped_byte_is_caught_natively() {
    check_reads_back_and_detects_damage(|storage| {
        native_replica(storage, IoOrder::Fifo, uncached(), None).unwrap()
    });
}

#[test]
fn damage_behind_the_cache_is_caught_once_the_block_is_read_again() {
    let storage = MemoryStorage::new();
    let mut replica = wasm_replica(&storage, IoOrder::Fifo, config(), None).unwrap();
    for op in 1..=CHECKPOINT_INTERVAL_OPS {
        replica.commit(&echo(op)).unwrap();
    }
    assert!(storage.corrupt(1, 100, 0x01));
    // The cache still holds the block as written: the lookup is served correctly.
    let op = CHECKPOINT_INTERVAL_OPS + 1;
    assert_eq!(replica.commit(&lookup(op, 1)).unwrap().len(), Thing::SIZE);

    // A machine reopened at the checkpoint starts with an empty cache.
    let checkpoint = replica.checkpoint().unwrap().clone();
    let mut reopened = wasm_replica(&storage, IoOrder::Fifo, config(), Some(checkpoint)).unwrap();
    let error = format!("{:#}", reopened.commit(&lookup(op, 1)).unwrap_err());
    assert!(error.contains("corrupt-block"), "{error}");
    assert!(error.contains("block at address 1 "), "{error}");
}

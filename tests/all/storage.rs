//! What the guest stores lives in grid blocks, and damage to them is caught on read.

use carapace::imports::IoOrder;
use carapace::replica::{Replica, Request};
use carapace::storage::MemoryStorage;
use carapace_echo::{Operation, Thing, thing_value};
use carapace_lsm::table::Value;

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

const OPS: u64 = 12;

fn expected_thing(op: u64) -> Thing {
    let request = echo(op);
    Thing {
        timestamp: request.timestamp,
        value: thing_value(7, op, request.timestamp, request.operation, &request.body),
        id: u128::from(op),
    }
}

/// Commit ops `1..=OPS`: the first two bars end up in tables on disk, the third in
/// the immutable memory table.
fn commit_echoes(replica: &mut Replica) {
    for op in 1..=OPS {
        replica.commit(&echo(op)).unwrap();
    }
}

fn check_reads_back_and_detects_damage(open: impl Fn(&MemoryStorage) -> Replica) {
    let storage = MemoryStorage::new();
    let mut replica = open(&storage);
    commit_echoes(&mut replica);
    let addresses = storage.addresses();
    for id in 1..=OPS {
        let reply = replica
            .commit(&lookup(replica.op() + 1, u128::from(id)))
            .unwrap();
        assert_eq!(Thing::decode(&reply), expected_thing(id), "thing {id}");
    }

    // Damage each written block in turn. Every lookup either returns the right Thing
    // or fails naming the damaged address: never wrong data.
    let mut detected = 0;
    for address in addresses {
        let storage = MemoryStorage::new();
        let mut replica = open(&storage);
        commit_echoes(&mut replica);
        assert!(storage.corrupt(address, 100, 0x04));
        for id in 1..=OPS {
            let op = replica.op() + 1;
            match replica.commit(&lookup(op, u128::from(id))) {
                Ok(reply) => assert_eq!(Thing::decode(&reply), expected_thing(id), "thing {id}"),
                Err(error) => {
                    let message = corrupt_block(error);
                    assert!(
                        message.contains(&format!("block at address {address} ")),
                        "{message}"
                    );
                    // No reply came back: the op is not acknowledged. (The damage may
                    // surface in `prefetch`, or in a later `compact` that merges the block.)
                    detected += 1;
                    break;
                }
            }
        }
    }
    // Thing blocks (object and id trees) of both bars on disk are read by lookups.
    assert!(detected >= 4, "{detected} damaged blocks detected");
}

/// Without a block cache, every lookup reads the grid.
fn uncached() -> carapace::Options {
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
    // The lowest address holds the first table's first value block: the object tree's,
    // holding thing 1.
    assert!(storage.corrupt(1, 100, 0x01));
    // The cache still holds the block as written: the lookup is served correctly.
    let op = CHECKPOINT_INTERVAL_OPS + 1;
    assert_eq!(replica.commit(&lookup(op, 1)).unwrap().len(), Thing::SIZE);

    // A machine reopened at the checkpoint starts with an empty cache.
    let checkpoint = replica.checkpoint().unwrap().clone();
    let mut reopened = wasm_replica(&storage, IoOrder::Fifo, config(), Some(checkpoint)).unwrap();
    let message = corrupt_block(reopened.commit(&lookup(op, 1)).unwrap_err());
    assert!(message.contains("block at address 1 "), "{message}");
    // The instance is unusable now: it says so rather than running on.
    let error = reopened.commit(&lookup(op, 2)).unwrap_err();
    assert!(matches!(error, carapace::Error::Stopped(_)), "{error}");
}

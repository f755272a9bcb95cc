//! Bad requests are refused by `input-valid` and never committed.

use carapace::imports::IoOrder;
use carapace::replica::Request;
use carapace::storage::MemoryStorage;
use carapace_echo::Operation;

use crate::support::*;

fn echo(op: u64, size: usize) -> Request {
    Request {
        client: 1,
        op,
        timestamp: op * 10,
        operation: Operation::Echo as u8,
        body: vec![op as u8; size],
    }
}

fn lookup(op: u64, ids: &[u128]) -> Request {
    Request {
        client: 1,
        op,
        timestamp: op * 10,
        operation: Operation::Lookup as u8,
        body: ids.iter().flat_map(|id| id.to_le_bytes()).collect(),
    }
}

#[test]
fn an_oversized_body_is_rejected_and_never_committed() {
    let storage = MemoryStorage::new();
    let mut replica = wasm_replica(&storage, IoOrder::Fifo, config(), None).unwrap();
    replica.commit(&echo(1, 10)).unwrap();

    let oversized = echo(2, BATCH_SIZE_LIMIT as usize + 1);
    let reason = replica
        .input_valid(oversized.operation, &oversized.body)
        .unwrap()
        .unwrap_err();
    assert!(
        reason.contains("exceeds the batch size limit of 512 bytes"),
        "{reason}"
    );
    let error = replica.commit(&oversized).unwrap_err();
    assert!(
        matches!(&error, carapace::Error::Refused(reason) if reason.contains("over the batch size limit")),
        "{error}"
    );
    assert_eq!(replica.op(), 1);

    // The op number was not used up, and no Thing exists for it.
    let exactly_at_limit = echo(2, BATCH_SIZE_LIMIT as usize);
    assert_eq!(
        replica.commit(&exactly_at_limit).unwrap(),
        exactly_at_limit.body
    );
    let reply = replica.commit(&lookup(3, &[1, 2, 3])).unwrap();
    assert_eq!(
        reply.len(),
        2 * 32,
        "things 1 and 2 exist, 3 (a lookup) does not"
    );
}

#[test]
fn unknown_operations_and_malformed_lookups_are_rejected() {
    let mut replica = wasm_replica(&MemoryStorage::new(), IoOrder::Fifo, config(), None).unwrap();
    for (operation, body, expected) in [
        (0, vec![], "unknown operation 0"),
        (200, vec![1], "unknown operation 200"),
        (Operation::Lookup as u8, vec![], "lookup body of 0 bytes"),
        (
            Operation::Lookup as u8,
            vec![0; 17],
            "lookup body of 17 bytes",
        ),
    ] {
        let reason = replica.input_valid(operation, &body).unwrap().unwrap_err();
        assert!(reason.contains(expected), "{reason}");
    }
    assert_eq!(replica.op(), 0);
}

#[test]
fn out_of_order_ops_and_timestamps_are_refused_by_the_host() {
    let mut replica = wasm_replica(&MemoryStorage::new(), IoOrder::Fifo, config(), None).unwrap();
    replica.commit(&echo(1, 1)).unwrap();
    let error = format!("{:#}", replica.commit(&echo(3, 1)).unwrap_err());
    assert!(
        error.contains("op 3 does not follow the last committed op 1"),
        "{error}"
    );
    let mut stale = echo(2, 1);
    stale.timestamp = 10;
    let error = format!("{:#}", replica.commit(&stale).unwrap_err());
    assert!(error.contains("not after the previous 10"), "{error}");
    assert_eq!(replica.commit(&echo(2, 1)).unwrap(), vec![2]);
}

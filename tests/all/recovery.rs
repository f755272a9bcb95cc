//! Reopening at a checkpoint and replaying the log after it reproduces the run.

use carapace::imports::IoOrder;
use carapace::replica::{Checkpoint, Request};
use carapace::storage::{MemoryStorage, Storage};
use carapace::workload::{EchoWorkload, Workload};

use crate::support::*;

struct Run {
    requests: Vec<Request>,
    replies: Vec<Vec<u8>>,
    checkpoints: Vec<Checkpoint>,
    /// The storage as it was right after each checkpoint.
    images: Vec<MemoryStorage>,
    storage: MemoryStorage,
}

fn uncrashed_run(seed: u64, ops: u64) -> Run {
    let storage = MemoryStorage::new();
    let mut replica = wasm_replica(&storage, IoOrder::Seeded(seed), config(), None).unwrap();
    let mut workload = EchoWorkload::new(seed, BATCH_SIZE_LIMIT);
    let mut run = Run {
        requests: Vec::new(),
        replies: Vec::new(),
        checkpoints: Vec::new(),
        images: Vec::new(),
        storage: storage.clone(),
    };
    for _ in 0..ops {
        let request = workload.next_request(replica.op(), replica.timestamp());
        run.replies.push(replica.commit(&request).unwrap());
        if let Some(checkpoint) = replica.checkpoint_taken_at(request.op) {
            run.checkpoints.push(checkpoint.clone());
            run.images.push(storage.snapshot());
        }
        run.requests.push(request);
    }
    run
}

/// Reopen at `checkpoint` over `storage`, replay the rest of the log, and check every
/// reply and checkpoint id against the uncrashed run.
fn replay_from(run: &Run, checkpoint: &Checkpoint, storage: &MemoryStorage, order: IoOrder) {
    let mut replica = wasm_replica(storage, order, config(), Some(checkpoint.clone())).unwrap();
    assert_eq!(replica.op(), checkpoint.op);
    for (index, request) in run.requests.iter().enumerate().skip(checkpoint.op as usize) {
        let reply = replica.commit(request).unwrap();
        assert_eq!(reply, run.replies[index], "reply of op {}", request.op);
        if let Some(taken) = replica.checkpoint_taken_at(request.op) {
            let expected = run
                .checkpoints
                .iter()
                .find(|expected| expected.op == request.op)
                .unwrap();
            assert_eq!(
                taken.id(),
                expected.id(),
                "checkpoint id at op {}",
                request.op
            );
        }
    }
}

#[test]
fn replay_after_a_crash_at_each_checkpoint_reproduces_replies_and_ids() {
    let run = uncrashed_run(21, 160);
    assert_eq!(run.checkpoints.len(), 10);
    for (checkpoint, image) in run.checkpoints.iter().zip(&run.images) {
        // The crash left exactly the blocks written up to the checkpoint.
        replay_from(
            &run,
            checkpoint,
            &image.snapshot(),
            IoOrder::Seeded(checkpoint.op),
        );
    }
}

#[test]
fn replay_over_blocks_written_after_the_last_checkpoint_reproduces_them() {
    let run = uncrashed_run(22, 90);
    // The crash came 10 ops after the last checkpoint (op 80): the blocks of the
    // tables flushed since are on disk. The replay rewrites them at the same addresses
    // with the same contents.
    let checkpoint = run.checkpoints.last().unwrap();
    assert_eq!(checkpoint.op, 80);
    let before = run.storage.snapshot();
    replay_from(&run, checkpoint, &run.storage, IoOrder::Fifo);
    let mut expected = vec![0; BLOCK_SIZE as usize];
    let mut got = vec![0; BLOCK_SIZE as usize];
    for address in before.addresses() {
        before.clone().read(address, &mut expected).unwrap();
        run.storage.clone().read(address, &mut got).unwrap();
        assert_eq!(expected, got, "block {address}");
    }
    assert_eq!(before.addresses(), run.storage.addresses());
}

#[test]
fn the_previous_checkpoint_stays_intact_until_the_next_is_durable() {
    // A host whose newest superblock copy is lost falls back to the previous
    // checkpoint: the grid right after checkpoint N+1 must still hold checkpoint N.
    let run = uncrashed_run(24, 96);
    for pair in 0..run.checkpoints.len() - 1 {
        let image = run.images[pair + 1].snapshot();
        replay_from(
            &run,
            &run.checkpoints[pair],
            &image,
            IoOrder::Seeded(pair as u64),
        );
    }
}

#[test]
fn a_damaged_checkpoint_state_is_refused() {
    let run = uncrashed_run(23, 32);
    let mut damaged = run.checkpoints[0].clone();
    damaged.state[20] ^= 1;
    let error = format!(
        "{:#}",
        wasm_replica(&run.storage, IoOrder::Fifo, config(), Some(damaged)).unwrap_err()
    );
    assert!(error.contains("invalid-argument"), "{error}");
    assert!(
        error.contains("checkpoint state: checksum mismatch"),
        "{error}"
    );

    let mut truncated = run.checkpoints[0].clone();
    truncated.state.truncate(50);
    let error = format!(
        "{:#}",
        wasm_replica(&run.storage, IoOrder::Fifo, config(), Some(truncated)).unwrap_err()
    );
    assert!(error.contains("50 bytes, expected 192"), "{error}");
}

#[test]
fn a_damaged_block_anywhere_is_an_error_naming_it_never_wrong_data() {
    let run = uncrashed_run(25, 32);
    let checkpoint = run.checkpoints.last().unwrap();
    let image = run.images.last().unwrap();
    let mut open_failures = 0;
    for address in image.addresses() {
        let damaged = image.snapshot();
        assert!(damaged.corrupt(address, 90, 0x20));
        let named = |error: carapace::Error| {
            let message = corrupt_block(error);
            assert!(message.contains(&format!("address {address}")), "{message}");
        };
        // Natively: the same guest core, without compiling a component per block.
        let mut replica =
            match native_replica(&damaged, IoOrder::Fifo, config(), Some(checkpoint.clone())) {
                Ok(replica) => replica,
                Err(error) => {
                    named(error);
                    open_failures += 1;
                    continue;
                }
            };
        // Replay the log after the checkpoint; every reply must be right or the replay
        // must stop with an error naming the damaged block.
        for (index, request) in run.requests.iter().enumerate().skip(checkpoint.op as usize) {
            match replica.commit(request) {
                Ok(reply) => assert_eq!(reply, run.replies[index]),
                Err(error) => {
                    named(error);
                    break;
                }
            }
        }
    }
    // The free set, manifest log and immutable tables are read by `open`.
    assert!(
        open_failures >= 3,
        "{open_failures} damaged blocks failed open"
    );
}

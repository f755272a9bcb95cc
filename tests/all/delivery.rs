//! Batched delivery: the host hands the machine many ops in one call, and nothing the
//! machine computes depends on how ops were batched. Each op's reply and checkpoint id
//! (as the journal records them), the ops its timers fire before and its final figures
//! are the same for batches of 1, 5 and 1,024, natively and in wasm; fuel is per op;
//! and a guest that reports a delivery out of order is stopped and recovered from.

use carapace::disk::SimDisk;
use carapace::durable::{DataDir, Durable};
use carapace::imports::{HostImports, IoOrder};
use carapace::instance::Statistic;
use carapace::native::NativeInstance;
use carapace::replica::{Replica, Request};
use carapace::storage::MemoryStorage;
use carapace::wasm::{Limits, Runtime};
use carapace::workload::{EchoWorkload, KvWorkload, Workload, first_requests};
use carapace::{Error, Fault, Instance, Options};

use crate::support::*;

/// Which machine, built how.
#[derive(Clone, Copy, Debug)]
enum Machine {
    NativeEcho,
    WasmEcho,
    NativeKv,
    WasmKv,
}

impl Machine {
    fn make(self, runtime: &Runtime, imports: HostImports) -> carapace::Result<Box<dyn Instance>> {
        Ok(match self {
            Machine::NativeEcho => Box::new(NativeInstance::<carapace_echo::Echo>::new(imports)),
            Machine::NativeKv => Box::new(NativeInstance::<carapace_kv::Kv>::new(imports)),
            Machine::WasmEcho | Machine::WasmKv => {
                let bytes = match self {
                    Machine::WasmEcho => carapace::machines::ECHO_COMPONENT,
                    _ => carapace::machines::KV_COMPONENT,
                };
                Box::new(runtime.instantiate(&runtime.load(bytes)?, imports)?)
            }
        })
    }

    fn requests(self, ops: u64) -> Vec<Request> {
        let mut workload: Box<dyn Workload> = match self {
            Machine::NativeEcho | Machine::WasmEcho => {
                Box::new(EchoWorkload::new(11, BATCH_SIZE_LIMIT))
            }
            Machine::NativeKv | Machine::WasmKv => Box::new(KvWorkload::new(11, BATCH_SIZE_LIMIT)),
        };
        first_requests(workload.as_mut(), ops)
    }
}

/// What a run leaves that must not depend on how its ops were batched.
#[derive(Debug, PartialEq, Eq)]
struct Trace {
    /// Each journaled op's reply checksum and checkpoint id.
    entries: Vec<(u64, u128, Option<u128>)>,
    /// Each timer-driven `stats` message with the op it was logged at.
    timer_messages: Vec<(u64, String)>,
    statistics: Vec<Statistic>,
}

/// Commit `requests` into a new durable replica of `machine`, `group_size` at a time
/// (each group delivered in as few batches as the bounds allow).
fn trace(machine: Machine, options: &Options, requests: &[Request], group_size: usize) -> Trace {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let disk = SimDisk::new();
    let (mut durable, _) = Durable::open(
        DataDir::simulated(&disk),
        Some(options.clone()),
        IoOrder::Seeded(3),
        |imports| machine.make(&runtime, imports),
    )
    .unwrap();
    for group in requests.chunks(group_size) {
        let committed = durable.commit_group(group);
        assert!(committed.stopped.is_none(), "{:?}", committed.stopped);
        assert_eq!(committed.replies.len(), group.len());
    }
    let mut entries = Vec::new();
    durable
        .read_journal(|entry, _| {
            entries.push((entry.request.op, entry.reply_checksum, entry.checkpoint_id));
            Ok(())
        })
        .unwrap();
    let timer_messages = durable
        .replica_mut()
        .instance_mut()
        .with_imports(|imports| {
            imports
                .log_messages()
                .filter(|message| message.message.starts_with("stats"))
                .map(|message| (message.op, message.message.clone()))
                .collect()
        });
    Trace {
        entries,
        timer_messages,
        statistics: durable.replica_mut().describe().unwrap(),
    }
}

#[test]
fn batches_of_any_size_give_the_same_replies_checkpoints_timers_and_state() {
    // Echo's stats timer every 3,000 time units: several ops apart, so that it falls
    // due inside batches.
    let echo = config_with(&[("stats-interval", "3000")]);
    // Room for the workload's longest scans.
    let kv = Options {
        reply_size_limit: 64 << 10,
        ..config()
    };
    for (machine, options) in [
        (Machine::NativeEcho, echo.clone()),
        (Machine::WasmEcho, echo),
        (Machine::NativeKv, kv.clone()),
        (Machine::WasmKv, kv),
    ] {
        let requests = machine.requests(300);
        let one_by_one = trace(machine, &options, &requests, 1);
        assert_eq!(one_by_one.entries.len(), 300);
        assert!(one_by_one.entries.iter().any(|entry| entry.2.is_some()));
        if matches!(machine, Machine::NativeEcho | Machine::WasmEcho) {
            assert!(one_by_one.timer_messages.len() > 10, "{machine:?}");
        }
        for group_size in [5, 1024] {
            assert_eq!(
                trace(machine, &options, &requests, group_size),
                one_by_one,
                "{machine:?} in groups of {group_size}"
            );
        }
    }
}

const HOSTILE_LIMITS: Limits = Limits {
    fuel_per_call: 100_000_000,
    memory_bytes_max: 64 << 20,
    table_elements_max: 1 << 16,
    stack_bytes_max: 512 << 10,
    deadline_ms: 60_000,
};

fn hostile_options() -> Options {
    Options {
        settings: Vec::new(),
        ..config()
    }
}

fn hostile_request(op: u64, body: &str) -> Request {
    Request {
        client: 1,
        op,
        timestamp: op * 10,
        operation: 1,
        body: body.as_bytes().to_vec(),
    }
}

fn hostile_runtime() -> (Runtime, carapace::wasm::Component) {
    let runtime = Runtime::new(HOSTILE_LIMITS).unwrap();
    let bytes = std::fs::read(carapace_tests::HOSTILE_COMPONENT_PATH).unwrap();
    let component = runtime.load(&bytes).unwrap();
    (runtime, component)
}

#[test]
fn each_op_of_a_delivery_has_the_fuel_of_one_op_alone() {
    let (runtime, component) = hostile_runtime();
    let imports = context(&MemoryStorage::new(), IoOrder::Fifo);
    let instance = runtime.instantiate(&component, imports).unwrap();
    let mut replica = Replica::open(Box::new(instance), hostile_options(), None).unwrap();
    // Each op computes for most of one op's fuel: five in one delivery would run out
    // if the delivery shared one tank.
    let requests: Vec<_> = (1..=5).map(|op| hostile_request(op, "spin")).collect();
    let committed = replica.commit_batch(&requests);
    assert!(committed.stopped.is_none(), "{:?}", committed.stopped);
    assert_eq!(committed.replies.len(), 5);
}

#[test]
fn an_ops_fuel_is_its_own_whatever_the_op_before_it_spent() {
    // Op 1 spends over half an op's fuel committing, op 2 half as much again
    // prefetching: together they would run out. Each op's budget starts at its first
    // report, before its prefetch, so both commit: in one delivery, in two, and after a
    // restart between. (A budget carried from one op to the next would make op 2 a
    // poison op, and every request after op 1 too.)
    let (runtime, component) = hostile_runtime();
    let requests = [
        hostile_request(1, "spin"),
        hostile_request(2, "spin-in-prefetch"),
    ];
    let assert_committed = |committed: carapace::replica::Committed, replies: &[&[u8]]| {
        assert!(committed.stopped.is_none(), "{:?}", committed.stopped);
        let acknowledged: Vec<&[u8]> = committed.replies.iter().map(Vec::as_slice).collect();
        assert_eq!(acknowledged, replies);
    };
    let disk = SimDisk::new();
    let mut together = open_hostile(&runtime, &component, &disk);
    assert_committed(
        together.commit_group(&requests),
        &[b"spin", b"spin-in-prefetch"],
    );
    assert_eq!(together.rebuilds(), 0);

    let disk = SimDisk::new();
    let mut apart = open_hostile(&runtime, &component, &disk);
    assert_committed(apart.commit_group(&requests[..1]), &[b"spin"]);
    assert_committed(apart.commit_group(&requests[1..]), &[b"spin-in-prefetch"]);

    let disk = SimDisk::new();
    let mut restarted = open_hostile(&runtime, &component, &disk);
    assert_committed(restarted.commit_group(&requests[..1]), &[b"spin"]);
    drop(restarted);
    let mut restarted = open_hostile(&runtime, &component, &disk);
    assert_committed(
        restarted.commit_group(&requests[1..]),
        &[b"spin-in-prefetch"],
    );
}

#[test]
fn a_report_past_the_end_of_a_delivery_poisons_the_op_that_made_it() {
    // Its op finished, then reported the op after it, which the delivery does not
    // hold: that op's violation, not the host's panic nor an innocent op's refusal.
    let (runtime, component) = hostile_runtime();
    let disk = SimDisk::new();
    let mut durable = open_hostile(&runtime, &component, &disk);
    let requests = [
        hostile_request(1, "a"),
        hostile_request(2, "report-past-the-end"),
    ];
    let committed = durable.commit_group(&requests);
    assert_eq!(committed.replies, [b"a"]);
    match committed.stopped {
        Some(Error::Poison { op: 2, guest }) => match &guest.fault {
            Fault::Violation(violation) => assert!(
                violation.contains("`due-timer` for op 3, past the end of the delivery"),
                "{violation}"
            ),
            other => panic!("expected a violation, got {other:?}"),
        },
        other => panic!("expected op 2 to be poison, got {other:?}"),
    }
    let committed = durable.commit_group(&[hostile_request(2, "b")]);
    assert!(committed.stopped.is_none(), "{:?}", committed.stopped);
}

fn open_hostile<'a>(
    runtime: &'a Runtime,
    component: &'a carapace::wasm::Component,
    disk: &SimDisk,
) -> Durable<'a> {
    let make = move |imports| -> carapace::Result<Box<dyn Instance>> {
        Ok(Box::new(runtime.instantiate(component, imports)?))
    };
    Durable::open(
        DataDir::simulated(disk),
        Some(hostile_options()),
        IoOrder::Fifo,
        make,
    )
    .unwrap()
    .0
}

#[test]
fn a_trap_inside_a_delivery_acknowledges_the_ops_before_it_and_poisons_only_its_op() {
    let (runtime, component) = hostile_runtime();
    let disk = SimDisk::new();
    let mut durable = open_hostile(&runtime, &component, &disk);
    let bodies = ["a", "b", "c", "trap-in-commit", "d", "e"];
    let requests: Vec<_> = (1..=6)
        .map(|op| hostile_request(op, bodies[op as usize - 1]))
        .collect();
    let committed = durable.commit_group(&requests);
    assert_eq!(committed.replies, [b"a", b"b", b"c"]);
    match committed.stopped {
        Some(Error::Poison { op: 4, guest }) => {
            assert_eq!(guest.step, Some("commit"));
            assert!(matches!(guest.fault, Fault::Trap(_)), "{guest}");
        }
        other => panic!("expected op 4 to be poison, got {other:?}"),
    }
    // Rebuilt after the delivery trapped, and again after op 4 alone trapped too.
    assert_eq!((durable.rebuilds(), durable.poisoned()), (2, 1));
    // The next requests take op 4 on; all acknowledged ops survive a reopen.
    let later: Vec<_> = (4..=5)
        .map(|op| hostile_request(op, bodies[op as usize]))
        .collect();
    let committed = durable.commit_group(&later);
    assert!(committed.stopped.is_none(), "{:?}", committed.stopped);
    drop(durable);
    let durable = open_hostile(&runtime, &component, &disk);
    assert_eq!(durable.replica().op(), 5);
}

#[test]
fn a_delivery_ended_early_breaks_the_contract_and_the_rest_is_delivered_again() {
    let (runtime, component) = hostile_runtime();
    let disk = SimDisk::new();
    let mut durable = open_hostile(&runtime, &component, &disk);
    let requests: Vec<_> = ["a", "stop-delivery", "b", "c"]
        .iter()
        .enumerate()
        .map(|(index, body)| hostile_request(index as u64 + 1, body))
        .collect();
    let committed = durable.commit_group(&requests);
    assert!(committed.stopped.is_none(), "{:?}", committed.stopped);
    let replies: Vec<&[u8]> = committed.replies.iter().map(Vec::as_slice).collect();
    assert_eq!(replies, [&b"a"[..], b"stop-delivery", b"b", b"c"]);
    // Torn down once: op 3 was then delivered alone to a rebuilt instance.
    assert_eq!((durable.rebuilds(), durable.poisoned()), (1, 0));
}

#[test]
fn reports_out_of_order_break_the_contract() {
    for (body, step, says) in [
        (
            "skip-prefetched",
            "prefetch",
            "`committed` for op 1 out of order",
        ),
        (
            "skip-due-timer",
            "deliver",
            "`prefetched` for op 1 out of order",
        ),
    ] {
        let (runtime, component) = hostile_runtime();
        let imports = context(&MemoryStorage::new(), IoOrder::Fifo);
        let instance = runtime.instantiate(&component, imports).unwrap();
        let mut replica = Replica::open(Box::new(instance), hostile_options(), None).unwrap();
        match guest_fault(replica.commit(&hostile_request(1, body)).unwrap_err()) {
            (got, Fault::Violation(violation)) if got == step => {
                assert!(violation.contains(says), "{body}: {violation}")
            }
            other => panic!("{body}: expected a violation in `{step}`, got {other:?}"),
        }
    }
}

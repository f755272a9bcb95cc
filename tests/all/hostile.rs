//! Hostile components: a real component (`tests/hostile`) misbehaves on a chosen
//! request in each way a plugin could. Each time the host stops the instance with the
//! exact error, refuses the request as a poison op, and goes on: every acknowledged op
//! is intact and later requests commit correctly. Files that are not components are
//! refused at load.

use carapace::disk::SimDisk;
use carapace::durable::{DataDir, Durable};
use carapace::imports::IoOrder;
use carapace::replica::Request;
use carapace::wasm::{Component, Limits, Runtime};
use carapace::{Error, Fault, Instance, Options};

use crate::support::*;

/// Tight limits, so that a loop or a memory bomb is stopped in milliseconds.
const LIMITS: Limits = Limits {
    fuel_per_call: 100_000_000,
    memory_bytes_max: 64 << 20,
    table_elements_max: 1 << 16,
    stack_bytes_max: 512 << 10,
    deadline_ms: 60_000,
};

fn options() -> Options {
    Options {
        settings: Vec::new(),
        ..config()
    }
}

fn request(op: u64, body: &[u8]) -> Request {
    Request {
        client: 1,
        op,
        timestamp: op * 10,
        operation: 1,
        body: body.to_vec(),
    }
}

/// The hostile component, compiled under `limits`.
fn load_hostile(limits: Limits) -> (Runtime, Component) {
    let runtime = Runtime::new(limits).unwrap();
    let bytes = std::fs::read(carapace_tests::HOSTILE_COMPONENT_PATH).unwrap();
    let component = runtime.load(&bytes).unwrap();
    (runtime, component)
}

/// A durable replica of the hostile component on `disk`, created with `options` if new.
fn open_hostile<'a>(
    runtime: &'a Runtime,
    component: &'a Component,
    disk: &SimDisk,
    options: Option<Options>,
) -> Durable<'a> {
    let make = move |imports| -> carapace::Result<Box<dyn Instance>> {
        Ok(Box::new(runtime.instantiate(component, imports)?))
    };
    let (durable, _) =
        Durable::open(DataDir::simulated(disk), options, IoOrder::Fifo, make).unwrap();
    durable
}

/// Commit `good_before` good requests, then `body`, then ten more good ones; returns
/// what `body` got.
fn misbehave(body: &str, good_before: u64) -> Result<Vec<u8>, Error> {
    let (runtime, component) = load_hostile(LIMITS);
    let disk = SimDisk::new();
    let mut durable = open_hostile(&runtime, &component, &disk, Some(options()));
    for op in 1..=good_before {
        let body = format!("good {op}");
        assert_eq!(
            durable.commit(&request(op, body.as_bytes())).unwrap(),
            body.as_bytes()
        );
    }
    let outcome = durable.commit(&request(good_before + 1, body.as_bytes()));
    let next = durable.replica().op() + 1;
    for op in next..next + 10 {
        let body = format!("after {op}");
        assert_eq!(
            durable.commit(&request(op, body.as_bytes())).unwrap(),
            body.as_bytes(),
            "{body}"
        );
    }
    // Reopened, every acknowledged op is there.
    let acknowledged = durable.replica().op();
    drop(durable);
    let durable = open_hostile(&runtime, &component, &disk, None);
    assert_eq!(durable.replica().op(), acknowledged);
    outcome
}

/// Where a poison op stopped the guest (the step of its delivery, or the export) and
/// the fault; panics on any other outcome.
fn poison(body: &str, good_before: u64) -> (&'static str, Fault) {
    match misbehave(body, good_before) {
        Err(Error::Poison { op, guest }) => {
            assert_eq!(op, good_before + 1, "{body}");
            (guest.step.unwrap_or(guest.export), guest.fault)
        }
        Err(error) => panic!("{body}: expected a poison op, got {error}"),
        Ok(_) => panic!("{body}: the request was acknowledged"),
    }
}

fn assert_trap(body: &str, export: &str, says: &str) {
    match poison(body, 5) {
        (got, Fault::Trap(trap)) if got == export => {
            assert!(trap.contains(says), "{body}: {trap}")
        }
        other => panic!("{body}: expected a trap in `{export}`, got {other:?}"),
    }
}

fn assert_violation(body: &str, export: &str, says: &str) {
    assert_violation_after(body, 5, export, says);
}

fn assert_violation_after(body: &str, good_before: u64, export: &str, says: &str) {
    match poison(body, good_before) {
        (got, Fault::Violation(violation)) if got == export => {
            assert!(violation.contains(says), "{body}: {violation}")
        }
        other => panic!("{body}: expected a violation in `{export}`, got {other:?}"),
    }
}

#[test]
fn an_infinite_loop_runs_out_of_fuel() {
    assert_trap("loop", "commit", "fuel");
}

#[test]
fn a_memory_bomb_hits_the_memory_limit() {
    assert_trap(
        "memory-bomb",
        "commit",
        "exceeds its limit of 67108864 bytes",
    );
}

#[test]
fn deep_recursion_exhausts_the_stack() {
    assert_trap("recursion", "commit", "call stack exhausted");
}

#[test]
fn traps_in_commit_and_in_a_completion_are_caught() {
    assert_trap("trap-in-commit", "commit", "unreachable");
    // The read was the prefetch's: the trap is in `read-done`, during the prefetch.
    assert_trap("trap-in-read-done", "prefetch", "unreachable");
}

#[test]
fn io_outside_the_rules_breaks_the_contract() {
    assert_violation(
        "io-from-commit",
        "commit",
        "grid I/O outside an asynchronous step",
    );
    assert_violation(
        "two-ios-on-one-address",
        "prefetch",
        "second I/O on grid address 1",
    );
    assert_violation(
        "past-last-address",
        "prefetch",
        &format!("grid address {} outside 1..={BLOCK_COUNT}", BLOCK_COUNT + 1),
    );
    assert_violation(
        "wrong-block-size",
        "prefetch",
        &format!("write of {} bytes", BLOCK_SIZE - 1),
    );
    assert_violation(
        "pending-with-nothing",
        "prefetch",
        "pending with no I/O in flight",
    );
    // The last address is in the grid: allowed.
    assert_eq!(misbehave("last-address", 5).unwrap(), b"last-address");
}

#[test]
fn floods_are_bounded() {
    assert_violation("timer-flood", "prefetch", "more than 64 timers armed");
    // Log messages are cut and the oldest dropped: the request is served.
    assert_eq!(misbehave("log-flood", 5).unwrap(), b"log-flood");
}

#[test]
fn oversized_outputs_break_the_contract() {
    assert_violation(
        "huge-reply",
        "commit",
        &format!("over the reply size limit of {REPLY_SIZE_LIMIT} bytes"),
    );
    // Op 16 ends a checkpoint interval: the state is asked for after it.
    assert_violation_after(
        "huge-checkpoint-state",
        15,
        "checkpoint-state",
        "a checkpoint state of 1048576 bytes",
    );
}

#[test]
fn files_that_are_not_components_are_refused_at_load() {
    let directory = std::env::temp_dir();
    let error = carapace::machines::read_component(&directory).unwrap_err();
    assert!(
        matches!(&error, Error::Refused(reason) if reason.contains("not a regular file")),
        "{error}"
    );
    let runtime = Runtime::new(LIMITS).unwrap();
    for bytes in [
        &b""[..],
        &[0x00, 0x61, 0x73, 0x6d, 0xff, 0xff, 0xff, 0xff][..],
    ] {
        let error = runtime.load(bytes).unwrap_err();
        assert!(
            matches!(&error, Error::Refused(reason) if reason.contains("compiling the component")),
            "{error}"
        );
    }
    // A component that exports `machine` with the wrong types instantiates to an error.
    let wrong_export = wat::parse_str(
        r#"(component
            (core module $m (func (export "f")))
            (core instance $i (instantiate $m))
            (func $f (canon lift (core func $i "f")))
            (instance $machine (export "init" (func $f)))
            (export "carapace:state-machine/machine@0.5.0" (instance $machine))
        )"#,
    )
    .unwrap();
    let component = runtime.load(&wrong_export).unwrap();
    let imports = context(&carapace::storage::MemoryStorage::new(), IoOrder::Fifo);
    let error = runtime.instantiate(&component, imports).unwrap_err();
    assert!(
        matches!(&error, Error::Refused(reason) if reason.contains("instantiating the component")),
        "{error}"
    );
}

#[test]
fn the_wall_clock_deadline_is_a_host_fault_that_stops_the_replica() {
    // Fuel enough for minutes: only the deadline ends the loop.
    let limits = Limits {
        fuel_per_call: u64::MAX,
        deadline_ms: 200,
        ..LIMITS
    };
    let (runtime, component) = load_hostile(limits);
    let disk = SimDisk::new();
    let mut durable = open_hostile(&runtime, &component, &disk, Some(options()));
    durable.commit(&request(1, b"good")).unwrap();
    match guest_fault(durable.commit(&request(2, b"loop")).unwrap_err()) {
        ("commit", Fault::Deadline(message)) => assert!(message.contains("200 ms"), "{message}"),
        other => panic!("expected the deadline, got {other:?}"),
    }
    // Not a poison op: the same request might finish on a faster machine. The replica
    // stops until reopened, which recovers every acknowledged op.
    assert_eq!(durable.poisoned(), 0);
    let error = durable.commit(&request(2, b"good")).unwrap_err();
    assert!(matches!(error, Error::Stopped(_)), "{error}");
    drop(durable);
    let mut durable = open_hostile(&runtime, &component, &disk, None);
    assert_eq!(durable.replica().op(), 1);
    durable.commit(&request(2, b"good")).unwrap();
}

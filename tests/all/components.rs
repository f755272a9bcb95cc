//! Components that do not fit the world, or misbehave, are refused with clear errors.

use carapace::imports::IoOrder;
use carapace::replica::Replica;
use carapace::storage::MemoryStorage;
use carapace::wasm::{Limits, Runtime};

use crate::support::*;

fn load_error(bytes: &[u8]) -> String {
    let runtime = Runtime::new(Limits::default()).unwrap();
    refused(runtime.load(bytes).unwrap_err())
}

#[test]
fn a_component_importing_outside_the_world_is_refused_naming_the_import() {
    let component = wat::parse_str(
        r#"(component
            (import "wasi:clocks/wall-clock@0.2.0" (instance
                (export "now" (func (result u64)))))
        )"#,
    )
    .unwrap();
    let error = load_error(&component);
    assert!(
        error.contains("imports `wasi:clocks/wall-clock@0.2.0`"),
        "{error}"
    );
    assert!(
        error.contains("outside the `state-machine` world"),
        "{error}"
    );
}

#[test]
fn bytes_that_are_not_a_component_are_refused() {
    let error = load_error(b"definitely not wasm");
    assert!(error.contains("compiling the component"), "{error}");
    let core_module = wat::parse_str("(module)").unwrap();
    let error = load_error(&core_module);
    assert!(error.contains("compiling the component"), "{error}");
}

#[test]
fn a_component_without_the_machine_export_is_refused() {
    let runtime = Runtime::new(Limits::default()).unwrap();
    let component = runtime
        .load(&wat::parse_str("(component)").unwrap())
        .unwrap();
    let context = context(&MemoryStorage::new(), IoOrder::Fifo);
    let error = format!(
        "{:#}",
        runtime.instantiate(&component, context).unwrap_err()
    );
    assert!(error.contains("instantiating the component"), "{error}");
    assert!(
        error.contains("carapace:state-machine/machine@0.5.0"),
        "{error}"
    );
}

#[test]
fn a_guest_out_of_fuel_traps_with_an_error_not_a_panic() {
    let limits = Limits {
        fuel_per_call: 1_000,
        ..Limits::default()
    };
    let runtime = Runtime::new(limits).unwrap();
    let component = runtime.load(carapace::machines::ECHO_COMPONENT).unwrap();
    let machine = runtime
        .instantiate(&component, context(&MemoryStorage::new(), IoOrder::Fifo))
        .unwrap();
    let error = Replica::open(Box::new(machine), config(), None).unwrap_err();
    match guest_fault(error) {
        ("init", carapace::Fault::Trap(trap)) => assert!(trap.contains("fuel"), "{trap}"),
        other => panic!("expected a trap in `init`, got {other:?}"),
    }
}

#[test]
fn without_fuel_metering_a_guest_computes_the_same_state() {
    let checkpoint = |fuel_per_call| {
        let runtime = Runtime::new(Limits {
            fuel_per_call,
            ..Limits::default()
        })
        .unwrap();
        let component = runtime.load(carapace::machines::ECHO_COMPONENT).unwrap();
        let machine = runtime
            .instantiate(
                &component,
                context(&MemoryStorage::new(), IoOrder::Seeded(5)),
            )
            .unwrap();
        let mut replica = Replica::open(Box::new(machine), config(), None).unwrap();
        carapace::workload::run(
            &mut replica,
            &mut carapace::workload::EchoWorkload::new(5, BATCH_SIZE_LIMIT),
            64,
        )
        .unwrap();
        replica.checkpoint().unwrap().id()
    };
    assert_eq!(checkpoint(0), checkpoint(Limits::default().fuel_per_call));
}

#[test]
fn a_guest_over_its_memory_limit_traps_with_an_error() {
    let limits = Limits {
        // Room to instantiate (about 1 MiB of stack and data), not for the 1 MiB block
        // cache and the rest that `init` allocates.
        memory_bytes_max: 2 << 20,
        ..Limits::default()
    };
    let runtime = Runtime::new(limits).unwrap();
    let component = runtime.load(carapace::machines::ECHO_COMPONENT).unwrap();
    let result = runtime
        .instantiate(&component, context(&MemoryStorage::new(), IoOrder::Fifo))
        .and_then(|machine| Replica::open(Box::new(machine), config(), None));
    match guest_fault(result.unwrap_err()) {
        ("init", carapace::Fault::Trap(trap)) => {
            assert!(trap.contains("guest memory growing to"), "{trap}");
            assert!(
                trap.contains("exceeds its limit of 2097152 bytes"),
                "{trap}"
            );
        }
        other => panic!("expected a trap in `init`, got {other:?}"),
    }
}

#[test]
fn bad_options_are_refused_by_the_guest_with_the_reason() {
    for (settings, expected) in [
        (vec![("bar-ops", "3")], "setting `bar-ops`: 3"),
        (
            vec![("no-such-setting", "1")],
            "unknown setting `no-such-setting`",
        ),
    ] {
        let error = refused(
            wasm_replica(
                &MemoryStorage::new(),
                IoOrder::Fifo,
                config_with(&settings),
                None,
            )
            .unwrap_err(),
        );
        assert!(error.contains("refuses the options"), "{error}");
        assert!(error.contains(expected), "{error}");
    }
    let mut bad_block_size = config();
    bad_block_size.block_size = 1000;
    let error = refused(
        wasm_replica(&MemoryStorage::new(), IoOrder::Fifo, bad_block_size, None).unwrap_err(),
    );
    assert!(error.contains("block size 1000"), "{error}");
}

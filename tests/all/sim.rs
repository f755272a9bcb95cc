//! The simulator: a smoke sweep of both machines passes (or ends "detected" where a
//! fault hit the only copy of a block) while every kind of fault, crashes, restarts and
//! damaged superblock copies happen; the same seed gives the same trace; and two
//! deliberately broken variants — a guest that lets I/O completion order leak into its
//! state, a host that skips the journal's sync — are each caught by a checker, with a
//! command that reproduces the failure.

use std::collections::BTreeMap;

use carapace::cli::{Cli, exit_status};
use carapace::disk::FaultKind;
use carapace::machines::{ECHO_ORDER_LEAK_COMPONENT_PATH, Factory, Source};
use carapace::sim::{SimConfig, SimReport, Verdict, simulate};
use carapace::wasm::Limits;
use clap::Parser;

/// Seeds and ops of the smoke sweep: seconds, and enough for every fault kind to strike.
const SMOKE_SEEDS: u64 = 40;
const SMOKE_OPS: u64 = 200;

fn factory(machine: &str) -> Factory {
    Factory::load(&Source::Embedded(machine.into()), Limits::default()).unwrap()
}

fn simulate_seed(factory: &Factory, machine: &str, seed: u64) -> SimReport {
    simulate(
        &SimConfig::from_seed(seed, machine, SMOKE_OPS),
        factory.as_fn(),
    )
}

/// Run `carapace ARGS`: its output, and the exit status of its error if it failed.
fn carapace(args: &[&str]) -> (String, Option<u8>) {
    let cli = Cli::try_parse_from(["carapace"].iter().chain(args)).unwrap();
    let mut out = Vec::new();
    let status = cli
        .execute_to(&mut out)
        .err()
        .map(|error| exit_status(&error));
    (String::from_utf8(out).unwrap(), status)
}

#[test]
fn a_smoke_sweep_of_both_machines_passes_through_every_kind_of_fault() {
    let mut faults = BTreeMap::new();
    let (mut crashes, mut restarts, mut damaged, mut detected, mut checkpoints) = (0, 0, 0, 0, 0);
    for machine in ["echo", "kv"] {
        let factory = factory(machine);
        for seed in 0..SMOKE_SEEDS {
            let report = simulate_seed(&factory, machine, seed);
            match &report.verdict {
                Verdict::Passed => assert_eq!(report.ops_acknowledged, SMOKE_OPS),
                Verdict::Detected { .. } => detected += 1,
                Verdict::Failed { .. } => panic!(
                    "{}; rerun: carapace sim --seed {seed} --ops {SMOKE_OPS} --machine {machine}",
                    report.verdict
                ),
            }
            for (kind, count) in &report.faults {
                *faults.entry(*kind).or_insert(0) += count;
            }
            crashes += report.crashes;
            restarts += report.restarts_after_errors;
            damaged += report.superblock_copies_damaged;
            checkpoints += report.checkpoints_checked;
        }
    }
    for kind in FaultKind::ALL {
        assert!(
            faults.get(&kind).is_some_and(|count| *count > 0),
            "no {kind:?} in {faults:?}"
        );
    }
    assert!(crashes > 100, "{crashes} crashes");
    assert!(restarts > 10, "{restarts} restarts after I/O errors");
    assert!(damaged > 10, "{damaged} superblock copies damaged");
    assert!(checkpoints > 1000, "{checkpoints} checkpoints compared");
    assert!(
        detected < 2 * SMOKE_SEEDS / 3,
        "{detected} of {} seeds ended detected: faults too dense to test much else",
        2 * SMOKE_SEEDS
    );
    assert!(detected > 0, "no fault ever hit the only copy of a block");
}

#[test]
fn the_same_seed_gives_the_same_trace_and_other_seeds_other_traces() {
    let factory = factory("kv");
    let first = simulate_seed(&factory, "kv", 11);
    assert_eq!(simulate_seed(&factory, "kv", 11), first);
    let hashes: std::collections::BTreeSet<u128> = (0..8)
        .map(|seed| simulate_seed(&factory, "kv", seed).trace_hash)
        .collect();
    assert_eq!(hashes.len(), 8);

    // The command prints it, the same both times (but for the wall time).
    let args = ["sim", "--seed", "11", "--ops", "200", "--machine", "kv"];
    let (out, status) = carapace(&args);
    assert_eq!(status, None, "{out}");
    assert!(
        out.contains(&format!("trace {:032x}", first.trace_hash)),
        "{out}"
    );
    let untimed = |out: &str| {
        out.lines()
            .filter(|line| !line.ends_with(" s"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(untimed(&carapace(&args).0), untimed(&out));
}

/// Check that a sweep with `args` fails with exit status 1, naming `checker` in a line
/// with a rerun command, and that the rerun fails the same way.
fn caught_with_a_reproducing_command(args: &[&str], checkers: &[&str]) {
    let (out, status) = carapace(args);
    assert_eq!(status, Some(1), "{out}");
    let line = out
        .lines()
        .find(|line| line.contains("; rerun: carapace sim --seed "))
        .unwrap_or_else(|| panic!("no failing seed in {out}"));
    assert!(
        checkers
            .iter()
            .any(|checker| line.contains(&format!("failed: {checker}: "))),
        "{line}"
    );
    let (verdict, rerun) = line.split_once("; rerun: ").unwrap();
    let rerun: Vec<&str> = rerun.split(' ').skip(1).collect();
    let (again, status) = carapace(&rerun);
    assert_eq!(status, Some(1), "{again}");
    let failed = verdict
        .split_once(' ')
        .unwrap()
        .1
        .split_once(' ')
        .unwrap()
        .1;
    assert!(
        again.contains(&format!("verdict: {failed}")),
        "{again}\ndoes not repeat\n{failed}"
    );
}

#[test]
fn a_guest_that_lets_completion_order_leak_into_state_is_caught() {
    let seeds = SMOKE_SEEDS.to_string();
    caught_with_a_reproducing_command(
        &[
            "sim",
            "--seeds",
            &seeds,
            "--ops",
            "200",
            "--module",
            ECHO_ORDER_LEAK_COMPONENT_PATH,
        ],
        &["checkpoint", "fault-free run"],
    );
}

#[test]
fn a_host_that_skips_the_journal_sync_is_caught() {
    let seeds = SMOKE_SEEDS.to_string();
    caught_with_a_reproducing_command(
        &[
            "sim",
            "--seeds",
            &seeds,
            "--ops",
            "200",
            "--broken-skip-journal-sync",
        ],
        &["recovery", "durability"],
    );
}

#[test]
fn bad_arguments_are_refused_with_the_reason() {
    let refused = |args: &[&str]| {
        let cli = Cli::try_parse_from(["carapace"].iter().chain(args));
        match cli {
            Err(error) => error.to_string(),
            Ok(cli) => format!("{:#}", cli.execute_to(&mut std::io::sink()).unwrap_err()),
        }
    };
    assert!(refused(&["sim", "--seeds", "0"]).contains("`--seeds` must be at least 1"));
    assert!(refused(&["sim", "--ops", "0"]).contains("`--ops` must be at least 1"));
    assert!(refused(&["sim", "--seed", "1", "--seeds", "2"]).contains("cannot be used with"));
    assert!(refused(&["sim", "--from", "3"]).contains("--seeds"));
    let error = refused(&["sim", "--module", carapace_tests::HOSTILE_COMPONENT_PATH]);
    assert!(
        error.contains("the simulator has workloads for `echo` and `kv`"),
        "{error}"
    );
    assert!(refused(&["sim", "--machine", "nope"]).contains("nope"));
}

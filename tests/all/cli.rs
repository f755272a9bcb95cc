//! The command line: bad arguments give clear errors; good ones run.

use carapace::cli::Cli;
use clap::Parser;

fn run(args: &[&str]) -> Result<(), String> {
    let cli =
        Cli::try_parse_from(["carapace"].iter().chain(args)).map_err(|error| error.to_string())?;
    cli.execute_to(&mut std::io::sink())
        .map_err(|error| format!("{error:#}"))
}

fn error_of(args: &[&str]) -> String {
    run(args).unwrap_err()
}

#[test]
fn a_small_run_succeeds_on_both_targets() {
    run(&["run", "--ops", "64", "--checkpoint-interval", "32"]).unwrap();
    run(&["run", "--ops", "64", "--target", "native"]).unwrap();
    run(&["bench", "--ops", "64", "--checkpoint-interval", "32"]).unwrap();
}

#[test]
fn bad_arguments_are_refused_with_the_reason() {
    let error = error_of(&["run", "--setting", "bar-ops"]);
    assert!(
        error.contains("setting `bar-ops` is not of the form NAME=VALUE"),
        "{error}"
    );
    let error = error_of(&["run", "--ops", "8", "--setting", "bar-ops=3"]);
    assert!(
        error.contains("setting `bar-ops`: 3 is not a power of two"),
        "{error}"
    );
    let error = error_of(&["run", "--group-size", "0"]);
    assert!(error.contains("--group-size"), "{error}");
    let error = error_of(&[
        "run",
        "--ops",
        "8",
        "--body-size",
        "100",
        "--batch-size-limit",
        "64",
    ]);
    assert!(
        error.contains("--body-size 100 is above the batch size limit 64"),
        "{error}"
    );
    let error = error_of(&["run", "--ops", "8", "--machine", "kv", "--body-size", "64"]);
    assert!(
        error.contains("--body-size is for the echo workload"),
        "{error}"
    );
    let error = error_of(&["run", "--module", "/no/such/module.wasm"]);
    assert!(error.contains("reading `/no/such/module.wasm`"), "{error}");
    let error = error_of(&["run", "--target", "native", "--module", "x.wasm"]);
    assert!(error.contains("drop `--module`"), "{error}");
    let error = error_of(&["run", "--ops", "8", "--checkpoint-interval", "0"]);
    assert!(
        error.contains("checkpoint interval must be at least one op"),
        "{error}"
    );
    let error = error_of(&["run", "--ops", "8", "--checkpoint-interval", "6"]);
    assert!(
        error.contains(
            "checkpoint interval of 6 ops is not a positive multiple of the bar of 32 ops"
        ),
        "{error}"
    );
    let error = error_of(&["run", "--ops", "many"]);
    assert!(error.contains("invalid value 'many'"), "{error}");
    let error = error_of(&["fly"]);
    assert!(error.contains("unrecognized subcommand 'fly'"), "{error}");
}

#[test]
fn a_module_that_is_not_a_component_is_refused() {
    let path = std::env::temp_dir().join(format!(
        "carapace-not-a-component-{}.wasm",
        std::process::id()
    ));
    std::fs::write(&path, b"\0asm garbage").unwrap();
    let error = error_of(&["run", "--module", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    assert!(error.contains("compiling the component"), "{error}");
}

fn temp_path(name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("carapace-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    let _ = std::fs::remove_file(&path);
    path
}

#[test]
fn the_kv_machine_runs_recovers_replays_and_inspects_by_name() {
    let dir = temp_path("kv");
    let path = dir.to_str().unwrap();
    let args = ["--machine", "kv", "--setting", "lsm-profile=test"];
    let run_kv = |ops: &str| {
        let mut all = vec![
            "run",
            "--ops",
            ops,
            "--data",
            path,
            "--checkpoint-interval",
            "16",
        ];
        all.extend(args);
        run(&all)
    };
    run_kv("100").unwrap();
    // The directory names its machine: later commands default to it.
    run(&["run", "--ops", "50", "--data", path]).unwrap();
    run(&["replay", path]).unwrap();
    run(&["replay", path, "--from-checkpoint"]).unwrap();
    run(&["replay", path, "--target", "native"]).unwrap();
    let report = carapace::cli::inspect::inspect(&dir, &Default::default()).unwrap();
    assert_eq!(report.machine.name, "kv");
    assert_eq!(report.journal_ops, 150);
    let tables = report
        .statistics
        .iter()
        .find(|statistic| statistic.name == "tree 1 tables per level")
        .unwrap();
    assert!(
        tables.values.iter().sum::<u64>() > 0,
        "{:?}",
        report.statistics
    );
    // Another machine is refused, naming both, by every command.
    for command in [
        vec!["run", "--ops", "1", "--data", path, "--machine", "echo"],
        vec!["replay", path, "--machine", "echo"],
    ] {
        let error = error_of(&command);
        assert!(
            error.contains("machine `kv`") && error.contains("machine `echo`"),
            "{error}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn requests_from_a_file_are_committed_and_bad_files_refused() {
    let dir = temp_path("requests-dir");
    let file = temp_path("requests.txt");
    let put = format!("{}{}", "01".repeat(16), "ab".repeat(64));
    let get = "01".repeat(16);
    std::fs::write(
        &file,
        format!("# a put, a get, an unknown operation\n7 1 {put}\n7 3 {get}\n\n7 9 -\n"),
    )
    .unwrap();
    let file_arg = file.to_str().unwrap();
    let dir_arg = dir.to_str().unwrap();
    run(&[
        "run",
        "--machine",
        "kv",
        "--requests",
        file_arg,
        "--data",
        dir_arg,
    ])
    .unwrap();
    let report = carapace::cli::inspect::inspect(&dir, &Default::default()).unwrap();
    // The refused request is not journaled.
    assert_eq!(report.journal_ops, 2);
    for (text, expected) in [
        ("1 1\n", "line 1: `1 1` is not `CLIENT OPERATION BODY`"),
        ("x 1 -\n", "line 1: client `x` is not a number"),
        (
            "1 300 -\n",
            "line 1: operation `300` is not a number in 0..=255",
        ),
        ("# ok\n1 1 abc\n", "line 2: the body is not hex"),
        ("1 1 zz\n", "`zz` is not a hex byte"),
    ] {
        std::fs::write(&file, text).unwrap();
        let error = error_of(&["run", "--requests", file_arg]);
        assert!(error.contains(expected), "{text:?}: {error}");
    }
    let error = error_of(&["run", "--requests", "/no/such/requests"]);
    assert!(error.contains("reading `/no/such/requests`"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn a_machine_by_name_must_exist() {
    let error = error_of(&["run", "--machine", "ledger", "--ops", "1"]);
    assert!(
        error.contains("no embedded machine is named `ledger` (there are: echo, kv)"),
        "{error}"
    );
    let error = error_of(&["run", "--machine", "kv", "--module", "x.wasm"]);
    assert!(error.contains("give one"), "{error}");
}

#[test]
fn a_guest_that_traps_on_one_request_refuses_it_and_the_run_goes_on() {
    let dir = temp_path("poison-dir");
    let file = temp_path("poison.txt");
    let hex = |text: &str| {
        text.bytes()
            .map(|byte| format!("{byte:02x}"))
            .collect::<String>()
    };
    let mut lines = String::new();
    for index in 0..40 {
        let body = if index == 25 {
            "poison pill".to_string()
        } else {
            format!("request {index}")
        };
        lines.push_str(&format!("1 1 {}\n", hex(&body)));
    }
    std::fs::write(&file, lines).unwrap();
    let module = carapace::machines::ECHO_POISON_COMPONENT_PATH;
    let (dir_arg, file_arg) = (dir.to_str().unwrap(), file.to_str().unwrap());
    run(&[
        "run",
        "--module",
        module,
        "--requests",
        file_arg,
        "--data",
        dir_arg,
        "--checkpoint-interval",
        "16",
        "--setting",
        "lsm-profile=test",
    ])
    .unwrap();
    // 39 acknowledged: the poison request was refused, never journaled.
    let report = carapace::cli::inspect::inspect(&dir, &Default::default()).unwrap();
    assert_eq!(report.journal_ops, 39);
    // Every acknowledged reply replays identically, with the same module or another.
    run(&["replay", dir_arg, "--module", module]).unwrap();
    run(&["replay", dir_arg, "--machine", "echo"]).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn options_no_machine_can_run_create_no_directory_on_either_target() {
    for (flags, expected) in [
        (
            vec!["--grid-blocks", "4294967296"],
            "a grid of 4294967296 blocks is not in 1..=1073741824",
        ),
        (
            vec!["--grid-blocks", "9223372036854775807"],
            "cannot be addressed",
        ),
        (
            vec!["--checkpoint-interval", "3"],
            "checkpoint interval of 3 ops is not a positive multiple of the bar of 32 ops",
        ),
    ] {
        let mut messages = Vec::new();
        for target in ["wasm", "native"] {
            let dir = temp_path(&format!("options-{target}"));
            let mut args = vec!["run", "--ops", "1", "--target", target, "--data"];
            args.push(dir.to_str().unwrap());
            args.extend(&flags);
            let error = error_of(&args);
            assert!(error.contains(expected), "{target} {flags:?}: {error}");
            // Nothing recorded: the next run with good options creates it afresh.
            assert!(!carapace::os::data_dir_exists(&dir), "{target} {flags:?}");
            let _ = std::fs::remove_dir_all(&dir);
            messages.push(error);
        }
        assert_eq!(messages[0], messages[1], "{flags:?}");
    }
}

#[test]
fn a_journal_cut_below_the_checkpoint_is_an_error_in_every_command() {
    let dir = temp_path("cut-journal");
    let path = dir.to_str().unwrap();
    let flags = [
        "--setting",
        "lsm-profile=test",
        "--checkpoint-interval",
        "16",
    ];
    let mut args = vec!["run", "--ops", "40", "--data", path];
    args.extend(flags);
    run(&args).unwrap();
    // The published checkpoint is at op 32; keep only about the first half of the log.
    let journal = dir.join("journal");
    let length = std::fs::metadata(&journal).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .unwrap()
        .set_len(length / 2)
        .unwrap();
    for command in [
        vec!["inspect", path],
        vec!["replay", path],
        vec!["replay", path, "--from-checkpoint"],
        vec!["run", "--ops", "1", "--data", path],
    ] {
        let error = error_of(&command);
        assert!(
            error.contains("before the checkpoint at op 32"),
            "{command:?}: {error}"
        );
    }
    // Nothing was cut or written by any of them.
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), length / 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_report_goes_where_it_is_asked_to() {
    let cli = Cli::try_parse_from([
        "carapace",
        "run",
        "--ops",
        "32",
        "--checkpoint-interval",
        "32",
    ])
    .unwrap();
    let mut report = Vec::new();
    cli.execute_to(&mut report).unwrap();
    let report = String::from_utf8(report).unwrap();
    assert!(report.contains("ops         32"), "{report}");
    assert!(report.contains("checkpoint  op 32 id "), "{report}");
}

#[test]
fn component_writes_the_embedded_bytes_and_refuses_bad_arguments() {
    let path = std::env::temp_dir().join(format!("carapace-kv-{}.wasm", std::process::id()));
    run(&[
        "component",
        "--machine",
        "kv",
        "--output",
        path.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        carapace::machines::KV_COMPONENT
    );
    std::fs::remove_file(&path).unwrap();
    let error = error_of(&["component", "--machine", "nope", "--output", "/tmp/x.wasm"]);
    assert!(
        error.contains("no embedded machine is named `nope`"),
        "{error}"
    );
    let error = error_of(&["component", "--output", "/no/such/dir/echo.wasm"]);
    assert!(
        error.contains("writing `/no/such/dir/echo.wasm`"),
        "{error}"
    );
}

#[test]
fn bench_reports_every_engine_and_the_ratios_as_json() {
    let cli = Cli::try_parse_from([
        "carapace",
        "bench",
        "--machine",
        "kv",
        "--ops",
        "64",
        "--checkpoint-interval",
        "32",
        "--json",
    ])
    .unwrap();
    let mut out = Vec::new();
    cli.execute_to(&mut out).unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let engines: Vec<&str> = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["engine"].as_str().unwrap())
        .collect();
    assert_eq!(engines, ["native", "wasm", "wasm without fuel"]);
    let checkpoints: Vec<&serde_json::Value> = report["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| &run["checkpoint"])
        .collect();
    assert!(checkpoints[0]["op"] == 64 && checkpoints.iter().all(|c| *c == checkpoints[0]));
    for ratio in ["wasm_over_native", "wasm_without_fuel_over_native"] {
        assert!(report[ratio].as_f64().unwrap() > 0.0, "{report}");
    }
}

#[test]
fn bench_scale_times_each_power_of_ten_and_reports_the_space_used() {
    let cli = Cli::try_parse_from([
        "carapace",
        "bench",
        "--scale",
        "--ops",
        "120000",
        "--body-size",
        "64",
        "--json",
    ])
    .unwrap();
    let mut out = Vec::new();
    cli.execute_to(&mut out).unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    for run in report["runs"].as_array().unwrap() {
        let stops: Vec<u64> = run["segments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|segment| segment["to_op"].as_u64().unwrap())
            .collect();
        assert_eq!(stops, [10_000, 100_000, 120_000], "{report}");
        // One segment from op 100,000 on: its rate over itself.
        assert_eq!(run["flatness"].as_f64(), Some(1.0), "{report}");
        assert_eq!(run["checkpoint"], report["runs"][0]["checkpoint"]);
    }
    // Echo stores 72 bytes of values an op (a Thing and two index entries); full
    // tables keep the grid within a small factor of that.
    let space = &report["space"];
    assert_eq!(space["value_bytes_stored"].as_u64(), Some(120_000 * 72));
    let ratio = space["grid_over_values"].as_f64().unwrap();
    assert!((1.0..2.5).contains(&ratio), "{report}");
}

#[test]
fn bench_matrix_quick_runs_every_cell_and_writes_a_chart() {
    let chart = std::env::temp_dir().join(format!("carapace-chart-{}.svg", std::process::id()));
    let cli = Cli::try_parse_from([
        "carapace",
        "bench",
        "--matrix",
        "--quick",
        "--rounds",
        "2",
        "--json",
        "--chart",
        chart.to_str().unwrap(),
    ])
    .unwrap();
    let mut out = Vec::new();
    cli.execute_to(&mut out).unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let cells = report["cells"].as_array().unwrap();
    // Five body sizes, each by native and wasm over memory and a data directory, and
    // by fjall.
    assert_eq!(cells.len(), 25, "{report}");
    for cell in cells {
        assert!(cell["ops"].as_u64().unwrap() > 0, "{cell}");
        assert!(cell["ops_per_second"].as_f64().unwrap() > 0.0, "{cell}");
        assert!(cell["latency_p99_us"].as_f64() >= cell["latency_p50_us"].as_f64());
        // Each cell is its fastest round of two.
        let rounds: Vec<f64> = cell["rounds_ops_per_second"]
            .as_array()
            .unwrap()
            .iter()
            .map(|rate| rate.as_f64().unwrap())
            .collect();
        assert_eq!(rounds.len(), 2, "{cell}");
        let fastest = rounds.iter().copied().fold(0.0, f64::max);
        assert_eq!(cell["ops_per_second"].as_f64().unwrap(), fastest, "{cell}");
    }
    for ratios in report["ratios"].as_array().unwrap() {
        assert!(
            ratios["wasm_over_native"].as_f64().unwrap() > 0.0,
            "{ratios}"
        );
        assert!(
            ratios["wasm_over_fjall"].as_f64().unwrap() > 0.0,
            "{ratios}"
        );
    }
    for copy in ["memcpy_bytes_per_second", "into_sandbox_bytes_per_second"] {
        assert!(report[copy].as_f64().unwrap() > 0.0, "{report}");
    }
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("fjall (files, no fsync)"));
    assert_eq!(svg.matches("<polyline").count(), 5);
    std::fs::remove_file(&chart).unwrap();

    let error = error_of(&["bench", "--quick"]);
    assert!(error.contains("--matrix"), "{error}");
    let error = error_of(&["bench", "--matrix", "--machine", "kv"]);
    assert!(
        error.contains("--matrix measures the echo machine"),
        "{error}"
    );
    for rounds in ["0", "101", "three"] {
        let error = error_of(&["bench", "--matrix", "--quick", "--rounds", rounds]);
        assert!(error.contains("--rounds"), "{rounds}: {error}");
    }
    let error = error_of(&["bench", "--rounds", "2"]);
    assert!(error.contains("--matrix"), "{error}");
    // A body size would be ignored by the matrix, which measures its own.
    let error = error_of(&["bench", "--matrix", "--quick", "--body-size", "64"]);
    assert!(
        error.contains("--matrix runs bodies of every size"),
        "{error}"
    );
}

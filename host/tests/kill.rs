//! A real `carapace` process killed with SIGKILL mid-run, several times: every op its
//! journal holds (every acknowledged op) is recovered, and the log replays identically.
//! This test lives beside the binary it spawns (`CARGO_BIN_EXE_carapace`); the other
//! integration tests are in `tests/`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use carapace::cli::inspect::inspect;

const ARGS: [&str; 8] = [
    "--target",
    "native",
    "--setting",
    "lsm-profile=test",
    "--checkpoint-interval",
    "16",
    "--batch-size-limit",
    "64",
];

fn carapace(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_carapace"));
    command
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

fn journal_length(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("journal")).map_or(0, |metadata| metadata.len())
}

#[test]
fn a_process_killed_mid_run_recovers_every_journaled_op() {
    let dir = std::env::temp_dir().join(format!("carapace-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.to_str().unwrap();
    let mut journaled = 0;
    for round in 0..3 {
        let start = journal_length(&dir);
        let mut args = vec!["run", "--ops", "10000000", "--data", path];
        args.extend(ARGS);
        let mut child = carapace(&args).spawn().unwrap();
        // Kill it once it has journaled a good number of ops past where it started
        // (it is far from done: it was asked for ten million).
        let deadline = Instant::now() + Duration::from_secs(30);
        while journal_length(&dir) < start + 50_000 {
            assert!(
                Instant::now() < deadline,
                "round {round}: the run made no progress"
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "round {round}: the run ended early"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let report = inspect(&dir, &Default::default()).unwrap();
        assert!(
            report.journal_ops > journaled,
            "round {round}: {} ops after {journaled}",
            report.journal_ops
        );
        journaled = report.journal_ops;
    }

    // Recovery keeps every journaled op and continues from there.
    let mut args = vec!["run", "--ops", "10", "--data", path];
    args.extend(ARGS);
    let output = carapace(&args).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        inspect(&dir, &Default::default()).unwrap().journal_ops,
        journaled + 10
    );
    let output = carapace(&["replay", path, "--target", "native"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_process_killed_mid_group_commit_printed_no_reply_its_journal_lacks() {
    use std::io::BufRead;
    let dir = std::env::temp_dir().join(format!("carapace-group-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data");
    let requests = dir.join("requests");
    let lines: String = (0..200_000u32)
        .map(|index| format!("{} 1 {:08x}\n", index % 8 + 1, index))
        .collect();
    std::fs::write(&requests, lines).unwrap();
    let mut args = vec![
        "run",
        "--data",
        data.to_str().unwrap(),
        "--requests",
        requests.to_str().unwrap(),
        "--group-size",
        "64",
    ];
    args.extend(ARGS);
    let mut child = carapace(&args).stdout(Stdio::piped()).spawn().unwrap();
    // Read replies as they come; kill the process mid-run, mid-group most likely.
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut last_replied = 0;
    for line in stdout.lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("reply       op ") {
            last_replied = rest.split(' ').next().unwrap().parse::<u64>().unwrap();
            if last_replied >= 5_000 {
                break;
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        last_replied >= 5_000,
        "the run printed {last_replied} replies"
    );
    // Every reply printed was of an op the journal holds: a reply is released only
    // after its group's write and sync.
    let report = inspect(&data, &Default::default()).unwrap();
    assert!(
        report.journal_ops >= last_replied,
        "{} ops journaled, op {last_replied} replied",
        report.journal_ops
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_second_process_on_a_directory_in_use_is_refused_and_the_first_finishes() {
    let dir = std::env::temp_dir().join(format!("carapace-owner-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.to_str().unwrap();
    let mut args = vec!["run", "--ops", "5000", "--data", path];
    args.extend(ARGS);
    let first = carapace(&args).spawn().unwrap();
    // Wait until the first owns the directory and is committing.
    let deadline = Instant::now() + Duration::from_secs(30);
    while journal_length(&dir) == 0 {
        assert!(Instant::now() < deadline, "the first run made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Even a run of no ops would cut the tail the first is appending to.
    let mut second = vec!["run", "--ops", "0", "--data", path];
    second.extend(ARGS);
    let output = carapace(&second).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is in use by another replica"), "{stderr}");
    // Inspecting a directory in use reads what it can verify.
    assert!(
        carapace(&["inspect", path])
            .output()
            .unwrap()
            .status
            .success()
    );
    let output = first.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        inspect(&dir, &Default::default()).unwrap().journal_ops,
        5_000
    );
    let output = carapace(&["replay", path, "--target", "native"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_closed_standard_output_is_an_error_not_a_panic() {
    let dir = std::env::temp_dir().join(format!("carapace-stdout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.to_str().unwrap();
    let mut args = vec!["run", "--ops", "40", "--data", path];
    args.extend(ARGS);
    assert!(carapace(&args).status().unwrap().success());
    // A pipe whose reading end is closed before the process starts: every write to
    // it fails with EPIPE.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = Command::new(env!("CARGO_BIN_EXE_carapace"))
        .args(["inspect", path])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("writing to standard output"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

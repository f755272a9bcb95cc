//! `cargo xtask <task>`: the project's tasks that are more than one cargo command.
//!
//! - `ci`: formatting, lints, the host core built for wasm32, every test, then the
//!   browser demo built and tested in Chromium (what `.ci/run` runs);
//! - `bench`: the wasm-vs-native benchmark, in release mode;
//! - `memory`: guest memory after 100,000 and after 1,000,000 echo ops (must be equal);
//! - `sim`: the long simulation sweep, both machines, in release mode: `--seeds N`
//!   (default 2,000) from `--from S`, `--ops N` each (default 1,000); any other option
//!   goes to `carapace sim`;
//! - `web`: build the browser demo into `web/dist` (the components written out of the
//!   `carapace` binary and transpiled by jco, the host core through wasm-bindgen);
//!   `--serve` then serves `web/` on 127.0.0.1 and prints the address;
//! - `fuzz`: every cargo-fuzz target (`fuzz/`) for `--seconds` each (default 60), with
//!   nightly; installs cargo-fuzz if missing. New corpus entries land in `fuzz/corpus`.

use std::process::Command;

use anyhow::{Context, Result, bail};

mod web;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("bench") => bench(&args[1..]),
        Some("memory") => memory(),
        Some("fuzz") => fuzz(&args[1..]),
        Some("sim") => sim(&args[1..]),
        Some("scale") => scale(&args[1..]),
        Some("web") => web::command(&args[1..]),
        _ => bail!(
            "usage: cargo xtask <ci | bench [carapace bench options] | memory | \
             scale [carapace bench --scale options] | \
             sim [--seeds N] [--from S] [--ops N] | web [--serve] [--port N] | \
             fuzz [--seconds N] [TARGET ...]>"
        ),
    }
}

fn ci() -> Result<()> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // The host core runs in a browser page: it must build for wasm32 with no OS, and
    // the host library must build without the native baseline (no guest crate).
    cargo(&[
        "check",
        "--target",
        "wasm32-unknown-unknown",
        "--package",
        "carapace-core",
    ])?;
    cargo(&["check", "--package", "carapace", "--no-default-features"])?;
    cargo(&["test", "--workspace"])?;
    // The browser demo: the same components and host core in real Chromium.
    web::build()?;
    web::test()
}

/// `cargo run --release -p carapace -- ARGS`: the cargo arguments.
fn carapace_release<'a>(args: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut all = vec!["run", "--release", "--quiet", "--package", "carapace", "--"];
    all.extend(args);
    all
}

fn bench(extra: &[String]) -> Result<()> {
    cargo(&carapace_release(
        std::iter::once("bench").chain(extra.iter().map(String::as_str)),
    ))
}

/// The scale test: 10^7 echo ops of 64-byte bodies, native and in wasm, timed between
/// powers of ten, and the space the grid takes for them (`carapace bench --scale`).
fn scale(extra: &[String]) -> Result<()> {
    let has = |flag: &str| extra.iter().any(|arg| arg == flag);
    let mut args = vec!["bench", "--scale"];
    if !has("--ops") {
        args.extend(["--ops", "10000000"]);
    }
    if !has("--body-size") {
        args.extend(["--body-size", "64"]);
    }
    cargo(&carapace_release(
        args.into_iter().chain(extra.iter().map(String::as_str)),
    ))
}

/// Sweep seeds of the simulator over both machines; fails if any seed fails.
fn sim(extra: &[String]) -> Result<()> {
    let has = |flag: &str| extra.iter().any(|arg| arg == flag);
    let mut defaults = Vec::new();
    if !has("--seeds") {
        defaults.extend(["--seeds", "2000"]);
    }
    if !has("--ops") {
        defaults.extend(["--ops", "1000"]);
    }
    for machine in ["echo", "kv"] {
        let args = ["sim", "--machine", machine]
            .into_iter()
            .chain(defaults.iter().copied())
            .chain(extra.iter().map(String::as_str));
        cargo(&carapace_release(args))?;
    }
    Ok(())
}

/// All guest memory is allocated at init: a million ops must not grow it past what a
/// hundred thousand needed. `carapace run` prints both figures; this compares them.
fn memory() -> Result<()> {
    let args = carapace_release(["run", "--ops", "1000000", "--memory-at", "100000"]);
    eprintln!("$ cargo {}", args.join(" "));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(args)
        .output()
        .context("running carapace")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    if !output.status.success() {
        bail!(
            "carapace failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Lines of the form `memory      <bytes> bytes of guest memory after <ops> ops`.
    let figures: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("memory"))
        .filter_map(|line| line.split_whitespace().nth(1))
        .collect();
    match figures.as_slice() {
        [early, late] if early == late => {
            println!(
                "guest memory did not grow: {early} bytes after 100,000 and after 1,000,000 ops"
            );
            Ok(())
        }
        _ => bail!("guest memory changed with the number of ops: {figures:?}"),
    }
}

/// The fuzz targets, as `fuzz/Cargo.toml` names them.
const FUZZ_TARGETS: [&str; 5] = [
    "journal",
    "superblock",
    "block",
    "checkpoint_state",
    "request",
];

fn fuzz(args: &[String]) -> Result<()> {
    let mut seconds = 60;
    let mut targets = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--seconds" => {
                let value = rest.next().context("`--seconds` needs a number")?;
                seconds = value
                    .parse()
                    .with_context(|| format!("`--seconds {value}` is not a number"))?;
            }
            target if FUZZ_TARGETS.contains(&target) => targets.push(target),
            other => bail!("unknown fuzz target `{other}` (there are: {FUZZ_TARGETS:?})"),
        }
    }
    if targets.is_empty() {
        targets = FUZZ_TARGETS.to_vec();
    }
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !installed {
        cargo(&["install", "--locked", "cargo-fuzz"])?;
    }
    for target in targets {
        let corpus = format!("corpus/{target}");
        let time = format!("-max_total_time={seconds}");
        let status = Command::new("cargo")
            .current_dir("fuzz")
            .args(["+nightly", "fuzz", "run", target, &corpus, "--", &time])
            .args(["-max_len=65536", "-rss_limit_mb=4096"])
            .status()
            .with_context(|| format!("running the fuzz target `{target}`"))?;
        if !status.success() {
            bail!("the fuzz target `{target}` found a failure (see fuzz/artifacts/{target})");
        }
    }
    Ok(())
}

fn cargo(args: &[&str]) -> Result<()> {
    eprintln!("$ cargo {}", args.join(" "));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(args)
        .status()
        .with_context(|| format!("running `cargo {}`", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed", args.join(" "));
    }
    Ok(())
}

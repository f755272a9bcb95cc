//! `carapace bench --matrix`: echo at every body size, natively and in wasm, over
//! memory and over a data directory, beside fjall doing the same work; throughput,
//! per-op latency and the ratios that matter, as text or JSON, and a chart.
//!
//! Every run commits the same requests (generated before the clock starts): fixed-size
//! bodies of 0, 64 B, 1 KiB, 64 KiB and echo's largest (1 MiB less its 256-byte
//! header). Native and wasm runs of one body size and storage must reach the same
//! checkpoint. Native and wasm runs commit in groups (see [`group_size`]), delivered to
//! the machine in batches; over a data directory a group is made durable with one
//! journal write and fdatasync. An op's latency is its group's: its reply comes with
//! the group's, once the group is durable. fjall commits op by op.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};

use crate::durable::Durable;
use crate::imports::{HostImports, IoOrder};
use crate::instance::Options;
use crate::machines::{Factory, Source, default_options};
use crate::replica::{Committer, Replica, Request};
use crate::storage::MemoryStorage;
use crate::wasm::Limits;
use crate::workload::{EchoWorkload, Workload as _, first_requests};

/// Body sizes of the matrix: the largest is echo's largest body.
pub const BODY_SIZES: [u32; 5] = [0, 64, 1024, 64 * 1024, 1024 * 1024 - 256];

/// Ops a run commits per group: 1,024, or fewer so that a group's bodies stay within
/// 4 MiB (a group is acknowledged as a whole).
pub fn group_size(body_size: u32) -> usize {
    ((4 << 20) / body_size.max(1) as usize).clamp(1, 1024)
}

/// One engine over one storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// The echo guest compiled into the host.
    Native,
    /// The echo component in wasmtime.
    Wasm,
    /// Echo's work done with fjall (see [`crate::peer`]); always on files, never synced.
    Fjall,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Native => "native",
            Engine::Wasm => "wasm",
            Engine::Fjall => "fjall",
        }
    }
}

/// Where an engine keeps its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// The grid in memory.
    Memory,
    /// A data directory: grid, journal and superblock files, group commit.
    DataDirectory,
    /// fjall's own files, written to the operating system's buffers.
    FjallFiles,
}

impl Storage {
    fn name(self) -> &'static str {
        match self {
            Storage::Memory => "memory",
            Storage::DataDirectory => "data directory",
            Storage::FjallFiles => "files, no fsync",
        }
    }
}

/// The engine and storage pairs of the matrix, in the order they run.
pub const SUBJECTS: [(Engine, Storage); 5] = [
    (Engine::Native, Storage::Memory),
    (Engine::Wasm, Storage::Memory),
    (Engine::Native, Storage::DataDirectory),
    (Engine::Wasm, Storage::DataDirectory),
    (Engine::Fjall, Storage::FjallFiles),
];

/// One run of the matrix.
#[derive(Clone, Debug)]
pub struct Cell {
    /// The engine.
    pub engine: Engine,
    /// Its storage.
    pub storage: Storage,
    /// Bytes per request body.
    pub body_size: u32,
    /// Ops committed.
    pub ops: u64,
    /// Time in commits (requests were generated before).
    pub elapsed: Duration,
    /// Median and 99th percentile of an op's latency.
    pub latency_p50: Duration,
    /// See `latency_p50`.
    pub latency_p99: Duration,
    /// The last checkpoint's op and id, for engines that take them.
    pub checkpoint: Option<(u64, u128)>,
    /// The ops/s of every round of this cell, in order; the cell's own figures are the
    /// fastest round's.
    pub rounds: Vec<f64>,
}

impl Cell {
    /// Ops per second.
    pub fn ops_per_second(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Request body megabytes (10^6 bytes) per second.
    pub fn megabytes_per_second(&self) -> f64 {
        self.ops as f64 * f64::from(self.body_size) / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "engine": self.engine.name(),
            "storage": self.storage.name(),
            "body_size": self.body_size,
            "ops": self.ops,
            "seconds": self.elapsed.as_secs_f64(),
            "ops_per_second": self.ops_per_second(),
            "megabytes_per_second": self.megabytes_per_second(),
            "latency_p50_us": self.latency_p50.as_secs_f64() * 1e6,
            "latency_p99_us": self.latency_p99.as_secs_f64() * 1e6,
            "checkpoint": super::bench::checkpoint_json(self.checkpoint),
            "rounds_ops_per_second": self.rounds,
        })
    }
}

/// Ops a run of `body_size` commits: about 512 MiB of bodies (64 KiB in `quick` mode),
/// within bounds that keep small bodies meaningful and large ones short.
pub fn ops_for(body_size: u32, quick: bool) -> u64 {
    let (bytes, ops_min, ops_max) = if quick {
        (64 << 10, 8, 200)
    } else {
        (512 << 20, 512, 100_000)
    };
    (bytes / u64::from(body_size.max(1))).clamp(ops_min, ops_max)
}

/// The requests every engine of one body size commits.
fn requests(body_size: u32, ops: u64) -> Vec<Request> {
    first_requests(&mut EchoWorkload::with_body_size(7, body_size), ops)
}

/// The options of a run of `body_size`: the default grid and checkpoints, and limits
/// that fit the body.
fn options(body_size: u32) -> Options {
    let defaults = default_options();
    Options {
        batch_size_limit: body_size.max(1),
        reply_size_limit: body_size.max(1),
        ..defaults
    }
}

/// The median and 99th percentile of `latencies`.
fn percentiles(latencies: &mut [Duration]) -> (Duration, Duration) {
    if latencies.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    latencies.sort_unstable();
    let at = |fraction: f64| latencies[((latencies.len() - 1) as f64 * fraction).round() as usize];
    (at(0.50), at(0.99))
}

/// A scratch directory for one run, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let count = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Scratch(std::env::temp_dir().join(format!(
            "carapace-bench-{what}-{}-{count}",
            std::process::id()
        )))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The engines' factories, loaded once for every cell.
pub struct Engines {
    native: Factory,
    wasm: Factory,
}

impl std::fmt::Debug for Engines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engines").finish_non_exhaustive()
    }
}

impl Engines {
    /// The native echo and the embedded echo component (fuel on, the default).
    pub fn load() -> Result<Engines> {
        Ok(Engines {
            native: Factory::load(&Source::Native("echo".into()), Limits::default())?,
            wasm: Factory::load(&Source::Embedded("echo".into()), Limits::default())?,
        })
    }

    /// Run one cell: `requests` of `body_size` by `engine` over `storage`.
    pub fn run(
        &self,
        engine: Engine,
        storage: Storage,
        body_size: u32,
        requests: &[Request],
    ) -> Result<Cell> {
        let mut timed = Timed::default();
        let checkpoint = match (engine, storage) {
            (Engine::Fjall, _) => {
                let scratch = Scratch::new("fjall");
                let mut peer = crate::peer::FjallEcho::create(scratch.path())?;
                timed.commit(&mut peer, requests, 1)?;
                None
            }
            (_, Storage::Memory) => {
                let mut replica = self.open_in_memory(engine, body_size)?;
                timed.commit(&mut replica, requests, group_size(body_size))?;
                replica.checkpoint().map(|c| (c.op, c.id()))
            }
            (_, _) => {
                let scratch = Scratch::new("data");
                let dir = crate::os::open_data_dir(scratch.path())?;
                let factory = self.factory(engine);
                let (mut durable, _) = Durable::open(
                    dir,
                    Some(options(body_size)),
                    IoOrder::Seeded(7),
                    |imports| factory.instance(imports),
                )?;
                timed.commit(&mut durable, requests, group_size(body_size))?;
                durable.replica().checkpoint().map(|c| (c.op, c.id()))
            }
        };
        let (latency_p50, latency_p99) = percentiles(&mut timed.latencies);
        Ok(Cell {
            engine,
            storage,
            body_size,
            ops: requests.len() as u64,
            elapsed: timed.elapsed,
            latency_p50,
            latency_p99,
            checkpoint,
            rounds: Vec::new(),
        })
    }

    /// A new replica of `engine` over memory, with the options of bodies of `body_size`.
    fn open_in_memory(&self, engine: Engine, body_size: u32) -> Result<Replica> {
        let options = options(body_size);
        let imports = HostImports::new(
            Box::new(MemoryStorage::new()),
            options.block_size,
            options.block_count,
            IoOrder::Seeded(7),
        );
        Ok(Replica::open(
            self.factory(engine).instance(imports)?,
            options,
            None,
        )?)
    }

    /// The rates of the copies that bound echo's bodies of `body_size` bytes, measured
    /// now (see [`CopyRates`]).
    pub fn copy_rates(&self, body_size: u32) -> Result<CopyRates> {
        let mut replica = self.open_in_memory(Engine::Wasm, body_size)?;
        let request = &requests(body_size, 1)[0];
        let size = request.body.len();
        let into_sandbox = copy_rate(size, |_| {
            let valid = replica.input_valid(request.operation, &request.body)?;
            ensure!(valid.is_ok(), "echo refused its own body: {valid:?}");
            Ok(())
        })?;
        Ok(CopyRates {
            body_size,
            memcpy: memcpy_rate(size),
            into_sandbox,
        })
    }

    fn factory(&self, engine: Engine) -> &Factory {
        match engine {
            Engine::Native => &self.native,
            _ => &self.wasm,
        }
    }
}

/// Time spent in commits, and each op's latency.
#[derive(Default)]
struct Timed {
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Timed {
    /// Commit `requests` `group_size` at a time, timing each group (an op's latency is
    /// its group's: its reply comes with the group's); check every reply by the echo
    /// workload's rule, untimed.
    fn commit(
        &mut self,
        committer: &mut impl Committer,
        requests: &[Request],
        group_size: usize,
    ) -> Result<()> {
        let mut checker = EchoWorkload::with_body_size(0, 0);
        for group in requests.chunks(group_size) {
            let start = Instant::now();
            let committed = committer.commit_group(group);
            let took = start.elapsed();
            if let Some(error) = committed.stopped {
                return Err(error.into());
            }
            for (request, reply) in group.iter().zip(&committed.replies) {
                checker
                    .check_reply(request, reply)
                    .map_err(|detail| anyhow::anyhow!("op {}: {detail}", request.op))?;
            }
            self.elapsed += took;
            self.latencies
                .extend(std::iter::repeat_n(took, group.len()));
        }
        Ok(())
    }
}

/// Run the whole matrix `rounds` times over, moving `bar` after each cell's round: each
/// round runs every subject of a body size once, in turn, so that a slow spell of the
/// machine falls on one round of several subjects rather than on every round of one.
/// Each cell keeps its fastest round. Every round of a subject must reach the same
/// checkpoint, and native and wasm the same as each other.
pub fn run_matrix(
    engines: &Engines,
    quick: bool,
    rounds: u32,
    bar: &indicatif::ProgressBar,
) -> Result<Vec<Cell>> {
    let mut cells = Vec::new();
    for body_size in BODY_SIZES {
        let requests = requests(body_size, ops_for(body_size, quick));
        let mut fastest: Vec<Option<Cell>> = vec![None; SUBJECTS.len()];
        for _ in 0..rounds {
            for ((engine, storage), fastest) in SUBJECTS.into_iter().zip(&mut fastest) {
                let what = || {
                    format!(
                        "{} over {} with bodies of {body_size} bytes",
                        engine.name(),
                        storage.name()
                    )
                };
                let cell = engines
                    .run(engine, storage, body_size, &requests)
                    .with_context(what)?;
                bar.inc(1);
                *fastest = Some(keep_fastest(fastest.take(), cell).with_context(what)?);
            }
        }
        let fastest = fastest.into_iter().flatten();
        let first = cells.len();
        cells.extend(fastest);
        for storage in [Storage::Memory, Storage::DataDirectory] {
            let checkpoint = |engine| {
                find(&cells[first..], engine, storage, body_size).and_then(|cell| cell.checkpoint)
            };
            ensure!(
                checkpoint(Engine::Native) == checkpoint(Engine::Wasm),
                "native and wasm diverged over {} with bodies of {body_size} bytes",
                storage.name()
            );
        }
    }
    Ok(cells)
}

/// The faster of a cell's fastest round so far and its new round `cell`, with the new
/// round's rate recorded; an error if the two rounds reached different checkpoints.
fn keep_fastest(so_far: Option<Cell>, mut cell: Cell) -> Result<Cell> {
    let Some(mut so_far) = so_far else {
        cell.rounds = vec![cell.ops_per_second()];
        return Ok(cell);
    };
    ensure!(
        so_far.checkpoint == cell.checkpoint,
        "two rounds reached different checkpoints: {:?} and {:?}",
        so_far.checkpoint,
        cell.checkpoint
    );
    so_far.rounds.push(cell.ops_per_second());
    if cell.elapsed < so_far.elapsed {
        cell.rounds = std::mem::take(&mut so_far.rounds);
        return Ok(cell);
    }
    Ok(so_far)
}

/// The rates, in bytes a second, of the copies that bound echo's large bodies, measured
/// in the same run as the cells.
#[derive(Clone, Copy, Debug)]
pub struct CopyRates {
    /// The size of the body copied.
    pub body_size: u32,
    /// A plain memory copy of a body: the ceiling.
    pub memcpy: f64,
    /// A body crossing into the sandbox: the component's `input-valid` of it, which
    /// the host lowers into the guest's memory (the guest's `realloc`, then one copy)
    /// and echo only measures. A committed body crosses the same way.
    pub into_sandbox: f64,
}

/// The rate of a plain memory copy of `size` bytes, in bytes per second.
fn memcpy_rate(size: usize) -> f64 {
    let source = vec![0x5a_u8; size];
    let mut target = vec![0_u8; size];
    let copied = copy_rate(size, |round| {
        target.copy_from_slice(&source);
        std::hint::black_box(&mut target)[round % size.max(1)] ^= 1;
        Ok(())
    });
    copied.expect("a memcpy cannot fail")
}

/// The rate, in bytes per second, of `copy` moving `size` bytes: timed over 256 MiB of
/// copies, each told its round.
fn copy_rate(size: usize, mut copy: impl FnMut(usize) -> Result<()>) -> Result<f64> {
    let rounds = ((256 << 20) / size.max(1)).max(1);
    let start = Instant::now();
    for round in 0..rounds {
        copy(round)?;
    }
    Ok((rounds * size) as f64 / start.elapsed().as_secs_f64().max(1e-9))
}

/// The cell of `engine` over `storage` at `body_size`.
pub fn find(cells: &[Cell], engine: Engine, storage: Storage, body_size: u32) -> Option<&Cell> {
    cells.iter().find(|cell| {
        cell.engine == engine && cell.storage == storage && cell.body_size == body_size
    })
}

/// The cells as JSON, with the ratios per body size.
pub fn json(cells: &[Cell], copies: CopyRates) -> serde_json::Value {
    let ratios: Vec<_> = BODY_SIZES
        .iter()
        .map(|&body_size| {
            let rate = |engine, storage| find(cells, engine, storage, body_size).map(Cell::ops_per_second);
            let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
            serde_json::json!({
                "body_size": body_size,
                "wasm_over_native": ratio(rate(Engine::Wasm, Storage::Memory), rate(Engine::Native, Storage::Memory)),
                "wasm_over_fjall": ratio(rate(Engine::Wasm, Storage::Memory), rate(Engine::Fjall, Storage::FjallFiles)),
                "data_directory_over_memory_wasm": ratio(rate(Engine::Wasm, Storage::DataDirectory), rate(Engine::Wasm, Storage::Memory)),
            })
        })
        .collect();
    serde_json::json!({
        "cells": cells.iter().map(Cell::json).collect::<Vec<_>>(),
        "ratios": ratios,
        "memcpy_bytes_per_second": copies.memcpy,
        "into_sandbox_bytes_per_second": copies.into_sandbox,
    })
}

/// Print the matrix as a table, then the ratios.
pub fn print(out: &mut dyn std::io::Write, cells: &[Cell], copies: CopyRates) -> Result<()> {
    say!(
        out,
        "{:>8}  {:<7} {:<16} {:>8}  {:>11}  {:>10}  {:>10}  {:>10}",
        "body",
        "engine",
        "storage",
        "ops",
        "ops/s",
        "MB/s",
        "p50 µs",
        "p99 µs"
    )?;
    for cell in cells {
        say!(
            out,
            "{:>8}  {:<7} {:<16} {:>8}  {:>11.0}  {:>10.1}  {:>10.1}  {:>10.1}",
            size_label(cell.body_size),
            cell.engine.name(),
            cell.storage.name(),
            cell.ops,
            cell.ops_per_second(),
            cell.megabytes_per_second(),
            cell.latency_p50.as_secs_f64() * 1e6,
            cell.latency_p99.as_secs_f64() * 1e6
        )?;
    }
    say!(
        out,
        "== ratios of ops/s (memory unless named): wasm/native, wasm/fjall, wasm data directory/memory"
    )?;
    for body_size in BODY_SIZES {
        let rate =
            |engine, storage| find(cells, engine, storage, body_size).map(Cell::ops_per_second);
        let ratio = |a: Option<f64>, b: Option<f64>| {
            a.zip(b)
                .map_or("-".to_string(), |(a, b)| format!("{:.2}", a / b))
        };
        say!(
            out,
            "{:>8}  {:>6}  {:>6}  {:>6}",
            size_label(body_size),
            ratio(
                rate(Engine::Wasm, Storage::Memory),
                rate(Engine::Native, Storage::Memory)
            ),
            ratio(
                rate(Engine::Wasm, Storage::Memory),
                rate(Engine::Fjall, Storage::FjallFiles)
            ),
            ratio(
                rate(Engine::Wasm, Storage::DataDirectory),
                rate(Engine::Wasm, Storage::Memory)
            )
        )?;
    }
    if let Some((spread, widest)) = widest_spread(cells) {
        say!(
            out,
            "== each cell is the fastest of {} rounds; the widest spread, fastest over \
             slowest round: {spread:.2} ({} {} over {})",
            widest.rounds.len(),
            size_label(widest.body_size),
            widest.engine.name(),
            widest.storage.name()
        )?;
    }
    say!(
        out,
        "== {} copied: {:.1} GB/s by memcpy, {:.1} GB/s into the sandbox (input-valid), in \
         the same run",
        size_label(copies.body_size),
        copies.memcpy / 1e9,
        copies.into_sandbox / 1e9
    )?;
    Ok(())
}

/// The largest ratio of a cell's fastest round to its slowest, and its cell: how much
/// the machine's noise moved one cell's rate in this run.
fn widest_spread(cells: &[Cell]) -> Option<(f64, &Cell)> {
    cells
        .iter()
        .filter_map(|cell| {
            let fastest = cell.rounds.iter().copied().reduce(f64::max)?;
            let slowest = cell.rounds.iter().copied().reduce(f64::min)?;
            Some((fastest / slowest.max(1e-9), cell))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
}

/// `64 B`, `1 KiB`, `1 MiB`: the largest body is labelled by its order.
pub fn size_label(size: u32) -> String {
    match size {
        0..1024 => format!("{size} B"),
        1024..0x10_0000 if size.is_multiple_of(1024) => format!("{} KiB", size / 1024),
        _ if size >= 1024 * 1024 - 256 => "~1 MiB".to_string(),
        _ => format!("{size} B"),
    }
}

/// An SVG line chart of ops/s (log scale) against body size, one line per engine and
/// storage, written to `path`.
pub fn write_chart(path: &Path, cells: &[Cell]) -> Result<()> {
    std::fs::write(path, chart(cells))
        .with_context(|| format!("writing the chart to `{}`", path.display()))
}

fn chart(cells: &[Cell]) -> String {
    const WIDTH: f64 = 760.0;
    const HEIGHT: f64 = 440.0;
    const LEFT: f64 = 80.0;
    const RIGHT: f64 = 200.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 60.0;
    const COLORS: [&str; 5] = ["#1b6ac9", "#d1495b", "#66a182", "#edae49", "#6b4c9a"];
    let rates: Vec<f64> = cells
        .iter()
        .map(Cell::ops_per_second)
        .filter(|r| *r > 0.0)
        .collect();
    let decade_min = rates
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min)
        .log10()
        .floor();
    let decade_max = rates
        .iter()
        .copied()
        .fold(1.0, f64::max)
        .log10()
        .ceil()
        .max(decade_min + 1.0);
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let x = |index: usize| LEFT + plot_width * index as f64 / (BODY_SIZES.len() - 1) as f64;
    let y = |rate: f64| {
        TOP + plot_height
            * (1.0 - (rate.max(1e-9).log10() - decade_min) / (decade_max - decade_min))
    };
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{LEFT}\" y=\"24\" font-size=\"15\">carapace bench --matrix: echo ops/s against body size</text>\n"
    );
    for decade in decade_min as i32..=decade_max as i32 {
        let at = y(10f64.powi(decade));
        svg += &format!(
            "<line x1=\"{LEFT}\" y1=\"{at:.1}\" x2=\"{:.1}\" y2=\"{at:.1}\" stroke=\"#ddd\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">1e{decade}</text>\n",
            LEFT + plot_width,
            LEFT - 8.0,
            at + 4.0
        );
    }
    for (index, &size) in BODY_SIZES.iter().enumerate() {
        svg += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            x(index),
            TOP + plot_height + 20.0,
            size_label(size)
        );
    }
    svg += &format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">request body size</text>\n\
         <text x=\"18\" y=\"{:.1}\" transform=\"rotate(-90 18 {:.1})\" text-anchor=\"middle\">ops/s (log)</text>\n",
        LEFT + plot_width / 2.0,
        HEIGHT - 16.0,
        TOP + plot_height / 2.0,
        TOP + plot_height / 2.0
    );
    for (line, &(engine, storage)) in SUBJECTS.iter().enumerate() {
        let color = COLORS[line % COLORS.len()];
        let points: Vec<String> = BODY_SIZES
            .iter()
            .enumerate()
            .filter_map(|(index, &size)| {
                let cell = find(cells, engine, storage, size)?;
                Some(format!("{:.1},{:.1}", x(index), y(cell.ops_per_second())))
            })
            .collect();
        svg += &format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>\n",
            points.join(" ")
        );
        let legend_y = TOP + 10.0 + 20.0 * line as f64;
        svg += &format!(
            "<line x1=\"{:.1}\" y1=\"{legend_y:.1}\" x2=\"{:.1}\" y2=\"{legend_y:.1}\" stroke=\"{color}\" stroke-width=\"3\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\">{} ({})</text>\n",
            WIDTH - RIGHT + 16.0,
            WIDTH - RIGHT + 36.0,
            WIDTH - RIGHT + 42.0,
            legend_y + 4.0,
            engine.name(),
            storage.name()
        );
    }
    svg += "</svg>\n";
    svg
}

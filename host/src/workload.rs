//! TigerBeetle's echo workload: seeded requests with bodies of uniformly random size
//! in `0..=batch_size_limit`, each of whose replies must equal its request.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};

use crate::prng::Prng;
use crate::replica::{Committer, Request};

/// Clients the workload spreads its requests over.
pub const CLIENT_COUNT: u64 = 8;

/// The largest gap between consecutive timestamps: the host's clock advances by a
/// random `1..=TIMESTAMP_STEP_MAX` per op, the same for the same seed.
pub const TIMESTAMP_STEP_MAX: u64 = 1_000;

/// Generates echo requests from a seed.
#[derive(Clone, Debug)]
pub struct Workload {
    prng: Prng,
    batch_size_limit: u32,
}

impl Workload {
    /// A workload for `seed` whose bodies are at most `batch_size_limit` bytes.
    pub fn new(seed: u64, batch_size_limit: u32) -> Workload {
        Workload {
            prng: Prng::new(seed),
            batch_size_limit,
        }
    }

    /// The request to commit after op `previous_op` at `previous_timestamp`.
    pub fn next_request(&mut self, previous_op: u64, previous_timestamp: u64) -> Request {
        let client = 1 + u128::from(self.prng.below(CLIENT_COUNT));
        let size = self
            .prng
            .range_inclusive(0, u64::from(self.batch_size_limit)) as usize;
        let mut body = vec![0; size];
        self.prng.fill(&mut body);
        Request {
            client,
            op: previous_op + 1,
            timestamp: previous_timestamp + self.prng.range_inclusive(1, TIMESTAMP_STEP_MAX),
            operation: carapace_echo::Operation::Echo as u8,
            body,
        }
    }
}

/// What a workload run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Ops committed.
    pub ops: u64,
    /// Body bytes committed (each also came back as a reply).
    pub bytes: u64,
    /// Wall-clock time of the run; for reports only, never for state.
    pub elapsed: Duration,
}

impl RunReport {
    /// Add a later part of the same run.
    pub fn add(&mut self, other: &RunReport) {
        self.ops += other.ops;
        self.bytes += other.bytes;
        self.elapsed += other.elapsed;
    }

    /// Committed ops per second.
    pub fn ops_per_second(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Commit `ops` requests of `workload`, checking that every reply equals its request.
pub fn run(replica: &mut impl Committer, workload: &mut Workload, ops: u64) -> Result<RunReport> {
    let start = Instant::now();
    let mut bytes = 0;
    for _ in 0..ops {
        let request = workload.next_request(replica.last_op(), replica.last_timestamp());
        let reply = replica.commit_request(&request)?;
        ensure!(
            reply == request.body,
            "op {}: the reply ({} bytes) differs from the request ({} bytes)",
            request.op,
            reply.len(),
            request.body.len()
        );
        bytes += request.body.len() as u64;
    }
    Ok(RunReport {
        ops,
        bytes,
        elapsed: start.elapsed(),
    })
}

//! Seeded workloads: requests generated from a seed, each reply checked as it arrives.
//! A workload is chosen by the loaded machine's name ([`for_machine`]); it speaks the
//! machine's documented request format as a client would, without its crate.
//!
//! - `echo`: TigerBeetle's echo workload: bodies of uniformly random size in
//!   `0..=batch_size_limit`; every reply must equal its request.
//! - `kv`: puts, deletes, gets and scans over a small key space, so that keys are
//!   overwritten, deleted and found across the LSM's levels; every reply must equal
//!   what a `BTreeMap` model says.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::prng::Prng;
use crate::replica::{Committer, Request};

/// Clients the workloads spread their requests over.
pub const CLIENT_COUNT: u64 = 8;

/// The largest gap between consecutive timestamps: the host's clock advances by a
/// random `1..=TIMESTAMP_STEP_MAX` per op, the same for the same seed.
pub const TIMESTAMP_STEP_MAX: u64 = 1_000;

/// A source of requests that checks each reply.
pub trait Workload {
    /// The request to commit after op `previous_op` at `previous_timestamp`.
    fn next_request(&mut self, previous_op: u64, previous_timestamp: u64) -> Request;
    /// Check `reply` to `request`; an error says what differed.
    fn check_reply(&mut self, request: &Request, reply: &[u8]) -> Result<(), String>;
    /// Take in a request committed before this workload started (a data directory's
    /// journal), so that its model knows the state the machine is in.
    fn observe(&mut self, request: &Request);
}

/// The workload for the machine named `name`, if carapace has one.
pub fn for_machine(name: &str, seed: u64, batch_size_limit: u32) -> Option<Box<dyn Workload>> {
    match name {
        "echo" => Some(Box::new(EchoWorkload::new(seed, batch_size_limit))),
        "kv" => Some(Box::new(KvWorkload::new(seed, batch_size_limit))),
        _ => None,
    }
}

/// What a workload run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Ops committed.
    pub ops: u64,
    /// Request body bytes committed.
    pub request_bytes: u64,
    /// Reply bytes received.
    pub reply_bytes: u64,
}

impl RunReport {
    /// Count one committed request and its reply.
    pub fn record(&mut self, request: &Request, reply: &[u8]) {
        self.ops += 1;
        self.request_bytes += request.body.len() as u64;
        self.reply_bytes += reply.len() as u64;
    }

    /// Add a later part of the same run.
    pub fn add(&mut self, other: &RunReport) {
        self.ops += other.ops;
        self.request_bytes += other.request_bytes;
        self.reply_bytes += other.reply_bytes;
    }
}

/// Commit `ops` requests of `workload`, checking every reply. A reply the workload
/// rejects is an [`Error::Divergence`] at its op.
pub fn run(
    replica: &mut impl Committer,
    workload: &mut dyn Workload,
    ops: u64,
) -> Result<RunReport> {
    run_in_groups(replica, workload, ops, 1)
}

/// [`run`], handing the replica `group_size` requests at a time (a durable replica
/// commits each group with one journal write and sync). The requests are the same as
/// one at a time: a workload draws each from its seed and the previous request.
pub fn run_in_groups(
    replica: &mut impl Committer,
    workload: &mut dyn Workload,
    ops: u64,
    group_size: u64,
) -> Result<RunReport> {
    assert!(group_size > 0);
    let mut report = RunReport::default();
    while report.ops < ops {
        let requests = requests_after(
            workload,
            replica.last_op(),
            replica.last_timestamp(),
            group_size.min(ops - report.ops),
        );
        let committed = replica.commit_group(&requests);
        for (request, reply) in requests.iter().zip(&committed.replies) {
            workload
                .check_reply(request, reply)
                .map_err(|detail| Error::Divergence {
                    op: request.op,
                    detail: format!("the reply is wrong: {detail}"),
                })?;
            report.record(request, reply);
        }
        if let Some(error) = committed.stopped {
            return Err(error);
        }
    }
    Ok(report)
}

/// The first `ops` requests of `workload`, as a replica starting empty is given them.
pub fn first_requests(workload: &mut dyn Workload, ops: u64) -> Vec<Request> {
    requests_after(workload, 0, 0, ops)
}

/// The next `count` requests of `workload` after op `op` at `timestamp`, each following
/// the one before.
pub fn requests_after(
    workload: &mut dyn Workload,
    mut op: u64,
    mut timestamp: u64,
    count: u64,
) -> Vec<Request> {
    (0..count)
        .map(|_| {
            let request = workload.next_request(op, timestamp);
            (op, timestamp) = (request.op, request.timestamp);
            request
        })
        .collect()
}

/// The client and timestamp of the next request. (Echo's workload draws its own, in
/// an order its recorded seeds fix: the body's size comes between them.)
fn next_client_and_timestamp(prng: &mut Prng, previous_timestamp: u64) -> (u128, u64) {
    let client = 1 + u128::from(prng.below(CLIENT_COUNT));
    let timestamp = previous_timestamp + prng.range_inclusive(1, TIMESTAMP_STEP_MAX);
    (client, timestamp)
}

/// TigerBeetle's echo workload.
#[derive(Clone, Debug)]
pub struct EchoWorkload {
    prng: Prng,
    batch_size_limit: u32,
    /// Every body this many bytes, instead of a size drawn up to the limit.
    body_size: Option<u32>,
}

/// The echo machine's `echo` operation.
pub const ECHO_OPERATION: u8 = 1;

impl EchoWorkload {
    /// A workload for `seed` whose bodies are at most `batch_size_limit` bytes.
    pub fn new(seed: u64, batch_size_limit: u32) -> EchoWorkload {
        EchoWorkload {
            prng: Prng::new(seed),
            batch_size_limit,
            body_size: None,
        }
    }

    /// A workload for `seed` whose bodies are all `body_size` bytes (what a benchmark
    /// of throughput against body size wants).
    pub fn with_body_size(seed: u64, body_size: u32) -> EchoWorkload {
        EchoWorkload {
            body_size: Some(body_size),
            ..EchoWorkload::new(seed, body_size)
        }
    }
}

impl Workload for EchoWorkload {
    fn next_request(&mut self, previous_op: u64, previous_timestamp: u64) -> Request {
        let client = 1 + u128::from(self.prng.below(CLIENT_COUNT));
        let size = match self.body_size {
            Some(size) => size as usize,
            None => self
                .prng
                .range_inclusive(0, u64::from(self.batch_size_limit)) as usize,
        };
        let mut body = vec![0; size];
        self.prng.fill(&mut body);
        Request {
            client,
            op: previous_op + 1,
            timestamp: previous_timestamp + self.prng.range_inclusive(1, TIMESTAMP_STEP_MAX),
            operation: ECHO_OPERATION,
            body,
        }
    }

    fn observe(&mut self, _: &Request) {
        // Echo replies depend on nothing committed before.
    }

    fn check_reply(&mut self, request: &Request, reply: &[u8]) -> Result<(), String> {
        if reply != request.body {
            return Err(format!(
                "{} bytes came back for a request of {} bytes, or different bytes",
                reply.len(),
                request.body.len()
            ));
        }
        Ok(())
    }
}

/// The kv machine's request format (`guest/kv`): keys of 16 bytes, values of 64,
/// records of key, timestamp and value (88 bytes), little-endian.
pub mod kv {
    /// `put`: entries of key and value. Reply: empty.
    pub const PUT: u8 = 1;
    /// `delete`: keys. Reply: a byte per key, 1 if it existed.
    pub const DELETE: u8 = 2;
    /// `get`: keys. Reply: a record per key (timestamp 0 and a zero value if absent).
    pub const GET: u8 = 3;
    /// `scan`: key min, key max, limit (u32). Reply: live records in range, ascending.
    pub const SCAN: u8 = 4;
    /// Bytes of a key.
    pub const KEY_SIZE: usize = 16;
    /// Bytes of a value.
    pub const VALUE_SIZE: usize = 64;
    /// Bytes of a put entry: key and value.
    pub const PUT_SIZE: usize = KEY_SIZE + VALUE_SIZE;
    /// Bytes of a reply record: key, timestamp, value.
    pub const RECORD_SIZE: usize = KEY_SIZE + 8 + VALUE_SIZE;
    /// Bytes of a scan request.
    pub const SCAN_REQUEST_SIZE: usize = 2 * KEY_SIZE + 4;
    /// Keys or entries one request may hold.
    pub const KEYS_PER_OP_MAX: usize = 64;
    /// Records one scan may return.
    pub const SCAN_LIMIT_MAX: u32 = 64;
}

/// Keys the kv workload draws from: few enough that keys are overwritten and deleted
/// often, so that compaction merges versions and drops tombstones.
pub const KV_KEY_SPACE: u64 = 4_096;

/// Entries per kv request at most, in this workload: small, so that many ops touch the
/// same keys.
const KV_ENTRIES_PER_REQUEST_MAX: u64 = 8;

/// A kv workload with a `BTreeMap` model of what the machine must hold.
#[derive(Clone, Debug)]
pub struct KvWorkload {
    prng: Prng,
    batch_size_limit: u32,
    /// key -> (timestamp, value), as the machine must hold it after the last op.
    model: BTreeMap<u128, (u64, [u8; kv::VALUE_SIZE])>,
}

impl KvWorkload {
    /// A workload for `seed` within `batch_size_limit`.
    pub fn new(seed: u64, batch_size_limit: u32) -> KvWorkload {
        KvWorkload {
            prng: Prng::new(seed),
            batch_size_limit,
            model: BTreeMap::new(),
        }
    }

    /// What the model holds: key -> (timestamp, value).
    pub fn model(&self) -> &BTreeMap<u128, (u64, [u8; kv::VALUE_SIZE])> {
        &self.model
    }

    fn key(&mut self) -> u128 {
        u128::from(self.prng.below(KV_KEY_SPACE)) << 40
    }

    /// Entries per request: at most what fits the batch size limit.
    fn count(&mut self, entry_size: usize) -> usize {
        let fitting = (self.batch_size_limit as usize / entry_size).min(kv::KEYS_PER_OP_MAX);
        let count_max = (fitting as u64).clamp(1, KV_ENTRIES_PER_REQUEST_MAX);
        self.prng.range_inclusive(1, count_max) as usize
    }

    fn record(key: u128, found: Option<&(u64, [u8; kv::VALUE_SIZE])>, out: &mut Vec<u8>) {
        out.extend_from_slice(&key.to_le_bytes());
        let (timestamp, value) = found.copied().unwrap_or((0, [0; kv::VALUE_SIZE]));
        out.extend_from_slice(&timestamp.to_le_bytes());
        out.extend_from_slice(&value);
    }

    /// Apply `request` to the model and return the reply the machine must give.
    fn apply(&mut self, request: &Request) -> Vec<u8> {
        let body = &request.body;
        let mut reply = Vec::new();
        match request.operation {
            kv::PUT => {
                for entry in body.chunks_exact(kv::PUT_SIZE) {
                    let key = u128::from_le_bytes(entry[..kv::KEY_SIZE].try_into().unwrap());
                    let value = entry[kv::KEY_SIZE..].try_into().unwrap();
                    self.model.insert(key, (request.timestamp, value));
                }
            }
            kv::DELETE => {
                for key in body.chunks_exact(kv::KEY_SIZE) {
                    let key = u128::from_le_bytes(key.try_into().unwrap());
                    reply.push(u8::from(self.model.remove(&key).is_some()));
                }
            }
            kv::GET => {
                for key in body.chunks_exact(kv::KEY_SIZE) {
                    let key = u128::from_le_bytes(key.try_into().unwrap());
                    Self::record(key, self.model.get(&key), &mut reply);
                }
            }
            kv::SCAN => {
                let key_min = u128::from_le_bytes(body[0..16].try_into().unwrap());
                let key_max = u128::from_le_bytes(body[16..32].try_into().unwrap());
                let limit = u32::from_le_bytes(body[32..36].try_into().unwrap());
                for (key, found) in self.model.range(key_min..=key_max).take(limit as usize) {
                    Self::record(*key, Some(found), &mut reply);
                }
            }
            operation => unreachable!("the workload made operation {operation}"),
        }
        reply
    }
}

impl Workload for KvWorkload {
    fn next_request(&mut self, previous_op: u64, previous_timestamp: u64) -> Request {
        let (client, timestamp) = next_client_and_timestamp(&mut self.prng, previous_timestamp);
        // Mostly puts, so that the state grows; enough deletes to leave tombstones.
        let roll = self.prng.below(100);
        let rolled = match roll {
            0..50 => kv::PUT,
            50..65 => kv::DELETE,
            65..90 => kv::GET,
            _ => kv::SCAN,
        };
        // Under a batch size limit too small for a put (or a scan), a smaller request.
        let smallest = |operation| match operation {
            kv::PUT => kv::PUT_SIZE,
            kv::SCAN => kv::SCAN_REQUEST_SIZE,
            _ => kv::KEY_SIZE,
        };
        let limit = self.batch_size_limit as usize;
        let operation = [rolled, kv::SCAN, kv::GET]
            .into_iter()
            .find(|operation| smallest(*operation) <= limit)
            .unwrap_or(kv::GET);
        let mut body = Vec::new();
        match operation {
            kv::PUT => {
                for _ in 0..self.count(kv::PUT_SIZE) {
                    let key = self.key();
                    body.extend_from_slice(&key.to_le_bytes());
                    let mut value = [0; kv::VALUE_SIZE];
                    self.prng.fill(&mut value);
                    body.extend_from_slice(&value);
                }
            }
            kv::DELETE | kv::GET => {
                for _ in 0..self.count(kv::KEY_SIZE) {
                    let key = self.key();
                    body.extend_from_slice(&key.to_le_bytes());
                }
            }
            _ => {
                let key_min = self.key();
                let span = u128::from(self.prng.below(KV_KEY_SPACE / 8)) << 40;
                let key_max = key_min.saturating_add(span);
                let limit = self.prng.range_inclusive(1, u64::from(kv::SCAN_LIMIT_MAX)) as u32;
                body.extend_from_slice(&key_min.to_le_bytes());
                body.extend_from_slice(&key_max.to_le_bytes());
                body.extend_from_slice(&limit.to_le_bytes());
            }
        }
        Request {
            client,
            op: previous_op + 1,
            timestamp,
            operation,
            body,
        }
    }

    fn observe(&mut self, request: &Request) {
        self.apply(request);
    }

    fn check_reply(&mut self, request: &Request, reply: &[u8]) -> Result<(), String> {
        let expected = self.apply(request);
        if reply != expected {
            return Err(format!(
                "operation {} replied {} bytes; the model says {} bytes{}",
                request.operation,
                reply.len(),
                expected.len(),
                if reply.len() == expected.len() {
                    ", with other contents"
                } else {
                    ""
                }
            ));
        }
        Ok(())
    }
}

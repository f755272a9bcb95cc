//! The kv state machine: fixed-size records under `u128` keys, TigerBeetle style, in
//! one tree of an LSM forest.
//!
//! Plain Rust with no bindings: `carapace-kv-component` makes it a component, and tests
//! run it natively through [`carapace_sdk::Runner`].
//!
//! # Formats
//!
//! Every integer is little-endian; every size is fixed ([`mod@format`] has the constants
//! and the encoders a client uses).
//!
//! A key is a `u128` (16 bytes, [`KEY_SIZE`]); a value is 64 opaque bytes
//! ([`VALUE_SIZE`]). The tree (id [`KV_TREE_ID`]) stores [`Record`]s of 88 bytes
//! ([`RECORD_SIZE`]), and `get` and `scan` reply with them:
//!
//! | offset | size | field                                                              |
//! |-------:|-----:|--------------------------------------------------------------------|
//! |      0 |   16 | `key`                                                              |
//! |     16 |    8 | `timestamp` of the op that wrote it; bit 63 marks a tombstone      |
//! |     24 |   64 | `value`                                                            |
//!
//! Operations (the numbers are part of the log format; a request holds at most 64
//! keys or entries, [`KEYS_PER_OP_MAX`]):
//!
//! | operation    | body                                           | reply                        |
//! |--------------|------------------------------------------------|------------------------------|
//! | `put` (1)    | 1 to 64 entries of key (16) and value (64): 80 bytes each ([`PUT_SIZE`]) | empty |
//! | `delete` (2) | 1 to 64 keys of 16 bytes                       | 1 byte per key               |
//! | `get` (3)    | 1 to 64 keys of 16 bytes                       | 88 bytes per key             |
//! | `scan` (4)   | `key_min` (16), `key_max` (16), `limit` (4, a `u32`): 36 bytes ([`SCAN_REQUEST_SIZE`]) | 88 bytes per record, at most `limit` |
//!
//! - `put` upserts each entry in order (a later entry for the same key wins), with the
//!   op's timestamp.
//! - `delete` replies, per key in request order, 1 if the key existed just before that
//!   delete (so a second delete of a key in one request replies 0), else 0. Only keys
//!   that existed get a tombstone: deleting an absent key changes nothing.
//! - `get` replies, per key in request order, its record; for an absent key, the key
//!   then 72 zero bytes (timestamp 0, value zeros).
//! - `scan` replies the live records with `key_min <= key <= key_max`, ascending, at
//!   most `limit` ([`SCAN_LIMIT_MAX`] at most), with no padding; it needs
//!   `key_min <= key_max` and `limit >= 1`.
//!
//! `input_valid` refuses, with a reason naming the sizes ([`InvalidRequest`]), an unknown
//! operation, a body over the batch size limit, a body that is not 1 to 64 whole
//! entries (or not 36 bytes, for a scan), a scan's empty range or limit out of range,
//! and any request whose largest reply (get: keys × 88, scan: limit × 88, delete: keys)
//! is over the reply size limit.
//!
//! # Steps
//!
//! Prefetch reads everything commit needs into a buffer allocated at init: a delete's
//! reply (whether each key exists), a get's records, a scan's records; a put needs
//! nothing. Commit is pure over that buffer: it writes the reply and applies puts and
//! deletes to the forest's memory table.

#![warn(missing_docs)]

use carapace_lsm::forest::Forest;
use carapace_lsm::groove::TOMBSTONE_BIT;
use carapace_lsm::table::{Layout, Value};
use carapace_lsm::tree::TreeConfig;
use carapace_sdk::{Context, Failure, Identity, Level, Options, Reply, StateMachine, Statistic};

pub mod format;
mod settings;

pub use format::{
    InvalidRequest, KEY_SIZE, KEYS_PER_OP_MAX, Limits, Operation, PUT_SIZE, RECORD_SIZE, Record,
    Request, SCAN_LIMIT_MAX, SCAN_REQUEST_SIZE, ScanRequest, VALUE_SIZE,
};
pub use settings::Settings;

/// The largest `batch_size_limit` the machine accepts: TigerBeetle's message body size
/// limit, as the echo machine's, so that one host configuration serves both. The largest
/// body kv accepts is 64 put entries (5,120 bytes) whatever the limit says, and no buffer
/// is sized by the limit, so a larger one costs nothing.
pub const BATCH_SIZE_LIMIT_MAX: u32 = 1024 * 1024 - 256;

/// The id of the records' tree, recorded in its blocks.
pub const KV_TREE_ID: u16 = 1;

/// The records' tree's position in the forest.
const RECORDS: usize = 0;

/// The prefetch buffer's size: the largest reply prefetch prepares, a get of 64 keys or
/// a scan of 64 records.
const PREFETCH_SIZE_MAX: usize = KEYS_PER_OP_MAX * RECORD_SIZE;

const _: () = assert!(SCAN_LIMIT_MAX as usize * RECORD_SIZE <= PREFETCH_SIZE_MAX);

/// What prefetch prepared, for the op it ran for.
#[derive(Debug)]
struct Prefetched {
    op: u64,
    operation: Option<Operation>,
    /// The reply of a delete, get or scan; empty for a put.
    reply: Vec<u8>,
}

/// The kv state machine.
#[derive(Debug)]
pub struct Kv {
    context: Context,
    limits: Limits,
    forest: Forest,
    prefetched: Prefetched,
    /// The last op committed (or the checkpoint's op, after open).
    op_committed: u64,
    /// The last op compacted.
    op_compacted: u64,
    checkpoint_state: Vec<u8>,
}

impl Kv {
    /// The forest (for tests and inspection).
    pub fn forest(&self) -> &Forest {
        &self.forest
    }

    /// The last committed op.
    pub fn op_committed(&self) -> u64 {
        self.op_committed
    }

    /// Writes one op may make at most: one per key of a delete, the densest body.
    fn writes_per_op_max(batch_size_limit: u32) -> Result<usize, Failure> {
        let batch_size_limit = usize::try_from(batch_size_limit).map_err(|_| {
            Failure::InvalidArgument(format!(
                "batch size limit {batch_size_limit} does not fit this target's memory"
            ))
        })?;
        Ok((batch_size_limit / KEY_SIZE).clamp(1, KEYS_PER_OP_MAX))
    }

    fn parse<'a>(&self, operation: u8, body: &'a [u8]) -> Result<Request<'a>, InvalidRequest> {
        Request::parse(operation, body, &self.limits)
    }
}

impl StateMachine for Kv {
    const IDENTITY: Identity = Identity {
        name: "kv",
        version: env!("CARGO_PKG_VERSION"),
        state_format: 1,
    };

    fn init(context: Context, options: &Options) -> Result<Kv, Failure> {
        let settings = settings::parse(&options.settings)?;
        if !(1..=BATCH_SIZE_LIMIT_MAX).contains(&options.batch_size_limit) {
            return Err(Failure::InvalidArgument(format!(
                "batch size limit {} is not in 1..={BATCH_SIZE_LIMIT_MAX}",
                options.batch_size_limit
            )));
        }
        // u64: the same comparison on 32-bit and 64-bit targets.
        if u64::from(options.reply_size_limit) < RECORD_SIZE as u64 {
            return Err(Failure::InvalidArgument(format!(
                "reply size limit {} is below one record of {RECORD_SIZE} bytes",
                options.reply_size_limit
            )));
        }
        // A memory table holds a bar of the most writes an op may make.
        let writes_per_op_max = Self::writes_per_op_max(options.batch_size_limit)?;
        let values_per_bar_max = usize::try_from(settings.bar_ops)
            .ok()
            .and_then(|bar_ops| bar_ops.checked_mul(writes_per_op_max))
            .ok_or_else(|| {
                Failure::InvalidArgument(format!(
                    "a bar of {} ops of {writes_per_op_max} writes does not fit this target's memory",
                    settings.bar_ops
                ))
            })?;
        let shape = settings.shape();
        let tree = TreeConfig {
            tree_id: KV_TREE_ID,
            layout: Layout::of::<Record>(),
            values_per_bar_max,
            table_count_max: settings.table_count_max,
        };
        let mut forest = Forest::new(
            context.clone(),
            options.block_size,
            options.block_count,
            settings.grid_cache_blocks,
            shape,
            &[tree],
        )?;
        forest.set_scrub(settings.scrub);
        forest.check_checkpoint_interval(options.checkpoint_interval_ops)?;
        Ok(Kv {
            context,
            limits: Limits {
                batch_size_limit: options.batch_size_limit,
                reply_size_limit: options.reply_size_limit,
            },
            forest,
            prefetched: Prefetched {
                op: 0,
                operation: None,
                reply: Vec::with_capacity(PREFETCH_SIZE_MAX),
            },
            op_committed: 0,
            op_compacted: 0,
            checkpoint_state: Vec::new(),
        })
    }

    async fn open(&mut self, checkpoint: Option<&[u8]>) -> Result<(), Failure> {
        if let Some(bytes) = checkpoint {
            let op = self.forest.open(bytes).await?;
            self.op_committed = op;
            self.op_compacted = op;
            self.checkpoint_state = bytes.to_vec();
            self.context.log(
                Level::Info,
                &format!(
                    "opened checkpoint at op {op} with {} tables",
                    self.forest.tree(RECORDS).tables().len()
                ),
            );
        }
        self.forest.arm_scrubber();
        Ok(())
    }

    fn input_valid(&self, operation: u8, body: &[u8]) -> Result<(), String> {
        self.parse(operation, body)
            .map(|_| ())
            .map_err(|invalid| invalid.to_string())
    }

    async fn prefetch(&mut self, op: u64, operation: u8, body: &[u8]) -> Result<(), Failure> {
        if op != self.op_compacted + 1 {
            return Err(Failure::Protocol(format!(
                "prefetch of op {op} after op {} was compacted",
                self.op_compacted
            )));
        }
        let request = self.parse(operation, body).map_err(|invalid| {
            Failure::Protocol(format!("prefetch of an invalid request: {invalid}"))
        })?;
        self.prefetched.op = op;
        self.prefetched.operation = Some(request.operation());
        let reply = &mut self.prefetched.reply;
        reply.clear();
        // Every lookup is at snapshot `op`: the state after op `op - 1`.
        match request {
            Request::Put(_) => {}
            Request::Delete(keys) => {
                for (position, key) in keys.iter().enumerate() {
                    // A key deleted earlier in this request no longer exists. Quadratic
                    // in the keys, which are at most 64: 2,016 comparisons.
                    let deleted_before = keys.iter().take(position).any(|other| other == key);
                    let mut bytes = [0; RECORD_SIZE];
                    let existed =
                        !deleted_before && self.forest.get(RECORDS, key, op, &mut bytes).await?;
                    reply.push(u8::from(existed));
                }
            }
            Request::Get(keys) => {
                for key in keys.iter() {
                    let start = reply.len();
                    reply.resize(start + RECORD_SIZE, 0);
                    let record = &mut reply[start..];
                    if !self.forest.get(RECORDS, key, op, record).await? {
                        Record::absent(key).encode(record);
                    }
                    assert_eq!(Record::decode(record).key, key);
                }
            }
            Request::Scan(scan) => {
                self.forest
                    .scan(
                        RECORDS,
                        scan.key_min,
                        scan.key_max,
                        op,
                        scan.limit as usize,
                        reply,
                    )
                    .await?;
                assert!(reply.len() <= scan.limit as usize * RECORD_SIZE);
            }
        }
        // The buffer was sized at init for the largest reply, so it never grew.
        assert!(reply.len() <= PREFETCH_SIZE_MAX);
        Ok(())
    }

    fn commit(
        &mut self,
        _client: u128,
        op: u64,
        timestamp: u64,
        operation: u8,
        body: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<Reply, Failure> {
        if op != self.prefetched.op || op != self.op_committed + 1 {
            return Err(Failure::Protocol(format!(
                "commit of op {op}, but op {} was prefetched and op {} committed last",
                self.prefetched.op, self.op_committed
            )));
        }
        if timestamp & TOMBSTONE_BIT != 0 {
            return Err(Failure::Protocol(format!(
                "op {op} has timestamp {timestamp}, at or past 2^63"
            )));
        }
        let request = self.parse(operation, body).map_err(|invalid| {
            Failure::Protocol(format!("commit of an invalid request: {invalid}"))
        })?;
        if self.prefetched.operation != Some(request.operation()) {
            let prefetched = self.prefetched.operation.map_or("nothing", Operation::name);
            return Err(Failure::Protocol(format!(
                "commit of a `{}` at op {op}, but `{prefetched}` was prefetched",
                request.operation()
            )));
        }
        match request {
            Request::Put(entries) => {
                assert!(self.prefetched.reply.is_empty());
                let mut bytes = [0; RECORD_SIZE];
                for (key, value) in entries.iter() {
                    let record = Record {
                        key,
                        timestamp,
                        value: *value,
                    };
                    record.encode(&mut bytes);
                    self.forest.put(RECORDS, &bytes);
                }
            }
            Request::Delete(keys) => {
                let existed = &self.prefetched.reply;
                assert_eq!(existed.len(), keys.len());
                for (key, &existed) in keys.iter().zip(existed) {
                    if existed == 1 {
                        self.forest.remove(RECORDS, key);
                    }
                }
                reply.extend_from_slice(existed);
            }
            Request::Get(_) | Request::Scan(_) => {
                reply.extend_from_slice(&self.prefetched.reply);
            }
        }
        self.op_committed = op;
        Ok(Reply::Written)
    }

    async fn compact(&mut self, op: u64) -> Result<(), Failure> {
        if op != self.op_committed || op != self.op_compacted + 1 {
            return Err(Failure::Protocol(format!(
                "compact of op {op}, but op {} committed and op {} compacted last",
                self.op_committed, self.op_compacted
            )));
        }
        self.forest.compact(op).await?;
        self.op_compacted = op;
        Ok(())
    }

    async fn checkpoint(&mut self, op: u64) -> Result<(), Failure> {
        if op != self.op_compacted {
            return Err(Failure::Protocol(format!(
                "checkpoint at op {op}, but op {} was compacted last",
                self.op_compacted
            )));
        }
        let state = self.forest.checkpoint(op).await?;
        self.checkpoint_state = state.encode();
        Ok(())
    }

    fn checkpoint_state(&self) -> Vec<u8> {
        self.checkpoint_state.clone()
    }

    async fn timer(&mut self, id: u64) -> Result<(), Failure> {
        if !Forest::owns_timer(id) {
            return Err(Failure::Protocol(format!(
                "timer {id} fired, but kv arms only the scrubber's"
            )));
        }
        self.forest.timer(id).await
    }

    fn describe(&self) -> Vec<Statistic> {
        let mut statistics = vec![Statistic {
            name: "ops committed".into(),
            values: vec![self.op_committed],
        }];
        statistics.extend(self.forest.describe());
        statistics
    }
}

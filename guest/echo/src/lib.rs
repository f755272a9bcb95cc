//! The echo state machine, after TigerBeetle's testing state machine.
//!
//! Every committed `echo` request is echoed back as its reply, and a [`Thing`]
//! `{timestamp, value, id}` is inserted into an LSM forest that lives in the grid, with
//! `id = op` and `value` = the low 64 bits of a checksum over
//! `(client, op, timestamp, operation, body)`. A `lookup` reads Things back by id, so
//! that clients can see what was stored.
//!
//! The Things groove has three trees, as TigerBeetle's testing state machine: the
//! object tree keyed by timestamp, a unique index `id -> timestamp`, and a composite
//! index on `value`. Prefetch looks each id up (index, then object) into the prefetch
//! cache; commit reads only that cache.
//!
//! Plain Rust with no bindings: the component adapter and the native host run it
//! through [`carapace_sdk::Runner`].

#![warn(missing_docs)]

use carapace_lsm::checksum::checksum_joined;
use carapace_lsm::forest::Forest;
use carapace_lsm::groove::{CompositeKey, TOMBSTONE_BIT, UniqueKey};
use carapace_lsm::table::{Layout, Value};
use carapace_lsm::tree::TreeConfig;
use carapace_sdk::{Context, Failure, Identity, Level, Options, Reply, StateMachine, Statistic};

mod settings;

pub use settings::Settings;

/// The operations of the echo machine. The numbers are part of the log format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Operation {
    /// Reply with the request body; insert a Thing for the op.
    Echo = 1,
    /// Body: one or more ids (16 bytes each, little-endian). Reply: the Thing of each id
    /// that exists (32 bytes each, in request order). Inserts nothing.
    Lookup = 2,
}

impl Operation {
    /// The operation numbered `operation`, if there is one.
    pub fn from_u8(operation: u8) -> Option<Operation> {
        match operation {
            1 => Some(Operation::Echo),
            2 => Some(Operation::Lookup),
            _ => None,
        }
    }
}

/// The largest body the machine accepts whatever the options say: TigerBeetle's message
/// body size limit. It bounds the prefetch and reply buffers allocated at init.
pub const BATCH_SIZE_LIMIT_MAX: u32 = 1024 * 1024 - 256;

/// Bytes of an id in a `lookup` body.
pub const ID_SIZE: usize = 16;

/// The tree ids of the Things groove, recorded in their blocks: the object tree, the
/// unique index on `id`, the composite index on `value`.
pub const THINGS_TREE_ID: u16 = 1;
/// See [`THINGS_TREE_ID`].
pub const THINGS_ID_TREE_ID: u16 = 2;
/// See [`THINGS_TREE_ID`].
pub const THINGS_VALUE_TREE_ID: u16 = 3;

/// Positions of the trees in the forest.
const OBJECTS: usize = 0;
const IDS: usize = 1;
const VALUES: usize = 2;

/// The first op whose reply the `divergent-test-version` build changes.
#[cfg(feature = "divergent-test-version")]
pub const DIVERGENT_FROM_OP: u64 = 100;

/// The body prefix on which the `poison-test-version` build panics in `commit`.
#[cfg(feature = "poison-test-version")]
pub const POISON_PREFIX: &[u8] = b"poison";

/// The `order-leak-test-version` build lets the order in which two reads complete
/// change the value of the next Thing: state that depends on I/O completion order, which
/// the simulator must catch.
#[cfg(feature = "order-leak-test-version")]
async fn second_read_completed_first(context: &Context) -> bool {
    use std::future::Future;
    use std::task::Poll;
    let mut first = std::pin::pin!(context.read(1));
    let mut second = std::pin::pin!(context.read(2));
    let (mut first_done, mut second_done) = (false, false);
    let mut second_first = false;
    std::future::poll_fn(|cx| {
        if !first_done && first.as_mut().poll(cx).is_ready() {
            first_done = true;
        }
        if !second_done && second.as_mut().poll(cx).is_ready() {
            second_done = true;
            second_first = !first_done;
        }
        if first_done && second_done {
            Poll::Ready(second_first)
        } else {
            Poll::Pending
        }
    })
    .await
}

/// The timer id of the periodic statistics message.
pub const STATS_TIMER_ID: u64 = 1;

/// The record inserted per committed echo op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thing {
    /// The timestamp of the op that inserted it.
    pub timestamp: u64,
    /// The low 64 bits of the checksum of the op's request; see [`thing_value`].
    pub value: u64,
    /// The op that inserted it.
    pub id: u128,
}

impl Value for Thing {
    /// timestamp (8), value (8), id (16), little-endian.
    const SIZE: usize = 32;

    /// Things are keyed by timestamp in the object tree.
    fn key(&self) -> u128 {
        u128::from(self.timestamp & !TOMBSTONE_BIT)
    }

    fn is_tombstone(&self) -> bool {
        self.timestamp & TOMBSTONE_BIT != 0
    }

    fn tombstone(key: u128) -> Thing {
        Thing {
            timestamp: key as u64 | TOMBSTONE_BIT,
            value: 0,
            id: 0,
        }
    }

    fn encode(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.timestamp.to_le_bytes());
        out[8..16].copy_from_slice(&self.value.to_le_bytes());
        out[16..32].copy_from_slice(&self.id.to_le_bytes());
    }

    fn decode(bytes: &[u8]) -> Thing {
        Thing {
            timestamp: u64::from_le_bytes(bytes[0..8].try_into().unwrap()),
            value: u64::from_le_bytes(bytes[8..16].try_into().unwrap()),
            id: u128::from_le_bytes(bytes[16..32].try_into().unwrap()),
        }
    }
}

/// The low 64 bits of the checksum over `(client, op, timestamp, operation, body)`, each
/// field little-endian in that order.
pub fn thing_value(client: u128, op: u64, timestamp: u64, operation: u8, body: &[u8]) -> u64 {
    let mut header = [0; 16 + 8 + 8 + 1];
    header[0..16].copy_from_slice(&client.to_le_bytes());
    header[16..24].copy_from_slice(&op.to_le_bytes());
    header[24..32].copy_from_slice(&timestamp.to_le_bytes());
    header[32] = operation;
    checksum_joined(&header, body) as u64
}

/// What prefetch loaded for the op it ran for.
#[derive(Debug)]
struct Prefetched {
    op: u64,
    /// `(id, thing)` per id the op reads, in request order.
    things: Vec<(u128, Option<Thing>)>,
}

/// The echo state machine.
#[derive(Debug)]
pub struct Echo {
    context: Context,
    settings: Settings,
    batch_size_limit: u32,
    reply_size_limit: u32,
    forest: Forest,
    prefetched: Prefetched,
    /// The last op committed (or the checkpoint's op, after open).
    op_committed: u64,
    /// The last op compacted.
    op_compacted: u64,
    checkpoint_state: Vec<u8>,
    /// What completion order has leaked into state (the `order-leak-test-version`).
    #[cfg(feature = "order-leak-test-version")]
    leak: u64,
}

impl Echo {
    /// The forest (for tests and inspection).
    pub fn forest(&self) -> &Forest {
        &self.forest
    }

    /// The Thing with `id` as op `snapshot` sees it: the unique index gives its
    /// timestamp, the object tree the Thing.
    async fn get_thing(&self, id: u128, snapshot: u64) -> Result<Option<Thing>, Failure> {
        let mut bytes = [0; Thing::SIZE];
        // An echo's id is new, above every key the index holds: decided without a
        // block, and without making the lookup's future.
        let indexed = match self.forest.get_without_io(IDS, id, &mut bytes) {
            Some(found) => found,
            None => self.forest.get(IDS, id, snapshot, &mut bytes).await?,
        };
        if !indexed {
            return Ok(None);
        }
        let index = UniqueKey::decode(&bytes);
        if !self
            .forest
            .get(OBJECTS, u128::from(index.timestamp), snapshot, &mut bytes)
            .await?
        {
            return Err(Failure::CorruptBlock(format!(
                "thing {id} is indexed at timestamp {} but not stored",
                index.timestamp
            )));
        }
        Ok(Some(Thing::decode(&bytes)))
    }

    fn insert_thing(&mut self, thing: &Thing) {
        let mut bytes = [0; Thing::SIZE];
        thing.encode(&mut bytes);
        self.forest.put(OBJECTS, &bytes);
        let index = UniqueKey {
            key: thing.id,
            timestamp: thing.timestamp,
        };
        index.encode(&mut bytes);
        self.forest.put(IDS, &bytes[..UniqueKey::SIZE]);
        let index = CompositeKey {
            field: thing.value,
            timestamp: thing.timestamp,
        };
        index.encode(&mut bytes);
        self.forest.put(VALUES, &bytes[..CompositeKey::SIZE]);
    }

    /// The last committed op.
    pub fn op_committed(&self) -> u64 {
        self.op_committed
    }

    fn ids_max(batch_size_limit: u32) -> usize {
        (batch_size_limit as usize / ID_SIZE).max(1)
    }

    fn protocol(&self, what: String) -> Failure {
        Failure::Protocol(what)
    }

    /// Arm the statistics timer at the next multiple of the interval after `now`, so
    /// that a machine reopened at a checkpoint arms it for the same timestamp.
    fn arm_stats_timer(&self) {
        let interval = self.settings.stats_interval;
        if let Some(intervals) = self.context.now().checked_div(interval) {
            let at = intervals.saturating_add(1).saturating_mul(interval);
            self.context.set_timer(STATS_TIMER_ID, at);
        }
    }
}

impl StateMachine for Echo {
    const IDENTITY: Identity = Identity {
        name: "echo",
        #[cfg(not(feature = "divergent-test-version"))]
        version: env!("CARGO_PKG_VERSION"),
        #[cfg(feature = "divergent-test-version")]
        version: concat!(env!("CARGO_PKG_VERSION"), "+divergent"),
        state_format: 1,
    };

    fn init(context: Context, options: &Options) -> Result<Echo, Failure> {
        let settings = Settings::parse(&options.settings)?;
        if !(1..=BATCH_SIZE_LIMIT_MAX).contains(&options.batch_size_limit) {
            return Err(Failure::InvalidArgument(format!(
                "batch size limit {} is not in 1..={BATCH_SIZE_LIMIT_MAX}",
                options.batch_size_limit
            )));
        }
        // An echo reply is its request's body.
        if options.reply_size_limit < options.batch_size_limit {
            return Err(Failure::InvalidArgument(format!(
                "reply size limit {} is below the batch size limit {}: echo replies with the body",
                options.reply_size_limit, options.batch_size_limit
            )));
        }
        let shape = settings.forest.shape();
        let tree = |tree_id, layout| TreeConfig {
            tree_id,
            layout,
            // One insert per tree per op.
            values_per_bar_max: settings.forest.bar_ops as usize,
            table_count_max: settings.forest.table_count_max,
        };
        let trees = [
            tree(THINGS_TREE_ID, Layout::of::<Thing>()),
            tree(THINGS_ID_TREE_ID, Layout::of::<UniqueKey>()),
            tree(THINGS_VALUE_TREE_ID, Layout::of::<CompositeKey>()),
        ];
        let mut forest = Forest::new(
            context.clone(),
            options.block_size,
            options.block_count,
            settings.forest.grid_cache_blocks,
            shape,
            &trees,
        )?;
        forest.set_scrub(settings.forest.scrub);
        forest.check_checkpoint_interval(options.checkpoint_interval_ops)?;
        Ok(Echo {
            context,
            settings,
            batch_size_limit: options.batch_size_limit,
            reply_size_limit: options.reply_size_limit,
            forest,
            prefetched: Prefetched {
                op: 0,
                things: Vec::with_capacity(Self::ids_max(options.batch_size_limit)),
            },
            op_committed: 0,
            op_compacted: 0,
            checkpoint_state: Vec::new(),
            #[cfg(feature = "order-leak-test-version")]
            leak: 0,
        })
    }

    async fn open(&mut self, checkpoint: Option<&[u8]>) -> Result<(), Failure> {
        if let Some(bytes) = checkpoint {
            let op = self.forest.open(bytes).await?;
            self.op_committed = op;
            self.op_compacted = op;
            self.checkpoint_state = bytes.to_vec();
            let tables: usize = (0..3)
                .map(|tree| self.forest.tree(tree).tables().len())
                .sum();
            self.context.log(
                Level::Info,
                &format!("opened checkpoint at op {op} with {tables} tables"),
            );
        }
        self.arm_stats_timer();
        self.forest.arm_scrubber();
        Ok(())
    }

    fn input_valid(&self, operation: u8, body: &[u8]) -> Result<(), String> {
        if body.len() > self.batch_size_limit as usize {
            return Err(format!(
                "body of {} bytes exceeds the batch size limit of {} bytes",
                body.len(),
                self.batch_size_limit
            ));
        }
        match Operation::from_u8(operation) {
            Some(Operation::Echo) => Ok(()),
            Some(Operation::Lookup) if body.is_empty() || !body.len().is_multiple_of(ID_SIZE) => {
                Err(format!(
                    "lookup body of {} bytes is not one or more ids of {ID_SIZE} bytes",
                    body.len()
                ))
            }
            Some(Operation::Lookup)
                if body.len() / ID_SIZE * Thing::SIZE > self.reply_size_limit as usize =>
            {
                Err(format!(
                    "lookup of {} ids could reply with more than the reply size limit of {} bytes",
                    body.len() / ID_SIZE,
                    self.reply_size_limit
                ))
            }
            Some(Operation::Lookup) => Ok(()),
            None => Err(format!("unknown operation {operation}")),
        }
    }

    async fn prefetch(&mut self, op: u64, operation: u8, body: &[u8]) -> Result<(), Failure> {
        if op != self.op_compacted + 1 {
            return Err(self.protocol(format!(
                "prefetch of op {op} after op {} was compacted",
                self.op_compacted
            )));
        }
        if let Err(reason) = self.input_valid(operation, body) {
            return Err(self.protocol(format!("prefetch of an invalid request: {reason}")));
        }
        self.prefetched.op = op;
        self.prefetched.things.clear();
        match Operation::from_u8(operation) {
            Some(Operation::Echo) => {
                let thing = self.get_thing(u128::from(op), op).await?;
                self.prefetched.things.push((u128::from(op), thing));
            }
            Some(Operation::Lookup) => {
                for id in body.chunks_exact(ID_SIZE) {
                    let id = u128::from_le_bytes(id.try_into().unwrap());
                    let thing = self.get_thing(id, op).await?;
                    self.prefetched.things.push((id, thing));
                }
            }
            None => unreachable!("input_valid accepted operation {operation}"),
        }
        Ok(())
    }

    fn commit(
        &mut self,
        client: u128,
        op: u64,
        timestamp: u64,
        operation: u8,
        body: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<Reply, Failure> {
        if op != self.prefetched.op || op != self.op_committed + 1 {
            return Err(self.protocol(format!(
                "commit of op {op}, but op {} was prefetched and op {} committed last",
                self.prefetched.op, self.op_committed
            )));
        }
        if timestamp & TOMBSTONE_BIT != 0 {
            return Err(self.protocol(format!(
                "op {op} has timestamp {timestamp}, at or past 2^63"
            )));
        }
        let kind = match Operation::from_u8(operation) {
            Some(Operation::Echo) => {
                #[cfg(feature = "poison-test-version")]
                assert!(
                    !body.starts_with(POISON_PREFIX),
                    "the poison test version panics on a poison body"
                );
                let (id, existing) = self.prefetched.things[0];
                assert_eq!(id, u128::from(op));
                assert!(
                    existing.is_none(),
                    "thing {id} exists before its op commits"
                );
                let value = thing_value(client, op, timestamp, operation, body);
                #[cfg(feature = "order-leak-test-version")]
                let value = value ^ self.leak;
                self.insert_thing(&Thing {
                    timestamp,
                    value,
                    id,
                });
                #[cfg(feature = "divergent-test-version")]
                if op >= DIVERGENT_FROM_OP {
                    reply.extend_from_slice(body);
                    reply.push(0);
                }
                // The reply is the body itself, handed to the host where it lies, unless
                // the divergent test version wrote one of its own.
                if reply.is_empty() {
                    Reply::Body(0..body.len())
                } else {
                    Reply::Written
                }
            }
            Some(Operation::Lookup) => {
                for (_, thing) in &self.prefetched.things {
                    if let Some(thing) = thing {
                        let start = reply.len();
                        reply.resize(start + Thing::SIZE, 0);
                        thing.encode(&mut reply[start..]);
                    }
                }
                Reply::Written
            }
            None => {
                return Err(self.protocol(format!("commit of unknown operation {operation}")));
            }
        };
        self.op_committed = op;
        Ok(kind)
    }

    async fn compact(&mut self, op: u64) -> Result<(), Failure> {
        if op != self.op_committed || op != self.op_compacted + 1 {
            return Err(self.protocol(format!(
                "compact of op {op}, but op {} committed and op {} compacted last",
                self.op_committed, self.op_compacted
            )));
        }
        #[cfg(feature = "order-leak-test-version")]
        {
            self.leak ^= u64::from(second_read_completed_first(&self.context).await);
        }
        self.forest.compact(op).await?;
        self.op_compacted = op;
        Ok(())
    }

    async fn checkpoint(&mut self, op: u64) -> Result<(), Failure> {
        if op != self.op_compacted {
            return Err(self.protocol(format!(
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

    fn describe(&self) -> Vec<Statistic> {
        let mut statistics = vec![Statistic {
            name: "ops committed".into(),
            values: vec![self.op_committed],
        }];
        statistics.extend(self.forest.describe());
        statistics
    }

    async fn timer(&mut self, id: u64) -> Result<(), Failure> {
        if Forest::owns_timer(id) {
            return self.forest.timer(id).await;
        }
        if id != STATS_TIMER_ID {
            return Err(self.protocol(format!("timer {id} was never armed")));
        }
        let free_set = self.forest.grid().free_set();
        let tables: Vec<usize> = (0..3)
            .map(|tree| self.forest.tree(tree).tables().len())
            .collect();
        self.context.log(
            Level::Info,
            &format!(
                "stats at op {}: tables per tree {tables:?}, {} of {} blocks in use",
                self.op_committed,
                free_set.acquired_count(),
                free_set.block_count()
            ),
        );
        self.arm_stats_timer();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use carapace_lsm::checksum::checksum;

    /// The value by its definition: the checksum of the fields side by side.
    fn value_by_definition(
        client: u128,
        op: u64,
        timestamp: u64,
        operation: u8,
        body: &[u8],
    ) -> u64 {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&client.to_le_bytes());
        bytes.extend_from_slice(&op.to_le_bytes());
        bytes.extend_from_slice(&timestamp.to_le_bytes());
        bytes.push(operation);
        bytes.extend_from_slice(body);
        checksum(&bytes) as u64
    }

    #[test]
    fn thing_value_is_the_checksum_of_the_fields_side_by_side() {
        let body: Vec<u8> = (0..3000u32).map(|index| (index * 7 + 3) as u8).collect();
        for size in (0..=300).chain([999, 1000, 2999, 3000]) {
            let (client, op, timestamp) =
                (0x0123_4567_89ab_cdef_u128 << 40 | 17, 7 + size as u64, 99);
            assert_eq!(
                thing_value(client, op, timestamp, 1, &body[..size]),
                value_by_definition(client, op, timestamp, 1, &body[..size]),
                "body of {size} bytes"
            );
        }
    }
}

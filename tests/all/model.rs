//! The forest against a `BTreeMap`: seeded puts, overwrites and removes over a small key
//! space (so tables overlap, merge and drop tombstones across several levels), with
//! reads checked on the way and every checkpoint reopened and compared key by key.
//! Natively through a model machine, and through the wasm host with the echo machine.

use std::collections::BTreeMap;

use carapace::Options;
use carapace::imports::IoOrder;
use carapace::native::NativeInstance;
use carapace::prng::Prng;
use carapace::replica::{Checkpoint, Replica, Request};
use carapace::storage::MemoryStorage;
use carapace::wasm::{Limits, Runtime};
use carapace_echo::{Operation, Thing, thing_value};
use carapace_lsm::forest::Forest;
use carapace_lsm::groove::TOMBSTONE_BIT;
use carapace_lsm::table::{Layout, Value};
use carapace_lsm::tree::{Shape, TreeConfig};
use carapace_sdk::{Context, Failure, Reply, StateMachine};

use crate::support::*;

/// A key-value pair; a value with [`TOMBSTONE_BIT`] set is a tombstone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    key: u64,
    value: u64,
}

impl Value for Entry {
    const SIZE: usize = 16;

    fn key(&self) -> u128 {
        u128::from(self.key)
    }

    fn is_tombstone(&self) -> bool {
        self.value & TOMBSTONE_BIT != 0
    }

    fn tombstone(key: u128) -> Entry {
        Entry {
            key: key as u64,
            value: TOMBSTONE_BIT,
        }
    }

    fn encode(&self, out: &mut [u8]) {
        out[0..8].copy_from_slice(&self.key.to_le_bytes());
        out[8..16].copy_from_slice(&self.value.to_le_bytes());
    }

    fn decode(bytes: &[u8]) -> Entry {
        Entry {
            key: u64::from_le_bytes(bytes[0..8].try_into().unwrap()),
            value: u64::from_le_bytes(bytes[8..16].try_into().unwrap()),
        }
    }
}

/// Body: `(key, value)` pairs of 16 bytes; a value with the tombstone bit removes.
const PUT: u8 = 1;
/// Body: keys of 8 bytes. Reply: per key, its value or `ABSENT`.
const GET: u8 = 2;
const ABSENT: u64 = u64::MAX;
const ENTRIES_PER_OP_MAX: usize = 8;
const KEY_SPACE: u64 = 2_000;

/// A key-value state machine over one tree of the forest.
struct ModelMachine {
    forest: Forest,
    prefetched: Vec<(u64, Option<u64>)>,
    checkpoint_state: Vec<u8>,
}

const SHAPE: Shape = Shape {
    bar_ops: 4,
    levels: 4,
    growth_factor: 2,
    value_blocks_per_table_max: 1,
    flush_bars_max: 2,
};

impl StateMachine for ModelMachine {
    const IDENTITY: carapace_sdk::Identity = carapace_sdk::Identity {
        name: "model",
        version: "0.0.0",
        state_format: 1,
    };

    fn init(context: Context, options: &carapace_sdk::Options) -> Result<ModelMachine, Failure> {
        let tree = TreeConfig {
            tree_id: 1,
            layout: Layout::of::<Entry>(),
            values_per_bar_max: SHAPE.bar_ops as usize * ENTRIES_PER_OP_MAX,
            table_count_max: 4096,
        };
        Ok(ModelMachine {
            forest: Forest::new(
                context,
                options.block_size,
                options.block_count,
                16,
                SHAPE,
                &[tree],
            )?,
            prefetched: Vec::with_capacity(ENTRIES_PER_OP_MAX),
            checkpoint_state: Vec::new(),
        })
    }

    async fn open(&mut self, checkpoint: Option<&[u8]>) -> Result<(), Failure> {
        if let Some(bytes) = checkpoint {
            self.forest.open(bytes).await?;
            self.checkpoint_state = bytes.to_vec();
        }
        Ok(())
    }

    fn input_valid(&self, operation: u8, body: &[u8]) -> Result<(), String> {
        let size = match operation {
            PUT => 16,
            GET => 8,
            _ => return Err(format!("unknown operation {operation}")),
        };
        let count = body.len() / size;
        if !body.len().is_multiple_of(size) || !(1..=ENTRIES_PER_OP_MAX).contains(&count) {
            return Err(format!("body of {} bytes", body.len()));
        }
        Ok(())
    }

    async fn prefetch(&mut self, op: u64, operation: u8, body: &[u8]) -> Result<(), Failure> {
        self.prefetched.clear();
        if operation == GET {
            for key in body.chunks_exact(8) {
                let key = u64::from_le_bytes(key.try_into().unwrap());
                let mut bytes = [0; Entry::SIZE];
                let found = self.forest.get(0, u128::from(key), op, &mut bytes).await?;
                self.prefetched
                    .push((key, found.then(|| Entry::decode(&bytes).value)));
            }
        }
        Ok(())
    }

    fn commit(
        &mut self,
        _: u128,
        _: u64,
        _: u64,
        operation: u8,
        body: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<Reply, Failure> {
        if operation == PUT {
            for pair in body.chunks_exact(16) {
                let entry = Entry::decode(pair);
                if entry.is_tombstone() {
                    self.forest.remove(0, entry.key());
                } else {
                    self.forest.put(0, pair);
                }
            }
        } else {
            for (_, value) in &self.prefetched {
                reply.extend_from_slice(&value.unwrap_or(ABSENT).to_le_bytes());
            }
        }
        Ok(Reply::Written)
    }

    async fn compact(&mut self, op: u64) -> Result<(), Failure> {
        self.forest.compact(op).await
    }

    async fn checkpoint(&mut self, op: u64) -> Result<(), Failure> {
        self.checkpoint_state = self.forest.checkpoint(op).await?.encode();
        Ok(())
    }

    fn checkpoint_state(&self) -> Vec<u8> {
        self.checkpoint_state.clone()
    }

    async fn timer(&mut self, _: u64) -> Result<(), Failure> {
        Ok(())
    }

    fn describe(&self) -> Vec<carapace_sdk::Statistic> {
        self.forest.describe()
    }
}

/// The values of the machine's statistic `name`.
fn statistic(replica: &mut Replica, name: &str) -> Vec<u64> {
    let statistics = replica.describe().unwrap();
    let found = statistics.iter().find(|statistic| statistic.name == name);
    found
        .unwrap_or_else(|| panic!("no statistic `{name}`"))
        .values
        .clone()
}

fn model_config() -> Options {
    Options {
        batch_size_limit: 256,
        reply_size_limit: 1 << 20,
        checkpoint_interval_ops: CHECKPOINT_INTERVAL_OPS,
        block_size: BLOCK_SIZE,
        block_count: BLOCK_COUNT,
        settings: Vec::new(),
    }
}

fn open_model(storage: &MemoryStorage, order: IoOrder, checkpoint: Option<Checkpoint>) -> Replica {
    Replica::open(
        Box::new(NativeInstance::<ModelMachine>::new(context(storage, order))),
        model_config(),
        checkpoint,
    )
    .unwrap()
}

fn request(replica: &Replica, operation: u8, body: Vec<u8>) -> Request {
    Request {
        client: 1,
        op: replica.op() + 1,
        timestamp: replica.timestamp() + 1,
        operation,
        body,
    }
}

/// Read `keys` through GET ops and return what the machine answered.
fn get_all(replica: &mut Replica, keys: &[u64]) -> Vec<Option<u64>> {
    let mut values = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(ENTRIES_PER_OP_MAX) {
        let body = chunk.iter().flat_map(|key| key.to_le_bytes()).collect();
        let request = request(replica, GET, body);
        let reply = replica.commit(&request).unwrap();
        values.extend(
            reply
                .chunks_exact(8)
                .map(|value| u64::from_le_bytes(value.try_into().unwrap()))
                .map(|value| (value != ABSENT).then_some(value)),
        );
    }
    values
}

#[test]
fn the_forest_matches_a_btreemap_across_levels_compactions_and_checkpoints() {
    model_run(77, 3_000, KEY_SPACE, 4, true);
}

/// Regression (found by a seed sweep): an immutable table flushed into level 0 merged a
/// level-0 table whose keys reached past the immutable table's range, and tombstones
/// there were dropped although a deeper level still held the values they deleted.
#[test]
fn tombstones_survive_a_flush_that_merges_wider_level_0_tables() {
    model_run(4, 1_500, 100, 2, false);
}

/// Run `ops` seeded ops over `key_space` keys, one in `remove_one_in` writes a
/// removal, checking reads against the model; with `reopen`, also reopen every
/// checkpoint and compare every key.
fn model_run(seed: u64, ops: usize, key_space: u64, remove_one_in: u64, reopen: bool) {
    let storage = MemoryStorage::new();
    let mut replica = open_model(&storage, IoOrder::Seeded(1), None);
    let mut prng = Prng::new(seed);
    let mut model: BTreeMap<u64, u64> = BTreeMap::new();
    let mut checkpoints = Vec::new();
    for _ in 0..ops {
        let count = 1 + prng.below(ENTRIES_PER_OP_MAX as u64) as usize;
        if prng.below(5) == 0 {
            let keys: Vec<u64> = (0..count).map(|_| prng.below(key_space)).collect();
            let got = get_all(&mut replica, &keys);
            let expected: Vec<Option<u64>> =
                keys.iter().map(|key| model.get(key).copied()).collect();
            assert_eq!(got, expected, "op {}", replica.op());
        } else {
            let mut body = Vec::new();
            for _ in 0..count {
                let key = prng.below(key_space);
                let value = if prng.below(remove_one_in) == 0 {
                    model.remove(&key);
                    TOMBSTONE_BIT
                } else {
                    let value = prng.below(1 << 40);
                    model.insert(key, value);
                    value
                };
                body.extend_from_slice(&key.to_le_bytes());
                body.extend_from_slice(&value.to_le_bytes());
            }
            let request = request(&replica, PUT, body);
            replica.commit(&request).unwrap();
        }
        if let Some(checkpoint) = replica.checkpoint_taken_at(replica.op()) {
            checkpoints.push((checkpoint.clone(), storage.snapshot(), model.clone()));
        }
    }

    if !reopen {
        return;
    }
    let tables_per_level = statistic(&mut replica, "tree 1 tables per level");
    let levels_in_use = tables_per_level
        .iter()
        .filter(|&&tables| tables > 0)
        .count();
    assert!(levels_in_use >= 3, "tables per level: {tables_per_level:?}");
    assert!(
        checkpoints.len() >= 100,
        "{} checkpoints",
        checkpoints.len()
    );
    // Nothing grows without bound: the manifest log is compacted, released blocks reused.
    assert!(statistic(&mut replica, "manifest log blocks")[0] < 20);
    assert!(statistic(&mut replica, "grid blocks in use")[0] < 400);

    // Reopen every checkpoint over the grid as it was then, and read every key.
    let keys: Vec<u64> = (0..key_space).collect();
    for (checkpoint, image, model) in &checkpoints {
        let mut reopened = open_model(
            &image.snapshot(),
            IoOrder::Seeded(checkpoint.op),
            Some(checkpoint.clone()),
        );
        let got = get_all(&mut reopened, &keys);
        let expected: Vec<Option<u64>> = keys.iter().map(|key| model.get(key).copied()).collect();
        assert_eq!(got, expected, "state at checkpoint op {}", checkpoint.op);
    }
}

fn lookup_things(replica: &mut Replica, ids: &[u128]) -> Vec<Thing> {
    let ids_per_op = BATCH_SIZE_LIMIT as usize / 16;
    let mut things = Vec::new();
    for chunk in ids.chunks(ids_per_op) {
        let body = chunk.iter().flat_map(|id| id.to_le_bytes()).collect();
        let request = request(replica, Operation::Lookup as u8, body);
        let reply = replica.commit(&request).unwrap();
        things.extend(reply.chunks_exact(Thing::SIZE).map(Thing::decode));
    }
    things
}

#[test]
fn echo_things_through_the_wasm_host_match_the_model_at_every_checkpoint() {
    let storage = MemoryStorage::new();
    let mut replica = wasm_replica(&storage, IoOrder::Seeded(3), config(), None).unwrap();
    let mut prng = Prng::new(5);
    let mut model: BTreeMap<u128, Thing> = BTreeMap::new();
    let mut checkpoints = Vec::new();
    for _ in 0..1_500 {
        let op = replica.op() + 1;
        if prng.below(4) == 0 && !model.is_empty() {
            // Look up a few ids, some stored, some never.
            let ids: Vec<u128> = (0..4).map(|_| u128::from(prng.below(op + 10))).collect();
            let request = request(
                &replica,
                Operation::Lookup as u8,
                ids.iter().flat_map(|id| id.to_le_bytes()).collect(),
            );
            let reply = replica.commit(&request).unwrap();
            let expected: Vec<u8> = ids
                .iter()
                .filter_map(|id| model.get(id))
                .flat_map(|thing| {
                    let mut bytes = [0; Thing::SIZE];
                    thing.encode(&mut bytes);
                    bytes
                })
                .collect();
            assert_eq!(reply, expected, "lookup at op {op}");
        } else {
            let mut body = vec![0; prng.below(64) as usize];
            prng.fill(&mut body);
            let request = request(&replica, Operation::Echo as u8, body);
            assert_eq!(replica.commit(&request).unwrap(), request.body);
            let thing = Thing {
                timestamp: request.timestamp,
                value: thing_value(
                    request.client,
                    op,
                    request.timestamp,
                    request.operation,
                    &request.body,
                ),
                id: u128::from(op),
            };
            model.insert(thing.id, thing);
        }
        if let Some(checkpoint) = replica.checkpoint_taken_at(replica.op()) {
            checkpoints.push((checkpoint.clone(), storage.snapshot(), model.clone()));
        }
    }
    // One compiled component serves every reopening.
    let runtime = Runtime::new(Limits::default()).unwrap();
    let component = runtime.load(carapace::machines::ECHO_COMPONENT).unwrap();
    for (checkpoint, image, model) in &checkpoints {
        let context = context(&image.snapshot(), IoOrder::Seeded(checkpoint.op));
        let machine = runtime.instantiate(&component, context).unwrap();
        let mut reopened =
            Replica::open(Box::new(machine), config(), Some(checkpoint.clone())).unwrap();
        let ids: Vec<u128> = (1..=u128::from(checkpoint.op)).collect();
        let things = lookup_things(&mut reopened, &ids);
        assert_eq!(
            things,
            model.values().copied().collect::<Vec<_>>(),
            "checkpoint op {}",
            checkpoint.op
        );
    }
}

//! The kv machine run natively through the SDK's `Runner`, its replies checked against a
//! `BTreeMap` model across many bars, checkpoints, reopens and replays; and what it
//! refuses.

use std::collections::BTreeMap;

use carapace_kv::format::{self, decode_records};
use carapace_kv::{
    KEYS_PER_OP_MAX, Kv, Operation, PUT_SIZE, RECORD_SIZE, Record, SCAN_LIMIT_MAX, ScanRequest,
    VALUE_SIZE,
};
use carapace_sdk::testing::MemoryHost;
use carapace_sdk::{Delivery, Failure, Options, Runner, StateMachine};

type Host = MemoryHost;

/// Open a machine over `host`, empty or at `checkpoint`.
fn open(
    host: &Host,
    options: &Options,
    checkpoint: Option<Vec<u8>>,
) -> Result<Runner<Kv>, Failure> {
    let mut runner = Runner::init(host.context(), options)?;
    let step = runner.open(checkpoint);
    host.drive(&mut runner, step)?;
    Ok(runner)
}

/// A machine and its host, running ops one after the other as a replica would.
struct Machine {
    host: Host,
    options: Options,
    runner: Runner<Kv>,
    op: u64,
}

impl Machine {
    fn new(options: Options) -> Machine {
        let host = Host::new(options.block_size);
        let runner = open(&host, &options, None).unwrap();
        Machine {
            host,
            options,
            runner,
            op: 0,
        }
    }

    /// Deliver the next op (prefetch, commit, compact), and checkpoint at the interval;
    /// returns the reply.
    fn execute(&mut self, operation: u8, body: &[u8]) -> Vec<u8> {
        self.runner.input_valid(operation, body).unwrap();
        let op = self.op + 1;
        let timestamp = 1_000 * op;
        let mut delivery = Delivery::default();
        delivery.push(7, op, timestamp, operation, body);
        let mut replies = self.host.deliver(&mut self.runner, delivery).unwrap();
        assert_eq!(replies.len(), 1);
        let reply = replies.pop().unwrap();
        assert!(reply.len() <= self.options.reply_size_limit as usize);
        if op.is_multiple_of(self.options.checkpoint_interval_ops) {
            let step = self.runner.checkpoint(op);
            self.host.drive(&mut self.runner, step).unwrap();
        }
        self.op = op;
        reply
    }

    /// Drop the machine and open a new one at the latest checkpoint, as after a crash.
    fn reopen(&mut self) -> u64 {
        let state = self.runner.checkpoint_state();
        let checkpoint = (!state.is_empty()).then_some(state);
        self.runner = open(&self.host, &self.options, checkpoint).unwrap();
        self.op = self.runner.machine().unwrap().op_committed();
        self.op
    }

    fn kv(&self) -> &Kv {
        self.runner.machine().unwrap()
    }
}

fn options(settings: &[(&str, &str)]) -> Options {
    let mut pairs = vec![("lsm-profile".to_string(), "test".to_string())];
    pairs.extend(
        settings
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string())),
    );
    Options {
        batch_size_limit: (KEYS_PER_OP_MAX * PUT_SIZE) as u32,
        reply_size_limit: (KEYS_PER_OP_MAX * RECORD_SIZE) as u32,
        checkpoint_interval_ops: 16,
        block_size: 1024,
        block_count: 1 << 14,
        settings: pairs,
    }
}

/// The SDK's test generator, with the draws these tests make.
struct Prng(carapace_sdk::testing::SplitMix64);

impl Prng {
    fn new(seed: u64) -> Prng {
        Prng(carapace_sdk::testing::SplitMix64::new(seed))
    }

    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.0.below(bound)
    }

    fn key(&mut self, key_space: u64) -> u128 {
        match self.below(64) {
            0 => 0,
            1 => u128::MAX,
            // Keys spread over the whole space too, not only its low end.
            2 => u128::from(self.below(key_space)) << 64,
            _ => u128::from(self.below(key_space)) + 1,
        }
    }

    fn count(&mut self) -> usize {
        if self.below(16) == 0 {
            KEYS_PER_OP_MAX
        } else {
            1 + self.below(12) as usize
        }
    }

    fn value(&mut self) -> [u8; VALUE_SIZE] {
        let mut value = [0; VALUE_SIZE];
        for chunk in value.chunks_exact_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        value
    }
}

type Model = BTreeMap<u128, (u64, [u8; VALUE_SIZE])>;

fn record(model: &Model, key: u128) -> Record {
    model
        .get(&key)
        .map(|&(timestamp, value)| Record {
            key,
            timestamp,
            value,
        })
        .unwrap_or(Record::absent(key))
}

/// A random request, and the reply the model expects for it at `timestamp` (applying
/// its writes to the model).
fn request(
    prng: &mut Prng,
    model: &mut Model,
    key_space: u64,
    timestamp: u64,
) -> (u8, Vec<u8>, Vec<u8>) {
    let mut body = Vec::new();
    let mut expected = Vec::new();
    let operation = match prng.below(20) {
        0..7 => {
            let entries: Vec<_> = (0..prng.count())
                .map(|_| (prng.key(key_space), prng.value()))
                .collect();
            format::encode_put(&entries, &mut body);
            for &(key, value) in &entries {
                model.insert(key, (timestamp, value));
            }
            Operation::Put
        }
        7..11 => {
            let keys: Vec<_> = (0..prng.count()).map(|_| prng.key(key_space)).collect();
            format::encode_keys(&keys, &mut body);
            for key in keys {
                expected.push(u8::from(model.remove(&key).is_some()));
            }
            Operation::Delete
        }
        11..16 => {
            let keys: Vec<_> = (0..prng.count()).map(|_| prng.key(key_space)).collect();
            format::encode_keys(&keys, &mut body);
            for key in keys {
                expected.extend_from_slice(&record(model, key).to_bytes());
            }
            Operation::Get
        }
        _ => {
            let key_min = prng.key(key_space);
            let key_max = match prng.below(4) {
                0 => u128::MAX,
                1 => key_min,
                _ => key_min.saturating_add(u128::from(prng.below(key_space / 2))),
            };
            let limit = 1 + prng.below(u64::from(SCAN_LIMIT_MAX)) as u32;
            body.extend_from_slice(
                &ScanRequest {
                    key_min,
                    key_max,
                    limit,
                }
                .encode(),
            );
            for key in model
                .range(key_min..=key_max)
                .take(limit as usize)
                .map(|(&key, _)| key)
            {
                expected.extend_from_slice(&record(model, key).to_bytes());
            }
            Operation::Scan
        }
    };
    (operation as u8, body, expected)
}

/// Runs `ops` random requests against the model. At random it "crashes": reopens at the
/// latest checkpoint and replays the ops since, which must reply as they did. Returns
/// the deepest level that held a table.
fn run(seed: u64, ops: u64, key_space: u64, settings: &[(&str, &str)]) -> usize {
    let mut prng = Prng::new(seed);
    let mut machine = Machine::new(options(settings));
    let mut model = Model::new();
    // Every op since the latest checkpoint, with its reply, for replay.
    let mut since_checkpoint: Vec<(u8, Vec<u8>, Vec<u8>)> = Vec::new();
    let mut level_deepest = 0;
    while machine.op < ops {
        let op = machine.op + 1;
        let (operation, body, expected) = request(&mut prng, &mut model, key_space, 1_000 * op);
        let reply = machine.execute(operation, &body);
        assert_eq!(
            reply,
            expected,
            "seed {seed}, op {op}, {:?}",
            Operation::from_u8(operation)
        );
        if op.is_multiple_of(machine.options.checkpoint_interval_ops) {
            since_checkpoint.clear();
        } else {
            since_checkpoint.push((operation, body, reply));
        }
        if prng.below(64) == 0 {
            let reopened = machine.reopen();
            assert_eq!(reopened + since_checkpoint.len() as u64, op, "seed {seed}");
            for (operation, body, reply) in &since_checkpoint {
                assert_eq!(
                    &machine.execute(*operation, body),
                    reply,
                    "seed {seed}, replay"
                );
            }
        }
        let statistics = machine.kv().describe();
        let levels = &statistics
            .iter()
            .find(|statistic| statistic.name == "tree 1 tables per level")
            .unwrap()
            .values;
        if let Some(level) = levels.iter().rposition(|&tables| tables > 0) {
            level_deepest = level_deepest.max(level);
        }
    }
    level_deepest
}

#[test]
fn replies_match_a_model_across_bars_checkpoints_and_reopens() {
    // Tables of 4 blocks of 10 records and a growth factor of 2, so that a few hundred
    // ops fill all four levels of the test profile.
    let settings = [("table-value-blocks-max", "4"), ("lsm-growth-factor", "2")];
    for seed in 0..24 {
        let level_deepest = run(seed, 400, 5_000, &settings);
        assert_eq!(level_deepest, 3, "seed {seed}");
    }
}

#[test]
fn replies_match_a_model_over_few_keys() {
    // Few keys: each is overwritten and deleted again and again, so that scans pass
    // many tombstones and shadowed versions.
    // Tables of one block of 10 records spread the 50 keys over three levels.
    let settings = [
        ("bar-ops", "2"),
        ("table-value-blocks-max", "1"),
        ("lsm-growth-factor", "2"),
    ];
    for seed in 100..108 {
        let level_deepest = run(seed, 300, 50, &settings);
        assert!(level_deepest >= 2, "seed {seed}: level {level_deepest}");
    }
}

#[test]
fn a_delete_replies_whether_each_key_existed_just_before() {
    let mut machine = Machine::new(options(&[]));
    let mut body = Vec::new();
    format::encode_put(&[(1, [1; VALUE_SIZE]), (1, [2; VALUE_SIZE])], &mut body);
    assert!(machine.execute(Operation::Put as u8, &body).is_empty());

    let mut keys = Vec::new();
    format::encode_keys(&[1], &mut keys);
    let reply = machine.execute(Operation::Get as u8, &keys);
    // The later entry of the put won, stamped with the put's timestamp.
    assert_eq!(
        decode_records(&reply).unwrap(),
        [Record {
            key: 1,
            timestamp: 1_000,
            value: [2; VALUE_SIZE]
        }]
    );

    let mut keys = Vec::new();
    format::encode_keys(&[1, 1, 2], &mut keys);
    assert_eq!(machine.execute(Operation::Delete as u8, &keys), [1, 0, 0]);
    let reply = machine.execute(Operation::Get as u8, &keys);
    assert_eq!(
        decode_records(&reply).unwrap(),
        [Record::absent(1), Record::absent(1), Record::absent(2)]
    );
    let scan = ScanRequest {
        key_min: 0,
        key_max: u128::MAX,
        limit: 1,
    };
    assert!(
        machine
            .execute(Operation::Scan as u8, &scan.encode())
            .is_empty()
    );
}

/// A change to the options of a test.
type Change = fn(&mut Options);

#[test]
fn init_refuses_bad_options_naming_them() {
    let cases: [(Change, &str); 6] = [
        (
            |options| options.batch_size_limit = 0,
            "batch size limit 0 is not in 1..=1048320",
        ),
        (
            |options| options.batch_size_limit = carapace_kv::BATCH_SIZE_LIMIT_MAX + 1,
            "batch size limit 1048321 is not in 1..=1048320",
        ),
        (
            |options| options.reply_size_limit = 87,
            "reply size limit 87 is below one record of 88 bytes",
        ),
        (
            |options| options.checkpoint_interval_ops = 6,
            "checkpoint interval of 6 ops is not a positive multiple of the bar of 4 ops",
        ),
        (
            |options| options.settings.push(("stats-interval".into(), "1".into())),
            "unknown setting `stats-interval`",
        ),
        (
            // The production profile's tables of 64 blocks need a 4 KiB index block.
            |options| options.settings.clear(),
            "64 value blocks per table do not fit an index block of 1024 bytes",
        ),
    ];
    for (change, expected) in cases {
        let mut options = options(&[]);
        change(&mut options);
        let host = Host::new(options.block_size);
        let error = open(&host, &options, None).unwrap_err();
        assert!(matches!(error, Failure::InvalidArgument(_)), "{error}");
        assert!(error.message().contains(expected), "{error}");
    }
}

#[test]
fn input_valid_gives_the_reason() {
    let machine = Machine::new(options(&[]));
    assert_eq!(
        machine.runner.input_valid(9, &[]),
        Err(
            "unknown operation 9: kv knows `put` (1), `delete` (2), `get` (3) and `scan` (4)"
                .into()
        )
    );
    assert_eq!(
        machine
            .runner
            .input_valid(Operation::Put as u8, &[0; PUT_SIZE + 1]),
        Err(
            "`put` body of 81 bytes is not a whole number of entries of 80 bytes (key 16, value 64)"
                .into()
        )
    );
}

#[test]
fn commit_refuses_an_op_it_did_not_prefetch() {
    // The SDK's runner always prefetches first: the machine's own guard is reached
    // only by calling the machine directly.
    let options = options(&[]);
    let host = Host::new(options.block_size);
    let context = host.context();
    let mut kv = Kv::init(context.clone(), &options).unwrap();
    host.block_on(&context, kv.open(None)).unwrap();
    let body = 5u128.to_le_bytes();
    let error = kv
        .commit(7, 1, 1_000, Operation::Get as u8, &body, &mut Vec::new())
        .unwrap_err();
    assert_eq!(
        error,
        Failure::Protocol("commit of op 1, but op 0 was prefetched and op 0 committed last".into())
    );
}

#[test]
fn commit_refuses_timestamps_past_2_63() {
    let mut machine = Machine::new(options(&[]));
    let mut delivery = Delivery::default();
    delivery.push(7, 1, 1 << 63, Operation::Get as u8, &5u128.to_le_bytes());
    let error = machine
        .host
        .deliver(&mut machine.runner, delivery)
        .unwrap_err();
    assert_eq!(
        error,
        Failure::Protocol(format!(
            "op 1 has timestamp {}, at or past 2^63",
            1u64 << 63
        ))
    );
}

#[test]
fn identity_and_describe() {
    assert_eq!(Kv::IDENTITY.name, "kv");
    assert_eq!(Kv::IDENTITY.state_format, 1);
    let mut machine = Machine::new(options(&[]));
    let mut body = Vec::new();
    format::encode_put(&[(3, [3; VALUE_SIZE])], &mut body);
    machine.execute(Operation::Put as u8, &body);
    let statistics = machine.kv().describe();
    assert_eq!(statistics[0].name, "ops committed");
    assert_eq!(statistics[0].values, [1]);
    assert_eq!(statistics[1].name, "tree 1 tables per level");
}

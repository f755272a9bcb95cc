//! The bodies of the fuzz targets, each with an oracle: what must hold for any input,
//! beyond "no panic". `fuzz/` runs them under libFuzzer (`cargo xtask fuzz`); the tests
//! run them over the corpus kept in `fuzz/corpus` and over seeded inputs, so that every
//! finding stays a test. Inputs are bounded: each target reads at most `INPUT_SIZE_MAX`
//! bytes of its input.

use std::cell::RefCell;

use carapace::Error;
use carapace::disk::SimDisk;
use carapace::imports::{HostImports, IoOrder};
use carapace::instance::{Identity, Options};
use carapace::journal::{Entry, Journal, Position};
use carapace::replica::{Checkpoint, Replica, Request};
use carapace::storage::MemoryStorage;
use carapace::superblock::{COPIES, COPY_SIZE, Superblock};
use carapace::wasm::{Component, Limits, Runtime, WasmInstance};
use carapace_lsm::block::{self, BlockInfo, BlockType};
use carapace_lsm::checkpoint::CheckpointState;
use carapace_lsm::free_set::FreeSet;
use carapace_lsm::grid::BlockRef;
use carapace_lsm::manifest_log::LogRef;
use carapace_lsm::table;
use carapace_lsm::trailer::TrailerRef;

/// The most bytes of an input any target reads: bounds the work per input.
pub const INPUT_SIZE_MAX: usize = 64 << 10;

/// Reads an input as a stream of small numbers, zeros past its end.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let (&first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        first
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn bytes(&mut self, count: usize) -> Vec<u8> {
        (0..count).map(|_| self.byte()).collect()
    }
}

const DIRECTORY_ID: u128 = 0xfeed;

/// The journal decoder: entries are written whole, then the input damages the file
/// (bytes flipped, a cut). Opening must either fail with an error about the journal or
/// give back a prefix of the written entries, never a wrong one.
pub fn journal(data: &[u8]) {
    let mut input = Input(&data[..data.len().min(INPUT_SIZE_MAX)]);
    let disk = SimDisk::new();
    let (mut journal, _) = Journal::open(Box::new(disk.file("journal")), DIRECTORY_ID).unwrap();
    let mut written = Vec::new();
    for op in 1..=u64::from(input.byte() % 16) {
        let size = usize::from(input.byte());
        let entry = Entry {
            request: Request {
                client: u128::from(input.byte()),
                op,
                timestamp: op * 10,
                operation: input.byte(),
                body: input.bytes(size),
            },
            reply_checksum: u128::from(input.u16()),
            checkpoint_id: (input.byte() % 4 == 0).then_some(op.into()),
        };
        journal.append(&entry).unwrap();
        written.push(entry);
    }
    let length = disk.durable_len("journal");
    for _ in 0..input.byte() % 8 {
        if length > 0 {
            let offset = usize::from(input.u16()) % length;
            disk.corrupt("journal", offset, input.byte().max(1));
        }
    }
    if input.byte() % 2 == 0 && length > 0 {
        disk.truncate("journal", usize::from(input.u16()) % length);
    }
    let Ok((mut journal, _)) =
        Journal::open_read_only(Box::new(disk.file("journal")), DIRECTORY_ID)
    else {
        return;
    };
    let mut read = Vec::new();
    let outcome = journal.read_all(|entry, _| {
        read.push(entry);
        Ok(())
    });
    assert!(outcome.is_ok(), "a journal that opened reads back");
    assert!(read.len() <= written.len());
    assert_eq!(
        read[..],
        written[..read.len()],
        "a journal gives back what was written"
    );
}

/// The superblock decoder: states are published in turn, then the input damages the
/// copies. Opening must give one of the published states or none, never another.
pub fn superblock(data: &[u8]) {
    let mut input = Input(&data[..data.len().min(INPUT_SIZE_MAX)]);
    let disk = SimDisk::new();
    let options = Options {
        batch_size_limit: u32::from(input.u16()),
        reply_size_limit: u32::from(input.u16()),
        checkpoint_interval_ops: u64::from(input.byte()) + 1,
        block_size: 4096,
        block_count: u64::from(input.u16()) + 1,
        settings: vec![(
            "name".into(),
            String::from_utf8_lossy(&input.bytes(8)).into(),
        )],
    };
    let identity = Identity {
        name: "fuzzed".into(),
        version: "1".into(),
        state_format: u32::from(input.byte()),
    };
    let mut superblock = Superblock::create(
        Box::new(disk.file("superblock")),
        options,
        identity,
        DIRECTORY_ID,
    )
    .unwrap();
    let mut published = vec![superblock.state().clone()];
    for op in 1..=u64::from(input.byte() % 4) {
        let size = usize::from(input.byte() % 64) + 1;
        let checkpoint = Checkpoint {
            op,
            timestamp: op,
            state: input.bytes(size),
        };
        let position = Position {
            offset: op * 100,
            op,
            checksum: op.into(),
        };
        superblock.publish(&checkpoint, position, 100, "1").unwrap();
        published.push(superblock.state().clone());
    }
    for _ in 0..input.byte() % 16 {
        let offset = usize::from(input.u16()) % (COPIES * COPY_SIZE);
        disk.corrupt("superblock", offset, input.byte().max(1));
    }
    let (newest, _) = Superblock::read_copies(&mut disk.file("superblock")).unwrap();
    if let Some(state) = newest {
        assert!(
            published.contains(&state),
            "a superblock gives back a published state"
        );
    }
}

/// Block verification and the decoders behind it: the input is a block as read (which
/// must verify or fail, never panic), then a body sealed into a valid block that each
/// decoder must take apart or refuse.
pub fn block(data: &[u8]) {
    let data = &data[..data.len().min(INPUT_SIZE_MAX)];
    const BLOCK_SIZE: usize = 4096;
    let mut raw = data.to_vec();
    raw.resize(BLOCK_SIZE.max(raw.len().next_power_of_two()), 0);
    let _ = block::verify(&raw, 1, 0, BlockType::Value);
    let mut input = Input(data);
    let block_type = [
        BlockType::FreeSet,
        BlockType::Immutable,
        BlockType::Manifest,
        BlockType::Index,
        BlockType::Value,
    ][usize::from(input.byte() % 5)];
    let body = input.0;
    let body = &body[..body.len().min(BLOCK_SIZE - block::HEADER_SIZE)];
    let mut sealed = vec![0; BLOCK_SIZE];
    block::body_mut(&mut sealed)[..body.len()].copy_from_slice(body);
    let info = BlockInfo {
        address: 7,
        snapshot: 1,
        tree_id: 1,
        block_type,
    };
    let checksum = block::seal(&mut sealed, info, body.len());
    let header = block::verify(&sealed, 7, checksum, block_type).expect("a sealed block verifies");
    assert_eq!(header.size as usize, block::HEADER_SIZE + body.len());
    let mut entries = Vec::new();
    let _ = table::index_entries(&sealed, 7, &mut entries);
    let _ = table::values(&sealed, 7, 32);
    // The block count comes from checked options: at least one block.
    let _ = FreeSet::decode((body.len() as u64 * 8).max(1), body);
}

/// A checkpoint state decoded by the storage engine, then opened by the echo machine
/// over an empty grid: a refusal or a corrupt block, never a panic. The input is tried
/// as it is (almost never a state: its checksum fails), and as the fields of a state
/// encoded with a valid checksum, whose references the machine then follows.
pub fn checkpoint_state(data: &[u8]) {
    let data = &data[..data.len().min(INPUT_SIZE_MAX)];
    if let Ok(state) = CheckpointState::decode(data) {
        assert_eq!(CheckpointState::decode(&state.encode()), Ok(state));
    }
    open_checkpoint_state(data);
    let mut input = Input(data);
    let block_ref = |input: &mut Input| BlockRef {
        address: u64::from(input.u16()),
        checksum: u128::from(input.u16()),
    };
    let trailer = |input: &mut Input, head| TrailerRef {
        head,
        block_count: u32::from(input.byte()),
        size: u32::from(input.u16()),
    };
    let free_set_head = block_ref(&mut input);
    let immutable_head = block_ref(&mut input);
    let newest = block_ref(&mut input);
    let state = CheckpointState {
        op: u64::from(input.byte()) * 4,
        // Mostly the grid's own count, so that the machine goes on to read blocks.
        block_count: if input.byte() % 4 == 0 {
            u64::from(input.u16())
        } else {
            1 << 12
        },
        free_set: trailer(&mut input, free_set_head),
        immutable: trailer(&mut input, immutable_head),
        manifest_log: LogRef {
            newest,
            block_count: u32::from(input.byte()),
            sequence_next: u64::from(input.u16()),
        },
    };
    open_checkpoint_state(&state.encode());
}

/// Open the echo machine at checkpoint state `state` over an empty grid.
fn open_checkpoint_state(state: &[u8]) {
    let options = Options {
        batch_size_limit: 512,
        reply_size_limit: 1024,
        checkpoint_interval_ops: 16,
        block_size: 1024,
        block_count: 1 << 12,
        settings: vec![("lsm-profile".into(), "test".into())],
    };
    let imports = HostImports::new(Box::new(MemoryStorage::new()), 1024, 1 << 12, IoOrder::Fifo);
    let instance = Box::new(carapace_native::NativeInstance::<carapace_echo::Echo>::new(
        imports,
    ));
    let checkpoint = Checkpoint {
        op: 16,
        timestamp: 16,
        state: state.to_vec(),
    };
    match Replica::open(instance, options, Some(checkpoint)) {
        Ok(_) | Err(Error::Guest(_)) | Err(Error::Refused(_)) => {}
        Err(error) => panic!("opening a checkpoint state: {error}"),
    }
}

thread_local! {
    /// The echo component, loaded once per process: instantiating per input is cheap,
    /// compiling is not.
    static ECHO: RefCell<Option<(Runtime, Component)>> = const { RefCell::new(None) };
}

fn echo_instance() -> WasmInstance {
    ECHO.with_borrow_mut(|echo| {
        let (runtime, component) = echo.get_or_insert_with(|| {
            let runtime = Runtime::new(Limits::default()).unwrap();
            let component = runtime.load(carapace::machines::ECHO_COMPONENT).unwrap();
            (runtime, component)
        });
        let imports =
            HostImports::new(Box::new(MemoryStorage::new()), 1024, 1 << 12, IoOrder::Fifo);
        runtime.instantiate(component, imports).unwrap()
    })
}

/// The request path through the echo component: requests cut from the input are
/// validated and committed. A refused request is refused; an accepted echo's reply is
/// its body; nothing stops the machine.
pub fn request(data: &[u8]) {
    let mut input = Input(&data[..data.len().min(INPUT_SIZE_MAX)]);
    let options = Options {
        batch_size_limit: 512,
        reply_size_limit: 4096,
        checkpoint_interval_ops: 16,
        block_size: 1024,
        block_count: 1 << 12,
        settings: vec![("lsm-profile".into(), "test".into())],
    };
    let mut replica = Replica::open(Box::new(echo_instance()), options, None).unwrap();
    while !input.0.is_empty() {
        let operation = input.byte() % 4;
        let size = usize::from(input.u16() % 600);
        let request = Request {
            client: u128::from(input.byte()),
            op: replica.op() + 1,
            timestamp: replica.timestamp() + 1,
            operation,
            body: input.bytes(size),
        };
        match replica.commit(&request) {
            Ok(reply) if operation == 1 => assert_eq!(reply, request.body),
            Ok(_) | Err(Error::Refused(_)) => {}
            Err(error) => panic!("op {}: {error}", request.op),
        }
    }
}

/// A fuzz target's body: any bytes in; panics only on a bug.
pub type Target = fn(&[u8]);

/// Every target, by the name of its corpus directory.
pub const TARGETS: [(&str, Target); 5] = [
    ("journal", journal),
    ("superblock", superblock),
    ("block", block),
    ("checkpoint_state", checkpoint_state),
    ("request", request),
];

//! The carapace host core in a browser page, through wasm-bindgen.
//!
//! The page runs the very component bytes wasmtime runs, transpiled by jco, and this
//! crate drives them with the same Rust code as the native host: the lifecycle, I/O
//! completion order, timers, the journal and superblock, recovery and replay all come
//! from `carapace-core`. JavaScript only wires the component's imports to [`Imports`],
//! hands over OPFS files, and draws the page.
//!
//! - [`Page`]: a durable replica over a data directory (OPFS files, or memory), with
//!   commits, the machine's workload, its state for drawing, a replay of the journal in
//!   a fresh instance, and the directory's files for export;
//! - [`verify`]: replay a data directory's superblock and journal (written by any host,
//!   `carapace run --data` included) from genesis, checking every reply and checkpoint id.

#![warn(missing_docs)]

mod instance;
mod opfs;

use carapace_core::disk::{File, SharedFile, SimDisk};
use carapace_core::durable::{self, DataDir, Durable, JOURNAL_FILE, SUPERBLOCK_FILE};
use carapace_core::imports::{HostImports, IoOrder};
use carapace_core::instance::Options;
use carapace_core::journal::Journal;
use carapace_core::replay::replay_journal;
use carapace_core::replica::{Replica, Request};
use carapace_core::storage::MemoryStorage;
use carapace_core::superblock::SuperblockState;
use carapace_core::workload::{self, Workload};
use js_sys::Function;
use serde_json::json;
use wasm_bindgen::prelude::*;

pub use instance::Imports;

/// An error for JavaScript, with the host's message and its causes.
fn js_error(error: carapace_core::Error) -> JsError {
    JsError::new(&error.to_string())
}

/// The options a page's data directory is created with: the `test` profile's short bars
/// and small levels, so that tables, levels and checkpoints change within a few dozen
/// ops, and checkpoints every 16 ops.
pub fn page_options() -> Options {
    Options {
        batch_size_limit: 1024,
        reply_size_limit: 64 * 1024,
        checkpoint_interval_ops: 16,
        block_size: 4096,
        block_count: 1 << 16,
        settings: vec![("lsm-profile".into(), "test".into())],
    }
}

/// A durable replica in a page.
#[wasm_bindgen]
pub struct Page {
    machine: String,
    factory: Function,
    durable: Durable<'static>,
    /// The directory's journal and superblock, shared with the replica: exported as
    /// they are, and read by the replay.
    journal: SharedFile,
    superblock: SharedFile,
    workload: Box<dyn Workload>,
    /// The ops recovery found (at the checkpoint, then replayed).
    recovered: (u64, u64),
    /// Every checkpoint the journal records, as (op, id): read once at open, then
    /// appended as ops commit, so that drawing the page never rereads the journal.
    checkpoints: Vec<(u64, u128)>,
}

impl std::fmt::Debug for Page {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Page")
            .field("machine", &self.machine)
            .finish_non_exhaustive()
    }
}

/// Everything in `file`, read through the host's `File`.
fn read_all(file: &mut dyn File, name: &str) -> Result<Vec<u8>, JsError> {
    let length = file.length().map_err(|error| {
        js_error(carapace_core::Error::io(
            name,
            "reading the length of",
            error,
        ))
    })?;
    let mut bytes = vec![0; length as usize];
    file.read_at(0, &mut bytes)
        .map_err(|error| js_error(carapace_core::Error::io(name, "reading", error)))?;
    Ok(bytes)
}

#[wasm_bindgen]
impl Page {
    /// Open the data directory of `files` (`{superblock, journal, grid}`, OPFS sync
    /// access handles) or, if it is `undefined`, a new one in memory; a new directory is
    /// created with [`page_options`] and the id `directory_id` (random, from the page).
    /// `factory(imports)` instantiates the machine's component and returns its
    /// `machine` exports. `seed` seeds the workload and the I/O completion order.
    #[wasm_bindgen(constructor)]
    pub fn open(
        machine: String,
        factory: Function,
        files: JsValue,
        directory_id: String,
        seed: u64,
    ) -> Result<Page, JsError> {
        let directory_id = u128::from_str_radix(&directory_id, 16)
            .map_err(|_| JsError::new("the directory id is not 32 hex digits"))?;
        let (superblock, journal, grid): (Box<dyn File>, Box<dyn File>, Box<dyn File>) =
            if files.is_undefined() {
                let disk = SimDisk::new();
                (
                    Box::new(disk.file(SUPERBLOCK_FILE)),
                    Box::new(disk.file(JOURNAL_FILE)),
                    Box::new(disk.file(durable::GRID_FILE)),
                )
            } else {
                let file = |name: &str| -> Box<dyn File> {
                    Box::new(opfs::OpfsFile::new(
                        js_sys::Reflect::get(&files, &name.into()).unwrap_or(JsValue::UNDEFINED),
                    ))
                };
                (file("superblock"), file("journal"), file("grid"))
            };
        let superblock = SharedFile::new(superblock);
        let journal = SharedFile::new(journal);
        let dir = DataDir {
            new_directory_id: directory_id,
            superblock: Box::new(superblock.clone()),
            journal: Box::new(journal.clone()),
            grid,
        };
        let make_factory = factory.clone();
        let (durable, recovery) = Durable::open(
            dir,
            Some(page_options()),
            IoOrder::Seeded(seed),
            move |imports| instance::instantiate(&make_factory, imports),
        )
        .map_err(js_error)?;
        let identity = durable.replica().identity().name.clone();
        if identity != machine {
            return Err(JsError::new(&format!(
                "the component is machine `{identity}`, not `{machine}`"
            )));
        }
        let mut workload =
            workload::for_machine(&machine, seed, page_options().batch_size_limit)
                .ok_or_else(|| JsError::new(&format!("no workload for machine `{machine}`")))?;
        let mut durable = durable;
        let mut checkpoints = Vec::new();
        durable
            .read_journal(|entry, _| {
                workload.observe(&entry.request);
                if let Some(id) = entry.checkpoint_id {
                    checkpoints.push((entry.request.op, id));
                }
                Ok(())
            })
            .map_err(js_error)?;
        Ok(Page {
            machine,
            factory,
            durable,
            journal,
            superblock,
            workload,
            recovered: (recovery.checkpoint_op, recovery.replayed_ops),
            checkpoints,
        })
    }

    /// Commit `request` durably and note the checkpoint it took, if any.
    fn commit_request(&mut self, request: &Request) -> Result<Vec<u8>, JsError> {
        let reply = self.durable.commit(request).map_err(js_error)?;
        if let Some(checkpoint) = self.durable.replica().checkpoint_taken_at(request.op) {
            self.checkpoints.push((checkpoint.op, checkpoint.id()));
        }
        Ok(reply)
    }

    /// The workload's next request.
    fn next_request(&mut self) -> Request {
        let replica = self.durable.replica();
        self.workload
            .next_request(replica.op(), replica.timestamp())
    }

    /// Commit one request: the next op, at a later timestamp. Returns the reply.
    pub fn commit(&mut self, operation: u8, body: Vec<u8>) -> Result<Vec<u8>, JsError> {
        // The workload's clock: a request like the ones it makes, with this body.
        let mut request = self.next_request();
        request.operation = operation;
        request.body = body;
        let reply = self.commit_request(&request)?;
        self.workload.observe(&request);
        Ok(reply)
    }

    /// Commit `count` requests of the machine's workload as one group (delivered to the
    /// machine in batches, made durable with one journal write), checking every reply
    /// against its model. Returns them as JSON: op, timestamp, operation, body and
    /// reply sizes, and the first bytes of each in hex.
    pub fn generate(&mut self, count: u32) -> Result<String, JsError> {
        let replica = self.durable.replica();
        let (op, timestamp) = (replica.op(), replica.timestamp());
        let requests =
            workload::requests_after(self.workload.as_mut(), op, timestamp, count.into());
        let outcome = self.durable.commit_group(&requests);
        self.checkpoints
            .extend_from_slice(self.durable.group_checkpoints());
        let mut committed = Vec::new();
        for (request, reply) in requests.iter().zip(&outcome.replies) {
            self.workload
                .check_reply(request, reply)
                .map_err(|detail| JsError::new(&format!("op {}: {detail}", request.op)))?;
            committed.push(summary(request, reply));
        }
        if let Some(error) = outcome.stopped {
            return Err(js_error(error));
        }
        Ok(serde_json::Value::Array(committed).to_string())
    }

    /// The replica's state for drawing, as JSON: the machine, the op and timestamp, what
    /// recovery did, every checkpoint the journal records, and the machine's
    /// statistics.
    pub fn state(&mut self) -> Result<String, JsError> {
        let statistics = self.durable.replica_mut().describe().map_err(js_error)?;
        let checkpoints: Vec<_> = self
            .checkpoints
            .iter()
            .map(|(op, id)| json!({"op": op, "id": format!("{id:032x}")}))
            .collect();
        let replica = self.durable.replica();
        let identity = replica.identity();
        Ok(json!({
            "machine": self.machine,
            "identity": format!("{identity}"),
            "op": replica.op(),
            "timestamp": replica.timestamp(),
            "recovered": {"checkpoint_op": self.recovered.0, "replayed_ops": self.recovered.1},
            "checkpoint": replica.checkpoint().map(|checkpoint| json!({
                "op": checkpoint.op, "id": format!("{:032x}", checkpoint.id()),
            })),
            "checkpoints": checkpoints,
            "statistics": statistics.iter().map(|statistic| json!({
                "name": statistic.name, "values": statistic.values,
            })).collect::<Vec<_>>(),
            "journal_bytes": self.durable.journal_end().offset,
        })
        .to_string())
    }

    /// Rebuild the state from the journal in a fresh instance over memory, from genesis,
    /// checking every reply and checkpoint id. Returns the comparison as JSON.
    pub fn replay(&mut self) -> Result<String, JsError> {
        let journal = read_all(&mut self.journal, JOURNAL_FILE)?;
        let stored = self.durable.superblock().state().clone();
        replay_from_genesis(&self.factory, &stored, journal)
    }

    /// The journal file's bytes, for `carapace replay`.
    #[wasm_bindgen(js_name = journalBytes)]
    pub fn journal_bytes(&mut self) -> Result<Vec<u8>, JsError> {
        read_all(&mut self.journal, JOURNAL_FILE)
    }

    /// The superblock file's bytes.
    #[wasm_bindgen(js_name = superblockBytes)]
    pub fn superblock_bytes(&mut self) -> Result<Vec<u8>, JsError> {
        read_all(&mut self.superblock, SUPERBLOCK_FILE)
    }
}

/// A committed request and its reply, for the page.
fn summary(request: &Request, reply: &[u8]) -> serde_json::Value {
    let hex = |bytes: &[u8]| {
        bytes
            .iter()
            .take(24)
            .map(|byte| format!("{byte:02x}"))
            .collect::<String>()
    };
    json!({
        "op": request.op,
        "timestamp": request.timestamp,
        "operation": request.operation,
        "body_bytes": request.body.len(),
        "reply_bytes": reply.len(),
        "body": hex(&request.body),
        "reply": hex(reply),
    })
}

/// Replay `journal` from genesis on a fresh instance over memory, with the options and
/// directory id of `stored`; every reply and checkpoint id is checked against what the
/// journal recorded. JSON: how far it was identical, every checkpoint recorded and
/// replayed, the outcome, and the time it took.
fn replay_from_genesis(
    factory: &Function,
    stored: &SuperblockState,
    journal: Vec<u8>,
) -> Result<String, JsError> {
    let disk = SimDisk::new();
    let mut file = disk.file(JOURNAL_FILE);
    file.write_at(0, &journal)
        .map_err(|error| js_error(carapace_core::Error::io(JOURNAL_FILE, "copying", error)))?;
    let (mut journal, _) =
        Journal::open_read_only(Box::new(file), stored.directory_id).map_err(js_error)?;
    let options = &stored.options;
    let imports = HostImports::new(
        Box::new(MemoryStorage::new()),
        options.block_size,
        options.block_count,
        IoOrder::Fifo,
    );
    let mut instance = instance::instantiate(factory, imports).map_err(js_error)?;
    durable::check_identity(
        &stored.identity,
        &carapace_core::replica::identify(instance.as_mut()).map_err(js_error)?,
    )
    .map_err(js_error)?;
    let mut replica = Replica::open(instance, options.clone(), None).map_err(js_error)?;
    let started = js_sys::Date::now();
    let mut checkpoints = Vec::new();
    let report = replay_journal(&mut replica, &mut journal, stored, |replica, entry, _| {
        if let Some(recorded) = entry.checkpoint_id {
            let replayed = replica
                .checkpoint_taken_at(entry.request.op)
                .map(|checkpoint| format!("{:032x}", checkpoint.id()));
            checkpoints.push(json!({
                "op": entry.request.op,
                "recorded": format!("{recorded:032x}"),
                "replayed": replayed,
            }));
        }
        Ok(())
    });
    let millis = js_sys::Date::now() - started;
    Ok(json!({
        "identical_through": report.identical_through,
        "checkpoints_verified": report.checkpoints_verified,
        "checkpoints": checkpoints,
        "checkpoint": replica.checkpoint().map(|checkpoint| json!({
            "op": checkpoint.op, "id": format!("{:032x}", checkpoint.id()),
        })),
        "outcome": match &report.outcome {
            Ok(()) => "identical".to_string(),
            Err(error) => error.to_string(),
        },
        "millis": millis,
    })
    .to_string())
}

/// Verify a data directory written by any host (`carapace run --data DIR`: its
/// `superblock` and `journal` files): replay the journal from genesis with the machine
/// `factory` makes, checking every reply and checkpoint id it recorded.
#[wasm_bindgen]
pub fn verify(factory: Function, superblock: Vec<u8>, journal: Vec<u8>) -> Result<String, JsError> {
    let disk = SimDisk::new();
    let mut file = disk.file(SUPERBLOCK_FILE);
    file.write_at(0, &superblock)
        .map_err(|error| js_error(carapace_core::Error::io(SUPERBLOCK_FILE, "copying", error)))?;
    let stored = durable::read_superblock(&mut file).map_err(js_error)?;
    replay_from_genesis(&factory, &stored, journal)
}

/// The name of the machine whose data directory `superblock` holds.
#[wasm_bindgen(js_name = machineOf)]
pub fn machine_of(superblock: Vec<u8>) -> Result<String, JsError> {
    let disk = SimDisk::new();
    let mut file = disk.file(SUPERBLOCK_FILE);
    file.write_at(0, &superblock)
        .map_err(|error| js_error(carapace_core::Error::io(SUPERBLOCK_FILE, "copying", error)))?;
    Ok(durable::read_superblock(&mut file)
        .map_err(js_error)?
        .identity
        .name)
}

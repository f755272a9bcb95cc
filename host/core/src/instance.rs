//! The host's view of one loaded state machine: [`Instance`], one method per export of
//! the `state-machine` world. The wasmtime runtime implements it for components, the
//! browser for components transpiled by jco, and the native baseline for guest cores
//! compiled into the host; the lifecycle ([`crate::replica`]) drives any of them as a
//! `Box<dyn Instance>`.
//!
//! The types here mirror the contract's on their own: the host depends on the WIT, not
//! on any guest crate.

use crate::error::{Error, Fault, Result};
use crate::imports::HostImports;

/// Where an asynchronous step stands, as the contract's `step`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Waiting for I/O completions.
    Pending,
    /// Complete.
    Done,
}

/// Who a machine is, as the contract's `identity`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The machine's name, stable across versions.
    pub name: String,
    /// The build's version, for people.
    pub version: String,
    /// The version of the format of its state: a directory written in another format is
    /// refused.
    pub state_format: u32,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` {} (state format {})",
            self.name, self.version, self.state_format
        )
    }
}

/// The largest name or version an identity may carry, in bytes: both are recorded in
/// every superblock copy.
pub const IDENTITY_TEXT_SIZE_MAX: usize = 64;

/// One named figure of a machine's state, as the contract's `statistic`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statistic {
    /// What it is.
    pub name: String,
    /// Its values.
    pub values: Vec<u64>,
}

/// Options passed to `init`, as the contract's `options`. A data directory records them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The largest request body in bytes.
    pub batch_size_limit: u32,
    /// The largest reply in bytes.
    pub reply_size_limit: u32,
    /// A checkpoint is taken after every op that is a multiple of this.
    pub checkpoint_interval_ops: u64,
    /// Bytes per grid block.
    pub block_size: u32,
    /// Blocks in the grid.
    pub block_count: u64,
    /// Machine-specific settings.
    pub settings: Vec<(String, String)>,
}

/// The smallest and largest grid block the host supports, in bytes.
pub const BLOCK_SIZE_MIN: u32 = 512;
/// See [`BLOCK_SIZE_MIN`].
pub const BLOCK_SIZE_MAX: u32 = 512 * 1024;

/// The largest request body or reply the host handles, in bytes: bounds what a journal
/// entry holds (see `journal::BODY_SIZE_MAX`).
pub const MESSAGE_SIZE_MAX: u32 = 16 << 20;

impl Options {
    /// Check what the host itself relies on: the grid's geometry is addressable in a
    /// file on every target, message sizes fit a journal entry, and checkpoints happen.
    /// The machine checks the rest at `init`.
    pub fn validate(&self) -> Result<()> {
        let refuse = |reason: String| Err(Error::Refused(reason));
        if !self.block_size.is_power_of_two()
            || !(BLOCK_SIZE_MIN..=BLOCK_SIZE_MAX).contains(&self.block_size)
        {
            return refuse(format!(
                "block size {} is not a power of two in {BLOCK_SIZE_MIN}..={BLOCK_SIZE_MAX}",
                self.block_size
            ));
        }
        let grid_bytes = self.block_count.checked_mul(u64::from(self.block_size));
        if self.block_count == 0 || grid_bytes.is_none_or(|bytes| bytes > i64::MAX as u64) {
            return refuse(format!(
                "a grid of {} blocks of {} bytes cannot be addressed",
                self.block_count, self.block_size
            ));
        }
        for (name, size) in [
            ("batch size limit", self.batch_size_limit),
            ("reply size limit", self.reply_size_limit),
        ] {
            if size > MESSAGE_SIZE_MAX {
                return refuse(format!(
                    "{name} of {size} bytes is over the host's {MESSAGE_SIZE_MAX}"
                ));
            }
        }
        if self.checkpoint_interval_ops == 0 {
            return refuse("the checkpoint interval must be at least one op".into());
        }
        Ok(())
    }
}

/// A committed request, as the log records it and `deliver` hands it over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The client that sent it.
    pub client: u128,
    /// Its op number: one more than the previous committed op.
    pub op: u64,
    /// Its timestamp: greater than the previous op's.
    pub timestamp: u64,
    /// The state machine operation.
    pub operation: u8,
    /// The body.
    pub body: Vec<u8>,
}

impl Request {
    /// The body's size, as the contract's `request` carries it.
    ///
    /// # Panics
    ///
    /// If the body is 4 GiB or longer; a replica refuses any body over the batch size
    /// limit, a `u32`, before it delivers it.
    pub fn body_size(&self) -> u32 {
        u32::try_from(self.body.len()).expect("a delivered body is under 4 GiB")
    }
}

/// The bodies of `requests` end to end, as the contract's `deliver` takes them: a lone
/// body where it lies, several copied together into `buffer` (cleared first; a caller
/// that keeps it between deliveries allocates nothing once it has grown).
pub fn bodies_end_to_end<'a>(requests: &'a [Request], buffer: &'a mut Vec<u8>) -> &'a [u8] {
    if let [request] = requests {
        return &request.body;
    }
    buffer.clear();
    for request in requests {
        buffer.extend_from_slice(&request.body);
    }
    buffer
}

/// A state machine instance, as the host drives it. Every method is one export call;
/// an `Err` is a [`Fault`] and leaves the instance unusable.
pub trait Instance {
    /// `identify`.
    fn identify(&mut self) -> Result<Identity, Fault>;
    /// `init`.
    fn init(&mut self, options: &Options) -> Result<(), Fault>;
    /// `open`.
    fn open(&mut self, checkpoint: Option<&[u8]>) -> Result<Step, Fault>;
    /// `input-valid`: `Ok(Err(reason))` is a refused request, not a fault.
    fn input_valid(&mut self, operation: u8, body: &[u8]) -> Result<Result<(), String>, Fault>;
    /// `deliver`: start committing `requests` as one step (the host imports follow the
    /// delivery, see [`HostImports::begin_delivery`]).
    fn deliver(&mut self, requests: &[Request]) -> Result<Step, Fault>;
    /// `checkpoint`.
    fn checkpoint(&mut self, op: u64) -> Result<Step, Fault>;
    /// `checkpoint-state`.
    fn checkpoint_state(&mut self) -> Result<Vec<u8>, Fault>;
    /// `read-done`.
    fn read_done(&mut self, address: u64, block: &[u8]) -> Result<Step, Fault>;
    /// `write-done`.
    fn write_done(&mut self, address: u64) -> Result<Step, Fault>;
    /// `describe`.
    fn describe(&mut self) -> Result<Vec<Statistic>, Fault>;
    /// Run `action` on the host imports the instance's guest calls.
    fn with_imports_dyn(&mut self, action: &mut dyn FnMut(&mut HostImports));
    /// The guest's memory in bytes, where the host can see it (a component's linear
    /// memory; not a native build's heap).
    fn memory_bytes(&self) -> Option<usize> {
        None
    }
}

impl dyn Instance + '_ {
    /// Run `action` on the instance's host imports and return what it returns.
    pub fn with_imports<R>(&mut self, action: impl FnOnce(&mut HostImports) -> R) -> R {
        let mut action = Some(action);
        let mut result = None;
        self.with_imports_dyn(&mut |imports| {
            let action = action.take().expect("called once");
            result = Some(action(imports));
        });
        result.expect("the instance ran the action")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(op: u64, body: &[u8]) -> Request {
        Request {
            client: 7,
            op,
            timestamp: op,
            operation: 1,
            body: body.to_vec(),
        }
    }

    #[test]
    fn bodies_end_to_end_copies_only_when_there_are_several() {
        let mut buffer = b"left over from the last delivery".to_vec();
        let lone = [request(1, b"alone")];
        let bodies = bodies_end_to_end(&lone, &mut buffer);
        assert_eq!(bodies, b"alone");
        assert!(
            std::ptr::eq(bodies, &lone[0].body[..]),
            "a lone body is not copied"
        );
        let several = [request(1, b"ab"), request(2, b""), request(3, b"cde")];
        assert_eq!(bodies_end_to_end(&several, &mut buffer), b"abcde");
        assert_eq!(bodies_end_to_end(&[], &mut buffer), b"");
    }
}

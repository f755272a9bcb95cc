//! The host's errors, one enum where callers branch: refused input, a guest that failed,
//! trapped or broke the contract, I/O, damaged files, an incompatible data directory, a
//! divergent replay, and a replica stopped by an earlier error.
//!
//! Messages are lower-case, without a trailing period, and name what they are about;
//! tests match on the variants, not on the text.

use std::fmt;
use std::io;

/// A result with the host's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Something the host could not do.
#[derive(Debug)]
pub enum Error {
    /// Input refused before anything ran: options the host or the machine cannot use,
    /// a request out of order, or one the machine's `input-valid` refused. Nothing was
    /// written; the replica can go on.
    Refused(String),
    /// The guest failed, trapped or broke the contract during an export. The instance
    /// is unusable; the op it was working on is not acknowledged.
    Guest(GuestError),
    /// A file could not be read or written.
    Io {
        /// The file, by its role (`journal`, `grid`, ...) or path.
        file: String,
        /// What the host was doing.
        action: String,
        /// The system's error.
        source: io::Error,
    },
    /// A file's contents are damaged or are not what carapace writes.
    Corrupt {
        /// The file.
        file: String,
        /// What is wrong, naming the op or offset.
        detail: String,
    },
    /// A data directory written by another machine or state format, or created with
    /// other options.
    Incompatible(String),
    /// A request that stopped the machine twice, in its instance and in one rebuilt
    /// from what is durable: refused, never journaled; the replica goes on.
    Poison {
        /// The op number it would have taken (the next request takes it).
        op: u64,
        /// What it did to the rebuilt instance.
        guest: GuestError,
    },
    /// A data directory is owned by another replica, in this process or another.
    InUse(String),
    /// A replay produced something other than what the log recorded.
    Divergence {
        /// The first op that differed.
        op: u64,
        /// What differed.
        detail: String,
    },
    /// An earlier error in the commit protocol left the replica unable to go on safely;
    /// reopen it (recovery starts from what is durable).
    Stopped(String),
}

impl Error {
    /// An [`Error::Io`] for `file`, while doing `action`.
    pub fn io(file: impl Into<String>, action: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            file: file.into(),
            action: action.into(),
            source,
        }
    }

    /// An [`Error::Corrupt`] for `file`.
    pub fn corrupt(file: impl Into<String>, detail: impl Into<String>) -> Error {
        Error::Corrupt {
            file: file.into(),
            detail: detail.into(),
        }
    }

    /// The guest error, if this is one.
    pub fn guest(&self) -> Option<&GuestError> {
        match self {
            Error::Guest(guest) => Some(guest),
            _ => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Refused(reason) => write!(f, "refused: {reason}"),
            Error::Guest(guest) => write!(f, "{guest}"),
            Error::Io {
                file,
                action,
                source,
            } => write!(f, "{action} `{file}`: {source}"),
            Error::Corrupt { file, detail } => write!(f, "`{file}` is damaged: {detail}"),
            Error::Incompatible(detail) => write!(f, "incompatible data directory: {detail}"),
            Error::InUse(detail) => write!(f, "{detail}"),
            Error::Poison { op, guest } => write!(
                f,
                "refused as op {op}: the request stops the machine, also when rebuilt: {guest}"
            ),
            Error::Divergence { op, detail } => write!(f, "diverged at op {op}: {detail}"),
            Error::Stopped(reason) => write!(
                f,
                "the replica stopped after an earlier error and must be reopened: {reason}"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// A guest's failure kinds, as the contract's `failure` variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// `invalid-argument`: options or a checkpoint state the guest cannot use.
    InvalidArgument,
    /// `corrupt-block`: a block read back failed verification.
    CorruptBlock,
    /// `out-of-space`: the guest's storage is full.
    OutOfSpace,
    /// `protocol`: the guest says the host broke the protocol.
    Protocol,
}

impl FailureKind {
    /// The variant's name in the WIT.
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::InvalidArgument => "invalid-argument",
            FailureKind::CorruptBlock => "corrupt-block",
            FailureKind::OutOfSpace => "out-of-space",
            FailureKind::Protocol => "protocol",
        }
    }
}

/// What went wrong inside one export call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The guest returned a `failure`.
    Failure {
        /// Its kind.
        kind: FailureKind,
        /// Its message.
        message: String,
    },
    /// The guest trapped: a panic, running out of fuel or memory, an invalid access.
    Trap(String),
    /// The guest broke the contract (an address outside the grid, I/O outside a step, a
    /// reply over the limit, ...).
    Violation(String),
    /// The call ran past the host's wall-clock safety net. Not deterministic (the same
    /// call may finish on a faster machine), so a host fault rather than the guest's:
    /// the replica stops; no request is refused for it.
    Deadline(String),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Failure { kind, message } => {
                write!(f, "guest failure `{}`: {message}", kind.name())
            }
            Fault::Trap(message) => write!(f, "guest trapped: {message}"),
            Fault::Violation(message) => write!(f, "guest broke the contract: {message}"),
            Fault::Deadline(message) => write!(f, "host fault: {message}"),
        }
    }
}

/// A [`Fault`] with where it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestError {
    /// The export that was called (`prefetch`, `read-done`, ...).
    pub export: &'static str,
    /// The step it belonged to, for completions and timers (`open`, `compact`, ...).
    pub step: Option<&'static str>,
    /// The op being committed, or the last one committed between ops.
    pub op: u64,
    /// What went wrong.
    pub fault: Fault,
}

impl fmt::Display for GuestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op {}: `{}`", self.op, self.export)?;
        if let Some(step) = self.step.filter(|step| *step != self.export) {
            write!(f, " during `{step}`")?;
        }
        write!(f, ": {}", self.fault)
    }
}

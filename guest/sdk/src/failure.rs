//! Why a guest cannot go on: the `failure` variant of the contract, in plain Rust.

use std::fmt;

/// A failure that ends the guest instance. Mirrors `failure` in `wit/state-machine.wit`;
/// the adapters convert one into the other field by field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The options or the checkpoint state given by the host are unusable.
    InvalidArgument(String),
    /// A block read back from the grid failed verification; the message names the address.
    CorruptBlock(String),
    /// The grid, or a table bounded by the options, is full.
    OutOfSpace(String),
    /// The host broke the protocol (for example a completion nobody asked for).
    Protocol(String),
}

impl Failure {
    /// The message, without the kind.
    pub fn message(&self) -> &str {
        match self {
            Failure::InvalidArgument(message)
            | Failure::CorruptBlock(message)
            | Failure::OutOfSpace(message)
            | Failure::Protocol(message) => message,
        }
    }

    /// A short lower-case name of the kind, as used in messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::InvalidArgument(_) => "invalid argument",
            Failure::CorruptBlock(_) => "corrupt block",
            Failure::OutOfSpace(_) => "out of space",
            Failure::Protocol(_) => "protocol violation",
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind(), self.message())
    }
}

impl std::error::Error for Failure {}

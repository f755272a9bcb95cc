//! The kv machine's formats: operations, request bodies, replies, and the record the
//! tree stores. Every size is fixed and every integer little-endian; the crate docs
//! give the byte tables. Clients encode with the same functions the machine decodes
//! with, so tests can check each pair round trip.
//!
//! [`Request::parse`] is the only place a body is checked: `input_valid`, `prefetch`
//! and `commit` all go through it, and its error, [`InvalidRequest`], names the sizes.

use std::fmt;

use carapace_lsm::groove::TOMBSTONE_BIT;
use carapace_lsm::table::Value;

/// Bytes of a key: a `u128`.
pub const KEY_SIZE: usize = 16;

/// Bytes of a value: opaque to the machine.
pub const VALUE_SIZE: usize = 64;

/// Bytes of a timestamp in a record: a `u64`.
pub const TIMESTAMP_SIZE: usize = 8;

/// Bytes of a record: key, timestamp, value.
pub const RECORD_SIZE: usize = KEY_SIZE + TIMESTAMP_SIZE + VALUE_SIZE;

/// Bytes of one entry of a `put` body: key, value.
pub const PUT_SIZE: usize = KEY_SIZE + VALUE_SIZE;

/// Bytes of a `scan` body: `key_min`, `key_max`, `limit` (a `u32`).
pub const SCAN_REQUEST_SIZE: usize = 2 * KEY_SIZE + 4;

/// Keys (or put entries) in one request, at most. Each costs prefetch one lookup that
/// may read two blocks per level, one after the other, and commit one write into a
/// memory table sized at init for a bar of such ops; 64 keep an op's prefetch within a
/// few hundred reads and a reply within 5,632 bytes.
pub const KEYS_PER_OP_MAX: usize = 64;

/// A scan's `limit`, at most: as many records as a `get` may reply with, for the same
/// reasons (see [`KEYS_PER_OP_MAX`]).
pub const SCAN_LIMIT_MAX: u32 = KEYS_PER_OP_MAX as u32;

/// The operations of the kv machine. The numbers are part of the log format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Operation {
    /// Body: 1 to 64 entries of key and value. Upserts each in order. Reply: empty.
    Put = 1,
    /// Body: 1 to 64 keys. Reply: a byte per key, 1 if it existed just before.
    Delete = 2,
    /// Body: 1 to 64 keys. Reply: a record per key, zeros past the key if absent.
    Get = 3,
    /// Body: a [`ScanRequest`]. Reply: the live records of the range, ascending.
    Scan = 4,
}

impl Operation {
    /// The operation numbered `operation`, if there is one.
    pub fn from_u8(operation: u8) -> Option<Operation> {
        match operation {
            1 => Some(Operation::Put),
            2 => Some(Operation::Delete),
            3 => Some(Operation::Get),
            4 => Some(Operation::Scan),
            _ => None,
        }
    }

    /// Its name, as in messages.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Put => "put",
            Operation::Delete => "delete",
            Operation::Get => "get",
            Operation::Scan => "scan",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A stored record, and the record a `get` or `scan` replies with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// The key.
    pub key: u128,
    /// The timestamp of the op that wrote the record; [`TOMBSTONE_BIT`] set for a
    /// tombstone, 0 in the reply to a `get` of an absent key.
    pub timestamp: u64,
    /// The value; zeros in a tombstone and for an absent key.
    pub value: [u8; VALUE_SIZE],
}

impl Record {
    /// What a `get` of an absent key replies with: the key, then zeros.
    pub fn absent(key: u128) -> Record {
        Record {
            key,
            timestamp: 0,
            value: [0; VALUE_SIZE],
        }
    }

    /// The encoded record, as stored and replied.
    pub fn to_bytes(&self) -> [u8; RECORD_SIZE] {
        let mut bytes = [0; RECORD_SIZE];
        self.encode(&mut bytes);
        bytes
    }
}

impl Value for Record {
    /// key (16), timestamp (8), value (64).
    const SIZE: usize = RECORD_SIZE;

    fn key(&self) -> u128 {
        self.key
    }

    fn is_tombstone(&self) -> bool {
        self.timestamp & TOMBSTONE_BIT != 0
    }

    fn tombstone(key: u128) -> Record {
        Record {
            key,
            timestamp: TOMBSTONE_BIT,
            value: [0; VALUE_SIZE],
        }
    }

    fn encode(&self, out: &mut [u8]) {
        out[..KEY_SIZE].copy_from_slice(&self.key.to_le_bytes());
        out[KEY_SIZE..KEY_SIZE + TIMESTAMP_SIZE].copy_from_slice(&self.timestamp.to_le_bytes());
        out[KEY_SIZE + TIMESTAMP_SIZE..RECORD_SIZE].copy_from_slice(&self.value);
    }

    fn decode(bytes: &[u8]) -> Record {
        Record {
            key: key_at(bytes, 0),
            timestamp: u64::from_le_bytes(
                bytes[KEY_SIZE..KEY_SIZE + TIMESTAMP_SIZE]
                    .try_into()
                    .unwrap(),
            ),
            value: bytes[KEY_SIZE + TIMESTAMP_SIZE..RECORD_SIZE]
                .try_into()
                .unwrap(),
        }
    }
}

fn key_at(bytes: &[u8], offset: usize) -> u128 {
    u128::from_le_bytes(bytes[offset..offset + KEY_SIZE].try_into().unwrap())
}

/// The body of a `scan`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanRequest {
    /// The smallest key to return.
    pub key_min: u128,
    /// The largest key to return; at least `key_min`.
    pub key_max: u128,
    /// Records to return at most, `1..=SCAN_LIMIT_MAX`.
    pub limit: u32,
}

impl ScanRequest {
    /// The encoded body: `key_min` (16), `key_max` (16), `limit` (4).
    pub fn encode(&self) -> [u8; SCAN_REQUEST_SIZE] {
        let mut bytes = [0; SCAN_REQUEST_SIZE];
        bytes[..KEY_SIZE].copy_from_slice(&self.key_min.to_le_bytes());
        bytes[KEY_SIZE..2 * KEY_SIZE].copy_from_slice(&self.key_max.to_le_bytes());
        bytes[2 * KEY_SIZE..].copy_from_slice(&self.limit.to_le_bytes());
        bytes
    }

    /// Decode an encoded body; the fields are not checked (see [`Request::parse`]).
    pub fn decode(bytes: &[u8; SCAN_REQUEST_SIZE]) -> ScanRequest {
        ScanRequest {
            key_min: key_at(bytes, 0),
            key_max: key_at(bytes, KEY_SIZE),
            limit: u32::from_le_bytes(bytes[2 * KEY_SIZE..].try_into().unwrap()),
        }
    }
}

/// Append the body of a `put` of `entries` to `out`.
pub fn encode_put(entries: &[(u128, [u8; VALUE_SIZE])], out: &mut Vec<u8>) {
    for (key, value) in entries {
        out.extend_from_slice(&key.to_le_bytes());
        out.extend_from_slice(value);
    }
}

/// Append the body of a `delete` or `get` of `keys` to `out`.
pub fn encode_keys(keys: &[u128], out: &mut Vec<u8>) {
    for key in keys {
        out.extend_from_slice(&key.to_le_bytes());
    }
}

/// The records of a `get` or `scan` reply; `None` if it is not whole records.
pub fn decode_records(reply: &[u8]) -> Option<Vec<Record>> {
    reply.len().is_multiple_of(RECORD_SIZE).then(|| {
        reply
            .chunks_exact(RECORD_SIZE)
            .map(Record::decode)
            .collect()
    })
}

/// The keys of a checked `delete` or `get` body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keys<'a> {
    body: &'a [u8],
}

impl<'a> Keys<'a> {
    /// How many keys.
    pub fn len(&self) -> usize {
        self.body.len() / KEY_SIZE
    }

    /// Whether there are none (never, once checked).
    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }

    /// The keys, in request order.
    pub fn iter(&self) -> impl Iterator<Item = u128> + 'a {
        self.body.chunks_exact(KEY_SIZE).map(|key| key_at(key, 0))
    }
}

/// The entries of a checked `put` body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PutEntries<'a> {
    body: &'a [u8],
}

impl<'a> PutEntries<'a> {
    /// How many entries.
    pub fn len(&self) -> usize {
        self.body.len() / PUT_SIZE
    }

    /// Whether there are none (never, once checked).
    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }

    /// `(key, value)` of each entry, in request order.
    pub fn iter(&self) -> impl Iterator<Item = (u128, &'a [u8; VALUE_SIZE])> + 'a {
        self.body
            .chunks_exact(PUT_SIZE)
            .map(|entry| (key_at(entry, 0), entry[KEY_SIZE..].try_into().unwrap()))
    }
}

/// The limits a request is checked against: the `options` the machine was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest body accepted, in bytes.
    pub batch_size_limit: u32,
    /// The largest reply allowed, in bytes.
    pub reply_size_limit: u32,
}

/// A request that passed every check, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// Upsert these entries, in order.
    Put(PutEntries<'a>),
    /// Delete these keys.
    Delete(Keys<'a>),
    /// Read these keys.
    Get(Keys<'a>),
    /// Read a key range.
    Scan(ScanRequest),
}

/// Why a request is refused; its `Display` is the reason `input_valid` gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidRequest {
    /// No operation has this number.
    UnknownOperation {
        /// The number.
        operation: u8,
    },
    /// The body is larger than the options allow.
    BodyOverBatchSizeLimit {
        /// The body's size, in bytes.
        body_size: usize,
        /// The limit, in bytes.
        batch_size_limit: u32,
    },
    /// A `put`, `delete` or `get` body that is not a whole number of entries.
    NotWholeEntries {
        /// The operation.
        operation: Operation,
        /// The body's size, in bytes.
        body_size: usize,
    },
    /// A `put`, `delete` or `get` body with no entry.
    NoEntries {
        /// The operation.
        operation: Operation,
    },
    /// A `put`, `delete` or `get` with more than [`KEYS_PER_OP_MAX`] entries.
    TooManyEntries {
        /// The operation.
        operation: Operation,
        /// Its entries.
        count: usize,
    },
    /// A `scan` body that is not [`SCAN_REQUEST_SIZE`] bytes.
    ScanBodySize {
        /// The body's size, in bytes.
        body_size: usize,
    },
    /// A `scan` whose `key_min` is above its `key_max`.
    ScanKeyRange {
        /// The request's `key_min`.
        key_min: u128,
        /// The request's `key_max`.
        key_max: u128,
    },
    /// A `scan` whose `limit` is not in `1..=SCAN_LIMIT_MAX`.
    ScanLimit {
        /// The request's `limit`.
        limit: u32,
    },
    /// The largest reply the request could have is over the reply size limit.
    ReplyOverReplySizeLimit {
        /// The operation.
        operation: Operation,
        /// The largest reply it could have, in bytes.
        reply_size_max: u64,
        /// The limit, in bytes.
        reply_size_limit: u32,
    },
}

impl Operation {
    /// Bytes of one entry of the body, for the operations whose body is a list.
    fn entry_size(self) -> Option<usize> {
        match self {
            Operation::Put => Some(PUT_SIZE),
            Operation::Delete | Operation::Get => Some(KEY_SIZE),
            Operation::Scan => None,
        }
    }

    fn entry_name(self) -> &'static str {
        match self {
            Operation::Put => "entries of 80 bytes (key 16, value 64)",
            Operation::Delete | Operation::Get | Operation::Scan => "keys of 16 bytes",
        }
    }
}

impl fmt::Display for InvalidRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            InvalidRequest::UnknownOperation { operation } => write!(
                f,
                "unknown operation {operation}: kv knows `put` (1), `delete` (2), `get` (3) \
                 and `scan` (4)"
            ),
            InvalidRequest::BodyOverBatchSizeLimit {
                body_size,
                batch_size_limit,
            } => write!(
                f,
                "body of {body_size} bytes exceeds the batch size limit of {batch_size_limit} bytes"
            ),
            InvalidRequest::NotWholeEntries {
                operation,
                body_size,
            } => write!(
                f,
                "`{operation}` body of {body_size} bytes is not a whole number of {}",
                operation.entry_name()
            ),
            InvalidRequest::NoEntries { operation } => write!(
                f,
                "`{operation}` body is empty: it holds 1 to {KEYS_PER_OP_MAX} {}",
                operation.entry_name()
            ),
            InvalidRequest::TooManyEntries { operation, count } => write!(
                f,
                "`{operation}` of {count} entries exceeds the maximum of {KEYS_PER_OP_MAX} per request"
            ),
            InvalidRequest::ScanBodySize { body_size } => write!(
                f,
                "`scan` body of {body_size} bytes is not {SCAN_REQUEST_SIZE} bytes \
                 (key_min 16, key_max 16, limit 4)"
            ),
            InvalidRequest::ScanKeyRange { key_min, key_max } => {
                write!(f, "`scan` key_min {key_min} is above key_max {key_max}")
            }
            InvalidRequest::ScanLimit { limit } => {
                write!(f, "`scan` limit {limit} is not in 1..={SCAN_LIMIT_MAX}")
            }
            InvalidRequest::ReplyOverReplySizeLimit {
                operation,
                reply_size_max,
                reply_size_limit,
            } => write!(
                f,
                "`{operation}` could reply with {reply_size_max} bytes, over the reply size \
                 limit of {reply_size_limit} bytes"
            ),
        }
    }
}

impl std::error::Error for InvalidRequest {}

impl<'a> Request<'a> {
    /// Check a request against `limits` and the format, and parse it.
    pub fn parse(
        operation: u8,
        body: &'a [u8],
        limits: &Limits,
    ) -> Result<Request<'a>, InvalidRequest> {
        let Some(operation) = Operation::from_u8(operation) else {
            return Err(InvalidRequest::UnknownOperation { operation });
        };
        // Compared as u64: the same answer on 32-bit and 64-bit targets.
        if body.len() as u64 > u64::from(limits.batch_size_limit) {
            return Err(InvalidRequest::BodyOverBatchSizeLimit {
                body_size: body.len(),
                batch_size_limit: limits.batch_size_limit,
            });
        }
        let (request, reply_size_max) = match operation.entry_size() {
            Some(entry_size) => {
                if !body.len().is_multiple_of(entry_size) {
                    return Err(InvalidRequest::NotWholeEntries {
                        operation,
                        body_size: body.len(),
                    });
                }
                let count = body.len() / entry_size;
                if count == 0 {
                    return Err(InvalidRequest::NoEntries { operation });
                }
                if count > KEYS_PER_OP_MAX {
                    return Err(InvalidRequest::TooManyEntries { operation, count });
                }
                // `count` is at most 64: no product below overflows.
                match operation {
                    Operation::Put => (Request::Put(PutEntries { body }), 0),
                    Operation::Delete => (Request::Delete(Keys { body }), count as u64),
                    Operation::Get => (Request::Get(Keys { body }), (count * RECORD_SIZE) as u64),
                    Operation::Scan => unreachable!("a scan body is not a list"),
                }
            }
            None => {
                let Ok(bytes) = <&[u8; SCAN_REQUEST_SIZE]>::try_from(body) else {
                    return Err(InvalidRequest::ScanBodySize {
                        body_size: body.len(),
                    });
                };
                let scan = ScanRequest::decode(bytes);
                if scan.key_min > scan.key_max {
                    return Err(InvalidRequest::ScanKeyRange {
                        key_min: scan.key_min,
                        key_max: scan.key_max,
                    });
                }
                if !(1..=SCAN_LIMIT_MAX).contains(&scan.limit) {
                    return Err(InvalidRequest::ScanLimit { limit: scan.limit });
                }
                (
                    Request::Scan(scan),
                    u64::from(scan.limit) * RECORD_SIZE as u64,
                )
            }
        };
        if reply_size_max > u64::from(limits.reply_size_limit) {
            return Err(InvalidRequest::ReplyOverReplySizeLimit {
                operation,
                reply_size_max,
                reply_size_limit: limits.reply_size_limit,
            });
        }
        Ok(request)
    }

    /// The operation.
    pub fn operation(&self) -> Operation {
        match self {
            Request::Put(_) => Operation::Put,
            Request::Delete(_) => Operation::Delete,
            Request::Get(_) => Operation::Get,
            Request::Scan(_) => Operation::Scan,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        batch_size_limit: 8192,
        reply_size_limit: 8192,
    };

    fn value(seed: u8) -> [u8; VALUE_SIZE] {
        std::array::from_fn(|index| seed.wrapping_mul(31).wrapping_add(index as u8))
    }

    #[test]
    fn sizes_add_up() {
        assert_eq!(RECORD_SIZE, 88);
        assert_eq!(PUT_SIZE, 80);
        assert_eq!(SCAN_REQUEST_SIZE, 36);
        assert_eq!(<Record as Value>::SIZE, RECORD_SIZE);
    }

    #[test]
    fn records_round_trip_byte_for_byte() {
        let record = Record {
            key: 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10,
            timestamp: 0x1122_3344_5566_7788,
            value: value(5),
        };
        let mut bytes = [0; RECORD_SIZE];
        record.encode(&mut bytes);
        // Little-endian key, then timestamp, then the value as is.
        assert_eq!(bytes[0], 0x10);
        assert_eq!(bytes[15], 0x01);
        assert_eq!(bytes[16], 0x88);
        assert_eq!(bytes[23], 0x11);
        assert_eq!(bytes[24..], value(5));
        assert_eq!(Record::decode(&bytes), record);
        assert!(!record.is_tombstone());

        let tombstone = Record::tombstone(record.key);
        assert!(tombstone.is_tombstone());
        assert_eq!(tombstone.key(), record.key);
        tombstone.encode(&mut bytes);
        assert_eq!(Record::decode(&bytes), tombstone);
        assert_eq!(
            decode_records(&[bytes, bytes].concat()),
            Some(vec![tombstone, tombstone])
        );
        assert_eq!(decode_records(&bytes[1..]), None);
    }

    #[test]
    fn requests_round_trip() {
        let entries = [(0, value(1)), (u128::MAX, value(2)), (7, value(3))];
        let mut body = Vec::new();
        encode_put(&entries, &mut body);
        assert_eq!(body.len(), 3 * PUT_SIZE);
        let Ok(Request::Put(parsed)) = Request::parse(Operation::Put as u8, &body, &LIMITS) else {
            panic!("put refused");
        };
        assert_eq!(
            parsed
                .iter()
                .map(|(key, value)| (key, *value))
                .collect::<Vec<_>>(),
            entries
        );

        let keys = [3, 0, u128::MAX, 3];
        for operation in [Operation::Delete, Operation::Get] {
            let mut body = Vec::new();
            encode_keys(&keys, &mut body);
            let request = Request::parse(operation as u8, &body, &LIMITS).unwrap();
            assert_eq!(request.operation(), operation);
            let (Request::Delete(parsed) | Request::Get(parsed)) = request else {
                panic!("{operation} parsed as {request:?}");
            };
            assert_eq!(parsed.len(), keys.len());
            assert_eq!(parsed.iter().collect::<Vec<_>>(), keys);
        }

        let scan = ScanRequest {
            key_min: 1 << 100,
            key_max: u128::MAX,
            limit: SCAN_LIMIT_MAX,
        };
        let bytes = scan.encode();
        assert_eq!(bytes[..16], (1u128 << 100).to_le_bytes());
        assert_eq!(bytes[32..], SCAN_LIMIT_MAX.to_le_bytes());
        assert_eq!(
            Request::parse(Operation::Scan as u8, &bytes, &LIMITS),
            Ok(Request::Scan(scan))
        );
    }

    /// Every refusal, with the variant and the reason `input_valid` gives.
    #[test]
    fn bad_requests_are_refused_with_their_reason() {
        let tight = Limits {
            batch_size_limit: 1000,
            reply_size_limit: 400,
        };
        let scan = |key_min, key_max, limit| {
            ScanRequest {
                key_min,
                key_max,
                limit,
            }
            .encode()
            .to_vec()
        };
        let put = Operation::Put as u8;
        let delete = Operation::Delete as u8;
        let get = Operation::Get as u8;
        let scan_operation = Operation::Scan as u8;
        let cases: Vec<(u8, Vec<u8>, Limits, InvalidRequest, &str)> = vec![
            (
                0,
                vec![0; 16],
                LIMITS,
                InvalidRequest::UnknownOperation { operation: 0 },
                "unknown operation 0: kv knows `put` (1), `delete` (2), `get` (3) and `scan` (4)",
            ),
            (
                5,
                vec![0; 16],
                LIMITS,
                InvalidRequest::UnknownOperation { operation: 5 },
                "unknown operation 5: kv knows `put` (1), `delete` (2), `get` (3) and `scan` (4)",
            ),
            (
                get,
                vec![0; 1008],
                tight,
                InvalidRequest::BodyOverBatchSizeLimit {
                    body_size: 1008,
                    batch_size_limit: 1000,
                },
                "body of 1008 bytes exceeds the batch size limit of 1000 bytes",
            ),
            (
                put,
                vec![0; 81],
                LIMITS,
                InvalidRequest::NotWholeEntries {
                    operation: Operation::Put,
                    body_size: 81,
                },
                "`put` body of 81 bytes is not a whole number of entries of 80 bytes (key 16, value 64)",
            ),
            (
                delete,
                vec![0; 17],
                LIMITS,
                InvalidRequest::NotWholeEntries {
                    operation: Operation::Delete,
                    body_size: 17,
                },
                "`delete` body of 17 bytes is not a whole number of keys of 16 bytes",
            ),
            (
                get,
                Vec::new(),
                LIMITS,
                InvalidRequest::NoEntries {
                    operation: Operation::Get,
                },
                "`get` body is empty: it holds 1 to 64 keys of 16 bytes",
            ),
            (
                put,
                vec![0; 65 * PUT_SIZE],
                LIMITS,
                InvalidRequest::TooManyEntries {
                    operation: Operation::Put,
                    count: 65,
                },
                "`put` of 65 entries exceeds the maximum of 64 per request",
            ),
            (
                delete,
                vec![0; 65 * KEY_SIZE],
                LIMITS,
                InvalidRequest::TooManyEntries {
                    operation: Operation::Delete,
                    count: 65,
                },
                "`delete` of 65 entries exceeds the maximum of 64 per request",
            ),
            (
                scan_operation,
                vec![0; 35],
                LIMITS,
                InvalidRequest::ScanBodySize { body_size: 35 },
                "`scan` body of 35 bytes is not 36 bytes (key_min 16, key_max 16, limit 4)",
            ),
            (
                scan_operation,
                scan(2, 1, 1),
                LIMITS,
                InvalidRequest::ScanKeyRange {
                    key_min: 2,
                    key_max: 1,
                },
                "`scan` key_min 2 is above key_max 1",
            ),
            (
                scan_operation,
                scan(1, 2, 0),
                LIMITS,
                InvalidRequest::ScanLimit { limit: 0 },
                "`scan` limit 0 is not in 1..=64",
            ),
            (
                scan_operation,
                scan(1, 2, 65),
                LIMITS,
                InvalidRequest::ScanLimit { limit: 65 },
                "`scan` limit 65 is not in 1..=64",
            ),
            (
                get,
                vec![0; 5 * KEY_SIZE],
                tight,
                InvalidRequest::ReplyOverReplySizeLimit {
                    operation: Operation::Get,
                    reply_size_max: 440,
                    reply_size_limit: 400,
                },
                "`get` could reply with 440 bytes, over the reply size limit of 400 bytes",
            ),
            (
                scan_operation,
                scan(0, u128::MAX, 5),
                tight,
                InvalidRequest::ReplyOverReplySizeLimit {
                    operation: Operation::Scan,
                    reply_size_max: 440,
                    reply_size_limit: 400,
                },
                "`scan` could reply with 440 bytes, over the reply size limit of 400 bytes",
            ),
        ];
        for (operation, body, limits, expected, reason) in cases {
            let error = Request::parse(operation, &body, &limits).unwrap_err();
            assert_eq!(error, expected);
            assert_eq!(error.to_string(), reason);
        }

        // The largest requests that fit pass.
        assert!(Request::parse(get, &[0; 4 * KEY_SIZE], &tight).is_ok());
        assert!(Request::parse(scan_operation, &scan(0, 0, 4), &tight).is_ok());
        assert!(Request::parse(put, &[0; 12 * PUT_SIZE], &tight).is_ok());
        assert!(Request::parse(delete, &[0; 62 * KEY_SIZE], &tight).is_ok());
        assert!(Request::parse(put, &[0; 64 * PUT_SIZE], &LIMITS).is_ok());
    }

    #[test]
    fn a_delete_reply_is_a_byte_per_key() {
        // A delete's largest reply is its key count: refused only by a tiny limit.
        let limits = Limits {
            batch_size_limit: 1024,
            reply_size_limit: 3,
        };
        assert_eq!(
            Request::parse(Operation::Delete as u8, &[0; 4 * KEY_SIZE], &limits),
            Err(InvalidRequest::ReplyOverReplySizeLimit {
                operation: Operation::Delete,
                reply_size_max: 4,
                reply_size_limit: 3,
            })
        );
    }
}

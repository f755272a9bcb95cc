//! The one checksum of the project: XXH3-128 over bytes.
//!
//! Every block, every reference to a block and every checkpoint state is named by this
//! checksum. It detects corruption and misdirected I/O; it is not a MAC against an
//! adversary, which the sandbox makes unnecessary (a guest only sees its own grid).

// wasm hashes inputs over 16 bytes with XXH3 of its own (see the module); natively,
// xxhash-rust is the faster, and the module's portable form is built for its tests.
#[cfg(any(target_arch = "wasm32", test))]
mod xxh3;

/// Up to this many bytes, XXH3 hashes its input in one pass.
const SHORT_MAX: usize = 240;

/// The 128-bit checksum of `bytes`.
pub fn checksum(bytes: &[u8]) -> u128 {
    #[cfg(target_arch = "wasm32")]
    if bytes.len() > SHORT_MAX {
        return xxh3::hash(xxh3::Joined {
            head: &[],
            tail: bytes,
        });
    } else if bytes.len() >= xxh3::MID_MIN {
        return xxh3::hash_mid(bytes);
    }
    xxhash_rust::xxh3::xxh3_128(bytes)
}

/// The checksum of `head` followed by `tail`, without copying them side by side: for
/// a header before a body of any size.
pub fn checksum_joined(head: &[u8], tail: &[u8]) -> u128 {
    // A short input is copied onto the stack and hashed in one pass, which costs less
    // than setting up a streaming state. Up to 128 bytes (a header and a small body),
    // in a buffer of that size: wasm zeroes the buffer past a header of constant size
    // with a call out of the guest, and a smaller buffer leaves it less to fill.
    let len = head.len() + tail.len();
    if len <= 128 {
        return checksum_on_stack::<128>(head, tail);
    }
    if len <= SHORT_MAX {
        return checksum_on_stack::<SHORT_MAX>(head, tail);
    }
    #[cfg(target_arch = "wasm32")]
    return xxh3::hash(xxh3::Joined { head, tail });
    #[cfg(not(target_arch = "wasm32"))]
    {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        hasher.update(head);
        hasher.update(tail);
        hasher.digest128()
    }
}

/// The checksum of `head` followed by `tail`, copied side by side into `N` bytes on the
/// stack (they fit).
fn checksum_on_stack<const N: usize>(head: &[u8], tail: &[u8]) -> u128 {
    let len = head.len() + tail.len();
    let mut joined = [0; N];
    joined[..head.len()].copy_from_slice(head);
    joined[head.len()..len].copy_from_slice(tail);
    checksum(&joined[..len])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joined_equals_one_shot_at_every_length() {
        let bytes: Vec<u8> = (0..600_u32).map(|index| (index * 31 + 7) as u8).collect();
        for len in 0..=bytes.len() {
            for split in [0, 1, 33, 64, 300] {
                let split = split.min(len);
                let (head, tail) = bytes[..len].split_at(split);
                assert_eq!(
                    checksum_joined(head, tail),
                    checksum(&bytes[..len]),
                    "{len} bytes, head of {split}"
                );
            }
        }
    }

    #[test]
    fn known_value_is_stable() {
        // The checksum names blocks on disk: it must never change across versions.
        assert_eq!(checksum(b""), 0x99aa_06d3_0147_98d8_6001_c324_468d_497f);
    }
}

//! The one checksum of the project: XXH3-128 over bytes.
//!
//! Every block, every reference to a block and every checkpoint state is named by this
//! checksum. It detects corruption and misdirected I/O; it is not a MAC against an
//! adversary, which the sandbox makes unnecessary (a guest only sees its own grid).

// wasm hashes inputs over 16 bytes with XXH3 of its own (see the module); natively,
// xxhash-rust is the faster, and the module's portable form is built for its tests.
#[cfg(any(target_arch = "wasm32", test))]
mod xxh3;

use std::mem::MaybeUninit;

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
/// stack (they fit). The bytes past them are never written nor read: zeroing them, as
/// an initialized buffer must be, is a `memory.fill` call out of the guest in wasm.
fn checksum_on_stack<const N: usize>(head: &[u8], tail: &[u8]) -> u128 {
    let len = head.len() + tail.len();
    let mut joined = [MaybeUninit::<u8>::uninit(); N];
    copy_short(&mut joined[..head.len()], head);
    copy_short(&mut joined[head.len()..len], tail);
    // SAFETY: the first `len` bytes were written just above.
    let joined = unsafe { std::slice::from_raw_parts(joined.as_ptr().cast::<u8>(), len) };
    checksum(joined)
}

/// Copy `from` into `to`, which is as long: natively `memcpy`, in wasm [`copy_in_pieces`].
#[inline(always)]
fn copy_short(to: &mut [MaybeUninit<u8>], from: &[u8]) {
    #[cfg(target_arch = "wasm32")]
    copy_in_pieces(to, from);
    #[cfg(not(target_arch = "wasm32"))]
    to.write_copy_of_slice(from);
}

/// Copy `from` into `to`, which is as long, in pieces of constant sizes and, below 256
/// bytes, without a loop. In wasm a copy whose length is not a constant is a
/// `memory.copy`, a call out of the guest that costs more than copying a few dozen bytes
/// (and LLVM turns a loop of constant pieces back into one); a piece of constant size is
/// a few loads and stores. Natively `memcpy` is as cheap; this is built for its test.
#[cfg(any(target_arch = "wasm32", test))]
fn copy_in_pieces(to: &mut [MaybeUninit<u8>], from: &[u8]) {
    let len = from.len();
    assert_eq!(to.len(), len);
    match len {
        0 => {}
        1..4 => {
            to[0].write(from[0]);
            to[len / 2].write(from[len / 2]);
            to[len - 1].write(from[len - 1]);
        }
        4..8 => copy_ends::<4>(to, from),
        8..16 => copy_ends::<8>(to, from),
        16..256 => {
            let mut at = 0;
            for piece in [128, 64, 32, 16] {
                if len - at >= piece {
                    to[at..at + piece].write_copy_of_slice(&from[at..at + piece]);
                    at += piece;
                }
            }
            // Fewer than 16 bytes are left: the last 16 cover them.
            to[len - 16..].write_copy_of_slice(&from[len - 16..]);
        }
        _ => {
            to.write_copy_of_slice(from);
        }
    }
}

/// Copy the first and the last `N` bytes of `from` (at least `N`, at most `2 * N`, so that
/// they cover it) into `to`.
#[cfg(any(target_arch = "wasm32", test))]
#[inline(always)]
fn copy_ends<const N: usize>(to: &mut [MaybeUninit<u8>], from: &[u8]) {
    let len = from.len();
    to[..N].write_copy_of_slice(&from[..N]);
    to[len - N..].write_copy_of_slice(&from[len - N..]);
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
    fn a_copy_in_pieces_copies_every_length() {
        let from: Vec<u8> = (0..300_u32).map(|index| (index * 7 + 1) as u8).collect();
        for len in 0..=from.len() {
            let mut to = [MaybeUninit::new(0_u8); 300];
            copy_in_pieces(&mut to[..len], &from[..len]);
            // SAFETY: every byte was initialized (to 0) before the copy wrote over some.
            let to: [u8; 300] = unsafe { std::mem::transmute(to) };
            assert_eq!(to[..len], from[..len], "{len} bytes");
            assert!(to[len..].iter().all(|&byte| byte == 0), "{len} bytes");
        }
    }

    #[test]
    fn known_value_is_stable() {
        // The checksum names blocks on disk: it must never change across versions.
        assert_eq!(checksum(b""), 0x99aa_06d3_0147_98d8_6001_c324_468d_497f);
    }
}

//! XXH3-128 (default secret, seed 0) for wasm: inputs of 17 to 240 bytes, and inputs
//! longer than 240 bytes given in two parts.
//!
//! In wasm, xxhash-rust's 64×64→128-bit multiplies are calls to `__multi3`, a general
//! 128-bit multiply of ~100 instructions, eight of them for a 97-byte input; here they
//! are four 32-bit products inline ([`fold64`]). Its streaming hasher consumes a long
//! input four stripes (256 bytes) a call, reloading its accumulators each time; under
//! fuel that costs ~1.7 instructions a byte, against ~0.74 here, where a block of 16
//! stripes is one straight run and the accumulators stay in locals. The two parts let
//! echo hash a request's header and body as one input without copying the body next to
//! the header. The results are XXH3's: tests check them against xxhash-rust at every
//! length and split.

use super::SHORT_MAX;

const STRIPE: usize = 64;
const STRIPES_PER_BLOCK: usize = (SECRET.len() - STRIPE) / 8;
const BLOCK: usize = STRIPE * STRIPES_PER_BLOCK;

/// XXH3's default secret (its specification's `kSecret`).
const SECRET: [u8; 192] = [
    0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
    0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
    0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
    0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
    0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3,
    0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
    0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d,
    0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64,
    0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
    0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e,
    0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce,
    0x45, 0xcb, 0x3a, 0x8f, 0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
];

const PRIME32_1: u64 = 0x9E37_79B1;
const PRIME32_2: u64 = 0x85EB_CA77;
const PRIME32_3: u64 = 0xC2B2_AE3D;
const PRIME64_1: u64 = 0x9E37_79B1_85EB_CA87;
const PRIME64_2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const PRIME64_3: u64 = 0x1656_67B1_9E37_79F9;
const PRIME64_4: u64 = 0x85EB_CA77_C2B2_AE63;
const PRIME64_5: u64 = 0x27D4_EB2F_1656_67C5;

/// Where the last stripe's secret starts, and where the accumulators' merge's does.
const LAST_STRIPE_SECRET: usize = SECRET.len() - STRIPE - 7;
const MERGE_SECRET: usize = 11;
/// Bytes of the eight accumulators: the high half's merge reads the secret this far
/// from its end.
const ACC_SIZE: usize = 64;
/// Inputs of 129 to 240 bytes: where the secret of their fifth and later rounds
/// starts, and of their last 32 bytes (XXH3's minimum secret size, 136, less 17 and a
/// round's 16).
const MID_ROUNDS_SECRET: usize = 3;
const MID_LAST_SECRET: usize = 136 - 17 - 16;

/// The bytes `head` then `tail`, hashed as one input without joining them.
#[derive(Clone, Copy)]
pub(super) struct Joined<'a> {
    pub(super) head: &'a [u8],
    pub(super) tail: &'a [u8],
}

impl<'a> Joined<'a> {
    fn len(&self) -> usize {
        self.head.len() + self.tail.len()
    }

    /// Whole stripes from `offset`, at most `stripes_max` of them, that lie in one of
    /// the two parts; empty when the stripe at `offset` straddles them.
    fn run(&self, offset: usize, stripes_max: usize) -> &'a [u8] {
        let (part, at) = if offset < self.head.len() {
            (self.head, offset)
        } else {
            (self.tail, offset - self.head.len())
        };
        let stripes = ((part.len() - at) / STRIPE).min(stripes_max);
        &part[at..at + stripes * STRIPE]
    }

    /// The stripe at `offset`: in place when it lies in one part, else gathered into
    /// `scratch`.
    fn stripe<'s>(&'s self, offset: usize, scratch: &'s mut [u8; STRIPE]) -> &'s [u8] {
        let run = self.run(offset, 1);
        if !run.is_empty() {
            return run;
        }
        let from_head = self.head.len() - offset;
        scratch[..from_head].copy_from_slice(&self.head[offset..]);
        scratch[from_head..].copy_from_slice(&self.tail[..STRIPE - from_head]);
        scratch
    }
}

/// XXH3-128 of `input`, longer than [`SHORT_MAX`] bytes.
pub(super) fn hash(input: Joined<'_>) -> u128 {
    let len = input.len();
    debug_assert!(len > SHORT_MAX);
    let mut acc = kernel::Acc::new();
    // Every stripe but the last byte's is accumulated in order, the secret advancing by
    // 8 bytes a stripe and the accumulators scrambled after each block of 16 stripes.
    let stripes = (len - 1) / STRIPE;
    let mut done = 0;
    let mut scratch = [0; STRIPE];
    while done < stripes {
        let in_block = done % STRIPES_PER_BLOCK;
        let run = input.run(
            done * STRIPE,
            (STRIPES_PER_BLOCK - in_block).min(stripes - done),
        );
        if run.is_empty() {
            acc.stripes(input.stripe(done * STRIPE, &mut scratch), in_block);
            done += 1;
        } else if let Ok(block) = <&[u8; BLOCK]>::try_from(run) {
            acc.block(block);
            done += STRIPES_PER_BLOCK;
        } else {
            acc.stripes(run, in_block);
            done += run.len() / STRIPE;
        }
        if done % STRIPES_PER_BLOCK == 0 {
            acc.scramble();
        }
    }
    // The last 64 bytes, whole, with their own secret.
    acc.stripe_with(input.stripe(len - STRIPE, &mut scratch), LAST_STRIPE_SECRET);
    let lanes = acc.lanes();
    let low = merge(&lanes, MERGE_SECRET, (len as u64).wrapping_mul(PRIME64_1));
    let high = merge(
        &lanes,
        SECRET.len() - ACC_SIZE - MERGE_SECRET,
        !(len as u64).wrapping_mul(PRIME64_2),
    );
    u128::from(high) << 64 | u128::from(low)
}

/// The accumulators before the first stripe.
const INITIAL: [u64; 8] = [
    PRIME32_3, PRIME64_1, PRIME64_2, PRIME64_3, PRIME64_4, PRIME32_2, PRIME64_5, PRIME32_1,
];

/// The secret's 8 bytes at `at`, little-endian.
fn secret64(at: usize) -> u64 {
    u64::from_le_bytes(SECRET[at..at + 8].try_into().unwrap())
}

/// The accumulators folded into 64 bits with the secret at `secret`, from `start`.
fn merge(lanes: &[u64; 8], secret: usize, start: u64) -> u64 {
    let mut result = start;
    for pair in 0..4 {
        let a = lanes[2 * pair] ^ secret64(secret + 16 * pair);
        let b = lanes[2 * pair + 1] ^ secret64(secret + 16 * pair + 8);
        result = result.wrapping_add(fold64(a, b));
    }
    avalanche(result)
}

/// The 128-bit product of `a` and `b`, its halves XORed.
#[inline(always)]
fn fold64(a: u64, b: u64) -> u64 {
    let (low, high) = multiply_wide(a, b);
    low ^ high
}

/// The 128-bit product of `a` and `b` as (low, high) halves.
#[cfg(not(target_arch = "wasm32"))]
#[inline(always)]
fn multiply_wide(a: u64, b: u64) -> (u64, u64) {
    let product = u128::from(a) * u128::from(b);
    (product as u64, (product >> 64) as u64)
}

/// The 128-bit product of `a` and `b` as (low, high) halves, from four 32×32→64-bit
/// products: wasm has no wider multiply, a `u128` product is a call to `__multi3` (~100
/// instructions), and LLVM turns the same four products written in scalar code back
/// into that call. Two vector multiplies make the four products.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn multiply_wide(a: u64, b: u64) -> (u64, u64) {
    use core::arch::wasm32::{
        i32x4_shuffle, u64x2_extmul_low_u32x4, u64x2_extract_lane, u64x2_splat,
    };
    // a's halves (lanes 0 and 1), against b's low half twice and then its high half
    // twice. Both products are `extmul_low`s: Cranelift makes one a shuffle and a
    // `pmuludq`, but an `extmul_high` of these splatted operands a full 64-bit multiply
    // of three (its optimizer rewrites a widened splat before the multiply is matched;
    // the long loop's `extmul_high`s, of shuffled keys, stay one `pmuludq`).
    let a_halves = u64x2_splat(a);
    let b_splat = u64x2_splat(b);
    let b_low_twice = i32x4_shuffle::<0, 0, 0, 0>(b_splat, b_splat);
    let b_high_twice = i32x4_shuffle::<1, 1, 1, 1>(b_splat, b_splat);
    let by_b_low = u64x2_extmul_low_u32x4(a_halves, b_low_twice);
    let by_b_high = u64x2_extmul_low_u32x4(a_halves, b_high_twice);
    combine_products(
        u64x2_extract_lane::<0>(by_b_low),
        u64x2_extract_lane::<1>(by_b_low),
        u64x2_extract_lane::<0>(by_b_high),
        u64x2_extract_lane::<1>(by_b_high),
    )
}

/// The same for wasm without vectors.
#[cfg(all(target_arch = "wasm32", not(target_feature = "simd128")))]
#[inline(always)]
fn multiply_wide(a: u64, b: u64) -> (u64, u64) {
    multiply_wide_by_halves(a, b)
}

/// The same in scalar code: for wasm without vectors, and the tests' reference.
#[cfg_attr(target_feature = "simd128", allow(dead_code))]
fn multiply_wide_by_halves(a: u64, b: u64) -> (u64, u64) {
    const LOW: u64 = 0xFFFF_FFFF;
    let (a_low, a_high, b_low, b_high) = (a & LOW, a >> 32, b & LOW, b >> 32);
    combine_products(
        a_low * b_low,
        a_high * b_low,
        a_low * b_high,
        a_high * b_high,
    )
}

/// The 128-bit product from the four products of 32-bit halves, as (low, high).
#[inline(always)]
fn combine_products(low_low: u64, high_low: u64, low_high: u64, high_high: u64) -> (u64, u64) {
    const LOW: u64 = 0xFFFF_FFFF;
    // The middle column, carries included: it cannot overflow 64 bits, nor can the
    // high one (the product fits in 128). Wrapping adds, because the guests are built
    // with overflow checks, which would test each add here for what cannot happen.
    let middle = (low_low >> 32)
        .wrapping_add(high_low & LOW)
        .wrapping_add(low_high);
    let high = high_high
        .wrapping_add(high_low >> 32)
        .wrapping_add(middle >> 32);
    let low = (middle << 32) | (low_low & LOW);
    (low, high)
}

/// XXH3's final mix of 64 bits.
fn avalanche(mut value: u64) -> u64 {
    value ^= value >> 37;
    value = value.wrapping_mul(0x1656_6791_9E37_79F9);
    value ^ (value >> 32)
}

/// The shortest input [`hash_mid`] takes: shorter ones take XXH3's other short paths.
pub(super) const MID_MIN: usize = 17;

/// XXH3-128 of `input`, of [`MID_MIN`] to [`SHORT_MAX`] bytes.
pub(super) fn hash_mid(input: &[u8]) -> u128 {
    let len = input.len();
    debug_assert!((MID_MIN..=SHORT_MAX).contains(&len));
    let sixteen = |at: usize| -> &[u8; 16] { input[at..at + 16].try_into().unwrap() };
    let mut acc = ((len as u64).wrapping_mul(PRIME64_1), 0);
    if len <= 128 {
        // Pairs of 16 bytes from both ends inwards, as many as the length has (written
        // out: the secret's offsets are then constants).
        if len > 32 {
            if len > 64 {
                if len > 96 {
                    mix32(&mut acc, sixteen(48), sixteen(len - 64), 96);
                }
                mix32(&mut acc, sixteen(32), sixteen(len - 48), 64);
            }
            mix32(&mut acc, sixteen(16), sixteen(len - 32), 32);
        }
        mix32(&mut acc, sixteen(0), sixteen(len - 16), 0);
    } else {
        for round in 0..4 {
            mix32(
                &mut acc,
                sixteen(32 * round),
                sixteen(32 * round + 16),
                32 * round,
            );
        }
        acc = (avalanche(acc.0), avalanche(acc.1));
        for round in 4..len / 32 {
            let at = 32 * round;
            mix32(
                &mut acc,
                sixteen(at),
                sixteen(at + 16),
                MID_ROUNDS_SECRET + 32 * (round - 4),
            );
        }
        // The last 32 bytes, halves swapped.
        mix32(
            &mut acc,
            sixteen(len - 16),
            sixteen(len - 32),
            MID_LAST_SECRET,
        );
    }
    let low = avalanche(acc.0.wrapping_add(acc.1));
    let high = acc
        .0
        .wrapping_mul(PRIME64_1)
        .wrapping_add(acc.1.wrapping_mul(PRIME64_4))
        .wrapping_add((len as u64).wrapping_mul(PRIME64_2));
    u128::from(0_u64.wrapping_sub(avalanche(high))) << 64 | u128::from(low)
}

/// Mix 16 bytes from each of two places into the pair of accumulators, with the
/// secret's 32 bytes at `secret`.
#[inline(always)]
fn mix32(acc: &mut (u64, u64), first: &[u8; 16], second: &[u8; 16], secret: usize) {
    let halves = |bytes: &[u8; 16]| {
        let (low, high) = bytes.split_at(8);
        (
            u64::from_le_bytes(low.try_into().unwrap()),
            u64::from_le_bytes(high.try_into().unwrap()),
        )
    };
    let (first_low, first_high) = halves(first);
    let (second_low, second_high) = halves(second);
    let secret: &[u8; 32] = SECRET[secret..secret + 32].try_into().unwrap();
    let (key_1, key_2) = halves(secret[..16].try_into().unwrap());
    let (key_3, key_4) = halves(secret[16..].try_into().unwrap());
    acc.0 = acc
        .0
        .wrapping_add(fold64(first_low ^ key_1, first_high ^ key_2));
    acc.0 ^= second_low.wrapping_add(second_high);
    acc.1 = acc
        .1
        .wrapping_add(fold64(second_low ^ key_3, second_high ^ key_4));
    acc.1 ^= first_low.wrapping_add(first_high);
}

impl kernel::Acc {
    /// Whole stripes, the first at stripe `first` of its block.
    fn stripes(&mut self, bytes: &[u8], first: usize) {
        for (index, stripe) in bytes.chunks_exact(STRIPE).enumerate() {
            self.stripe_with(stripe, 8 * (first + index));
        }
    }

    /// A whole block, in one straight run: a loop's own cost, and in wasm its fuel and
    /// interruption checks with the accumulators' spills around them, paid once a block.
    fn block(&mut self, block: &[u8; BLOCK]) {
        macro_rules! stripes {
            ($($index:literal)*) => {
                $(
                    self.stripe_with(&block[$index * STRIPE..][..STRIPE], 8 * $index);
                    self.settle();
                )*
            };
        }
        stripes!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    }
}

/// Eight 64-bit lanes.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
mod kernel {
    use super::{INITIAL, PRIME32_1, SECRET, STRIPE, secret64};

    /// The eight accumulators.
    pub(super) struct Acc([u64; 8]);

    impl Acc {
        pub(super) fn new() -> Acc {
            Acc(INITIAL)
        }

        /// One stripe, with the secret's 64 bytes at `secret`.
        #[inline(always)]
        pub(super) fn stripe_with(&mut self, stripe: &[u8], secret: usize) {
            for lane in 0..8 {
                let data = u64::from_le_bytes(stripe[8 * lane..8 * lane + 8].try_into().unwrap());
                let key = data ^ secret64(secret + 8 * lane);
                // A lane's data goes to its neighbour; the key's halves multiply.
                self.0[lane ^ 1] = self.0[lane ^ 1].wrapping_add(data);
                self.0[lane] = self.0[lane].wrapping_add((key & 0xFFFF_FFFF) * (key >> 32));
            }
        }

        /// The scramble that ends every block.
        pub(super) fn scramble(&mut self) {
            let secret = SECRET.len() - STRIPE;
            for lane in 0..8 {
                let mut value = self.0[lane];
                value ^= value >> 47;
                value ^= secret64(secret + 8 * lane);
                self.0[lane] = value.wrapping_mul(PRIME32_1);
            }
        }

        /// Nothing to order: only the vector kernel's stripes need it (see there).
        #[inline(always)]
        pub(super) fn settle(&self) {}

        pub(super) fn lanes(&self) -> [u64; 8] {
            self.0
        }
    }
}

/// wasm's 128-bit vectors, two lanes to a vector.
///
/// Each vector holds a pair of accumulators in swapped order, `(acc[2i + 1], acc[2i])`:
/// a lane's data then adds to the lane it was loaded in, and the 32-bit halves of two
/// keys are gathered for their products already swapped, so a stripe needs no shuffle
/// of its data. [`Acc::lanes`] swaps them back.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod kernel {
    use super::{INITIAL, PRIME32_1, SECRET, STRIPE};
    use core::arch::wasm32::{
        i32x4_shuffle, i64x2_add, i64x2_mul, i64x2_shuffle, u64x2, u64x2_extmul_high_u32x4,
        u64x2_extmul_low_u32x4, u64x2_extract_lane, u64x2_shr, u64x2_splat, v128, v128_load,
        v128_xor,
    };

    /// The eight accumulators, each pair swapped.
    pub(super) struct Acc([v128; 4]);

    /// The 16 bytes of `bytes` at `at`.
    #[inline(always)]
    fn load(bytes: &[u8], at: usize) -> v128 {
        let bytes: &[u8; 16] = bytes[at..at + 16].try_into().unwrap();
        // SAFETY: `bytes` is 16 readable bytes, and `v128_load` has no alignment
        // requirement.
        unsafe { v128_load(bytes.as_ptr().cast()) }
    }

    /// The two 64-bit lanes of `pair` swapped.
    #[inline(always)]
    fn swapped(pair: v128) -> v128 {
        i64x2_shuffle::<1, 0>(pair, pair)
    }

    impl Acc {
        pub(super) fn new() -> Acc {
            let pair = |index: usize| u64x2(INITIAL[2 * index + 1], INITIAL[2 * index]);
            Acc([pair(0), pair(1), pair(2), pair(3)])
        }

        /// One stripe, with the secret's 64 bytes at `secret`.
        #[inline(always)]
        pub(super) fn stripe_with(&mut self, stripe: &[u8], secret: usize) {
            let stripe: &[u8; STRIPE] = stripe.try_into().unwrap();
            // Two vectors at a time: the halves of both keys are gathered together.
            for (half, vectors) in self.0.chunks_exact_mut(2).enumerate() {
                let data_a = load(stripe, 32 * half);
                let data_b = load(stripe, 32 * half + 16);
                let key_a = v128_xor(data_a, load(&SECRET, secret + 32 * half));
                let key_b = v128_xor(data_b, load(&SECRET, secret + 32 * half + 16));
                // The low 32-bit halves of both keys' 64-bit lanes, and their high
                // halves, each key's lane 1 before its lane 0: each lane's low half
                // times its high half then lands in the swapped order.
                let low_halves = i32x4_shuffle::<2, 0, 6, 4>(key_a, key_b);
                let high_halves = i32x4_shuffle::<3, 1, 7, 5>(key_a, key_b);
                let products_a = u64x2_extmul_low_u32x4(low_halves, high_halves);
                let products_b = u64x2_extmul_high_u32x4(low_halves, high_halves);
                vectors[0] = i64x2_add(vectors[0], i64x2_add(products_a, data_a));
                vectors[1] = i64x2_add(vectors[1], i64x2_add(products_b, data_b));
            }
        }

        /// Have the stripes so far computed before the next stripe's loads. Cranelift
        /// places pure arithmetic at its first use, and a block's first use of its
        /// accumulators is its end: all 64 of its loads would come first, and most of
        /// them would be spilled to the stack and reloaded. An opaque use of a value
        /// that needs every accumulator (three XORs and a store) is the use, a stripe
        /// at a time. It orders code only: the hash never depends on it.
        #[inline(always)]
        pub(super) fn settle(&self) {
            let every = v128_xor(
                v128_xor(self.0[0], self.0[1]),
                v128_xor(self.0[2], self.0[3]),
            );
            core::hint::black_box(every);
        }

        /// The scramble that ends every block.
        pub(super) fn scramble(&mut self) {
            let secret = SECRET.len() - STRIPE;
            let prime = u64x2_splat(PRIME32_1);
            for (index, lanes) in self.0.iter_mut().enumerate() {
                let value = v128_xor(*lanes, u64x2_shr(*lanes, 47));
                let value = v128_xor(value, swapped(load(&SECRET, secret + 16 * index)));
                *lanes = i64x2_mul(value, prime);
            }
        }

        pub(super) fn lanes(&self) -> [u64; 8] {
            let mut lanes = [0; 8];
            for (index, pair) in self.0.iter().enumerate() {
                lanes[2 * index] = u64x2_extract_lane::<1>(*pair);
                lanes[2 * index + 1] = u64x2_extract_lane::<0>(*pair);
            }
            lanes
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize) -> Vec<u8> {
        (0..len as u32)
            .map(|index| (index.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    #[test]
    fn equals_xxh3_at_every_length_and_split() {
        let bytes = bytes(5200);
        for len in SHORT_MAX + 1..=bytes.len() {
            let input = &bytes[..len];
            let expected = xxhash_rust::xxh3::xxh3_128(input);
            for split in [
                0,
                1,
                33,
                63,
                64,
                65,
                127,
                200,
                1023,
                1025,
                len / 2,
                len - 1,
                len,
            ] {
                let split = split.min(len);
                let (head, tail) = input.split_at(split);
                assert_eq!(
                    hash(Joined { head, tail }),
                    expected,
                    "{len} bytes split at {split}"
                );
            }
        }
    }

    #[test]
    fn mid_equals_xxh3_at_every_length() {
        let bytes = bytes(SHORT_MAX);
        for len in MID_MIN..=SHORT_MAX {
            let input = &bytes[..len];
            assert_eq!(
                hash_mid(input),
                xxhash_rust::xxh3::xxh3_128(input),
                "{len} bytes"
            );
        }
    }

    #[test]
    fn wide_multiply_by_halves_equals_the_128_bit_product() {
        let mut prng = carapace_sdk::testing::SplitMix64::new(0x9E37_79B9_7F4A_7C15);
        let mut next = || prng.next_u64();
        let edges = [0, 1, 0xFFFF_FFFF, 1 << 32, u64::MAX, u64::MAX - 1];
        let pairs = edges
            .iter()
            .flat_map(|&a| edges.iter().map(move |&b| (a, b)))
            .chain(
                std::iter::repeat_with(|| (next(), next()))
                    .take(10_000)
                    .collect::<Vec<_>>(),
            );
        for (a, b) in pairs {
            let product = u128::from(a) * u128::from(b);
            assert_eq!(
                multiply_wide_by_halves(a, b),
                (product as u64, (product >> 64) as u64),
                "{a:#x} × {b:#x}"
            );
        }
    }

    #[test]
    fn equals_xxh3_over_many_blocks() {
        let bytes = bytes(1 << 20);
        for len in [1 << 20, (1 << 20) - 1, 100_001] {
            let (head, tail) = bytes[..len].split_at(33);
            assert_eq!(
                hash(Joined { head, tail }),
                xxhash_rust::xxh3::xxh3_128(&bytes[..len])
            );
        }
    }
}

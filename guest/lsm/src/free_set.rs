//! The free set: which grid blocks are in use, allocated lowest address first.
//!
//! Addresses depend only on the order of `acquire` and `release` calls, never on I/O
//! timing, so the same ops place the same blocks at the same addresses on every run.
//!
//! A block released during a checkpoint interval stays allocated (and readable) until
//! the next checkpoint is durable, because the previous checkpoint, which a recovery
//! would open, may still refer to it. [`FreeSet::checkpoint_durable`] then frees them.

use carapace_sdk::Failure;

/// The blocks of a grid, as two bitsets over addresses `1..=block_count`.
#[derive(Clone, Debug)]
pub struct FreeSet {
    block_count: u64,
    /// Bit `address - 1` is set while the block is allocated, released or not.
    acquired: Vec<u64>,
    /// Bit `address - 1` is set while the block waits for the next durable checkpoint.
    released: Vec<u64>,
    /// No word below this index has a free bit: keeps `acquire` from rescanning.
    first_candidate_word: usize,
    /// At least the words that hold an acquired block (the high-water mark of
    /// `acquire`, or the image's length after `decode`): the ones after are all zero,
    /// so the whole-set passes (the image, the end of a checkpoint) stop here.
    words_used: usize,
}

impl FreeSet {
    /// A free set over `block_count` blocks, all free.
    pub fn new(block_count: u64) -> FreeSet {
        assert!(block_count > 0);
        let words = Self::words_for(block_count);
        FreeSet {
            block_count,
            acquired: vec![0; words],
            released: vec![0; words],
            first_candidate_word: 0,
            words_used: 0,
        }
    }

    fn words_for(block_count: u64) -> usize {
        block_count.div_ceil(64) as usize
    }

    /// How many blocks the grid holds.
    pub fn block_count(&self) -> u64 {
        self.block_count
    }

    /// Blocks allocated, released ones included.
    pub fn acquired_count(&self) -> u64 {
        self.acquired[..self.words_used]
            .iter()
            .map(|word| u64::from(word.count_ones()))
            .sum()
    }

    /// Blocks released and waiting for the next durable checkpoint.
    pub fn released_count(&self) -> u64 {
        self.released[..self.words_used]
            .iter()
            .map(|word| u64::from(word.count_ones()))
            .sum()
    }

    /// Whether `address` is allocated (released or not).
    pub fn is_acquired(&self, address: u64) -> bool {
        let (word, bit) = self.position(address);
        self.acquired[word] & bit != 0
    }

    /// Allocate the lowest free address.
    pub fn acquire(&mut self) -> Result<u64, Failure> {
        for word_index in self.first_candidate_word..self.acquired.len() {
            let word = self.acquired[word_index];
            if word == u64::MAX {
                continue;
            }
            let address = word_index as u64 * 64 + u64::from(word.trailing_ones()) + 1;
            if address > self.block_count {
                break;
            }
            self.acquired[word_index] |= 1 << word.trailing_ones();
            self.first_candidate_word = word_index;
            self.words_used = self.words_used.max(word_index + 1);
            return Ok(address);
        }
        Err(Failure::OutOfSpace(format!(
            "all {} grid blocks are in use",
            self.block_count
        )))
    }

    /// Mark `address` released: it is freed by the next [`FreeSet::checkpoint_durable`].
    pub fn release(&mut self, address: u64) {
        let (word, bit) = self.position(address);
        assert!(
            self.acquired[word] & bit != 0,
            "release of free address {address}"
        );
        assert!(
            self.released[word] & bit == 0,
            "double release of address {address}"
        );
        self.released[word] |= bit;
    }

    /// The checkpoint written last is durable: free every released block.
    pub fn checkpoint_durable(&mut self) {
        for (word_index, (acquired, released)) in self.acquired[..self.words_used]
            .iter_mut()
            .zip(&mut self.released[..self.words_used])
            .enumerate()
        {
            if *released != 0 {
                *acquired &= !*released;
                *released = 0;
                self.first_candidate_word = self.first_candidate_word.min(word_index);
            }
        }
    }

    /// The image a checkpoint stores: allocated and not released, one bit per block,
    /// little-endian words, up to the last word with an allocated block (the words
    /// after it are all free, so the image grows with the highest address in use, not
    /// with the grid). Released blocks are free in the image because the checkpoint
    /// that stores it no longer refers to them.
    pub fn encode(&self) -> Vec<u8> {
        let words = self.encoded_size() / 8;
        let mut bytes = Vec::with_capacity(words * 8);
        for word in 0..words {
            bytes.extend_from_slice(&self.image_word(word).to_le_bytes());
        }
        bytes
    }

    /// The size of [`FreeSet::encode`]'s output now.
    pub fn encoded_size(&self) -> usize {
        let mut words = self.words_used;
        while words > 0 && self.image_word(words - 1) == 0 {
            words -= 1;
        }
        words * 8
    }

    /// Word `word` of the image: allocated and not released.
    fn image_word(&self, word: usize) -> u64 {
        self.acquired[word] & !self.released[word]
    }

    /// The largest image of a free set of `block_count` blocks.
    pub fn encoded_size_max(block_count: u64) -> usize {
        Self::words_for(block_count) * 8
    }

    /// Rebuild a free set from [`FreeSet::encode`]'s output; nothing is released.
    pub fn decode(block_count: u64, bytes: &[u8]) -> Result<FreeSet, Failure> {
        let mut free_set = FreeSet::new(block_count);
        let size_max = Self::encoded_size_max(block_count);
        if bytes.len() > size_max || !bytes.len().is_multiple_of(8) {
            return Err(Failure::InvalidArgument(format!(
                "free set image holds {} bytes, not whole words within the {size_max} of {block_count} blocks",
                bytes.len(),
            )));
        }
        if bytes.ends_with(&[0; 8]) {
            return Err(Failure::InvalidArgument(
                "free set image ends with a word of free blocks (an image stops at its last allocated block)"
                    .into(),
            ));
        }
        for (word, chunk) in free_set.acquired.iter_mut().zip(bytes.chunks_exact(8)) {
            *word = u64::from_le_bytes(chunk.try_into().unwrap());
        }
        let tail_bits = block_count % 64;
        if tail_bits != 0 && free_set.acquired.last().unwrap() >> tail_bits != 0 {
            return Err(Failure::InvalidArgument(
                "free set image marks blocks past the end of the grid".into(),
            ));
        }
        free_set.words_used = bytes.len() / 8;
        Ok(free_set)
    }

    fn position(&self, address: u64) -> (usize, u64) {
        assert!(
            (1..=self.block_count).contains(&address),
            "address {address} outside the grid"
        );
        let index = address - 1;
        ((index / 64) as usize, 1 << (index % 64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquires_lowest_address_first() {
        let mut free_set = FreeSet::new(130);
        let addresses: Vec<u64> = (0..70).map(|_| free_set.acquire().unwrap()).collect();
        assert_eq!(addresses, (1..=70).collect::<Vec<_>>());
        free_set.release(3);
        free_set.release(65);
        // Released blocks are not reused before the checkpoint is durable.
        assert_eq!(free_set.acquire().unwrap(), 71);
        free_set.checkpoint_durable();
        assert_eq!(free_set.acquire().unwrap(), 3);
        assert_eq!(free_set.acquire().unwrap(), 65);
        assert_eq!(free_set.acquire().unwrap(), 72);
    }

    #[test]
    fn runs_out_of_space_with_an_error() {
        let mut free_set = FreeSet::new(3);
        for _ in 0..3 {
            free_set.acquire().unwrap();
        }
        let error = free_set.acquire().unwrap_err();
        assert!(matches!(error, Failure::OutOfSpace(_)));
    }

    #[test]
    fn image_drops_released_blocks_and_round_trips() {
        let mut free_set = FreeSet::new(100);
        for _ in 0..10 {
            free_set.acquire().unwrap();
        }
        free_set.release(4);
        let decoded = FreeSet::decode(100, &free_set.encode()).unwrap();
        assert!(!decoded.is_acquired(4));
        assert!(decoded.is_acquired(5));
        assert_eq!(decoded.acquired_count(), 9);
        assert_eq!(decoded.released_count(), 0);
    }

    #[test]
    fn image_ends_at_the_highest_block_in_use() {
        let mut free_set = FreeSet::new(1 << 20);
        assert_eq!(free_set.encode(), Vec::<u8>::new());
        for _ in 0..70 {
            free_set.acquire().unwrap();
        }
        // 70 blocks: two words of a grid of 16,384.
        assert_eq!(free_set.encoded_size(), 16);
        assert_eq!(free_set.encode().len(), 16);
        for address in 65..=70 {
            free_set.release(address);
        }
        assert_eq!(free_set.encode(), u64::MAX.to_le_bytes());
        let decoded = FreeSet::decode(1 << 20, &free_set.encode()).unwrap();
        assert_eq!(decoded.acquired_count(), 64);
        assert_eq!(FreeSet::decode(1 << 20, &[]).unwrap().acquired_count(), 0);
    }

    #[test]
    fn bad_images_are_refused() {
        let refused = |image: &[u8]| match FreeSet::decode(100, image) {
            Err(Failure::InvalidArgument(message)) => message,
            other => panic!("image {image:?} decoded: {other:?}"),
        };
        assert!(refused(&[1; 7]).contains("not whole words"));
        assert!(refused(&[1; 24]).contains("within the 16 of 100 blocks"));
        assert!(refused(&[0; 8]).contains("ends with a word of free blocks"));
        let mut image = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(refused(&image).contains("ends with a word of free blocks"));
        image[15] = 0x80; // bit 127: past block 100
        assert!(refused(&image).contains("past the end of the grid"));
    }
}

//! Where the grid's blocks live: one trait, several backends.
//!
//! A backend stores whole blocks by address. It does not verify them (the guest does)
//! and never decides anything that could differ between runs: completion order is the
//! host's business, above this trait.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;

/// Block storage for the grid. Addresses are `1..=block_count`; every block is
/// `block_size` bytes; a block never written reads as zeros.
pub trait Storage {
    /// Read the block at `address` into `block` (exactly one block long), writing every
    /// byte of it: the host reuses one buffer for its reads.
    fn read(&mut self, address: u64, block: &mut [u8]) -> io::Result<()>;
    /// Write one whole block to `address`.
    fn write(&mut self, address: u64, block: &[u8]) -> io::Result<()>;
    /// Make every completed write durable.
    fn sync(&mut self) -> io::Result<()>;
}

/// Blocks in memory, only those written. Clones share the same blocks, so a test can
/// keep a handle to inspect or damage what the guest wrote.
#[derive(Clone, Debug, Default)]
pub struct MemoryStorage {
    blocks: Rc<RefCell<Pages>>,
}

/// Blocks per page of [`MemoryStorage`].
const PAGE_BLOCKS: usize = 64;

/// Sparse blocks in pages of [`PAGE_BLOCKS`] consecutive addresses, a page allocated
/// when a block of it is first written: finding a block is an index, not a search,
/// and a grid of a million blocks costs thousands of allocations, not a million (at
/// 10^7 echo ops, a map of one allocation per block made the allocator a tenth of a
/// native run's time and its lookups slower as the grid filled).
#[derive(Clone, Debug, Default)]
struct Pages {
    /// Bytes per block: fixed by the first write.
    block_size: usize,
    pages: Vec<Option<Page>>,
}

#[derive(Clone, Debug)]
struct Page {
    /// Bit `i` is set once block `i` of the page has been written.
    written: u64,
    /// `PAGE_BLOCKS` blocks; zeros where none was written.
    bytes: Box<[u8]>,
}

const _: () = assert!(PAGE_BLOCKS <= u64::BITS as usize);

impl Pages {
    fn position(address: u64) -> (usize, usize) {
        let address = address as usize;
        (address / PAGE_BLOCKS, address % PAGE_BLOCKS)
    }

    /// The page of the block at `address` and the block's bytes in it, if it has been
    /// written.
    fn written_at(&self, address: u64) -> Option<(usize, std::ops::Range<usize>)> {
        let (page, slot) = Self::position(address);
        let written = self.pages.get(page)?.as_ref()?.written & (1 << slot) != 0;
        written.then(|| (page, slot * self.block_size..(slot + 1) * self.block_size))
    }

    /// The block at `address`, if it has been written.
    fn block(&self, address: u64) -> Option<&[u8]> {
        let (page, bytes) = self.written_at(address)?;
        Some(&self.pages[page].as_ref()?.bytes[bytes])
    }

    /// The block at `address`, if it has been written.
    fn block_mut(&mut self, address: u64) -> Option<&mut [u8]> {
        let (page, bytes) = self.written_at(address)?;
        Some(&mut self.pages[page].as_mut()?.bytes[bytes])
    }

    fn read(&self, address: u64, block: &mut [u8]) -> io::Result<()> {
        if self.block_size != 0 {
            self.check_size(block.len())?;
        }
        let (page, slot) = Self::position(address);
        match self.pages.get(page).and_then(Option::as_ref) {
            Some(page) => {
                let start = slot * self.block_size;
                block.copy_from_slice(&page.bytes[start..start + self.block_size]);
            }
            None => block.fill(0),
        }
        Ok(())
    }

    fn write(&mut self, address: u64, block: &[u8]) -> io::Result<()> {
        if self.block_size == 0 {
            if block.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a block of 0 bytes",
                ));
            }
            self.block_size = block.len();
        }
        self.check_size(block.len())?;
        let (page, slot) = Self::position(address);
        if self.pages.len() <= page {
            self.pages.resize(page + 1, None);
        }
        let block_size = self.block_size;
        let page = self.pages[page].get_or_insert_with(|| Page {
            written: 0,
            bytes: vec![0; PAGE_BLOCKS * block_size].into(),
        });
        page.written |= 1 << slot;
        page.bytes[slot * block_size..(slot + 1) * block_size].copy_from_slice(block);
        Ok(())
    }

    fn check_size(&self, size: usize) -> io::Result<()> {
        if size == self.block_size {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "a block of {size} bytes in storage of {}-byte blocks",
                self.block_size
            ),
        ))
    }

    /// Blocks written so far.
    fn written_count(&self) -> usize {
        let pages = self.pages.iter().flatten();
        pages.map(|page| page.written.count_ones() as usize).sum()
    }

    fn addresses(&self) -> Vec<u64> {
        let mut addresses = Vec::with_capacity(self.written_count());
        for (index, page) in self.pages.iter().enumerate() {
            let Some(page) = page else { continue };
            for slot in 0..PAGE_BLOCKS {
                if page.written & (1 << slot) != 0 {
                    addresses.push((index * PAGE_BLOCKS + slot) as u64);
                }
            }
        }
        addresses
    }
}

impl MemoryStorage {
    /// Empty storage.
    pub fn new() -> MemoryStorage {
        MemoryStorage::default()
    }

    /// A copy that shares nothing with this storage: the image a crash would leave.
    pub fn snapshot(&self) -> MemoryStorage {
        MemoryStorage {
            blocks: Rc::new(RefCell::new(self.blocks.borrow().clone())),
        }
    }

    /// Blocks written so far.
    pub fn written_count(&self) -> usize {
        self.blocks.borrow().written_count()
    }

    /// Addresses written so far, in order.
    pub fn addresses(&self) -> Vec<u64> {
        self.blocks.borrow().addresses()
    }

    /// Flip the bits of `mask` in byte `offset` of the block at `address`, as a failing
    /// disk would. Returns whether that block exists.
    pub fn corrupt(&self, address: u64, offset: usize, mask: u8) -> bool {
        match self.blocks.borrow_mut().block_mut(address) {
            Some(block) => {
                block[offset] ^= mask;
                true
            }
            None => false,
        }
    }
}

impl Storage for MemoryStorage {
    fn read(&mut self, address: u64, block: &mut [u8]) -> io::Result<()> {
        self.blocks.borrow().read(address, block)
    }

    fn write(&mut self, address: u64, block: &[u8]) -> io::Result<()> {
        // Blocks are rewritten in place: the grid reuses addresses all the time.
        self.blocks.borrow_mut().write(address, block)
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The grid in a file of the data directory: block `a` at byte `(a - 1) * block_size`.
/// Blocks never written read as zeros (the file is sparse).
pub struct FileStorage {
    file: Box<dyn crate::disk::File>,
    block_size: u64,
}

impl std::fmt::Debug for FileStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStorage")
            .field("block_size", &self.block_size)
            .finish()
    }
}

impl FileStorage {
    /// The grid of `block_size`-byte blocks in `file`.
    pub fn new(file: Box<dyn crate::disk::File>, block_size: u32) -> FileStorage {
        FileStorage {
            file,
            block_size: u64::from(block_size),
        }
    }

    fn offset(&self, address: u64) -> u64 {
        assert!(address > 0);
        (address - 1) * self.block_size
    }
}

impl Storage for FileStorage {
    fn read(&mut self, address: u64, block: &mut [u8]) -> io::Result<()> {
        let offset = self.offset(address);
        self.file.read_at(offset, block)
    }

    fn write(&mut self, address: u64, block: &[u8]) -> io::Result<()> {
        let offset = self.offset(address);
        self.file.write_at(offset, block)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.file.sync()
    }
}

/// Reads through to a base storage; writes stay in memory. A replay can start from a
/// data directory's checkpoint this way without changing the directory.
pub struct OverlayStorage {
    base: Box<dyn Storage>,
    written: Pages,
}

impl std::fmt::Debug for OverlayStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverlayStorage")
            .field("written", &self.written.written_count())
            .finish()
    }
}

impl OverlayStorage {
    /// An overlay over `base`, with nothing written yet.
    pub fn new(base: Box<dyn Storage>) -> OverlayStorage {
        OverlayStorage {
            base,
            written: Pages::default(),
        }
    }
}

impl Storage for OverlayStorage {
    fn read(&mut self, address: u64, block: &mut [u8]) -> io::Result<()> {
        match self.written.block(address) {
            Some(written) => {
                self.written.check_size(block.len())?;
                block.copy_from_slice(written);
                Ok(())
            }
            None => self.base.read(address, block),
        }
    }

    fn write(&mut self, address: u64, block: &[u8]) -> io::Result<()> {
        self.written.write(address, block)
    }

    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwritten_blocks_read_as_zeros_and_clones_share() {
        let mut storage = MemoryStorage::new();
        let handle = storage.clone();
        let mut block = vec![7; 16];
        storage.read(3, &mut block).unwrap();
        assert_eq!(block, vec![0; 16]);
        storage.write(3, &[1; 16]).unwrap();
        assert!(handle.corrupt(3, 0, 0xFF));
        storage.read(3, &mut block).unwrap();
        assert_eq!(block[0], 0xFE);
        assert_eq!(handle.addresses(), vec![3]);
    }

    #[test]
    fn blocks_across_pages_keep_their_addresses_and_snapshots_their_contents() {
        let mut storage = MemoryStorage::new();
        for address in [200, 1, 64, 63] {
            storage.write(address, &[address as u8; 8]).unwrap();
        }
        storage.write(64, &[9; 8]).unwrap();
        assert_eq!(storage.addresses(), vec![1, 63, 64, 200]);
        assert_eq!(storage.written_count(), 4);
        let snapshot = storage.snapshot();
        storage.write(1, &[5; 8]).unwrap();
        let mut block = [0; 8];
        for (address, expected) in [(1, 1), (63, 63), (64, 9), (200, 200), (2, 0), (5000, 0)] {
            snapshot.clone().read(address, &mut block).unwrap();
            assert_eq!(block, [expected; 8], "block {address}");
        }
        storage.read(1, &mut block).unwrap();
        assert_eq!(block, [5; 8]);
        assert!(!storage.corrupt(2, 0, 1), "block 2 was never written");
    }

    #[test]
    fn a_block_of_another_size_is_refused() {
        let mut storage = MemoryStorage::new();
        storage.write(1, &[1; 8]).unwrap();
        let error = storage.write(2, &[1; 16]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert!(
            error
                .to_string()
                .contains("a block of 16 bytes in storage of 8-byte blocks")
        );
        assert!(storage.read(1, &mut [0; 4]).is_err());
        assert!(
            storage.read(500, &mut [0; 4]).is_err(),
            "never written, still the wrong size"
        );
        assert_eq!(storage.addresses(), vec![1]);
        let error = MemoryStorage::new().write(1, &[]).unwrap_err();
        assert!(error.to_string().contains("a block of 0 bytes"));
    }
}

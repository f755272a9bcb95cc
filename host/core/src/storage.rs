//! Where the grid's blocks live: one trait, several backends.
//!
//! A backend stores whole blocks by address. It does not verify them (the guest does)
//! and never decides anything that could differ between runs: completion order is the
//! host's business, above this trait.

use std::cell::RefCell;
use std::collections::BTreeMap;
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
    blocks: Rc<RefCell<BTreeMap<u64, Box<[u8]>>>>,
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
        self.blocks.borrow().len()
    }

    /// Addresses written so far, in order.
    pub fn addresses(&self) -> Vec<u64> {
        self.blocks.borrow().keys().copied().collect()
    }

    /// Flip the bits of `mask` in byte `offset` of the block at `address`, as a failing
    /// disk would. Returns whether that block exists.
    pub fn corrupt(&self, address: u64, offset: usize, mask: u8) -> bool {
        match self.blocks.borrow_mut().get_mut(&address) {
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
        match self.blocks.borrow().get(&address) {
            Some(stored) => block.copy_from_slice(stored),
            None => block.fill(0),
        }
        Ok(())
    }

    fn write(&mut self, address: u64, block: &[u8]) -> io::Result<()> {
        // Blocks are rewritten in place: the grid reuses addresses all the time.
        let mut blocks = self.blocks.borrow_mut();
        match blocks.get_mut(&address) {
            Some(stored) if stored.len() == block.len() => stored.copy_from_slice(block),
            _ => {
                blocks.insert(address, block.into());
            }
        }
        Ok(())
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
    written: BTreeMap<u64, Box<[u8]>>,
}

impl std::fmt::Debug for OverlayStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverlayStorage")
            .field("written", &self.written.len())
            .finish()
    }
}

impl OverlayStorage {
    /// An overlay over `base`, with nothing written yet.
    pub fn new(base: Box<dyn Storage>) -> OverlayStorage {
        OverlayStorage {
            base,
            written: BTreeMap::new(),
        }
    }
}

impl Storage for OverlayStorage {
    fn read(&mut self, address: u64, block: &mut [u8]) -> io::Result<()> {
        match self.written.get(&address) {
            Some(written) => {
                block.copy_from_slice(written);
                Ok(())
            }
            None => self.base.read(address, block),
        }
    }

    fn write(&mut self, address: u64, block: &[u8]) -> io::Result<()> {
        self.written.insert(address, block.into());
        Ok(())
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
}

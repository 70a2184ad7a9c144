//! The one flush abstraction: a partition (or a file, or memory) that the install engine
//! and the boot state are written to, and that can be flushed to stable storage. Every
//! write order in stele (the install's, the boot state's, the ESP's) flushes through
//! [`Storage::sync`] and nothing else.

use std::fs::File;
use std::io::{self, Cursor, Read, Seek, Write};

use stele_verifier::partition::PartitionIo;

/// Something to read, write, seek and flush to stable storage.
pub trait Storage: Read + Write + Seek {
    /// Flushes written data to stable storage (fdatasync for a file or block device).
    fn sync(&mut self) -> io::Result<()>;
}

/// A file or block device: fdatasync.
impl Storage for File {
    fn sync(&mut self) -> io::Result<()> {
        self.sync_data()
    }
}

/// Memory (tests, replays): nothing to flush.
impl Storage for Cursor<Vec<u8>> {
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A partition of a disk image: flushing it flushes the disk.
impl<D: Storage> Storage for PartitionIo<D> {
    fn sync(&mut self) -> io::Result<()> {
        self.get_mut().sync()
    }
}

/// A borrowed device.
impl<D: Storage + ?Sized> Storage for &mut D {
    fn sync(&mut self) -> io::Result<()> {
        (**self).sync()
    }
}

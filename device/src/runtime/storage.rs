//! Partitions as the update code sees them: something to read, write, seek and flush
//! ([`Device`]): a block device or file, a partition window of a disk image, or memory.
//! Opening and sizing one: a block device is sized by seeking to its end (no ioctl).

use std::fs::{File, OpenOptions};
use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileTypeExt;

use nix::fcntl::{Flock, FlockArg};
use stele_verifier::partition::PartitionIo;

use crate::{Error, Result};

/// A partition that can be flushed to stable storage.
pub trait Device: Read + Write + Seek {
    /// Flushes written data to stable storage (fdatasync for a file or block device).
    fn sync(&mut self) -> io::Result<()>;

    /// A duplicate of the open file whose flock(2) locks this device; `None` for a device
    /// nobody else can open (memory, or a window of a disk image that its user locks as a
    /// whole).
    fn lock_handle(&self) -> Option<io::Result<File>> {
        None
    }
}

impl Device for File {
    fn sync(&mut self) -> io::Result<()> {
        self.sync_data()
    }

    fn lock_handle(&self) -> Option<io::Result<File>> {
        Some(self.try_clone())
    }
}

/// A partition of a disk image: flushing it flushes the disk.
impl<D: Device> Device for PartitionIo<'_, D> {
    fn sync(&mut self) -> io::Result<()> {
        self.get_mut().sync()
    }
}

/// A device in memory (tests, replays): nothing to flush.
impl Device for Cursor<Vec<u8>> {
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An exclusive flock(2) on `f`, without waiting: `Ok(None)` when another open file holds
/// it. Dropping the lock releases it.
pub fn try_lock(f: &File, path: &str) -> Result<Option<Flock<File>>> {
    let dup = f.try_clone().map_err(|e| Error::io("duplicate", path, e))?;
    match Flock::lock(dup, FlockArg::LockExclusiveNonblock) {
        Ok(l) => Ok(Some(l)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(Error::Lock {
            path: path.into(),
            errno,
        }),
    }
}

/// Opens a partition (or bundle) read-only, or read-write with `write`.
pub fn open(path: &str, write: bool) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .open(path)
        .map_err(|e| Error::io("open", path, e))
}

/// The size of an open block device or regular file, by seeking to its end; the position
/// is back at 0 afterwards. Anything else (a directory, a pipe) is refused.
pub fn size(f: &mut File, path: &str) -> Result<u64> {
    let md = f.metadata().map_err(|e| Error::io("stat", path, e))?;
    if !(md.is_file() || md.file_type().is_block_device()) {
        return Err(Error::NotAFile { path: path.into() });
    }
    let len = f
        .seek(SeekFrom::End(0))
        .and_then(|len| f.seek(SeekFrom::Start(0)).map(|_| len))
        .map_err(|e| Error::io("size", path, e))?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_sized_by_their_end_and_dirs_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("part");
        std::fs::write(&p, vec![7u8; 12345]).unwrap();
        let path = p.to_str().unwrap();
        let mut f = open(path, false).unwrap();
        assert_eq!(size(&mut f, path).unwrap(), 12345);
        assert_eq!(f.stream_position().unwrap(), 0);
        let d = dir.path().to_str().unwrap();
        let mut f = open(d, false).unwrap();
        assert!(matches!(size(&mut f, d), Err(Error::NotAFile { .. })));
        assert!(matches!(
            open(&format!("{d}/missing"), false),
            Err(Error::Io { op: "open", .. })
        ));
    }
}

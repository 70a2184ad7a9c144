//! Partitions as the update code opens them: read-only or read-write, sized by seeking to
//! their end (no ioctl), locked with flock(2). What is read, written and flushed is a
//! [`Storage`] (stele_engine: the one flush abstraction).

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;

use nix::fcntl::{Flock, FlockArg};

use crate::{Error, Result};

pub use stele_engine::Storage;

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

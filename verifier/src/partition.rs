//! A window of a disk image (one partition) as its own `Read + Write + Seek` device, so
//! every format reader and writer works on a partition inside a disk image file as it does
//! on a block device.

use std::fs::Metadata;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

/// True when both name the same file or block device (two paths, a symlink, a device
/// node and its alias): the check behind every "input is the output" refusal. Pure.
pub fn same_file(a: &Metadata, b: &Metadata) -> bool {
    let block = |m: &Metadata| m.file_type().is_block_device();
    if block(a) && block(b) {
        a.rdev() == b.rdev()
    } else {
        a.dev() == b.dev() && a.ino() == b.ino()
    }
}

/// A window of a disk (a partition) as its own `Read + Write + Seek` device. `D` is the
/// disk: owned (a `File`) or borrowed (`&mut File`, `&mut Cursor<..>`).
#[derive(Debug)]
pub struct PartitionIo<D> {
    disk: D,
    start: u64,
    len: u64,
    pos: u64,
}

impl<D: Seek> PartitionIo<D> {
    /// The `len` bytes of `disk` starting at `start`.
    pub fn new(disk: D, start: u64, len: u64) -> Self {
        PartitionIo {
            disk,
            start,
            len,
            pos: 0,
        }
    }

    /// The whole disk, e.g. to flush it.
    pub fn get_ref(&self) -> &D {
        &self.disk
    }

    /// The whole disk, mutably.
    pub fn get_mut(&mut self) -> &mut D {
        &mut self.disk
    }

    /// The window's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty window.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn room(&self, want: usize) -> usize {
        let left = self.len.saturating_sub(self.pos);
        usize::try_from(left).map_or(want, |l| l.min(want))
    }
}

impl<D: Read + Seek> Read for PartitionIo<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.room(buf.len());
        if n == 0 {
            return Ok(0);
        }
        self.disk.seek(SeekFrom::Start(self.start + self.pos))?;
        let got = self.disk.read(&mut buf[..n])?;
        self.pos += got as u64;
        Ok(got)
    }
}

impl<D: Write + Seek> Write for PartitionIo<D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.room(buf.len());
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        self.disk.seek(SeekFrom::Start(self.start + self.pos))?;
        let put = self.disk.write(&buf[..n])?;
        self.pos += put as u64;
        Ok(put)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.disk.flush()
    }
}

impl<D: Seek> Seek for PartitionIo<D> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(o) => Some(o),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let new = new.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the partition start",
            )
        })?;
        self.pos = new;
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn partition_io_stays_inside() {
        let mut disk = Cursor::new(vec![0u8; 100]);
        let mut p = PartitionIo::new(&mut disk, 10, 20);
        p.seek(SeekFrom::Start(15)).unwrap();
        assert_eq!(p.write(b"0123456789").unwrap(), 5);
        assert!(p.write(b"x").is_err());
        p.seek(SeekFrom::End(-5)).unwrap();
        let mut buf = [0u8; 10];
        assert_eq!(p.read(&mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"01234");
        assert!(p.seek(SeekFrom::Current(-100)).is_err());
        assert_eq!(&disk.get_ref()[25..30], b"01234");
    }
}

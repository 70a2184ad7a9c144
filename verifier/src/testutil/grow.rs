//! A machine for [`crate::data_grow`] in memory: a disk of bytes that loses power after a
//! given number of steps (each write, BLKPG, each transaction of the journaled ext4
//! resize), and one boot on it as PID 1 makes it (the kernel reads the table, the table
//! step, the mount when the filesystem fits its partition, the filesystem step). Shared by
//! the unit tests and the `data_grow` fuzz target. Asserts the order the grow relies on:
//! BLKPG only after the table on the disk says the same, a resize only of a mounted
//! filesystem and never past its partition.

use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};

use crate::data_grow::{self, Ext4, Machine, SUPERBLOCK};
use crate::gpt::Gpt;

/// The data partition's GPT name in these boots.
pub const DATA: &str = "stele-data";

/// The disk: each `write` is a step; after the budget the power is gone.
#[derive(Debug)]
pub struct Dev {
    c: Cursor<Vec<u8>>,
    budget: usize,
    cut: bool,
}

impl Dev {
    fn step(&mut self) -> io::Result<()> {
        if self.budget == 0 {
            self.cut = true;
            return Err(io::Error::other("power cut"));
        }
        self.budget -= 1;
        Ok(())
    }
}

impl Read for Dev {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        self.c.read(b)
    }
}
impl Seek for Dev {
    fn seek(&mut self, p: SeekFrom) -> io::Result<u64> {
        self.c.seek(p)
    }
}
impl Write for Dev {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.step()?;
        // A disk does not grow: a write past its end is an I/O error.
        let end = self.c.position().saturating_add(b.len() as u64);
        if end > self.c.get_ref().len() as u64 {
            return Err(io::Error::other("write past the disk's end"));
        }
        self.c.write(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The data partition as the kernel read the table at boot: (first byte, length).
pub fn data_of(disk: &[u8]) -> Option<(u64, u64)> {
    let t = Gpt::read(&mut Cursor::new(disk), disk.len() as u64).ok()?;
    let p = t.partitions.iter().find(|p| p.name == DATA)?;
    Some(p.byte_range())
}

/// One boot's kernel and disk.
#[derive(Debug)]
struct Sim {
    dev: Dev,
    start: u64,
    len: u64,
}

impl Sim {
    fn sb(&self) -> Option<&[u8]> {
        let at = usize::try_from(self.start.checked_add(SUPERBLOCK.0)?).ok()?;
        self.dev.c.get_ref().get(at..at.checked_add(SUPERBLOCK.1)?)
    }
    /// What the mount would accept: an ext4 no larger than its partition.
    fn mountable(&self) -> bool {
        self.sb()
            .and_then(|sb| Ext4::read(sb).ok())
            .is_some_and(|e| e.bytes() <= self.len)
    }
}

impl Machine for Sim {
    type Disk = Dev;
    fn disk(&mut self) -> io::Result<(&mut Dev, u64)> {
        let len = self.dev.c.get_ref().len() as u64;
        Ok((&mut self.dev, len))
    }
    fn flush(_: &mut Dev) -> io::Result<()> {
        Ok(())
    }
    fn resize_partition(&mut self, start: u64, len: u64) -> io::Result<()> {
        self.dev.step()?;
        assert_eq!(start, self.start, "BLKPG moves no partition start");
        // Else the next boot's kernel would read another size than this one uses.
        assert_eq!(
            Some((start, len)),
            data_of(self.dev.c.get_ref()),
            "BLKPG before the table on the disk says so"
        );
        self.len = len;
        Ok(())
    }
    fn partition_len(&mut self) -> io::Result<u64> {
        Ok(self.len)
    }
    fn superblock(&mut self) -> io::Result<Vec<u8>> {
        self.sb()
            .map(<[u8]>::to_vec)
            .ok_or_else(|| io::Error::other("short partition"))
    }
    fn resize_fs(&mut self, blocks: u64) -> io::Result<()> {
        assert!(
            self.mountable(),
            "a resize of a filesystem that did not mount"
        );
        let old = Ext4::read(&self.superblock()?).map_err(io::Error::other)?;
        if blocks.saturating_mul(old.block_size) > self.len {
            // The kernel reads the new last block first.
            return Err(io::Error::other("can't read the last block"));
        }
        let at = usize::try_from(self.start + SUPERBLOCK.0).map_err(io::Error::other)?;
        for to in [old.blocks + (blocks - old.blocks) / 2, blocks] {
            self.dev.step()?;
            let v = self.dev.c.get_mut();
            v[at + 0x04..at + 0x08].copy_from_slice(&to.to_le_bytes()[..4]);
            v[at + 0x150..at + 0x154].copy_from_slice(&to.to_le_bytes()[4..]);
        }
        Ok(())
    }
}

/// What one boot did.
#[derive(Debug)]
pub struct Booted {
    /// The disk afterwards.
    pub disk: Vec<u8>,
    /// The power went before the boot got through the grow.
    pub cut: bool,
    /// The table step (`Err`: its error's text).
    pub table: Result<Option<(u64, u64)>, String>,
    /// The data filesystem mounted.
    pub mounted: bool,
    /// The filesystem step, when it mounted.
    pub fs: Option<Result<Option<(u64, u64)>, String>>,
}

/// One boot of `disk` with `budget` steps before the power goes (`usize::MAX`: none), in
/// PID 1's order; `None` when the kernel finds no data partition on it.
pub fn boot(disk: Vec<u8>, budget: usize) -> Option<Booted> {
    let (start, len) = data_of(&disk)?;
    let mut m = Sim {
        dev: Dev {
            c: Cursor::new(disk),
            budget,
            cut: false,
        },
        start,
        len,
    };
    let table = data_grow::table(&mut m, DATA).map_err(|e| e.to_string());
    let mounted = !m.dev.cut && m.mountable();
    let fs = (mounted).then(|| data_grow::filesystem(&mut m).map_err(|e| e.to_string()));
    Some(Booted {
        cut: m.dev.cut,
        disk: m.dev.c.into_inner(),
        table,
        mounted,
        fs,
    })
}

/// The fields of an ext4 superblock the grow reads: `blocks` blocks of `1024 << log`
/// bytes, `per_group` blocks per group, 256-byte inodes, `inodes` per group, 63 reserved
/// descriptor blocks. Pure.
pub fn superblock(blocks: u64, log: u32, per_group: u32, inodes: u32) -> Vec<u8> {
    let mut sb = vec![0u8; SUPERBLOCK.1];
    let mut put =
        |at: usize, v: u64, n: usize| sb[at..at + n].copy_from_slice(&v.to_le_bytes()[..n]);
    put(0x04, blocks & 0xffff_ffff, 4);
    put(0x150, blocks >> 32, 4);
    put(0x14, u64::from(log == 0), 4);
    put(0x18, u64::from(log), 4);
    put(0x1c, u64::from(log), 4);
    put(0x20, u64::from(per_group), 4);
    put(0x28, u64::from(inodes), 4);
    put(0x38, 0xef53, 2);
    put(0x4c, 1, 4);
    put(0x58, 256, 2);
    put(0xce, 63, 2);
    sb
}

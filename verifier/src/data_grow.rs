//! The data partition fills the disk (docs/BOOT.md "The data partition fills the disk"):
//! what PID 1 does, in order, on a disk larger than its image. First [`table`]: the GPT
//! writes of [`crate::gpt_grow`] on the whole disk, each flushed, then the kernel is told
//! the partition's new size (BLKPG). The data filesystem is mounted. Then [`filesystem`]:
//! the mounted ext4 is grown to the partition's end by the kernel's online resize, which
//! is journaled. Every step is a [`Machine`] call, so the order is tested here with a
//! power cut after each one ([`tests`]); PID 1 supplies the system calls. Pure.
//!
//! A cut leaves either the old table or the new one, with the filesystem no larger than
//! the partition the kernel reads at the next boot; that boot finishes what is missing:
//! the table ([`crate::gpt_grow::plan`] sees an unfinished grow) or the filesystem (it is
//! smaller than its partition by more than [`Ext4::grow_to`]'s margin).

use std::io::{self, Read, Seek, Write};

use crate::gpt::{GptError, SECTOR};
use crate::gpt_grow;

/// Where the ext4 superblock starts in its partition, and its size.
pub const SUPERBLOCK: (u64, usize) = (1024, 1024);

/// What went wrong while growing the data partition.
#[derive(Debug, thiserror::Error)]
pub enum GrowError {
    /// The partition table (reading, planning or writing it).
    #[error(transparent)]
    Table(#[from] GptError),
    #[error("{what} failed: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// The data partition does not hold an ext4 filesystem stele can grow.
    #[error("its filesystem is not one the kernel's ext4 online resize can grow: {0}")]
    Ext4(String),
}

fn io(what: &'static str) -> impl FnOnce(io::Error) -> GrowError {
    move |source| GrowError::Io { what, source }
}

/// The disk and the kernel, as the grow uses them, one step per call.
pub trait Machine {
    type Disk: Read + Write + Seek;
    /// The whole disk holding the data partition, and its length in bytes.
    fn disk(&mut self) -> io::Result<(&mut Self::Disk, u64)>;
    /// Makes the writes to `disk` so far durable before any later one (fdatasync).
    fn flush(disk: &mut Self::Disk) -> io::Result<()>;
    /// Tells the kernel the data partition now spans `len` bytes from byte `start`
    /// (BLKPG_RESIZE_PARTITION); nothing on the disk changes.
    fn resize_partition(&mut self, start: u64, len: u64) -> io::Result<()>;
    /// The data partition's length in bytes, as the kernel sees it now.
    fn partition_len(&mut self) -> io::Result<u64>;
    /// The data filesystem's superblock ([`SUPERBLOCK`]).
    fn superblock(&mut self) -> io::Result<Vec<u8>>;
    /// Grows the mounted data filesystem to `blocks` blocks (EXT4_IOC_RESIZE_FS).
    fn resize_fs(&mut self, blocks: u64) -> io::Result<()>;
}

/// Step 1, before the data filesystem is mounted: grows partition `name` in the table to
/// the disk's end ([`gpt_grow::plan`], each write flushed) and tells the kernel. Returns
/// the partition's length before and after, or `None` when the table has nothing to do.
pub fn table<M: Machine>(m: &mut M, name: &str) -> Result<Option<(u64, u64)>, GrowError> {
    let (disk, len) = m.disk().map_err(io("opening the disk"))?;
    let Some(plan) = gpt_grow::plan(disk, len, name)? else {
        return Ok(None);
    };
    gpt_grow::apply(disk, &plan, &mut M::flush)?;
    let before = m
        .partition_len()
        .map_err(io("reading the partition's size"))?;
    let first = plan.first_lba;
    let after = (plan.last_lba.1 + 1 - first) * SECTOR;
    if after != before {
        m.resize_partition(first * SECTOR, after)
            .map_err(io("BLKPG_RESIZE_PARTITION"))?;
    }
    Ok(Some((before, after)))
}

/// Step 2, once the data filesystem is mounted: grows it to its partition's end when it
/// is smaller ([`Ext4::grow_to`]). Returns its size in bytes before and after, or `None`
/// when there is nothing to do.
pub fn filesystem<M: Machine>(m: &mut M) -> Result<Option<(u64, u64)>, GrowError> {
    let sb = Ext4::read(&m.superblock().map_err(io("reading the superblock"))?)?;
    let part = m
        .partition_len()
        .map_err(io("reading the partition's size"))?;
    let Some(blocks) = sb.grow_to(part) else {
        return Ok(None);
    };
    m.resize_fs(blocks).map_err(io("EXT4_IOC_RESIZE_FS"))?;
    let now = Ext4::read(&m.superblock().map_err(io("reading the superblock"))?)?;
    Ok(Some((sb.bytes(), now.bytes())))
}

/// What the grow needs of an ext4 superblock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ext4 {
    pub block_size: u64,
    pub blocks: u64,
    first_data_block: u64,
    blocks_per_group: u64,
    /// Blocks of one group's inode table.
    inode_table_blocks: u64,
    reserved_gdt_blocks: u64,
    desc_size: u64,
    cluster_ratio: u64,
}

fn le(b: &[u8], at: usize, n: usize) -> u64 {
    b[at..at + n]
        .iter()
        .rev()
        .fold(0, |acc, &x| (acc << 8) | u64::from(x))
}

const MAGIC: u64 = 0xef53;
const INCOMPAT_64BIT: u64 = 0x80;
const RO_COMPAT_BIGALLOC: u64 = 0x200;

impl Ext4 {
    /// Reads the superblock bytes ([`SUPERBLOCK`]); refuses what is not ext4 or is out of
    /// range. Never panics.
    pub fn read(sb: &[u8]) -> Result<Ext4, GrowError> {
        let bad = |why: &str| Err(GrowError::Ext4(why.to_owned()));
        if sb.len() < SUPERBLOCK.1 {
            return bad("the superblock is short");
        }
        if le(sb, 0x38, 2) != MAGIC {
            return bad("no ext4 superblock (magic)");
        }
        let (log_block, log_cluster) = (le(sb, 0x18, 4), le(sb, 0x1c, 4));
        if log_block > 6 || log_cluster < log_block || log_cluster > log_block + 16 {
            return bad("its block size is out of range");
        }
        let block_size = 1024 << log_block;
        let incompat = le(sb, 0x60, 4);
        let bigalloc = le(sb, 0x64, 4) & RO_COMPAT_BIGALLOC != 0;
        let desc_size = if incompat & INCOMPAT_64BIT != 0 {
            le(sb, 0xfe, 2)
        } else {
            32
        };
        let inode_size = if le(sb, 0x4c, 4) == 0 {
            128
        } else {
            le(sb, 0x58, 2)
        };
        let e = Ext4 {
            block_size,
            blocks: le(sb, 0x04, 4) | le(sb, 0x150, 4) << 32,
            first_data_block: le(sb, 0x14, 4),
            blocks_per_group: le(sb, 0x20, 4),
            inode_table_blocks: (le(sb, 0x28, 4) * inode_size).div_ceil(block_size),
            reserved_gdt_blocks: le(sb, 0xce, 2),
            desc_size,
            cluster_ratio: if bigalloc {
                1 << (log_cluster - log_block)
            } else {
                1
            },
        };
        if e.blocks_per_group == 0 || !(32..=block_size).contains(&desc_size) {
            return bad("its group geometry is out of range");
        }
        if e.blocks <= e.first_data_block {
            return bad("its block count is out of range");
        }
        Ok(e)
    }

    /// The filesystem's size in bytes.
    pub fn bytes(&self) -> u64 {
        self.blocks.saturating_mul(self.block_size)
    }

    /// The block count to resize to on a `part`-byte partition, or `None` when the kernel
    /// would add nothing: it adds a new block group only with room for that group's
    /// metadata (superblock and descriptor copies, reserved descriptor blocks, bitmaps,
    /// inode table), so a gap smaller than that margin stays (and a grown filesystem is
    /// never grown again).
    pub fn grow_to(&self, part: u64) -> Option<u64> {
        let target = part / self.block_size;
        let groups = (target - self.first_data_block.min(target)).div_ceil(self.blocks_per_group);
        let gdt = groups.div_ceil(self.block_size / self.desc_size);
        let margin = [gdt, self.reserved_gdt_blocks, self.inode_table_blocks]
            .iter()
            .fold(3 + self.cluster_ratio, |a, &b| a.saturating_add(b));
        (target >= self.blocks.saturating_add(margin)).then_some(target)
    }
}

#[cfg(test)]
#[path = "data_grow_tests.rs"]
mod tests;

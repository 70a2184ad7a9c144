//! Tests of the data partition's grow: the superblock reader, the margin, and a power
//! cut after every step PID 1 takes (GPT writes, BLKPG, the journaled resize) followed by
//! the next boots.

use super::*;
use crate::gpt::{Gpt, Guid, Partition, ENTRY_SECTORS};
use std::io::Cursor;

const MIB: u64 = 1 << 20;

fn us(x: u64) -> usize {
    usize::try_from(x).unwrap()
}

fn part(name: &str, first_mib: u64, last_mib: u64) -> Partition {
    Partition {
        name: name.into(),
        type_guid: Guid::derive(name.as_bytes()),
        guid: Guid::derive(format!("g-{name}").as_bytes()),
        first_lba: first_mib * 2048,
        last_lba: last_mib * 2048 - 1,
        attributes: 0,
    }
}

/// An ext4 superblock as mkfs.ext4 writes it for `blocks` blocks of 4 KiB (the fields
/// the grow reads).
fn superblock(blocks: u64) -> Vec<u8> {
    let mut sb = vec![0u8; SUPERBLOCK.1];
    let mut put =
        |at: usize, v: u64, n: usize| sb[at..at + n].copy_from_slice(&v.to_le_bytes()[..n]);
    put(0x04, blocks & 0xffff_ffff, 4);
    put(0x150, blocks >> 32, 4);
    put(0x18, 2, 4);
    put(0x1c, 2, 4);
    put(0x20, 32768, 4);
    put(0x28, 8192, 4);
    put(0x38, MAGIC, 2);
    put(0x4c, 1, 4);
    put(0x58, 256, 2);
    put(0xce, 63, 2);
    sb
}

/// A 16 MiB image as `stele disk create` lays it out (data last, 6 MiB of ext4), at the
/// start of a 64 MiB disk.
fn disk() -> Vec<u8> {
    let image = Gpt {
        disk_guid: Guid::derive(b"disk"),
        total_sectors: 16 * 2048,
        partitions: vec![
            part("stele-state", 1, 3),
            part("stele-root-a", 3, 6),
            part("stele-root-b", 6, 9),
            part("stele-data", 9, 15),
        ],
    };
    let mut c = Cursor::new(vec![0u8; us(16 * MIB)]);
    image.write(&mut c).unwrap();
    let mut v = c.into_inner();
    let at = us(9 * MIB + SUPERBLOCK.0);
    v[at..at + SUPERBLOCK.1].copy_from_slice(&superblock(6 * MIB / 4096));
    v.resize(us(64 * MIB), 0);
    v
}

/// The data partition as the kernel reads the table at boot: (first byte, length).
fn data_of(v: &[u8]) -> (u64, u64) {
    let t = Gpt::read(&mut Cursor::new(v), v.len() as u64).expect("the table reads");
    let p = t
        .partitions
        .iter()
        .find(|p| p.name == "stele-data")
        .unwrap();
    p.byte_range()
}

/// The disk: each `write` is one step; after `budget` steps the power is gone.
struct Dev {
    c: Cursor<Vec<u8>>,
    budget: usize,
}

fn step(budget: &mut usize) -> io::Result<()> {
    if *budget == 0 {
        return Err(io::Error::other("power cut"));
    }
    *budget -= 1;
    Ok(())
}

impl Read for Dev {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        self.c.read(b)
    }
}
impl Seek for Dev {
    fn seek(&mut self, p: io::SeekFrom) -> io::Result<u64> {
        self.c.seek(p)
    }
}
impl Write for Dev {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        step(&mut self.budget)?;
        self.c.write(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One boot's kernel: the data partition as it read the table, BLKPG, and the online
/// resize (journaled: done in two transactions, each all or nothing).
struct Sim {
    dev: Dev,
    start: u64,
    len: u64,
}

impl Sim {
    fn sb_at(&self) -> usize {
        us(self.start + SUPERBLOCK.0)
    }
    /// What the mount would see: a filesystem no larger than its partition.
    fn mountable(&self) -> bool {
        let v = self.dev.c.get_ref();
        Ext4::read(&v[self.sb_at()..][..SUPERBLOCK.1]).is_ok_and(|e| e.bytes() <= self.len)
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
        step(&mut self.dev.budget)?;
        assert_eq!(start, self.start, "BLKPG moves no partition start");
        // The kernel refuses a partition beyond the disk or over another one; the table
        // on the disk must already say so (else the next boot would shrink it back).
        assert_eq!(
            (start, len),
            data_of(self.dev.c.get_ref()),
            "BLKPG before the table"
        );
        self.len = len;
        Ok(())
    }
    fn partition_len(&mut self) -> io::Result<u64> {
        Ok(self.len)
    }
    fn superblock(&mut self) -> io::Result<Vec<u8>> {
        Ok(self.dev.c.get_ref()[self.sb_at()..][..SUPERBLOCK.1].to_vec())
    }
    fn resize_fs(&mut self, blocks: u64) -> io::Result<()> {
        assert!(
            self.mountable(),
            "resize of a filesystem that did not mount"
        );
        if blocks * 4096 > self.len {
            return Err(io::Error::other("can't read last block"));
        }
        let old = Ext4::read(&self.superblock()?).unwrap().blocks;
        for to in [(old + blocks) / 2, blocks] {
            step(&mut self.dev.budget)?;
            let at = self.sb_at();
            let v = self.dev.c.get_mut();
            v[at + 0x04..at + 0x08].copy_from_slice(&to.to_le_bytes()[..4]);
        }
        Ok(())
    }
}

/// What one boot logs: the partition's and the filesystem's (before, after).
type Grown = (Option<(u64, u64)>, Option<(u64, u64)>);

/// One boot of `v` with `budget` steps before the power goes: the kernel reads the table,
/// PID 1 grows the table, mounts (which must work), grows the filesystem. Returns the disk
/// and what was grown, or `None` when the power went.
fn boot(v: Vec<u8>, budget: usize) -> (Vec<u8>, Option<Grown>) {
    let (start, len) = data_of(&v);
    let mut m = Sim {
        dev: Dev {
            c: Cursor::new(v),
            budget,
        },
        start,
        len,
    };
    assert!(m.mountable(), "the data partition does not mount at boot");
    let t = table(&mut m, "stele-data");
    let cut = |m: Sim| (m.dev.c.into_inner(), None);
    let Ok(t) = t else { return cut(m) };
    assert!(
        m.mountable(),
        "the data partition does not mount after the table"
    );
    let Ok(f) = filesystem(&mut m) else {
        return cut(m);
    };
    (m.dev.c.into_inner(), Some((t, f)))
}

#[test]
fn the_data_partition_and_its_filesystem_fill_the_disk_once() {
    let (v, grown) = boot(disk(), usize::MAX);
    // The last usable LBA: before the backup array and header.
    let end = (64 * MIB / 512 - 1 - ENTRY_SECTORS) * 512;
    let want = end - 9 * MIB;
    assert_eq!(
        grown,
        Some((Some((6 * MIB, want)), Some((6 * MIB, want / 4096 * 4096))))
    );
    assert_eq!(data_of(&v), (9 * MIB, want));
    // The next boot does nothing.
    let (again, grown) = boot(v.clone(), usize::MAX);
    assert_eq!(grown, Some((None, None)));
    assert!(again == v);
}

/// A power cut after every step PID 1 takes (each GPT write, BLKPG, each resize
/// transaction): the disk the next boot finds has a table that reads and a data
/// filesystem that mounts, and that boot finishes the grow with the same bytes as an
/// uncut one; the boot after that does nothing.
#[test]
fn a_power_cut_at_any_step_of_the_grow_boots_and_the_next_boot_finishes_it() {
    let (done, _) = boot(disk(), usize::MAX);
    let mut cuts = 0;
    for budget in 0.. {
        let (v, grown) = boot(disk(), budget);
        if grown.is_some() {
            break;
        }
        cuts += 1;
        let (v, grown) = boot(v, usize::MAX);
        let (t, f) = grown.unwrap_or_else(|| panic!("cut {budget}: the next boot failed"));
        assert!(t.is_some() || f.is_some(), "cut {budget}: nothing finished");
        assert!(v == done, "cut {budget}: the finished disk differs");
        assert_eq!(boot(v, usize::MAX).1, Some((None, None)), "cut {budget}");
    }
    // 7 GPT writes, BLKPG, 2 resize transactions.
    assert_eq!(cuts, 10);
}

#[test]
fn the_superblock_reader_refuses_what_is_not_ext4_and_never_panics() {
    let good = superblock(1000);
    let e = Ext4::read(&good).unwrap();
    assert_eq!((e.block_size, e.blocks, e.bytes()), (4096, 1000, 4_096_000));
    assert!(matches!(Ext4::read(&good[..100]), Err(GrowError::Ext4(_))));
    let mut bad = good.clone();
    bad[0x38] = 0;
    assert!(matches!(Ext4::read(&bad), Err(GrowError::Ext4(_))));
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..20_000 {
        let mut sb = good.clone();
        for _ in 0..4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = us(x % 0x160);
            sb[i] = x.to_le_bytes()[4];
        }
        if let Ok(e) = Ext4::read(&sb) {
            let _ = e.grow_to(x);
            let _ = e.grow_to(0);
            let _ = e.grow_to(u64::MAX);
        }
    }
}

/// The kernel adds a block group only with room for its metadata: a smaller gap stays,
/// so a filesystem that filled its partition is never grown again.
#[test]
fn a_gap_smaller_than_a_groups_metadata_is_not_grown() {
    let e = Ext4::read(&superblock(25_600)).unwrap();
    assert_eq!(e.grow_to(25_600 * 4096), None);
    assert_eq!(e.grow_to(25_600 * 4096 - 4096), None);
    // 1 MiB more: less than the group's inode table (512 blocks).
    assert_eq!(e.grow_to((25_600 + 256) * 4096), None);
    assert_eq!(e.grow_to((25_600 + 2048) * 4096 + 100), Some(25_600 + 2048));
}

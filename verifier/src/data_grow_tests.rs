//! Tests of the data partition's grow: the superblock reader, the margin, and a power
//! cut after every step PID 1 takes (GPT writes, BLKPG, the journaled resize) followed by
//! the next boots, on the in-memory machine of `testutil::grow`.

use super::*;
use crate::gpt::{Gpt, Guid, Partition, ENTRY_SECTORS};
use crate::testutil::grow;
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

/// An ext4 superblock as mkfs.ext4 writes it for `blocks` blocks of 4 KiB.
fn superblock(blocks: u64) -> Vec<u8> {
    grow::superblock(blocks, 2, 32768, 8192)
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
            part(grow::DATA, 9, 15),
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

fn boot(disk: Vec<u8>, budget: usize) -> grow::Booted {
    grow::boot(disk, budget).expect("the kernel finds the data partition")
}

#[test]
fn the_data_partition_and_its_filesystem_fill_the_disk_once() {
    let b = boot(disk(), usize::MAX);
    // The last usable LBA: before the backup array and header.
    let end = (64 * MIB / 512 - 1 - ENTRY_SECTORS) * 512;
    let want = end - 9 * MIB;
    assert_eq!(b.table, Ok(Some((6 * MIB, want))));
    assert_eq!(b.fs, Some(Ok(Some((6 * MIB, want / 4096 * 4096)))));
    assert_eq!(grow::data_of(&b.disk), Some((9 * MIB, want)));
    // The next boot does nothing.
    let again = boot(b.disk.clone(), usize::MAX);
    assert_eq!((again.table, again.fs), (Ok(None), Some(Ok(None))));
    assert!(again.disk == b.disk);
}

/// A power cut after every step PID 1 takes (each GPT write, BLKPG, each resize
/// transaction): the next boot finds a table that reads and a data filesystem that
/// mounts, and finishes the grow with the same bytes as an uncut one; the boot after that
/// does nothing. (Inside a GPT write: `gpt_grow`'s own test.)
#[test]
fn a_power_cut_at_any_step_of_the_grow_boots_and_the_next_boot_finishes_it() {
    let done = boot(disk(), usize::MAX).disk;
    let mut cuts = 0;
    for budget in 0.. {
        let b = boot(disk(), budget);
        if !b.cut {
            break;
        }
        cuts += 1;
        let next = boot(b.disk, usize::MAX);
        assert!(!next.cut && next.mounted, "cut {budget}: {next:?}");
        assert!(
            next.table.as_ref().is_ok_and(Option::is_some)
                || next
                    .fs
                    .as_ref()
                    .is_some_and(|f| f.as_ref().is_ok_and(Option::is_some)),
            "cut {budget}: nothing finished"
        );
        assert!(next.disk == done, "cut {budget}: the finished disk differs");
        let third = boot(next.disk, usize::MAX);
        assert_eq!(
            (third.table, third.fs),
            (Ok(None), Some(Ok(None))),
            "cut {budget}"
        );
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

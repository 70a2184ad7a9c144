//! Target `data_grow`: bytes as the start of a disk that was flashed onto a larger one,
//! booted as PID 1 boots it (stele_verifier::data_grow on the in-memory machine of
//! `testutil::grow`), with a power cut after some step, then booted again.
//!
//! Input: one byte, the disk's extra length in MiB (mod 5); one byte, the steps before
//! the power goes (255: none); then the image's bytes.
//!
//! Whatever the bytes: no panic; a table the kernel read before still reads after any
//! cut, with every other partition and the data partition's start unchanged and its end
//! never earlier; a filesystem that mounted still mounts; the boot after an uncut one
//! changes no byte and grows nothing.

use std::io::Cursor;

use stele_verifier::gpt::{Gpt, Guid, Partition};
use stele_verifier::testutil::grow::{self, Booted, DATA};

use crate::Seed;

pub const STAGES: &[&str] = &[
    "a data partition in a table that reads",
    "the table grows",
    "the filesystem mounts",
    "the filesystem grows",
];

const MIB: usize = 1 << 20;

fn decode(data: &[u8]) -> (Vec<u8>, usize) {
    let extra = usize::from(data.first().copied().unwrap_or(0) % 5) * MIB;
    let budget = match data.get(1).copied().unwrap_or(255) {
        255 => usize::MAX,
        b => usize::from(b),
    };
    let mut disk = data.get(2..).unwrap_or(&[]).to_vec();
    disk.resize(disk.len() + extra, 0);
    (disk, budget)
}

fn table(disk: &[u8]) -> Option<Gpt> {
    Gpt::read(&mut Cursor::new(disk), disk.len() as u64).ok()
}

/// What must hold between the table before a boot and after it.
fn same_but_grown(before: &Gpt, after: &Gpt) {
    assert_eq!(before.partitions.len(), after.partitions.len());
    for (b, a) in before.partitions.iter().zip(&after.partitions) {
        if b.name == DATA {
            assert_eq!(b.first_lba, a.first_lba, "the data partition moved");
            assert!(a.last_lba >= b.last_lba, "the data partition shrank");
        } else {
            assert_eq!(b, a, "another partition changed");
        }
    }
}

pub fn run(data: &[u8]) {
    let (disk, budget) = decode(data);
    let Some(before) = table(&disk) else { return };
    let Some(first) = grow::boot(disk, budget) else {
        return;
    };
    let after = table(&first.disk).expect("a table that read no longer reads");
    same_but_grown(&before, &after);
    let Some(next) = grow::boot(first.disk, usize::MAX) else {
        panic!("the data partition is gone")
    };
    same_but_grown(
        &after,
        &table(&next.disk).expect("the table no longer reads"),
    );
    if first.mounted {
        assert!(next.mounted, "a filesystem that mounted no longer mounts");
    }
    let Some(third) = grow::boot(next.disk.clone(), usize::MAX) else {
        panic!("the data partition is gone")
    };
    assert!(third.disk == next.disk, "a grown disk grew again");
    // A grow that went through uncut is not logged again at the next boot.
    if next.table.is_ok() && matches!(next.fs, Some(Ok(_))) {
        assert_eq!(third.table, Ok(None), "the table grew twice");
        assert_eq!(third.fs, Some(Ok(None)), "the filesystem grew twice");
    }
}

pub fn depth(data: &[u8]) -> usize {
    let (disk, _) = decode(data);
    let Some(b): Option<Booted> = grow::boot(disk, usize::MAX) else {
        return 0;
    };
    match (&b.table, b.mounted, &b.fs) {
        (Ok(Some(_)), true, Some(Ok(Some(_)))) => 4,
        (Ok(Some(_)), true, _) => 3,
        (Ok(Some(_)), false, _) => 2,
        _ => 1,
    }
}

fn encode(extra_mib: u8, budget: u8, image: &[u8]) -> Vec<u8> {
    let mut v = vec![extra_mib, budget];
    v.extend_from_slice(image);
    v
}

fn part(name: &str, first: u64, last: u64) -> Partition {
    Partition {
        name: name.into(),
        type_guid: Guid::derive(name.as_bytes()),
        guid: Guid::derive(format!("g-{name}").as_bytes()),
        first_lba: first,
        last_lba: last,
        attributes: 0,
    }
}

/// A 256 KiB image laid out as `stele disk create` does it (data last), its data
/// partition holding an ext4 superblock of 1 KiB blocks filling it when `inodes` (per
/// group) is given.
fn image(data_first: u64, inodes: Option<u32>) -> Vec<u8> {
    let gpt = Gpt {
        disk_guid: Guid::derive(b"fuzz"),
        total_sectors: 512,
        partitions: vec![
            part("stele-state", data_first - 200, data_first - 151),
            part("stele-root-a", data_first - 150, data_first - 101),
            part("stele-root-b", data_first - 100, data_first - 1),
            part(DATA, data_first, 477),
        ],
    };
    let mut c = Cursor::new(vec![0u8; 512 * 512]);
    gpt.write(&mut c).expect("a valid table");
    let mut v = c.into_inner();
    if let Some(inodes) = inodes {
        let blocks = (478 - data_first) / 2;
        let at = usize::try_from(data_first * 512 + 1024).unwrap_or(0);
        v[at..at + 1024].copy_from_slice(&grow::superblock(blocks, 0, 8192, inodes));
    }
    v
}

pub fn seeds() -> Vec<Seed> {
    let good = image(300, Some(16));
    let mut out = vec![
        Seed::new("grows", encode(2, 255, &good)),
        Seed::new("same-size", encode(0, 255, &good)),
        Seed::new("no-filesystem", encode(2, 255, &image(300, None))),
        // 1 MiB more is less than a new group's 2 MiB inode table.
        Seed::new("gap-below-a-group", encode(1, 255, &image(300, Some(8192)))),
        // The first partition too close to the table for the scratch array.
        Seed::new("no-room-before", encode(2, 255, &image(240, Some(16)))),
        Seed::new("garbage", encode(2, 255, &[0x5a; 4096])),
    ];
    for cut in 0..10u8 {
        out.push(Seed::new(format!("cut-{cut}"), encode(3, cut, &good)));
    }
    let mut flipped = good.clone();
    flipped[512 + 100] ^= 1;
    out.push(Seed::new("bad-header", encode(2, 255, &flipped)));
    let mut big = good;
    let at = 300 * 512 + 1024 + 4;
    big[at] = big[at].wrapping_add(10);
    out.push(Seed::new(
        "filesystem-past-its-partition",
        encode(2, 255, &big),
    ));
    out
}

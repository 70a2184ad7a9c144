//! `stele update stage1` on FAT images made by mkfs.vfat and mtools: the new UKI in place,
//! fsck.vfat clean, refusals that write nothing, leftovers of interrupted updates reclaimed.

#![allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)] // test sizes are small

use std::io::{Cursor, Seek};
use std::process::Command;

use stele_verifier::uki::fake_uki;

use super::*;
use crate::fat::tests::{image, tool, KINDS};

/// `fsck.vfat -n` exit status and `mtype` of BOOTX64.EFI, on the image `img`.
fn tools(dir: &std::path::Path, img: &[u8]) -> (i32, Vec<u8>) {
    let p = dir.join("check.img");
    std::fs::write(&p, img).unwrap();
    let fsck = Command::new("fsck.vfat")
        .arg("-n")
        .arg(&p)
        .output()
        .expect("fsck.vfat (dosfstools: `cargo xtask setup`)");
    let f =
        tool(Command::new("mtype").args(["-i", p.to_str().unwrap(), "::/EFI/BOOT/BOOTX64.EFI"]))
            .stdout;
    (fsck.status.code().unwrap_or(-1), f)
}

fn quiet(_: &str) {}

#[test]
fn replaces_stage1_on_fat12_16_32_and_again() {
    let dir = tempfile::tempdir().unwrap();
    let old = fake_uki("stage1=1", 40_000, 1, false);
    let new = fake_uki("stage1=2", 60_000, 2, false);
    let newer = fake_uki("stage1=3", 20_000, 3, false);
    for (kind, fat, kib) in KINDS {
        let img = image(
            dir.path(),
            fat,
            kib,
            &[
                ("/EFI/BOOT/BOOTX64.EFI", old.as_slice()),
                ("/EFI/BOOT/other.txt", b"x".as_slice()),
            ],
        );
        let mut dev = Cursor::new(img);
        let free0 = Fs::open(&mut dev)
            .unwrap()
            .table
            .free_count(&Fs::open(&mut dev).unwrap().vol);
        let r = replace(&mut dev, &new, &mut quiet).unwrap();
        assert_eq!(
            r,
            Replaced {
                old_len: 40_000,
                new_len: 60_000,
                signed: false
            }
        );
        assert_eq!(
            tools(dir.path(), dev.get_ref()),
            (0, new.clone()),
            "{kind:?}"
        );
        replace(&mut dev, &newer, &mut quiet).unwrap();
        assert_eq!(
            tools(dir.path(), dev.get_ref()),
            (0, newer.clone()),
            "{kind:?}"
        );
        // The space of both older files is free again.
        let fs = Fs::open(&mut dev).unwrap();
        let cs = fs.vol.cluster as usize;
        let delta = old.len().div_ceil(cs) as i64 - newer.len().div_ceil(cs) as i64;
        assert_eq!(
            i64::from(fs.table.free_count(&fs.vol)) - i64::from(free0),
            delta,
            "{kind:?}"
        );
    }
}

#[test]
fn refusals_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let old = fake_uki("stage1=1", 40_000, 1, false);
    let signed_old = fake_uki("stage1=1", 40_000, 1, true);
    let img = image(dir.path(), "12", 2048, &[("/EFI/BOOT/BOOTX64.EFI", &old)]);
    let signed_img = image(
        dir.path(),
        "12",
        2048,
        &[("/EFI/BOOT/BOOTX64.EFI", &signed_old)],
    );
    let no_stage1 = image(dir.path(), "12", 2048, &[("/EFI/BOOT/OTHER.EFI", &old)]);
    let mut not_uki = old.clone();
    not_uki[0] = b'X';
    let free = Fs::open(&mut Cursor::new(&img))
        .map(|f| u64::from(f.table.free_count(&f.vol)) * f.vol.cluster)
        .unwrap();
    let too_big = fake_uki("stage1=2", free as usize + 1, 2, false);
    let fits = fake_uki("stage1=2", free as usize - 4096, 2, false);
    type Case<'a> = (&'a [u8], &'a [u8], fn(&Stage1Error) -> bool);
    let cases: [Case; 5] = [
        (&img, &not_uki, |e| {
            matches!(e, Stage1Error::NotUki(UkiError::NoMz))
        }),
        (&img, &too_big, |e| {
            matches!(
                e,
                Stage1Error::NoSpace {
                    current: 40_000,
                    ..
                }
            )
        }),
        (&signed_img, &fits, |e| matches!(e, Stage1Error::Unsigned)),
        (&no_stage1, &fits, |e| matches!(e, Stage1Error::NoStage1)),
        (&[0u8; 4096], &fits, |e| {
            matches!(e, Stage1Error::Fat(FatError::NotFat(_)))
        }),
    ];
    for (i, (disk, uki, want)) in cases.into_iter().enumerate() {
        let mut dev = Cursor::new(disk.to_vec());
        let e = replace(&mut dev, uki, &mut quiet).unwrap_err();
        assert!(want(&e), "case {i}: {e}");
        assert_eq!(dev.get_ref(), disk, "case {i} wrote");
        assert_eq!(e.is_input(), i < 3, "case {i}");
    }
    // A UKI that fills the free space exactly fits; signed replaces signed.
    let mut dev = Cursor::new(img.clone());
    replace(&mut dev, &fits, &mut quiet).unwrap();
    let mut dev = Cursor::new(signed_img);
    let signed_new = fake_uki("stage1=2", 30_000, 2, true);
    assert!(replace(&mut dev, &signed_new, &mut quiet).unwrap().signed);
    assert_eq!(tools(dir.path(), dev.get_ref()), (0, signed_new));
}

/// A run of an update that stops after its first flush (power cut before the switch)
/// leaves lost clusters; the next update uses and frees them, and ends clean.
#[test]
fn leftovers_of_an_interrupted_update_are_reclaimed() {
    /// Keeps writes only until the first flush, like a power cut there.
    struct CutAtFirstSync {
        dev: Cursor<Vec<u8>>,
        synced: bool,
    }
    impl std::io::Read for CutAtFirstSync {
        fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
            self.dev.read(b)
        }
    }
    impl std::io::Seek for CutAtFirstSync {
        fn seek(&mut self, p: std::io::SeekFrom) -> std::io::Result<u64> {
            self.dev.seek(p)
        }
    }
    impl std::io::Write for CutAtFirstSync {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if self.synced {
                self.dev.seek(std::io::SeekFrom::Current(b.len() as i64))?;
                return Ok(b.len());
            }
            self.dev.write(b)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Storage for CutAtFirstSync {
        fn sync(&mut self) -> std::io::Result<()> {
            self.synced = true;
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let old = fake_uki("stage1=1", 300_000, 1, false);
    let img = image(dir.path(), "16:2", 8192, &[("/EFI/BOOT/BOOTX64.EFI", &old)]);
    let clean_free = {
        let mut dev = Cursor::new(img.clone());
        replace(
            &mut dev,
            &fake_uki("stage1=3", 500_000, 3, false),
            &mut quiet,
        )
        .unwrap();
        let fs = Fs::open(&mut dev).unwrap();
        fs.table.free_count(&fs.vol)
    };
    let mut cut = CutAtFirstSync {
        dev: Cursor::new(img),
        synced: false,
    };
    replace(
        &mut cut,
        &fake_uki("stage1=2", 400_000, 2, false),
        &mut quiet,
    )
    .unwrap();
    let mut dev = cut.dev;
    let (code, f) = tools(dir.path(), dev.get_ref());
    assert_eq!((code, f == old), (1, true), "lost clusters, old stage 1");
    let newer = fake_uki("stage1=3", 500_000, 3, false);
    replace(&mut dev, &newer, &mut quiet).unwrap();
    assert_eq!(tools(dir.path(), dev.get_ref()), (0, newer));
    let fs = Fs::open(&mut dev).unwrap();
    assert_eq!(fs.table.free_count(&fs.vol), clean_free);
}

/// A stage 1 with a long name (mixed case) and two live entries (a power cut between the
/// switch and the deletion): the next update leaves one short entry, no orphans.
#[test]
fn long_names_and_duplicate_entries_are_cleaned_up() {
    let dir = tempfile::tempdir().unwrap();
    let old = fake_uki("stage1=1", 9_000, 1, false);
    let img = image(dir.path(), "12", 2048, &[("/EFI/BOOT/BootX64.efi", &old)]);
    let mut dev = Cursor::new(img);
    let fs = Fs::open(&mut dev).unwrap();
    let boot = fs.find_dir(&mut dev, &DIRS).unwrap().unwrap();
    let entries = fs.entries(&mut dev, boot).unwrap();
    assert!(
        entries.iter().any(Entry::is_lfn),
        "mtools wrote no long name"
    );
    let mid = fake_uki("stage1=2", 9_000, 2, false);
    let p = plan(&mut dev, &mid).unwrap();
    assert_eq!(p.old_lfn.len(), 1);
    replace(&mut dev, &mid, &mut quiet).unwrap();
    assert_eq!(
        tools(dir.path(), dev.get_ref()),
        (0, mid.clone()),
        "orphaned long name"
    );
    // Make a second live copy of the entry, as a cut after the switch leaves it.
    let fs = Fs::open(&mut dev).unwrap();
    let entries = fs.entries(&mut dev, boot).unwrap();
    let live = *entries
        .iter()
        .find(|e| e.is_live() && e.name() == FILE)
        .unwrap();
    let spare = entries.iter().find(|e| e.is_free()).unwrap().at as usize;
    let mut copy = live;
    copy.at = spare as u64;
    let mut chain = fs.table.clone();
    let clusters = fs.table.chain(&fs.vol, live.first_cluster()).unwrap();
    let data = fs.read_file(&mut dev, &live, u64::MAX).unwrap();
    let free: Vec<u32> = (2..=fs.vol.clusters + 1)
        .filter(|&c| fs.table.link(&fs.vol, c) == Link::Free)
        .take(clusters.len())
        .collect();
    for (i, &c) in free.iter().enumerate() {
        chain.set(c, free.get(i + 1).map_or(Link::End, |&n| Link::Next(n)));
        let at = fs.vol.cluster_offset(c) as usize;
        let cs = fs.vol.cluster as usize;
        let part = &data[i * cs..data.len().min((i + 1) * cs)];
        dev.get_mut()[at..at + part.len()].copy_from_slice(part);
    }
    chain.flush(&mut dev, &fs.vol).unwrap();
    copy.set_first_cluster(free[0]);
    dev.get_mut()[spare..spare + ENTRY_LEN].copy_from_slice(&copy.raw);
    let p = plan(&mut dev, &old).unwrap();
    assert_eq!(p.old.len(), 2);
    replace(&mut dev, &old, &mut quiet).unwrap();
    let fs = Fs::open(&mut dev).unwrap();
    assert_eq!(fs.find(&mut dev, boot, &FILE).unwrap().len(), 1);
    assert_eq!(tools(dir.path(), dev.get_ref()), (0, old));
}

const ENTRY_LEN: usize = crate::fat::ENTRY;

#[test]
fn cluster_and_slot_choice() {
    assert_eq!(pick(&[2, 3, 5, 6, 7, 9], 3), vec![5, 6, 7]);
    assert_eq!(pick(&[2, 3, 5, 6, 7, 9], 2), vec![2, 3]);
    assert_eq!(pick(&[2, 4, 6, 8], 3), vec![2, 4, 6]);
    assert_eq!(pick(&[7], 1), vec![7]);
    let e = |at: u64, first: u8| Entry {
        at,
        raw: {
            let mut r = [b'A'; 32];
            r[0] = first;
            r[11] = 0x20;
            r
        },
    };
    // Old entry in sector 0 (offset 64): a deleted slot in sector 1 wins over the free
    // slot in sector 0.
    let entries = [
        e(0, b'.'),
        e(32, DELETED),
        e(64, b'B'),
        e(512, DELETED),
        e(544, 0),
    ];
    assert_eq!(free_slot(&entries, &entries[2..3], 512), Some(512));
    assert_eq!(free_slot(&entries[..3], &entries[2..3], 512), Some(32));
    assert_eq!(free_slot(&entries[2..3], &entries[2..3], 512), None);
}

//! Power cuts during `stele update stage1`: the whole update runs against an in-memory FAT
//! image (made by mkfs.vfat + mtools, FAT12, FAT16 and FAT32) through a recording device,
//! and every prefix of its sector writes is replayed — as issued, and as a disk cache may
//! do them (between two flushes each sector once, in reverse order) — each next sector
//! also torn at the bytes where it changes. Every state must hold a complete
//! `\EFI\BOOT\BOOTX64.EFI` that is byte for byte the old or the new UKI (never the new one
//! before the switch, only the new one at the end), leave the other files alone, and
//! `fsck.vfat -n` must find it clean or repaired by `fsck.vfat -a` with the file intact.

#![allow(clippy::cast_possible_truncation)] // test sizes are small

use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use stele_verifier::uki::fake_uki;

use super::*;
use crate::fat::short_name;
use crate::fat::tests::{image, tool, KINDS};

const SECTOR: usize = 512;

/// One sector write (its content before and after) or a flush.
#[derive(Clone, Debug)]
enum Op {
    Write {
        at: usize,
        before: Vec<u8>,
        after: Vec<u8>,
    },
    Sync,
}

/// (sector offset, content before, content after).
type SectorWrite = (usize, Vec<u8>, Vec<u8>);

/// Applies writes to memory and records them sector by sector, with the flushes.
struct Recorder {
    dev: Cursor<Vec<u8>>,
    log: Vec<Op>,
}

impl Read for Recorder {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        self.dev.read(b)
    }
}
impl Seek for Recorder {
    fn seek(&mut self, p: SeekFrom) -> io::Result<u64> {
        self.dev.seek(p)
    }
}
impl Write for Recorder {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let pos = self.dev.position() as usize;
        let sectors = pos / SECTOR..(pos + b.len()).div_ceil(SECTOR);
        let img = self.dev.get_ref();
        let before: Vec<Vec<u8>> = sectors
            .clone()
            .map(|s| img[s * SECTOR..(s + 1) * SECTOR].to_vec())
            .collect();
        self.dev.write_all(b)?;
        for (s, before) in sectors.zip(before) {
            let at = s * SECTOR;
            let after = self.dev.get_ref()[at..at + SECTOR].to_vec();
            self.log.push(Op::Write { at, before, after });
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
impl Storage for Recorder {
    fn sync(&mut self) -> io::Result<()> {
        self.log.push(Op::Sync);
        Ok(())
    }
}

/// Which stage 1 a state holds: the first live entry (what a firmware boots) and how many
/// live entries there are; every one of them must be the old or the new file, whole.
fn holds(
    img: &[u8],
    old: &[u8],
    new: &[u8],
    others: &[(&str, &[u8])],
) -> Result<(bool, usize), String> {
    let mut dev = Cursor::new(img);
    let fs = Fs::open(&mut dev).map_err(|e| e.to_string())?;
    let boot = fs
        .find_dir(&mut dev, &DIRS)
        .map_err(|e| e.to_string())?
        .ok_or("no \\EFI\\BOOT")?;
    let live = fs.find(&mut dev, boot, &FILE).map_err(|e| e.to_string())?;
    let mut first_new = None;
    for e in &live {
        let f = fs
            .read_file(&mut dev, e, u64::MAX)
            .map_err(|e| format!("reading BOOTX64.EFI: {e}"))?;
        let is_new = if f == new {
            true
        } else if f == old {
            false
        } else {
            return Err(format!(
                "a BOOTX64.EFI of {} bytes is neither old nor new",
                f.len()
            ));
        };
        first_new.get_or_insert(is_new);
    }
    for (path, bytes) in others {
        let parts: Vec<[u8; 11]> = path
            .split('/')
            .filter(|p| !p.is_empty())
            .map(|p| short_name(p).unwrap())
            .collect();
        let (name, dirs) = parts.split_last().unwrap();
        let dir = fs
            .find_dir(&mut dev, dirs)
            .map_err(|e| e.to_string())?
            .ok_or("dir gone")?;
        let e = fs.find(&mut dev, dir, name).map_err(|e| e.to_string())?;
        let got = fs.read_file(&mut dev, e.first().ok_or(format!("{path} gone"))?, u64::MAX);
        if got.map_err(|e| e.to_string())? != *bytes {
            return Err(format!("{path} changed"));
        }
    }
    Ok((first_new.ok_or("no live BOOTX64.EFI")?, live.len()))
}

/// Where a torn write of `before` → `after` can stop: after each changed byte but the last
/// (every byte for metadata; 4 points for a sector that changes all over, like data).
fn tears(before: &[u8], after: &[u8]) -> Vec<usize> {
    let diff: Vec<usize> = (0..SECTOR).filter(|&i| before[i] != after[i]).collect();
    let cuts: Vec<usize> = diff
        .iter()
        .map(|p| p + 1)
        .filter(|&t| t <= *diff.last().unwrap_or(&0))
        .collect();
    if cuts.len() <= 64 {
        cuts
    } else {
        (1..=4).map(|k| cuts[k * cuts.len() / 5]).collect()
    }
}

/// `fsck.vfat -n` on the image file: clean, or only repairable problems that
/// `fsck.vfat -a` (on a copy) repairs into a clean volume whose BOOTX64.EFI is still the
/// old or the new UKI (mtype, an independent reader). Returns whether it was clean.
/// fsck.vfat renames the second of two live entries, so after a repair one is left.
fn fsck_ok(img: &Path, old: &[u8], new: &[u8], what: &str) -> bool {
    let fsck = |args: &[&str], p: &Path| {
        Command::new("fsck.vfat")
            .args(args)
            .arg(p)
            .output()
            .expect("fsck.vfat (dosfstools: `cargo xtask setup`)")
    };
    let mtype = |p: &Path| {
        tool(Command::new("mtype").args(["-i", p.to_str().unwrap(), "::/EFI/BOOT/BOOTX64.EFI"]))
            .stdout
    };
    // mtype prints every entry of the name: with two live entries (between the switch and
    // the deletion) both files, in directory order.
    let whole = |f: &[u8]| {
        [old, new].contains(&f)
            || [[old, new], [new, old]]
                .iter()
                .any(|[a, b]| f.len() == a.len() + b.len() && f.starts_with(a) && f.ends_with(b))
    };
    let check = fsck(&["-n"], img);
    let f = mtype(img);
    assert!(
        whole(&f),
        "{what}: mtype reads neither UKI ({} bytes)",
        f.len()
    );
    match check.status.code() {
        Some(0) => return true,
        Some(1) => {}
        other => panic!(
            "{what}: fsck.vfat -n exit {other:?}: {}",
            String::from_utf8_lossy(&check.stdout)
        ),
    }
    let copy = img.with_extension("repaired");
    std::fs::copy(img, &copy).unwrap();
    let repair = fsck(&["-a", "-w"], &copy);
    assert!(
        matches!(repair.status.code(), Some(0 | 1)),
        "{what}: fsck.vfat -a failed: {}",
        String::from_utf8_lossy(&repair.stdout)
    );
    let again = fsck(&["-n"], &copy);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{what}: not clean after fsck.vfat -a: {}\nbefore: {}",
        String::from_utf8_lossy(&again.stdout),
        String::from_utf8_lossy(&check.stdout)
    );
    let f = mtype(&copy);
    assert!(whole(&f), "{what}: after repair, neither UKI");
    false
}

/// The sector writes as issued (`coalesced` false), or as a disk with a cache may do them:
/// between two flushes each sector once, with its last content, in the reverse order of
/// first touch (`coalesced` true). Also returns how many come before the first flush.
fn sequence(log: &[Op], coalesced: bool) -> (Vec<SectorWrite>, usize) {
    let mut out = Vec::new();
    let mut first_epoch = None;
    for epoch in log.split(|o| matches!(o, Op::Sync)) {
        let mut w: Vec<SectorWrite> = Vec::new();
        for o in epoch {
            let Op::Write { at, before, after } = o else {
                continue;
            };
            match w.iter_mut().find(|x| x.0 == *at).filter(|_| coalesced) {
                Some(x) => x.2.clone_from(after),
                None => w.push((*at, before.clone(), after.clone())),
            }
        }
        if coalesced {
            w.reverse();
        }
        first_epoch.get_or_insert(w.len());
        out.extend(w);
    }
    (out, first_epoch.unwrap_or(0))
}

#[test]
fn power_cut_at_any_write_leaves_a_whole_stage1() {
    let dir = tempfile::tempdir().unwrap();
    let old = fake_uki("console=ttyS0 stage1=old", 30_000, 0x11, false);
    let new = fake_uki("console=ttyS0 stage1=new", 45_000, 0x22, false);
    let others: [(&str, &[u8]); 2] = [
        ("/EFI/BOOT/NOTES.TXT", b"keep me"),
        ("/README", &[9u8; 5000]),
    ];
    let mut files = vec![("/EFI/BOOT/BOOTX64.EFI", old.as_slice())];
    files.extend(others);
    for (kind, fat, kib) in KINDS {
        let base = image(dir.path(), fat, kib, &files);
        let mut rec = Recorder {
            dev: Cursor::new(base.clone()),
            log: Vec::new(),
        };
        let mut lines = Vec::new();
        let done = replace(&mut rec, &new, &mut |l| lines.push(l.to_string())).unwrap();
        assert_eq!(
            (done.old_len, done.new_len),
            (old.len() as u64, new.len() as u64)
        );
        assert_eq!(lines.len(), 4, "{lines:?}");
        // The flushes: after the hidden copy, after the switch, after the old entry's
        // deletion, at the end.
        let syncs: Vec<usize> = rec
            .log
            .iter()
            .enumerate()
            .filter(|(_, o)| matches!(o, Op::Sync))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(syncs.len(), 4, "{kind:?}");
        assert_eq!(
            syncs[1],
            syncs[0] + 2,
            "{kind:?}: the switch is one sector write"
        );
        // The new file's own sectors (each distinct): no need to run fsck after each.
        let mut padded = new.clone();
        padded.resize(new.len().next_multiple_of(SECTOR), 0);
        let data: std::collections::HashSet<&[u8]> = padded.chunks(SECTOR).collect();

        let mirror = dir.path().join(format!("replay-{fat}.img"));
        for reverse in [false, true] {
            let (seq, before_switch) = sequence(&rec.log, reverse);
            let mut img = base.clone();
            std::fs::write(&mirror, &img).unwrap();
            let mut seen = std::collections::BTreeSet::new();
            for cut in 0..=seq.len() {
                let what = format!("{kind:?} after {cut} of {} writes (coalesced and reversed between flushes: {reverse})", seq.len());
                let (first_new, live) =
                    holds(&img, &old, &new, &others).unwrap_or_else(|e| panic!("{what}: {e}"));
                if cut <= before_switch {
                    assert!(
                        !first_new && live == 1,
                        "{what}: new stage 1 before the switch"
                    );
                }
                seen.insert((first_new, live));
                let last_is_data = cut > 0 && data.contains(seq[cut - 1].2.as_slice());
                if !reverse && (!last_is_data || cut == before_switch) {
                    let clean = fsck_ok(&mirror, &old, &new, &what);
                    if cut == 0 || cut == seq.len() {
                        assert!(clean, "{what}: fsck.vfat -n is not clean");
                    }
                }
                let Some((at, before, after)) = seq.get(cut) else {
                    break;
                };
                for t in tears(before, after) {
                    img[*at..at + t].copy_from_slice(&after[..t]);
                    let what = format!("{what}, next torn after byte {t}");
                    let r =
                        holds(&img, &old, &new, &others).unwrap_or_else(|e| panic!("{what}: {e}"));
                    if cut < before_switch {
                        assert!(!r.0, "{what}: new stage 1 before the switch");
                    }
                    img[*at..at + SECTOR].copy_from_slice(before);
                }
                img[*at..at + SECTOR].copy_from_slice(after);
                if !reverse {
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&mirror)
                        .unwrap();
                    f.seek(SeekFrom::Start(*at as u64)).unwrap();
                    f.write_all(after).unwrap();
                }
            }
            assert_eq!(
                img,
                rec.dev.get_ref()[..],
                "{kind:?}: the replay ends where the update did"
            );
            let (first_new, live) = holds(&img, &old, &new, &others).unwrap();
            assert!(
                first_new && live == 1,
                "{kind:?}: the end holds only the new stage 1"
            );
            // Old only, both (new first or old first, by slot), new only.
            assert!(
                seen.contains(&(false, 1)) && seen.contains(&(true, 1)),
                "{kind:?} {seen:?}"
            );
            assert!(
                seen.iter().any(|s| s.1 == 2),
                "{kind:?}: never both live {seen:?}"
            );
        }
    }
}

//! The FAT reader against images made by mkfs.vfat and mtools (dosfstools, mtools: `cargo
//! xtask setup`), FAT12, FAT16 and FAT32; and images for the stage-1 tests.

#![allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)] // test sizes are small

use std::io::Cursor;
use std::path::Path;
use std::process::Command;

use super::*;

/// A FAT type as mkfs.vfat makes it: (`-F` and `-s`, sectors per cluster; size in KiB).
/// FAT12 with 2 KiB clusters (mkfs.vfat's choice), FAT16 with 1 KiB, FAT32 with 512 bytes
/// (as `stele disk create` makes the ESP).
pub(crate) const KINDS: [(Kind, &str, u32); 3] = [
    (Kind::Fat12, "12", 2048),
    (Kind::Fat16, "16:2", 8192),
    (Kind::Fat32, "32", 34000),
];

/// Runs a host tool; a missing one names the set-up command.
pub(crate) fn tool(cmd: &mut Command) -> std::process::Output {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap_or_else(|e| {
            panic!("{name}: {e} (install dosfstools and mtools: `cargo xtask setup`)")
        });
    assert!(
        out.status.success(),
        "{name} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A FAT image made by mkfs.vfat (512-byte sectors, fixed volume id) holding `files`
/// (`(path, bytes)`, directories made as needed) copied in by mcopy.
pub(crate) fn image(dir: &Path, fat: &str, kib: u32, files: &[(&str, &[u8])]) -> Vec<u8> {
    let (fat, per_cluster) = fat.split_once(':').unwrap_or((fat, ""));
    let img = dir.join(format!("fat{fat}.img"));
    let _ = std::fs::remove_file(&img);
    let mut mkfs = Command::new("mkfs.vfat");
    mkfs.args([
        "-C",
        "-F",
        fat,
        "-S",
        "512",
        "--invariant",
        "-i",
        "5e1e0001",
    ]);
    if !per_cluster.is_empty() {
        mkfs.args(["-s", per_cluster]);
    }
    tool(mkfs.arg(&img).arg(kib.to_string()));
    let i = img.to_str().unwrap();
    let mut made = std::collections::BTreeSet::new();
    for (n, (path, bytes)) in files.iter().enumerate() {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for k in 1..parts.len() {
            let d = format!("::/{}", parts[..k].join("/"));
            if made.insert(d.clone()) {
                tool(Command::new("mmd").args(["-i", i, &d]));
            }
        }
        let src = dir.join(format!("src{n}"));
        std::fs::write(&src, bytes).unwrap();
        tool(
            Command::new("mcopy")
                .args(["-i", i])
                .arg(&src)
                .arg(format!("::{path}")),
        );
    }
    std::fs::read(&img).unwrap()
}

fn name(s: &str) -> [u8; 11] {
    short_name(s).unwrap()
}

#[test]
fn short_names() {
    assert_eq!(&name("BOOTX64.EFI"), b"BOOTX64 EFI");
    assert_eq!(&name("efi"), b"EFI        ");
    assert_eq!(&name("Boot"), b"BOOT       ");
    for bad in [
        "",
        ".EFI",
        "TOOLONGNAME.EFI",
        "A.EFIX",
        "A B",
        "A.B.C",
        "\u{e9}",
    ] {
        assert_eq!(short_name(bad), None, "{bad}");
    }
}

#[test]
fn reads_what_mtools_wrote_on_fat12_16_32() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
    for (kind, fat, kib) in KINDS {
        let img = image(
            dir.path(),
            fat,
            kib,
            &[
                ("/EFI/BOOT/BOOTX64.EFI", &big),
                ("/EFI/BOOT/other.txt", b"hello"),
                ("/README", b""),
            ],
        );
        let mut dev = Cursor::new(img);
        let fs = Fs::open(&mut dev).unwrap();
        assert_eq!(fs.vol.kind, kind, "-F {fat}");
        assert_eq!(fs.vol.written_fats.len(), 2);
        let boot = fs
            .find_dir(&mut dev, &[name("EFI"), name("BOOT")])
            .unwrap()
            .expect("\\EFI\\BOOT");
        let f = fs.find(&mut dev, boot, &name("BOOTX64.EFI")).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(fs.read_file(&mut dev, &f[0], u64::MAX).unwrap(), big);
        assert_eq!(fs.read_file(&mut dev, &f[0], 10).unwrap(), big[..10]);
        // mtools writes a long name for the lower-case file.
        let other = fs.find(&mut dev, boot, &name("OTHER.TXT")).unwrap();
        assert_eq!(fs.read_file(&mut dev, &other[0], 99).unwrap(), b"hello");
        assert!(fs
            .find_dir(&mut dev, &[name("EFI"), name("NOPE")])
            .unwrap()
            .is_none());
        // The tree reaches exactly the allocated clusters (a fresh image has no lost ones).
        let used = fs.reachable(&mut dev).unwrap();
        for c in 2..=fs.vol.clusters + 1 {
            let allocated = fs.table.link(&fs.vol, c) != Link::Free;
            assert_eq!(used[c as usize], allocated, "cluster {c} on FAT{fat}");
        }
        let n_used = used.iter().filter(|u| **u).count() as u32;
        assert_eq!(fs.table.free_count(&fs.vol), fs.vol.clusters - n_used);
    }
}

#[test]
fn fat_entries_round_trip_and_mark_their_sectors() {
    let dir = tempfile::tempdir().unwrap();
    for (_, fat, kib) in KINDS {
        let mut dev = Cursor::new(image(dir.path(), fat, kib, &[]));
        let mut fs = Fs::open(&mut dev).unwrap();
        let vol = fs.vol.clone();
        // Entries on both sides of the first sector boundary (FAT12 entry 341 straddles it).
        for n in [2u32, 3, 340, 341, 342, 127, 128, 255, 256] {
            fs.table.set(n, Link::Next(n + 1));
            assert_eq!(fs.table.link(&vol, n), Link::Next(n + 1), "FAT{fat} {n}");
        }
        fs.table.set(341, Link::End);
        assert_eq!(fs.table.link(&vol, 341), Link::End);
        assert_eq!(
            fs.table.link(&vol, 340),
            Link::Next(341),
            "FAT{fat}: neighbour kept"
        );
        assert_eq!(
            fs.table.link(&vol, 342),
            Link::Next(343),
            "FAT{fat}: neighbour kept"
        );
        fs.table.set(341, Link::Free);
        assert_eq!(fs.table.link(&vol, 341), Link::Free);
        fs.table.flush(&mut dev, &vol).unwrap();
        let back = Fs::open(&mut dev).unwrap();
        assert_eq!(back.table.link(&vol, 340), Link::Next(341));
        // Both copies are written.
        let img = dev.into_inner();
        let (a, b) = (vol.written_fats[0] as usize, vol.written_fats[1] as usize);
        let len = vol.fat_len as usize;
        assert_eq!(img[a..a + len], img[b..b + len], "FAT{fat} copies differ");
    }
}

#[test]
fn damaged_volumes_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(
        dir.path(),
        "12",
        2048,
        &[("/EFI/BOOT/BOOTX64.EFI", &[7u8; 3000])],
    );
    assert!(matches!(
        Fs::open(&mut Cursor::new(vec![0u8; 100])),
        Err(FatError::NotFat(_))
    ));
    assert!(matches!(
        Fs::open(&mut Cursor::new(vec![0u8; 4096])),
        Err(FatError::NotFat(_))
    ));
    let mut bad = img.clone();
    bad[13] = 3; // 3 sectors per cluster
    assert!(matches!(
        Fs::open(&mut Cursor::new(bad)),
        Err(FatError::NotFat(_))
    ));
    // Every single byte of the first 8 KiB (boot sector, FATs, root) set to 0xFF or 0:
    // errors or answers, never a panic.
    for at in 0..8192 {
        for v in [0u8, 0xFF] {
            let mut m = img.clone();
            m[at] = v;
            let mut dev = Cursor::new(m);
            if let Ok(fs) = Fs::open(&mut dev) {
                let _ = fs.reachable(&mut dev);
                if let Ok(Some(d)) = fs.find_dir(&mut dev, &[name("EFI"), name("BOOT")]) {
                    if let Ok(f) = fs.find(&mut dev, d, &name("BOOTX64.EFI")) {
                        for e in f {
                            let _ = fs.read_file(&mut dev, &e, 1 << 20);
                        }
                    }
                }
            }
        }
    }
    // A loop in a chain and a cross-link are refused.
    let mut dev = Cursor::new(img);
    let mut fs = Fs::open(&mut dev).unwrap();
    let boot = fs
        .find_dir(&mut dev, &[name("EFI"), name("BOOT")])
        .unwrap()
        .unwrap();
    let f = fs.find(&mut dev, boot, &name("BOOTX64.EFI")).unwrap()[0];
    let first = f.first_cluster();
    let vol = fs.vol.clone();
    fs.table.set(first + 1, Link::Next(first));
    assert!(matches!(
        fs.table.chain(&vol, first),
        Err(FatError::Corrupt(_))
    ));
    assert!(matches!(fs.reachable(&mut dev), Err(FatError::Corrupt(_))));
}

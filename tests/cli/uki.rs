//! `stele uki build` and `stele disk create --uki [--bios] [--bmap]` without a VM: the
//! bytes are reproducible, objdump, sbverify, sgdisk, fsck.vfat, mtools and bmaptool
//! agree with what stele wrote, and bad input (also to `stele qemu run`) is one line with
//! the right exit code.

use std::path::{Path, PathBuf};

use crate::fixture::{Disk, Fixture, GPTMBR, UKI_STUB};
use crate::util::*;

/// An x86 "bzImage" as far as `stele uki build` looks (the `HdrS` boot header), 200 KiB.
pub fn fake_kernel(path: &Path) {
    let mut k: Vec<u8> = (0..200 * 1024u32).map(|i| (i % 251) as u8).collect();
    k[0..2].copy_from_slice(b"MZ");
    k[0x202..0x206].copy_from_slice(b"HdrS");
    std::fs::write(path, k).expect("write the fake kernel");
}

/// A Secure Boot signing key and its self-signed certificate, as `openssl req -x509`
/// makes them: (key, cert).
pub fn secure_boot_key(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(format!("{name}.key"));
    let cert = dir.join(format!("{name}.crt"));
    let out = host(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "3650",
            "-subj",
            &format!("/CN=stele test {name}/"),
            "-keyout",
            key.to_str().expect("utf-8 path"),
            "-out",
            cert.to_str().expect("utf-8 path"),
        ],
    );
    assert_eq!(out.code, 0, "openssl req: {out:?}");
    (key, cert)
}

const EPOCH: &str = "1700000000";

pub fn uki_env(args: &[&str]) -> Out {
    stele_env(args, &[("SOURCE_DATE_EPOCH", EPOCH)])
}

/// Inputs for a UKI in `fx`: (kernel, initrd).
pub fn inputs(fx: &Fixture) -> (String, String) {
    fake_kernel(&fx.path("vmlinuz"));
    std::fs::write(fx.path("initrd.cpio"), vec![0x5a; 300_000]).unwrap();
    (fx.p("vmlinuz"), fx.p("initrd.cpio"))
}

pub fn build_uki(fx: &Fixture, out: &str, cmdline: &str, extra: &[&str]) -> Vec<u8> {
    let uki = fx
        .uki(&fx.p("vmlinuz"), &fx.p("initrd.cpio"))
        .cmdline(cmdline)
        .args(extra)
        .epoch(EPOCH)
        .build(out);
    std::fs::read(uki).unwrap()
}

/// `objdump -h`: (name, VMA, size) of every section, in file order.
fn sections(path: &str) -> Vec<(String, u64, u64)> {
    let out = host("objdump", &["-h", path]);
    assert_eq!(out.code, 0, "{out:?}");
    out.stdout
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 7 && f[0].parse::<u32>().is_ok()).then(|| {
                let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
                (f[1].to_string(), hex(f[3]), hex(f[2]))
            })
        })
        .collect()
}

#[test]
fn uki_is_reproducible_and_laid_out_like_ukify() {
    let fx = Fixture::new();
    inputs(&fx);
    let one = build_uki(&fx, "one.efi", "console=ttyS0 panic=-1", &[]);
    let two = build_uki(&fx, "two.efi", "console=ttyS0 panic=-1", &[]);
    assert!(one == two, "two builds of the same inputs differ");
    let other = build_uki(&fx, "other.efi", "console=ttyS0 panic=5", &[]);
    assert!(one != other, "the command line is not in the UKI");

    let s = sections(&fx.p("one.efi"));
    let names: Vec<&str> = s.iter().map(|x| x.0.as_str()).collect();
    assert_eq!(
        names[names.len() - 4..],
        [".osrel", ".cmdline", ".initrd", ".linux"],
        "{s:?}"
    );
    let stub = sections(UKI_STUB);
    let stub_end = stub.iter().map(|(_, v, l)| v + l).max().unwrap();
    let mut prev_end = stub_end;
    for (name, vma, len) in &s[s.len() - 4..] {
        assert_eq!(vma % 4096, 0, "{name} at {vma:#x} is not page aligned");
        assert!(
            *vma >= prev_end,
            "{name} at {vma:#x} overlaps what is before it"
        );
        prev_end = vma + len;
    }
    assert_eq!(
        s[s.len() - 1].2,
        200 * 1024,
        ".linux is the kernel, unpadded"
    );
    assert_eq!(s[s.len() - 2].2, 300_000, ".initrd is the initrd, unpadded");
    // The embedded command line and the fixed timestamp, read by objdump.
    let dump = host("objdump", &["-s", "-j", ".cmdline", &fx.p("one.efi")]);
    assert!(dump.stdout.contains("console=ttyS0 pa"), "{}", dump.stdout);
    let p = std::process::Command::new("objdump")
        .args(["-p", &fx.p("one.efi")])
        .env("TZ", "UTC")
        .output()
        .unwrap();
    let p = String::from_utf8_lossy(&p.stdout);
    assert!(
        p.contains("Tue Nov 14 22:13:20 2023"),
        "timestamp is not SOURCE_DATE_EPOCH:\n{p}"
    );
}

#[test]
fn signed_uki_verifies_with_sbverify() {
    let fx = Fixture::new();
    inputs(&fx);
    let (key, cert) = secure_boot_key(fx.dir(), "db");
    let (_, other) = secure_boot_key(fx.dir(), "other");
    let unsigned = build_uki(&fx, "u.efi", "panic=-1", &[]);
    let signed = build_uki(
        &fx,
        "s.efi",
        "panic=-1",
        &[
            "--sign-key",
            key.to_str().unwrap(),
            "--sign-cert",
            cert.to_str().unwrap(),
        ],
    );
    assert!(signed.len() > unsigned.len());
    let verify = |uki: &str, cert: &Path| {
        host("sbverify", &["--cert", cert.to_str().unwrap(), &fx.p(uki)]).code
    };
    assert_eq!(verify("s.efi", &cert), 0, "the signed UKI does not verify");
    assert_ne!(
        verify("s.efi", &other),
        0,
        "the signed UKI verifies with another cert"
    );
    assert_ne!(verify("u.efi", &cert), 0, "the unsigned UKI verifies");
}

#[test]
fn uki_refuses_bad_input_with_one_line() {
    let fx = Fixture::new();
    let (k, i) = inputs(&fx);
    let out = fx.p("x.efi");
    let run = |extra: &[&str]| {
        let mut a = vec!["uki", "build", "--out", &out];
        a.extend_from_slice(extra);
        uki_env(&a)
    };
    fails(
        &run(&["--kernel", "/nonexistent/vmlinuz", "--initrd", &i]),
        3,
        &["/nonexistent/vmlinuz"],
    );
    fails(
        &run(&["--kernel", &k, "--initrd", "/nonexistent/initrd"]),
        3,
        &["/nonexistent/initrd"],
    );
    let osrel = [
        "--kernel",
        &k,
        "--initrd",
        &i,
        "--os-release",
        "/nonexistent/os-release",
    ];
    fails(&run(&osrel), 3, &["/nonexistent/os-release"]);
    let stub = [
        "--kernel",
        &k,
        "--initrd",
        &i,
        "--stub",
        "/nonexistent/linuxx64.efi.stub",
    ];
    fails(&run(&stub), 3, &["systemd-boot-efi", "cargo xtask setup"]);
    fails(
        &run(&["--kernel", &i, "--initrd", &i]),
        2,
        &["not an x86 Linux kernel"],
    );
    fails(
        &run(&["--kernel", &k, "--initrd", &i, "--cmdline", " "]),
        2,
        &["--cmdline", "empty"],
    );
    fails(
        &run(&["--kernel", &k, "--initrd", &i, "--cmdline", "caf\u{e9}"]),
        2,
        &["ascii"],
    );
    let key_only = ["--kernel", &k, "--initrd", &i, "--sign-key", &k];
    assert_eq!(run(&key_only).code, 2, "--sign-key without --sign-cert");
    let no_key = [
        "--kernel",
        &k,
        "--initrd",
        &i,
        "--sign-key",
        "/nonexistent/db.key",
        "--sign-cert",
        &k,
    ];
    fails(&run(&no_key), 3, &["/nonexistent/db.key"]);
    assert!(
        !Path::new(&out).exists(),
        "a refused build wrote its output"
    );
    ok(run(&["--kernel", &k, "--initrd", &i]));
    fails(
        &run(&["--kernel", &k, "--initrd", &i]),
        3,
        &["already exists", "--force"],
    );
    ok(run(&[
        "--kernel",
        &k,
        "--initrd",
        &i,
        "--cmdline",
        "panic=1",
        "--force",
    ]));
    let names: Vec<String> = std::fs::read_dir(fx.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "temporary files left: {names:?}");
}

/// `stele disk create` with an ESP: returns the disk path.
pub fn esp_disk(fx: &Fixture, slot: &str, uki: &str, out: &str, extra: &[&str]) -> String {
    esp_less_disk(fx, slot, out)
        .args(&["--uki", uki])
        .args(extra)
        .build()
}

/// `stele disk create` of `slot` into `out` as these tests make it: 8 MiB slots, no
/// data partition, SOURCE_DATE_EPOCH set.
pub fn esp_less_disk<'a>(fx: &'a Fixture, slot: &str, out: &str) -> Disk<'a> {
    fx.disk(slot)
        .out(out)
        .slot_size("8M")
        .no_data()
        .epoch(EPOCH)
}

/// The partition `n` (1-based) of `disk` as its own file, and sgdisk's `-i` text for it:
/// found by sgdisk, not by stele's GPT reader (an independent cross-check).
fn sgdisk_partition(disk: &str, n: u32, dest: &Path) -> String {
    let info = host("sgdisk", &["-i", &n.to_string(), disk]).stdout;
    let first = |key: &str| -> u64 {
        let l = info
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("{key}: {info}"));
        l[key.len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (start, end) = (first("First sector:"), first("Last sector:"));
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(disk).unwrap();
    f.seek(SeekFrom::Start(start * 512)).unwrap();
    let mut bytes = vec![0u8; usize::try_from((end + 1 - start) * 512).unwrap()];
    f.read_exact(&mut bytes).unwrap();
    std::fs::write(dest, &bytes).unwrap();
    info
}

/// A file copied out of a FAT image with mtools.
pub fn fat_file(image: &Path, path: &str) -> Vec<u8> {
    let out = image.with_extension(path.replace('/', "_"));
    let r = host(
        "mcopy",
        &[
            "-n",
            "-i",
            image.to_str().unwrap(),
            &format!("::{path}"),
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code, 0, "mcopy {path}: {r:?}");
    std::fs::read(out).unwrap()
}

#[test]
fn disk_with_esp_and_bios_is_clean_reproducible_and_complete() {
    let fx = Fixture::new();
    let (k, _) = inputs(&fx);
    let (key, _) = fx.keygen("release");
    let slot = fx.build("slot.img", &key);
    let uki = build_uki(&fx, "uki.efi", "console=ttyS0 panic=-1", &[]);
    let bios = ["--bios", "--bmap"];
    let one = esp_disk(&fx, &slot, &fx.p("uki.efi"), "one.img", &bios);
    let two = esp_disk(&fx, &slot, &fx.p("uki.efi"), "two.img", &bios);
    assert!(
        std::fs::read(&one).unwrap() == std::fs::read(&two).unwrap(),
        "disk bytes differ"
    );
    let map = |d: &str| std::fs::read(format!("{d}.bmap")).unwrap();
    assert_eq!(map(&one), map(&two), "bmap differs");

    let v = host("sgdisk", &["-v", &one]);
    assert!(
        v.code == 0 && v.stdout.contains("No problems found"),
        "sgdisk -v: {v:?}"
    );
    let esp = fx.path("esp.part");
    let info = sgdisk_partition(&one, 1, &esp);
    assert!(
        info.contains("C12A7328-F81F-11D2-BA4B-00A0C93EC93B (EFI system partition)"),
        "{info}"
    );
    assert!(info.contains("Partition name: 'stele-esp'"), "{info}");
    assert!(
        info.contains("Attribute flags: 0000000000000004"),
        "legacy BIOS bootable: {info}"
    );
    let fsck = host("fsck.vfat", &["-n", esp.to_str().unwrap()]);
    assert_eq!(fsck.code, 0, "fsck.vfat -n: {fsck:?}");
    assert!(!fsck.stdout.contains("differences"), "{fsck:?}");
    let bs = std::fs::read(&esp).unwrap();
    assert_eq!(&bs[82..90], b"FAT32   ");
    assert_eq!(&bs[71..82], b"STELE-ESP  ");
    // The firmware's file is the UKI; SYSLINUX has the UKI's own kernel and command line.
    assert!(fat_file(&esp, "/EFI/BOOT/BOOTX64.EFI") == uki);
    assert!(fat_file(&esp, "/SYSLINUX/VMLINUZ") == std::fs::read(&k).unwrap());
    let cfg = String::from_utf8(fat_file(&esp, "/SYSLINUX/SYSLINUX.CFG")).unwrap();
    assert!(
        cfg.lines()
            .any(|l| l.trim() == "APPEND console=ttyS0 panic=-1"),
        "{cfg}"
    );
    assert!(fat_file(&esp, "/SYSLINUX/LDLINUX.SYS").len() > 1000);
    // gptmbr.bin's boot code in LBA 0, the protective MBR entry after it intact.
    let disk = std::fs::read(&one).unwrap();
    let gptmbr = std::fs::read(GPTMBR).expect("syslinux-common installed");
    assert_eq!(&disk[..440], &gptmbr[..440]);
    assert_eq!((disk[450], &disk[510..512]), (0xEE, &[0x55, 0xAA][..]));

    // Without --bios: no boot code, no attribute, no SYSLINUX; still clean.
    let plain = esp_disk(&fx, &slot, &fx.p("uki.efi"), "plain.img", &[]);
    let info = sgdisk_partition(&plain, 1, &fx.path("plain.part"));
    assert!(info.contains("Attribute flags: 0000000000000000"), "{info}");
    let fsck = host("fsck.vfat", &["-n", fx.p("plain.part").as_str()]);
    assert_eq!(fsck.code, 0, "fsck.vfat -n: {fsck:?}");
    assert!(std::fs::read(&plain).unwrap()[..440]
        .iter()
        .all(|&b| b == 0));
    let r = host("mdir", &["-i", &fx.p("plain.part"), "::/SYSLINUX"]);
    assert_ne!(r.code, 0, "SYSLINUX on a disk made without --bios");
    // Another UKI, another volume id (it comes from the disk seed).
    build_uki(&fx, "uki2.efi", "panic=3", &[]);
    let other = esp_disk(&fx, &slot, &fx.p("uki2.efi"), "other.img", &[]);
    sgdisk_partition(&other, 1, &fx.path("other.part"));
    let id = |p: &str| std::fs::read(fx.path(p)).unwrap()[67..71].to_vec();
    assert_ne!(id("plain.part"), id("other.part"));
}

/// A disk with slots of real size (mtools 4.0.32 cannot fill a FAT inside an image file
/// above ~256 MiB in place): the ESP is complete and clean, and the disk stays sparse.
#[test]
fn a_disk_with_gigabyte_slots_gets_a_complete_esp() {
    let fx = Fixture::new();
    inputs(&fx);
    let (key, _) = fx.keygen("release");
    let slot = fx.build("slot.img", &key);
    let uki = build_uki(&fx, "uki.efi", "panic=-1", &[]);
    let disk = esp_less_disk(&fx, &slot, "big.img")
        .slot_size("1G")
        .args(&["--uki", &fx.p("uki.efi")])
        .build();
    let esp = fx.path("esp.part");
    sgdisk_partition(&disk, 1, &esp);
    let fsck = host("fsck.vfat", &["-n", esp.to_str().unwrap()]);
    assert_eq!(fsck.code, 0, "fsck.vfat -n: {fsck:?}");
    assert!(fat_file(&esp, "/EFI/BOOT/BOOTX64.EFI") == uki);
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(&disk).unwrap();
    assert!(m.len() > 2 << 30, "{}", m.len());
    assert!(
        m.blocks() * 512 < 64 << 20,
        "not sparse: {} bytes allocated",
        m.blocks() * 512
    );
}

#[test]
fn bmaptool_copy_flashes_only_used_blocks_and_restores_the_disk() {
    let fx = Fixture::new();
    inputs(&fx);
    let (key, _) = fx.keygen("release");
    let slot = fx.build("slot.img", &key);
    build_uki(&fx, "uki.efi", "panic=-1", &[]);
    let disk = esp_disk(&fx, &slot, &fx.p("uki.efi"), "disk.img", &["--bmap"]);
    let xml = std::fs::read_to_string(format!("{disk}.bmap")).unwrap();
    let field = |name: &str| -> u64 {
        let open = format!("<{name}>");
        let at = xml.rfind(&open).unwrap() + open.len();
        xml[at..at + xml[at..].find('<').unwrap()]
            .trim()
            .parse()
            .unwrap()
    };
    assert!(
        field("MappedBlocksCount") * 2 < field("BlocksCount"),
        "{xml}"
    );
    let copy = fx.p("flashed.img");
    let r = host("bmaptool", &["copy", &disk, &copy]);
    assert_eq!(r.code, 0, "bmaptool copy: {r:?}");
    assert!(std::fs::read(&copy).unwrap() == std::fs::read(&disk).unwrap());
}

#[test]
fn disk_refuses_a_bad_uki_or_esp_size() {
    let fx = Fixture::new();
    inputs(&fx);
    let (key, _) = fx.keygen("release");
    let slot = fx.build("slot.img", &key);
    let uki = fx.p("uki.efi");
    build_uki(&fx, "uki.efi", "panic=-1", &[]);
    let out = fx.p("disk.img");
    let run = |extra: &[&str]| esp_less_disk(&fx, &slot, "disk.img").args(extra).run();
    fails(
        &run(&["--uki", "/nonexistent/uki.efi"]),
        3,
        &["/nonexistent/uki.efi"],
    );
    fails(&run(&["--uki", &slot]), 2, &["--uki", "not a PE"]);
    let stub = UKI_STUB;
    fails(&run(&["--uki", stub]), 2, &["no .cmdline section"]);
    fails(
        &run(&["--uki", &uki, "--esp-size", "16M"]),
        2,
        &["--esp-size", "at least 33 MiB"],
    );
    assert_eq!(run(&["--bios"]).code, 2, "--bios without --uki");
    assert!(!Path::new(&out).exists());
    ok(run(&["--uki", &uki, "--esp-size", "40M"]));
    let info = host("sgdisk", &["-i", "1", &out]).stdout;
    assert!(
        info.contains("Partition size: 81920 sectors (40.0 MiB)"),
        "{info}"
    );
}

#[test]
fn qemu_run_refuses_missing_files_and_impossible_combinations() {
    let fx = Fixture::new();
    let (k, i) = inputs(&fx);
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut a = vec!["qemu", "run", "--timeout", "5"];
        a.extend_from_slice(args);
        stele_env(&a, env)
    };
    let disk = ["--firmware", "uefi", "--disk", "/nonexistent/disk.img"];
    fails(&run(&disk, &[]), 3, &["/nonexistent/disk.img"]);
    fails(
        &run(&["--kernel", "/nonexistent/vmlinuz", "--initrd", &i], &[]),
        3,
        &["/nonexistent/vmlinuz"],
    );
    fails(
        &run(&["--kernel", &k, "--initrd", "/nonexistent/initrd"], &[]),
        3,
        &["/nonexistent/initrd"],
    );
    let sb = ["--secure-boot", "/nonexistent/db.crt"];
    fails(&run(&sb, &[]), 3, &["/nonexistent/db.crt"]);
    let (_, cert) = secure_boot_key(fx.dir(), "db");
    let tool = [("STELE_VIRT_FW_VARS", "/nonexistent/virt-fw-vars")];
    fails(
        &run(&["--secure-boot", cert.to_str().unwrap()], &tool),
        3,
        &["virt-fw-vars", "cargo xtask setup"],
    );
    fails(&run(&[], &[]), 2, &["--kernel and --initrd"]);
    fails(
        &run(&["--firmware", "uefi", "--append", "init=/bin/sh"], &[]),
        2,
        &["--append needs --kernel"],
    );
    fails(
        &run(&["--firmware", "bios", "--kernel", &k], &[]),
        2,
        &["--bios boots the disk"],
    );
    assert_eq!(run(&["--bios", "--secure-boot", "x.crt"], &[]).code, 2);
}

/// Issue 20 item 5, the table part: a disk from `stele disk create` copied onto a disk
/// four times its size, grown by `stele_verifier::gpt_grow` (as PID 1 will): `sgdisk -v`
/// finds no problem (backup header and array at the new end), sgdisk sees the data
/// partition end at the disk's last usable sector, and the ext4 inside is untouched and
/// clean (`e2fsck -fn`). Growing again does nothing.
#[test]
fn a_grown_disk_passes_sgdisk_and_keeps_its_data_partition() {
    use stele_verifier::gpt_grow;
    let fx = Fixture::new();
    let (k, _) = fx.keygen("a");
    let root = fx.tree("root", true).build();
    let img = fx.image(&root, &k).version("1.0").build("a.img");
    let disk = fx.disk(&img).slot_size("8M").build();
    let data_before = fx.path("data-before");
    sgdisk_partition(&disk, 4, &data_before);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk)
        .unwrap();
    let len = f.metadata().unwrap().len() * 4;
    f.set_len(len).unwrap();
    let plan = gpt_grow::plan(&mut f, len, "stele-data").unwrap().unwrap();
    gpt_grow::apply(&mut f, &plan, &mut |f| f.sync_data()).unwrap();
    assert_eq!(gpt_grow::plan(&mut f, len, "stele-data").unwrap(), None);
    drop(f);
    let v = host("sgdisk", &["-v", &disk]);
    assert!(
        v.code == 0 && v.stdout.contains("No problems found"),
        "{v:?}"
    );
    let data_after = fx.path("data-after");
    let info = sgdisk_partition(&disk, 4, &data_after);
    let last = format!("Last sector: {} ", len / 512 - 34);
    assert!(info.contains(&last), "{last}: {info}");
    let (before, after) = (
        std::fs::read(&data_before).unwrap(),
        std::fs::read(&data_after).unwrap(),
    );
    assert!(after.len() > 3 * before.len() && after[..before.len()] == before[..]);
    let fsck = host("e2fsck", &["-fn", &data_after.display().to_string()]);
    assert_eq!(fsck.code, 0, "{fsck:?}");
}

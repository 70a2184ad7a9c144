//! `stele update stage1 --disk`: the disk's ESP then holds the new UKI (mtools reads it,
//! fsck.vfat finds the FAT clean), every other byte of the disk is unchanged, and refusals
//! (not a UKI, too large, unsigned over signed, no ESP) are one line that changes nothing.

use std::path::Path;

use crate::cli::uki::{
    build_uki, esp_disk, esp_less_disk, fat_file, inputs, secure_boot_key, uki_env,
};
use crate::fixture::{partition, partition_bytes, Fixture};
use crate::util::*;

const ESP: &str = "stele-esp";
const ESP_FILE: &str = "/EFI/BOOT/BOOTX64.EFI";

/// The disk's ESP: its BOOTX64.EFI (mtools), `fsck.vfat -n`'s exit code, and the disk's
/// bytes outside the ESP.
fn look(fx: &Fixture, disk: &str) -> (Vec<u8>, i32, Vec<u8>) {
    let esp = fx.path("esp.part");
    std::fs::write(&esp, partition_bytes(disk, ESP)).unwrap();
    let fsck = host("fsck.vfat", &["-n", esp.to_str().unwrap()]);
    let uki = fat_file(&esp, ESP_FILE);
    let (off, len) = partition(disk, ESP);
    let mut rest = std::fs::read(disk).unwrap();
    rest.drain(usize::try_from(off).unwrap()..usize::try_from(off + len).unwrap());
    (uki, fsck.code, rest)
}

/// Free bytes in the disk's ESP, from `fsck.vfat -n` ("N files, used/total clusters") and
/// the cluster size in its boot sector.
fn esp_free(fx: &Fixture, disk: &str) -> usize {
    let esp = fx.path("free.part");
    let bytes = partition_bytes(disk, ESP);
    std::fs::write(&esp, &bytes).unwrap();
    let out = host("fsck.vfat", &["-n", esp.to_str().unwrap()]).stdout;
    let counts = out
        .lines()
        .last()
        .and_then(|l| l.rsplit(' ').nth(1))
        .unwrap_or_else(|| panic!("{out}"));
    let (used, total) = counts.split_once('/').unwrap();
    let (used, total): (usize, usize) = (used.parse().unwrap(), total.parse().unwrap());
    (total - used) * usize::from(bytes[13]) * 512
}

fn stage1(disk: &str, uki: &str) -> Out {
    uki_env(&["update", "stage1", "--disk", disk, uki])
}

#[test]
fn stage1_on_a_disk_replaces_the_uki_and_nothing_else() {
    let fx = Fixture::new();
    inputs(&fx);
    let (key, _) = fx.keygen("release");
    let slot = fx.build("slot.img", &key);
    let old = build_uki(&fx, "old.efi", "console=ttyS0 panic=-1", &[]);
    let new = build_uki(&fx, "new.efi", "console=ttyS0 panic=-1 stele.stage1=2", &[]);
    let disk = esp_disk(
        &fx,
        &slot,
        &fx.p("old.efi"),
        "disk.img",
        &["--data-size", "8M"],
    );
    let (uki, fsck, rest) = look(&fx, &disk);
    assert!(uki == old && fsck == 0);

    let line = ok(stage1(&disk, &fx.p("new.efi")));
    assert!(
        line.starts_with(&format!(
            "stele: stage 1 replaced: \\EFI\\BOOT\\BOOTX64.EFI on {disk} (stele-esp) is now {} ({} bytes, unsigned, sha256 ",
            fx.p("new.efi"),
            new.len()
        )),
        "{line}"
    );
    let (uki, fsck, after) = look(&fx, &disk);
    assert!(uki == new, "the ESP does not hold the new UKI");
    assert_eq!(fsck, 0, "fsck.vfat -n is not clean");
    assert!(after == rest, "bytes outside the ESP changed");

    // From stdin, back to the old one; the progress lines name each step.
    let out = stele_stdin(&["update", "stage1", "--disk", &disk, "-"], &old);
    assert_eq!(out.code, 0, "{out:?}");
    for step in [
        "stele: stage1: new UKI of ",
        "stele: stage1: new UKI written and flushed",
        "stele: stage1: switched",
        "stele: stage1: old UKI freed",
    ] {
        assert!(out.stderr.contains(step), "{step}: {}", out.stderr);
    }
    assert!(out.stdout.contains(" is now stdin "), "{}", out.stdout);
    let (uki, fsck, after) = look(&fx, &disk);
    assert!(uki == old && fsck == 0 && after == rest);
}

#[test]
fn stage1_refusals_are_one_line_and_change_nothing() {
    let fx = Fixture::new();
    inputs(&fx);
    let (key, _) = fx.keygen("release");
    let slot = fx.build("slot.img", &key);
    build_uki(&fx, "old.efi", "panic=-1", &[]);
    let disk = esp_disk(
        &fx,
        &slot,
        &fx.p("old.efi"),
        "disk.img",
        &["--esp-size", "33M"],
    );
    let before = std::fs::read(&disk).unwrap();
    let unchanged = |what: &str| {
        assert!(
            std::fs::read(&disk).unwrap() == before,
            "{what} changed the disk"
        )
    };

    fails(
        &stage1(&disk, &slot),
        2,
        &[&slot, "not a stage-1 UKI", "not a PE"],
    );
    unchanged("a slot image");
    fails(&stage1(&disk, &fx.p("")), 2, &["not a regular file"]);
    fails(&stage1(&disk, &fx.p("missing.efi")), 3, &["missing.efi"]);
    // A UKI 64 KiB larger than the room beside the old one (it would fit alone), and one
    // larger than the whole ESP.
    let old_len = std::fs::read(fx.path("old.efi")).unwrap().len();
    let big = esp_free(&fx, &disk) + (64 << 10) - (old_len - 300_000);
    std::fs::write(fx.path("initrd.cpio"), vec![0x33; big]).unwrap();
    build_uki(&fx, "big.efi", "panic=-1", &[]);
    fails(
        &stage1(&disk, &fx.p("big.efi")),
        2,
        &[
            "big.efi",
            "bytes free beside the current stage 1",
            "--esp-size",
        ],
    );
    std::fs::write(fx.path("initrd.cpio"), vec![0x34; 34 << 20]).unwrap();
    build_uki(&fx, "huge.efi", "panic=-1", &[]);
    fails(
        &stage1(&disk, &fx.p("huge.efi")),
        2,
        &["huge.efi", "larger than the whole ESP"],
    );
    unchanged("a UKI too large");

    // Signed stays signed: an unsigned UKI over a signed stage 1 is refused.
    std::fs::write(fx.path("initrd.cpio"), vec![0x5a; 300_000]).unwrap();
    let (k, c) = secure_boot_key(fx.dir(), "db");
    let sign = [
        "--sign-key",
        k.to_str().unwrap(),
        "--sign-cert",
        c.to_str().unwrap(),
    ];
    build_uki(&fx, "signed.efi", "panic=-1", &sign);
    let sdisk = esp_disk(&fx, &slot, &fx.p("signed.efi"), "signed.img", &[]);
    let sbefore = std::fs::read(&sdisk).unwrap();
    fails(
        &stage1(&sdisk, &fx.p("old.efi")),
        2,
        &["old.efi", "signed for Secure Boot", "--sign-key"],
    );
    assert!(std::fs::read(&sdisk).unwrap() == sbefore);
    build_uki(&fx, "signed2.efi", "panic=5", &sign);
    assert!(ok(stage1(&sdisk, &fx.p("signed2.efi"))).contains(", signed, sha256 "));

    // A disk without an ESP; the device mode without /run/stele.
    let plain = esp_less_disk(&fx, &slot, "plain.img").build();
    fails(
        &stage1(&plain, &fx.p("old.efi")),
        2,
        &["no EFI system partition (stele-esp)", "`--uki`"],
    );
    if !Path::new("/run/stele/devices").exists() {
        fails(
            &uki_env(&["update", "stage1", &fx.p("old.efi")]),
            3,
            &["/run/stele"],
        );
    }
}

//! `stele update stage1` inside a guest booted by OVMF: the service pipes a new UKI (same
//! kernel and initramfs, another embedded command line) from a second virtio disk into the
//! device's `stele update stage1 -` and reboots; the firmware then runs the new stage 1, as
//! its command line on the console shows. Needs `cargo xtask test` (kernel, modules, static
//! stele-init; OVMF from `cargo xtask setup`).

use std::path::Path;

use crate::uefi_vm::{
    artifacts, busybox_root, disk_with, expect, run, start_disks, uefi, var, CMDLINE,
};

/// The new stage 1's command line.
const NEW_CMDLINE: &str = "console=ttyS0 panic=-1 stele.stage1=2";

/// The service: under the old stage 1 it installs the new one and reboots, under the new
/// one it says so and ends (the VM powers off).
fn service(len: usize) -> String {
    format!(
        r#"#!/bin/sh
if grep -q stele.stage1=2 /proc/cmdline; then
  echo "svc: running under the new stage 1"
  exit 0
fi
echo "svc: old stage 1, replacing it"
head -c {len} /dev/vdb | /run/stele/bin/stele update stage1 -
echo "svc: stage1 exit $?"
kill -TERM 1
sleep 100
"#
    )
}

#[test]
fn stage1_update_in_the_guest_boots_the_new_uki() {
    let a = artifacts();
    let dir = a.dir.join("stage1-update");
    std::fs::create_dir_all(&dir).unwrap();
    let p = |n: &str| dir.join(n).display().to_string();
    run(&[
        "uki",
        "build",
        "--kernel",
        &var("STELE_KERNEL"),
        "--initrd",
        &a.dir.join("initrd.cpio").display().to_string(),
        "--cmdline",
        NEW_CMDLINE,
        "--out",
        &p("new.efi"),
    ]);
    let new = std::fs::read(p("new.efi")).unwrap();
    // The bundle disk: the UKI, padded to whole sectors (the service reads its length).
    let mut padded = new.clone();
    padded.resize(new.len().next_multiple_of(512), 0);
    std::fs::write(p("new.disk"), &padded).unwrap();

    let root = dir.join("rootfs");
    busybox_root(
        &root,
        &["sh", "echo", "cat", "grep", "head", "kill", "sleep"],
        "[[service]]\nname = \"svc\"\nexec = [\"/bin/svc\"]\nrestart = \"never\"\non_exit = \"poweroff\"\n",
    );
    let svc = root.join("bin/svc");
    std::fs::write(&svc, service(new.len())).unwrap();
    std::fs::set_permissions(&svc, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    run(&[
        "image",
        "build",
        "--rootfs",
        &p("rootfs"),
        "--key",
        &a.dir.join("release.key").display().to_string(),
        "--name",
        "stage1",
        "--version",
        "1.0.0",
        "--rollback-index",
        "1",
        "--out",
        &p("slot.img"),
    ]);
    let (dir, disk) = disk_with("stage1-update", Path::new(&p("slot.img")), &a.uki, &[]);

    let (fw, _vars) = uefi(None, None);
    let mut vm = start_disks(fw, &[&disk, Path::new(&p("new.disk"))], &dir, 2);
    let first = expect(&mut vm, "Command line: ");
    assert!(
        first.ends_with(&format!("Command line: {CMDLINE}")),
        "{first}"
    );
    expect(&mut vm, "svc: old stage 1, replacing it");
    let done = expect(&mut vm, "stele: stage 1 replaced: ");
    assert!(
        done.contains(&format!("is now stdin ({} bytes, unsigned", new.len())),
        "{done}"
    );
    expect(&mut vm, "svc: stage1 exit 0");
    expect(&mut vm, "stele: shutdown: reboot");
    let second = expect(&mut vm, "Command line: ");
    assert!(
        second.ends_with(&format!("Command line: {NEW_CMDLINE}")),
        "the firmware did not run the new stage 1: {second}"
    );
    expect(&mut vm, "stele: ready");
    expect(&mut vm, "svc: running under the new stage 1");
    expect(&mut vm, "stele: shutdown: poweroff");
    vm.wait_exit(crate::uefi_vm::BOOT)
        .expect("the VM powers off");
    assert_eq!(vm.boot_count(), 2, "two kernel boots");
}

//! `stele update stage1` inside a guest booted by OVMF: the service pipes a new UKI (same
//! kernel and initramfs, another embedded command line) from a second virtio disk into the
//! device's `stele update stage1 -` and reboots; the firmware then runs the new stage 1, as
//! its command line on the console shows. Needs `cargo xtask test` (kernel, modules, static
//! stele-init; OVMF from `cargo xtask setup`).

use stele_qemu::firmware::{prepare_uefi, Firmware};

use crate::fixture::{env_path, Fixture};

/// The stage-1 command lines embedded in the old and the new UKI.
const OLD_CMDLINE: &str = "console=ttyS0 panic=-1";
const NEW_CMDLINE: &str = "console=ttyS0 panic=-1 stele.stage1=2";

const SYSTEM_TOML: &str =
    "[[service]]\nname = \"svc\"\nexec = [\"/bin/svc\"]\nrestart = \"never\"\non_exit = \"poweroff\"\n";

/// The service: under the old stage 1 it installs the new one (`len` bytes on /dev/vdb)
/// and reboots, under the new one it says so and ends (the VM powers off).
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
    let fx = Fixture::new();
    let (key, public) = fx.keygen("release");
    let initrd = fx.initramfs(&[&public]).build();
    let kernel = env_path("STELE_KERNEL").display().to_string();
    let old = fx
        .uki(&kernel, &initrd)
        .cmdline(OLD_CMDLINE)
        .build("old.efi");
    let new = fx
        .uki(&kernel, &initrd)
        .cmdline(NEW_CMDLINE)
        .build("new.efi");
    let new = std::fs::read(new).unwrap();
    // The bundle disk: the UKI, padded to whole sectors (the service reads its length).
    let mut padded = new.clone();
    padded.resize(new.len().next_multiple_of(512), 0);
    std::fs::write(fx.path("new.disk"), &padded).unwrap();
    let root = fx
        .rootfs("rootfs", SYSTEM_TOML)
        .file("bin/svc", service(new.len()), 0o755)
        .build();
    let slot = fx.image(&root, &key).build("slot.img");
    let disk = fx
        .disk(&slot)
        .slot_size("16M")
        .no_data()
        .args(&["--uki", &old])
        .build();

    let (uefi, _vars) = prepare_uefi(None, None).expect("OVMF variable store");
    let mut vm = fx
        .firmware_boot(Firmware::Uefi(uefi), &disk)
        .read_only_disk(&fx.p("new.disk"))
        .start();
    let first = vm.expect("Command line: ");
    assert!(
        first.ends_with(&format!("Command line: {OLD_CMDLINE}")),
        "{first}"
    );
    vm.expect("svc: old stage 1, replacing it");
    let done = vm.expect("stele: stage 1 replaced: ");
    assert!(
        done.contains(&format!("is now stdin ({} bytes, unsigned", new.len())),
        "{done}"
    );
    vm.expect_all(&["svc: stage1 exit 0", "stele: shutdown: reboot"]);
    let second = vm.expect("Command line: ");
    assert!(
        second.ends_with(&format!("Command line: {NEW_CMDLINE}")),
        "the firmware did not run the new stage 1: {second}"
    );
    vm.expect_all(&[
        "stele: ready",
        "svc: running under the new stage 1",
        "stele: shutdown: poweroff",
    ]);
    vm.powered_off();
    assert_eq!(vm.boot_count(), 2, "two kernel boots");
}

//! The boot disk is bound (docs/BOOT.md "The boot disk"): a USB stick carrying a complete
//! stele disk of another release beside the internal disk, attached before or after it
//! (or found before a USB boot disk), is ignored with a warning naming it and the disk the
//! firmware booted boots (OVMF, the stub's `LoaderDevicePartUUID`); two non-removable stele disks on a direct kernel boot are
//! refused with one line naming both, and with `stele initramfs --boot-disk` the named one
//! boots. Needs `cargo xtask test` (kernel, modules, static stele-init; OVMF).

use stele_qemu::firmware::{self, Firmware};
use stele_qemu::DiskBus;

use crate::fixture::{env_path, Fixture};

/// Each release says which one it is; a release is healthy once a USB disk's stele-data
/// partition (only the stick has one) is seen, so the check before "marked good" sees the
/// whole stick.
fn system(version: &str) -> String {
    format!(
        r#"healthy_after = 1
health = ["/bin/sh", "-c", "grep -qs PARTNAME=stele-data /sys/class/block/sd*/uevent"]
shutdown_grace = 2

[[service]]
name = "release"
exec = ["/bin/sh", "-c", "echo svc: release {version} running; sleep 600"]
restart = "never"
"#
    )
}

/// A slot image of `version` with rollback index `index` (a fresh disk's floor).
fn release(fx: &Fixture, key: &str, version: &str, index: u64) -> String {
    let root = fx
        .rootfs(&format!("root-{version}"), &system(version))
        .build();
    fx.image(&root, key)
        .version(version)
        .index(index)
        .build(&format!("v{version}.img"))
}

/// Boots the internal disk (release 1.0.0 on `bus`, its UKI from an initramfs that can
/// see USB disks) through OVMF with a USB stick carrying a complete stele disk (state at
/// floor 0, both slots, data) of release 2.0.0, attached `first` or last on the QEMU
/// command line: the disk the firmware booted boots, and each of the stick's partitions is
/// named in a warning (at the scan, or before the slot is marked good when the stick shows
/// up later).
fn stick_beside_the_boot_disk(bus: DiskBus, first: bool) {
    let fx = Fixture::new();
    let (key, public) = fx.keygen("release");
    let v1 = release(&fx, &key, "1.0.0", 1);
    let v2 = release(&fx, &key, "2.0.0", 0);
    let kernel = env_path("STELE_KERNEL").display().to_string();
    let initrd = fx
        .initramfs(&[&public])
        .args(&["--module", "usb_storage"])
        .build();
    let uki = fx
        .uki(&kernel, &initrd)
        .cmdline("console=ttyS0 panic=-1")
        .build("boot.efi");
    let internal = fx
        .disk(&v1)
        .slot_size("16M")
        .no_data()
        .args(&["--uki", &uki])
        .build();
    let stick = fx
        .disk(&v2)
        .b(&v2)
        .out("stick.img")
        .slot_size("16M")
        .data_size("16M")
        .build();
    let (u, _vars) = firmware::prepare_uefi(None, None).expect("OVMF variable store");
    let mut vm = fx
        .firmware_boot(Firmware::Uefi(u), &internal)
        .disk_bus(bus)
        .disk_on(&stick, DiskBus::Usb, first)
        .start();
    let bound = vm.expect("stele: boot disk ");
    assert!(
        bound.contains("the disk the firmware booted from"),
        "{bound}"
    );
    let disk = bound
        .split("boot disk ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .unwrap_or_default()
        .to_owned();
    if bus == DiskBus::Virtio {
        assert_eq!(disk, "/dev/vda", "{bound}");
    }
    vm.expect("stele: slot=a version=1.0.0");
    vm.expect("svc: release 1.0.0 running");
    vm.expect("stele: slot=a marked good");
    let console = vm.console();
    let warned: Vec<&str> = console
        .lines()
        .filter(|l| {
            l.starts_with("stele: warning: partition ")
                && l.contains(" on /dev/sd")
                && !l.contains(&format!(" on {disk}"))
                && l.ends_with(": ignored")
        })
        .collect();
    for name in ["stele-state", "stele-root-a", "stele-root-b", "stele-data"] {
        assert!(
            warned
                .iter()
                .any(|l| l.contains(&format!("partition {name} on /dev/sd"))),
            "the stick's {name} is not named in a warning:\n{console}"
        );
    }
    assert!(
        !console.contains("release 2.0.0"),
        "the stick booted:\n{console}"
    );
}

#[test]
fn a_usb_stick_with_a_stele_disk_attached_first_is_ignored_with_a_warning() {
    stick_beside_the_boot_disk(DiskBus::Virtio, true);
}

#[test]
fn a_usb_stick_with_a_stele_disk_attached_last_is_ignored_with_a_warning() {
    stick_beside_the_boot_disk(DiskBus::Virtio, false);
}

/// Both on the USB controller, the stick on the first port: the stick shows up before the
/// disk the firmware booted (itself a USB disk), and the boot waits for the bound disk
/// instead of taking the first stele disk found.
#[test]
fn a_usb_stick_found_before_the_usb_boot_disk_is_not_taken() {
    stick_beside_the_boot_disk(DiskBus::Usb, true);
}

/// The identity the second disk is created with and the initramfs records.
const SECOND: &str = "5a1e0000-0000-4000-8000-00000000d15c";

#[test]
fn two_internal_stele_disks_are_refused_unless_the_initramfs_names_one() {
    let fx = Fixture::new();
    let (key, public) = fx.keygen("release");
    let v1 = release(&fx, &key, "1.0.0", 1);
    let v2 = release(&fx, &key, "2.0.0", 1);
    let first = fx
        .disk(&v1)
        .out("first.img")
        .slot_size("16M")
        .no_data()
        .build();
    let second = fx
        .disk(&v2)
        .out("second.img")
        .slot_size("16M")
        .no_data()
        .args(&["--disk-guid", SECOND])
        .build();
    let unbound = fx.initramfs(&[&public]).out("unbound.cpio").build();
    let mut vm = fx
        .boot(&unbound, &first)
        .disk_on(&second, DiskBus::Virtio, false)
        .append("stele.on_failure=poweroff stele.failure_delay=0")
        .no_reboot()
        .console_log("unbound.log")
        .start();
    let line = vm.expect("stele: no bootable slot:");
    assert_eq!(
        line.trim_end(),
        "stele: no bootable slot: /dev/vda and /dev/vdb carry a stele-state partition and nothing names the boot disk: refusing to guess; record it with `stele initramfs --boot-disk <disk GUID>` (printed by `stele disk create`) or remove the others; poweroff in 0s"
    );
    vm.exits();
    assert!(!vm.console().contains("svc: release"), "{}", vm.console());

    let named = fx
        .initramfs(&[&public])
        .args(&["--boot-disk", SECOND])
        .out("named.cpio")
        .build();
    let mut vm = fx
        .boot(&named, &first)
        .disk_on(&second, DiskBus::Virtio, false)
        .console_log("named.log")
        .start();
    let bound = vm.expect("stele: boot disk ");
    assert!(
        bound.contains(&format!(
            "boot disk /dev/vdb: the disk with GUID {SECOND} (boot.toml boot_disk)"
        )),
        "{bound}"
    );
    vm.expect("stele: slot=a version=2.0.0");
    vm.expect("svc: release 2.0.0 running");
    assert!(!vm.console().contains("release 1.0.0"), "{}", vm.console());
}

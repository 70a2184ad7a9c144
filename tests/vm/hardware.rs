//! The buses real machines boot from: the same stele disk, its UKI made from a default
//! `stele initramfs` (the generic hardware profile), booted by OVMF over NVMe, SATA (AHCI)
//! and virtio-scsi, loading only the drivers of the devices present; and from a USB stick,
//! with USB storage asked for (`--module usb_storage`). The buses come from the harness
//! (`stele qemu run --disk-bus`, the fixture's `disk_bus`). Needs `cargo xtask test`
//! (kernel, modules, static stele-init; OVMF from `cargo xtask setup`).

use std::path::PathBuf;
use std::sync::OnceLock;

use stele_qemu::firmware::{self, Firmware};
use stele_qemu::DiskBus;

use crate::fixture::{env_path, Fixture};

/// The stage-1 command line: `stele.debug` prints the partition the init found.
const CMDLINE: &str = "console=ttyS0 panic=-1 stele.debug";
const SYSTEM_TOML: &str = r#"
[[service]]
name = "hello"
exec = ["/bin/sh", "-c", "echo svc: hello from the verified root"]
restart = "never"
on_exit = "poweroff"
"#;

/// Built once: a signed slot, and two disks every test copies: one whose UKI has the
/// default initramfs, one whose initramfs also asks for USB storage.
struct Artifacts {
    fx: Fixture,
    disk: PathBuf,
    usb_disk: PathBuf,
}

fn artifacts() -> &'static Artifacts {
    static A: OnceLock<Artifacts> = OnceLock::new();
    A.get_or_init(|| {
        let fx = Fixture::shared("hardware-vm");
        let (key, public) = fx.keygen("release");
        let root = fx.rootfs("rootfs", SYSTEM_TOML).build();
        let slot = fx.image(&root, &key).build("slot.img");
        let kernel = env_path("STELE_KERNEL").display().to_string();
        let disk = |name: &str, extra: &[&str]| {
            let initrd = fx
                .initramfs(&[&public])
                .args(extra)
                .out(&format!("{name}.cpio"))
                .build();
            let uki = fx
                .uki(&kernel, &initrd)
                .cmdline(CMDLINE)
                .build(&format!("{name}.efi"));
            let d = fx
                .disk(&slot)
                .out(&format!("{name}.img"))
                .slot_size("16M")
                .no_data()
                .args(&["--uki", &uki])
                .build();
            PathBuf::from(d)
        };
        let plain = disk("default", &[]);
        let usb = disk("usb", &["--module", "usb_storage"]);
        Artifacts {
            disk: plain,
            usb_disk: usb,
            fx,
        }
    })
}

/// Boots a copy of the disk on `bus` through OVMF: the firmware starts the UKI from a
/// device path through `firmware_node` (`NVMe(`, `Sata(`, ...), the init finds the state
/// partition on the bus's device (`/dev/nvme0n1p`, `/dev/sda`) and the slot boots.
fn boots_over(bus: DiskBus, cpus: u32, firmware_node: &str, device: &str) -> String {
    let a = artifacts();
    let dir = a.fx.path(bus.name());
    std::fs::create_dir_all(&dir).unwrap();
    let disk = dir.join("disk.img");
    let from = if bus == DiskBus::Usb {
        &a.usb_disk
    } else {
        &a.disk
    };
    std::fs::copy(from, &disk).unwrap();
    let (u, _vars) = firmware::prepare_uefi(None, None).expect("OVMF variable store");
    let mut vm =
        a.fx.firmware_boot(Firmware::Uefi(u), disk.to_str().unwrap())
            .disk_bus(bus)
            .cpus(cpus)
            .no_reboot()
            .console_log(dir.join("console.log").to_str().unwrap())
            .start();
    let line = vm.expect("BdsDxe: starting Boot");
    assert!(line.contains(firmware_node), "{bus:?}: {line}");
    let modules = vm.expect("modules: ");
    assert!(modules.contains(" 0 failed"), "{bus:?}: {modules}");
    let state = vm.expect("state partition ");
    assert!(state.contains(device), "{bus:?}: {state}");
    vm.expect("stele: slot=a version=1.0.0");
    vm.expect("svc: hello from the verified root");
    vm.expect("stele: shutdown: poweroff");
    vm.exits();
    assert_eq!(vm.boot_count(), 1, "{bus:?}: one kernel boot");
    modules
}

/// The number before `what` in the init's `modules: ...` line.
fn count_of(modules: &str, what: &str) -> usize {
    let before = &modules[..modules
        .find(what)
        .unwrap_or_else(|| panic!("{what}: {modules}"))];
    before
        .trim_end()
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{what}: {modules}"))
}

#[test]
fn uefi_boots_the_disk_over_nvme() {
    // Two CPUs: the modules load two at a time, each after the ones it needs.
    let modules = boots_over(DiskBus::Nvme, 2, "NVMe(", "/dev/nvme0n1p");
    // No AHCI, SD host, virtio or watchdog device on this machine: their drivers wait.
    assert!(count_of(&modules, " without a device") >= 5, "{modules}");
    assert_eq!(count_of(&modules, " at a time"), 2, "{modules}");
}

#[test]
fn uefi_boots_the_disk_over_sata() {
    boots_over(DiskBus::Sata, 1, "Sata(", "/dev/sda");
}

#[test]
fn uefi_boots_the_disk_over_virtio_scsi() {
    boots_over(DiskBus::Scsi, 1, "Scsi(", "/dev/sda");
}

#[test]
fn uefi_boots_the_disk_from_a_usb_stick() {
    boots_over(DiskBus::Usb, 1, "USB(", "/dev/sda");
}

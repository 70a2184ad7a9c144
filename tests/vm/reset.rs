//! The factory reset under QEMU: `stele data reset` in the guest, and the next boot makes a
//! fresh ext4 on the data partition before mounting it (a file written before is gone,
//! the filesystem mounts read-write, the flight recorder names the reset); a power cut in
//! the middle of the reset, and the boot after it finishes the reset.
//!
//! Needs STELE_KERNEL, STELE_MODULES and STELE_INIT, set by `cargo xtask test`.

use crate::fixture::{partition_bytes, Fixture};
use crate::util::{ok, stele};
use stele_verifier::data_reset::{self, Found};

/// Before the reset: writes /var/keep and asks for the reset, then reboots. After it (the
/// flight recorder has the request): shows /var, its mount and the history, powers off.
const APP: &str = r#"#!/bin/sh
sleep 1
if ! /run/stele/bin/stele update history | grep -q data-reset-requested; then
  echo precious > /var/keep; sync
  echo "app: before: $(cat /var/keep)"
  /run/stele/bin/stele data reset
  kill -TERM 1
  sleep 100
fi
echo "app: after: keep=$(cat /var/keep 2>/dev/null || echo absent) lost+found=$(ls -d /var/lost+found 2>/dev/null || echo none)"
echo "app: mount: $(grep ' /var ' /proc/mounts)"
touch /var/written && echo "app: writable"
/run/stele/bin/stele update history
echo "app: done"
kill -USR2 1
sleep 100
"#;

/// The disk, initramfs and a booted guest of slot a running [`APP`].
fn setup(fx: &Fixture) -> (String, String) {
    let (key, public) = fx.keygen("release");
    let root = fx
        .rootfs(
            "root",
            "healthy_after = 1\nshutdown_grace = 2\n[[service]]\nname = \"app\"\nexec = [\"/bin/app\"]\nrestart = \"never\"\n",
        )
        .file("bin/app", APP, 0o755)
        .build();
    let img = fx.image(&root, &key).name("test").build("v1.img");
    let initrd = fx.initramfs(&[&public]).build();
    let disk = fx.disk(&img).data_size("64M").build();
    (initrd, disk)
}

/// The end of the boot after the reset: the file is gone, the fresh ext4 is mounted
/// read-write at /var, and the history names the request and the reset.
fn after_the_reset(vm: &mut crate::fixture::Guest, disk: &str) {
    vm.expect("app: after: keep=absent lost+found=/var/lost+found");
    let mount = vm.expect("app: mount: ");
    assert!(mount.contains(" /var ext4 rw"), "{mount}");
    vm.expect("app: writable");
    vm.expect("update: data-reset-requested");
    vm.expect("stage1: data-reset:");
    vm.expect("app: done");
    let console = vm.powered_off();
    assert!(!console.contains("not mounted at /var"), "{console}");
    let state = partition_bytes(disk, "stele-state");
    let at = usize::try_from(data_reset::REQUEST_OFFSET).unwrap();
    assert_eq!(
        data_reset::decode(&state[at..at + data_reset::BLOCK]),
        Found::None,
        "the request is cleared"
    );
    let h = ok(stele(&["update", "history", "--disk", disk]));
    assert_eq!(h.matches("stage1: data-reset:").count(), 1, "{h}");
}

#[test]
fn factory_reset_makes_a_fresh_data_partition_at_the_next_boot() {
    let fx = Fixture::new();
    let (initrd, disk) = setup(&fx);
    let mut vm = fx.boot(&initrd, &disk).start();
    vm.expect("app: before: precious");
    vm.expect("stele: data reset requested: the next boot makes a fresh filesystem");
    vm.expect("factory reset requested: making a fresh ext4");
    vm.expect(
        "fresh filesystem made (factory reset requested by `stele data reset` on the device)",
    );
    after_the_reset(&mut vm, &disk);
}

/// The power is cut as soon as the boot starts the reset (mke2fs running): the next boot
/// finds the request still there, makes the filesystem again and mounts it.
#[test]
fn a_power_cut_during_the_factory_reset_is_finished_by_the_next_boot() {
    let fx = Fixture::new();
    let (initrd, disk) = setup(&fx);
    let mut vm = fx.boot(&initrd, &disk).start();
    vm.expect("app: before: precious");
    vm.expect("factory reset requested: making a fresh ext4");
    let before_cut = vm.console();
    vm.power_cut();
    assert!(
        !before_cut.contains("fresh filesystem made"),
        "{before_cut}"
    );
    let state = partition_bytes(&disk, "stele-state");
    let at = usize::try_from(data_reset::REQUEST_OFFSET).unwrap();
    assert!(
        matches!(
            data_reset::decode(&state[at..at + data_reset::BLOCK]),
            Found::Requested(_)
        ),
        "the request survives the cut"
    );
    let mut vm = fx.boot(&initrd, &disk).start();
    vm.expect("factory reset requested: making a fresh ext4");
    vm.expect("fresh filesystem made");
    after_the_reset(&mut vm, &disk);
}

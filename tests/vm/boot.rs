//! End-to-end boots: the real Debian kernel under QEMU, our initramfs and a GPT disk.
//!
//! Each test builds its own keys, slot image, initramfs and disk with the fixture (the
//! `stele` binary in a temporary directory), boots them, and asserts on the serial console.
//! The kernel, its modules and the static stele-init come from `cargo xtask test`
//! (environment variables STELE_KERNEL, STELE_MODULES, STELE_INIT).

use std::fs;

use crate::fixture::Fixture;

/// A good image boots: verified, `/` is an overlay over the dm-verity device, a write to `/`
/// is gone after a reboot while a write to the data partition survives, 100 orphans are all
/// reaped, SIGTERM to PID 1 shuts down in order, and `on_exit = "poweroff"` ends the VM with
/// the service's status on the console.
#[test]
fn good_image_boots_read_only_root_and_persists_only_data() {
    let fx = Fixture::new();
    let (key, public) = fx.keygen("release");
    let script = r#"#!/bin/sh
echo "svc: begin"
cat /proc/mounts | while read dev mnt fs opts rest; do echo "svc: mount $dev $mnt $fs $opts"; done
echo "svc: dm name $(cat /sys/block/dm-0/dm/name)"
echo "svc: hello $(cat /srv/hello.txt)"
if [ -e /var/marker ]; then
  echo "svc: second boot"
  if [ -e /root-write ]; then echo "svc: root write survived"; else echo "svc: root write gone"; fi
  echo "svc: data says $(cat /var/marker)"
  exit 7
fi
echo "svc: first boot"
echo scribble > /root-write && echo "svc: root write ok $(cat /root-write)"
echo persisted > /var/marker && sync
for i in $(seq 100); do ( sleep 0.2 & ) ; done
sleep 2
z=0
for s in /proc/[0-9]*/stat; do
  st=$(cut -d' ' -f3 "$s" 2>/dev/null)
  [ "$st" = "Z" ] && z=$((z+1))
done
echo "svc: zombies=$z"
kill -TERM 1
sleep 100
"#;
    let sleeper = r#"#!/bin/sh
trap 'echo "sleeper: got TERM"; exit 0' TERM
while true; do sleep 1; done
"#;
    let system = r#"
healthy_after = 1
shutdown_grace = 5

[[service]]
name = "check"
exec = ["/bin/check"]
restart = "never"
on_exit = "poweroff"

[[service]]
name = "sleeper"
exec = ["/bin/sleeper"]
restart = "always"
"#;
    let root = fx
        .rootfs("rootfs", system)
        .file("bin/check", script, 0o755)
        .file("bin/sleeper", sleeper, 0o755)
        .file("srv/hello.txt", "from the verified root", 0o644)
        .build();
    let img = fx.image(&root, &key).build("slot.img");
    let initrd = fx.initramfs(&[&public]).build();
    let disk = fx.disk(&img).build();
    let mut vm = fx.boot(&initrd, &disk).start();

    let verified = vm.expect("verified");
    assert!(
        verified.contains("stele: slot=a version=1.0.0 rollback_index=1 root_hash="),
        "{verified}"
    );
    let phases = vm.expect("stele: boot phases:");
    assert!(phases.contains("total="), "{phases}");
    vm.expect("stele: ready");
    vm.expect("svc: begin");
    vm.expect("svc: first boot");
    vm.expect("svc: root write ok scribble");
    vm.expect("svc: zombies=0");
    vm.expect("stele: shutdown: reboot");
    vm.expect("sleeper: got TERM");
    vm.expect("stele: halted");
    // Second boot, same VM: the guest rebooted.
    vm.expect("svc: second boot");
    vm.expect("svc: root write gone");
    vm.expect("svc: data says persisted");
    vm.expect("stele: service check exited status 7");
    vm.expect("stele: shutdown: poweroff");
    let console = vm.powered_off();
    // `/` is an overlay, and its lower layer is the read-only dm-verity device.
    let mounts: Vec<&str> = console
        .lines()
        .filter(|l| l.contains("svc: mount "))
        .collect();
    assert!(
        mounts.iter().any(|l| l.contains(" / overlay ")),
        "no overlay on /: {mounts:#?}"
    );
    let lower = mounts
        .iter()
        .find(|l| {
            (l.contains("/dev/mapper/stele-root-a") || l.contains("/dev/dm-0"))
                && l.contains(" erofs ")
        })
        .unwrap_or_else(|| panic!("the dm-verity device is not mounted: {mounts:#?}"));
    assert!(
        lower.contains(" ro,") || lower.ends_with(" ro"),
        "lower layer not read-only: {lower}"
    );
    assert!(
        console.contains("svc: dm name stele-root-a"),
        "dm device not named stele-root-a"
    );
    assert!(console.contains("svc: hello from the verified root"));
    assert_eq!(vm.boot_count(), 2, "expected exactly one reboot");
}

/// A slot signed by a key the initramfs does not trust is refused with the cause on the
/// console; nothing from the image runs and there is no shell.
#[test]
fn untrusted_key_is_refused() {
    let fx = Fixture::new();
    let (_, public) = fx.keygen("release");
    let (attacker, _) = fx.keygen("attacker");
    let root = fx
        .rootfs(
            "rootfs",
            "[[service]]\nname = \"evil\"\nexec = [\"/bin/sh\", \"-c\", \"echo EVIL-RAN\"]\n",
        )
        .build();
    let img = fx
        .image(&root, &attacker)
        .version("6.6.6")
        .build("slot.img");
    let initrd = fx.initramfs(&[&public]).build();
    let disk = fx.disk(&img).build();
    let mut vm = fx
        .boot(&initrd, &disk)
        .append("stele.on_failure=poweroff stele.failure_delay=0")
        .no_reboot()
        .start();
    let refused = vm.expect("stele: refused slot a:");
    assert!(
        refused.contains("threshold")
            || refused.contains("unknown key")
            || refused.contains("not trusted"),
        "cause not named: {refused}"
    );
    vm.expect("stele: no bootable slot");
    vm.exits();
    let console = vm.console();
    assert!(!console.contains("EVIL-RAN"), "the untrusted image ran");
    assert!(!console.contains("stele: ready"));
    assert!(!console.contains("# "), "a shell prompt appeared");
}

/// Issue 20: a disk on an NVMe controller with a virtio-only initramfs said "check the
/// disk's GPT partition names". Now the console names the disks the kernel sees (none) and
/// the controller without a driver, with the `--module` that binds it (from the
/// initramfs's storage aliases).
#[test]
fn no_stele_disk_names_the_controller_without_a_driver_and_its_module() {
    let fx = Fixture::new();
    let (key, public) = fx.keygen("release");
    let root = fx.rootfs("rootfs", "exec = [\"/bin/sh\"]\n").build();
    let img = fx.image(&root, &key).build("slot.img");
    let initrd = fx
        .initramfs(&[&public])
        .config("partition_timeout_secs = 2\n")
        .build();
    let disk = fx.disk(&img).build();
    let mut vm = fx
        .boot(&initrd, &disk)
        .nvme_disks()
        .append("stele.on_failure=poweroff stele.failure_delay=0")
        .no_reboot()
        .start();
    let line = vm.expect("stele: no bootable slot:");
    assert!(
        line.contains("partition stele-state not found after "),
        "{line}"
    );
    assert!(
        line.contains(" NVMe controller (PCI id 1b36:0010) has no driver: rebuild the initramfs with `stele initramfs --module nvme`"),
        "{line}"
    );
    assert!(!line.contains("check the disk's GPT"), "{line}");
    vm.exits();
}

/// One flipped byte inside a file's data: the manifest still verifies (the signed root hash
/// covers the data only through the tree), but reading the file trips dm-verity, which
/// restarts the machine (`restart_on_corruption`) before the content is ever seen.
#[test]
fn flipped_data_byte_is_caught_by_dm_verity_on_read() {
    let fx = Fixture::new();
    let (key, public) = fx.keygen("release");
    let canary: String = "STELE-CANARY-".repeat(2000);
    let system = r#"
[[service]]
name = "reader"
exec = ["/bin/sh", "-c", "echo reader: start; cat /srv/canary > /dev/null && echo reader: READ-OK; echo reader: end"]
restart = "never"
on_exit = "poweroff"
"#;
    let root = fx
        .rootfs("rootfs", system)
        .file("srv/canary", &canary, 0o644)
        .build();
    let img = fx.image(&root, &key).build("slot.img");
    // Flip one byte in the middle of the canary's data.
    let mut bytes = fs::read(&img).unwrap();
    let needle = b"STELE-CANARY-STELE-CANARY-STELE-CANARY-";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("canary data in the image")
        + 6000;
    bytes[at] ^= 0x20;
    fs::write(&img, &bytes).unwrap();

    let initrd = fx.initramfs(&[&public]).build();
    let disk = fx.disk(&img).build();
    let mut vm = fx.boot(&initrd, &disk).no_reboot().start();
    vm.expect("stele: slot=a version=1.0.0");
    vm.expect("reader: start");
    // The VM restarts (ends QEMU with -no-reboot).
    vm.exits();
    let console = vm.console();
    assert!(
        console.contains("is corrupted"),
        "no dm-verity corruption report on the console:\n{console}"
    );
    assert!(
        !console.contains("reader: READ-OK"),
        "the corrupted file was read"
    );
}

/// `exec = [...]` hands PID 1 over to the image's own init.
#[test]
fn exec_hands_over_pid_1() {
    let fx = Fixture::new();
    let (key, public) = fx.keygen("release");
    let myinit = "#!/bin/sh\necho \"handoff: pid=$$ root=$(grep ' / ' /proc/mounts | cut -d' ' -f3)\"\nsync\npoweroff -f\n";
    let root = fx
        .rootfs("rootfs", "exec = [\"/sbin/myinit\"]\n")
        .file("sbin/myinit", myinit, 0o755)
        .build();
    let img = fx.image(&root, &key).build("slot.img");
    let initrd = fx.initramfs(&[&public]).build();
    let disk = fx.disk(&img).build();
    let mut vm = fx.boot(&initrd, &disk).no_reboot().start();
    vm.expect("verified");
    let line = vm.expect("handoff: pid=");
    assert!(line.contains("handoff: pid=1 root=overlay"), "{line}");
    // The image's init powers off.
    vm.exits();
}

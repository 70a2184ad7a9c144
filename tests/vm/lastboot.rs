//! Why the last boot ended, under QEMU: a trial slot whose init hangs is reset by the
//! i6300esb watchdog (in the same QEMU process) and each reset is recorded as one; a kernel
//! panic is recorded from ramoops with its first line; a power cut (QEMU killed) is
//! recorded as neither, with both configured; a dm-verity corruption restart is recorded as
//! one where ramoops keeps restart dumps; under OVMF a panic is recorded from efi-pstore.
//!
//! Needs STELE_KERNEL, STELE_MODULES and STELE_INIT, set by `cargo xtask test`.

use stele_qemu::firmware::{prepare_uefi, Firmware};

use crate::fixture::{ballast, change_partition, env_path, Fixture};
use crate::util::{ok, stele};

/// The kinds of the events in `disk`'s flight recorder, with their texts.
fn events(disk: &str) -> Vec<(String, String)> {
    let out = ok(stele(&["update", "history", "--disk", disk, "--json"]));
    let h: serde_json::Value = serde_json::from_str(&out).expect("history JSON");
    assert_eq!(h["damaged"], 0, "{h}");
    h["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_owned();
            (s("kind"), s("text"))
        })
        .collect()
}

fn count(ev: &[(String, String)], kind: &str) -> usize {
    ev.iter().filter(|(k, _)| k == kind).count()
}

/// Version 1: on its first boot installs the bundle on /dev/vdb and reboots; on a later
/// boot shows `why` and powers off.
const V1: &str = r#"#!/bin/sh
sleep 1
if [ ! -e /var/installed ]; then
  touch /var/installed; sync
  /run/stele/bin/stele update install /dev/vdb
  kill -TERM 1
  sleep 100
fi
echo "why: $(/run/stele/bin/stele update why)"
echo "v1: done"
kill -USR2 1
sleep 100
"#;

/// Version 2 hands PID 1 to an init that hangs without ever keeping the watchdog alive.
const HANG: &str = "#!/bin/sh\necho \"v2: hanging\"\nwhile :; do sleep 100; done\n";

/// A slot on trial that hangs after the handover: the watchdog resets the machine three
/// times in the same QEMU process; each next stage 1 reads WDIOF_CARDRESET from the
/// i6300esb and records `watchdog-reset`, and `why` names them.
#[test]
fn a_hung_trial_is_recorded_as_watchdog_resets() {
    let fx = Fixture::new();
    let (key, public) = fx.keygen("release");
    let r1 = fx
        .rootfs(
            "root1",
            "healthy_after = 1\nshutdown_grace = 2\n[[service]]\nname = \"app\"\nexec = [\"/bin/app\"]\nrestart = \"never\"\n",
        )
        .file("bin/app", V1, 0o755)
        .build();
    let r2 = fx
        .rootfs("root2", "exec = [\"/sbin/hang\"]\n")
        .file("sbin/hang", HANG, 0o755)
        .build();
    let image = |root: &str, v: &str, i: u64, out: &str| {
        fx.image(root, &key)
            .name("test")
            .version(v)
            .index(i)
            .build(out)
    };
    let v1 = image(&r1, "1.0.0", 1, "v1.img");
    let v2 = image(&r2, "2.0.0", 2, "v2.img");
    let initrd = fx
        .initramfs(&[&public])
        .config("watchdog_secs = 10\n")
        .args(&["--module", "i6300esb"])
        .build();
    let disk = fx.disk(&v1).build();
    let mut vm = fx
        .boot(&initrd, &disk)
        .read_only_disk(&v2)
        .watchdog()
        .start();
    vm.expect("stele: installed test 2.0.0 rollback_index=2 into slot b");
    for _ in 0..3 {
        vm.expect("stele: slot=b version=2.0.0");
        vm.expect("v2: hanging");
        vm.expect("stele: warning: the previous boot ended in a watchdog reset");
    }
    vm.expect("stele: slot=b exhausted, falling back to a");
    let why = vm.expect("why: ");
    assert!(
        why.contains(
            "slot b (2.0.0) was abandoned after 3 tries: its boots ended in a watchdog reset ×3"
        ),
        "{why}"
    );
    vm.expect("v1: done");
    let console = vm.powered_off();
    // The hung boots ended by the watchdog: from the hang to the next kernel, no panic and
    // no reboot. (A later boot may still panic early under a loaded TCG host, e.g. `IO-APIC
    // + timer doesn't work!`: that is not what this test is about.)
    for hung in console.split("v2: hanging").skip(1) {
        let until_next = hung.split("Linux version").next().unwrap_or("");
        assert!(
            !until_next.contains("Kernel panic") && !until_next.contains("reboot: "),
            "not a watchdog reset: {until_next}"
        );
    }
    assert_eq!(console.matches("v2: hanging").count(), 3, "{console}");
    assert_eq!(
        console
            .matches("stele: warning: the previous boot ended in a watchdog reset")
            .count(),
        3,
        "{console}"
    );
    let ev = events(&disk);
    assert_eq!(count(&ev, "watchdog-reset"), 3, "{ev:?}");
    assert_eq!(count(&ev, "panic"), 0, "{ev:?}");
}

/// ramoops in 1 MiB of RAM the kernel leaves alone, kept across a guest reset (where
/// configured: this command line); a panic reboots after 1 s.
const RAMOOPS: &str = "panic=1 memmap=1M$0x10000000 ramoops.mem_address=0x10000000 ramoops.mem_size=0x100000 ramoops.record_size=0x8000";

/// Panics on its first boot, waits for the power cut on its second, powers off on its third.
const CRASHER: &str = r#"#!/bin/sh
sleep 1
if [ ! -e /var/panicked ]; then
  touch /var/panicked; sync
  echo "app: panicking"
  echo c > /proc/sysrq-trigger
  sleep 100
fi
if [ ! -e /var/cut ]; then
  touch /var/cut; sync
  echo "why: $(/run/stele/bin/stele update why)"
  echo "app: cut the power now"
  sleep 1000
fi
echo "app: after the cut"
kill -USR2 1
sleep 100
"#;

/// A panic (sysrq `c`, `panic=1`) is recorded from ramoops as `panic` with the panic's line
/// and removed from pstore; the power cut after it (QEMU killed, the watchdog armed and
/// ramoops configured in both runs) is recorded as neither a panic nor a watchdog reset.
#[test]
fn a_panic_is_recorded_with_its_line_and_a_power_cut_as_neither() {
    let fx = Fixture::new();
    let (key, public) = fx.keygen("release");
    let root = fx
        .rootfs(
            "root",
            "healthy_after = 200\nshutdown_grace = 2\n[[service]]\nname = \"app\"\nexec = [\"/bin/app\"]\nrestart = \"never\"\n",
        )
        .file("bin/app", CRASHER, 0o755)
        .build();
    let img = fx.image(&root, &key).build("slot.img");
    let initrd = fx
        .initramfs(&[&public])
        .config("watchdog_secs = 30\n")
        .args(&["--module", "i6300esb"])
        .build();
    let disk = fx.disk(&img).build();
    let mut vm = fx.boot(&initrd, &disk).append(RAMOOPS).watchdog().start();
    vm.expect("app: panicking");
    vm.expect("Kernel panic - not syncing: sysrq triggered crash");
    vm.expect("stele: warning: the previous boot ended in a kernel panic: Kernel panic - not syncing: sysrq triggered crash");
    let why = vm.expect("why: ");
    assert!(
        why.contains("ended in a kernel panic (Kernel panic - not syncing: sysrq triggered crash)"),
        "{why}"
    );
    vm.expect("app: cut the power now");
    let first = vm.console();
    assert!(!first.contains("ended in a watchdog reset"), "{first}");
    vm.power_cut();

    let mut vm = fx
        .boot(&initrd, &disk)
        .append(RAMOOPS)
        .watchdog()
        .console_log("console2.log")
        .start();
    vm.expect("stele: watchdog /dev/watchdog0 armed");
    vm.expect("app: after the cut");
    let second = vm.powered_off();
    assert!(!second.contains("the previous boot ended"), "{second}");

    let ev = events(&disk);
    assert_eq!(count(&ev, "panic"), 1, "{ev:?}");
    assert_eq!(count(&ev, "watchdog-reset"), 0, "{ev:?}");
    let (_, text) = ev.iter().find(|(k, _)| k == "panic").expect("the panic");
    assert!(
        text.starts_with("Kernel panic - not syncing: sysrq triggered crash\n"),
        "{text}"
    );
    assert!(text.len() <= 368, "{text}");
    // The power cut: the boot after it counted as unconfirmed, with nothing said about why.
    assert!(count(&ev, "unconfirmed-boot") >= 2, "{ev:?}");
}

/// A good slot with a corrupted block read by its service restarts the machine
/// (`restart_on_corruption`); with ramoops keeping restart dumps (`max_reason=4`) the next
/// boot records `verity-restart` with the kernel's restart line.
#[test]
fn a_dm_verity_corruption_restart_is_recorded_where_ramoops_keeps_restarts() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("k");
    let reader = "#!/bin/sh\ncat /srv/ballast > /dev/null && echo \"reader: READ-OK\"\nsleep 100\n";
    let root = fx
        .rootfs(
            "root",
            "healthy_after = 100\nshutdown_grace = 2\n[[service]]\nname = \"reader\"\nexec = [\"/bin/reader\"]\nrestart = \"never\"\n",
        )
        .file("bin/reader", reader, 0o755)
        .file("srv/ballast", ballast(64 << 10, 7), 0o644)
        .build();
    let img = fx.image(&root, &k).build("r.img");
    let initrd = fx
        .initramfs(&[&p])
        .config("failure_delay_secs = 1\n")
        .build();
    let d = fx.disk(&img).slot_size("16M").no_data().build();
    let needle = ballast(64, 7);
    change_partition(&d, "stele-root-a", |slot| {
        let at = slot
            .windows(needle.len())
            .position(|w| w == needle.as_bytes())
            .expect("the ballast inside slot a");
        slot[at + 40_000] ^= 0x01;
    });
    let mut vm = fx
        .boot(&initrd, &d)
        .append(&format!("{RAMOOPS} ramoops.max_reason=4"))
        .start();
    vm.expect_all(&[
        "stele: slot=a version=1.0.0",
        "is corrupted",
        "Restarting system with command 'dm-verity device corrupted'",
        "stele: warning: the previous boot ended in a dm-verity corruption restart: device-mapper: verity: ",
        "stele: slot=a version=1.0.0",
    ]);
    vm.power_cut();
    let ev = events(&d);
    let (_, text) = ev
        .iter()
        .find(|(k, _)| k == "verity-restart")
        .unwrap_or_else(|| panic!("no verity-restart in {ev:?}"));
    assert!(text.contains("is corrupted\n"), "{text}");
    assert!(
        text.ends_with("Restarting system with command 'dm-verity device corrupted'"),
        "{text}"
    );
    assert_eq!(count(&ev, "panic"), 0, "{ev:?}");
}

/// Panics on its first boot, powers off on its second.
const EFI_CRASHER: &str = r#"#!/bin/sh
sleep 1
if [ ! -e /var/panicked ]; then
  touch /var/panicked; sync
  echo "app: panicking"
  echo c > /proc/sysrq-trigger
  sleep 100
fi
echo "app: after the panic"
kill -USR2 1
sleep 100
"#;

/// OVMF boots the UKI (`panic=1` in its command line); the panic's dump goes to an EFI
/// variable through efi-pstore (carried by the generic profile, loaded because the
/// firmware's variables are there, nothing configured), and the next boot, in the same
/// QEMU process, records it and removes it.
#[test]
fn under_uefi_a_panic_is_recorded_from_efi_pstore() {
    let fx = Fixture::new();
    let (key, public) = fx.keygen("release");
    let root = fx
        .rootfs(
            "root",
            "healthy_after = 200\nshutdown_grace = 2\n[[service]]\nname = \"app\"\nexec = [\"/bin/app\"]\nrestart = \"never\"\n",
        )
        .file("bin/app", EFI_CRASHER, 0o755)
        .build();
    let img = fx.image(&root, &key).build("slot.img");
    let initrd = fx.initramfs(&[&public]).build();
    let kernel = env_path("STELE_KERNEL").display().to_string();
    let uki = fx
        .uki(&kernel, &initrd)
        .cmdline("console=ttyS0 panic=1")
        .build("uki.efi");
    let disk = fx.disk(&img).args(&["--uki", &uki]).build();
    let (uefi, _vars) = prepare_uefi(None, None).expect("OVMF variable store");
    let mut vm = fx.firmware_boot(Firmware::Uefi(uefi), &disk).start();
    vm.expect("app: panicking");
    vm.expect("Kernel panic - not syncing: sysrq triggered crash");
    vm.expect("stele: warning: the previous boot ended in a kernel panic: Kernel panic - not syncing: sysrq triggered crash");
    vm.expect("app: after the panic");
    let console = vm.powered_off();
    assert_eq!(
        console
            .matches("stele: warning: the previous boot ended in")
            .count(),
        1,
        "{console}"
    );
    let ev = events(&disk);
    assert_eq!(count(&ev, "panic"), 1, "{ev:?}");
}

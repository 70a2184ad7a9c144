//! stele-init end to end under QEMU: real kernel, `stele initramfs`, `stele disk create`,
//! signed slot images; assertions on the stable console lines and on the boot state the
//! guest left on the disk.
//!
//! Needs STELE_KERNEL, STELE_MODULES and STELE_INIT (the static stele-init), all set by
//! `cargo xtask test`.

use std::path::Path;

use crate::fixture::{change_state, partition, state, Fixture, Slot};
use crate::util::{ok, stele, write_flipped};

/// The initramfs of these tests: `failure_delay_secs = 1`.
fn initramfs(fx: &Fixture, public: &str) -> String {
    fx.initramfs(&[public])
        .config("failure_delay_secs = 1\n")
        .build()
}

/// 32 MiB slots a and b, a 16 MiB data partition.
fn disk(fx: &Fixture, a: &str, b: &str) -> String {
    fx.disk(a).b(b).slot_size("32M").data_size("16M").build()
}

const GOOD: &str = r#"
healthy_after = 2
shutdown_grace = 2
[[service]]
name = "probe"
exec = ["/bin/sh", "-c", "echo probe: slot=$(cat /run/stele/slot) root=$(/bin/busybox awk '$2==\"/\"{print $3}' /proc/mounts) var=$(/bin/busybox awk '$2==\"/var\"{print $3}' /proc/mounts) init=$(/bin/busybox ls /init 2>/dev/null || echo gone) $(/bin/busybox grep SigBlk /proc/self/status); exec /bin/busybox sleep 1000"]
restart = "always"
[[service]]
name = "finish"
exec = ["/bin/sh", "-c", "/bin/busybox sleep 6; echo finish: $(/bin/busybox grep VmRSS /proc/1/status)"]
restart = "never"
on_exit = "poweroff"
"#;

#[test]
fn verified_slot_runs_services_marks_good_and_powers_off() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("k");
    let root = fx.rootfs("root", GOOD).build();
    let a = fx.image(&root, &k).index(4).build("a.img");
    let initrd = initramfs(&fx, &p);
    let d = disk(&fx, &a, &a);
    assert_eq!(
        state(&d).rollback_floor,
        4,
        "a fresh disk starts at its images' index"
    );
    // As a disk of an older stele left it: marking good raises the floor again.
    change_state(&d, |st| st.rollback_floor = 0);
    let mut v = fx.boot(&initrd, &d).no_reboot().start();
    v.expect_all(&[
        "stele: slot=a version=1.0.0 rollback_index=4 root_hash=",
        "stele: boot phases: stage=1 mounts=",
        "stele: service probe started pid ",
        "stele: ready",
        "probe: slot=a root=overlay var=ext4 init=gone SigBlk: 0000000000000000",
        "stele: slot=a marked good",
        "finish: VmRSS:",
        "stele: service finish exited status 0",
        "stele: shutdown: poweroff",
        "stele: service probe exited status 143",
        "stele: halted",
    ]);
    let console = v.powered_off();
    assert!(!console.contains("refused"), "{console}");
    let st = state(&d);
    assert!(st.slots[0].successful, "{st:?}");
    assert_eq!(
        st.rollback_floor, 4,
        "marking good raises the rollback floor"
    );
}

#[test]
fn tampered_slot_is_refused_with_full_verification_and_b_boots() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("k");
    let root = fx.rootfs("root", GOOD).build();
    let a = fx.image(&root, &k).version("2.0.0").index(2).build("a.img");
    // The same rollback index: a fresh disk's floor is its images' highest.
    let b = fx.image(&root, &k).index(2).build("b.img");
    let initrd = initramfs(&fx, &p);
    let d = disk(&fx, &a, &b);
    // One flipped bit in slot a's filesystem data: signatures and tree are intact, so only
    // the full data pass (asked for on the kernel command line) can see it before mounting.
    let (off, _) = partition(&d, "stele-root-a");
    let bytes = std::fs::read(&d).unwrap();
    let at = usize::try_from(off).unwrap() + 8192 + 100;
    write_flipped(&bytes, at, Path::new(&d));
    let mut v = fx
        .boot(&initrd, &d)
        .append("stele.verify=full stele.bogus")
        .no_reboot()
        .start();
    v.expect_all(&[
        "stele: warning: kernel option stele.bogus ignored",
        "stele: refused slot a: verity mismatch at data block 2",
        "stele: slot=b version=1.0.0 rollback_index=2 root_hash=",
        "probe: slot=b root=overlay",
        "stele: slot=b marked good",
        "stele: halted",
    ]);
    v.powered_off();
    let st = state(&d);
    assert_eq!(
        st.slots[0].priority, 0,
        "a refused slot is marked unbootable: {st:?}"
    );
    assert!(st.slots[1].successful, "{st:?}");
}

#[test]
fn crash_looping_trial_slot_falls_back_after_its_tries() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("k");
    let good = fx.rootfs("good", GOOD).build();
    let bad = fx
        .rootfs(
            "bad",
            "healthy_after = 30\n[[service]]\nname = \"crashy\"\nexec = [\"/bin/sh\", \"-c\", \"exit 3\"]\nrestart_delay = 1\n",
        )
        .build();
    let a = fx.image(&good, &k).build("a.img");
    let b = fx.image(&bad, &k).version("2.0.0").index(2).build("b.img");
    let initrd = initramfs(&fx, &p);
    let d = fx.disk(&a).slot_size("32M").data_size("16M").build();
    // As an update leaves it: b on trial with 3 tries, top priority.
    ok(stele(&["update", "install", "--disk", &d, "--key", &p, &b]));
    assert_eq!(state(&d).slot(Slot::B).tries_remaining, 3);
    // The VM reboots as hardware would; each boot of b spends one try.
    let mut v = fx.boot(&initrd, &d).start();
    for _ in 0..3 {
        v.expect_all(&[
            "stele: slot=b version=2.0.0",
            "stele: service crashy exited status 3",
            "stele: service crashy failed 3 times before slot=b was marked good",
            "stele: shutdown: reboot",
        ]);
    }
    v.expect_all(&[
        "stele: slot=b exhausted, falling back to a",
        "stele: slot=a version=1.0.0",
        "stele: slot=a marked good",
        "stele: halted",
    ]);
    v.powered_off();
    // Boots seen on the console (one "starting" line per boot).
    assert_eq!(v.count("stele: stele-init "), 4);
    let st = state(&d);
    assert!(
        !st.slots[1].successful && st.slots[1].tries_remaining == 0,
        "{st:?}"
    );
    assert!(st.slots[0].successful, "{st:?}");
}

//! A/B updates under QEMU: install inside the guest, boot counting and automatic fallback,
//! refused bundles, a corrupted new slot, power cuts during an install, offline install.
//!
//! The bundle reaches the guest as a second, read-only virtio disk (/dev/vdb); the guest
//! runs the on-device `stele` that stele-init publishes at /run/stele/bin/stele.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use stele_qemu::Vm;

use crate::boot::{expect, Lab, BOOT};

/// Seconds a healthy slot needs before it is marked good.
const SYSTEM_HEAD: &str = "healthy_after = 1\nshutdown_grace = 3\n";

/// Version 1: on the first boot (no marker on /var yet) installs the bundle from /dev/vdb
/// and reboots; on later boots shows the status and powers off.
const V1_SERVICE: &str = r#"#!/bin/sh
echo "v1: running on slot $(cat /run/stele/slot)"
sleep 2
if grep -q test.install /proc/cmdline && [ ! -e /var/installed ]; then
  touch /var/installed; sync
  /run/stele/bin/stele update install /dev/vdb
  echo "v1: install exit $?"
  /run/stele/bin/stele update status
  kill -TERM 1
  sleep 100
fi
/run/stele/bin/stele update status
echo "v1: done"
kill -USR2 1
sleep 100
"#;

/// Version 2, healthy: waits to be marked good, shows the status, powers off.
const V2_SERVICE: &str = r#"#!/bin/sh
echo "v2: running on slot $(cat /run/stele/slot)"
sleep 3
/run/stele/bin/stele update status
echo "v2: done"
kill -USR2 1
sleep 100
"#;

/// Version 2, broken: crashes at once, every time.
const V2_CRASHING: &str = "#!/bin/sh\necho \"v2: crashing\"\nexit 1\n";

fn system(service: &str, restart: &str) -> String {
    format!(
        "{SYSTEM_HEAD}\n[[service]]\nname = \"app\"\nexec = [\"{service}\"]\nrestart = \"{restart}\"\n"
    )
}

/// A pseudo-random file, so that the image has some size to copy (and the power cut
/// has a window to land in).
fn ballast(len: usize, seed: u64) -> String {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + u8::try_from(x % 26).unwrap())
        })
        .collect()
}

struct Release {
    v1: PathBuf,
    v2: PathBuf,
    initrd: PathBuf,
}

/// Keys, v1 (rollback index 1) and v2 (index 2, with `v2_service`), the initramfs.
fn release(lab: &Lab, v2_service: &str, v2_restart: &str, ballast_len: usize) -> Release {
    lab.keygen("release");
    let r1 = lab.rootfs(
        "root1",
        &system("/bin/app", "never"),
        &[("bin/app", V1_SERVICE, 0o755)],
    );
    let big = ballast(ballast_len, 2);
    let r2 = lab.rootfs(
        "root2",
        &system("/bin/app", v2_restart),
        &[("bin/app", v2_service, 0o755), ("srv/ballast", &big, 0o644)],
    );
    Release {
        v1: lab.image(&r1, "release", "1.0.0", 1, "v1.img"),
        v2: lab.image(&r2, "release", "2.0.0", 2, "v2.img"),
        initrd: lab.initramfs(&["release"]),
    }
}

fn finish(mut vm: Vm) -> String {
    let status = vm.wait_exit(BOOT).expect("the VM powers off");
    assert!(status.success(), "QEMU exit status {status:?}");
    vm.console()
}

/// Install v2 from inside the guest, reboot: slot b boots, is marked good, status says so.
#[test]
fn install_in_guest_then_reboot_into_b_marked_good() {
    let lab = Lab::new();
    let rel = release(&lab, V2_SERVICE, "never", 0);
    let disk = lab.disk(&rel.v1, None);
    let mut vm = lab.boot_disks(&rel.initrd, &[&disk, &rel.v2], "test.install", false);
    expect(&mut vm, "stele: slot=a version=1.0.0");
    expect(&mut vm, "v1: running on slot a");
    expect(
        &mut vm,
        "stele: installed test 2.0.0 rollback_index=2 into slot b",
    );
    expect(&mut vm, "v1: install exit 0");
    expect(&mut vm, "stele: shutdown: reboot");
    expect(&mut vm, "stele: slot=b version=2.0.0 rollback_index=2");
    expect(&mut vm, "v2: running on slot b");
    expect(&mut vm, "stele: slot=b marked good");
    let b = expect(&mut vm, "slot b:");
    assert!(b.contains("booted") && b.contains("successful=yes"), "{b}");
    expect(&mut vm, "v2: done");
    finish(vm);
}

/// v2 crash-loops: each boot of b spends a try and stele-init reboots; when the tries are
/// gone the device is back on a without anyone touching it, and status shows b failed.
#[test]
fn crash_looping_update_falls_back_to_a() {
    let lab = Lab::new();
    let rel = release(&lab, V2_CRASHING, "on-failure", 0);
    let disk = lab.disk(&rel.v1, None);
    let mut vm = lab.boot_disks(&rel.initrd, &[&disk, &rel.v2], "test.install", false);
    expect(
        &mut vm,
        "stele: installed test 2.0.0 rollback_index=2 into slot b",
    );
    // One boot of b per try, each ended by stele-init after the service's third crash
    // (one expectation per boot, so the timeout never spans several boots).
    for _ in 0..3 {
        expect(&mut vm, "stele: slot=b version=2.0.0");
        expect(&mut vm, "v2: crashing");
        expect(&mut vm, "stele: shutdown: reboot");
    }
    expect(&mut vm, "stele: slot=b exhausted, falling back to a");
    expect(&mut vm, "stele: slot=a version=1.0.0");
    expect(&mut vm, "v1: running on slot a");
    let b = expect(&mut vm, "slot b:");
    assert!(b.contains("successful=no") && !b.contains("booted"), "{b}");
    expect(&mut vm, "v1: done");
    let console = finish(vm);
    // Three tries of b, then a: five boots in all (a, b, b, b, a).
    assert_eq!(
        console.matches("stele: slot=b version=2.0.0").count(),
        3,
        "tries of b"
    );
}

/// A bundle with a bad signature and one below the rollback floor are refused inside the
/// guest; the boot state's bytes on disk are unchanged and the next boot is a again.
#[test]
fn refused_bundles_leave_the_state_alone() {
    let lab = Lab::new();
    lab.keygen("release");
    lab.keygen("attacker");
    let service = r#"#!/bin/sh
sleep 3
state=$(grep '^state=' /run/stele/devices | cut -d= -f2)
before=$(dd if=$state bs=4096 count=2 2>/dev/null | md5sum)
for dev in /dev/vdb /dev/vdc; do
  /run/stele/bin/stele update install $dev
  echo "guest: install $dev exit $?"
done
after=$(dd if=$state bs=4096 count=2 2>/dev/null | md5sum)
if [ "$before" = "$after" ]; then echo "guest: state unchanged"; else echo "guest: STATE CHANGED $before $after"; fi
if [ -e /var/rebooted ]; then kill -USR2 1; else touch /var/rebooted; sync; kill -TERM 1; fi
sleep 100
"#;
    let r1 = lab.rootfs(
        "root1",
        &system("/bin/app", "never"),
        &[("bin/app", service, 0o755)],
    );
    let v1 = lab.image(&r1, "release", "1.0.0", 1, "v1.img");
    let r2 = lab.rootfs(
        "root2",
        &system("/bin/app", "never"),
        &[("bin/app", V2_SERVICE, 0o755)],
    );
    let evil = lab.image(&r2, "attacker", "2.0.0", 2, "evil.img");
    let old = lab.image(&r2, "release", "0.9.0", 0, "old.img");
    let initrd = lab.initramfs(&["release"]);
    let disk = lab.disk(&v1, None);
    let mut vm = lab.boot_disks(&initrd, &[&disk, &evil, &old], "", false);
    expect(&mut vm, "stele: slot=a marked good");
    let bad = expect(&mut vm, "stele: error:");
    assert!(
        bad.contains("threshold") || bad.contains("unknown key"),
        "{bad}"
    );
    expect(&mut vm, "guest: install /dev/vdb exit 1");
    let low = expect(&mut vm, "stele: error:");
    assert!(low.contains("rollback"), "{low}");
    expect(&mut vm, "guest: install /dev/vdc exit 1");
    expect(&mut vm, "guest: state unchanged");
    expect(&mut vm, "stele: shutdown: reboot");
    expect(&mut vm, "stele: slot=a version=1.0.0");
    expect(&mut vm, "guest: state unchanged");
    let console = finish(vm);
    assert!(!console.contains("STATE CHANGED"));
    assert!(!console.contains("slot=b version"), "slot b booted");
}

/// Offline install into a disk image on the build host, then boot it: slot b comes up and
/// is marked good.
#[test]
fn offline_install_into_disk_image_boots_b() {
    let lab = Lab::new();
    let rel = release(&lab, V2_SERVICE, "never", 0);
    let disk = lab.disk(&rel.v1, None);
    let out = lab.stele(&[
        "update",
        "install",
        "--disk",
        disk.to_str().unwrap(),
        "--key",
        "release.pub",
        rel.v2.to_str().unwrap(),
    ]);
    assert!(out.contains("into slot b"), "{out}");
    let status = lab.stele(&[
        "update",
        "status",
        "--disk",
        disk.to_str().unwrap(),
        "--key",
        "release.pub",
    ]);
    assert!(status.contains("slot b:"), "{status}");
    let mut vm = lab.boot(&rel.initrd, &disk, "", false);
    expect(&mut vm, "stele: slot=b version=2.0.0");
    expect(&mut vm, "stele: slot=b marked good");
    expect(&mut vm, "v2: done");
    finish(vm);
}

/// Partition `name` of a disk image: (offset, length) in bytes.
fn partition(disk: &Path, name: &str) -> (usize, usize) {
    let mut f = fs::File::open(disk).unwrap();
    let (off, len) =
        stele_image::gpt::find_partition(&mut f, name).expect("partition in the disk image");
    (usize::try_from(off).unwrap(), usize::try_from(len).unwrap())
}

/// Slot b is corrupted on disk after the install (one flipped byte inside a file of its
/// filesystem): dm-verity catches it when it is read, every try of b ends in a restart,
/// and the device falls back to a.
#[test]
fn corrupted_new_slot_falls_back_to_a() {
    let lab = Lab::new();
    let reader = "#!/bin/sh\necho \"v2: reading\"\ncat /srv/ballast > /dev/null && echo \"v2: READ-OK\"\nsleep 100\n";
    let rel = release(&lab, reader, "never", 64 * 1024);
    let disk = lab.disk(&rel.v1, None);
    lab.stele(&[
        "update",
        "install",
        "--disk",
        disk.to_str().unwrap(),
        "--key",
        "release.pub",
        rel.v2.to_str().unwrap(),
    ]);
    // Flip a byte of the ballast file inside slot b.
    let (off, len) = partition(&disk, "stele-root-b");
    let mut bytes = fs::read(&disk).unwrap();
    let needle = ballast(64, 2);
    let slot = &bytes[off..off + len];
    let at = slot
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .expect("ballast inside slot b")
        + 40_000;
    bytes[off + at] ^= 0x01;
    fs::write(&disk, &bytes).unwrap();

    let mut vm = lab.boot(&rel.initrd, &disk, "", false);
    // Each try of b ends in a dm-verity restart (one expectation per boot).
    for _ in 0..3 {
        expect(&mut vm, "stele: slot=b version=2.0.0");
        expect(&mut vm, "v2: reading");
        expect(&mut vm, "is corrupted");
    }
    expect(&mut vm, "stele: slot=b exhausted, falling back to a");
    expect(&mut vm, "stele: slot=a version=1.0.0");
    expect(&mut vm, "v1: done");
    let console = finish(vm);
    assert!(
        console.contains("is corrupted"),
        "dm-verity did not report the corruption"
    );
    assert!(
        !console.contains("v2: READ-OK"),
        "the corrupted file was read"
    );
}

/// Power cut: QEMU is killed at a moment of `stele update install` (after `marker` plus
/// `delay` ms); the next boot must come up verified on a valid slot: v1 in a or v2 in b,
/// and the one `expected` when the moment decides it.
fn power_cut_at(b_too: bool, moments: &[(&str, u64, Option<&str>)]) {
    let lab = Lab::new();
    let rel = release(&lab, V2_SERVICE, "never", 8 << 20);
    // With `b_too`, slot b starts with v1 as well, a good fallback whose record must not
    // carry over to the new content.
    let pristine = lab.disk(&rel.v1, b_too.then_some(rel.v1.as_path()));
    for (i, (marker, delay_ms, expected)) in moments.iter().enumerate() {
        let disk = lab.path(&format!("cut{i}.img"));
        fs::copy(&pristine, &disk).unwrap();
        let mut vm = lab.boot_disks(&rel.initrd, &[&disk, &rel.v2], "test.install", false);
        expect(&mut vm, marker);
        std::thread::sleep(Duration::from_millis(*delay_ms));
        vm.kill().expect("power cut");
        drop(vm);

        let mut vm = lab.boot(&rel.initrd, &disk, "", false);
        let verified = expect(&mut vm, " verified");
        assert!(
            verified.contains("slot=a version=1.0.0") || verified.contains("slot=b version=2.0.0"),
            "cut {i} ({marker} + {delay_ms} ms): {verified}"
        );
        if let Some(slot) = expected {
            assert!(
                verified.contains(&format!("slot={slot} ")),
                "cut {i} ({marker} + {delay_ms} ms) should boot slot {slot}: {verified}"
            );
        }
        expect(&mut vm, "stele: ready");
        let done = if verified.contains("slot=a") {
            "v1: done"
        } else {
            "v2: done"
        };
        expect(&mut vm, done);
        finish(vm);
    }
}

#[test]
fn power_cut_during_the_copy_still_boots() {
    power_cut_at(
        false,
        &[
            // Before the copy the target slot is already unbootable: a boots.
            ("stele: update: writing slot b", 0, Some("a")),
            ("stele: update: writing slot b", 400, None),
            ("stele: update: writing slot b", 1200, None),
        ],
    );
}

#[test]
fn power_cut_around_the_footer_and_state_write_still_boots() {
    power_cut_at(
        false,
        &[
            // During the state write: the old or the new state, never neither.
            ("stele: update: flipping boot state", 0, None),
            // The flip and the footer are on disk before this line: b boots (on trial).
            ("stele: update: footer written", 0, Some("b")),
            ("stele: installed test 2.0.0", 0, Some("b")),
        ],
    );
}

/// The same with a good fallback in b: cut during the copy, a boots (b has no footer);
/// cut during the flip, either a or the new b on trial, never b's old record.
#[test]
fn power_cut_with_a_good_old_image_in_b_still_boots() {
    power_cut_at(
        true,
        &[
            ("stele: update: writing slot b", 300, Some("a")),
            ("stele: update: flipping boot state", 0, None),
        ],
    );
}

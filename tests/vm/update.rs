//! A/B updates under QEMU: install inside the guest, boot counting and automatic fallback,
//! refused bundles, a corrupted new slot, power cuts during an install, offline install.
//!
//! The bundle reaches the guest as a second, read-only virtio disk (/dev/vdb); the guest
//! runs the on-device `stele` that stele-init publishes at /run/stele/bin/stele.

use std::fs;
use std::time::Duration;

use crate::fixture::{ballast, partition, Fixture, Guest, Rootfs};
use crate::util::{ok, stele};

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

/// A root tree whose one service, `/bin/app`, is `service`.
fn app_root<'a>(fx: &'a Fixture, name: &str, service: &str, restart: &str) -> Rootfs<'a> {
    fx.rootfs(name, &system("/bin/app", restart))
        .file("bin/app", service, 0o755)
}

/// `stele image build` of `root` as the product these tests update (name "test").
fn image(fx: &Fixture, root: &str, key: &str, version: &str, index: u64, out: &str) -> String {
    fx.image(root, key)
        .name("test")
        .version(version)
        .index(index)
        .build(out)
}

struct Release {
    v1: String,
    v2: String,
    initrd: String,
    /// The trusted public key.
    public: String,
}

/// Keys, v1 (rollback index 1) and v2 (index 2, with `v2_service`), the initramfs.
fn release(fx: &Fixture, v2_service: &str, v2_restart: &str, ballast_len: usize) -> Release {
    let (key, public) = fx.keygen("release");
    let r1 = app_root(fx, "root1", V1_SERVICE, "never").build();
    let r2 = app_root(fx, "root2", v2_service, v2_restart)
        .file("srv/ballast", ballast(ballast_len, 2), 0o644)
        .build();
    Release {
        v1: image(fx, &r1, &key, "1.0.0", 1, "v1.img"),
        v2: image(fx, &r2, &key, "2.0.0", 2, "v2.img"),
        initrd: fx.initramfs(&[&public]).build(),
        public,
    }
}

/// `stele update install --disk`: v2 into the disk image on the build host; returns stdout.
fn install_offline(rel: &Release, disk: &str) -> String {
    ok(stele(&[
        "update",
        "install",
        "--disk",
        disk,
        "--key",
        &rel.public,
        &rel.v2,
    ]))
}

/// Boots `disk` with v2 as /dev/vdb and `test.install`: v1's service installs it.
fn boot_installing(fx: &Fixture, rel: &Release, disk: &str) -> Guest {
    fx.boot(&rel.initrd, disk)
        .read_only_disk(&rel.v2)
        .append("test.install")
        .start()
}

/// Install v2 from inside the guest, reboot: slot b boots, is marked good, status says so.
#[test]
fn install_in_guest_then_reboot_into_b_marked_good() {
    let fx = Fixture::new();
    let rel = release(&fx, V2_SERVICE, "never", 0);
    let disk = fx.disk(&rel.v1).build();
    let mut vm = boot_installing(&fx, &rel, &disk);
    vm.expect("stele: slot=a version=1.0.0");
    vm.expect("v1: running on slot a");
    vm.expect("stele: installed test 2.0.0 rollback_index=2 into slot b");
    vm.expect("v1: install exit 0");
    vm.expect("stele: shutdown: reboot");
    vm.expect("stele: slot=b version=2.0.0 rollback_index=2");
    vm.expect("v2: running on slot b");
    vm.expect("stele: slot=b marked good");
    let b = vm.expect("slot b:");
    assert!(b.contains("booted") && b.contains("successful=yes"), "{b}");
    vm.expect("v2: done");
    vm.powered_off();
}

/// v2 crash-loops: each boot of b spends a try and stele-init reboots; when the tries are
/// gone the device is back on a without anyone touching it, and status shows b failed.
#[test]
fn crash_looping_update_falls_back_to_a() {
    let fx = Fixture::new();
    let rel = release(&fx, V2_CRASHING, "on-failure", 0);
    let disk = fx.disk(&rel.v1).build();
    let mut vm = boot_installing(&fx, &rel, &disk);
    vm.expect("stele: installed test 2.0.0 rollback_index=2 into slot b");
    // One boot of b per try, each ended by stele-init after the service's third crash
    // (one expectation per boot, so the timeout never spans several boots).
    for _ in 0..3 {
        vm.expect("stele: slot=b version=2.0.0");
        vm.expect("v2: crashing");
        vm.expect("stele: shutdown: reboot");
    }
    vm.expect("stele: slot=b exhausted, falling back to a");
    vm.expect("stele: slot=a version=1.0.0");
    vm.expect("v1: running on slot a");
    let b = vm.expect("slot b:");
    assert!(b.contains("successful=no") && !b.contains("booted"), "{b}");
    vm.expect("v1: done");
    let console = vm.powered_off();
    // Three tries of b, then a: five boots in all (a, b, b, b, a).
    assert_eq!(
        console.matches("stele: slot=b version=2.0.0").count(),
        3,
        "tries of b"
    );
}

/// A bundle with a bad signature and one below the rollback floor are refused inside the
/// guest; the boot state's copies on disk are unchanged, the flight recorder holds both
/// refusals, and the next boot is a again.
#[test]
fn refused_bundles_leave_the_state_alone() {
    let fx = Fixture::new();
    let (key, public) = fx.keygen("release");
    let (attacker, _) = fx.keygen("attacker");
    let service = r#"#!/bin/sh
sleep 3
state=$(grep '^state=' /run/stele/devices | cut -d= -f2)
# The two state copies (at 0 and 1 MiB); the flight recorder between them records the
# refusals.
copies() { dd if=$state bs=4096 count=1 2>/dev/null; dd if=$state bs=4096 skip=256 count=1 2>/dev/null; }
before=$(copies | md5sum)
for dev in /dev/vdb /dev/vdc; do
  /run/stele/bin/stele update install $dev
  echo "guest: install $dev exit $?"
done
after=$(copies | md5sum)
/run/stele/bin/stele update history | grep -c install-refused | sed 's/^/guest: refusals recorded /'
if [ "$before" = "$after" ]; then echo "guest: state unchanged"; else echo "guest: STATE CHANGED $before $after"; fi
if [ -e /var/rebooted ]; then kill -USR2 1; else touch /var/rebooted; sync; kill -TERM 1; fi
sleep 100
"#;
    let r1 = app_root(&fx, "root1", service, "never").build();
    let v1 = image(&fx, &r1, &key, "1.0.0", 1, "v1.img");
    let r2 = app_root(&fx, "root2", V2_SERVICE, "never").build();
    let evil = image(&fx, &r2, &attacker, "2.0.0", 2, "evil.img");
    let old = image(&fx, &r2, &key, "0.9.0", 0, "old.img");
    let initrd = fx.initramfs(&[&public]).build();
    let disk = fx.disk(&v1).build();
    let mut vm = fx
        .boot(&initrd, &disk)
        .read_only_disk(&evil)
        .read_only_disk(&old)
        .start();
    vm.expect("stele: slot=a marked good");
    let bad = vm.expect("stele: error:");
    assert!(
        bad.contains("threshold") || bad.contains("unknown key"),
        "{bad}"
    );
    vm.expect("guest: install /dev/vdb exit 1");
    let low = vm.expect("stele: error:");
    assert!(low.contains("rollback"), "{low}");
    vm.expect("guest: install /dev/vdc exit 1");
    vm.expect("guest: refusals recorded 2");
    vm.expect("guest: state unchanged");
    vm.expect("stele: shutdown: reboot");
    vm.expect("stele: slot=a version=1.0.0");
    vm.expect("guest: refusals recorded 4");
    vm.expect("guest: state unchanged");
    let console = vm.powered_off();
    assert!(!console.contains("STATE CHANGED"));
    assert!(!console.contains("slot=b version"), "slot b booted");
}

/// Offline install into a disk image on the build host, then boot it: slot b comes up and
/// is marked good.
#[test]
fn offline_install_into_disk_image_boots_b() {
    let fx = Fixture::new();
    let rel = release(&fx, V2_SERVICE, "never", 0);
    let disk = fx.disk(&rel.v1).build();
    let out = install_offline(&rel, &disk);
    assert!(out.contains("into slot b"), "{out}");
    let status = ok(stele(&[
        "update",
        "status",
        "--disk",
        &disk,
        "--key",
        &rel.public,
    ]));
    assert!(status.contains("slot b:"), "{status}");
    let mut vm = fx.boot(&rel.initrd, &disk).start();
    vm.expect("stele: slot=b version=2.0.0");
    vm.expect("stele: slot=b marked good");
    vm.expect("v2: done");
    vm.powered_off();
}

/// Slot b is corrupted on disk after the install (one flipped byte inside a file of its
/// filesystem): dm-verity catches it when it is read, every try of b ends in a restart,
/// and the device falls back to a.
#[test]
fn corrupted_new_slot_falls_back_to_a() {
    let fx = Fixture::new();
    let reader = "#!/bin/sh\necho \"v2: reading\"\ncat /srv/ballast > /dev/null && echo \"v2: READ-OK\"\nsleep 100\n";
    let rel = release(&fx, reader, "never", 64 * 1024);
    let disk = fx.disk(&rel.v1).build();
    install_offline(&rel, &disk);
    // Flip a byte of the ballast file inside slot b.
    let (off, len) = partition(&disk, "stele-root-b");
    let (off, len) = (usize::try_from(off).unwrap(), usize::try_from(len).unwrap());
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

    let mut vm = fx.boot(&rel.initrd, &disk).start();
    // Each try of b ends in a dm-verity restart (one expectation per boot).
    for _ in 0..3 {
        vm.expect("stele: slot=b version=2.0.0");
        vm.expect("v2: reading");
        vm.expect("is corrupted");
    }
    vm.expect("stele: slot=b exhausted, falling back to a");
    vm.expect("stele: slot=a version=1.0.0");
    vm.expect("v1: done");
    let console = vm.powered_off();
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
    let fx = Fixture::new();
    let rel = release(&fx, V2_SERVICE, "never", 8 << 20);
    // With `b_too`, slot b starts with v1 as well, a good fallback whose record must not
    // carry over to the new content.
    let mut pristine = fx.disk(&rel.v1);
    if b_too {
        pristine = pristine.b(&rel.v1);
    }
    let pristine = pristine.build();
    for (i, (marker, delay_ms, expected)) in moments.iter().enumerate() {
        let disk = fx.p(&format!("cut{i}.img"));
        fs::copy(&pristine, &disk).unwrap();
        let mut vm = boot_installing(&fx, &rel, &disk);
        vm.expect(marker);
        std::thread::sleep(Duration::from_millis(*delay_ms));
        vm.power_cut();

        let mut vm = fx.boot(&rel.initrd, &disk).start();
        let verified = vm.expect(" verified");
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
        vm.expect("stele: ready");
        let done = if verified.contains("slot=a") {
            "v1: done"
        } else {
            "v2: done"
        };
        vm.expect(done);
        vm.powered_off();
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

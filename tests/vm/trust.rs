//! Trust under QEMU, as an attacker with the disk, the command line or a USB stick would
//! try it: a good slot corrupted on disk (fallback, or bounded reboots when nothing else
//! can boot), RUST_MIN_STACK on the command line, partitions on another disk (at the scan
//! or plugged in late), services as users on a nosuid/nodev/noexec data partition,
//! another product's image, a lost state, a state at the end of its sequence, an
//! old-layout disk, and a stalled `stele update install -`.
//!
//! Needs STELE_KERNEL, STELE_MODULES and STELE_INIT, set by `cargo xtask test`.

use crate::fixture::{
    ballast, change_partition, change_state, gpt_image, old_layout, old_layout_copies,
    partition_bytes, rename_partitions, state, Fixture, Slot,
};
use crate::util::ok;

/// A service that reads `/srv/ballast` (so every data block of it goes through
/// dm-verity), says so, and powers the machine off a few seconds later.
const READER: &str = "#!/bin/sh
echo \"reader: slot $(cat /run/stele/slot)\"
cat /srv/ballast > /dev/null && echo \"reader: READ-OK\"
sleep 4
kill -USR2 1
sleep 100
";

const READER_SYSTEM: &str =
    "healthy_after = 2\nshutdown_grace = 2\n[[service]]\nname = \"reader\"\nexec = [\"/bin/reader\"]\nrestart = \"never\"\n";

/// An image (name demo, rollback index 1) whose one service is `service`.
fn image(
    fx: &Fixture,
    key: &str,
    out: &str,
    system: &str,
    service: &str,
    ballast_len: usize,
) -> String {
    let root = fx
        .rootfs(&format!("{out}.root"), system)
        .file("bin/reader", service, 0o755)
        .file("srv/ballast", ballast(ballast_len, 7), 0o644)
        .build();
    fx.image(&root, key).build(out)
}

/// A root tree whose one service, `/bin/reader`, is `service` (READER_SYSTEM).
fn reader_root(fx: &Fixture, service: &str) -> String {
    fx.rootfs("root", READER_SYSTEM)
        .file("bin/reader", service, 0o755)
        .build()
}

/// `stele disk create --a A [--b B]` with 16 MiB slots and no data partition.
fn small_disk(fx: &Fixture, a: &str, b: Option<&str>) -> String {
    let disk = fx.disk(a).slot_size("16M").no_data();
    match b {
        Some(b) => disk.b(b).build(),
        None => disk.build(),
    }
}

/// Flips one byte inside `/srv/ballast` in slot a's partition (signatures and hash tree
/// intact: only dm-verity on read can see it).
fn corrupt_slot_a(disk: &str) {
    let needle = ballast(64, 7);
    change_partition(disk, "stele-root-a", |slot| {
        let at = slot
            .windows(needle.len())
            .position(|w| w == needle.as_bytes())
            .expect("the ballast inside slot a");
        slot[at + 40_000] ^= 0x01;
    });
}

/// A good slot whose data is corrupted on disk restarts the machine when that block is
/// read (restart_on_corruption). The next boot knows the boot was not confirmed and boots
/// the other good slot; the damaged one stays recorded (it used to boot again, forever).
#[test]
fn a_corrupted_good_slot_falls_back_to_the_other() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("k");
    let img = image(&fx, &k, "r.img", READER_SYSTEM, READER, 64 << 10);
    let initrd = fx
        .initramfs(&[&p])
        .config("failure_delay_secs = 1\n")
        .build();
    let d = small_disk(&fx, &img, Some(&img));
    corrupt_slot_a(&d);
    let mut vm = fx.boot(&initrd, &d).start();
    vm.expect_all(&[
        "stele: slot=a version=1.0.0",
        "reader: slot a",
        "is corrupted",
        "Restarting system with command 'dm-verity device corrupted'",
        "stele: warning: slot=a failed 1 boot(s) before it was confirmed healthy (a dm-verity corruption restart, a panic, a hang or a power cut); falling back to b",
        "stele: slot=b version=1.0.0",
        "reader: READ-OK",
        "stele: slot=b marked good",
        "stele: halted",
    ]);
    let console = vm.powered_off();
    assert_eq!(
        console.matches("reader: slot a").count(),
        1,
        "a booted again"
    );
    let st = state(&d);
    assert!(
        st.slots[0].successful && st.slots[0].unconfirmed == 1,
        "{st:?}"
    );
    assert!(
        st.slots[1].successful && st.slots[1].unconfirmed == 0,
        "{st:?}"
    );
    assert_eq!(st.choose(), Some(Slot::B));
}

/// With no other slot that can boot, the damaged one keeps booting: every boot logged,
/// from the third one on after failure_delay_secs, the count on disk going up.
#[test]
fn a_corrupted_slot_with_no_fallback_keeps_booting_logged_and_bounded() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("k");
    let img = image(&fx, &k, "r.img", READER_SYSTEM, READER, 64 << 10);
    let initrd = fx
        .initramfs(&[&p])
        .config("failure_delay_secs = 1\n")
        .build();
    let d = small_disk(&fx, &img, None);
    corrupt_slot_a(&d);
    let mut vm = fx.boot(&initrd, &d).start();
    vm.expect_all(&["stele: slot=a version=1.0.0", "is corrupted"]);
    for (n, wait) in [(1, 0), (2, 1)] {
        vm.expect(&format!(
            "stele: warning: slot=a failed {n} boot(s) in a row before it was confirmed healthy (a dm-verity corruption restart, a panic, a hang or a power cut) and no other slot can boot: booting it anyway in {wait}s"
        ));
        vm.expect_all(&["stele: slot=a version=1.0.0", "is corrupted"]);
    }
    vm.power_cut();
    let st = state(&d);
    assert!(
        st.slots[0].successful && st.slots[0].priority == 2 && st.slots[0].unconfirmed >= 3,
        "{st:?}"
    );
}

/// The kernel hands unknown `key=value` words of its command line to PID 1 as its
/// environment. RUST_MIN_STACK=1 TiB made the parallel full verification (2 CPUs, a data
/// area of several 256 KiB chunks) fail to spawn its threads and PID 1 panic; the init
/// clears its environment first, and neither it nor a service sees the variable.
#[test]
fn the_command_line_cannot_reach_pid1s_environment() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("k");
    let service = "#!/bin/sh\necho \"env: RUST_MIN_STACK seen $(grep -c RUST_MIN_STACK /proc/self/environ) times\"\nsleep 3\nkill -USR2 1\nsleep 100\n";
    let img = image(&fx, &k, "r.img", READER_SYSTEM, service, 2 << 20);
    let initrd = fx.initramfs(&[&p]).build();
    let d = small_disk(&fx, &img, None);
    let mut vm = fx
        .boot(&initrd, &d)
        .cpus(2)
        .append("RUST_MIN_STACK=1099511627776 stele.verify=full")
        .no_reboot()
        .start();
    // (/proc/1/environ shows the block the kernel wrote at exec, not PID 1's environment
    // now: what shows the variable is gone is that the threads of the full verification
    // start.)
    vm.expect_all(&[
        "2 CPUs",
        "stele: slot=a version=1.0.0",
        "env: RUST_MIN_STACK seen 0 times",
        "stele: slot=a marked good",
        "stele: halted",
    ]);
    let console = vm.powered_off();
    assert!(!console.contains("stele: panic"), "{console}");
}

/// A second disk (a USB stick) with a valid `stele-root-b` and a `stele-data`: neither is
/// used (the first used to make the boot refuse, the second to be mounted at /var); both
/// are named in a warning, at the scan and again before the slot is marked good.
#[test]
fn partitions_on_another_disk_are_ignored() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("k");
    let probe = "#!/bin/sh\necho \"probe: slot=$(cat /run/stele/slot) var=$(/bin/busybox awk '$2==\"/var\"{print $3}' /proc/mounts)\"\nsleep 4\nkill -USR2 1\nsleep 100\n";
    let img = image(&fx, &k, "r.img", READER_SYSTEM, probe, 0);
    let initrd = fx.initramfs(&[&p]).build();
    let d = small_disk(&fx, &img, None);
    let usb = fx
        .disk(&img)
        .b(&img)
        .out("usb.img")
        .slot_size("16M")
        .data_size("16M")
        .build();
    rename_partitions(
        &usb,
        &[("stele-state", "usb-state"), ("stele-root-a", "usb-root-a")],
    );
    let mut vm = fx
        .boot(&initrd, &d)
        .read_only_disk(&usb)
        .no_reboot()
        .start();
    let ignored = |name: &str, dev: &str| {
        format!("stele: warning: partition {name} on {dev} is not on the disk of the boot state (/dev/vda1): ignored")
    };
    vm.expect_all(&[
        &ignored("stele-root-b", "/dev/vdb3"),
        &ignored("stele-data", "/dev/vdb4"),
        "stele: slot=a version=1.0.0",
    ]);
    let probe = vm.expect("probe: slot=a var=");
    assert!(
        !probe.contains("ext4"),
        "the stick's data partition is mounted: {probe}"
    );
    vm.expect_all(&[
        &ignored("stele-root-b", "/dev/vdb3"),
        "stele: slot=a marked good",
    ]);
    vm.powered_off();
}

/// A partition that appears after the boot's scan (here a loop device a service attaches,
/// as a USB stick plugged in later would) is reported before the slot is marked good.
#[test]
fn a_partition_plugged_in_late_is_reported() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("k");
    let attach = "#!/bin/sh\nsleep 1\n/bin/busybox losetup -r -P /dev/loop0 /srv/usb.img && echo \"late: attached\"\nsleep 5\nkill -USR2 1\nsleep 100\n";
    let system = "healthy_after = 4\nshutdown_grace = 2\n[[service]]\nname = \"attach\"\nexec = [\"/bin/reader\"]\nrestart = \"never\"\n";
    let root = fx
        .rootfs("root", system)
        .file("bin/reader", attach, 0o755)
        .file("srv/usb.img", gpt_image(&["stele-data"]), 0o644)
        .build();
    let img = fx.image(&root, &k).build("r.img");
    let initrd = fx.initramfs(&[&p]).args(&["--module", "loop"]).build();
    let d = small_disk(&fx, &img, None);
    let mut vm = fx.boot(&initrd, &d).no_reboot().start();
    vm.expect_all(&[
        "stele: ready",
        "late: attached",
        "stele: warning: partition stele-data on /dev/loop0p1 is not on the disk of the boot state (/dev/vda1): ignored",
        "stele: slot=a marked good",
    ]);
    vm.powered_off();
}

/// A service runs as the user, group and supplementary groups system.toml names (looked
/// up in the image's own /etc/passwd and /etc/group) with no_new_privs; the data partition
/// is mounted nosuid,nodev,noexec plus boot.toml's options, and that user cannot write it.
#[test]
fn services_run_as_users_on_a_locked_down_data_partition() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("k");
    let whoami = "#!/bin/sh\necho \"who: uid $(/bin/busybox id -u) gid $(/bin/busybox id -g) groups $(/bin/busybox id -G)\"\necho \"who: nnp $(grep NoNewPrivs /proc/self/status | cut -f2)\"\necho \"who: var $(grep ' /var ' /proc/mounts | cut -d' ' -f4)\"\ntouch /var/x 2>/dev/null && echo \"who: var writable\" || echo \"who: var not writable\"\n";
    let stop = "#!/bin/sh\nsleep 5\nkill -USR2 1\nsleep 100\n";
    let system = "healthy_after = 2\nshutdown_grace = 2\n[[service]]\nname = \"whoami\"\nexec = [\"/bin/whoami\"]\nrestart = \"never\"\nuser = \"app\"\nsupplementary_groups = [\"audio\", 44]\nno_new_privs = true\n[[service]]\nname = \"stop\"\nexec = [\"/bin/stop\"]\nrestart = \"never\"\n";
    let root = fx
        .rootfs("root", system)
        .file("bin/whoami", whoami, 0o755)
        .file("bin/stop", stop, 0o755)
        .file(
            "etc/passwd",
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/srv:/bin/sh\n",
            0o644,
        )
        .file("etc/group", "root:x:0:\naudio:x:29:\napp:x:1001:\n", 0o644)
        .build();
    let img = fx.image(&root, &k).build("r.img");
    let initrd = fx
        .initramfs(&[&p])
        .config("data_options = [\"nosuid\", \"nodev\", \"noexec\", \"noatime\"]\n")
        .build();
    let d = fx.disk(&img).slot_size("16M").data_size("16M").build();
    let mut vm = fx.boot(&initrd, &d).no_reboot().start();
    let id = vm.expect("who: uid ");
    assert!(id.contains("who: uid 1000 gid 1001 groups"), "{id}");
    assert!(id.contains(" 29") && id.contains(" 44"), "{id}");
    vm.expect("who: nnp 1");
    let var = vm.expect("who: var ");
    for o in ["nosuid", "nodev", "noexec", "noatime"] {
        assert!(var.contains(o), "{var}");
    }
    vm.expect_all(&[
        "who: var not writable",
        "stele: slot=a marked good",
        "stele: halted",
    ]);
    vm.powered_off();
}

/// An initramfs bound to product "router" refuses slot a holding "demo" (signed by the
/// same trusted key: it used to boot) and boots slot b holding "router".
#[test]
fn another_products_image_is_refused_at_boot() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("k");
    let root = reader_root(&fx, READER);
    let demo = fx.image(&root, &k).build("demo.img");
    let router = fx.image(&root, &k).name("router").build("router.img");
    let initrd = fx.initramfs(&[&p]).args(&["--name", "router"]).build();
    let d = small_disk(&fx, &demo, Some(&router));
    let mut vm = fx.boot(&initrd, &d).no_reboot().start();
    vm.expect_all(&[
        "stele: refused slot a: product refused: the image is \"demo\", this device is bound to \"router\"",
        "stele: slot=b version=1.0.0",
        "stele: slot=b marked good",
    ]);
    vm.powered_off();
    assert_eq!(
        state(&d).slots[0].priority,
        0,
        "another product's slot is marked"
    );
}

/// Both copies of the state erased, both slots intact: the boot rebuilds the state from
/// the slots that verify (floor at their rollback index) and boots (it used to refuse
/// forever: "no valid boot state").
#[test]
fn a_lost_state_is_rebuilt_from_the_slots() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("k");
    let root = reader_root(&fx, READER);
    let img = fx.image(&root, &k).index(2).build("v2.img");
    let initrd = fx.initramfs(&[&p]).build();
    let d = small_disk(&fx, &img, Some(&img));
    change_partition(&d, "stele-state", |b| b.fill(0));
    let mut vm = fx.boot(&initrd, &d).no_reboot().start();
    vm.expect_all(&[
        "stele: warning: no valid boot state on /dev/vda1: rebuilt from the slots that verify (a: rollback_index 2, b: rollback_index 2): rollback floor 2",
        "stele: slot=a version=1.0.0 rollback_index=2",
        "stele: slot=a marked good",
    ]);
    vm.powered_off();
    let st = state(&d);
    assert_eq!(st.rollback_floor, 2);
    assert!(st.slots[0].successful && st.slots[1].successful, "{st:?}");
}

/// A state whose valid copy is at the last sequence: b's try is recorded (it used to be
/// refused: "its try could not be recorded") and b is marked good, the sequence wrapping.
#[test]
fn a_state_at_its_last_sequence_still_counts_and_marks_good() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("k");
    let root = reader_root(&fx, READER);
    let img = fx.image(&root, &k).build("r.img");
    let initrd = fx.initramfs(&[&p]).build();
    let d = small_disk(&fx, &img, Some(&img));
    for at in [1 << 62, 1 << 63, u64::MAX - 2] {
        change_state(&d, |st| st.sequence = at);
    }
    let st = change_state(&d, |st| st.activate_new(Slot::B, 3));
    assert_eq!(st.sequence, u64::MAX);
    let mut vm = fx.boot(&initrd, &d).no_reboot().start();
    vm.expect_all(&["stele: slot=b version=1.0.0", "stele: slot=b marked good"]);
    let console = vm.powered_off();
    assert!(!console.contains("could not be recorded"), "{console}");
    let st = state(&d);
    assert!(st.slots[1].successful, "{st:?}");
    assert!(st.sequence < 5, "the sequence wrapped: {st:?}");
}

/// A disk laid out by an older stele (1 MiB state, copies 4 KiB apart) with an update on
/// trial in b: the boot spends b's try and marks it good there, in the old copies.
#[test]
fn an_old_layout_disk_boots_and_is_written_in_place() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("k");
    let root = reader_root(&fx, READER);
    let v1 = fx.image(&root, &k).build("v1.img");
    let v2 = fx
        .image(&root, &k)
        .version("2.0.0")
        .index(2)
        .build("v2.img");
    let initrd = fx.initramfs(&[&p]).build();
    let new = small_disk(&fx, &v1, None);
    ok(crate::util::stele(&[
        "update", "install", "--disk", &new, "--key", &p, &v2,
    ]));
    let old = fx.p("old.img");
    old_layout(&new, &old);
    assert_eq!(partition_bytes(&old, "stele-state").len(), 1 << 20);
    let mut vm = fx.boot(&initrd, &old).no_reboot().start();
    vm.expect_all(&["stele: slot=b version=2.0.0", "stele: slot=b marked good"]);
    vm.powered_off();
    let copies = old_layout_copies(&old);
    let newest = copies
        .iter()
        .flatten()
        .max_by_key(|c| c.sequence)
        .expect("a valid copy at 0 or 4096");
    assert!(newest.slots[1].successful, "{copies:?}");
    assert_eq!(newest.rollback_floor, 2);
}

/// `stele update install -` reading a stream that stalls holds the state lock no longer:
/// PID 1 marks the slot good meanwhile and `stele update mark-good` works (both used to
/// wait for the install to end: "boot state busy").
#[test]
fn a_stalled_install_does_not_block_mark_good() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("k");
    let stall = "#!/bin/sh\n(/bin/busybox sleep 1000 | /run/stele/bin/stele update install -) &\necho \"stall: install started\"\nsleep 5\n/run/stele/bin/stele update mark-good\necho \"stall: mark-good exit $?\"\nkill -USR2 1\nsleep 100\n";
    let root = reader_root(&fx, stall);
    let img = fx.image(&root, &k).build("r.img");
    let initrd = fx.initramfs(&[&p]).build();
    let d = small_disk(&fx, &img, None);
    let mut vm = fx.boot(&initrd, &d).no_reboot().start();
    vm.expect_all(&[
        "stall: install started",
        "stele: slot=a marked good",
        "stall: mark-good exit 0",
    ]);
    let console = vm.powered_off();
    assert!(
        console.contains("stele: update: reading the bundle from stdin"),
        "the install did not start: {console}"
    );
    assert!(!console.contains("boot state busy"), "{console}");
}

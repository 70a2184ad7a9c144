//! Stage 1 → stage 2 under QEMU (direct kernel boot as stage 1, the real Debian kernel):
//! kexec into the slot's own kernel with stage 2 verifying the same slot and spending no
//! try; the same-kernel fast path; a slot kernel that panics and one that hangs (the
//! watchdog survives kexec and resets the machine) falling back after their tries, with the
//! state on disk checked afterwards; stage 2 verifying with its own keys and product, and
//! counting no unconfirmed boot of a good slot; an update carrying a new kernel and a new
//! stele-init installed inside the guest, and an older image refused below the floor; the
//! watchdog handed over to an exec'd init.
//!
//! The slot's "new" kernel is the Debian kernel with its signature stripped
//! (`sbattach --remove`): another sha256, the same kernel.

use sha2::{Digest, Sha256};

use crate::fixture::{env_path, Fixture, Guest};
use crate::util::{need_tool, ok, stele};

/// The first 12 hex digits of a file's sha256, as stele-init prints them.
fn short_sha(path: &str) -> String {
    let d = Sha256::digest(std::fs::read(path).unwrap());
    stele_verifier::hex::encode(&d[..6])
}

/// The set-up's (Debian) kernel: stage 1's.
fn debian_kernel() -> String {
    env_path("STELE_KERNEL").display().to_string()
}

/// The Debian kernel without its Authenticode signature: a kernel other than the running
/// one, byte for byte.
pub fn stripped_kernel(fx: &Fixture) -> String {
    let k = fx.p("vmlinuz.unsigned");
    std::fs::copy(debian_kernel(), &k).unwrap();
    need_tool("sbattach");
    let o = std::process::Command::new("sbattach")
        .arg("--remove")
        .arg(&k)
        .output()
        .unwrap();
    assert!(o.status.success(), "sbattach --remove: {o:?}");
    assert_ne!(short_sha(&k), short_sha(&debian_kernel()));
    k
}

/// Keys and the stage-2 initramfs `out` (trusting release.pem) with `extra` options.
fn stage2(fx: &Fixture, public: &str, out: &str, extra: &[&str]) -> String {
    fx.initramfs(&[public])
        .args(&["--stage2"])
        .args(extra)
        .out(out)
        .build()
}

/// Stage 1 that knows the running (Debian) kernel, with boot.toml `config`.
fn stage1(fx: &Fixture, public: &str, config: &str, extra: &[&str]) -> String {
    fx.initramfs(&[public])
        .config(config)
        .args(&["--kernel", &debian_kernel()])
        .args(extra)
        .out("stage1.cpio")
        .build()
}

/// A slot image (name `test`) of `root` carrying `kernel` and `initrd` (`console=ttyS0`
/// for stage 2).
fn kernel_image(
    fx: &Fixture,
    (root, key): (&str, &str),
    (version, index): (&str, u64),
    (kernel, initrd): (&str, &str),
    out: &str,
) -> String {
    fx.image(root, key)
        .name("test")
        .version(version)
        .index(index)
        .args(&["--kernel", kernel, "--initrd", initrd])
        .args(&["--kernel-cmdline", "console=ttyS0"])
        .build(out)
}

/// A handmade initrd with busybox and `init` as /init (or no /init at all).
fn raw_initrd(fx: &Fixture, out: &str, init: Option<&str>) -> String {
    let mut a = stele_image::cpio::Archive::new(0);
    for d in ["bin", "dev", "proc"] {
        a.add_dir(d, 0o755).unwrap();
    }
    a.add_char_dev("dev/console", 0o600, 5, 1).unwrap();
    a.add_file("bin/busybox", 0o755, std::fs::read("/bin/busybox").unwrap())
        .unwrap();
    if let Some(script) = init {
        a.add_file("init", 0o755, script.as_bytes().to_vec())
            .unwrap();
    }
    std::fs::write(fx.path(out), a.to_bytes().unwrap()).unwrap();
    fx.p(out)
}

/// `stele update status --disk` of the disk the guest left behind.
fn status_on_disk(disk: &str, public: &str) -> String {
    ok(stele(&[
        "update", "status", "--disk", disk, "--key", public,
    ]))
}

fn line<'a>(status: &'a str, slot: &str) -> &'a str {
    status
        .lines()
        .find(|l| l.starts_with(&format!("slot {slot}:")))
        .unwrap_or_else(|| panic!("no slot {slot} in {status}"))
}

/// The image's service: shows what the kernel was told and the state, waits to be marked
/// good, powers off.
const SHOW_AND_POWER_OFF: &str = r#"#!/bin/sh
echo "svc: cmdline=$(cat /proc/cmdline)"
/run/stele/bin/stele update status | while read l; do echo "svc: $l"; done
sleep 3
echo "svc: done"
kill -USR2 1
sleep 100
"#;

const SYSTEM: &str = "healthy_after = 2\nshutdown_grace = 3\n\n[[service]]\nname = \"app\"\nexec = [\"/bin/app\"]\nrestart = \"never\"\n";

/// A root tree whose one service, /bin/app, is `app`.
fn app_root(fx: &Fixture, name: &str, system: &str, app: &str) -> String {
    fx.rootfs(name, system).file("bin/app", app, 0o755).build()
}

/// The release of these tests: the signing key, its public key.
fn release(fx: &Fixture) -> (String, String) {
    fx.keygen("release")
}

/// v1 (no kernel of its own) in slot a, and an update `v2` installed into slot b on the
/// build host: b on trial with three tries, a the good fallback.
fn updated_disk(fx: &Fixture, (key, public): (&str, &str), v2: &str) -> String {
    let r1 = app_root(fx, "root1", SYSTEM, SHOW_AND_POWER_OFF);
    let v1 = fx
        .image(&r1, key)
        .name("test")
        .version("1.0.0")
        .build("v1.img");
    let disk = fx.disk(&v1).build();
    ok(stele(&[
        "update", "install", "--disk", &disk, "--key", public, v2,
    ]));
    disk
}

#[test]
fn kexec_into_the_slots_kernel_and_stage_2_verifies_the_same_slot() {
    let fx = Fixture::new();
    let (key, public) = release(&fx);
    let kernel = stripped_kernel(&fx);
    let stage2 = stage2(&fx, &public, "stage2.cpio", &[]);
    let r2 = app_root(&fx, "root2", SYSTEM, SHOW_AND_POWER_OFF);
    let v2 = kernel_image(&fx, (&r2, &key), ("2.0.0", 2), (&kernel, &stage2), "v2.img");
    let disk = updated_disk(&fx, (&key, &public), &v2);
    let initrd = stage1(&fx, &public, "", &[]);
    // Nothing on stage 1's command line can skip the try.
    let mut vm = fx.boot(&initrd, &disk).append("stele.stage2=b").start();
    vm.expect("stele: warning: kernel option stele.stage2=b ignored: this is a stage-1 initramfs");
    let first = vm.expect(" verified");
    assert!(first.contains("stele: slot=b version=2.0.0"), "{first}");
    let kexec = format!("stele: slot=b kernel {} kexec", short_sha(&kernel));
    vm.expect(&kexec);
    let phases = vm.expect("stele: boot phases:");
    assert!(
        phases.contains("stage=1 ") && phases.contains(" kexec="),
        "{phases}"
    );
    vm.expect("kexec_core: Starting new kernel");
    vm.expect("Command line: console=ttyS0 stele.stage2=b panic=10");
    vm.expect("stele: stele-init ");
    let second = vm.expect(" verified");
    assert!(second.contains("stele: slot=b version=2.0.0"), "{second}");
    let phases = vm.expect("stele: boot phases:");
    assert!(
        phases.contains("stage=2 ") && !phases.contains("kexec"),
        "{phases}"
    );
    vm.expect("stele: ready");
    // Stage 1 spent one of the three tries; stage 2 spent none.
    let b = vm.expect("svc: slot b:");
    assert!(
        b.contains("booted") && b.contains("tries_remaining=2 successful=no"),
        "{b}"
    );
    vm.expect_all(&["stele: slot=b marked good", "svc: done"]);
    vm.powered_off();
    assert_eq!(vm.boot_count(), 2, "two kernel boots: stage 1 and stage 2");
    assert_eq!(vm.count(&kexec), 1, "one hand-over");
    let st = status_on_disk(&disk, &public);
    assert!(line(&st, "b").contains("successful=yes"), "{st}");
}

#[test]
fn the_same_kernel_boots_in_place_without_kexec() {
    let fx = Fixture::new();
    let (key, public) = release(&fx);
    let stage2 = stage2(&fx, &public, "stage2.cpio", &[]);
    let r = app_root(&fx, "root", SYSTEM, SHOW_AND_POWER_OFF);
    let kernel = debian_kernel();
    let img = kernel_image(
        &fx,
        (&r, &key),
        ("1.0.0", 1),
        (&kernel, &stage2),
        "slot.img",
    );
    let disk = fx.disk(&img).build();
    let initrd = stage1(&fx, &public, "", &[]);
    let mut vm = fx.boot(&initrd, &disk).start();
    vm.expect("stele: slot=a version=1.0.0");
    vm.expect(&format!(
        "stele: slot=a kernel {} is the running kernel: no kexec",
        short_sha(&kernel)
    ));
    let phases = vm.expect("stele: boot phases:");
    assert!(
        phases.contains("stage=1 ") && !phases.contains("kexec"),
        "{phases}"
    );
    vm.expect("stele: ready");
    let cmdline = vm.expect("svc: cmdline=");
    assert!(!cmdline.contains("stele.stage2"), "{cmdline}");
    vm.expect("svc: done");
    let console = vm.powered_off();
    assert_eq!(vm.boot_count(), 1, "one kernel boot");
    assert!(!console.contains("kexec_core"), "kexec ran:\n{console}");
}

/// Stage 2 verifies the slot again with its own keys: a stage-2 initramfs that does not
/// trust the slot's signer refuses it and marks it, and the reboot brings stage 1 back,
/// which falls back to the other slot.
#[test]
fn stage_2_verifies_again_with_its_own_keys() {
    let fx = Fixture::new();
    let release = release(&fx);
    let (_, other) = fx.keygen("other");
    stage_2_refuses_b(&fx, &release, &[&other], &[], "signature threshold not met");
}

/// Stage 2 applies the product binding too: a stage-2 initramfs bound to another product
/// (`--name`) refuses the slot, marks it, and stage 1 falls back after the reboot.
#[test]
fn stage_2_checks_the_product_again() {
    let fx = Fixture::new();
    let release = release(&fx);
    stage_2_refuses_b(
        &fx,
        &release,
        &[&release.1],
        &["--name", "other"],
        "product refused: the image is \"test\", this device is bound to \"other\"",
    );
}

/// Slot b (on trial, its own kernel, signed by `release`) carries a stage-2 initramfs
/// trusting `keys` built with `extra`: stage 2 refuses b with `cause` and marks it; stage
/// 1 boots a after the reboot.
fn stage_2_refuses_b(
    fx: &Fixture,
    (key, public): &(String, String),
    keys: &[&str],
    extra: &[&str],
    cause: &str,
) {
    let kernel = stripped_kernel(fx);
    let stage2 = fx
        .initramfs(keys)
        .args(&["--stage2"])
        .args(extra)
        .config("failure_delay_secs = 1\n")
        .out("stage2-refusing.cpio")
        .build();
    let r2 = app_root(fx, "root2", SYSTEM, SHOW_AND_POWER_OFF);
    let v2 = kernel_image(fx, (&r2, key), ("2.0.0", 2), (&kernel, &stage2), "v2.img");
    let disk = updated_disk(fx, (key, public), &v2);
    let initrd = stage1(fx, public, "", &[]);
    let mut vm = fx.boot(&initrd, &disk).start();
    vm.expect_all(&[
        "stele: slot=b version=2.0.0",
        "kexec_core: Starting new kernel",
    ]);
    let refused = vm.expect("stele: refused slot b:");
    assert!(refused.contains(cause), "{refused}");
    vm.expect_all(&[
        "stele: no bootable slot: slot b:",
        "stele: shutdown: reboot",
        "stele: slot=a version=1.0.0",
        "stele: slot=a marked good",
        "svc: done",
    ]);
    let console = vm.powered_off();
    assert!(
        !console.contains("exhausted"),
        "b was refused, not out of tries"
    );
    let st = status_on_disk(&disk, public);
    assert!(
        line(&st, "b").contains("priority=0"),
        "b marked unbootable: {st}"
    );
}

/// A good slot booted through its own kernel: stage 1 counts one unconfirmed boot before
/// it kexecs (docs/BOOT.md "Verity errors and unconfirmed boots"), stage 2 counts none
/// (the guest sees 1, not 2) and checks the product it is bound to, and marking the slot
/// good in stage 2 clears the count on disk.
#[test]
fn a_good_slot_through_kexec_counts_one_unconfirmed_boot() {
    let fx = Fixture::new();
    let (key, public) = release(&fx);
    let kernel = stripped_kernel(&fx);
    let stage2 = stage2(&fx, &public, "stage2.cpio", &["--name", "test"]);
    let r = app_root(&fx, "root", SYSTEM, SHOW_AND_POWER_OFF);
    let img = kernel_image(&fx, (&r, &key), ("1.0.0", 1), (&kernel, &stage2), "v1.img");
    let disk = fx.disk(&img).build();
    let initrd = stage1(&fx, &public, "", &["--name", "test"]);
    let mut vm = fx.boot(&initrd, &disk).start();
    vm.expect_all(&[
        "stele: slot=a version=1.0.0",
        "kexec_core: Starting new kernel",
        "stele: stele-init ",
        "stele: slot=a version=1.0.0",
        "stele: ready",
    ]);
    let a = vm.expect("svc: slot a:");
    assert!(
        a.contains("booted") && a.contains("successful=yes unconfirmed=1"),
        "{a}"
    );
    vm.expect_all(&["stele: slot=a marked good", "svc: done"]);
    vm.powered_off();
    assert_eq!(vm.boot_count(), 2, "two kernel boots: stage 1 and stage 2");
    let st = status_on_disk(&disk, &public);
    let a = line(&st, "a");
    assert!(
        a.contains("successful=yes") && !a.contains("unconfirmed"),
        "{st}"
    );
}

/// Regression (issue 20): a kexec refused because of `lockdown=integrity` on one boot's
/// command line (the unsigned slot kernel: EPERM) marked slot b unbootable for good. Now
/// that boot falls back to a with b's try given back, and the next boot, without the
/// option, kexecs into b.
#[test]
fn a_kexec_refused_by_a_lockdown_option_fails_that_boot_only() {
    let fx = Fixture::new();
    let (key, public) = release(&fx);
    let kernel = stripped_kernel(&fx);
    let stage2 = stage2(&fx, &public, "stage2.cpio", &[]);
    let r2 = app_root(&fx, "root2", SYSTEM, SHOW_AND_POWER_OFF);
    let v2 = kernel_image(&fx, (&r2, &key), ("2.0.0", 2), (&kernel, &stage2), "v2.img");
    let disk = updated_disk(&fx, (&key, &public), &v2);
    let initrd = stage1(&fx, &public, "", &[]);
    let kexec = format!("stele: slot=b kernel {} kexec", short_sha(&kernel));
    let mut vm = fx.boot(&initrd, &disk).append("lockdown=integrity").start();
    vm.expect(&kexec);
    let refused = vm.expect("stele: refused slot b:");
    assert!(
        refused.contains(
            "kernel refused by kexec_file_load under this boot's kernel policy (lockdown=integrity): EPERM"
        ),
        "{refused}"
    );
    vm.expect("stele: slot=b: try given back");
    vm.expect_all(&["stele: slot=a version=1.0.0", "stele: ready"]);
    let b = vm.expect("svc: slot b:");
    assert!(b.contains("tries_remaining=3 successful=no"), "{b}");
    vm.expect("svc: done");
    let console = vm.powered_off();
    assert!(
        !console.contains("kexec_core: Starting new kernel"),
        "{console}"
    );
    let st = status_on_disk(&disk, &public);
    let b = line(&st, "b");
    assert!(
        b.contains("tries_remaining=3") && !b.contains("priority=0"),
        "b untouched on disk: {st}"
    );
    // The option gone, b boots through its own kernel.
    let mut vm = fx.boot(&initrd, &disk).start();
    vm.expect_all(&[
        &kexec,
        "kexec_core: Starting new kernel",
        "stele: stele-init ",
        "stele: slot=b version=2.0.0",
        "stele: ready",
        "stele: slot=b marked good",
        "svc: done",
    ]);
    vm.powered_off();
    assert_eq!(vm.boot_count(), 2, "stage 1 and stage 2");
}

/// A stage-2 initramfs started without `stele.stage2=` (by anything but stage 1) refuses
/// with one line and runs the failure action.
#[test]
fn a_stage_2_initramfs_boots_nothing_on_its_own() {
    let fx = Fixture::new();
    let (key, public) = release(&fx);
    let r = app_root(&fx, "root", SYSTEM, SHOW_AND_POWER_OFF);
    let img = fx.image(&r, &key).build("slot.img");
    let disk = fx.disk(&img).build();
    let stage2 = stage2(&fx, &public, "stage2.cpio", &[]);
    let append = "stele.on_failure=poweroff stele.failure_delay=0";
    let mut vm = fx.boot(&stage2, &disk).append(append).start();
    let refused = vm.expect("stele: no bootable slot:");
    assert!(
        refused.contains("this is a stage-2 initramfs (boot.toml stage = 2)")
            && refused.ends_with("; poweroff in 0s"),
        "{refused}"
    );
    let console = vm.powered_off();
    assert!(!console.contains(" verified"), "{console}");
    let st = status_on_disk(&disk, &public);
    assert!(line(&st, "a").contains("successful=yes"), "untouched: {st}");
}

/// Both fallback tests: three boots of b hand over to its kernel (each ending in
/// `ending`, when given), then a boots.
fn falls_back(vm: &mut Guest, kernel: &str, ending: Option<&str>) {
    for _ in 0..3 {
        vm.expect("stele: slot=b version=2.0.0");
        vm.expect(&format!("stele: slot=b kernel {} kexec", short_sha(kernel)));
        vm.expect("kexec_core: Starting new kernel");
        if let Some(e) = ending {
            vm.expect(e);
        }
    }
    vm.expect_all(&[
        "stele: slot=b exhausted, falling back to a",
        "stele: slot=a version=1.0.0",
        "stele: ready",
        "stele: slot=a marked good",
        "svc: done",
    ]);
}

/// The state the guest left: b spent its three tries and is not good; a is good and next.
fn back_on_a(disk: &str, public: &str) {
    let st = status_on_disk(disk, public);
    assert!(
        line(&st, "b").contains("tries_remaining=0 successful=no"),
        "b must have spent its tries: {st}"
    );
    assert!(line(&st, "a").contains("successful=yes"), "{st}");
    assert!(st.contains("next=a"), "{st}");
}

#[test]
fn a_slot_kernel_that_panics_falls_back_after_its_tries() {
    let fx = Fixture::new();
    let (key, public) = release(&fx);
    let kernel = stripped_kernel(&fx);
    // No /init: the kernel finds no root and panics; panic=1 reboots it.
    let broken = raw_initrd(&fx, "no-init.cpio", None);
    let r2 = app_root(&fx, "root2", SYSTEM, SHOW_AND_POWER_OFF);
    let v2 = kernel_image(&fx, (&r2, &key), ("2.0.0", 2), (&kernel, &broken), "v2.img");
    let disk = updated_disk(&fx, (&key, &public), &v2);
    let initrd = stage1(&fx, &public, "stage2_panic_secs = 1\n", &[]);
    let mut vm = fx.boot(&initrd, &disk).start();
    falls_back(&mut vm, &kernel, Some("Kernel panic - not syncing"));
    vm.powered_off();
    assert_eq!(vm.count("Rebooting in 1 seconds"), 3);
    back_on_a(&disk, &public);
}

#[test]
fn a_slot_kernel_that_hangs_is_reset_by_the_watchdog_and_falls_back() {
    let fx = Fixture::new();
    let (key, public) = release(&fx);
    let kernel = stripped_kernel(&fx);
    // Never touches the watchdog: only the one stage 1 armed can end this.
    let hang = "#!/bin/busybox sh\n/bin/busybox echo \"hang: stage 2 sleeping\"\nwhile true; do /bin/busybox sleep 1000; done\n";
    let hanging = raw_initrd(&fx, "hang.cpio", Some(hang));
    let r2 = app_root(&fx, "root2", SYSTEM, SHOW_AND_POWER_OFF);
    let v2 = kernel_image(
        &fx,
        (&r2, &key),
        ("2.0.0", 2),
        (&kernel, &hanging),
        "v2.img",
    );
    let disk = updated_disk(&fx, (&key, &public), &v2);
    let config = "watchdog_secs = 30\n";
    let initrd = stage1(&fx, &public, config, &["--module", "i6300esb"]);
    let mut vm = fx.boot(&initrd, &disk).watchdog().start();
    vm.expect("stele: watchdog /dev/watchdog0 armed: timeout 30s");
    // Stage 2 reaches its hanging /init within a few seconds, but a loaded machine can be
    // much slower: a reset while its kernel still boots is the same hang to the watchdog,
    // so not every try has to show the line.
    falls_back(&mut vm, &kernel, None);
    let console = vm.powered_off();
    // Every try of b ended in a reset by the watchdog after its kernel started: nothing
    // between a kexec and the next boot panicked, rebooted or shut down.
    let tries: Vec<&str> = console
        .split("kexec_core: Starting new kernel")
        .skip(1)
        .collect();
    assert_eq!(tries.len(), 3, "three hand-overs");
    for part in tries {
        // This try's kernel, then the next boot's.
        let this_try = part.split("Linux version").nth(1).unwrap_or("");
        for end in ["Kernel panic", "reboot:", "stele: shutdown"] {
            assert!(!this_try.contains(end), "not a watchdog reset: {this_try}");
        }
    }
    assert_eq!(
        vm.boot_count(),
        7,
        "stage 1 and the slot kernel three times, then a"
    );
    assert!(
        vm.count("hang: stage 2 sleeping") >= 1,
        "no try reached the hanging /init"
    );
    back_on_a(&disk, &public);
}

/// The static stele-init with its starting line's version changed (same length): another
/// stele-init, whose line shows on the console when it is the one running.
fn new_stele_init(fx: &Fixture) -> (String, &'static str) {
    const OLD: &[u8] = concat!("stele-init ", env!("CARGO_PKG_VERSION"), " starting").as_bytes();
    let mut bin = std::fs::read(env_path("STELE_INIT")).unwrap();
    let at: Vec<usize> = bin
        .windows(OLD.len())
        .enumerate()
        .filter(|(_, w)| *w == OLD)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "the starting line is one string in the binary");
    let new = b"stele-init 9.9.9 starting";
    assert_eq!(new.len(), OLD.len(), "same length (the version is 0.1.0)");
    bin[at[0]..at[0] + new.len()].copy_from_slice(new);
    let p = fx.p("stele-init.new");
    std::fs::write(&p, bin).unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (p, "stele: stele-init 9.9.9 starting")
}

#[test]
fn an_update_with_a_new_kernel_and_stele_init_installed_in_the_guest_boots_into_both() {
    let fx = Fixture::new();
    let (key, public) = release(&fx);
    let kernel = stripped_kernel(&fx);
    let (init, new_line) = new_stele_init(&fx);
    let old_stage2 = stage2(&fx, &public, "stage2-old.cpio", &[]);
    let new_stage2 = fx
        .initramfs(&[&public])
        .init(&init)
        .args(&["--stage2"])
        .out("stage2.cpio")
        .build();
    // v1 runs under the stage-1 kernel (its own is the same): installs v2 and reboots.
    let v1_app = r#"#!/bin/sh
if [ ! -e /var/installed ]; then
  touch /var/installed; sync
  /run/stele/bin/stele update install /dev/vdb
  echo "v1: install exit $?"
  kill -TERM 1
fi
sleep 100
"#;
    // v2 (new kernel, new stele-init) tries to install v1 again: below the floor.
    let v2_app = r#"#!/bin/sh
sleep 3
/run/stele/bin/stele update install /dev/vdc
echo "v2: install of v1 exit $?"
echo "v2: done"
kill -USR2 1
sleep 100
"#;
    let system = SYSTEM.replace("healthy_after = 2", "healthy_after = 1");
    let r1 = app_root(&fx, "root1", &system, v1_app);
    let r2 = app_root(&fx, "root2", &system, v2_app);
    let debian = debian_kernel();
    let v1 = kernel_image(
        &fx,
        (&r1, &key),
        ("1.0.0", 1),
        (&debian, &old_stage2),
        "v1.img",
    );
    let v2 = kernel_image(
        &fx,
        (&r2, &key),
        ("2.0.0", 2),
        (&kernel, &new_stage2),
        "v2.img",
    );
    let disk = fx.disk(&v1).build();
    let initrd = stage1(&fx, &public, "", &[]);
    let mut vm = fx
        .boot(&initrd, &disk)
        .read_only_disk(&v2)
        .read_only_disk(&v1)
        .start();
    vm.expect_all(&[
        "stele: slot=a version=1.0.0",
        "is the running kernel: no kexec",
        "stele: installed test 2.0.0 rollback_index=2 into slot b",
        "v1: install exit 0",
        "stele: shutdown: reboot",
        "stele: slot=b version=2.0.0",
        &format!("stele: slot=b kernel {} kexec", short_sha(&kernel)),
        "kexec_core: Starting new kernel",
        new_line,
        "stele: slot=b version=2.0.0",
        "stele: ready",
        "stele: slot=b marked good",
    ]);
    let refused = vm.expect("stele: error:");
    assert!(refused.contains("rollback"), "{refused}");
    vm.expect_all(&["v2: install of v1 exit 1", "v2: done"]);
    vm.powered_off();
    assert_eq!(vm.count(new_line), 1, "the new stele-init ran once");
    let st = status_on_disk(&disk, &public);
    let b = line(&st, "b");
    assert!(
        b.contains("version=2.0.0") && b.contains("successful=yes"),
        "{st}"
    );
    assert!(st.contains("rollback_floor=2"), "{st}");
}

/// With `exec`, stele-init hands the watchdog over still running: an init that never
/// opens it is reset after the timeout; one that takes it over (busybox `watchdog`, as
/// systemd's RuntimeWatchdogSec would) keeps the machine up past it.
#[test]
fn exec_hands_the_running_watchdog_over_to_the_images_init() {
    let fx = Fixture::new();
    let (key, public) = release(&fx);
    let myinit = r#"#!/bin/sh
if [ -e /var/second ]; then
  echo "myinit: second boot, taking the watchdog over"
  /bin/busybox watchdog -T 10 -t 2 /dev/watchdog0
  sleep 25
  echo "myinit: alive after 25 s"
  poweroff -f
fi
touch /var/second; sync
echo "myinit: first boot, leaving the watchdog alone"
sleep 100
echo "myinit: NOT RESET"
"#;
    let root = fx
        .rootfs("root", "exec = [\"/sbin/myinit\"]\n")
        .file("sbin/myinit", myinit, 0o755)
        .build();
    let img = fx.image(&root, &key).build("slot.img");
    let disk = fx.disk(&img).build();
    let initrd = stage1(
        &fx,
        &public,
        "watchdog_secs = 10\n",
        &["--module", "i6300esb"],
    );
    let mut vm = fx.boot(&initrd, &disk).watchdog().start();
    vm.expect_all(&[
        "stele: watchdog /dev/watchdog0 armed: timeout 10s",
        "stele: exec /sbin/myinit as PID 1",
        "stele: watchdog /dev/watchdog0 handed over running: the image's init must open it within 10s",
        "myinit: first boot, leaving the watchdog alone",
        "Linux version",
        "myinit: second boot, taking the watchdog over",
        "myinit: alive after 25 s",
    ]);
    let console = vm.powered_off();
    assert_eq!(vm.boot_count(), 2, "one reset by the watchdog");
    assert!(!console.contains("myinit: NOT RESET"));
    let first = console
        .split("myinit: first boot")
        .nth(1)
        .and_then(|rest| rest.split("Linux version").next())
        .unwrap_or("");
    assert!(
        !first.contains("reboot") && !first.contains("Kernel panic"),
        "not a watchdog reset: {first}"
    );
}

//! Stage 1 → stage 2 under QEMU (direct kernel boot as stage 1, the real Debian kernel):
//! kexec into the slot's own kernel with stage 2 verifying the same slot and spending no
//! try; the same-kernel fast path; a slot kernel that panics and one that hangs (the
//! watchdog survives kexec and resets the machine) falling back after their tries, with the
//! state on disk checked afterwards; an update carrying a new kernel and a new stele-init
//! installed inside the guest, and an older image refused below the floor.
//!
//! The slot's "new" kernel is the Debian kernel with its signature stripped
//! (`sbattach --remove`): another sha256, the same kernel. (These helpers are local until
//! the shared VM fixture lands; tests/boot.rs's `Lab` does the rest.)

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use stele_qemu::{Vm, VmConfig};

use crate::boot::{expect, Lab, BOOT};

fn var(name: &str) -> PathBuf {
    match std::env::var_os(name) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => panic!("{name} is not set: run the VM tests with `cargo xtask test`"),
    }
}

/// The first 12 hex digits of a file's sha256, as stele-init prints them.
fn short_sha(path: &Path) -> String {
    let d = Sha256::digest(std::fs::read(path).unwrap());
    stele_verifier::hex::encode(&d[..6])
}

/// The Debian kernel without its Authenticode signature: a kernel other than the running
/// one, byte for byte.
fn stripped_kernel(lab: &Lab) -> PathBuf {
    let k = lab.path("vmlinuz.unsigned");
    std::fs::copy(var("STELE_KERNEL"), &k).unwrap();
    crate::util::need_tool("sbattach");
    let o = std::process::Command::new("sbattach")
        .arg("--remove")
        .arg(&k)
        .output()
        .unwrap();
    assert!(o.status.success(), "sbattach --remove: {o:?}");
    assert_ne!(short_sha(&k), short_sha(&var("STELE_KERNEL")));
    k
}

/// `stele initramfs` with `extra` options (`--kernel`, `--stage2`, `--module`, `--config`,
/// `--init`, `--key`); `--init` defaults to the static stele-init, `--key` to release.pub.
fn initramfs(lab: &Lab, out: &str, extra: &[&str]) -> PathBuf {
    let (modules, init) = (var("STELE_MODULES"), var("STELE_INIT"));
    let mut args = vec![
        "initramfs",
        "--modules-dir",
        modules.to_str().unwrap(),
        "--out",
        out,
    ];
    if !extra.contains(&"--init") {
        args.extend(["--init", init.to_str().unwrap()]);
    }
    if !extra.contains(&"--key") {
        args.extend(["--key", "release.pub"]);
    }
    args.extend_from_slice(extra);
    lab.stele(&args);
    lab.path(out)
}

/// Stage 1 that knows the running (Debian) kernel, with boot.toml `config`.
fn stage1(lab: &Lab, config: &str, extra: &[&str]) -> PathBuf {
    std::fs::write(lab.path("boot1.toml"), config).unwrap();
    let kernel = var("STELE_KERNEL");
    let mut a = vec![
        "--kernel",
        kernel.to_str().unwrap(),
        "--config",
        "boot1.toml",
    ];
    a.extend_from_slice(extra);
    initramfs(lab, "stage1.cpio", &a)
}

/// A slot image of `root` carrying `kernel` and `initrd` (`console=ttyS0` for stage 2).
fn kernel_image(
    lab: &Lab,
    root: &Path,
    version: (&str, u64),
    (kernel, initrd): (&Path, &Path),
    out: &str,
) -> PathBuf {
    let files = [
        "--kernel",
        kernel.to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
        "--kernel-cmdline",
        "console=ttyS0",
    ];
    lab.image_with(root, "release", version, out, &files)
}

/// A handmade initrd with busybox and `init` as /init (or no /init at all).
fn raw_initrd(lab: &Lab, out: &str, init: Option<&str>) -> PathBuf {
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
    std::fs::write(lab.path(out), a.to_bytes().unwrap()).unwrap();
    lab.path(out)
}

/// Boots `initrd` (stage 1) with `disks`; a guest reboot starts stage 1 again.
fn boot(lab: &Lab, initrd: &Path, disks: &[&Path], watchdog: bool) -> Vm {
    boot_with(lab, initrd, disks, watchdog, "")
}

/// [`boot`] with `append` on the kernel command line.
fn boot_with(lab: &Lab, initrd: &Path, disks: &[&Path], watchdog: bool, append: &str) -> Vm {
    let mut cfg = VmConfig::from_env(var("STELE_KERNEL"), initrd);
    cfg.append = append.to_string();
    for (i, d) in disks.iter().enumerate() {
        cfg.disks.push((d.to_path_buf(), i > 0));
    }
    cfg.watchdog = watchdog;
    cfg.serial_log = Some(lab.path("console.log"));
    Vm::start(&cfg).expect("start QEMU (qemu-system-x86; run `cargo xtask setup`)")
}

fn powers_off(vm: &mut Vm) -> String {
    let status = vm.wait_exit(BOOT).expect("the VM powers off");
    assert!(status.success(), "QEMU exit status {status:?}");
    vm.console()
}

/// `stele update status --disk` of the disk the guest left behind.
fn status_on_disk(lab: &Lab, disk: &Path) -> String {
    lab.stele(&[
        "update",
        "status",
        "--disk",
        disk.to_str().unwrap(),
        "--key",
        "release.pub",
    ])
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

/// v1 (no kernel of its own) in slot a, and an update `v2` installed into slot b on the
/// build host: b on trial with three tries, a the good fallback.
fn updated_disk(lab: &Lab, v2: &Path) -> PathBuf {
    let r1 = lab.rootfs("root1", SYSTEM, &[("bin/app", SHOW_AND_POWER_OFF, 0o755)]);
    let v1 = lab.image(&r1, "release", "1.0.0", 1, "v1.img");
    let disk = lab.disk(&v1, None);
    lab.stele(&[
        "update",
        "install",
        "--disk",
        disk.to_str().unwrap(),
        "--key",
        "release.pub",
        v2.to_str().unwrap(),
    ]);
    disk
}

#[test]
fn kexec_into_the_slots_kernel_and_stage_2_verifies_the_same_slot() {
    let lab = Lab::new();
    lab.keygen("release");
    let kernel = stripped_kernel(&lab);
    let stage2 = initramfs(&lab, "stage2.cpio", &["--stage2"]);
    let r2 = lab.rootfs("root2", SYSTEM, &[("bin/app", SHOW_AND_POWER_OFF, 0o755)]);
    let v2 = kernel_image(&lab, &r2, ("2.0.0", 2), (&kernel, &stage2), "v2.img");
    let disk = updated_disk(&lab, &v2);
    let initrd = stage1(&lab, "", &[]);
    // Nothing on stage 1's command line can skip the try.
    let mut vm = boot_with(&lab, &initrd, &[&disk], false, "stele.stage2=b");
    expect(
        &mut vm,
        "stele: warning: kernel option stele.stage2=b ignored: this is a stage-1 initramfs",
    );
    let first = expect(&mut vm, " verified");
    assert!(first.contains("stele: slot=b version=2.0.0"), "{first}");
    expect(
        &mut vm,
        &format!("stele: slot=b kernel {} kexec", short_sha(&kernel)),
    );
    let phases = expect(&mut vm, "stele: boot phases:");
    assert!(
        phases.contains("stage=1 ") && phases.contains(" kexec="),
        "{phases}"
    );
    expect(&mut vm, "kexec_core: Starting new kernel");
    expect(
        &mut vm,
        "Command line: console=ttyS0 stele.stage2=b panic=10",
    );
    expect(&mut vm, "stele: stele-init ");
    let second = expect(&mut vm, " verified");
    assert!(second.contains("stele: slot=b version=2.0.0"), "{second}");
    let phases = expect(&mut vm, "stele: boot phases:");
    assert!(
        phases.contains("stage=2 ") && !phases.contains("kexec"),
        "{phases}"
    );
    expect(&mut vm, "stele: ready");
    // Stage 1 spent one of the three tries; stage 2 spent none.
    let b = expect(&mut vm, "svc: slot b:");
    assert!(
        b.contains("booted") && b.contains("tries=2 successful=no"),
        "{b}"
    );
    expect(&mut vm, "stele: slot=b marked good");
    expect(&mut vm, "svc: done");
    let console = powers_off(&mut vm);
    assert_eq!(vm.boot_count(), 2, "two kernel boots: stage 1 and stage 2");
    let kexec = format!("kernel {} kexec", short_sha(&kernel));
    assert_eq!(console.matches(&kexec).count(), 1, "one hand-over");
    let st = status_on_disk(&lab, &disk);
    assert!(line(&st, "b").contains("successful=yes"), "{st}");
}

#[test]
fn the_same_kernel_boots_in_place_without_kexec() {
    let lab = Lab::new();
    lab.keygen("release");
    let stage2 = initramfs(&lab, "stage2.cpio", &["--stage2"]);
    let r = lab.rootfs("root", SYSTEM, &[("bin/app", SHOW_AND_POWER_OFF, 0o755)]);
    let kernel = var("STELE_KERNEL");
    let img = kernel_image(&lab, &r, ("1.0.0", 1), (&kernel, &stage2), "slot.img");
    let disk = lab.disk(&img, None);
    let initrd = stage1(&lab, "", &[]);
    let mut vm = boot(&lab, &initrd, &[&disk], false);
    expect(&mut vm, "stele: slot=a version=1.0.0");
    expect(
        &mut vm,
        &format!(
            "stele: slot=a kernel {} is the running kernel: no kexec",
            short_sha(&kernel)
        ),
    );
    let phases = expect(&mut vm, "stele: boot phases:");
    assert!(
        phases.contains("stage=1 ") && !phases.contains("kexec"),
        "{phases}"
    );
    expect(&mut vm, "stele: ready");
    let cmdline = expect(&mut vm, "svc: cmdline=");
    assert!(!cmdline.contains("stele.stage2"), "{cmdline}");
    expect(&mut vm, "svc: done");
    let console = powers_off(&mut vm);
    assert_eq!(vm.boot_count(), 1, "one kernel boot");
    assert!(!console.contains("kexec_core"), "kexec ran:\n{console}");
}

/// Stage 2 verifies the slot again with its own keys: a stage-2 initramfs that does not
/// trust the slot's signer refuses it and marks it, and the reboot brings stage 1 back,
/// which falls back to the other slot.
#[test]
fn stage_2_verifies_again_with_its_own_keys() {
    let lab = Lab::new();
    lab.keygen("release");
    lab.keygen("other");
    let kernel = stripped_kernel(&lab);
    std::fs::write(lab.path("boot2.toml"), "failure_delay_secs = 1\n").unwrap();
    let stage2 = initramfs(
        &lab,
        "stage2-other.cpio",
        &["--stage2", "--key", "other.pub", "--config", "boot2.toml"],
    );
    let r2 = lab.rootfs("root2", SYSTEM, &[("bin/app", SHOW_AND_POWER_OFF, 0o755)]);
    let v2 = kernel_image(&lab, &r2, ("2.0.0", 2), (&kernel, &stage2), "v2.img");
    let disk = updated_disk(&lab, &v2);
    let initrd = stage1(&lab, "", &[]);
    let mut vm = boot(&lab, &initrd, &[&disk], false);
    expect(&mut vm, "stele: slot=b version=2.0.0");
    expect(&mut vm, "kexec_core: Starting new kernel");
    let refused = expect(&mut vm, "stele: refused slot b:");
    assert!(refused.contains("signature threshold not met"), "{refused}");
    expect(&mut vm, "stele: no bootable slot: slot b:");
    expect(&mut vm, "stele: shutdown: reboot");
    expect(&mut vm, "stele: slot=a version=1.0.0");
    expect(&mut vm, "stele: slot=a marked good");
    expect(&mut vm, "svc: done");
    let console = powers_off(&mut vm);
    assert!(
        !console.contains("exhausted"),
        "b was refused, not out of tries"
    );
    let st = status_on_disk(&lab, &disk);
    assert!(
        line(&st, "b").contains("priority=0"),
        "b marked unbootable: {st}"
    );
}

/// A stage-2 initramfs started without `stele.stage2=` (by anything but stage 1) refuses
/// with one line and runs the failure action.
#[test]
fn a_stage_2_initramfs_boots_nothing_on_its_own() {
    let lab = Lab::new();
    lab.keygen("release");
    let r = lab.rootfs("root", SYSTEM, &[("bin/app", SHOW_AND_POWER_OFF, 0o755)]);
    let img = lab.image(&r, "release", "1.0.0", 1, "slot.img");
    let disk = lab.disk(&img, None);
    let stage2 = initramfs(&lab, "stage2.cpio", &["--stage2"]);
    let append = "stele.on_failure=poweroff stele.failure_delay=0";
    let mut vm = boot_with(&lab, &stage2, &[&disk], false, append);
    let refused = expect(&mut vm, "stele: no bootable slot:");
    assert!(
        refused.contains("this is a stage-2 initramfs (boot.toml stage = 2)")
            && refused.ends_with("; poweroff in 0s"),
        "{refused}"
    );
    let console = powers_off(&mut vm);
    assert!(!console.contains(" verified"), "{console}");
    let st = status_on_disk(&lab, &disk);
    assert!(line(&st, "a").contains("successful=yes"), "untouched: {st}");
}

/// Both fallback tests: `tries` boots of b end in `ending` after the kexec, then a boots.
fn falls_back(vm: &mut Vm, kernel: &Path, ending: &str) {
    for _ in 0..3 {
        expect(vm, "stele: slot=b version=2.0.0");
        expect(
            vm,
            &format!("stele: slot=b kernel {} kexec", short_sha(kernel)),
        );
        expect(vm, "kexec_core: Starting new kernel");
        expect(vm, ending);
    }
    expect(vm, "stele: slot=b exhausted, falling back to a");
    expect(vm, "stele: slot=a version=1.0.0");
    expect(vm, "stele: ready");
    expect(vm, "stele: slot=a marked good");
    expect(vm, "svc: done");
}

/// The state the guest left: b spent its three tries and is not good; a is good and next.
fn back_on_a(lab: &Lab, disk: &Path) {
    let st = status_on_disk(lab, disk);
    assert!(
        line(&st, "b").contains("tries=0 successful=no"),
        "b must have spent its tries: {st}"
    );
    assert!(line(&st, "a").contains("successful=yes"), "{st}");
    assert!(st.contains("next=a"), "{st}");
}

#[test]
fn a_slot_kernel_that_panics_falls_back_after_its_tries() {
    let lab = Lab::new();
    lab.keygen("release");
    let kernel = stripped_kernel(&lab);
    // No /init: the kernel finds no root and panics; panic=1 reboots it.
    let broken = raw_initrd(&lab, "no-init.cpio", None);
    let r2 = lab.rootfs("root2", SYSTEM, &[("bin/app", SHOW_AND_POWER_OFF, 0o755)]);
    let v2 = kernel_image(&lab, &r2, ("2.0.0", 2), (&kernel, &broken), "v2.img");
    let disk = updated_disk(&lab, &v2);
    let initrd = stage1(&lab, "stage2_panic_secs = 1\n", &[]);
    let mut vm = boot(&lab, &initrd, &[&disk], false);
    falls_back(&mut vm, &kernel, "Kernel panic - not syncing");
    let console = powers_off(&mut vm);
    assert_eq!(console.matches("Rebooting in 1 seconds").count(), 3);
    back_on_a(&lab, &disk);
}

#[test]
fn a_slot_kernel_that_hangs_is_reset_by_the_watchdog_and_falls_back() {
    let lab = Lab::new();
    lab.keygen("release");
    let kernel = stripped_kernel(&lab);
    // Never touches the watchdog: only the one stage 1 armed can end this.
    let hang = "#!/bin/busybox sh\n/bin/busybox echo \"hang: stage 2 sleeping\"\nwhile true; do /bin/busybox sleep 1000; done\n";
    let hanging = raw_initrd(&lab, "hang.cpio", Some(hang));
    let r2 = lab.rootfs("root2", SYSTEM, &[("bin/app", SHOW_AND_POWER_OFF, 0o755)]);
    let v2 = kernel_image(&lab, &r2, ("2.0.0", 2), (&kernel, &hanging), "v2.img");
    let disk = updated_disk(&lab, &v2);
    // 20 s: the slot's kernel must reach its /init within it even on a loaded machine.
    let initrd = stage1(&lab, "watchdog_secs = 20\n", &["--module", "i6300esb"]);
    let mut vm = boot(&lab, &initrd, &[&disk], true);
    expect(&mut vm, "stele: watchdog /dev/watchdog0 armed: timeout 20s");
    falls_back(&mut vm, &kernel, "hang: stage 2 sleeping");
    let console = powers_off(&mut vm);
    // Each hang ended in a reset by the watchdog: nothing in between panicked or rebooted.
    for part in console.split("hang: stage 2 sleeping").skip(1) {
        let until_next_boot = part.split("Linux version").next().unwrap_or("");
        assert!(
            !until_next_boot.contains("Kernel panic") && !until_next_boot.contains("reboot"),
            "not a watchdog reset: {until_next_boot}"
        );
    }
    assert_eq!(console.matches("hang: stage 2 sleeping").count(), 3);
    back_on_a(&lab, &disk);
}

/// The static stele-init with its starting line's version changed (same length): another
/// stele-init, whose line shows on the console when it is the one running.
fn new_stele_init(lab: &Lab) -> (PathBuf, &'static str) {
    const OLD: &[u8] = concat!("stele-init ", env!("CARGO_PKG_VERSION"), " starting").as_bytes();
    let mut bin = std::fs::read(var("STELE_INIT")).unwrap();
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
    let p = lab.path("stele-init.new");
    std::fs::write(&p, bin).unwrap();
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (p, "stele: stele-init 9.9.9 starting")
}

#[test]
fn an_update_with_a_new_kernel_and_stele_init_installed_in_the_guest_boots_into_both() {
    let lab = Lab::new();
    lab.keygen("release");
    let kernel = stripped_kernel(&lab);
    let (init, new_line) = new_stele_init(&lab);
    let old_stage2 = initramfs(&lab, "stage2-old.cpio", &["--stage2"]);
    let stage2 = initramfs(
        &lab,
        "stage2.cpio",
        &["--stage2", "--init", init.to_str().unwrap()],
    );
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
    let r1 = lab.rootfs("root1", &system, &[("bin/app", v1_app, 0o755)]);
    let r2 = lab.rootfs("root2", &system, &[("bin/app", v2_app, 0o755)]);
    let debian = var("STELE_KERNEL");
    let v1 = kernel_image(&lab, &r1, ("1.0.0", 1), (&debian, &old_stage2), "v1.img");
    let v2 = kernel_image(&lab, &r2, ("2.0.0", 2), (&kernel, &stage2), "v2.img");
    let disk = lab.disk(&v1, None);
    let initrd = stage1(&lab, "", &[]);
    let mut vm = boot(&lab, &initrd, &[&disk, &v2, &v1], false);
    expect(&mut vm, "stele: slot=a version=1.0.0");
    expect(&mut vm, "is the running kernel: no kexec");
    expect(
        &mut vm,
        "stele: installed test 2.0.0 rollback_index=2 into slot b",
    );
    expect(&mut vm, "v1: install exit 0");
    expect(&mut vm, "stele: shutdown: reboot");
    expect(&mut vm, "stele: slot=b version=2.0.0");
    expect(
        &mut vm,
        &format!("stele: slot=b kernel {} kexec", short_sha(&kernel)),
    );
    expect(&mut vm, "kexec_core: Starting new kernel");
    expect(&mut vm, new_line);
    expect(&mut vm, "stele: slot=b version=2.0.0");
    expect(&mut vm, "stele: ready");
    expect(&mut vm, "stele: slot=b marked good");
    let refused = expect(&mut vm, "stele: error:");
    assert!(refused.contains("rollback"), "{refused}");
    expect(&mut vm, "v2: install of v1 exit 1");
    expect(&mut vm, "v2: done");
    let console = powers_off(&mut vm);
    assert_eq!(
        console.matches(new_line).count(),
        1,
        "the new stele-init ran once"
    );
    let st = status_on_disk(&lab, &disk);
    assert!(
        line(&st, "b").contains("version=2.0.0") && line(&st, "b").contains("successful=yes"),
        "{st}"
    );
    assert!(st.contains("rollback_floor=2"), "{st}");
}

/// With `exec`, stele-init hands the watchdog over still running: an init that never
/// opens it is reset after the timeout; one that takes it over (busybox `watchdog`, as
/// systemd's RuntimeWatchdogSec would) keeps the machine up past it.
#[test]
fn exec_hands_the_running_watchdog_over_to_the_images_init() {
    let lab = Lab::new();
    lab.keygen("release");
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
    let root = lab.rootfs(
        "root",
        "exec = [\"/sbin/myinit\"]\n",
        &[("sbin/myinit", myinit, 0o755)],
    );
    let img = lab.image(&root, "release", "1.0.0", 1, "slot.img");
    let disk = lab.disk(&img, None);
    let initrd = stage1(&lab, "watchdog_secs = 10\n", &["--module", "i6300esb"]);
    let mut vm = boot(&lab, &initrd, &[&disk], true);
    expect(&mut vm, "stele: watchdog /dev/watchdog0 armed: timeout 10s");
    expect(&mut vm, "stele: exec /sbin/myinit as PID 1");
    expect(
        &mut vm,
        "stele: watchdog /dev/watchdog0 handed over running: the image's init must open it within 10s",
    );
    expect(&mut vm, "myinit: first boot, leaving the watchdog alone");
    expect(&mut vm, "Linux version");
    expect(&mut vm, "myinit: second boot, taking the watchdog over");
    expect(&mut vm, "myinit: alive after 25 s");
    let console = powers_off(&mut vm);
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

//! stele-init end to end under QEMU: real kernel, `stele initramfs`, `stele disk create`,
//! signed slot images; assertions on the stable console lines and on the boot state the
//! guest left on the disk.
//!
//! Needs STELE_KERNEL, STELE_MODULES and STELE_INIT (the static stele-init), all set by
//! `cargo xtask test`.

use std::io::{Cursor, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use stele_qemu::{Vm, VmConfig};
use stele_verifier::state::{self, BootState, Slot};

use crate::util::*;

fn env_path(var: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => panic!("{var} is not set: run the VM tests with `cargo xtask test` (it sets STELE_KERNEL, STELE_MODULES and STELE_INIT)"),
    }
}

/// An image root: static busybox as /bin/sh and `system` as /etc/stele/system.toml.
fn image_root(fx: &Fixture, name: &str, system: &str) -> String {
    let root = fx.path(name);
    for d in [
        "bin",
        "etc/stele",
        "dev",
        "proc",
        "sys",
        "run",
        "var",
        "tmp",
    ] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    let bb = std::fs::read("/bin/busybox").unwrap_or_else(|e| {
        panic!("/bin/busybox (static) is needed: run `cargo xtask setup` ({e})")
    });
    std::fs::write(root.join("bin/busybox"), bb).expect("write busybox");
    let mut perm = std::fs::metadata(root.join("bin/busybox"))
        .unwrap()
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(root.join("bin/busybox"), perm).expect("chmod");
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).expect("symlink");
    std::fs::write(root.join("etc/stele/system.toml"), system).expect("write system.toml");
    root.display().to_string()
}

fn build_image(
    fx: &Fixture,
    out: &str,
    root: &str,
    key: &str,
    version: &str,
    index: &str,
) -> String {
    need_tool("mkfs.erofs");
    let img = fx.p(out);
    ok(stele(&[
        "image",
        "build",
        "--rootfs",
        root,
        "--key",
        key,
        "--name",
        "demo",
        "--version",
        version,
        "--rollback-index",
        index,
        "--out",
        &img,
    ]));
    img
}

fn initramfs(fx: &Fixture, public: &str) -> String {
    let out = fx.p("initrd");
    let modules = env_path("STELE_MODULES").display().to_string();
    let init = env_path("STELE_INIT").display().to_string();
    std::fs::write(fx.path("boot.toml"), "failure_delay_secs = 1\n").expect("write boot.toml");
    let cfg = fx.p("boot.toml");
    ok(stele(&[
        "initramfs",
        "--modules-dir",
        &modules,
        "--key",
        public,
        "--init",
        &init,
        "--config",
        &cfg,
        "--out",
        &out,
    ]));
    out
}

fn disk(fx: &Fixture, a: &str, b: &str) -> String {
    let out = fx.p("disk.img");
    ok(stele(&[
        "disk",
        "create",
        "--out",
        &out,
        "--slot-size",
        "32M",
        "--a",
        a,
        "--b",
        b,
        "--data-size",
        "16M",
    ]));
    out
}

/// Byte range of a partition of the disk image.
fn partition(disk: &str, name: &str) -> (u64, u64) {
    let mut f = std::fs::File::open(disk).expect("open disk");
    stele_image::disk::find_partition(&mut f, name).expect("find partition")
}

/// Reads the boot state from the disk image; with `change`, modifies and stores it.
fn with_state(disk: &str, change: Option<&dyn Fn(&mut BootState)>) -> BootState {
    let (off, _) = partition(disk, "stele-state");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(disk)
        .expect("open disk");
    let mut buf = vec![0u8; usize::try_from(state::STATE_AREA).unwrap()];
    f.seek(SeekFrom::Start(off)).unwrap();
    f.read_exact(&mut buf).unwrap();
    let mut c = Cursor::new(buf);
    let (mut st, copy) = state::load(&mut c).expect("boot state on the disk");
    if let Some(change) = change {
        change(&mut st);
        state::store(&mut c, &st, copy).expect("store state");
        f.seek(SeekFrom::Start(off)).unwrap();
        f.write_all(c.get_ref()).unwrap();
        st = state::load(&mut c).expect("reload").0;
    }
    st
}

fn vm(fx: &Fixture, initrd: &str, disk: &str, append: &str, no_reboot: bool) -> Vm {
    let mut cfg = VmConfig::from_env(env_path("STELE_KERNEL"), PathBuf::from(initrd));
    cfg.disks = vec![(PathBuf::from(disk), false)];
    cfg.append = append.to_string();
    cfg.no_reboot = no_reboot;
    cfg.timeout = Duration::from_secs(600);
    cfg.serial_log = Some(fx.path("console.log"));
    Vm::start(&cfg).expect("start QEMU")
}

fn expect_all(vm: &mut Vm, lines: &[&str]) {
    for l in lines {
        if let Err(e) = vm.expect(l, Duration::from_secs(240)) {
            panic!("{l:?} not seen: {e}\n--- console ---\n{}", vm.console());
        }
    }
}

fn powered_off(mut vm: Vm) {
    let status = vm.wait_exit(Duration::from_secs(120)).expect("QEMU exits");
    assert!(status.success(), "qemu exit status {status}");
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
    let root = image_root(&fx, "root", GOOD);
    let a = build_image(&fx, "a.img", &root, &k, "1.0.0", "4");
    let initrd = initramfs(&fx, &p);
    let d = disk(&fx, &a, &a);
    assert_eq!(with_state(&d, None).rollback_floor, 0);
    let mut v = vm(&fx, &initrd, &d, "", true);
    expect_all(
        &mut v,
        &[
            "stele: slot=a version=1.0.0 rollback_index=4 root_hash=",
            "stele: boot phases: mounts=",
            "stele: service probe started pid ",
            "stele: ready",
            "probe: slot=a root=overlay var=ext4 init=gone SigBlk: 0000000000000000",
            "stele: slot=a marked good",
            "finish: VmRSS:",
            "stele: service finish exited status 0",
            "stele: shutdown: poweroff",
            "stele: service probe exited status 143",
            "stele: halted",
        ],
    );
    let console = v.console();
    powered_off(v);
    assert!(!console.contains("refused"), "{console}");
    let st = with_state(&d, None);
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
    let root = image_root(&fx, "root", GOOD);
    let a = build_image(&fx, "a.img", &root, &k, "2.0.0", "2");
    let b = build_image(&fx, "b.img", &root, &k, "1.0.0", "1");
    let initrd = initramfs(&fx, &p);
    let d = disk(&fx, &a, &b);
    // One flipped bit in slot a's filesystem data: signatures and tree are intact, so only
    // the full data pass (asked for on the kernel command line) can see it before mounting.
    let (off, _) = partition(&d, "stele-root-a");
    let bytes = std::fs::read(&d).unwrap();
    let at = usize::try_from(off).unwrap() + 8192 + 100;
    write_flipped(&bytes, at, Path::new(&d));
    let mut v = vm(&fx, &initrd, &d, "stele.verify=full stele.bogus", true);
    expect_all(
        &mut v,
        &[
            "stele: warning: kernel option stele.bogus ignored",
            "stele: refused slot a: verity mismatch at data block 2",
            "stele: slot=b version=1.0.0 rollback_index=1 root_hash=",
            "probe: slot=b root=overlay",
            "stele: slot=b marked good",
            "stele: halted",
        ],
    );
    powered_off(v);
    let st = with_state(&d, None);
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
    let good = image_root(&fx, "good", GOOD);
    let bad = image_root(
        &fx,
        "bad",
        "healthy_after = 30\n[[service]]\nname = \"crashy\"\nexec = [\"/bin/sh\", \"-c\", \"exit 3\"]\nrestart_delay = 1\n",
    );
    let a = build_image(&fx, "a.img", &good, &k, "1.0.0", "1");
    let b = build_image(&fx, "b.img", &bad, &k, "2.0.0", "2");
    let initrd = initramfs(&fx, &p);
    let d = disk(&fx, &a, &b);
    // As an update would leave it: b on trial with 3 tries, top priority.
    with_state(&d, Some(&|st: &mut BootState| st.activate_new(Slot::B, 3)));
    // The VM reboots as hardware would; each boot of b spends one try.
    let mut v = vm(&fx, &initrd, &d, "", false);
    for _ in 0..3 {
        expect_all(
            &mut v,
            &[
                "stele: slot=b version=2.0.0",
                "stele: service crashy exited status 3",
                "stele: service crashy failed 3 times before slot=b was marked good",
                "stele: shutdown: reboot",
            ],
        );
    }
    expect_all(
        &mut v,
        &[
            "stele: slot=b exhausted, falling back to a",
            "stele: slot=a version=1.0.0",
            "stele: slot=a marked good",
            "stele: halted",
        ],
    );
    powered_off(v);
    assert_eq!(v_boots(&fx), 4);
    let st = with_state(&d, None);
    assert!(
        !st.slots[1].successful && st.slots[1].tries_remaining == 0,
        "{st:?}"
    );
    assert!(st.slots[0].successful, "{st:?}");
}

/// Boots seen in the console log (one "starting" line per boot).
fn v_boots(fx: &Fixture) -> usize {
    std::fs::read_to_string(fx.path("console.log"))
        .unwrap_or_default()
        .matches("stele: stele-init ")
        .count()
}

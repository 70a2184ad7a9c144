//! End-to-end boots: the real Debian kernel under QEMU, our initramfs and a GPT disk.
//!
//! Each test builds its own keys, slot image, initramfs and disk in a temporary directory
//! with the `stele` binary, boots them, and asserts on the serial console. The kernel,
//! its modules and the static stele-init come from `cargo xtask test` (environment
//! variables STELE_KERNEL, STELE_MODULES, STELE_INIT).

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use stele_qemu::{Vm, VmConfig};

/// Time limit for one boot under TCG (a boot takes 5-10 s; CI machines may be slower).
pub const BOOT: Duration = Duration::from_secs(90);

/// The pieces every boot test needs from the set-up.
struct Env {
    kernel: PathBuf,
    modules: PathBuf,
    init: PathBuf,
}

fn env() -> Env {
    let var = |name: &str| -> PathBuf {
        match std::env::var_os(name) {
            Some(v) => PathBuf::from(v),
            None => panic!(
                "{name} is not set: run the boot tests with `cargo xtask test` (it downloads the \
                 test kernel and builds the static stele-init)"
            ),
        }
    };
    Env {
        kernel: var("STELE_KERNEL"),
        modules: var("STELE_MODULES"),
        init: var("STELE_INIT"),
    }
}

/// A scratch directory with the artifacts of one test.
pub struct Lab {
    dir: tempfile::TempDir,
    env: Env,
}

impl Lab {
    pub fn new() -> Lab {
        Lab {
            dir: tempfile::tempdir().expect("temporary directory"),
            env: env(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `stele ARGS` in the lab directory; panics with its output when it fails.
    pub fn stele(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_stele"))
            .args(args)
            .current_dir(self.dir.path())
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .expect("run stele");
        assert!(
            out.status.success(),
            "stele {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn keygen(&self, name: &str) {
        self.stele(&[
            "keygen",
            "--private",
            &format!("{name}.key"),
            "--public",
            &format!("{name}.pub"),
        ]);
    }

    /// A busybox root filesystem with `/etc/stele/system.toml` and extra files.
    pub fn rootfs(&self, name: &str, system_toml: &str, files: &[(&str, &str, u32)]) -> PathBuf {
        let root = self.path(name);
        for d in [
            "bin",
            "sbin",
            "etc/stele",
            "proc",
            "sys",
            "dev",
            "run",
            "tmp",
            "var",
            "srv",
            "root",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::copy("/bin/busybox", root.join("bin/busybox"))
            .expect("copy /bin/busybox (busybox-static; run `cargo xtask setup`)");
        for applet in [
            "sh", "cat", "echo", "grep", "ls", "sleep", "kill", "mount", "sync", "seq", "wc",
            "poweroff", "reboot", "head", "tr", "cut", "test", "[", "dd", "rm", "touch", "ps",
            "md5sum", "cmp",
        ] {
            symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        fs::write(root.join("etc/stele/system.toml"), system_toml).unwrap();
        for (path, text, mode) in files {
            let p = root.join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, text).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
        }
        root
    }

    /// `stele image build` of `rootfs` signed with `key`.
    pub fn image(&self, rootfs: &Path, key: &str, version: &str, index: u64, out: &str) -> PathBuf {
        self.image_with(rootfs, key, (version, index), out, &[])
    }

    /// [`Lab::image`] with more options (`--kernel ...`).
    pub fn image_with(
        &self,
        rootfs: &Path,
        key: &str,
        (version, index): (&str, u64),
        out: &str,
        extra: &[&str],
    ) -> PathBuf {
        let (key, index) = (format!("{key}.key"), index.to_string());
        let mut args = vec![
            "image",
            "build",
            "--rootfs",
            rootfs.to_str().unwrap(),
            "--key",
            &key,
            "--name",
            "test",
            "--version",
            version,
            "--rollback-index",
            &index,
            "--out",
            out,
        ];
        args.extend_from_slice(extra);
        self.stele(&args);
        self.path(out)
    }

    /// `stele initramfs` trusting `keys` (public key base names).
    pub fn initramfs(&self, keys: &[&str]) -> PathBuf {
        let mut args = vec![
            "initramfs".to_owned(),
            "--modules-dir".to_owned(),
            self.env.modules.display().to_string(),
            "--init".to_owned(),
            self.env.init.display().to_string(),
            "--out".to_owned(),
            "initrd.cpio".to_owned(),
        ];
        for k in keys {
            args.push("--key".to_owned());
            args.push(format!("{k}.pub"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.stele(&args);
        self.path("initrd.cpio")
    }

    /// `stele disk create` with slot a (and b) and a data partition.
    pub fn disk(&self, a: &Path, b: Option<&Path>) -> PathBuf {
        let mut args = vec![
            "disk",
            "create",
            "--out",
            "disk.img",
            "--slot-size",
            "64M",
            "--data-size",
            "32M",
            "--a",
            a.to_str().unwrap(),
        ];
        if let Some(b) = b {
            args.push("--b");
            args.push(b.to_str().unwrap());
        }
        self.stele(&args);
        self.path("disk.img")
    }

    /// Boots kernel + initrd + disk. `no_reboot`: a guest reboot ends QEMU.
    pub fn boot(&self, initrd: &Path, disk: &Path, append: &str, no_reboot: bool) -> Vm {
        self.boot_disks(initrd, &[disk], append, no_reboot)
    }

    /// Boots with several disks: the first is the system disk (vda), the others follow
    /// (vdb, vdc, ...), read-only.
    pub fn boot_disks(&self, initrd: &Path, disks: &[&Path], append: &str, no_reboot: bool) -> Vm {
        let mut cfg = VmConfig::from_env(&self.env.kernel, initrd);
        for (i, d) in disks.iter().enumerate() {
            cfg.disks.push((d.to_path_buf(), i > 0));
        }
        cfg.append = append.to_owned();
        cfg.no_reboot = no_reboot;
        cfg.serial_log = Some(self.path("console.log"));
        Vm::start(&cfg).expect("start QEMU (qemu-system-x86; run `cargo xtask setup`)")
    }
}

pub fn expect(vm: &mut Vm, text: &str) -> String {
    match vm.expect(text, BOOT) {
        Ok(line) => line,
        Err(e) => panic!(
            "waiting for {text:?}: {e}\n--- console ---\n{}",
            vm.console()
        ),
    }
}

/// A good image boots: verified, `/` is an overlay over the dm-verity device, a write to `/`
/// is gone after a reboot while a write to the data partition survives, 100 orphans are all
/// reaped, SIGTERM to PID 1 shuts down in order, and `on_exit = "poweroff"` ends the VM with
/// the service's status on the console.
#[test]
fn good_image_boots_read_only_root_and_persists_only_data() {
    let lab = Lab::new();
    lab.keygen("release");
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
    let root = lab.rootfs(
        "rootfs",
        system,
        &[
            ("bin/check", script, 0o755),
            ("bin/sleeper", sleeper, 0o755),
            ("srv/hello.txt", "from the verified root", 0o644),
        ],
    );
    let img = lab.image(&root, "release", "1.0.0", 1, "slot.img");
    let initrd = lab.initramfs(&["release"]);
    let disk = lab.disk(&img, None);
    let mut vm = lab.boot(&initrd, &disk, "", false);

    let verified = expect(&mut vm, "verified");
    assert!(
        verified.contains("stele: slot=a version=1.0.0 rollback_index=1 root_hash="),
        "{verified}"
    );
    let phases = expect(&mut vm, "stele: boot phases:");
    assert!(phases.contains("total="), "{phases}");
    expect(&mut vm, "stele: ready");
    expect(&mut vm, "svc: begin");
    expect(&mut vm, "svc: first boot");
    expect(&mut vm, "svc: root write ok scribble");
    expect(&mut vm, "svc: zombies=0");
    expect(&mut vm, "stele: shutdown: reboot");
    expect(&mut vm, "sleeper: got TERM");
    expect(&mut vm, "stele: halted");
    // Second boot, same VM: the guest rebooted.
    expect(&mut vm, "svc: second boot");
    expect(&mut vm, "svc: root write gone");
    expect(&mut vm, "svc: data says persisted");
    expect(&mut vm, "stele: service check exited status 7");
    expect(&mut vm, "stele: shutdown: poweroff");
    let status = vm.wait_exit(BOOT).expect("the VM powers off");
    assert!(status.success(), "QEMU exit status {status:?}");

    let console = vm.console();
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
    let lab = Lab::new();
    lab.keygen("release");
    lab.keygen("attacker");
    let root = lab.rootfs(
        "rootfs",
        "[[service]]\nname = \"evil\"\nexec = [\"/bin/sh\", \"-c\", \"echo EVIL-RAN\"]\n",
        &[],
    );
    let img = lab.image(&root, "attacker", "6.6.6", 1, "slot.img");
    let initrd = lab.initramfs(&["release"]);
    let disk = lab.disk(&img, None);
    let mut vm = lab.boot(
        &initrd,
        &disk,
        "stele.on_failure=poweroff stele.failure_delay=0",
        true,
    );
    let refused = expect(&mut vm, "stele: refused slot a:");
    assert!(
        refused.contains("threshold")
            || refused.contains("unknown key")
            || refused.contains("not trusted"),
        "cause not named: {refused}"
    );
    expect(&mut vm, "stele: no bootable slot");
    let _ = vm.wait_exit(BOOT).expect("the VM powers off");
    let console = vm.console();
    assert!(!console.contains("EVIL-RAN"), "the untrusted image ran");
    assert!(!console.contains("stele: ready"));
    assert!(!console.contains("# "), "a shell prompt appeared");
}

/// One flipped byte inside a file's data: the manifest still verifies (the signed root hash
/// covers the data only through the tree), but reading the file trips dm-verity, which
/// restarts the machine (`restart_on_corruption`) before the content is ever seen.
#[test]
fn flipped_data_byte_is_caught_by_dm_verity_on_read() {
    let lab = Lab::new();
    lab.keygen("release");
    let canary: String = "STELE-CANARY-".repeat(2000);
    let system = r#"
[[service]]
name = "reader"
exec = ["/bin/sh", "-c", "echo reader: start; cat /srv/canary > /dev/null && echo reader: READ-OK; echo reader: end"]
restart = "never"
on_exit = "poweroff"
"#;
    let root = lab.rootfs("rootfs", system, &[("srv/canary", &canary, 0o644)]);
    let img = lab.image(&root, "release", "1.0.0", 1, "slot.img");
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

    let initrd = lab.initramfs(&["release"]);
    let disk = lab.disk(&img, None);
    let mut vm = lab.boot(&initrd, &disk, "", true);
    expect(&mut vm, "stele: slot=a version=1.0.0");
    expect(&mut vm, "reader: start");
    let _ = vm
        .wait_exit(BOOT)
        .expect("the VM restarts (ends QEMU with -no-reboot)");
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
    let lab = Lab::new();
    lab.keygen("release");
    let myinit = "#!/bin/sh\necho \"handoff: pid=$$ root=$(grep ' / ' /proc/mounts | cut -d' ' -f3)\"\nsync\npoweroff -f\n";
    let root = lab.rootfs(
        "rootfs",
        "exec = [\"/sbin/myinit\"]\n",
        &[("sbin/myinit", myinit, 0o755)],
    );
    let img = lab.image(&root, "release", "1.0.0", 1, "slot.img");
    let initrd = lab.initramfs(&["release"]);
    let disk = lab.disk(&img, None);
    let mut vm = lab.boot(&initrd, &disk, "", true);
    expect(&mut vm, "verified");
    let line = expect(&mut vm, "handoff: pid=");
    assert!(line.contains("handoff: pid=1 root=overlay"), "{line}");
    let _ = vm.wait_exit(BOOT).expect("the image's init powers off");
}

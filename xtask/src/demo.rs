//! `cargo xtask demo`: what stele does, end to end, for a newcomer.
//!
//! Key pair → slot image from a small root filesystem → verified → a tampered copy refused →
//! a signed stage-1 UKI on the ESP booted by UEFI firmware under Secure Boot → an update
//! carrying its own kernel installed in the guest and started by kexec.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{build_cli, target_dir};

struct Demo {
    stele: PathBuf,
    dir: PathBuf,
}

impl Demo {
    fn step(&self, title: &str) {
        println!("\n=== {title}");
    }

    /// Runs `stele ARGS`, echoing the command line and its output; returns whether it succeeded.
    fn stele(&self, args: &[&str]) -> Result<bool, String> {
        println!("$ stele {}", args.join(" "));
        let status = Command::new(&self.stele)
            .args(args)
            .current_dir(&self.dir)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .status()
            .map_err(|e| format!("could not run {}: {e}", self.stele.display()))?;
        println!("(exit status {})", status.code().unwrap_or(-1));
        Ok(status.success())
    }

    fn must(&self, args: &[&str]) -> Result<(), String> {
        if self.stele(args)? {
            Ok(())
        } else {
            Err(format!("`stele {}` failed", args.join(" ")))
        }
    }

    /// Runs a host tool in the demo directory, echoing it; fails when it fails.
    fn host(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        println!("$ {tool} {}", args.join(" "));
        let out = Command::new(tool)
            .args(args)
            .current_dir(&self.dir)
            .output()
            .map_err(|e| format!("could not run {tool}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "`{tool} {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn must_fail(&self, args: &[&str]) -> Result<(), String> {
        if self.stele(args)? {
            Err(format!(
                "`stele {}` accepted a tampered image",
                args.join(" ")
            ))
        } else {
            Ok(())
        }
    }
}

/// Runs the demo.
pub fn demo() -> Result<(), String> {
    crate::setup::setup()?;
    let stele = build_cli()?;
    let dir = target_dir().join("demo");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let d = Demo { stele, dir };

    d.step("1. A signing key pair (ed25519, OpenSSL-compatible PEM)");
    d.must(&[
        "keygen",
        "--private",
        "release.key",
        "--public",
        "release.pub",
    ])?;

    d.step("2. A small root filesystem, built into a signed, verity-protected slot image");
    write_sample_rootfs(&d.dir.join("rootfs"), "1.0.0")?;
    d.must(&[
        "image",
        "build",
        "--rootfs",
        "rootfs",
        "--key",
        "release.key",
        "--name",
        "demo",
        "--version",
        "1.0.0",
        "--rollback-index",
        "1",
        "--out",
        "demo-1.0.0.img",
    ])?;
    d.must(&["inspect", "demo-1.0.0.img"])?;

    d.step("3. Verify it: signatures, then the hash tree against the signed root hash; --full reads every block");
    d.must(&["verify", "demo-1.0.0.img", "--key", "release.pub", "--full"])?;

    d.step("4. Tamper: one flipped byte inside the filesystem of a copy");
    let img = d.dir.join("demo-1.0.0.img");
    let bad = d.dir.join("tampered-data.img");
    flip_byte(&img, &bad, 3 * 4096 + 17)?;
    println!(
        "flipped byte {} (in data block 3) of a copy: tampered-data.img",
        3 * 4096 + 17
    );
    d.must_fail(&[
        "verify",
        "tampered-data.img",
        "--key",
        "release.pub",
        "--full",
    ])?;

    d.step("5. Tamper: one flipped byte in the signed manifest of another copy");
    let len = fs::metadata(&img).map_err(|e| e.to_string())?.len();
    let bad2 = d.dir.join("tampered-manifest.img");
    // The manifest body ends right before the zero padding that precedes the footer.
    let at = manifest_body_byte(&img, len)?;
    flip_byte(&img, &bad2, at)?;
    println!("flipped byte {at} (inside the manifest body) of a copy: tampered-manifest.img");
    d.must_fail(&["verify", "tampered-manifest.img", "--key", "release.pub"])?;

    d.step("6. A key the image was not signed with");
    d.must(&["keygen", "--private", "other.key", "--public", "other.pub"])?;
    d.must_fail(&["verify", "demo-1.0.0.img", "--key", "other.pub"])?;

    d.step("7. Secure Boot keys of the vendor: a db certificate the firmware trusts (openssl)");
    d.host(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "3650",
            "-subj",
            "/CN=stele demo db/",
            "-keyout",
            "db.key",
            "-out",
            "db.crt",
        ],
    )?;

    d.step(
        "8. Stage 1: an initramfs (stele-init, trusted key, modules, bound to the product demo) in a signed UKI on the ESP",
    );
    let kernel = crate::kernel::ensure()?;
    let init = crate::util::build_static_init()?;
    let modules = kernel.modules.display().to_string();
    let init = init.display().to_string();
    let vmlinuz = kernel.kernel.display().to_string();
    d.must(&[
        "initramfs",
        "--modules-dir",
        &modules,
        "--key",
        "release.pub",
        "--init",
        &init,
        "--kernel",
        &vmlinuz,
        "--name",
        "demo",
        "--out",
        "initrd.cpio",
    ])?;
    d.must(&[
        "uki",
        "build",
        "--kernel",
        &vmlinuz,
        "--initrd",
        "initrd.cpio",
        "--cmdline",
        "console=ttyS0 panic=-1",
        "--sign-key",
        "db.key",
        "--sign-cert",
        "db.crt",
        "--out",
        "stage1.efi",
    ])?;
    d.must(&[
        "disk",
        "create",
        "--out",
        "disk.img",
        "--uki",
        "stage1.efi",
        "--slot-size",
        "64M",
        "--a",
        "demo-1.0.0.img",
        "--data-size",
        "16M",
    ])?;

    d.step("9. Boot it through UEFI firmware (OVMF) with Secure Boot enforcing: only db-signed code runs");
    d.must(&[
        "qemu",
        "run",
        "--firmware",
        "uefi",
        "--secure-boot",
        "db.crt",
        "--disk",
        "disk.img",
        "--expect",
        "Secure boot enabled",
        "--expect",
        "stele: slot=a version=1.0.0",
        "--expect",
        "verified",
        "--expect",
        "stele: ready",
        "--expect",
        "demo: done",
        "--expect",
        "stele: halted",
        "--timeout",
        "300",
    ])?;

    d.step(
        "10. An update with a new kernel: version 2 carries its own kernel and stage-2 initramfs",
    );
    // Debian's kernel without its Debian signature, signed with the demo's db key: a kernel
    // other than the running one, byte for byte, that the Secure Boot lockdown accepts.
    fs::copy(&kernel.kernel, d.dir.join("vmlinuz-2"))
        .map_err(|e| format!("copying {}: {e}", kernel.kernel.display()))?;
    d.host("sbattach", &["--remove", "vmlinuz-2"])?;
    d.host(
        "sbsign",
        &[
            "--key",
            "db.key",
            "--cert",
            "db.crt",
            "--output",
            "vmlinuz-2",
            "vmlinuz-2",
        ],
    )?;
    d.must(&[
        "initramfs",
        "--modules-dir",
        &modules,
        "--key",
        "release.pub",
        "--init",
        &init,
        "--stage2",
        "--name",
        "demo",
        "--out",
        "stage2.cpio",
    ])?;
    write_sample_rootfs(&d.dir.join("rootfs-2"), "2.0.0")?;
    d.must(&[
        "image",
        "build",
        "--rootfs",
        "rootfs-2",
        "--key",
        "release.key",
        "--name",
        "demo",
        "--version",
        "2.0.0",
        "--rollback-index",
        "2",
        "--kernel",
        "vmlinuz-2",
        "--initrd",
        "stage2.cpio",
        "--kernel-cmdline",
        "console=ttyS0",
        "--out",
        "demo-2.0.0.img",
    ])?;
    d.must(&["inspect", "demo-2.0.0.img"])?;

    d.step(
        "11. Install it from inside the running VM, reboot, and kexec into the slot's own kernel",
    );
    println!(
        "(the bundle is the slot image itself, attached to the VM as a second disk, /dev/vdb)"
    );
    d.must(&[
        "qemu",
        "run",
        "--firmware",
        "uefi",
        "--secure-boot",
        "db.crt",
        "--disk",
        "disk.img",
        "--disk",
        "demo-2.0.0.img",
        "--expect",
        "stele: slot=a version=1.0.0",
        "--expect",
        "stele: installed demo 2.0.0",
        "--expect",
        "stele: shutdown: reboot",
        "--expect",
        "stele: slot=b version=2.0.0",
        "--expect",
        "stele: slot=b kernel ",
        "--expect",
        "kexec_core: Starting new kernel",
        "--expect",
        "stele: slot=b version=2.0.0",
        "--expect",
        "verified",
        "--expect",
        "stele: slot=b marked good",
        "--expect",
        "demo: done",
        "--expect",
        "stele: halted",
        "--timeout",
        "420",
    ])?;

    println!(
        "\ndemo: the signed image verified and booted into a read-only, dm-verity-protected root;"
    );
    println!("demo: every tampered or untrusted variant was refused;");
    println!("demo: stage 1 booted from the ESP through UEFI firmware with Secure Boot enforcing;");
    println!(
        "demo: version 2 was installed into slot b from inside the VM, its own kernel started by kexec,"
    );
    println!("demo: verified again by its own stele-init, and marked good.");
    println!("demo: files are in {}", d.dir.display());
    Ok(())
}

/// The demo service. Version 1 shows where it runs; when a bundle disk is attached
/// (/dev/vdb) it installs it into the other slot and reboots. Version 2 waits to be marked
/// good and shows the A/B status. Both end the VM (SIGUSR2 to PID 1 = power off).
const DEMO_SERVICE: &str = r#"#!/bin/sh
v=$(grep VERSION /etc/os-release | cut -d= -f2)
echo "demo: version $v running as pid $$ on slot $(cat /run/stele/slot)"
echo "demo: / is: $(grep ' / ' /proc/mounts | cut -d' ' -f1-4)"
echo "demo: its verified lower layer: $(grep ' /run/stele/lower ' /proc/mounts | cut -d' ' -f1-4)"
echo "demo: $(cat /srv/hello.txt)"
if (echo x > /run/stele/lower/x) 2>/dev/null; then
  echo "demo: wrote into the verified layer (this must not happen)"
else
  echo "demo: the verified layer is read-only"
fi
echo scratch > /scratch && echo "demo: writes to / go to the RAM overlay: $(cat /scratch)"
sleep 2
if [ -b /dev/vdb ] && [ "$(cat /run/stele/slot)" = a ]; then
  echo "demo: an update bundle is attached: stele update install /dev/vdb"
  stele update install /dev/vdb && { stele update status; echo "demo: rebooting into the new slot"; kill -TERM 1; sleep 60; }
fi
stele update status
echo "demo: done"
kill -USR2 1
sleep 60
"#;

const DEMO_SYSTEM: &str = r#"# /etc/stele/system.toml: what stele-init runs once the root is verified.
healthy_after = 1

[[service]]
name = "demo"
exec = ["/bin/demo"]
restart = "never"
"#;

/// A busybox root filesystem with the demo service.
fn write_sample_rootfs(root: &Path, version: &str) -> Result<(), String> {
    let os_release = format!("NAME=stele-demo\nVERSION={version}\n");
    let files: &[(&str, &str, u32)] = &[
        // (path, content, mode)
        ("etc/os-release", &os_release, 0o644),
        ("etc/hostname", "stele-demo\n", 0o644),
        ("etc/stele/system.toml", DEMO_SYSTEM, 0o644),
        (
            "srv/hello.txt",
            "Hello from a verified, read-only root.\n",
            0o644,
        ),
        ("bin/demo", DEMO_SERVICE, 0o755),
    ];
    for dir in ["proc", "sys", "dev", "run", "tmp", "var", "root"] {
        fs::create_dir_all(root.join(dir)).map_err(|e| format!("creating {dir}: {e}"))?;
    }
    for (path, text, mode) in files {
        let p = root.join(path);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        fs::write(&p, text).map_err(|e| format!("writing {}: {e}", p.display()))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode))
            .map_err(|e| format!("chmod {}: {e}", p.display()))?;
    }
    // A larger file, so that the image has a real hash tree to show.
    let manual: String = (1..=2000)
        .map(|i| format!("line {i} of a file inside the verified root\n"))
        .collect();
    fs::write(root.join("srv/manual.txt"), manual)
        .map_err(|e| format!("writing manual.txt: {e}"))?;
    let bin = root.join("bin");
    fs::copy("/bin/busybox", bin.join("busybox"))
        .map_err(|e| format!("copying /bin/busybox (package busybox-static): {e}"))?;
    for applet in [
        "sh", "cat", "echo", "grep", "cut", "ls", "sleep", "kill", "sync", "poweroff",
    ] {
        std::os::unix::fs::symlink("busybox", bin.join(applet))
            .map_err(|e| format!("linking {applet}: {e}"))?;
    }
    Ok(())
}

fn flip_byte(src: &Path, dst: &Path, at: u64) -> Result<(), String> {
    let mut bytes = fs::read(src).map_err(|e| format!("reading {}: {e}", src.display()))?;
    let i = usize::try_from(at).map_err(|e| e.to_string())?;
    let b = bytes.get_mut(i).ok_or("offset outside the image")?;
    *b ^= 0x01;
    fs::write(dst, bytes).map_err(|e| format!("writing {}: {e}", dst.display()))
}

/// Offset of a byte inside the manifest body: the footer (last 4 KiB) locates the manifest;
/// we take its last byte, which is always body (see docs/FORMATS.md).
fn manifest_body_byte(img: &Path, len: u64) -> Result<u64, String> {
    let bytes = fs::read(img).map_err(|e| format!("reading {}: {e}", img.display()))?;
    let footer = usize::try_from(len - 4096).map_err(|e| e.to_string())?;
    let field = |o: usize| -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[footer + o..footer + o + 8]);
        u64::from_le_bytes(b)
    };
    let (off, mlen) = (field(16), field(24));
    Ok(off + mlen - 2)
}

//! `cargo xtask setup`: the host tools (Debian packages) and the test kernel.
//!
//! Idempotent: when everything is present it only checks, which takes well under a second
//! (plus the kernel check). As root on Debian/Ubuntu it installs what is missing with
//! apt-get; elsewhere it prints exactly what to install.

use std::process::Command;

use crate::kernel::{self, KernelEnv};
use crate::util::{apt_update, have_tool, output, run, target_dir};

/// Debian packages the project needs, with one program (or, when absolute, one file) each
/// that proves it is installed.
pub const PACKAGES: &[(&str, &str)] = &[
    ("erofs-utils", "mkfs.erofs"),
    ("squashfs-tools", "mksquashfs"),
    ("e2fsprogs", "mkfs.ext4"),
    ("cryptsetup-bin", "veritysetup"),
    ("openssl", "openssl"),
    ("qemu-system-x86", "qemu-system-x86_64"),
    ("gdisk", "sgdisk"),
    // `stele disk create --format qcow2|vmdk|vhdx`.
    ("qemu-utils", "qemu-img"),
    ("cpio", "cpio"),
    ("kmod", "depmod"),
    ("busybox-static", "busybox"),
    // Firmware boot: UKIs, the ESP, SYSLINUX, bmap, OVMF (Secure Boot).
    ("ovmf", "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"),
    (
        "systemd-boot-efi",
        "/usr/lib/systemd/boot/efi/linuxx64.efi.stub",
    ),
    ("binutils", "objcopy"),
    ("sbsigntool", "sbsign"),
    ("dosfstools", "mkfs.vfat"),
    ("mtools", "mcopy"),
    ("syslinux", "syslinux"),
    ("syslinux-common", "/usr/lib/syslinux/mbr/gptmbr.bin"),
    ("bmap-tools", "bmaptool"),
    ("python3-venv", "python3"),
    ("fakeroot", "fakeroot"),
    ("libcap2-bin", "setcap"),
    ("tar", "tar"),
    // The standard compressors, to cross-check stele's decoders of compressed modules.
    ("xz-utils", "xz"),
    ("zstd", "zstd"),
    ("gzip", "gzip"),
    // Fleet updates: the tests serve slot images with a real static server; the delta
    // benchmark compares with curl and measures the fetch client's memory with time -v.
    ("nginx", "/usr/sbin/nginx"),
    // The QEMU fleet test's guestfwd runs one socat per guest connection to loopback.
    ("socat", "socat"),
    ("curl", "curl"),
    ("time", "/usr/bin/time"),
    // `script`: a terminal for the progress-bar test.
    ("bsdutils", "script"),
    // A software TPM 2.0 for the TPM tests (stele-tpm, `stele qemu run --tpm`); the
    // tpm2-tools to look at it by hand.
    ("swtpm", "swtpm"),
    ("swtpm-tools", "swtpm_setup"),
    ("tpm2-tools", "tpm2_nvread"),
];

/// Debian packages only `cargo xtask bench delta debian` needs (not installed for the
/// tests): the appliance roots and the standard tools it compares with.
pub const BENCH_PACKAGES: &[(&str, &str)] = &[
    ("debootstrap", "debootstrap"),
    ("xdelta3", "xdelta3"),
    ("zstd", "zstd"),
    ("casync", "casync"),
    ("xz-utils", "xz"),
];

/// Packages whose program another package may also provide: checked with dpkg.
const DPKG_CHECKED: &[&str] = &[
    // Debian's `busybox` (dynamic) also provides /bin/busybox; we need the static one.
    "busybox-static",
    // python3 alone has no ensurepip, so `python3 -m venv` fails without it.
    "python3-venv",
];

/// The virt-firmware tools (virt-fw-vars: Secure Boot variable stores for OVMF), from
/// PyPI into a venv under target/, where stele-qemu looks for them.
const VIRT_FIRMWARE: &str = "virt-firmware==26.10";

/// Installs missing packages, then makes sure the test kernels are there; returns the
/// first (the machine's release; [`kernel::ensure_debian13`] gives the second).
pub fn setup() -> Result<KernelEnv, String> {
    install_packages(PACKAGES)?;
    install_venv()?;
    let env = kernel::ensure()?;
    let env13 = kernel::ensure_debian13()?;
    eprintln!(
        "xtask: setup ok: tools present; kernel {} (modules {}); Debian 13's kernel {}",
        env.kernel.display(),
        env.modules.display(),
        env13.kernel.display()
    );
    Ok(env)
}

fn missing_packages(packages: &[(&'static str, &str)]) -> Vec<&'static str> {
    packages
        .iter()
        .filter(|(pkg, tool)| {
            if DPKG_CHECKED.contains(pkg) {
                !dpkg_installed(pkg)
            } else if tool.starts_with('/') {
                !std::path::Path::new(tool).is_file()
            } else {
                !have_tool(tool)
            }
        })
        .map(|(pkg, _)| *pkg)
        .collect()
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Abbrev}", pkg])
        .output()
        .map(|o| o.status.success() && o.stdout.starts_with(b"ii"))
        .unwrap_or(false)
}

pub fn is_root() -> bool {
    output(Command::new("id").arg("-u"), "id -u")
        .map(|s| s.trim() == "0")
        .unwrap_or(false)
}

/// Installs those of `packages` that are missing (as root with apt-get; otherwise the
/// error says what to install).
pub fn install_packages(packages: &[(&'static str, &str)]) -> Result<(), String> {
    let missing = missing_packages(packages);
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !have_tool("apt-get") {
        return Err(format!(
            "missing host tools; install these packages (Debian names): {list}"
        ));
    }
    if !is_root() {
        return Err(format!(
            "missing host tools; run as root: apt-get update && apt-get install -y {list}"
        ));
    }
    eprintln!("xtask: installing {list}");
    apt_update()?;
    run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &format!("apt-get install {list}"),
    )?;
    let still = missing_packages(packages);
    if still.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "apt-get finished but these are still missing: {}",
            still.join(" ")
        ))
    }
}

/// The venv with virt-firmware (target/stele-venv); a no-op when virt-fw-vars is there.
fn install_venv() -> Result<(), String> {
    let venv = target_dir().join("stele-venv");
    let bin = venv.join("bin");
    if bin.join("virt-fw-vars").is_file() {
        return Ok(());
    }
    eprintln!("xtask: installing {VIRT_FIRMWARE} into {}", venv.display());
    run(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        "python3 -m venv",
    )?;
    run(
        Command::new(bin.join("pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            VIRT_FIRMWARE,
        ]),
        &format!("pip install {VIRT_FIRMWARE}"),
    )
}

//! Firmware for the VM: direct kernel boot (QEMU loads kernel and initrd), SeaBIOS booting
//! the disk, or OVMF (UEFI) with a per-VM or persistent variable store, optionally with
//! Secure Boot enforcing and a given db certificate enrolled (virt-fw-vars from the
//! `virt-firmware` tools). [`machine_args`] is pure; the rest prepares files.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::QemuError;

/// OVMF from Debian's `ovmf` package: firmware code (read-only) and variable-store template.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// The Secure Boot build (needs SMM: `-machine q35,smm=on`).
pub const OVMF_CODE_SECURE: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// How to get OVMF.
pub const OVMF_FIX: &str = "install the Debian package ovmf (run `cargo xtask setup`)";
/// The variable-store tool, and where `cargo xtask setup` puts it (under target/).
pub const VIRT_FW_VARS: &str = "virt-fw-vars";
pub const VENV_DIR: &str = "stele-venv";
/// Owner GUID of the db entry stele enrolls.
pub const DB_OWNER: &str = "5ee1e000-57a7-4e5e-9b5f-0000000000db";

/// How the VM boots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Firmware {
    /// QEMU loads the kernel and initrd itself (`-kernel`, `-initrd`, `-append`).
    #[default]
    Direct,
    /// SeaBIOS (QEMU's default firmware) boots the first disk through its MBR boot code.
    Bios,
    /// OVMF boots the disk's EFI system partition (or a `-kernel` image, when given).
    Uefi(Uefi),
}

/// An OVMF set-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uefi {
    /// Firmware code, mapped read-only.
    pub code: PathBuf,
    /// The variable store, mapped read-write (the firmware writes boot entries to it).
    pub vars: PathBuf,
    /// Secure Boot build: q35 with SMM, the flash's secure property on.
    pub secure_boot: bool,
}

impl Firmware {
    /// True when QEMU itself must load the kernel.
    pub fn is_direct(&self) -> bool {
        matches!(self, Firmware::Direct)
    }
}

/// The `-machine`, `-drive if=pflash` and `-global` arguments for `fw`. Pure.
pub fn machine_args(fw: &Firmware) -> Vec<String> {
    let Firmware::Uefi(u) = fw else {
        return Vec::new();
    };
    let flash = |unit: u8, path: &Path, ro: bool| {
        let ro = if ro { ",readonly=on" } else { "" };
        format!(
            "if=pflash,format=raw,unit={unit}{ro},file={}",
            path.display().to_string().replace(',', ",,")
        )
    };
    let mut a = vec![
        "-machine".to_string(),
        if u.secure_boot { "q35,smm=on" } else { "q35" }.to_string(),
    ];
    if u.secure_boot {
        a.extend(["-global", "driver=cfi.pflash01,property=secure,value=on"].map(String::from));
    }
    a.extend([
        "-drive".to_string(),
        flash(0, &u.code, true),
        "-drive".to_string(),
        flash(1, &u.vars, false),
    ]);
    a
}

/// A directory for one VM's variable store or TPM state, removed when dropped (and, where
/// the process cleans up on signals, on SIGINT/SIGTERM/SIGHUP: [`stele_image::cleanup`]).
#[derive(Debug)]
pub struct VarsDir(stele_image::cleanup::TempPath);

impl VarsDir {
    /// A new directory under $TMPDIR; `what` (`vars`, `tpm`) is in its name and errors.
    pub fn new(what: &str) -> Result<VarsDir, QemuError> {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "stele-qemu-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let dir = stele_image::cleanup::TempPath::register(p);
        std::fs::create_dir_all(dir.path()).map_err(|source| QemuError::Spawn {
            what: format!("a directory for the VM's {what} ({})", dir.path().display()),
            source,
        })?;
        Ok(VarsDir(dir))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

fn need(what: &str, path: &Path, fix: &str) -> Result<(), QemuError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(QemuError::Missing {
            what: what.to_string(),
            path: path.to_path_buf(),
            fix: fix.to_string(),
        })
    }
}

/// `virt-fw-vars`: `$STELE_VIRT_FW_VARS`, then the venv `cargo xtask setup` makes under
/// the target directory, then the one host-tool lookup (`$PATH` and the sbin directories).
pub fn find_virt_fw_vars() -> Result<PathBuf, QemuError> {
    if let Some(p) = std::env::var_os("STELE_VIRT_FW_VARS") {
        let p = PathBuf::from(p);
        need(
            "virt-fw-vars (from STELE_VIRT_FW_VARS)",
            &p,
            "fix STELE_VIRT_FW_VARS, or unset it and run `cargo xtask setup`",
        )?;
        return Ok(p);
    }
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        dirs.push(PathBuf::from(t).join(VENV_DIR).join("bin"));
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    dirs.push(workspace.join("target").join(VENV_DIR).join("bin"));
    dirs.into_iter()
        .map(|d| d.join(VIRT_FW_VARS))
        .find(|p| p.is_file())
        .or_else(|| stele_image::tool::find(VIRT_FW_VARS))
        .ok_or_else(|| QemuError::Missing {
            what: VIRT_FW_VARS.to_string(),
            path: PathBuf::from(VIRT_FW_VARS),
            fix: format!(
                "run `cargo xtask setup` (installs the virt-firmware tools from PyPI into \
                 target/{VENV_DIR}), or put virt-fw-vars on PATH (pip install virt-firmware)"
            ),
        })
}

/// Runs virt-fw-vars with `args`.
fn virt_fw_vars(args: &[&std::ffi::OsStr]) -> Result<(), QemuError> {
    let exe = find_virt_fw_vars()?;
    let out = Command::new(&exe)
        .args(args)
        .output()
        .map_err(|source| QemuError::Spawn {
            what: exe.display().to_string(),
            source,
        })?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(QemuError::Tool {
        tool: VIRT_FW_VARS.to_string(),
        status: out.status.to_string(),
        stderr: err.trim().lines().last().unwrap_or("").to_string(),
    })
}

/// Writes `out`: a fresh OVMF variable store with a newly generated PK and KEK, `db_cert`
/// (PEM or DER X.509) as the only db entry (no Microsoft keys), and Secure Boot on.
pub fn enroll(db_cert: &Path, out: &Path) -> Result<(), QemuError> {
    need(
        "the Secure Boot db certificate",
        db_cert,
        "give an X.509 certificate (PEM or DER)",
    )?;
    need(
        "the OVMF variable store template",
        Path::new(OVMF_VARS),
        OVMF_FIX,
    )?;
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    virt_fw_vars(&[
        os("--input"),
        os(OVMF_VARS),
        os("--output"),
        out.as_os_str(),
        os("--enroll-generate"),
        os("stele test PK and KEK"),
        os("--no-microsoft"),
        os("--add-db"),
        os(DB_OWNER),
        db_cert.as_os_str(),
        os("--secure-boot"),
    ])
}

/// Adds a boot entry in front of the boot order of the store `vars`: `file` (a path on
/// the ESP, e.g. `\EFI\BOOT\BOOTX64.EFI`) with `options` as its load options, as a boot
/// loader or `efibootmgr -u` would pass a command line.
pub fn add_boot_entry(vars: &Path, file: &str, options: &str) -> Result<(), QemuError> {
    let entry = format!("{file} {options}");
    virt_fw_vars(&[
        std::ffi::OsStr::new("--inplace"),
        vars.as_os_str(),
        std::ffi::OsStr::new("--append-boot-filepath"),
        std::ffi::OsStr::new(&entry),
    ])
}

/// OVMF for one VM. `secure_boot_db`: Secure Boot on with that db certificate enrolled.
/// `persistent`: keep the variable store in this file (created like a fresh one when it
/// does not exist; used as it is when it does). Otherwise the store is a fresh per-VM copy
/// that lives as long as the returned [`VarsDir`].
pub fn prepare_uefi(
    secure_boot_db: Option<&Path>,
    persistent: Option<&Path>,
) -> Result<(Uefi, Option<VarsDir>), QemuError> {
    let code = PathBuf::from(if secure_boot_db.is_some() {
        OVMF_CODE_SECURE
    } else {
        OVMF_CODE
    });
    need("the OVMF firmware", &code, OVMF_FIX)?;
    let (vars, dir) = match persistent {
        Some(p) => (p.to_path_buf(), None),
        None => {
            let d = VarsDir::new("vars")?;
            (d.path().join("OVMF_VARS.fd"), Some(d))
        }
    };
    if !vars.exists() {
        match secure_boot_db {
            Some(db) => enroll(db, &vars)?,
            None => {
                need(
                    "the OVMF variable store template",
                    Path::new(OVMF_VARS),
                    OVMF_FIX,
                )?;
                std::fs::copy(OVMF_VARS, &vars).map_err(|source| QemuError::Spawn {
                    what: format!("a copy of {OVMF_VARS} at {}", vars.display()),
                    source,
                })?;
            }
        }
    }
    let uefi = Uefi {
        code,
        vars,
        secure_boot: secure_boot_db.is_some(),
    };
    Ok((uefi, dir))
}

/// Checks that every file the VM needs exists, so a typo is one clear error and not a
/// QEMU failure.
pub fn check_inputs(cfg: &crate::VmConfig) -> Result<(), QemuError> {
    let given = |p: &Path| !p.as_os_str().is_empty();
    let fix = "check the path";
    if cfg.firmware.is_direct() || given(&cfg.kernel) {
        need("the kernel", &cfg.kernel, fix)?;
    }
    if cfg.firmware.is_direct() || given(&cfg.initrd) {
        need("the initrd", &cfg.initrd, fix)?;
    }
    for d in &cfg.disks {
        need("the disk image", &d.path, fix)?;
    }
    if let Firmware::Uefi(u) = &cfg.firmware {
        need("the OVMF firmware", &u.code, OVMF_FIX)?;
        need(
            "the UEFI variable store",
            &u.vars,
            "give an existing store, or none for a fresh one",
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::pair;

    fn uefi(secure: bool) -> Firmware {
        Firmware::Uefi(Uefi {
            code: "/fw/CODE.fd".into(),
            vars: "/vm/a,b.fd".into(),
            secure_boot: secure,
        })
    }

    #[test]
    fn direct_and_bios_need_no_machine_arguments() {
        assert!(machine_args(&Firmware::Direct).is_empty());
        assert!(machine_args(&Firmware::Bios).is_empty());
    }

    #[test]
    fn uefi_maps_code_read_only_and_vars_writable() {
        assert_eq!(
            machine_args(&uefi(false)),
            [
                "-machine",
                "q35",
                "-drive",
                "if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd",
                "-drive",
                "if=pflash,format=raw,unit=1,file=/vm/a,,b.fd"
            ]
        );
    }

    #[test]
    fn secure_boot_adds_smm_and_the_secure_flash() {
        let a = machine_args(&uefi(true));
        assert_eq!(
            &a[..4],
            [
                "-machine",
                "q35,smm=on",
                "-global",
                "driver=cfi.pflash01,property=secure,value=on"
            ]
        );
        assert!(a.contains(&"if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd".to_string()));
    }

    #[test]
    fn uefi_boots_the_disk_without_kernel_arguments() {
        let mut c = crate::VmConfig::with_firmware(uefi(false));
        c.disks = vec![crate::Disk::new("/d/disk.img")];
        let a = crate::qemu_args(&c);
        for flag in ["-kernel", "-initrd", "-append"] {
            assert!(pair(&a, flag).is_empty(), "{flag} in {a:?}");
        }
        assert_eq!(pair(&a, "-machine"), ["q35"]);
        assert_eq!(pair(&a, "-drive").len(), 3);
        assert_eq!(
            pair(&a, "-drive")[2],
            "file=/d/disk.img,format=raw,if=virtio"
        );
    }

    #[test]
    fn uefi_with_a_loader_supplied_kernel_and_command_line() {
        let mut c = crate::VmConfig::with_firmware(uefi(true));
        c.kernel = "/k/uki.efi".into();
        c.append = "stele.injected".into();
        let a = crate::qemu_args(&c);
        assert_eq!(pair(&a, "-kernel"), ["/k/uki.efi"]);
        assert!(pair(&a, "-initrd").is_empty());
        assert_eq!(
            pair(&a, "-append"),
            [format!("{} stele.injected", crate::BASE_APPEND)]
        );
        assert_eq!(pair(&a, "-machine"), ["q35,smm=on"]);
    }

    #[test]
    fn bios_boots_the_disk_and_watchdog_resets() {
        let mut c = crate::VmConfig::with_firmware(Firmware::Bios);
        c.watchdog = true;
        c.no_reboot = true;
        let a = crate::qemu_args(&c);
        assert!(pair(&a, "-kernel").is_empty() && pair(&a, "-machine").is_empty());
        assert_eq!(pair(&a, "-device"), ["i6300esb"]);
        assert_eq!(pair(&a, "-action"), ["watchdog=reset"]);
        assert!(a.contains(&"-no-reboot".to_string()));
        // Direct boot has no watchdog unless asked.
        let d = crate::qemu_args(&crate::VmConfig::new("k", "i"));
        assert!(pair(&d, "-device").is_empty());
    }

    #[test]
    fn fresh_vars_are_a_per_vm_copy_and_persistent_vars_stay() {
        if !Path::new(OVMF_VARS).is_file() {
            panic!("{OVMF_VARS} missing: {OVMF_FIX}");
        }
        let (u, dir) = prepare_uefi(None, None).unwrap();
        assert!(!u.secure_boot && u.code == Path::new(OVMF_CODE));
        assert_eq!(
            std::fs::read(&u.vars).unwrap(),
            std::fs::read(OVMF_VARS).unwrap()
        );
        let (u2, _dir2) = prepare_uefi(None, None).unwrap();
        assert_ne!(u.vars, u2.vars);
        drop(dir);
        assert!(!u.vars.exists());
        let keep = std::env::temp_dir().join(format!("stele-vars-test-{}.fd", std::process::id()));
        let _ = std::fs::remove_file(&keep);
        let (p, none) = prepare_uefi(None, Some(&keep)).unwrap();
        assert!(none.is_none() && p.vars == keep && keep.is_file());
        std::fs::write(&keep, b"changed by the firmware").unwrap();
        prepare_uefi(None, Some(&keep)).unwrap();
        assert_eq!(std::fs::read(&keep).unwrap(), b"changed by the firmware");
        std::fs::remove_file(&keep).unwrap();
    }

    #[test]
    fn missing_files_are_named() {
        let mut c = crate::VmConfig::new("/nonexistent/vmlinuz", "/nonexistent/initrd");
        let e = check_inputs(&c).unwrap_err();
        assert!(
            matches!(&e, QemuError::Missing { what, .. } if what == "the kernel"),
            "{e}"
        );
        c.firmware = Firmware::Bios;
        c.kernel = PathBuf::new();
        c.initrd = PathBuf::new();
        c.disks = vec![crate::Disk::new("/nonexistent/disk.img")];
        let e = check_inputs(&c).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/disk.img"), "{e}");
        c.disks.clear();
        check_inputs(&c).unwrap();
        c.firmware = uefi(false);
        let e = check_inputs(&c).unwrap_err();
        assert!(e.to_string().contains("ovmf"), "{e}");
    }
}

//! Hardware profiles of `stele initramfs --hardware generic|qemu|host`: the drivers an
//! initramfs carries beside its core (dm-verity, the root filesystems, overlay), and for
//! each module the device aliases that make stele-init load it (boot.toml `modaliases`):
//! a driver loads only when a device it drives is present, so a boot pays for no driver the
//! machine lacks (docs/BOOT.md "Modules").

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use stele_verifier::kmod::{glob_match, EFI_ALIAS, SCANNED_BUSES};

use crate::modules::{ModuleDb, ModulesError, ResolvedModule};

/// boot.toml `modaliases`: module file name -> device alias patterns.
pub type Modaliases = BTreeMap<String, Vec<String>>;

/// What every initramfs carries and always loads: verity, the root filesystems, overlay.
pub const CORE: &[&str] = &["dm_verity", "erofs", "squashfs", "ext4", "overlay"];

/// A driver of a profile: `module` binds the hardware; `with` serve what it finds (the
/// disks behind an AHCI or SCSI controller, the cards behind an SD host) and load with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Driver {
    pub module: Cow<'static, str>,
    pub with: &'static [&'static str],
}

const fn d(module: &'static str, with: &'static [&'static str]) -> Driver {
    Driver {
        module: Cow::Borrowed(module),
        with,
    }
}

/// `qemu`: virtio disks only (what `stele initramfs` carried before the profiles).
pub const QEMU: &[Driver] = &[d("virtio_pci", &[]), d("virtio_blk", &[])];

/// `generic`: what x86-64 machines boot from (NVMe, AHCI/SATA, virtio-blk and -scsi,
/// eMMC/SD), the TPM, the common hardware watchdogs (`lpc_ich` creates the iTCO
/// watchdog's device) and the pstore backends (verifier `kmod::PSTORE_BACKENDS`: ramoops
/// always, a no-op without its command-line region; efi-pstore on EFI machines). Each is taken when the kernel has it as a module; built-in ones need
/// nothing, missing ones are left out. USB storage is not here: removable media must not
/// supply the boot unless asked for (`--module usb_storage --module xhci_pci`).
pub const GENERIC: &[Driver] = &[
    d("nvme", &[]),
    d("ahci", &["sd_mod"]),
    d("virtio_pci", &[]),
    d("virtio_blk", &[]),
    d("virtio_scsi", &["sd_mod"]),
    d("sdhci_pci", &["mmc_block"]),
    d("sdhci_acpi", &["mmc_block"]),
    d("tpm_tis", &[]),
    d("tpm_crb", &[]),
    d("lpc_ich", &[]),
    d("iTCO_wdt", &[]),
    d("sp5100_tco", &[]),
    d("wdat_wdt", &[]),
    d("i6300esb", &[]),
    d("ramoops", &[]),
    d("efi_pstore", &[]),
];

/// Drivers carried only when asked for by `--module`, with what serves them: USB storage
/// (the disks behind it need sd_mod, the sticks a USB host controller driver).
pub const ON_REQUEST: &[Driver] = &[d("usb_storage", &["sd_mod", "xhci_pci", "ehci_pci"])];

/// Modules every profile carries for the platform, each with the (pseudo) modalias that
/// makes stele-init load it: efivarfs, to read the boot disk the UEFI firmware names,
/// loaded only on a UEFI boot ([`EFI_ALIAS`]).
pub const PLATFORM: &[(&str, &str)] = &[("efivarfs", EFI_ALIAS)];

/// Where `host` also looks for drivers of the build machine's devices (storage
/// controllers, the TPM, watchdogs), as paths in the modules directory.
pub const HOST_DIRS: &[&str] = &[
    "kernel/drivers/ata/",
    "kernel/drivers/nvme/",
    "kernel/drivers/scsi/",
    "kernel/drivers/block/",
    "kernel/drivers/mmc/",
    "kernel/drivers/virtio/",
    "kernel/drivers/char/tpm/",
    "kernel/drivers/watchdog/",
];

/// A hardware profile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Hardware {
    #[default]
    Generic,
    Qemu,
    /// The [`GENERIC`] drivers and those of [`HOST_DIRS`] whose device aliases match a
    /// device of the build machine (its sysfs modaliases), as dracut's host-only mode.
    Host,
}

impl Hardware {
    pub fn name(self) -> &'static str {
        match self {
            Hardware::Generic => "generic",
            Hardware::Qemu => "qemu",
            Hardware::Host => "host",
        }
    }
}

/// The modaliases of the devices present under `sys` (`/sys`): every
/// `bus/<bus>/devices/*/modalias` of the [`SCANNED_BUSES`], sorted. Missing directories
/// count as no devices.
pub fn present_modaliases(sys: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for bus in SCANNED_BUSES {
        let Ok(dir) = std::fs::read_dir(sys.join("bus").join(bus).join("devices")) else {
            continue;
        };
        for e in dir.flatten() {
            if let Ok(a) = std::fs::read_to_string(e.path().join("modalias")) {
                let a = a.trim();
                if !a.is_empty() {
                    out.push(a.to_owned());
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// `aliases` match one of `present`. Pure.
pub fn matches_any(aliases: &[String], present: &[String]) -> bool {
    aliases
        .iter()
        .any(|a| present.iter().any(|p| glob_match(a, p)))
}

/// The modules of `always` (the core and the user's `--module`s, loaded on every boot) and
/// the profile's `drivers` the kernel has as modules (with `present`: only those matching
/// a present device), in load order; and boot.toml `modaliases`: for each module only
/// drivers need, the device aliases of those drivers (a module every boot needs, or one a
/// driver without device aliases needs, has no entry and always loads). Reads the `.ko`
/// files.
pub fn plan(
    db: &ModuleDb,
    always: &[String],
    drivers: &[Driver],
    present: Option<&[String]>,
) -> Result<(Vec<ResolvedModule>, Modaliases), ModulesError> {
    let mut always = always.to_vec();
    for r in ON_REQUEST {
        if always
            .iter()
            .any(|a| crate::modules::normalize(a) == r.module)
        {
            always.extend(
                r.with
                    .iter()
                    .filter(|w| db.is_module(w) && !always.iter().any(|a| a == *w))
                    .map(|w| (*w).to_owned())
                    .collect::<Vec<_>>(),
            );
        }
    }
    let always = always.as_slice();
    let mut unconditional = BTreeSet::new();
    for n in always {
        unconditional.extend(db.resolve(&[n.as_str()])?.into_iter().map(|m| m.name));
    }
    let mut gates: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut names: Vec<String> = always.to_vec();
    for drv in drivers {
        if !db.is_module(&drv.module) {
            continue;
        }
        let own = db.device_aliases(&drv.module);
        if let Some(present) = present {
            if !matches_any(&own, present) {
                continue;
            }
        }
        let mut req = vec![drv.module.as_ref()];
        req.extend(drv.with.iter().copied().filter(|w| db.is_module(w)));
        names.extend(req.iter().map(|r| (*r).to_owned()));
        for m in db.resolve(&req)? {
            if own.is_empty() {
                unconditional.insert(m.name);
            } else {
                gates.entry(m.name).or_default().extend(own.iter().cloned());
            }
        }
    }
    for (module, alias) in PLATFORM {
        if db.is_module(module) && !unconditional.contains(*module) {
            names.push((*module).to_owned());
            for m in db.resolve(&[module])? {
                gates.entry(m.name).or_default().insert((*alias).to_owned());
            }
        }
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let order = db.resolve(&refs)?;
    let modaliases = order
        .iter()
        .filter(|m| !unconditional.contains(&m.name))
        .filter_map(|m| {
            let g = gates.get(&m.name)?;
            Some((m.file_name.clone(), g.iter().cloned().collect()))
        })
        .collect();
    Ok((order, modaliases))
}

/// The drivers of `profile`: for `host`, the generic ones plus the build machine's
/// ([`HOST_DIRS`] modules matching `present`). Pure.
pub fn drivers(db: &ModuleDb, profile: Hardware, present: &[String]) -> Vec<Driver> {
    match profile {
        Hardware::Generic => GENERIC.to_vec(),
        Hardware::Qemu => QEMU.to_vec(),
        Hardware::Host => {
            let mut out = GENERIC.to_vec();
            for m in db.modules_under(HOST_DIRS) {
                if !out
                    .iter()
                    .any(|d| crate::modules::normalize(&d.module) == m)
                    && matches_any(&db.device_aliases(&m), present)
                {
                    out.push(Driver {
                        module: Cow::Owned(m),
                        with: &[],
                    });
                }
            }
            out
        }
    }
}

#[cfg(test)]
#[path = "hardware_tests.rs"]
mod tests;

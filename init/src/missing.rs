//! Saying what is missing when no disk carries the state partition (docs/BOOT.md "No
//! stele disk"): the block devices the kernel sees, and the storage controllers (PCI class
//! 01xx, virtio block/SCSI) that no driver is bound to, each with the `--module` that
//! would bind it (the initramfs's storage aliases or the kernel's `modules.alias`,
//! [`stele_verifier::modalias`]), else its PCI id and modalias. [`look`] reads sysfs; the
//! rest is pure.

use std::fmt;
use std::path::Path;

use stele_verifier::modalias::{Aliases, STORAGE_ALIAS};

/// A whole disk the kernel sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    /// Kernel name (`vda`, `nvme0n1`).
    pub name: String,
    pub bytes: u64,
    pub removable: bool,
    /// Its partitions' GPT names, in kernel order (unnamed ones left out).
    pub partnames: Vec<String>,
}

/// A storage controller with no driver bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Controller {
    /// sysfs name: PCI address (`0000:00:04.0`) or virtio device (`virtio1`).
    pub address: String,
    /// What it is (`NVMe controller`, `virtio SCSI`).
    pub kind: String,
    /// `1b36:0010` for PCI; empty for virtio.
    pub pci_id: String,
    pub modalias: String,
    /// The modules whose aliases match, in alias-file order (empty: unknown).
    pub modules: Vec<String>,
}

/// What the kernel sees when the state partition is missing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub disks: Vec<Disk>,
    pub driverless: Vec<Controller>,
    /// The partition looked for (boot.toml's state name).
    pub wanted: String,
}

/// What a PCI storage class code (`0x010802`: class, subclass, prog-if) is. Pure.
pub fn pci_kind(class: u32) -> &'static str {
    match (class >> 8, class & 0xff) {
        (0x0108, 0x02) => "NVMe controller",
        (0x0108, _) => "non-volatile memory controller",
        (0x0106, 0x01) => "SATA controller (AHCI)",
        (0x0106, _) => "SATA controller",
        (0x0100, _) => "SCSI controller",
        (0x0101, _) => "IDE controller",
        (0x0104, _) => "RAID controller",
        (0x0105, _) => "ATA controller",
        (0x0107, _) => "SAS controller",
        (0x0180, _) => "storage controller",
        _ => "mass storage controller",
    }
}

/// What a virtio device id is, for the two that carry disks; `None` for the rest. Pure.
pub fn virtio_kind(device: u32) -> Option<&'static str> {
    match device {
        2 => Some("virtio block device"),
        8 => Some("virtio SCSI controller"),
        _ => None,
    }
}

/// `1.5 GiB`, `256 MiB`. Pure.
fn size(bytes: u64) -> String {
    let mib = bytes >> 20;
    if mib >= 1024 {
        format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
    } else {
        format!("{mib} MiB")
    }
}

impl fmt::Display for Disk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}", self.name, size(self.bytes))?;
        if self.removable {
            write!(f, ", removable")?;
        }
        if self.partnames.is_empty() {
            write!(f, ", no named partitions)")
        } else {
            write!(f, ", partitions {})", self.partnames.join(" "))
        }
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.address, self.kind)?;
        if !self.pci_id.is_empty() {
            write!(f, " (PCI id {})", self.pci_id)?;
        }
        match self.modules.as_slice() {
            [] => write!(
                f,
                " has no driver, and no module of this initramfs's alias table matches its modalias {}: find its driver with `modprobe --resolve-alias '{}'` where the kernel's modules are, then rebuild the initramfs with `stele initramfs --module <driver>`",
                self.modalias, self.modalias
            ),
            mods => write!(
                f,
                " has no driver: rebuild the initramfs with `stele initramfs {}`",
                mods.iter()
                    .map(|m| format!("--module {m}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        }
    }
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.disks.is_empty() {
            write!(f, "the kernel sees no disk at all")?;
        } else {
            let disks: Vec<String> = self.disks.iter().map(Disk::to_string).collect();
            write!(f, "the kernel sees the disks {}", disks.join(", "))?;
        }
        if self.driverless.is_empty() {
            return write!(
                f,
                "; every storage controller has a driver: boot the disk `stele disk create` wrote (it has a GPT partition named {})",
                self.wanted
            );
        }
        for c in &self.driverless {
            write!(f, "; storage controller {c}")?;
        }
        Ok(())
    }
}

/// The value of a sysfs hex file (`0x010802`). Pure.
fn hex(text: &str) -> Option<u32> {
    u32::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Sorted entries of a sysfs directory (none when it is missing).
fn entries(dir: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// The alias tables this initramfs has: its storage aliases, and the running kernel's
/// `modules.alias` when the initramfs carries one.
pub fn aliases() -> Aliases {
    let mut a = Aliases::default();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    let kernel = [
        format!("/lib/modules/{release}/modules.alias"),
        format!("/usr/lib/modules/{release}/modules.alias"),
    ];
    for p in std::iter::once(STORAGE_ALIAS.to_string()).chain(kernel) {
        if let Ok(t) = std::fs::read_to_string(&p) {
            a.extend(Aliases::parse(&t));
        }
    }
    a
}

/// Reads what the kernel sees from sysfs (looking for partition `wanted`).
pub fn look(wanted: &str, aliases: &Aliases) -> Seen {
    let mut seen = Seen {
        wanted: wanted.to_string(),
        ..Seen::default()
    };
    for p in entries("/sys/block") {
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        // Loop, RAM and device-mapper devices carry no disk of the machine.
        if ["loop", "ram", "dm-", "zram"]
            .iter()
            .any(|x| name.starts_with(x))
        {
            continue;
        }
        let partnames = entries(&p.display().to_string())
            .iter()
            .filter(|q| q.join("partition").exists())
            .filter_map(|q| {
                let ev = read(q, "uevent");
                ev.lines()
                    .find_map(|l| l.strip_prefix("PARTNAME=").map(str::to_string))
            })
            .collect();
        seen.disks.push(Disk {
            bytes: read(&p, "size").parse::<u64>().unwrap_or(0) * 512,
            removable: read(&p, "removable") == "1",
            partnames,
            name,
        });
    }
    let unbound = |d: &Path| !d.join("driver").exists();
    for d in entries("/sys/bus/pci/devices") {
        let Some(class) = hex(&read(&d, "class")) else {
            continue;
        };
        if class >> 16 != 0x01 || !unbound(&d) {
            continue;
        }
        let modalias = read(&d, "modalias");
        let id = |f: &str| hex(&read(&d, f)).map_or("?".into(), |v| format!("{v:04x}"));
        seen.driverless.push(Controller {
            address: d.file_name().unwrap_or_default().to_string_lossy().into(),
            kind: pci_kind(class).into(),
            pci_id: format!("{}:{}", id("vendor"), id("device")),
            modules: aliases
                .modules_for(&modalias)
                .into_iter()
                .map(String::from)
                .collect(),
            modalias,
        });
    }
    for d in entries("/sys/bus/virtio/devices") {
        let Some(kind) = hex(&read(&d, "device")).and_then(virtio_kind) else {
            continue;
        };
        if !unbound(&d) {
            continue;
        }
        let modalias = read(&d, "modalias");
        seen.driverless.push(Controller {
            address: d.file_name().unwrap_or_default().to_string_lossy().into(),
            kind: kind.into(),
            pci_id: String::new(),
            modules: aliases
                .modules_for(&modalias)
                .into_iter()
                .map(String::from)
                .collect(),
            modalias,
        });
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nvme(modules: &[&str]) -> Controller {
        Controller {
            address: "0000:00:04.0".into(),
            kind: pci_kind(0x010802).into(),
            pci_id: "1b36:0010".into(),
            modalias: "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02".into(),
            modules: modules.iter().map(|m| m.to_string()).collect(),
        }
    }

    #[test]
    fn a_driverless_nvme_controller_is_named_with_its_module() {
        let seen = Seen {
            disks: vec![Disk {
                name: "sr0".into(),
                bytes: 0,
                removable: true,
                partnames: vec![],
            }],
            driverless: vec![nvme(&["nvme"])],
            wanted: "stele-state".into(),
        };
        assert_eq!(
            seen.to_string(),
            "the kernel sees the disks sr0 (0 MiB, removable, no named partitions); storage controller 0000:00:04.0 NVMe controller (PCI id 1b36:0010) has no driver: rebuild the initramfs with `stele initramfs --module nvme`"
        );
    }

    #[test]
    fn an_unknown_controller_is_named_by_its_pci_id_and_modalias() {
        let line = nvme(&[]).to_string();
        assert!(
            line.starts_with(
                "0000:00:04.0 NVMe controller (PCI id 1b36:0010) has no driver, and no module"
            ),
            "{line}"
        );
        assert!(line.contains("`modprobe --resolve-alias 'pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02'`"), "{line}");
    }

    #[test]
    fn with_every_controller_bound_the_disks_and_the_name_are_the_clue() {
        let seen = Seen {
            disks: vec![Disk {
                name: "vda".into(),
                bytes: 3 << 29,
                removable: false,
                partnames: vec!["EFI".into(), "data".into()],
            }],
            driverless: vec![],
            wanted: "stele-state".into(),
        };
        assert_eq!(
            seen.to_string(),
            "the kernel sees the disks vda (1.5 GiB, partitions EFI data); every storage controller has a driver: boot the disk `stele disk create` wrote (it has a GPT partition named stele-state)"
        );
        let none = Seen {
            wanted: "x".into(),
            ..Seen::default()
        };
        assert!(none
            .to_string()
            .starts_with("the kernel sees no disk at all; "));
    }

    #[test]
    fn kinds_of_controllers() {
        assert_eq!(pci_kind(0x010601), "SATA controller (AHCI)");
        assert_eq!(pci_kind(0x010000), "SCSI controller");
        assert_eq!(pci_kind(0x018000), "storage controller");
        assert_eq!(virtio_kind(8), Some("virtio SCSI controller"));
        assert_eq!(virtio_kind(1), None);
        assert_eq!(hex("0x010802\n"), Some(0x010802));
        assert_eq!(hex("junk"), None);
    }
}

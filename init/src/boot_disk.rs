//! The boot disk (docs/BOOT.md "The boot disk"): the one disk that may supply the state,
//! the slots and the data partition. Under UEFI it is the disk holding the ESP partition
//! whose GUID the stub reports (`LoaderDevicePartUUID`, as systemd-gpt-auto-generator
//! reads it); else the disk whose GPT disk GUID boot.toml `boot_disk` records; else the
//! one non-removable disk carrying the state partition. A removable disk never counts
//! unless the firmware booted it or boot.toml `allow_removable` says so. [`choose`] is the
//! pure decision; [`binding`] and [`disks`] read the firmware and sysfs.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use stele_verifier::config::BootConfig;
use stele_verifier::gpt::{Gpt, Guid, SECTOR};

use crate::sys;

/// Where efivarfs is mounted.
pub const EFIVARS: &str = "/sys/firmware/efi/efivars";
/// The variable systemd-stub (and systemd-boot) sets to the GUID of the partition it was
/// loaded from (systemd's Boot Loader Interface).
pub const LOADER_DEVICE_PART_UUID: &str =
    "LoaderDevicePartUUID-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";

/// What ties this boot to one disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// The firmware booted from the ESP partition with this GUID.
    Firmware(Guid),
    /// boot.toml `boot_disk`: the GPT disk GUID of the boot disk.
    Recorded(Guid),
    /// Nothing: the one non-removable disk carrying the state partition.
    Unbound,
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Binding::Firmware(p) => write!(
                f,
                "the disk the firmware booted from (its partition {p}, LoaderDevicePartUUID)"
            ),
            Binding::Recorded(g) => write!(f, "the disk with GUID {g} (boot.toml boot_disk)"),
            Binding::Unbound => f.write_str("the only stele disk"),
        }
    }
}

/// How the boot disk is chosen: the binding and boot.toml `allow_removable`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub binding: Binding,
    pub allow_removable: bool,
}

/// A whole disk as PID 1 sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Disk {
    /// Kernel name (`vda`, `nvme0n1`, `sda`).
    pub name: String,
    /// sysfs `removable` = 1, or attached through USB.
    pub removable: bool,
    /// Its GPT disk GUID, when read.
    pub guid: Option<Guid>,
    /// Its GPT partitions' GUIDs, when read.
    pub partitions: Vec<Guid>,
    /// It carries the state partition (boot.toml's name).
    pub has_state: bool,
}

impl Disk {
    fn path(&self) -> String {
        format!("/dev/{}", self.name)
    }
}

/// Why no disk may boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Two disks hold what the binding names (or, unbound, two disks carry a state).
    Two {
        binding: Binding,
        disks: Vec<String>,
    },
    /// The boot disk carries no state partition.
    NoState { binding: Binding, disk: String },
    /// Only removable disks carry the state partition, and boot.toml does not allow them.
    OnlyRemovable { disks: Vec<String> },
    /// The disk the binding names is removable and boot.toml does not allow it.
    Removable { binding: Binding, disk: String },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Two {
                binding: Binding::Unbound,
                disks,
            } => write!(
                f,
                "{} carry a stele-state partition and nothing names the boot disk: refusing to guess; record it with `stele initramfs --boot-disk <disk GUID>` (printed by `stele disk create`) or remove the others",
                disks.join(" and ")
            ),
            Refusal::Two { binding, disks } => write!(
                f,
                "{} both are {binding}: refusing to guess; remove the copy",
                disks.join(" and ")
            ),
            Refusal::NoState { binding, disk } => write!(
                f,
                "the boot disk {disk}, {binding}, has no stele-state partition (boot the disk `stele disk create` wrote)"
            ),
            Refusal::OnlyRemovable { disks } => write!(
                f,
                "only removable disks carry a stele-state partition ({}): not used; boot from an internal disk, or allow removable media with boot.toml allow_removable = true",
                disks.join(", ")
            ),
            Refusal::Removable { binding, disk } => write!(
                f,
                "the boot disk {disk}, {binding}, is removable: not used; boot.toml allow_removable = true allows it"
            ),
        }
    }
}

/// The decision of one scan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    /// This disk (kernel name) is the boot disk.
    Boot(String),
    /// Not there yet.
    Wait,
    /// No disk may boot: end the boot (at once: waiting cannot mend it).
    Refuse(Refusal),
}

/// The boot disk among `disks` (one scan), as `rule` says. Pure.
///
/// - firmware: the disk holding the partition (removable or not: the firmware booted it);
/// - recorded: the disk with that GUID; a removable one only when allowed;
/// - unbound: the disk carrying the state, among the non-removable ones (or all, when
///   allowed).
///
/// Two candidates are refused, never guessed between; none is [`Choice::Wait`] (the caller
/// decides when to give up, with [`at_timeout`]).
pub fn choose(disks: &[Disk], rule: &Rule) -> Choice {
    let allowed = |d: &&Disk| rule.allow_removable || !d.removable;
    let found: Vec<&Disk> = match rule.binding {
        Binding::Firmware(p) => disks.iter().filter(|d| d.partitions.contains(&p)).collect(),
        Binding::Recorded(g) => disks.iter().filter(|d| d.guid == Some(g)).collect(),
        Binding::Unbound => disks
            .iter()
            .filter(|d| d.has_state)
            .filter(allowed)
            .collect(),
    };
    match found.as_slice() {
        [] => Choice::Wait,
        [one] => {
            let binding = rule.binding;
            if matches!(binding, Binding::Recorded(_)) && !allowed(one) {
                Choice::Refuse(Refusal::Removable {
                    binding,
                    disk: one.path(),
                })
            } else if one.has_state {
                Choice::Boot(one.name.clone())
            } else {
                // The kernel adds a disk's partitions one by one after reading its table:
                // the state may not be there yet (refused by [`at_timeout`] if it never is).
                Choice::Wait
            }
        }
        many => Choice::Refuse(Refusal::Two {
            binding: rule.binding,
            disks: many.iter().map(|d| d.path()).collect(),
        }),
    }
}

/// Why the boot gives up when [`choose`] still waits at the timeout: the bound disk is
/// there without a state partition; removable disks that carry a state (unbound); or
/// `None` (the caller says what the kernel sees). Pure.
pub fn at_timeout(disks: &[Disk], rule: &Rule) -> Option<Refusal> {
    let bound = disks.iter().find(|d| match rule.binding {
        Binding::Firmware(p) => d.partitions.contains(&p),
        Binding::Recorded(g) => d.guid == Some(g),
        Binding::Unbound => false,
    });
    if let Some(d) = bound.filter(|d| !d.has_state) {
        return Some(Refusal::NoState {
            binding: rule.binding,
            disk: d.path(),
        });
    }
    let removable: Vec<String> = disks
        .iter()
        .filter(|d| d.has_state && d.removable)
        .map(Disk::path)
        .collect();
    (rule.binding == Binding::Unbound && !rule.allow_removable && !removable.is_empty())
        .then_some(Refusal::OnlyRemovable { disks: removable })
}

/// The partition GUID in a `LoaderDevicePartUUID` efivarfs file: 4 bytes of attributes,
/// then the GUID as UTF-16LE text (either case), NUL-terminated. `None` for anything
/// else. Pure.
pub fn parse_loader_part_uuid(bytes: &[u8]) -> Option<Guid> {
    let text = bytes.get(4..)?;
    if text.len() % 2 != 0 {
        return None;
    }
    let units: Vec<u16> = text
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    let s = String::from_utf16(&units).ok()?;
    Guid::parse(s.trim()).filter(|g| !g.is_zero())
}

/// This boot's binding: the firmware's ESP partition when the machine booted through UEFI
/// and the stub reported it (efivarfs is mounted at [`EFIVARS`] when it is not), else
/// boot.toml's `boot_disk`, else none.
pub fn binding(cfg: &BootConfig) -> Binding {
    firmware_partition()
        .map(Binding::Firmware)
        .or(cfg.boot_disk.map(Binding::Recorded))
        .unwrap_or(Binding::Unbound)
}

/// The ESP partition GUID the stub reported, on a UEFI boot.
fn firmware_partition() -> Option<Guid> {
    if !Path::new("/sys/firmware/efi").is_dir() {
        return None;
    }
    let var = Path::new(EFIVARS).join(LOADER_DEVICE_PART_UUID);
    if !var.exists() {
        // Not mounted yet (or the stub did not set it): an error shows as no variable.
        let _ = sys::mount("efivarfs", EFIVARS, "efivarfs", 0, "");
    }
    parse_loader_part_uuid(&std::fs::read(var).ok()?)
}

/// Whole disks the boot may consider: every entry of /sys/block but loop, RAM, zram,
/// device-mapper, MD and optical devices.
fn whole_disks() -> Vec<String> {
    let Ok(rd) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| {
            !["loop", "ram", "zram", "dm-", "md", "sr", "fd"]
                .iter()
                .any(|p| n.starts_with(p))
        })
        .collect();
    names.sort();
    names
}

/// True for a removable disk: sysfs `removable` = 1, or a disk behind a USB device (USB
/// disks and card readers often say 0).
fn removable(name: &str) -> bool {
    let dir = Path::new("/sys/block").join(name);
    let flag = std::fs::read_to_string(dir.join("removable")).is_ok_and(|s| s.trim() == "1");
    let usb = std::fs::canonicalize(&dir).is_ok_and(|p| {
        p.components()
            .any(|c| c.as_os_str().to_str().is_some_and(|s| s.starts_with("usb")))
    });
    flag || usb
}

/// The GPT of `/dev/<name>` (disk GUID, partition GUIDs); `None` when it has none or
/// cannot be read yet.
fn read_gpt(name: &str) -> Option<(Guid, Vec<Guid>)> {
    let sectors: u64 = std::fs::read_to_string(Path::new("/sys/block").join(name).join("size"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let mut f = std::fs::File::open(format!("/dev/{name}")).ok()?;
    let gpt = Gpt::read(&mut f, sectors.checked_mul(SECTOR)?).ok()?;
    Some((
        gpt.disk_guid,
        gpt.partitions.iter().map(|p| p.guid).collect(),
    ))
}

/// The disks of one scan: each whole disk, whether it is removable, whether it carries
/// the state partition (its kernel name is in `with_state`), and (for a binding by GUID)
/// its GPT, read once per disk and kept in `gpts`.
pub fn disks(
    with_state: &[&str],
    rule: &Rule,
    gpts: &mut HashMap<String, (Guid, Vec<Guid>)>,
) -> Vec<Disk> {
    whole_disks()
        .into_iter()
        .map(|name| {
            let has_state = with_state.contains(&name.as_str());
            let gpt = if rule.binding == Binding::Unbound {
                None
            } else if let Some(g) = gpts.get(&name) {
                Some(g.clone())
            } else {
                let g = read_gpt(&name);
                if let Some(g) = &g {
                    gpts.insert(name.clone(), g.clone());
                }
                g
            };
            let (guid, partitions) = match gpt {
                Some((g, p)) => (Some(g), p),
                None => (None, Vec::new()),
            };
            Disk {
                removable: removable(&name),
                name,
                guid,
                partitions,
                has_state,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(n: u8) -> Guid {
        Guid::derive(&[n])
    }

    fn disk(name: &str, removable: bool, guid: u8, parts: &[u8], has_state: bool) -> Disk {
        Disk {
            name: name.into(),
            removable,
            guid: Some(g(guid)),
            partitions: parts.iter().map(|&p| g(p)).collect(),
            has_state,
        }
    }

    fn rule(binding: Binding) -> Rule {
        Rule {
            binding,
            allow_removable: false,
        }
    }

    /// The efivarfs file as the stub writes it: attributes, UTF-16LE, NUL.
    fn efivar(text: &str) -> Vec<u8> {
        let mut b = 7u32.to_le_bytes().to_vec();
        for u in text.encode_utf16().chain([0]) {
            b.extend(u.to_le_bytes());
        }
        b
    }

    #[test]
    fn parses_loader_device_part_uuid() {
        let want = Guid::parse("0d3ee92c-a0c1-4f04-9c8b-5e3f3a0a1b2c").unwrap();
        for text in [
            "0D3EE92C-A0C1-4F04-9C8B-5E3F3A0A1B2C",
            "0d3ee92c-a0c1-4f04-9c8b-5e3f3a0a1b2c",
        ] {
            assert_eq!(parse_loader_part_uuid(&efivar(text)), Some(want), "{text}");
        }
        // Without the NUL too.
        let mut b = efivar("0d3ee92c-a0c1-4f04-9c8b-5e3f3a0a1b2c");
        b.truncate(b.len() - 2);
        assert_eq!(parse_loader_part_uuid(&b), Some(want));
        for bad in [
            Vec::new(),
            vec![7, 0, 0],
            efivar(""),
            efivar("not a guid"),
            efivar("00000000-0000-0000-0000-000000000000"),
            b"\x07\x00\x00\x000d3ee92c-a0c1-4f04-9c8b-5e3f3a0a1b2c".to_vec(),
            [efivar("0d3ee92c-a0c1-4f04-9c8b-5e3f3a0a1b2c"), vec![1]].concat(),
        ] {
            assert_eq!(parse_loader_part_uuid(&bad), None, "{bad:?}");
        }
    }

    /// A USB stick carrying a complete stele disk beside the internal disk never boots,
    /// whatever the order the disks are listed in; the firmware's disk boots even when it
    /// is the stick.
    #[test]
    fn a_removable_stele_disk_beside_the_boot_disk_is_never_chosen() {
        let internal = disk("vda", false, 1, &[11, 12], true);
        let stick = disk("sda", true, 2, &[21, 22], true);
        for disks in [
            vec![internal.clone(), stick.clone()],
            vec![stick.clone(), internal.clone()],
        ] {
            let boot = Choice::Boot("vda".into());
            assert_eq!(choose(&disks, &rule(Binding::Unbound)), boot);
            assert_eq!(choose(&disks, &rule(Binding::Firmware(g(11)))), boot);
            assert_eq!(choose(&disks, &rule(Binding::Recorded(g(1)))), boot);
            assert_eq!(
                choose(&disks, &rule(Binding::Firmware(g(21)))),
                Choice::Boot("sda".into()),
                "the stick the firmware booted"
            );
        }
        // The stick alone: waited for (it may be the internal disk that is slow), and at the
        // timeout named.
        let only = [stick.clone()];
        assert_eq!(choose(&only, &rule(Binding::Unbound)), Choice::Wait);
        let r = at_timeout(&only, &rule(Binding::Unbound)).unwrap();
        assert_eq!(
            r,
            Refusal::OnlyRemovable {
                disks: vec!["/dev/sda".into()]
            }
        );
        assert!(r.to_string().contains("allow_removable = true"), "{r}");
        // Allowed: the stick boots when it is the only one.
        let allow = Rule {
            binding: Binding::Unbound,
            allow_removable: true,
        };
        assert_eq!(choose(&only, &allow), Choice::Boot("sda".into()));
        assert_eq!(at_timeout(&only, &allow), None);
        // Recorded and removable: refused unless allowed.
        let rec = rule(Binding::Recorded(g(2)));
        assert!(matches!(
            choose(&only, &rec),
            Choice::Refuse(Refusal::Removable { .. })
        ));
        let rec_allowed = Rule {
            allow_removable: true,
            ..rec
        };
        assert_eq!(choose(&only, &rec_allowed), Choice::Boot("sda".into()));
    }

    /// Two non-removable stele disks and nothing recorded: refused with one line naming
    /// both; with the identity recorded, the named one.
    #[test]
    fn two_stele_disks_are_refused_unless_one_is_named() {
        let disks = [
            disk("vda", false, 1, &[11], true),
            disk("vdb", false, 2, &[21], true),
        ];
        let Choice::Refuse(r) = choose(&disks, &rule(Binding::Unbound)) else {
            panic!("not refused")
        };
        let line = r.to_string();
        assert!(
            line.starts_with("/dev/vda and /dev/vdb carry a stele-state"),
            "{line}"
        );
        assert!(line.contains("stele initramfs --boot-disk"), "{line}");
        assert_eq!(
            choose(&disks, &rule(Binding::Recorded(g(2)))),
            Choice::Boot("vdb".into())
        );
        // Not there yet: wait.
        assert_eq!(choose(&disks, &rule(Binding::Recorded(g(3)))), Choice::Wait);
        assert_eq!(at_timeout(&disks, &rule(Binding::Recorded(g(3)))), None);
        // Two copies of one image: the same GUIDs on both.
        let copies = [
            disk("vda", false, 1, &[11], true),
            disk("sda", true, 1, &[11], true),
        ];
        for b in [Binding::Recorded(g(1)), Binding::Firmware(g(11))] {
            let Choice::Refuse(r) = choose(&copies, &rule(b)) else {
                panic!("{b:?} not refused")
            };
            assert!(
                r.to_string().starts_with("/dev/vda and /dev/sda both are "),
                "{r}"
            );
        }
    }

    #[test]
    fn the_boot_disk_must_carry_the_state() {
        let disks = [
            disk("nvme0n1", false, 1, &[11], false),
            disk("vda", false, 2, &[21], true),
        ];
        // Its partitions may still be appearing: wait; at the timeout, refuse.
        let firmware = rule(Binding::Firmware(g(11)));
        assert_eq!(choose(&disks, &firmware), Choice::Wait);
        let r = at_timeout(&disks, &firmware).expect("refused at the timeout");
        assert_eq!(
            r.to_string(),
            format!(
                "the boot disk /dev/nvme0n1, the disk the firmware booted from (its partition {}, LoaderDevicePartUUID), has no stele-state partition (boot the disk `stele disk create` wrote)",
                g(11)
            )
        );
        // Unbound: the one with a state.
        assert_eq!(
            choose(&disks, &rule(Binding::Unbound)),
            Choice::Boot("vda".into())
        );
        // A USB boot disk whose state partition appeared a moment after its ESP boots
        // (the bug: it was refused at the first scan).
        let later = [disk("sda", true, 1, &[11], true), disks[1].clone()];
        assert_eq!(choose(&later, &firmware), Choice::Boot("sda".into()));
        assert_eq!(at_timeout(&later, &firmware), None);
    }
}

//! Finding partitions by GPT name: `PARTNAME=` in /sys/class/block/*/uevent, and the disk
//! each is on (its parent in sysfs). The boot disk ([`crate::boot_disk`]) supplies every
//! stele partition (a USB stick must not supply the state, the data partition or a slot);
//! one elsewhere is ignored with a warning, at the scan and again before the slot is
//! marked good ([`strangers`]).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use stele_device::runtime::run_dir::{Devices, DEVICES, RUN_DIR};
use stele_verifier::config::BootConfig;
use stele_verifier::layout::{PerRole, Role, ROLES};
use stele_verifier::state::Slot;

use crate::boot_disk::{self, Binding, Choice, Rule};
use crate::{Error, Result};

/// A block device found in sysfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockDev {
    /// Kernel name, e.g. `vda2`.
    pub devname: String,
    pub major: u32,
    pub minor: u32,
    pub partname: Option<String>,
    /// Kernel name of the disk it is a partition of (`vda`), from sysfs; `None` when not
    /// known (then it matches only another unknown disk).
    pub disk: Option<String>,
}

impl BlockDev {
    /// `/dev/<devname>`.
    pub fn path(&self) -> String {
        format!("/dev/{}", self.devname)
    }
    /// `major:minor`, as dm tables accept it.
    pub fn majmin(&self) -> String {
        format!("{}:{}", self.major, self.minor)
    }
}

/// Parses a block device's uevent file.
pub fn parse_uevent(text: &str) -> Option<BlockDev> {
    let mut major = None;
    let mut minor = None;
    let mut devname = None;
    let mut partname = None;
    for line in text.lines() {
        match line.split_once('=') {
            Some(("MAJOR", v)) => major = v.parse().ok(),
            Some(("MINOR", v)) => minor = v.parse().ok(),
            Some(("DEVNAME", v)) if !v.is_empty() && !v.contains("..") => {
                devname = Some(v.to_string())
            }
            Some(("PARTNAME", v)) => partname = Some(v.to_string()),
            _ => {}
        }
    }
    Some(BlockDev {
        devname: devname?,
        major: major?,
        minor: minor?,
        partname,
        disk: None,
    })
}

/// The disk a partition's sysfs entry (`/sys/class/block/vda2`, a link into
/// `/sys/devices/.../block/vda/vda2`) belongs to: its parent directory's name.
fn disk_of(entry: &std::path::Path) -> Option<String> {
    let real = std::fs::canonicalize(entry).ok()?;
    let parent = real.parent()?;
    // A whole disk's parent is the `block` directory itself.
    parent
        .join("dev")
        .exists()
        .then(|| parent.file_name()?.to_str().map(str::to_string))
        .flatten()
}

/// One scan of /sys/class/block: partition name → every device carrying it.
pub fn scan() -> BTreeMap<String, Vec<BlockDev>> {
    let mut out: BTreeMap<String, Vec<BlockDev>> = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir("/sys/class/block") else {
        return out;
    };
    let mut names: Vec<_> = rd.flatten().map(|e| e.path()).collect();
    names.sort();
    for p in names {
        let Ok(text) = std::fs::read_to_string(p.join("uevent")) else {
            continue;
        };
        if let Some(mut dev) = parse_uevent(&text) {
            if let Some(name) = dev.partname.clone() {
                dev.disk = disk_of(&p);
                out.entry(name).or_default().push(dev);
            }
        }
    }
    out
}

/// The one device named `name`, if any. Two devices with the same name (a second disk
/// carrying `stele-state`, say) are an error: picking one would let a removable disk
/// supply the boot state, and so the rollback floor, or the data partition. Pure.
pub fn unique(found: &BTreeMap<String, Vec<BlockDev>>, name: &str) -> Result<Option<BlockDev>> {
    match found.get(name).map(Vec::as_slice) {
        None | Some([]) => Ok(None),
        Some([one]) => Ok(Some(one.clone())),
        Some(many) => Err(Error::PartitionAmbiguous {
            name: name.to_string(),
            devices: many
                .iter()
                .map(BlockDev::path)
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// The one device named `name` on the disk of `state`, and those named so elsewhere (to
/// be ignored, with a warning). Two on that disk are an error. Pure.
pub fn on_disk_of(
    found: &BTreeMap<String, Vec<BlockDev>>,
    name: &str,
    state: &BlockDev,
) -> Result<(Option<BlockDev>, Vec<BlockDev>)> {
    let (here, elsewhere): (Vec<BlockDev>, Vec<BlockDev>) = found
        .get(name)
        .into_iter()
        .flatten()
        .cloned()
        .partition(|d| d.disk == state.disk);
    let mut here_only = BTreeMap::new();
    if !here.is_empty() {
        here_only.insert(name.to_string(), here);
    }
    Ok((unique(&here_only, name)?, elsewhere))
}

/// Every device carrying one of `names` that is not one of `in_use` (`/dev/...` paths):
/// stele partitions on another disk, seen at the scan or plugged in since. Pure.
pub fn strangers<'a>(
    found: &'a BTreeMap<String, Vec<BlockDev>>,
    names: &[&str],
    in_use: &[String],
) -> Vec<&'a BlockDev> {
    names
        .iter()
        .filter_map(|n| found.get(*n))
        .flatten()
        .filter(|d| !in_use.contains(&d.path()))
        .collect()
}

/// The warnings for the stele partitions (boot.toml's names) that are not the ones in use
/// (`/run/stele/devices`), from a new scan: PID 1 logs them before it marks the slot good,
/// so a partition plugged in after the boot's scan is reported too. It is never used:
/// what the boot uses was opened (or mapped) at the scan.
pub fn recheck(cfg: &BootConfig) -> Vec<String> {
    let path = std::path::Path::new(RUN_DIR).join(DEVICES);
    let devices = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| Devices::parse(&t).ok())
        .unwrap_or_default();
    let in_use: Vec<String> = ROLES
        .iter()
        .filter_map(|r| devices.get(r.role).map(str::to_string))
        .collect();
    let names = ROLES.map(|r| cfg.partition(r.role));
    let found = scan();
    let boot_disk = found
        .values()
        .flatten()
        .find(|d| d.path() == devices.state())
        .and_then(|d| d.disk.clone());
    strangers(&found, &names, &in_use)
        .into_iter()
        .map(|d| late_line(d, devices.state(), boot_disk.as_deref()))
        .collect()
}

/// The warning for a stele partition a new scan found that is not in use: on another
/// disk, or (`boot_disk` being its disk) one that appeared on the boot disk after the
/// boot's scan. Pure.
pub fn late_line(d: &BlockDev, state: &str, boot_disk: Option<&str>) -> String {
    if boot_disk.is_some() && d.disk.as_deref() == boot_disk {
        format!(
            "partition {} on {} appeared on the boot disk after the boot's scan: not used",
            d.partname.as_deref().unwrap_or("?"),
            d.path()
        )
    } else {
        stranger_line(d, state)
    }
}

/// The warning for a partition that is not on the boot disk. Pure.
pub fn stranger_line(d: &BlockDev, state: &str) -> String {
    format!(
        "partition {} on {} is not on the disk of the boot state ({state}): ignored",
        d.partname.as_deref().unwrap_or("?"),
        d.path()
    )
}

/// The partitions of the boot.
#[derive(Clone, Debug)]
pub struct Partitions {
    /// The boot state's partition: its disk is the boot disk.
    pub state: BlockDev,
    /// The partition of each role on the boot disk (the state's too; the ESP is never
    /// read by the boot, only published).
    pub found: PerRole<Option<BlockDev>>,
    /// Partitions with one of those names on another disk: not used.
    pub ignored: Vec<BlockDev>,
}

impl Partitions {
    /// The partition of slot `s`, if found.
    pub fn slot(&self, s: Slot) -> Option<&BlockDev> {
        self.found.get(Role::slot(s)).as_ref()
    }

    /// The partition of `role`, if found.
    pub fn get(&self, role: Role) -> Option<&BlockDev> {
        self.found.get(role).as_ref()
    }
}

/// Poll interval while waiting for partitions.
pub const POLL: Duration = Duration::from_millis(50);

/// Waits (bounded) until the boot disk ([`boot_disk::choose`] under `rule`) and the state
/// and both slot partitions on it are present, polling every 50 ms: it waits for the
/// bound disk, never taking the first stele disk found. At the timeout the state partition
/// is required; a missing slot is reported by the caller when it tries that slot. The data
/// partition and the ESP are optional. Partitions of those names on other disks are
/// [`Partitions::ignored`].
pub fn wait(names: &PerRole<String>, timeout: Duration, rule: &Rule) -> Result<Partitions> {
    let state = names.get(Role::State).as_str();
    let start = Instant::now();
    let mut gpts = HashMap::new();
    loop {
        let found = scan();
        let late = start.elapsed() >= timeout;
        let with_state: Vec<&str> = found
            .get(state)
            .into_iter()
            .flatten()
            .filter_map(|d| d.disk.as_deref())
            .collect();
        let disks = boot_disk::disks(&with_state, rule, &mut gpts);
        match boot_disk::choose(&disks, rule) {
            Choice::Boot(disk) => {
                let mut on_disk = found.clone();
                on_disk
                    .entry(state.to_string())
                    .or_default()
                    .retain(|d| d.disk.as_deref() == Some(disk.as_str()));
                if let Some(st) = unique(&on_disk, state)? {
                    let parts = select(&found, st, names)?;
                    if late || (parts.slot(Slot::A).is_some() && parts.slot(Slot::B).is_some()) {
                        return Ok(parts);
                    }
                }
            }
            Choice::Refuse(r) => return Err(Error::BootDisk(r)),
            Choice::Wait if late => {
                return Err(match boot_disk::at_timeout(&disks, rule) {
                    Some(r) => Error::BootDisk(r),
                    None => {
                        let waited_ms =
                            u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
                        match rule.binding {
                            Binding::Unbound => Error::PartitionMissing {
                                name: state.to_string(),
                                waited_ms,
                            },
                            binding => Error::BootDiskMissing {
                                binding,
                                waited_ms,
                                seen: None,
                            },
                        }
                    }
                })
            }
            Choice::Wait => {}
        }
        std::thread::sleep(POLL);
    }
}

/// The partitions of every other role (`names`) on the disk of `state`. Pure.
pub fn select(
    found: &BTreeMap<String, Vec<BlockDev>>,
    state: BlockDev,
    names: &PerRole<String>,
) -> Result<Partitions> {
    let mut ignored = Vec::new();
    let mut parts = PerRole::default();
    for (role, name) in names.iter() {
        let (d, elsewhere) = on_disk_of(found, name, &state)?;
        ignored.extend(elsewhere);
        *parts.get_mut(role) = if role == Role::State {
            Some(state.clone())
        } else {
            d
        };
    }
    Ok(Partitions {
        state,
        found: parts,
        ignored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_partition_uevent() {
        let t = "MAJOR=254\nMINOR=2\nDEVNAME=vda2\nDEVTYPE=partition\nDISKSEQ=9\nPARTN=2\nPARTNAME=stele-root-a\n";
        let d = parse_uevent(t).unwrap();
        assert_eq!(d.devname, "vda2");
        assert_eq!((d.major, d.minor), (254, 2));
        assert_eq!(d.partname.as_deref(), Some("stele-root-a"));
        assert_eq!(d.path(), "/dev/vda2");
        assert_eq!(d.majmin(), "254:2");
    }

    #[test]
    fn disk_without_partname_and_garbage() {
        let d = parse_uevent("MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n").unwrap();
        assert_eq!(d.partname, None);
        assert_eq!(parse_uevent("MAJOR=x\nMINOR=0\nDEVNAME=vda\n"), None);
        assert_eq!(parse_uevent("MINOR=0\nDEVNAME=vda\n"), None);
        assert_eq!(parse_uevent("MAJOR=1\nMINOR=0\nDEVNAME=../etc\n"), None);
        assert_eq!(parse_uevent(""), None);
    }

    fn on(disk: &str, devname: &str, minor: u32, name: &str) -> BlockDev {
        BlockDev {
            devname: devname.into(),
            major: 254,
            minor,
            partname: Some(name.into()),
            disk: Some(disk.into()),
        }
    }

    /// Only the boot state's disk supplies the other partitions: a USB stick's data
    /// partition or slot is ignored (and listed), a second one on the same disk is refused.
    #[test]
    fn partitions_come_from_the_disk_of_the_state() {
        let mut found: BTreeMap<String, Vec<BlockDev>> = BTreeMap::new();
        for d in [
            on("vda", "vda1", 1, "stele-state"),
            on("vda", "vda2", 2, "stele-root-a"),
            on("vda", "vda3", 3, "stele-root-b"),
            on("sda", "sda1", 17, "stele-root-b"),
            on("sda", "sda2", 18, "stele-data"),
        ] {
            found
                .entry(d.partname.clone().unwrap())
                .or_default()
                .push(d);
        }
        let names = PerRole::default_names();
        let state = unique(&found, "stele-state").unwrap().unwrap();
        let p = select(&found, state.clone(), &names).unwrap();
        assert_eq!(p.slot(Slot::B).unwrap().devname, "vda3");
        assert!(
            p.get(Role::Data).is_none(),
            "the stick's data partition is not used"
        );
        assert!(p.get(Role::Esp).is_none());
        assert_eq!(p.get(Role::State).unwrap().devname, "vda1");
        let ignored: Vec<&str> = p.ignored.iter().map(|d| d.devname.as_str()).collect();
        assert_eq!(ignored, ["sda1", "sda2"]);
        assert_eq!(
            stranger_line(&p.ignored[1], "/dev/vda1"),
            "partition stele-data on /dev/sda2 is not on the disk of the boot state (/dev/vda1): ignored"
        );
        // Plugged in later: found by a new scan, as a stranger to what is in use.
        let in_use = ["/dev/vda1", "/dev/vda2", "/dev/vda3"].map(String::from);
        let late: Vec<&str> = strangers(
            &found,
            &["stele-state", "stele-root-b", "stele-data"],
            &in_use,
        )
        .iter()
        .map(|d| d.devname.as_str())
        .collect();
        assert_eq!(late, ["sda1", "sda2"]);
        let on_boot_disk = on("vda", "vda7", 7, "stele-data");
        assert_eq!(
            late_line(&on_boot_disk, "/dev/vda1", Some("vda")),
            "partition stele-data on /dev/vda7 appeared on the boot disk after the boot's scan: not used"
        );
        assert!(late_line(&p.ignored[1], "/dev/vda1", Some("vda")).ends_with(": ignored"));
        // Two of a name on the state's disk: refused, naming both.
        found
            .get_mut("stele-root-a")
            .unwrap()
            .push(on("vda", "vda9", 9, "stele-root-a"));
        let e = select(&found, state, &names).unwrap_err().to_string();
        assert!(e.contains("/dev/vda2, /dev/vda9"), "{e}");
    }

    #[test]
    fn a_name_on_two_disks_is_refused() {
        let dev = |n: &str, minor| BlockDev {
            devname: n.into(),
            major: 8,
            minor,
            partname: Some("stele-state".into()),
            disk: None,
        };
        let mut found = BTreeMap::new();
        found.insert("stele-state".to_string(), vec![dev("sda1", 1)]);
        assert_eq!(
            unique(&found, "stele-state").unwrap().unwrap().devname,
            "sda1"
        );
        assert!(unique(&found, "stele-data").unwrap().is_none());
        found.get_mut("stele-state").unwrap().push(dev("vda1", 17));
        let e = unique(&found, "stele-state").unwrap_err().to_string();
        assert!(e.contains("/dev/sda1, /dev/vda1"), "{e}");
    }
}

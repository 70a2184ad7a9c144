//! Finding partitions by GPT name: `PARTNAME=` in /sys/class/block/*/uevent.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// A block device found in sysfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockDev {
    /// Kernel name, e.g. `vda2`.
    pub devname: String,
    pub major: u32,
    pub minor: u32,
    pub partname: Option<String>,
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
    })
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
        if let Some(dev) = parse_uevent(&text) {
            if let Some(name) = dev.partname.clone() {
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

/// The partitions of the boot.
#[derive(Clone, Debug)]
pub struct Partitions {
    /// The EFI system partition: never read by the boot, only published.
    pub esp: Option<BlockDev>,
    pub state: BlockDev,
    pub slot_a: Option<BlockDev>,
    pub slot_b: Option<BlockDev>,
    pub data: Option<BlockDev>,
}

/// Poll interval while waiting for partitions.
pub const POLL: Duration = Duration::from_millis(50);

/// Waits (bounded) until the state and both slot partitions are present, polling every
/// 50 ms. At the timeout the state partition is required; a missing slot is reported by
/// the caller when it tries that slot. The data partition and the ESP are optional.
pub fn wait(
    esp: &str,
    state: &str,
    a: &str,
    b: &str,
    data: &str,
    timeout: Duration,
) -> Result<Partitions> {
    let start = Instant::now();
    loop {
        let found = scan();
        let all = [state, a, b].iter().all(|n| found.contains_key(*n));
        if all || start.elapsed() >= timeout {
            let state = unique(&found, state)?.ok_or_else(|| Error::PartitionMissing {
                name: state.to_string(),
                waited_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
            })?;
            return Ok(Partitions {
                esp: unique(&found, esp)?,
                state,
                slot_a: unique(&found, a)?,
                slot_b: unique(&found, b)?,
                data: unique(&found, data)?,
            });
        }
        std::thread::sleep(POLL);
    }
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

    #[test]
    fn a_name_on_two_disks_is_refused() {
        let dev = |n: &str, minor| BlockDev {
            devname: n.into(),
            major: 8,
            minor,
            partname: Some("stele-state".into()),
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

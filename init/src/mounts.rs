//! Mount plans as data: the early mounts (a const table) and the root plan (dm device →
//! lower, tmpfs upper, overlay, data partition), each printable and tested for order.

use std::fmt;

use stele_verifier::config::{BootConfig, MountFlag};

use crate::sys;
use crate::Result;

const NOSUID: u64 = libc::MS_NOSUID;
const NODEV: u64 = libc::MS_NODEV;
const NOEXEC: u64 = libc::MS_NOEXEC;
const RDONLY: u64 = libc::MS_RDONLY;

/// The `MS_*` bit of a boot.toml `data_options` flag, and its mount(8) name.
pub fn flag_bit(f: MountFlag) -> u64 {
    match f {
        MountFlag::NoSuid => NOSUID,
        MountFlag::NoDev => NODEV,
        MountFlag::NoExec => NOEXEC,
        MountFlag::NoSymFollow => libc::MS_NOSYMFOLLOW,
        MountFlag::NoAtime => libc::MS_NOATIME,
        MountFlag::NoDirAtime => libc::MS_NODIRATIME,
        MountFlag::RelAtime => libc::MS_RELATIME,
        MountFlag::StrictAtime => libc::MS_STRICTATIME,
        MountFlag::LazyTime => libc::MS_LAZYTIME,
        MountFlag::Sync => libc::MS_SYNCHRONOUS,
        MountFlag::DirSync => libc::MS_DIRSYNC,
    }
}

/// Names of the flags [`Mount`]'s display shows, in order.
const FLAG_NAMES: [(u64, &str); 11] = [
    (RDONLY, "ro"),
    (NOSUID, "nosuid"),
    (NODEV, "nodev"),
    (NOEXEC, "noexec"),
    (libc::MS_NOSYMFOLLOW, "nosymfollow"),
    (libc::MS_NOATIME, "noatime"),
    (libc::MS_NODIRATIME, "nodiratime"),
    (libc::MS_RELATIME, "relatime"),
    (libc::MS_STRICTATIME, "strictatime"),
    (libc::MS_LAZYTIME, "lazytime"),
    (libc::MS_SYNCHRONOUS, "sync"),
];

/// The data partition's mount: where, and with which flags and ext4 options (boot.toml
/// `data_mount`, `data_options`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataMount<'a> {
    pub device: &'a str,
    pub mountpoint: &'a str,
    pub flags: u64,
    pub options: String,
}

impl<'a> DataMount<'a> {
    /// `device` mounted as boot.toml `cfg` says (its `data_options` were checked when it
    /// was parsed; should they not be, the defaults apply). Pure.
    pub fn of(cfg: &'a BootConfig, device: &'a str) -> Self {
        let (flags, options) = cfg
            .data_mount_options()
            .or_else(|_| BootConfig::default().data_mount_options())
            .unwrap_or_default();
        DataMount {
            device,
            mountpoint: &cfg.data_mount,
            flags: flag_bits(&flags),
            options,
        }
    }
}

/// One mount: `mount -t fstype -o flags,data source target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount<S = &'static str> {
    pub source: S,
    pub target: S,
    pub fstype: S,
    pub flags: u64,
    pub data: S,
}

/// Owned mount spec (for plans computed at run time).
pub type OwnedMount = Mount<String>;

impl<S: AsRef<str>> fmt::Display for Mount<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut opts: Vec<&str> = Vec::new();
        for (bit, name) in FLAG_NAMES
            .into_iter()
            .chain([(libc::MS_DIRSYNC, "dirsync")])
        {
            if self.flags & bit != 0 {
                opts.push(name);
            }
        }
        if !self.data.as_ref().is_empty() {
            opts.push(self.data.as_ref());
        }
        write!(
            f,
            "mount -t {} {} {} -o {}",
            self.fstype.as_ref(),
            self.source.as_ref(),
            self.target.as_ref(),
            if opts.is_empty() {
                "defaults".to_string()
            } else {
                opts.join(",")
            }
        )
    }
}

impl<S: AsRef<str>> Mount<S> {
    /// Creates the target directory and mounts.
    pub fn apply(&self) -> Result<()> {
        sys::mkdir_p(self.target.as_ref())?;
        sys::mount(
            self.source.as_ref(),
            self.target.as_ref(),
            self.fstype.as_ref(),
            self.flags,
            self.data.as_ref(),
        )
    }
}

/// The early mounts, in order (step 1 of the boot).
pub const EARLY: &[Mount] = &[
    Mount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID | NODEV | NOEXEC,
        data: "",
    },
    Mount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID | NODEV | NOEXEC,
        data: "",
    },
    Mount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: NOSUID,
        data: "mode=0755",
    },
    Mount {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: NOSUID | NOEXEC,
        data: "gid=5,mode=0620,ptmxmode=0666",
    },
    Mount {
        source: "tmpfs",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: NOSUID | NODEV,
        data: "mode=1777",
    },
    Mount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: NOSUID | NODEV,
        data: "mode=0755",
    },
];

/// Mount points moved into the new root at switch root (their submounts move with them).
pub const MOVED: &[&str] = &["/dev", "/proc", "/sys", "/run"];

/// Where the new root is assembled in the initramfs.
pub const NEWROOT: &str = "/newroot";
/// The verified read-only filesystem (kept visible after switch root under /run).
pub const LOWER: &str = "/run/stele/lower";
/// The tmpfs holding the overlay's upper and work directories.
pub const RW: &str = "/run/stele/rw";

/// The root plan for a verified slot, in order.
pub fn root_plan(
    dm_dev: &str,
    fstype: &str,
    overlay_size: &str,
    data: Option<DataMount<'_>>,
) -> Vec<OwnedMount> {
    let mut plan = vec![
        Mount {
            source: dm_dev.to_string(),
            target: LOWER.to_string(),
            fstype: fstype.to_string(),
            flags: RDONLY | NODEV,
            data: String::new(),
        },
        Mount {
            source: "tmpfs".into(),
            target: RW.to_string(),
            fstype: "tmpfs".into(),
            flags: NODEV,
            data: format!("mode=0755,size={overlay_size}"),
        },
        Mount {
            source: "overlay".into(),
            target: NEWROOT.to_string(),
            fstype: "overlay".into(),
            flags: 0,
            data: format!("lowerdir={LOWER},upperdir={RW}/upper,workdir={RW}/work"),
        },
    ];
    if let Some(d) = data {
        plan.push(Mount {
            source: d.device.to_string(),
            target: format!("{NEWROOT}{}", d.mountpoint),
            fstype: "ext4".into(),
            flags: d.flags,
            data: d.options,
        });
    }
    plan
}

/// The flags of `flags` as one `MS_*` word. Pure.
pub fn flag_bits(flags: &[MountFlag]) -> u64 {
    flags.iter().fold(0, |acc, f| acc | flag_bit(*f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(targets: &[&str], t: &str) -> usize {
        targets.iter().position(|x| *x == t).unwrap()
    }

    /// The lower layer is where the update commands look for it (the fetch client, the
    /// channel keys): the `/run/stele` contract of stele-device.
    #[test]
    fn lower_is_the_run_dir_contract() {
        use stele_device::runtime::run_dir::{LOWER as LOWER_NAME, RUN_DIR};
        assert_eq!(LOWER, format!("{RUN_DIR}/{LOWER_NAME}"));
    }

    #[test]
    fn early_plan_order() {
        let t: Vec<&str> = EARLY.iter().map(|m| m.target).collect();
        assert_eq!(t[0], "/proc", "proc first: everything else may need it");
        // A parent is mounted before anything below it.
        for (i, m) in EARLY.iter().enumerate() {
            for (j, n) in EARLY.iter().enumerate() {
                if n.target.starts_with(&format!("{}/", m.target)) {
                    assert!(i < j, "{} must come before {}", m.target, n.target);
                }
            }
        }
        assert!(index(&t, "/dev") < index(&t, "/dev/pts"));
        // Everything mounted early is under a moved mount point.
        for m in EARLY {
            assert!(MOVED
                .iter()
                .any(|p| m.target == *p || m.target.starts_with(&format!("{p}/"))));
        }
        assert_eq!(
            EARLY[2].to_string(),
            "mount -t devtmpfs devtmpfs /dev -o nosuid,mode=0755"
        );
    }

    #[test]
    fn root_plan_order_and_options() {
        let cfg = BootConfig::default();
        let data = DataMount::of(&cfg, "/dev/vda4");
        let p = root_plan(
            "/dev/mapper/stele-root-a",
            "erofs",
            "50%",
            Some(data.clone()),
        );
        let t: Vec<&str> = p.iter().map(|m| m.target.as_str()).collect();
        assert_eq!(t, [LOWER, RW, NEWROOT, "/newroot/var"]);
        assert_eq!(
            p[0].flags & RDONLY,
            RDONLY,
            "the verified root is read-only"
        );
        assert_eq!(p[0].fstype, "erofs");
        assert_eq!(p[1].data, "mode=0755,size=50%");
        assert_eq!(
            p[2].data,
            "lowerdir=/run/stele/lower,upperdir=/run/stele/rw/upper,workdir=/run/stele/rw/work"
        );
        assert_eq!(
            p[0].to_string(),
            "mount -t erofs /dev/mapper/stele-root-a /run/stele/lower -o ro,nodev"
        );
        assert_eq!(
            p[3].to_string(),
            "mount -t ext4 /dev/vda4 /newroot/var -o nosuid,nodev,noexec",
            "the data partition's defaults"
        );
        let tuned = DataMount {
            flags: NOSUID | NODEV | libc::MS_NOSYMFOLLOW | libc::MS_NOATIME,
            options: "errors=remount-ro,commit=30".into(),
            ..data
        };
        let p = root_plan("/dev/dm-0", "squashfs", "64m", Some(tuned));
        assert_eq!(
            p[3].to_string(),
            "mount -t ext4 /dev/vda4 /newroot/var -o nosuid,nodev,nosymfollow,noatime,errors=remount-ro,commit=30"
        );
        let p = root_plan("/dev/dm-0", "squashfs", "64m", None);
        assert_eq!(p.len(), 3);
    }

    /// Every flag boot.toml may name maps to its own bit, and shows under its own name.
    #[test]
    fn every_data_flag_has_its_bit_and_name() {
        let mut seen = 0u64;
        for (name, f) in MountFlag::CHOICES {
            let bit = flag_bit(f);
            assert_eq!(seen & bit, 0, "{name} shares a bit");
            seen |= bit;
            let m = Mount {
                source: "s",
                target: "t",
                fstype: "ext4",
                flags: bit,
                data: "",
            };
            assert_eq!(m.to_string(), format!("mount -t ext4 s t -o {name}"));
        }
    }
}

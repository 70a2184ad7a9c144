//! Whether this process is the kernel's init: PID 1 of the INITIAL PID namespace. Only
//! that process runs the boot (mounts, the boot state, reboot(2)); PID 1 of another
//! namespace (`unshare -p -f`, a container) is refused, before anything is mounted, or
//! runs the device commands when called as `stele`.

/// The inode of the initial PID namespace (`PROC_PID_INIT_INO` of the kernel's
/// include/linux/proc_ns.h, fixed since namespaces got inodes in Linux 3.8).
pub const INITIAL_PID_NS_INODE: u64 = 0xEFFF_FFFC;

/// Where a process's PID namespace shows (through procfs).
pub const PID_NS: &str = "/proc/self/ns/pid";

/// What this process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The kernel's init: it boots.
    Boot,
    /// Not PID 1 at all.
    NotPid1(u32),
    /// PID 1 of a PID namespace other than the initial one.
    ChildNamespace,
}

impl Role {
    /// True for the kernel's init.
    pub fn is_boot(self) -> bool {
        self == Role::Boot
    }

    /// The one line refusing to boot (`None` for [`Role::Boot`]). Pure.
    pub fn refusal(self) -> Option<String> {
        match self {
            Role::Boot => None,
            Role::NotPid1(pid) => Some(format!(
                "stele: error: stele-init must run as PID 1 (it is the initramfs /init, built by `stele initramfs`); refusing to run as pid {pid} (`stele update ...` runs the device commands)"
            )),
            Role::ChildNamespace => Some(
                "stele: error: stele-init must run as PID 1 of the initial PID namespace (the kernel's init); this is PID 1 of another namespace (unshare -p, a container): refusing to boot (`stele update ...` runs the device commands)".into(),
            ),
        }
    }
}

/// The role of a process with `pid` whose PID namespace has inode `ns_inode` (`None`:
/// procfs is not mounted yet, as at boot before the first mount). Pure.
pub fn classify(pid: u32, ns_inode: Option<u64>) -> Role {
    match (pid, ns_inode) {
        (1, None) => Role::Boot,
        (1, Some(INITIAL_PID_NS_INODE)) => Role::Boot,
        (1, Some(_)) => Role::ChildNamespace,
        (pid, _) => Role::NotPid1(pid),
    }
}

/// The role of this process: its pid, and its PID namespace when procfs shows it.
pub fn detect() -> Role {
    use std::os::unix::fs::MetadataExt;
    let ns = std::fs::metadata(PID_NS).ok().map(|m| m.ino());
    classify(std::process::id(), ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pid_1_of_the_initial_namespace_boots() {
        assert_eq!(classify(1, None), Role::Boot, "before /proc is mounted");
        assert_eq!(classify(1, Some(INITIAL_PID_NS_INODE)), Role::Boot);
        assert_eq!(classify(1, Some(4_026_532_290)), Role::ChildNamespace);
        assert_eq!(classify(7, Some(INITIAL_PID_NS_INODE)), Role::NotPid1(7));
        assert!(Role::Boot.refusal().is_none());
        for r in [Role::ChildNamespace, Role::NotPid1(7)] {
            let line = r.refusal().unwrap();
            assert!(
                line.starts_with("stele: error: stele-init must run as PID 1"),
                "{line}"
            );
            assert!(!line.contains('\n'));
        }
        // This test process is not PID 1, whatever namespace it is in.
        assert!(matches!(detect(), Role::NotPid1(_)));
    }
}

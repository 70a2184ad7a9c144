//! The one error type of stele-init: each variant names the operation and the path.

use std::fmt;

/// Result alias for stele-init.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can fail in PID 1.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The initramfs's trusted keys do not make a keyring.
    Keys(stele_device::runtime::keyring::KeyringError),
    /// A system call failed.
    Sys {
        op: &'static str,
        path: String,
        errno: nix::errno::Errno,
    },
    /// File I/O failed.
    Io {
        op: &'static str,
        path: String,
        source: std::io::Error,
    },
    /// A partition did not appear in time.
    PartitionMissing { name: String, waited_ms: u64 },
    /// No disk the kernel sees carries the state partition: what it does see.
    NoStateDisk {
        name: String,
        waited_ms: u64,
        seen: crate::missing::Seen,
    },
    /// No disk may boot ([`crate::boot_disk::choose`]).
    BootDisk(crate::boot_disk::Refusal),
    /// The disk the firmware or boot.toml names did not appear in time (with what the
    /// kernel does see, once looked at).
    BootDiskMissing {
        binding: crate::boot_disk::Binding,
        waited_ms: u64,
        seen: Option<crate::missing::Seen>,
    },
    /// Two block devices carry the same partition name.
    PartitionAmbiguous { name: String, devices: String },
    /// The verifier refused the slot or the state.
    Verify(stele_verifier::Error),
    /// The kernel's device-mapper reply was malformed.
    DeviceMapper(String),
    /// The slot's kernel or initrd is not what its manifest says.
    KernelFile { path: String, why: String },
    /// `kexec_file_load` refused the slot's kernel (or failed).
    KexecLoad { errno: nix::errno::Errno },
    /// `kexec_file_load` refused the slot's kernel (EPERM/EACCES) while a lockdown or IMA
    /// option on this boot's command line (`options`) asks the kernel to: this boot's
    /// policy, not the slot's fault.
    KexecPolicy {
        errno: nix::errno::Errno,
        options: String,
    },
    /// `reboot(LINUX_REBOOT_CMD_KEXEC)` failed.
    KexecReboot { errno: nix::errno::Errno },
}

/// The errnos with which `kexec_file_load` refuses a kernel image itself: a signature the
/// kernel does not trust or cannot read (lockdown under Secure Boot: EPERM, EKEYREJECTED,
/// EBADMSG, ENOKEY, ENODATA, EACCES) or not a kernel it can load (ENOEXEC). Anything else
/// (ENOMEM, ENOSYS, ...) is the system's fault, not the slot's.
pub const KEXEC_REFUSALS: &[nix::errno::Errno] = {
    use nix::errno::Errno::*;
    &[
        EKEYREJECTED,
        EPERM,
        EACCES,
        ENOEXEC,
        EBADMSG,
        ENOKEY,
        ENODATA,
    ]
};

impl Error {
    /// The kernel refused the slot's kernel image (see [`KEXEC_REFUSALS`]).
    pub fn is_kexec_refusal(&self) -> bool {
        matches!(self, Error::KexecLoad { errno } if KEXEC_REFUSALS.contains(errno))
    }

    /// The kernel refused the slot's kernel because of this boot's command line (see
    /// [`Error::KexecPolicy`]): the attempt is undone, nothing about the slot is kept.
    pub fn is_this_boots_policy(&self) -> bool {
        matches!(self, Error::KexecPolicy { .. })
    }
}

impl Error {
    /// Shorthand for a failed system call on `path`.
    pub fn sys(op: &'static str, path: impl Into<String>, errno: nix::errno::Errno) -> Self {
        Error::Sys {
            op,
            path: path.into(),
            errno,
        }
    }
    /// Shorthand for a failed file operation on `path`.
    pub fn io(op: &'static str, path: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Keys(e) => write!(
                f,
                "{e} (rebuild the initramfs with its keys: `stele initramfs --key P.pem`)"
            ),
            Error::Sys { op, path, errno } => {
                write!(f, "{op} {path} failed: {}", errno.desc())
            }
            Error::Io { op, path, source } => write!(f, "{op} {path} failed: {source}"),
            Error::PartitionMissing { name, waited_ms } => write!(
                f,
                "partition {name} not found after {waited_ms} ms (check the disk's GPT partition names)"
            ),
            Error::NoStateDisk {
                name,
                waited_ms,
                seen,
            } => write!(f, "partition {name} not found after {waited_ms} ms: {seen}"),
            Error::BootDisk(r) => write!(f, "{r}"),
            Error::BootDiskMissing {
                binding,
                waited_ms,
                seen,
            } => {
                write!(f, "{binding} not found after {waited_ms} ms")?;
                match seen {
                    Some(seen) => write!(f, ": {seen}"),
                    None => Ok(()),
                }
            }
            Error::PartitionAmbiguous { name, devices } => write!(
                f,
                "partition name {name} is on more than one device ({devices}): refusing to guess; remove the other disk or rename its partitions"
            ),
            Error::Verify(e) => write!(f, "{e}"),
            Error::DeviceMapper(why) => write!(f, "device-mapper: {why}"),
            Error::KernelFile { path, why } => {
                write!(f, "the slot's {path} {why} (rebuild the image with `stele image build --kernel --initrd`)")
            }
            Error::KexecLoad { errno } if KEXEC_REFUSALS.contains(errno) => write!(
                f,
                "kernel refused by kexec_file_load: {errno} (under Secure Boot the slot's kernel must be signed by a db key)"
            ),
            Error::KexecLoad { errno } => {
                write!(f, "kexec_file_load failed: {errno}")
            }
            Error::KexecPolicy { errno, options } => write!(
                f,
                "kernel refused by kexec_file_load under this boot's kernel policy ({options}): {errno} (not the slot's fault: it is not marked and keeps its try; boot without the option, or sign the slot's kernel for it)"
            ),
            Error::KexecReboot { errno } => {
                write!(f, "reboot into the slot's kernel (kexec) failed: {errno}")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Sys { errno, .. } => Some(errno),
            Error::Io { source, .. } => Some(source),
            Error::Verify(e) => Some(e),
            Error::Keys(e) => Some(e),
            _ => None,
        }
    }
}

/// The exit class of a cause, as the flight recorder keeps it beside the console's text:
/// what the verifier refused keeps its class, a kernel the kernel refused or a slot file
/// that is not what its manifest says is refused, the keys built into the initramfs are
/// its builder's input, everything else (devices, syscalls, device-mapper) is the machine.
impl stele_verifier::exit::Report for Error {
    fn exit(&self) -> stele_verifier::exit::Exit {
        use stele_verifier::exit::Exit;
        match self {
            Error::Verify(e) => e.exit(),
            Error::KernelFile { .. } => Exit::Refused,
            Error::KexecLoad { .. } if self.is_kexec_refusal() => Exit::Refused,
            Error::Keys(_) => Exit::Usage,
            _ => Exit::Environment,
        }
    }
}

impl From<stele_verifier::Error> for Error {
    fn from(e: stele_verifier::Error) -> Self {
        Error::Verify(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_path_and_cause() {
        let e = Error::sys("mount", "/proc", nix::errno::Errno::EPERM);
        assert_eq!(e.to_string(), "mount /proc failed: Operation not permitted");
        let e = Error::PartitionMissing {
            name: "stele-state".into(),
            waited_ms: 10,
        };
        assert!(e.to_string().contains("stele-state"));
    }

    #[test]
    fn kexec_refusals_are_the_slots_and_say_how_to_sign() {
        use nix::errno::Errno;
        let e = Error::KexecLoad {
            errno: Errno::EPERM,
        };
        assert!(e.is_kexec_refusal());
        assert_eq!(
            e.to_string(),
            "kernel refused by kexec_file_load: EPERM: Operation not permitted (under Secure Boot the slot's kernel must be signed by a db key)"
        );
        for errno in [Errno::ENOMEM, Errno::ENOSYS, Errno::EBUSY] {
            let e = Error::KexecLoad { errno };
            assert!(!e.is_kexec_refusal(), "{errno}");
            assert!(e.to_string().starts_with("kexec_file_load failed: "), "{e}");
        }
        assert!(!Error::KexecReboot {
            errno: Errno::EPERM
        }
        .is_kexec_refusal());
    }
}

//! The one error type of stele-init: each variant names the operation and the path.

use std::fmt;

/// Result alias for stele-init.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can fail in PID 1.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The initramfs's trusted keys do not make a keyring.
    Keys(stele_update::keys::KeyringError),
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
    /// Two block devices carry the same partition name.
    PartitionAmbiguous { name: String, devices: String },
    /// The verifier refused the slot or the state.
    Verify(stele_verifier::Error),
    /// The kernel's device-mapper reply was malformed.
    DeviceMapper(String),
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
            Error::PartitionAmbiguous { name, devices } => write!(
                f,
                "partition name {name} is on more than one device ({devices}): refusing to guess; remove the other disk or rename its partitions"
            ),
            Error::Verify(e) => write!(f, "{e}"),
            Error::DeviceMapper(why) => write!(f, "device-mapper: {why}"),
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
}

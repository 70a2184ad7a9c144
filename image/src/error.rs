//! The one error type of the build side: each variant names the operation, the path and the fix.

use std::io;
use std::path::PathBuf;

use stele_verifier::exit::{Exit, Report};

/// Result alias for stele-image.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while building or signing images and managing keys.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A format or check error from the verifier (bad key file, malformed image, ...).
    #[error(transparent)]
    Verifier(#[from] stele_verifier::Error),
    /// An I/O error on `path`.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Refusing to overwrite an existing file.
    #[error("{} already exists: refusing to overwrite it (pass --force to replace it)", path.display())]
    Exists { path: PathBuf },
    /// A block device named as an output without `--force`.
    #[error("{} is a block device: refusing to write to it (pass --force to overwrite the device, all of it)", path.display())]
    DeviceOutput { path: PathBuf },
    /// An output path that is neither a file nor a block device.
    #[error("{} is {kind}: give a file name as the output (or a block device, with --force)", path.display())]
    NotAnOutput { path: PathBuf, kind: &'static str },
    /// A block device too small for the output written onto it.
    #[error("{} is too small for the output: {why}", path.display())]
    DeviceTooSmall { path: PathBuf, why: String },
    /// A host tool is not installed.
    #[error("{tool} not found: install the Debian package {package} (or run `cargo xtask setup`)")]
    ToolMissing {
        tool: &'static str,
        package: &'static str,
    },
    /// A host tool ran and failed.
    #[error("{tool} failed ({status}): {stderr}")]
    ToolFailed {
        tool: &'static str,
        status: String,
        stderr: String,
    },
    /// A parameter given by the caller is out of range or malformed.
    #[error("invalid {what}: {why}")]
    Invalid { what: &'static str, why: String },
    /// A build parameter the verifier's rules refuse (what no device would accept).
    #[error(transparent)]
    Parameter(stele_verifier::Error),
    /// A file given as a PE image or UKI (`what`: the option or role) is not one.
    #[error("invalid {what}: {source}")]
    Uki {
        what: &'static str,
        #[source]
        source: stele_verifier::uki::UkiError,
    },
    /// The `--cmdline` of `stele uki build` is refused.
    #[error("invalid --cmdline: {source}")]
    Cmdline {
        #[source]
        source: stele_verifier::uki::CmdlineError,
    },
    /// A step run in a helper process (`stele image fs-from-tar` under fakeroot) failed
    /// with this error line and exit code.
    #[error("{message}")]
    Helper { code: i32, message: String },
    /// The rootfs's system.toml names something PID 1 would refuse (checked on the tree
    /// the filesystem is built from, so a tar archive too).
    #[error(transparent)]
    Rootfs(#[from] crate::rootfs_check::RootfsError),
    /// The external signing command could not be run or misbehaved.
    #[error("external signer `{cmd}` failed: {why}")]
    Signer { cmd: String, why: String },
}

impl Report for Error {
    /// A verifier error keeps its class; a parameter is the caller's; the rest (I/O, an
    /// existing file, a missing or failing tool or signer) is the environment.
    fn exit(&self) -> Exit {
        match self {
            Error::Verifier(v) => v.exit(),
            Error::Rootfs(r) => r.exit(),
            Error::Invalid { .. }
            | Error::Parameter(_)
            | Error::Uki { .. }
            | Error::Cmdline { .. } => Exit::Usage,
            // The helper process (our own binary under fakeroot) already classified it.
            Error::Helper { code: 1, .. } => Exit::Refused,
            Error::Helper { code: 2, .. } => Exit::Usage,
            _ => Exit::Environment,
        }
    }
}

impl Error {
    /// Shorthand for [`Error::Io`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(what: &'static str, why: impl Into<String>) -> Self {
        Error::Invalid {
            what,
            why: why.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_fix() {
        let e = Error::ToolMissing {
            tool: "mkfs.erofs",
            package: "erofs-utils",
        };
        let s = e.to_string();
        assert!(
            s.contains("erofs-utils") && s.contains("cargo xtask setup"),
            "{s}"
        );
        let e = Error::Exists {
            path: PathBuf::from("/k.pem"),
        };
        assert!(e.to_string().contains("--force"));
    }
}

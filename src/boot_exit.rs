//! Exit codes and the failure type of the boot-side subcommands (initramfs, disk, qemu).
//!
//! Same shape as the CLI's `exit.rs` (`Exit`, `Failure`, `CliResult`) and `util.rs`
//! (`source_date_epoch`), so that merging means pointing the imports there.

use std::process::ExitCode;

/// The process exit status, by class of failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    /// Refused: verification or a QEMU expectation failed.
    Refused = 1,
    /// Usage error or bad input/config.
    Usage = 2,
    /// Environment: I/O, a missing tool.
    Environment = 3,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// A failed command: what to print and how to exit.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

/// Result of a subcommand.
pub type CliResult<T = ()> = Result<T, Failure>;

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Failure {
            exit,
            message: message.into(),
        }
    }
}

/// SOURCE_DATE_EPOCH (seconds) when set, else 0.
pub fn source_date_epoch() -> CliResult<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Err(std::env::VarError::NotPresent) => epoch_from(None),
        Ok(v) => epoch_from(Some(&v)),
        Err(_) => Err(Failure::new(
            Exit::Usage,
            "invalid SOURCE_DATE_EPOCH: not UTF-8",
        )),
    }
}

/// Parses a SOURCE_DATE_EPOCH value (unset or empty: 0). Pure.
pub fn epoch_from(v: Option<&str>) -> CliResult<u64> {
    match v.map(str::trim) {
        None | Some("") => Ok(0),
        Some(v) => v.parse::<u64>().map_err(|_| {
            Failure::new(
                Exit::Usage,
                format!("invalid SOURCE_DATE_EPOCH {v:?}: expected seconds since the Unix epoch"),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_values() {
        assert_eq!(epoch_from(None).unwrap(), 0);
        assert_eq!(epoch_from(Some(" ")).unwrap(), 0);
        assert_eq!(epoch_from(Some("1700000000")).unwrap(), 1_700_000_000);
        let f = epoch_from(Some("yesterday")).unwrap_err();
        assert_eq!(f.exit, Exit::Usage);
        assert!(f.message.contains("yesterday"));
    }
}

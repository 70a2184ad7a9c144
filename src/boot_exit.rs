//! The error type of the boot-side subcommands (initramfs, disk, qemu): a message and an
//! exit code (1 refused or expectation failed, 2 usage or bad input, 3 environment).

use std::fmt;

/// Refused: verification or an expectation failed.
pub const REFUSED: u8 = 1;
/// Usage error or bad input/config.
pub const USAGE: u8 = 2;
/// Environment: I/O, a missing tool.
pub const ENVIRONMENT: u8 = 3;

/// A failed subcommand: what to print and how to exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdError {
    pub code: u8,
    pub message: String,
}

impl CmdError {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        CmdError {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for CmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CmdError {}

/// SOURCE_DATE_EPOCH (seconds), 0 when unset.
pub fn source_date_epoch() -> Result<u64, CmdError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Err(std::env::VarError::NotPresent) => Ok(0),
        Ok(v) if v.trim().is_empty() => Ok(0),
        Ok(v) => v.trim().parse::<u64>().map_err(|_| {
            CmdError::new(
                USAGE,
                format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds: set it to an integer or unset it"),
            )
        }),
        Err(_) => Err(CmdError::new(
            USAGE,
            "SOURCE_DATE_EPOCH is not valid UTF-8: set it to an integer or unset it",
        )),
    }
}

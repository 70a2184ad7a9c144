//! The one error type of stele-tpm: what failed (the command, the device), the TPM's
//! response code where it answered, and the fix; the exit class per variant ([`Report`]).

use std::io;

use stele_verifier::exit::{Exit, Report};

use crate::command::Command;

/// Result alias for stele-tpm.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can fail talking to the TPM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Neither /dev/tpmrm0 nor /dev/tpm0 exists.
    #[error("no TPM: neither /dev/tpmrm0 nor /dev/tpm0 exists (boot.toml rollback_storage = \"tpm\" needs one: enable the TPM in the firmware, and give the kernel its driver, tpm_tis or tpm_crb: built into Debian's, else `stele initramfs --module`; or use rollback_storage = \"tpm-if-present\")")]
    NoDevice,
    /// Opening, writing or reading the TPM device failed.
    #[error("{op} {path} failed: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    /// A command could not be marshalled (a bug in stele-tpm: it names the command).
    #[error("TPM2_{command}: marshalling the command failed: {why:?}")]
    Marshal {
        command: Command,
        why: tpm2_protocol::TpmError,
    },
    /// The TPM's response does not parse as the answer to the command.
    #[error("TPM2_{command}: malformed response from the TPM: {why}")]
    Malformed { command: Command, why: String },
    /// The TPM answered with an error code not handled otherwise.
    #[error("TPM2_{command} failed: TPM response code {rc:#x} ({name})")]
    Response {
        command: Command,
        rc: u32,
        name: String,
    },
    /// NV_DefineSpace was refused for lack of authorization: the owner hierarchy has a
    /// password, and stele defines its counter with the empty one.
    #[error("TPM2_NV_DefineSpace of index {index:#010x} refused (response code {rc:#x}): the TPM's owner hierarchy has a password; define the counter once yourself (`tpm2_nvdefine {index:#010x} -C o -P <owner password> -s 8 -a \"nt=counter|authwrite|authread|no_da\"`, docs/BOOT.md \"With a TPM\") or clear the owner password")]
    OwnerAuth { index: u32, rc: u32 },
    /// The TPM is in dictionary-attack lockout.
    #[error("TPM2_{command} refused: the TPM is in dictionary-attack lockout (TPM_RC_LOCKOUT); wait for the lockout to expire or reset it with the lockout authorization")]
    Lockout { command: Command },
    /// The NV index exists but is not stele's counter.
    #[error("TPM NV index {index:#010x} exists but is not stele's rollback counter (attributes {attributes:#010x}, size {size}; expected a counter with {expected:#010x}, size 8): another program owns it; free it with `tpm2_nvundefine {index:#010x}` only if it is not in use (a re-created counter never starts lower)")]
    NotOurCounter {
        index: u32,
        attributes: u32,
        size: u16,
        expected: u32,
    },
    /// Raising the counter to an image's rollback_index would take too many increments.
    #[error("rollback_index {index} is {} above the TPM rollback floor {floor}: stele raises the TPM counter by at most {max} per mark-good (one NV write each); keep rollback_index small and monotonic (1, 2, 3, ...; raise it only when older releases must stop booting), or install a release in between", index - floor)]
    TooFarAhead { index: u64, floor: u64, max: u64 },
}

impl Error {
    /// Shorthand for [`Error::Io`].
    pub fn io(op: &'static str, path: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

impl Report for Error {
    fn exit(&self) -> Exit {
        match self {
            // The image's rollback_index is refused: the input, not the machine.
            Error::TooFarAhead { .. } => Exit::Refused,
            Error::NoDevice
            | Error::Io { .. }
            | Error::Marshal { .. }
            | Error::Malformed { .. }
            | Error::Response { .. }
            | Error::OwnerAuth { .. }
            | Error::Lockout { .. }
            | Error::NotOurCounter { .. } => Exit::Environment,
        }
    }
}

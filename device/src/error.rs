//! The one error type of stele-device: each variant names what failed, where, and the fix;
//! verifier errors are wrapped with their context as fields. The exit class follows the
//! structure ([`Report`]): what the boot published is the environment, a bundle a check
//! refused is refused, arguments are usage.

use std::io;
use std::path::PathBuf;

use stele_verifier::exit::{Exit, Report};
use stele_verifier::state::Slot;

use crate::cli::args::ArgsError;
use crate::cli::spec::usage_line;
use crate::runtime::keyring::KeyringError;
use crate::runtime::run_dir::FormatError;

/// Result alias for stele-device.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can fail in an update command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The device binary's arguments.
    #[error("{0}; {usage}", usage = usage_line())]
    Args(#[from] ArgsError),
    /// A file or device could not be opened, read, written or sized.
    #[error("{op} {path} failed: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    /// A partition or bundle path that is neither a block device nor a regular file.
    #[error("{path} is neither a block device nor a regular file")]
    NotAFile { path: String },
    /// flock(2) on the state device failed.
    #[error("flock {path} failed: {}", errno.desc())]
    Lock {
        path: String,
        #[source]
        errno: nix::errno::Errno,
    },
    /// The keys given on the command line.
    #[error(transparent)]
    Keyring(#[from] KeyringError),

    /// A file the boot publishes in /run/stele is not there.
    #[error("read {} failed: {source} (it is written by stele-init at boot: is this a stele device? on a build host use --disk)", path.display())]
    NotPublished {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `/run/stele/slot` or `/run/stele/devices` is malformed.
    #[error("{}: {why}", path.display())]
    PublishedFormat {
        path: PathBuf,
        #[source]
        why: FormatError,
    },
    /// `/run/stele/boot.toml` is refused by the boot.toml schema.
    #[error("{0} (the copy stele-init published at boot)")]
    PublishedConfig(#[source] stele_verifier::config::ConfigError),
    /// `/run/stele/keys` does not make a keyring.
    #[error("{0} (the keys stele-init published at boot)")]
    PublishedKeys(#[source] KeyringError),
    /// `/run/stele/manifest.toml` does not parse.
    #[error("{}: {source}", path.display())]
    PublishedManifest {
        path: PathBuf,
        #[source]
        source: stele_verifier::Error,
    },
    /// A slot without a partition on this device.
    #[error("slot {} has no partition on this device ({} has no {}= path)", slot.name(), devices.display(), slot.name())]
    NoSlotPartition { slot: Slot, devices: PathBuf },

    /// The boot state cannot be read.
    #[error("{origin}: boot state (rewrite it with `stele disk create`): {source}")]
    StateLoad {
        origin: String,
        #[source]
        source: stele_verifier::Error,
    },
    /// The boot state cannot be written or flushed.
    #[error("{origin}: writing the boot state failed: {source}")]
    StateStore {
        origin: String,
        #[source]
        source: stele_engine::state_write::StateWriteError,
    },
    /// The flight recorder cannot be read.
    #[error("{origin}: reading the flight recorder failed: {source}")]
    RecorderRead {
        origin: String,
        #[source]
        source: stele_verifier::Error,
    },
    /// An event cannot be appended to the flight recorder.
    #[error("{origin}: recording an event failed: {source}")]
    RecorderWrite {
        origin: String,
        #[source]
        source: stele_engine::recorder_write::RecordError,
    },

    /// The bundle is a directory.
    #[error("{path} is a directory, not a slot image")]
    BundleIsDirectory { path: String },
    /// The bundle (a path, or stdin) is the partition being written.
    #[error(
        "the bundle ({bundle}) is {path}, the slot being written: give a slot image file or another device"
    )]
    BundleIsSlot { bundle: String, path: String },
    /// Another install holds the target slot.
    #[error("another `stele update install` is writing {path}: wait for it to finish")]
    SlotBusy { path: String },
    /// Another command writes the same disk image.
    #[error("{path} is in use by another stele command writing it (an install or a stage-1 update): let it finish, then run this again")]
    DiskBusy { path: String },
    /// An install or plan on a disk image without trusted keys.
    #[error(
        "no trusted keys to check the image against: give --key P.pem or --keys DIR with --disk"
    )]
    NoKeys,
    /// A URL on a host without an HTTP client.
    #[error(
        "{url}: this front-end has no HTTP client; give a file, or run the command on the device"
    )]
    NoHttp { url: String },
    /// A command of the running device (mark-good, check, apply) given a disk image.
    #[error("`stele update {command}` runs on the device only (it reads /run/stele); a disk image has no booted slot")]
    DeviceOnly { command: &'static str },
    /// `--disk` names something that is not a disk made by `stele disk create`.
    #[error("{}: {source} (a disk made by `stele disk create` is expected)", path.display())]
    DiskImage {
        path: PathBuf,
        #[source]
        source: stele_verifier::gpt::GptError,
    },
    /// The ESP of a disk made without `--uki`.
    #[error("{}: no EFI system partition ({}): the disk was made without `--uki`, so it has no stage 1 to replace (make it with `stele disk create --uki UKI.efi ...` to boot through UEFI)", path.display(), stele_verifier::layout::Role::Esp.name())]
    NoEspOnDisk {
        path: PathBuf,
        #[source]
        source: stele_verifier::gpt::GptError,
    },
    /// The bundle is the disk image being updated.
    #[error("the bundle is the disk image itself: give a slot image built by `stele image build`")]
    BundleIsDisk { path: String },
    /// The running (or next) slot is on trial and the target is its fallback.
    #[error("slot {} is on trial (not marked good): installing now would overwrite slot {}, its fallback; {}", running.name(), target.name(), if *on_device { "run `stele update mark-good` once it is healthy, or reboot" } else { "boot it and mark it good first" })]
    OnTrial {
        running: Slot,
        target: Slot,
        on_device: bool,
    },
    /// The bundle was refused before the slot was touched.
    #[error("{bundle}: {source}")]
    Bundle {
        bundle: String,
        #[source]
        source: stele_verifier::Error,
    },
    /// Writing or checking the bundle in the slot failed; the slot cannot boot.
    #[error("{bundle} (slot {} is left unbootable): {source}", slot.name())]
    Written {
        bundle: String,
        slot: Slot,
        #[source]
        source: stele_verifier::Error,
    },
    /// Flipping the state or writing the footer failed.
    #[error("committing the install: {source}")]
    Commit {
        #[source]
        source: stele_verifier::Error,
    },
    /// A delta install or plan from a URL or file failed.
    #[error("{url}: {source}")]
    Fetch {
        url: String,
        #[source]
        source: stele_engine::delta::DeltaError,
    },
    /// The booted image has no fetch client.
    #[error("{} does not exist: this image cannot fetch over HTTP (build it with `stele image build --fetch-client PATH`)", path.display())]
    NoFetchClient { path: PathBuf },
    /// A channel file or its offer was refused.
    #[error("{location}: {source}")]
    Channel {
        location: String,
        #[source]
        source: stele_verifier::channel::ChannelError,
    },
    /// The device's channel state cannot be read or written.
    #[error("{}: {why}", path.display())]
    ChannelState { path: PathBuf, why: String },
    /// A file stele keeps on the data partition is not a regular file, or cannot be read
    /// or written (crate::runtime::data_file).
    #[error(transparent)]
    DataFile(#[from] crate::runtime::data_file::DataFileError),
    /// A trusted file of the verified layer was refused or cannot be read
    /// (crate::runtime::verified).
    #[error(transparent)]
    Verified(#[from] crate::runtime::verified::VerifiedError),
    /// The image's channel keys do not make a keyring.
    #[error("{0} (the channel keys of the booted image)")]
    ChannelKeys(#[source] KeyringError),
    /// The booted image does not say which channels it follows, or says it badly.
    #[error("{}: {why} (the update channels the booted image follows, one name per line; build the image with it: docs/FORMATS.md \"Followed channels\")", path.display())]
    FollowedChannels { path: PathBuf, why: String },
    /// A report was not made, kept or sent (crate::report; boxed: the error stays small).
    #[error(transparent)]
    Reporting(Box<crate::report::ReportingError>),
    /// Channel commands need the data partition for their state.
    #[error("this device has no data partition: the channel state (last sequence, rollout seed) needs persistent storage (stele disk create --data-size)")]
    NoDataPartition,
    /// A data reset needs a data partition to reset.
    #[error("{place} has no data partition (named as boot.toml's data_partition, default stele-data): there is nothing to reset")]
    NothingToReset { place: String },
    /// The data reset request cannot be written or read.
    #[error("{origin}: data reset request: {source}")]
    ResetRequest {
        origin: String,
        #[source]
        source: stele_engine::reset_write::RequestError,
    },
    /// `stele update stage1` was refused or failed (`esp`: the device or disk image).
    #[error("{}", stage1_message(uki, esp, source))]
    Stage1 {
        uki: String,
        esp: String,
        #[source]
        source: crate::commands::esp::Stage1Error,
    },
    /// The UKI argument is neither a regular file nor a pipe.
    #[error("{path} is not a regular file: give the UKI as a file, or `-` to read it from stdin")]
    UkiNotAFile { path: String },
    /// The boot found no EFI system partition.
    #[error("this device has no EFI system partition: {} has no esp= path (the disk has no partition named as boot.toml's esp_partition, default stele-esp, or it boots without UEFI)", devices.display())]
    NoEsp { devices: PathBuf },
    /// The ESP is in use (mounted).
    #[error("{path} is in use (mounted?): unmount the EFI system partition first")]
    EspBusy { path: String },
    /// A rollback refusal, with the floors it was decided on (state, TPM, initramfs).
    #[error("{source} ({})", floors.sources())]
    Floors {
        floors: crate::runtime::rollback::Floors,
        #[source]
        source: Box<Error>,
    },
    /// The TPM (the rollback counter).
    #[error(transparent)]
    Tpm(#[from] stele_tpm::Error),
    /// An install on the device failed: which slot on which partition.
    #[error("{source} (installing into slot {} on {path})", slot.name())]
    Installing {
        slot: Slot,
        path: String,
        #[source]
        source: Box<Error>,
    },
}

/// A stage-1 error names the UKI when the UKI is at fault, the ESP otherwise.
fn stage1_message(uki: &str, esp: &str, e: &crate::commands::esp::Stage1Error) -> String {
    if e.is_input() {
        format!("{uki}: {e}")
    } else {
        format!("{esp}: {e} (updating stage 1 from {uki})")
    }
}

impl Error {
    /// True when the boot state has no valid copy (never written, or both copies lost):
    /// the boot then rebuilds it from the slots (init's `recover`). The one question the
    /// boot asks of a state error.
    pub fn is_no_valid_state(&self) -> bool {
        matches!(
            self,
            Error::StateLoad {
                source: stele_verifier::Error::NoValidState,
                ..
            }
        )
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(op: &'static str, path: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

impl From<crate::report::ReportingError> for Error {
    fn from(e: crate::report::ReportingError) -> Self {
        Error::Reporting(Box::new(e))
    }
}

impl Report for Error {
    fn exit(&self) -> Exit {
        use Error as E;
        match self {
            E::Args(_) | E::BundleIsDirectory { .. } | E::BundleIsSlot { .. } => Exit::Usage,
            E::BundleIsDisk { .. } | E::NoKeys | E::DeviceOnly { .. } => Exit::Usage,
            E::DiskBusy { .. } | E::NoHttp { .. } => Exit::Environment,
            E::DiskImage { source, .. } | E::NoEspOnDisk { source, .. } => source.exit(),
            E::Keyring(k) => k.exit(),
            E::Io { .. } | E::NotAFile { .. } | E::Lock { .. } | E::SlotBusy { .. } => {
                Exit::Environment
            }
            E::StateStore { source, .. } => match source {
                stele_engine::state_write::StateWriteError::Write(e) => e.exit(),
                stele_engine::state_write::StateWriteError::Flush(_) => Exit::Environment,
            },
            E::RecorderWrite { source, .. } => match source {
                stele_engine::recorder_write::RecordError::Write(e) => e.exit(),
                stele_engine::recorder_write::RecordError::Flush(_) => Exit::Environment,
            },
            // What the boot published is the device's environment, whatever is wrong in it.
            E::NotPublished { .. }
            | E::PublishedFormat { .. }
            | E::PublishedConfig(_)
            | E::PublishedKeys(_)
            | E::PublishedManifest { .. }
            | E::NoSlotPartition { .. } => Exit::Environment,
            E::OnTrial { .. } => Exit::Refused,
            E::Fetch { source, .. } => source.exit(),
            E::Channel { source, .. } => source.exit(),
            E::DataFile(e) => e.exit(),
            E::Reporting(e) => e.exit(),
            E::Verified(e) => e.exit(),
            E::NoFetchClient { .. }
            | E::ChannelState { .. }
            | E::ChannelKeys(_)
            | E::FollowedChannels { .. }
            | E::NoDataPartition
            | E::NothingToReset { .. }
            | E::ResetRequest { .. } => Exit::Environment,
            E::Stage1 { source, .. } if source.is_input() => Exit::Usage,
            E::Stage1 { .. } | E::NoEsp { .. } | E::EspBusy { .. } => Exit::Environment,
            E::UkiNotAFile { .. } => Exit::Usage,
            E::StateLoad { source, .. }
            | E::RecorderRead { source, .. }
            | E::Bundle { source, .. }
            | E::Written { source, .. }
            | E::Commit { source } => source.exit(),
            E::Installing { source, .. } => source.exit(),
            E::Tpm(t) => t.exit(),
            E::Floors { source, .. } => source.exit(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_files_are_the_environment_whatever_their_cause() {
        let key = stele_verifier::Error::Key {
            path: "/run/stele/keys/k.pem".into(),
            problem: stele_verifier::keyfile::KeyProblem::NotAKey {
                want: stele_verifier::keyfile::Half::Public,
            },
        };
        // The same key error: usage when the user gave the file, environment when the
        // boot published it.
        let user = Error::Keyring(KeyringError::Key(key));
        assert_eq!(user.exit(), Exit::Usage);
        let Error::Keyring(inner) = user else {
            unreachable!()
        };
        let published = Error::PublishedKeys(inner);
        assert_eq!(published.exit(), Exit::Environment);
        assert!(published
            .to_string()
            .ends_with("(the keys stele-init published at boot)"));
    }

    #[test]
    fn wrapped_verifier_errors_keep_their_class_and_context() {
        let e = Error::Installing {
            slot: Slot::B,
            path: "/dev/vda3".into(),
            source: Box::new(Error::Bundle {
                bundle: "v2.img".into(),
                source: stele_verifier::Error::Rollback { index: 1, floor: 2 },
            }),
        };
        assert_eq!(e.exit(), Exit::Refused);
        assert_eq!(
            e.to_string(),
            "v2.img: rollback refused: image rollback_index 1 is below the rollback floor 2 (installing into slot b on /dev/vda3)"
        );
        let e = Error::StateLoad {
            origin: "/dev/vda1".into(),
            source: stele_verifier::Error::io("boot state", io::Error::other("gone")),
        };
        assert_eq!(e.exit(), Exit::Environment);
    }
}

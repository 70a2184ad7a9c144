//! Reports a fleet collects without a server of ours (docs/BOOT.md "Reports"): after a
//! boot is marked good and after an install, the device makes a JSON report
//! ([`doc`]: its id, the running release, both slots, the flight recorder's events since
//! the last report), keeps it in a bounded backlog on the data partition ([`backlog`]) and
//! sends the backlog to the URL the booted image names (system.toml `[report]`) through the
//! fetch client ([`send`]). The device id is [`device_id`].

pub mod backlog;
pub mod doc;
pub mod send;

use std::io::Read;
use std::path::{Path, PathBuf};

use stele_verifier::config::{ReportConfig, SystemConfig};
use stele_verifier::exit::{Exit, Report};
use stele_verifier::layout::{Role, FETCH_CLIENT, SYSTEM_TOML};

use crate::remote::pipe::Program;
use crate::runtime::data_file::{self, DataFileError};
use crate::runtime::run_dir::RunDir;
use crate::runtime::verified::{Lower, VerifiedError};

/// The device id under the data partition's mount point.
pub const DEVICE_ID: &str = "lib/stele/device-id";

/// Why no report was made, kept or sent.
#[derive(Debug, thiserror::Error)]
pub enum ReportingError {
    #[error(transparent)]
    Data(DataFileError),
    /// A backlog or id file holds something stele did not write.
    #[error("{}: not a file stele wrote (remove it; stele writes a new one)", path.display())]
    BadFile { path: PathBuf },
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("drawing the device id from /dev/urandom: {0}")]
    Random(std::io::Error),
    /// The booted image has no `[report]`.
    #[error("the booted image names no report URL: add a [report] table with url = \"https://...\" to its /etc/stele/system.toml (docs/BOOT.md \"Reports\")")]
    NoUrl,
    /// The image's system.toml cannot be read.
    #[error(transparent)]
    Verified(#[from] VerifiedError),
    #[error("{0}")]
    Config(String),
    #[error("{} does not exist: this image cannot send reports (build it with `stele image build --fetch-client PATH`)", path.display())]
    NoFetchClient { path: PathBuf },
    /// Reports stayed in the backlog: the collector did not take them.
    #[error("{kept} report(s) kept on the data partition, not sent: {why} (sent at the next boot, install or `stele update report --send`)")]
    NotSent { kept: usize, why: String },
    /// Reports need the data partition.
    #[error("this device has no data partition: the device id and the report backlog need persistent storage (stele disk create --data-size)")]
    NoDataPartition,
}

impl Report for ReportingError {
    fn exit(&self) -> Exit {
        match self {
            ReportingError::Data(e) => e.exit(),
            ReportingError::Verified(e) => e.exit(),
            _ => Exit::Environment,
        }
    }
}

/// The device id of a `device-id` file's bytes: 32 lowercase hex digits and a newline.
/// Pure.
pub fn parse_device_id(bytes: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(bytes).ok()?.strip_suffix('\n')?;
    (s.len() == 32
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then(|| s.to_string())
}

/// The device id: a random 128-bit number made on first use and kept in
/// `<data_mount>/lib/stele/device-id` (docs/FORMATS.md "Device id"). `create`: make it when
/// there is none (the caller holds the backlog's lock); otherwise `None` then.
pub fn device_id(data_mount: &Path, create: bool) -> Result<Option<String>, ReportingError> {
    let path = data_mount.join(DEVICE_ID);
    match data_file::read(&path).map_err(ReportingError::Data)? {
        Some(b) => parse_device_id(&b)
            .map(Some)
            .ok_or(ReportingError::BadFile { path }),
        None if create => {
            let mut raw = [0u8; 16];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut raw))
                .map_err(ReportingError::Random)?;
            let id = stele_verifier::hex::encode(&raw);
            data_file::write_atomic(&path, format!("{id}\n").as_bytes())
                .map_err(ReportingError::Data)?;
            Ok(Some(id))
        }
        None => Ok(None),
    }
}

/// The data partition's mount point, if the device has one.
pub fn data_mount(dev: &RunDir) -> Result<PathBuf, ReportingError> {
    if dev.devices.get(Role::Data).is_none() {
        return Err(ReportingError::NoDataPartition);
    }
    Ok(PathBuf::from(&dev.config.data_mount))
}

/// The booted image's `[report]` (system.toml from the verified layer) and its fetch
/// client, opened there (run from that descriptor: nothing on the overlay or the data
/// partition can take its place).
pub fn from_image(dev: &RunDir) -> Result<(Option<ReportConfig>, Option<Program>), ReportingError> {
    let lower = Lower::open(&dev.lower(), &dev.config.data_mount)?;
    let text = lower.read(SYSTEM_TOML)?.unwrap_or_default();
    let cfg = SystemConfig::parse(&String::from_utf8_lossy(&text), SYSTEM_TOML)
        .map_err(|e| ReportingError::Config(e.to_string()))?;
    let program = lower.open_file(FETCH_CLIENT)?.map(|file| Program {
        file,
        path: lower.show(FETCH_CLIENT),
    });
    Ok((cfg.report, program))
}

/// The fetch client, or why there is none.
pub fn fetch_client(dev: &RunDir, program: Option<Program>) -> Result<Program, ReportingError> {
    program.ok_or_else(|| ReportingError::NoFetchClient {
        path: Lower::open(&dev.lower(), &dev.config.data_mount)
            .map(|l| l.show(FETCH_CLIENT))
            .unwrap_or_else(|_| PathBuf::from(FETCH_CLIENT)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_id_is_made_once_and_kept() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(device_id(d.path(), false).unwrap(), None);
        let id = device_id(d.path(), true).unwrap().unwrap();
        assert_eq!(id.len(), 32);
        assert_eq!(device_id(d.path(), true).unwrap().unwrap(), id);
        assert_eq!(device_id(d.path(), false).unwrap().unwrap(), id);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(device_id(other.path(), true).unwrap().unwrap(), id);
        std::fs::write(d.path().join(DEVICE_ID), "not an id\n").unwrap();
        let e = device_id(d.path(), true).unwrap_err();
        assert!(matches!(e, ReportingError::BadFile { .. }), "{e}");
        assert_eq!(e.exit(), Exit::Environment);
        assert_eq!(parse_device_id(b"0123456789ABCDEF0123456789abcdef\n"), None);
    }
}

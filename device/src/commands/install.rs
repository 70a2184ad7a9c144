//! `stele update install`: which slot, then stele_engine's write order (check, zero the
//! footer, copy and check, flip the state, footer), with the progress lines. The same
//! [`install`] serves the device (partitions from `/run/stele`) and the host CLI's `--disk`
//! (partition windows of a disk image).

use std::fs::{File, Metadata};
use std::io::{self, Read, Seek};
use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use stele_engine as vupdate;

use stele_verifier::progress::Progress;
use stele_verifier::state::{BootState, Slot};

use crate::runtime::open::{self, Storage};
use crate::runtime::rollback;
use crate::runtime::state_file::StateFile;
use crate::target::{Place, Target};
use crate::{Error, Result};

/// Where an install reads the bundle from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BundleArg {
    /// `-`: standard input, read front to back.
    Stdin,
    /// A file, a block device, or a pipe.
    Path(PathBuf),
}

impl BundleArg {
    /// How messages name it: `-` (standard input) or the path.
    pub fn shown(&self) -> String {
        match self {
            BundleArg::Stdin => "-".into(),
            BundleArg::Path(p) => p.display().to_string(),
        }
    }
}

/// `Read + Seek`, as one trait object.
pub trait ReadSeek: Read + Seek {}
impl<T: Read + Seek> ReadSeek for T {}

/// An opened bundle.
pub enum Bundle {
    /// Readable out of order (a file or block device) of `len` bytes: signatures, floor
    /// and hash tree are checked before the slot is touched, the data during the copy.
    Seekable {
        reader: Box<dyn ReadSeek>,
        len: u64,
        name: String,
    },
    /// Read front to back (stdin, a pipe): verified in full from the slot once written.
    Stream { reader: Box<dyn Read>, name: String },
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bundle::Seekable { len, name, .. } => write!(f, "Seekable({name}, {len} bytes)"),
            Bundle::Stream { name, .. } => write!(f, "Stream({name})"),
        }
    }
}

/// Opens a bundle argument: stdin for `-`, a regular file or block device as seekable,
/// anything else (a FIFO, a character device) as a stream. Also returns the metadata of
/// what was opened, stdin's too (to refuse installing a partition onto itself).
pub fn open_bundle(arg: &BundleArg) -> Result<(Bundle, Option<Metadata>)> {
    let BundleArg::Path(p) = arg else {
        let stdin = io::stdin();
        // What stdin is (`< /dev/vda3` makes it the partition itself); unknown when it
        // cannot be duplicated (closed), which then reads as an empty stream.
        let md = stdin
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .and_then(|fd| File::from(fd).metadata().ok());
        let stream = Bundle::Stream {
            reader: Box::new(stdin),
            name: "stdin".into(),
        };
        return Ok((stream, md));
    };
    let name = p.display().to_string();
    let mut f = open::open(&name, false)?;
    let md = f.metadata().map_err(|e| Error::io("stat", &name, e))?;
    let b = if md.is_file() || md.file_type().is_block_device() {
        let len = open::size(&mut f, &name)?;
        Bundle::Seekable {
            reader: Box::new(f),
            len,
            name,
        }
    } else if md.is_dir() {
        return Err(Error::BundleIsDirectory { path: name });
    } else {
        Bundle::Stream {
            reader: Box::new(f),
            name,
        }
    };
    Ok((b, Some(md)))
}

impl Bundle {
    /// The name errors give it (`stdin`, or its path).
    pub fn name(&self) -> &str {
        match self {
            Bundle::Seekable { name, .. } | Bundle::Stream { name, .. } => name,
        }
    }
}

pub use stele_verifier::partition::same_file;

pub use crate::target::{install_floor, plan, Trust};

/// What an install did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    pub name: String,
    pub version: String,
    pub rollback_index: u64,
    pub slot: Slot,
    pub state: BootState,
    /// What the flight recorder names it by.
    pub release: stele_verifier::recorder::Release,
}

/// The stable stdout line of a successful install. Pure.
pub fn installed_line(i: &Installed) -> String {
    format!(
        "stele: installed {} {} rollback_index={} into slot {}; reboot to boot it",
        i.name,
        i.version,
        i.rollback_index,
        i.slot.name()
    )
}

/// Installs `bundle` into slot `target` (`slot_len` bytes) and flips the boot state; the
/// checks (keyring, product, rollback floor ([`Trust::floors`]: [`install_floor`], the TPM's,
/// the initramfs minimum), size, hash tree) come before the state is written, so any
/// refusal leaves it untouched. The state is locked only to read the floor and, after the
/// write, to read it again and flip it: a bundle that stalls never keeps PID 1 from
/// marking its slot good. Progress lines go to `log` (without the `stele: ` prefix):
/// `update: writing slot <x>`, `update: flipping boot state`, `update: footer written`;
/// the bytes of the copy (and of a stream's check) to
/// `progress`.
#[allow(clippy::too_many_arguments)] // the install's inputs, each its own thing
pub fn install<D: Storage, S: Storage>(
    bundle: &mut Bundle,
    target: Slot,
    slot: &mut D,
    slot_len: u64,
    state: &mut StateFile<S>,
    trust: &Trust<'_>,
    log: &mut dyn FnMut(&str),
    progress: &mut dyn Progress,
) -> Result<Installed> {
    let before = state.locked(StateFile::load)?;
    let floors = trust.floors(&before);
    let policy = vupdate::Policy {
        keyring: trust.keyring,
        rollback_floor: floors.effective(),
        product: trust.product,
    };
    let floor = policy.rollback_floor;
    let written = |bundle: &str| {
        let bundle = bundle.to_string();
        move |source| Error::Written {
            bundle,
            slot: target,
            source,
        }
    };
    let written_or_refused = (|| -> Result<vupdate::Written> {
        Ok(match bundle {
            Bundle::Seekable { reader, len, name } => {
                let checked =
                    vupdate::check_seekable(reader, *len, slot_len, &policy).map_err(|source| {
                        Error::Bundle {
                            bundle: name.clone(),
                            source,
                        }
                    })?;
                let m = &checked.verified().manifest;
                log(&format!(
                "update: {name}: {} {} rollback_index={} verified (signatures, product, rollback floor {floor}, hash tree)",
                m.name, m.version, m.rollback_index
            ));
                log(&format!("update: writing slot {}", target.name()));
                vupdate::write_checked(reader, checked, slot, slot_len, progress)
                    .map_err(written(name))?
            }
            Bundle::Stream { reader, name } => {
                log(&format!(
                    "update: reading the bundle from {name}; it is verified in full once written"
                ));
                log(&format!("update: writing slot {}", target.name()));
                vupdate::install_stream(reader, slot, slot_len, &policy, progress)
                    .map_err(written(name))?
            }
        })
    })();
    let done = written_or_refused.map_err(|e| rollback::name_floors(e, floors))?;
    let name = bundle.name().to_string();
    flip(
        state,
        trust,
        done,
        (slot, slot_len, target),
        written(&name),
        log,
    )
}

/// The end of every install, from a bundle or a URL: under the state lock the floors are
/// checked again (PID 1 may have marked the running slot good, raising them, while the
/// image was written), then the state is flipped and the footer written — the state
/// first: the slot's old record never applies to the new content (stele_engine). (The
/// target cannot have changed: only another install could make it bootable, and the slot
/// is locked.) `refused` wraps a rollback refusal with where the image came from.
pub(crate) fn flip<D: Storage, S: Storage>(
    state: &mut StateFile<S>,
    trust: &Trust<'_>,
    written: vupdate::Written,
    (slot, slot_len, target): (&mut D, u64, Slot),
    refused: impl FnOnce(stele_verifier::Error) -> Error,
    log: &mut dyn FnMut(&str),
) -> Result<Installed> {
    let m = written.verified.manifest.clone();
    let new_state = state.locked(|state| {
        let floors_now = trust.floors(&state.load()?);
        let floor_now = floors_now.effective();
        if m.rollback_index < floor_now {
            let e = refused(stele_verifier::Error::Rollback {
                index: m.rollback_index,
                floor: floor_now,
            });
            return Err(rollback::name_floors(e, floors_now));
        }
        log("update: flipping boot state");
        state.commit(written, slot, slot_len, target)
    })?;
    log("update: footer written");
    Ok(Installed {
        release: crate::runtime::flight::release(&m),
        name: m.name,
        version: m.version,
        rollback_index: m.rollback_index,
        slot: target,
        state: new_state,
    })
}

/// `stele update install BUNDLE|-` on an opened target ([`Target::load_trust`] read):
/// into [`Target::install_slot`] (locked for the install), the state locked only for its
/// reads and the flip. A bundle that is the target slot itself (or the disk image) is
/// refused before anything is written.
pub fn run(
    t: &mut Target,
    arg: &BundleArg,
    log: &mut dyn FnMut(&str),
    progress: &mut dyn Progress,
) -> Result<Installed> {
    let mut target = t.install_slot()?;
    let (mut bundle, bundle_md) = open_bundle(arg)?;
    if let Some(bmd) = &bundle_md {
        let part = &target.part;
        let smd = part
            .file()
            .metadata()
            .map_err(|e| Error::io("stat", part.path(), e))?;
        if same_file(bmd, &smd) {
            return Err(match t.place {
                Place::Device(_) => Error::BundleIsSlot {
                    bundle: bundle.name().to_string(),
                    path: part.path().to_string(),
                },
                Place::Disk(ref p) => Error::BundleIsDisk {
                    path: p.display().to_string(),
                },
            });
        }
    }
    let trust = t.trusted.trust()?;
    let slot_len = target.part.len();
    let done = install(
        &mut bundle,
        target.slot,
        &mut target.part,
        slot_len,
        &mut t.state,
        &trust,
        log,
        progress,
    );
    target.named(done, t.on_device())
}

#[cfg(test)]
#[path = "install_tests.rs"]
mod tests;

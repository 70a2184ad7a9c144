//! `stele update install`: which slot, then verifier::update's write order (check, zero the
//! footer, copy and check, flip the state, footer), with the progress lines. The same
//! [`install`] serves the device (partitions from `/run/stele`) and the host CLI's `--disk`
//! (partition windows of a disk image).

use std::fs::Metadata;
use std::io::{self, Read, Seek};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use stele_verifier::keys::Keyring;
use stele_verifier::progress::Progress;
use stele_verifier::state::{BootState, Slot};
use stele_verifier::update as vupdate;

use crate::rollback::{self, Floors};
use crate::run_dir::RunDir;
use crate::state_file::StateFile;
use crate::storage::{self, Device};
use crate::{Error, Result};

/// Where an install reads the bundle from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BundleArg {
    /// `-`: standard input, read front to back.
    Stdin,
    /// A file, a block device, or a pipe.
    Path(PathBuf),
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
/// what was opened (to refuse installing a partition onto itself).
pub fn open_bundle(arg: &BundleArg) -> Result<(Bundle, Option<Metadata>)> {
    let BundleArg::Path(p) = arg else {
        let stdin = Bundle::Stream {
            reader: Box::new(io::stdin()),
            name: "stdin".into(),
        };
        return Ok((stdin, None));
    };
    let name = p.display().to_string();
    let mut f = storage::open(&name, false)?;
    let md = f.metadata().map_err(|e| Error::io("stat", &name, e))?;
    let b = if md.is_file() || md.file_type().is_block_device() {
        let len = storage::size(&mut f, &name)?;
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

pub use stele_verifier::partition::same_file;

/// Which slot an install writes. On the device (`booted` known) the slot that is not
/// booted; on a disk image, the slot the state would NOT boot next (a when none is
/// bootable). Refused when the running (or next) slot is on trial and the target is its
/// bootable fallback: overwriting it would leave no slot known to be good. Pure.
pub fn plan(st: &BootState, booted: Option<Slot>) -> Result<Slot> {
    let running = booted.or_else(|| st.choose());
    let target = running.map_or(Slot::A, Slot::other);
    if let Some(r) = running {
        if !st.slot(r).successful && st.slot(target).bootable() {
            return Err(Error::OnTrial {
                running: r,
                target,
                on_device: booted.is_some(),
            });
        }
    }
    Ok(target)
}

/// What an install did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    pub name: String,
    pub version: String,
    pub rollback_index: u64,
    pub slot: Slot,
    pub state: BootState,
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
/// checks (keyring, the rollback floor: the state's, or `floors`' TPM and initramfs floors
/// when higher, size, hash tree) come before the state is written, so any refusal leaves
/// it untouched. Progress lines go to `log` (without the
/// `stele: ` prefix): `update: writing slot <x>`, `update: flipping boot state`,
/// `update: footer written`; the bytes of the copy (and of a stream's check) to
/// `progress`.
#[allow(clippy::too_many_arguments)] // the install's inputs, each its own thing
pub fn install<D: Device, S: Device>(
    bundle: &mut Bundle,
    target: Slot,
    slot: &mut D,
    slot_len: u64,
    state: &mut StateFile<S>,
    keyring: &Keyring,
    floors: Floors,
    log: &mut dyn FnMut(&str),
    progress: &mut dyn Progress,
) -> Result<Installed> {
    let floors = Floors {
        state: state.load()?.rollback_floor,
        ..floors
    };
    let floor = floors.effective();
    let done = write(
        bundle, target, slot, slot_len, keyring, floor, log, progress,
    );
    let done = done.map_err(|e| rollback::name_floors(e, floors))?;
    // The state first, then the footer: the slot's old record never applies to the new
    // content (verifier::update).
    log("update: flipping boot state");
    let m = done.verified.manifest.clone();
    let new_state = state.commit(done, slot, slot_len, target)?;
    log("update: footer written");
    Ok(Installed {
        name: m.name,
        version: m.version,
        rollback_index: m.rollback_index,
        slot: target,
        state: new_state,
    })
}

/// The check and the copy of [`install`], up to the commit.
#[allow(clippy::too_many_arguments)] // the install's inputs, each its own thing
fn write<D: Device>(
    bundle: &mut Bundle,
    target: Slot,
    slot: &mut D,
    slot_len: u64,
    keyring: &Keyring,
    floor: u64,
    log: &mut dyn FnMut(&str),
    progress: &mut dyn Progress,
) -> Result<vupdate::Written> {
    let written = |bundle: &str| {
        let bundle = bundle.to_string();
        move |source| Error::Written {
            bundle,
            slot: target,
            source,
        }
    };
    let sync = &mut |d: &mut D| d.sync();
    let done = match bundle {
        Bundle::Seekable { reader, len, name } => {
            let checked = vupdate::check_seekable(reader, *len, slot_len, keyring, floor).map_err(
                |source| Error::Bundle {
                    bundle: name.clone(),
                    source,
                },
            )?;
            let m = &checked.verified().manifest;
            log(&format!(
                "update: {name}: {} {} rollback_index={} verified (signatures, rollback floor {floor}, hash tree)",
                m.name, m.version, m.rollback_index
            ));
            log(&format!("update: writing slot {}", target.name()));
            vupdate::write_checked(reader, checked, slot, slot_len, sync, progress)
                .map_err(written(name))?
        }
        Bundle::Stream { reader, name } => {
            log(&format!(
                "update: reading the bundle from {name}; it is verified in full once written"
            ));
            log(&format!("update: writing slot {}", target.name()));
            vupdate::install_stream(reader, slot, slot_len, keyring, floor, sync, progress)
                .map_err(written(name))?
        }
    };
    Ok(done)
}

/// `stele update install` on the device: into the slot that is not booted, the state
/// locked throughout.
pub fn on_device(
    run_dir: &Path,
    arg: &BundleArg,
    log: &mut dyn FnMut(&str),
    progress: &mut dyn Progress,
) -> Result<Installed> {
    let dev = RunDir::read(run_dir)?;
    let mut state = StateFile::open(dev.state_path(), true)?;
    // Held until the install returns (the file is closed): PID 1 does not mark a slot good
    // in between, so the floor read here is the floor at the flip.
    state.lock()?;
    let target = plan(&state.load()?, Some(dev.booted))?;
    let slot_path = dev.slot_path(target)?.to_string();
    let mut tpm = rollback::open_counter(&dev.config)?;
    let floors = rollback::floors(0, tpm.counter(), &dev.config)?;
    let (mut bundle, bundle_md) = open_bundle(arg)?;
    let mut slot = storage::open(&slot_path, true)?;
    let slot_len = storage::size(&mut slot, &slot_path)?;
    if let Some(bmd) = &bundle_md {
        let smd = slot
            .metadata()
            .map_err(|e| Error::io("stat", &slot_path, e))?;
        if same_file(bmd, &smd) {
            return Err(Error::BundleIsSlot { path: slot_path });
        }
    }
    install(
        &mut bundle,
        target,
        &mut slot,
        slot_len,
        &mut state,
        &dev.keyring,
        floors,
        log,
        progress,
    )
    .map_err(|e| Error::Installing {
        slot: target,
        path: slot_path,
        source: Box::new(e),
    })
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test sizes are small
mod tests {
    use super::*;
    use std::io::Cursor;
    use stele_verifier::exit::{Exit, Report};
    use stele_verifier::progress::Silent;
    use stele_verifier::state::{self, SlotState};
    use stele_verifier::testutil::{image_signed_by, ring};

    /// A state with floor 2.
    fn st(a: (u8, u8, bool), b: (u8, u8, bool)) -> BootState {
        BootState {
            rollback_floor: 2,
            ..stele_verifier::testutil::state(a, b)
        }
    }

    #[test]
    fn target_slot() {
        let good = (2, 0, true);
        let fallback = (1, 0, true);
        let trial = (2, 3, false);
        let dead = (0, 0, false);
        // On the device: never the booted slot.
        assert_eq!(plan(&st(good, fallback), Some(Slot::A)).unwrap(), Slot::B);
        assert_eq!(plan(&st(fallback, good), Some(Slot::B)).unwrap(), Slot::A);
        // Booted a, b already installed but not booted yet: b again.
        assert_eq!(plan(&st(fallback, trial), Some(Slot::A)).unwrap(), Slot::B);
        // Booted b on trial: a is its fallback, refused.
        let e = plan(&st(fallback, trial), Some(Slot::B)).unwrap_err();
        assert_eq!(e.exit(), Exit::Refused);
        assert!(e.to_string().contains("mark-good"), "{e}");
        // ...unless a is not bootable anyway.
        assert_eq!(plan(&st(dead, trial), Some(Slot::B)).unwrap(), Slot::A);
        // On a disk image: the slot the state would not choose.
        assert_eq!(plan(&st(good, dead), None).unwrap(), Slot::B);
        assert_eq!(plan(&st(fallback, good), None).unwrap(), Slot::A);
        assert_eq!(plan(&st(dead, dead), None).unwrap(), Slot::A);
        let e = plan(&st(fallback, trial), None).unwrap_err();
        assert!(matches!(
            e,
            Error::OnTrial {
                on_device: false,
                ..
            }
        ));
    }

    fn fresh_state() -> StateFile<Cursor<Vec<u8>>> {
        let mut c = Cursor::new(vec![0u8; 8192]);
        state::initialize(&mut c, &BootState::initial(false)).unwrap();
        StateFile::new(c, "state")
    }

    fn seekable(img: Vec<u8>, name: &str) -> Bundle {
        Bundle::Seekable {
            len: img.len() as u64,
            reader: Box::new(Cursor::new(img)),
            name: name.into(),
        }
    }

    /// [`install`] into slot a of `slot` (1 MiB), quietly, trusting key 1.
    fn install_a(
        bundle: &mut Bundle,
        slot: &mut Cursor<Vec<u8>>,
        state: &mut StateFile<Cursor<Vec<u8>>>,
    ) -> Result<Installed> {
        install(
            bundle,
            Slot::A,
            slot,
            1 << 20,
            state,
            &ring(),
            Floors::default(),
            &mut |_| {},
            &mut Silent,
        )
    }

    #[test]
    fn install_flips_the_state_only_after_a_good_write() {
        let img = image_signed_by(8, 5, 2, 1).0;
        let mut slot = Cursor::new(vec![0u8; 1 << 20]);
        let mut state_dev = fresh_state();
        let mut lines = Vec::new();
        let done = install(
            &mut seekable(img, "v5.img"),
            Slot::B,
            &mut slot,
            1 << 20,
            &mut state_dev,
            &ring(),
            Floors::default(),
            &mut |l| lines.push(l.to_string()),
            &mut Silent,
        )
        .unwrap();
        assert_eq!(
            installed_line(&done),
            "stele: installed demo 5.2 rollback_index=5 into slot b; reboot to boot it"
        );
        assert_eq!(lines[1], "update: writing slot b");
        assert_eq!(
            lines[2..],
            ["update: flipping boot state", "update: footer written"]
        );
        let s = state_dev.load().unwrap();
        assert_eq!(s.choose(), Some(Slot::B));
        assert_eq!(
            *s.slot(Slot::B),
            SlotState {
                priority: 2,
                tries_remaining: 3,
                successful: false
            }
        );
        assert_eq!(s, done.state);

        // Marking it good raises the floor; then an older bundle is refused by the floor,
        // from a stream too, and the state is not written.
        assert!(state_dev.mark_good(Slot::B, 5).unwrap());
        let before = state_dev.get_ref().get_ref().clone();
        let mut old = Bundle::Stream {
            reader: Box::new(Cursor::new(image_signed_by(8, 4, 3, 1).0)),
            name: "stdin".into(),
        };
        let e = install_a(&mut old, &mut slot, &mut state_dev).unwrap_err();
        assert_eq!(e.exit(), Exit::Refused);
        let Error::Floors { floors, source } = &e else {
            panic!("not a floor refusal: {e}")
        };
        assert!(
            matches!(**source, Error::Written { slot: Slot::A, .. }),
            "{e}"
        );
        assert_eq!(floors.effective(), 5);
        assert!(e.to_string().contains("rollback"), "{e}");
        assert_eq!(state_dev.get_ref().get_ref(), &before);
        // The TPM's floor counts even when the state's is lower: a newer image is refused
        // before the slot is touched, and the refusal names the TPM.
        let slot_before = slot.get_ref().clone();
        let tpm = Floors {
            tpm: Some(7),
            ..Floors::default()
        };
        let e = install(
            &mut seekable(image_signed_by(8, 6, 1, 1).0, "v6.img"),
            Slot::A,
            &mut slot,
            1 << 20,
            &mut state_dev,
            &ring(),
            tpm,
            &mut |_| {},
            &mut Silent,
        )
        .unwrap_err();
        assert_eq!(e.exit(), Exit::Refused);
        assert_eq!(
            e.to_string(),
            "v6.img: rollback refused: image rollback_index 6 is below the rollback floor 7 (state 5, tpm 7, initramfs 0)"
        );
        assert_eq!(slot.get_ref(), &slot_before);
        assert_eq!(state_dev.get_ref().get_ref(), &before);
        // A seekable bundle signed by an unknown key: refused before the slot is touched.
        let slot_before = slot.get_ref().clone();
        let mut other = seekable(image_signed_by(8, 6, 3, 2).0, "other.img");
        let e = install_a(&mut other, &mut slot, &mut state_dev).unwrap_err();
        assert!(matches!(e, Error::Bundle { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with("other.img: signature threshold not met"),
            "{e}"
        );
        assert_eq!(slot.get_ref(), &slot_before);
        assert_eq!(state_dev.get_ref().get_ref(), &before);
    }
}

//! THE install target: where a `stele update` command reads and writes — the running device
//! (the partitions the boot published in `/run/stele`) or a disk image given on a host
//! (`--disk`) — opened once, with its trust (keyring, product, floors), its boot state, its
//! partitions and its lock. Every command is "open the target, call one function"
//! ([`crate::commands`]); no front-end opens a partition itself.
//!
//! Locks: on the device the target slot partition is locked for a whole install (one
//! install at a time) and the state only around its reads and the flip (PID 1 marks its slot
//! good meanwhile); a disk image is locked as a whole, without waiting, for as long as a
//! target that writes is open, whatever writes it (a bundle, a URL, the ESP).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::Flock;
use stele_verifier::gpt::{find_partition, GptError};
use stele_verifier::keys::Keyring;
use stele_verifier::layout::Role;
use stele_verifier::partition::PartitionIo;
use stele_verifier::state::{BootState, Slot};

use crate::inspect::{inspect_slot, Image};
use crate::runtime::open::{self, Storage};
use crate::runtime::rollback::{self, Floors};
use crate::runtime::run_dir::{RunDir, DEVICES};
use crate::runtime::state_file::StateFile;
use crate::{Error, Result};

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

/// The rollback floor an install must meet: the state's floor, raised to the running
/// slot's verified rollback index when that slot is good (its index is the floor the
/// state would have once it is marked good; a fresh disk, or one made by an older stele,
/// may not have it yet). `running` is the booted slot on the device, the slot the state
/// boots next on a disk image. Pure.
pub fn install_floor(st: &BootState, running: Option<(Slot, u64)>) -> u64 {
    match running {
        Some((s, index)) if st.slot(s).successful => st.rollback_floor.max(index),
        _ => st.rollback_floor,
    }
}

/// What the device trusts: its keyring, the product it is bound to, the running slot
/// with its verified rollback index (for [`install_floor`]), and the floors kept outside
/// the state (the TPM counter's, the initramfs minimum).
#[derive(Clone, Copy, Debug)]
pub struct Trust<'a> {
    pub keyring: &'a Keyring,
    pub product: Option<&'a str>,
    /// The slot running (on the device) or booting next (on a disk image) and its
    /// verified rollback index, when known.
    pub running: Option<(Slot, u64)>,
    /// `tpm` and `initramfs` of [`rollback::floors`] (its `state` is not used: the state
    /// is read at each check). A build host has neither: `Floors::default()`.
    pub floors: Floors,
}

impl Trust<'_> {
    /// The floors an install must meet against state `st`: the state's, the good running
    /// slot's index (together [`install_floor`]), the TPM's and the initramfs minimum.
    /// Pure.
    pub fn floors(&self, st: &BootState) -> Floors {
        Floors {
            state: st.rollback_floor,
            running: self
                .running
                .filter(|(s, _)| st.slot(*s).successful)
                .map(|(_, index)| index),
            ..self.floors
        }
    }
}

/// One partition of a target: a whole block device (or file) on the device, a window of
/// the disk image on a host. Reads, writes and flushes as a [`Storage`].
#[derive(Debug)]
pub struct Part {
    io: PartitionIo<File>,
    path: String,
}

impl Part {
    /// The partition at `path` (a block device or file), whole.
    fn whole(path: &str, write: bool) -> Result<Part> {
        let mut f = open::open(path, write)?;
        let len = open::size(&mut f, path)?;
        Ok(Part {
            io: PartitionIo::new(f, 0, len),
            path: path.to_string(),
        })
    }

    /// The partition of `role` in the disk image `disk`, found by its GPT name.
    fn window(disk: &Path, role: Role, write: bool) -> Result<Part> {
        let shown = disk.display().to_string();
        let mut f = open::open(&shown, write)?;
        let (off, len) = find_partition(&mut f, role.name()).map_err(|source| match source {
            GptError::NotFound(_) if role == Role::Esp => Error::NoEspOnDisk {
                path: disk.to_path_buf(),
                source,
            },
            source => Error::DiskImage {
                path: disk.to_path_buf(),
                source,
            },
        })?;
        Ok(Part {
            io: PartitionIo::new(f, off, len),
            path: format!("{shown} ({})", role.name()),
        })
    }

    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.io.len()
    }

    /// True for an empty partition.
    pub fn is_empty(&self) -> bool {
        self.io.is_empty()
    }

    /// What errors call it: the device path, or `disk.img (stele-root-b)`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The open file (the partition's device, or the whole disk image).
    pub fn file(&self) -> &File {
        self.io.get_ref()
    }
}

impl Read for Part {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.io.read(buf)
    }
}

impl Write for Part {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.io.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.io.flush()
    }
}

impl Seek for Part {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.io.seek(to)
    }
}

impl Storage for Part {
    fn sync(&mut self) -> io::Result<()> {
        self.io.sync()
    }
}

/// Where the target is.
#[derive(Debug)]
pub enum Place {
    /// The running device: what the boot published.
    Device(Box<RunDir>),
    /// A disk image on a host (`--disk`).
    Disk(PathBuf),
}

/// What the target trusts, apart from its state: the keyring and product, the slot running
/// (booted, or booting next on a disk image) with its verified rollback index, and the
/// floors kept outside the state.
#[derive(Debug, Default)]
pub struct Trusted {
    keyring: Option<Keyring>,
    product: Option<String>,
    running: Option<(Slot, u64)>,
    floors: Floors,
}

impl Trusted {
    /// The [`Trust`] of an install or plan; a disk image opened without keys has none.
    pub fn trust(&self) -> Result<Trust<'_>> {
        Ok(Trust {
            keyring: self.keyring.as_ref().ok_or(Error::NoKeys)?,
            product: self.product.as_deref(),
            running: self.running,
            floors: self.floors,
        })
    }

    /// The keyring, when there is one.
    pub fn keyring(&self) -> Option<&Keyring> {
        self.keyring.as_ref()
    }

    /// The floors kept outside the state ([`Target::load_floors`]).
    pub fn floors(&self) -> Floors {
        self.floors
    }
}

/// The slot an install writes, opened read-write and locked for the install.
#[derive(Debug)]
pub struct InstallSlot {
    pub slot: Slot,
    pub part: Part,
    /// The boot state it was chosen from (read under the state lock).
    pub state: BootState,
    /// The slot partition's lock (the device); a disk image is locked as a whole.
    _lock: Option<Flock<File>>,
}

impl InstallSlot {
    /// An install's outcome, its failure naming the slot and partition on the device
    /// (`installing into slot b (/dev/vda4): ...`); a disk image's errors already name
    /// the image.
    pub fn named<T>(&self, done: Result<T>, on_device: bool) -> Result<T> {
        done.map_err(|e| {
            if on_device {
                Error::Installing {
                    slot: self.slot,
                    path: self.part.path().to_string(),
                    source: Box::new(e),
                }
            } else {
                e
            }
        })
    }
}

/// An opened install target.
#[derive(Debug)]
pub struct Target {
    pub place: Place,
    pub trusted: Trusted,
    pub state: StateFile<Part>,
    /// The disk image's lock, held while a target that writes is open.
    _disk_lock: Option<Flock<File>>,
    /// How a host fetches a URL (the device runs its fetch client instead).
    pub http: Option<HttpOpener>,
}

/// Opens an HTTP(S) range source for a URL with a request timeout: the host CLI's
/// in-process client (stele-fetch), which the device crate does not link.
pub type HttpOpener = fn(&str, std::time::Duration) -> Box<dyn stele_engine::delta::RangeSource>;

impl Target {
    /// The running device, from what the boot published in `run_dir`: its keyring, product
    /// and floors (the booted slot's verified index and the TPM's are read by
    /// [`Target::with_floors`]), its state partition (read-write with `write`).
    pub fn device(run_dir: &Path, write: bool) -> Result<Target> {
        let dev = RunDir::read(run_dir)?;
        let state_path = dev.state_path().to_string();
        let part = Part::whole(&state_path, write)?;
        let lock_file = part
            .file()
            .try_clone()
            .map_err(|e| Error::io("duplicate", &state_path, e))?;
        let trusted = Trusted {
            keyring: Some(dev.keyring.clone()),
            product: dev.config.name.clone(),
            running: None,
            floors: Floors::default(),
        };
        Ok(Target {
            place: Place::Device(Box::new(dev)),
            trusted,
            state: StateFile::locking(part, state_path, lock_file),
            _disk_lock: None,
            http: None,
        })
    }

    /// A disk image made by `stele disk create`, trusting `keyring` (none: nothing can be
    /// installed or planned, status shows the slots unverified) and bound to `product`
    /// (none: the product of the slot the disk boots next, when that image verifies).
    /// With `write` the image is locked as a whole, without waiting: a second command
    /// that writes the same image is refused ([`Error::DiskBusy`]).
    pub fn disk(
        path: &Path,
        keyring: Option<Keyring>,
        product: Option<String>,
        write: bool,
    ) -> Result<Target> {
        let shown = path.display().to_string();
        let part = Part::window(path, Role::State, write)?;
        let disk_lock = if write {
            let lock = open::try_lock(part.file(), &shown)?.ok_or_else(|| Error::DiskBusy {
                path: shown.clone(),
            })?;
            Some(lock)
        } else {
            None
        };
        let mut t = Target {
            place: Place::Disk(path.to_path_buf()),
            trusted: Trusted {
                keyring,
                product,
                running: None,
                floors: Floors::default(),
            },
            state: StateFile::new(part, shown),
            _disk_lock: disk_lock,
            http: None,
        };
        // What the disk boots next, verified: the floor its index sets, its product.
        if t.trusted.keyring.is_some() {
            let st = t.state.load()?;
            if let Some((s, index, name)) = t.next_verified(&st) {
                t.trusted.running = Some((s, index));
                t.trusted.product.get_or_insert(name);
            }
        }
        Ok(t)
    }

    /// Reads the floors kept outside the state: on the device the TPM counter's and the
    /// initramfs minimum (a disk image on a build host has neither).
    pub fn load_floors(&mut self) -> Result<()> {
        if let Place::Device(dev) = &self.place {
            let mut tpm = rollback::open_counter(&dev.config)?;
            self.trusted.floors = rollback::floors(0, tpm.counter(), &dev.config)?;
        }
        Ok(())
    }

    /// Reads everything an install or plan is checked against: [`Target::load_floors`],
    /// and on the device the booted slot with its verified rollback index
    /// (`manifest.toml`; on a disk image the next slot's was read at open).
    pub fn load_trust(&mut self) -> Result<()> {
        if let Place::Device(dev) = &self.place {
            self.trusted.running = Some((dev.booted, dev.booted_rollback_index()?));
        }
        self.load_floors()
    }

    /// The run directory, on the device.
    pub fn run_dir(&self) -> Option<&RunDir> {
        match &self.place {
            Place::Device(d) => Some(d),
            Place::Disk(_) => None,
        }
    }

    /// The booted slot (the device only).
    pub fn booted(&self) -> Option<Slot> {
        self.run_dir().map(|d| d.booted)
    }

    /// True on the running device.
    pub fn on_device(&self) -> bool {
        self.run_dir().is_some()
    }

    /// The partition of slot `s`.
    pub fn slot(&self, s: Slot, write: bool) -> Result<Part> {
        match &self.place {
            Place::Device(dev) => Part::whole(dev.slot_path(s)?, write),
            Place::Disk(p) => Part::window(p, Role::slot(s), write),
        }
    }

    /// The EFI system partition, read-write: on the device opened exclusively (refused
    /// while it is mounted).
    pub fn esp(&self) -> Result<Part> {
        match &self.place {
            Place::Device(dev) => {
                let path = dev
                    .devices
                    .get(Role::Esp)
                    .ok_or_else(|| Error::NoEsp {
                        devices: dev.dir.join(DEVICES),
                    })?
                    .to_string();
                let mut f = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(nix::libc::O_EXCL)
                    .open(&path)
                    .map_err(|e| match e.raw_os_error() {
                        Some(nix::libc::EBUSY) => Error::EspBusy { path: path.clone() },
                        _ => Error::io("open", &path, e),
                    })?;
                let len = open::size(&mut f, &path)?;
                Ok(Part {
                    io: PartitionIo::new(f, 0, len),
                    path,
                })
            }
            Place::Disk(p) => Part::window(p, Role::Esp, true),
        }
    }

    /// The slot an install writes ([`plan`]: the slot not booted on the device,
    /// the one the state would not boot next on a disk image), read under the state lock,
    /// opened read-write and locked: a second install on the device is refused
    /// ([`Error::SlotBusy`]).
    pub fn install_slot(&mut self) -> Result<InstallSlot> {
        let booted = self.booted();
        let st = self.state.locked(StateFile::load)?;
        let slot = plan(&st, booted)?;
        let part = self.slot(slot, true)?;
        let lock = match self.place {
            Place::Device(_) => Some(open::try_lock(part.file(), part.path())?.ok_or_else(
                || Error::SlotBusy {
                    path: part.path().to_string(),
                },
            )?),
            Place::Disk(_) => None,
        };
        Ok(InstallSlot {
            slot,
            part,
            state: st,
            _lock: lock,
        })
    }

    /// The slot a delta starts from, read-only: the booted slot on the device, the slot the
    /// state boots next on a disk image (none when nothing is bootable).
    pub fn base(&self, st: &BootState) -> Result<Option<(Slot, Part)>> {
        let slot = match self.booted() {
            Some(b) => Some(b),
            None => st.choose(),
        };
        slot.map(|s| Ok((s, self.slot(s, false)?))).transpose()
    }

    /// Both slots, checked against the keyring (without one, all but the signatures).
    pub fn images(&self) -> [Image; 2] {
        [Slot::A, Slot::B].map(|s| match self.slot(s, false) {
            Ok(mut p) => {
                let len = p.len();
                inspect_slot(&mut p, len, self.trusted.keyring())
            }
            Err(_) if matches!(self.place, Place::Disk(_)) => Image::Missing,
            Err(Error::NoSlotPartition { .. }) => Image::Missing,
            Err(e) => Image::Invalid(e.to_string()),
        })
    }

    /// What the disk boots next and verifies: the slot, its rollback index and product.
    fn next_verified(&self, st: &BootState) -> Option<(Slot, u64, String)> {
        let s = st.choose()?;
        let mut p = self.slot(s, false).ok()?;
        let len = p.len();
        match inspect_slot(&mut p, len, self.trusted.keyring()) {
            Image::Valid {
                name,
                rollback_index,
                ..
            } => Some((s, rollback_index, name)),
            _ => None,
        }
    }
}

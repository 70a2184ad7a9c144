//! The rollback floor: the state's, the TPM counter's (boot.toml `rollback_storage`) and
//! the initramfs minimum (`min_rollback_index`), combined as their maximum ([`Floors`]);
//! and mark-good, which raises both the state's and the TPM's (docs/BOOT.md "With a TPM").

use std::fmt;
use std::fs::File;

use stele_tpm::counter::{Opened, RollbackCounter};
use stele_tpm::transport::{self, Channel, Transport};
use stele_tpm::Tpm;
use stele_verifier::config::{BootConfig, RollbackStorage};
use stele_verifier::state::Slot;

use crate::runtime::open::Storage;
use crate::runtime::state_file::StateFile;
use crate::{Error, Result};

/// The TPM counter on the machine's TPM device.
pub type DeviceCounter = RollbackCounter<Channel<File>>;

/// The floors of one decision.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Floors {
    /// The boot state's `rollback_floor`.
    pub state: u64,
    /// For an install: the running (or, on a disk image, next) slot's verified
    /// rollback_index when that slot is good (its floor once marked good; a fresh disk, or
    /// one made by an older stele, may not have it in the state yet).
    pub running: Option<u64>,
    /// The TPM counter's floor, when a TPM is used.
    pub tpm: Option<u64>,
    /// boot.toml `min_rollback_index`.
    pub initramfs: u64,
}

impl Floors {
    /// The floor that applies: the highest of the three. Pure.
    pub fn effective(&self) -> u64 {
        self.state
            .max(self.running.unwrap_or(0))
            .max(self.tpm.unwrap_or(0))
            .max(self.initramfs)
    }
}

impl Floors {
    /// `state 0, tpm 2, initramfs 0` (`tpm none` without a TPM; `, running slot N`
    /// after the state's for an install whose running slot is good). Pure.
    pub fn sources(&self) -> String {
        let tpm = self.tpm.map_or("none".to_string(), |t| t.to_string());
        let running = self
            .running
            .map_or(String::new(), |r| format!(", running slot {r}"));
        format!(
            "state {}{running}, tpm {tpm}, initramfs {}",
            self.state, self.initramfs
        )
    }
}

/// `2 (state 0, tpm 2, initramfs 0)`: the effective floor, then where it comes from.
impl fmt::Display for Floors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.effective(), self.sources())
    }
}

/// A rollback refusal says which floors made it: `e` wrapped in [`Error::Floors`] when
/// its cause is the verifier's rollback check; any other error as it is. Pure.
pub fn name_floors(e: Error, floors: Floors) -> Error {
    let rollback = |s: &stele_verifier::Error| matches!(s, stele_verifier::Error::Rollback { .. });
    let from_rollback = match &e {
        Error::Bundle { source, .. } | Error::Written { source, .. } => rollback(source),
        Error::Fetch {
            source: stele_engine::delta::DeltaError::Verify(source),
            ..
        } => rollback(source),
        _ => false,
    };
    if from_rollback {
        Error::Floors {
            floors,
            source: Box::new(e),
        }
    } else {
        e
    }
}

/// What [`open_counter`] found.
#[derive(Debug)]
pub enum TpmUse<T> {
    /// The counter, found or defined now.
    Counter(RollbackCounter<T>, Opened),
    /// `tpm-if-present` on a machine without a TPM: the state floor alone.
    Absent,
    /// `rollback_storage = "state"` (the TPM, if any, is still there to measure into).
    NotUsed(Option<Tpm<T>>),
}

impl<T: Transport> TpmUse<T> {
    /// The counter, if one is used.
    pub fn counter(&mut self) -> Option<&mut RollbackCounter<T>> {
        match self {
            TpmUse::Counter(c, _) => Some(c),
            TpmUse::Absent | TpmUse::NotUsed(_) => None,
        }
    }

    /// The TPM, if the machine has one (for measured boot).
    pub fn tpm(&mut self) -> Option<&mut Tpm<T>> {
        match self {
            TpmUse::Counter(c, _) => Some(c.tpm()),
            TpmUse::NotUsed(t) => t.as_mut(),
            TpmUse::Absent => None,
        }
    }
}

/// The counter that `storage` asks for, given the TPM `device` found (`None`: no TPM):
/// `tpm` without one is [`stele_tpm::Error::NoDevice`].
pub fn use_tpm<T: Transport>(storage: RollbackStorage, device: Option<T>) -> Result<TpmUse<T>> {
    match (storage, device) {
        (RollbackStorage::State, d) => Ok(TpmUse::NotUsed(d.map(Tpm::new))),
        (RollbackStorage::TpmIfPresent, None) => Ok(TpmUse::Absent),
        (RollbackStorage::Tpm, None) => Err(stele_tpm::Error::NoDevice.into()),
        (_, Some(d)) => {
            let (c, opened) = RollbackCounter::open(Tpm::new(d))?;
            Ok(TpmUse::Counter(c, opened))
        }
    }
}

/// [`use_tpm`] on this machine's TPM device (/dev/tpmrm0, else /dev/tpm0).
pub fn open_counter(cfg: &BootConfig) -> Result<TpmUse<Channel<File>>> {
    use_tpm(cfg.rollback_storage, transport::open_device()?)
}

/// The floors now: the state's `state_floor`, the counter's, the initramfs minimum.
pub fn floors<T: Transport>(
    state_floor: u64,
    counter: Option<&mut RollbackCounter<T>>,
    cfg: &BootConfig,
) -> Result<Floors> {
    Ok(Floors {
        state: state_floor,
        running: None,
        tpm: counter.map(|c| c.floor()).transpose()?,
        initramfs: cfg.min_rollback_index,
    })
}

/// What [`mark_good`] changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarkedGood {
    /// The state was written (false: it already said good with this floor).
    pub state_written: bool,
    /// The TPM floor before and after, when a TPM is used.
    pub tpm: Option<(u64, u64)>,
}

/// Marks `slot` good with the rollback index verified at boot: first checks that the TPM
/// floor can be raised to it (refused before anything is written), then the state
/// (successful, floor raised), then the TPM counter. A power cut between the two leaves
/// the TPM behind the state; the next mark-good (every boot of a good slot) raises it.
pub fn mark_good<D: Storage, T: Transport>(
    state: &mut StateFile<D>,
    mut counter: Option<&mut RollbackCounter<T>>,
    slot: Slot,
    index: u64,
) -> Result<MarkedGood> {
    if let Some(c) = counter.as_deref_mut() {
        c.check_raise(index)?;
    }
    let state_written = state.mark_good(slot, index)?;
    let tpm = counter.map(|c| c.raise(index)).transpose()?;
    Ok(MarkedGood { state_written, tpm })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_floor_is_the_highest() {
        let f = Floors {
            state: 0,
            running: None,
            tpm: Some(2),
            initramfs: 1,
        };
        assert_eq!(f.effective(), 2);
        assert_eq!(f.to_string(), "2 (state 0, tpm 2, initramfs 1)");
        let f = Floors {
            state: 5,
            running: None,
            tpm: None,
            initramfs: 1,
        };
        assert_eq!(f.to_string(), "5 (state 5, tpm none, initramfs 1)");
        // An install whose running slot is good: its index counts, and is named.
        let f = Floors {
            state: 0,
            running: Some(4),
            tpm: Some(2),
            initramfs: 1,
        };
        assert_eq!(
            f.to_string(),
            "4 (state 0, running slot 4, tpm 2, initramfs 1)"
        );
        let f = Floors {
            state: 5,
            running: Some(7),
            tpm: Some(3),
            initramfs: 9,
        };
        assert_eq!(f.effective(), 9);
    }

    #[test]
    fn a_rollback_refusal_names_the_floors() {
        let floors = Floors {
            state: 0,
            running: None,
            tpm: Some(2),
            initramfs: 0,
        };
        let e = name_floors(
            Error::Bundle {
                bundle: "v1.img".into(),
                source: stele_verifier::Error::Rollback { index: 1, floor: 2 },
            },
            floors,
        );
        assert_eq!(
            e.to_string(),
            "v1.img: rollback refused: image rollback_index 1 is below the rollback floor 2 (state 0, tpm 2, initramfs 0)"
        );
        assert_eq!(
            stele_verifier::exit::Report::exit(&e),
            stele_verifier::exit::Exit::Refused
        );
        // Anything else is left alone.
        let other = Error::BundleIsDirectory { path: "d".into() };
        assert!(matches!(
            name_floors(other, floors),
            Error::BundleIsDirectory { .. }
        ));
    }

    /// A transport that must never be used.
    #[derive(Debug)]
    struct Unused;
    impl Transport for Unused {
        fn transact(&mut self, _: &[u8]) -> stele_tpm::Result<Vec<u8>> {
            unreachable!("no command may be sent")
        }
    }

    #[test]
    fn storage_modes_without_a_tpm() {
        assert!(matches!(
            use_tpm::<Unused>(RollbackStorage::TpmIfPresent, None).unwrap(),
            TpmUse::Absent
        ));
        let mut not_used = use_tpm(RollbackStorage::State, Some(Unused)).unwrap();
        assert!(matches!(not_used, TpmUse::NotUsed(Some(_))));
        assert!(not_used.counter().is_none() && not_used.tpm().is_some());
        let e = use_tpm::<Unused>(RollbackStorage::Tpm, None).unwrap_err();
        assert!(
            matches!(e, crate::Error::Tpm(stele_tpm::Error::NoDevice)),
            "{e}"
        );
        assert_eq!(
            stele_verifier::exit::Report::exit(&e),
            stele_verifier::exit::Exit::Environment
        );
        assert!(
            e.to_string()
                .starts_with("no TPM: neither /dev/tpmrm0 nor /dev/tpm0 exists"),
            "{e}"
        );
    }
}

//! The boot state device and its protocol, in one type: open (read-only or read-write),
//! lock (flock: blocking for `stele update`, a non-blocking try for PID 1's mark-good;
//! held only around a read and the write that depends on it, never while a bundle is
//! read), load (the newest valid copy), store (the other copy, then fdatasync), unlock
//! (or drop). Used by the boot, the supervisor and every update command, on a partition
//! or on a window of a disk image (which its user locks as a whole).

use std::fs::File;

use nix::fcntl::{Flock, FlockArg};
use stele_engine::Written;
use stele_verifier::data_reset;
use stele_verifier::recorder::{ring, Event};
use stele_verifier::state::{self, BootState, Slot};

use crate::runtime::open::{self, Storage};
use crate::{Error, Result};

/// The boot state on a device `D`.
#[derive(Debug)]
pub struct StateFile<D> {
    dev: D,
    origin: String,
    /// The copy that holds the state last loaded or stored (`None`: not known yet).
    copy: Option<usize>,
    /// The open file whose flock(2) is the state lock: the state partition's own file on
    /// the device; `None` for a window of a disk image (its user locks the whole image) or
    /// memory.
    lock_file: Option<File>,
    /// Held while locked: a duplicate of `lock_file`, so the lock goes with the open file
    /// and dropping it unlocks.
    lock: Option<Flock<File>>,
}

impl<D: Storage> StateFile<D> {
    /// The state on `dev`; `origin` names it in errors (its path).
    pub fn new(dev: D, origin: impl Into<String>) -> Self {
        StateFile {
            dev,
            origin: origin.into(),
            copy: None,
            lock_file: None,
            lock: None,
        }
    }

    /// The state on `dev`, locked through `lock_file` (the partition's open file).
    pub fn locking(dev: D, origin: impl Into<String>, lock_file: File) -> Self {
        StateFile {
            lock_file: Some(lock_file),
            ..StateFile::new(dev, origin)
        }
    }

    /// The path errors name.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The device.
    pub fn get_ref(&self) -> &D {
        &self.dev
    }

    /// Reads the valid copy with the highest sequence.
    pub fn load(&mut self) -> Result<BootState> {
        let (st, copy) = state::load(&mut self.dev).map_err(|source| Error::StateLoad {
            origin: self.origin.clone(),
            source,
        })?;
        self.copy = Some(copy);
        Ok(st)
    }

    /// Writes `st` into the copy that does not hold the current state (the last one loaded
    /// or stored; read from the device if none was yet), with the next sequence, and
    /// flushes it. `st.sequence` then is what is on the device.
    pub fn store(&mut self, st: &mut BootState) -> Result<()> {
        let mut copy = match self.copy {
            Some(c) => c,
            None => {
                let current = self.load()?;
                st.sequence = current.sequence;
                self.copy.unwrap_or(0)
            }
        };
        stele_engine::state_write::store(&mut self.dev, st, &mut copy).map_err(|source| {
            Error::StateStore {
                origin: self.origin.clone(),
                source,
            }
        })?;
        self.copy = Some(copy);
        Ok(())
    }

    /// Writes a fresh state area holding `st` ([`state::initialize`]: copy 0, the other
    /// cleared) and flushes it. For a state with no valid copy left.
    pub fn initialize(&mut self, st: &BootState) -> Result<()> {
        stele_engine::state_write::initialize(&mut self.dev, st).map_err(|source| {
            Error::StateStore {
                origin: self.origin.clone(),
                source,
            }
        })?;
        self.copy = Some(0);
        Ok(())
    }

    /// Marks `slot` good: successful, tries 0, the rollback floor raised to
    /// `rollback_index`. Returns false when the state already said so (nothing written).
    pub fn mark_good(&mut self, slot: Slot, rollback_index: u64) -> Result<bool> {
        let mut st = self.load()?;
        let before = st;
        st.mark_good(slot, rollback_index);
        if st == before {
            return Ok(false);
        }
        self.store(&mut st)?;
        Ok(true)
    }

    /// Finishes an install ([`Written::commit`]): flips the state to `target` (new slot
    /// first, on trial), then writes the slot's footer; both flushed.
    pub fn commit<S: Storage>(
        &mut self,
        written: Written,
        slot: &mut S,
        slot_len: u64,
        target: Slot,
    ) -> Result<BootState> {
        // The commit loads and stores on its own: the copy is no longer known here.
        self.copy = None;
        written
            .commit(slot, slot_len, &mut self.dev, target)
            .map_err(|source| Error::Commit { source })
    }
}

impl<D: Storage> StateFile<D> {
    /// Appends `e` to the flight recorder between the state copies
    /// (`stele_engine::recorder_write`: its own block, flushed; never a state copy) with
    /// the next sequence, under the state lock (taken here unless it is held already, so
    /// two writers never take one sequence). `None`: the partition's layout has no ring
    /// (an old 1 MiB state partition), nothing written.
    pub fn record(&mut self, e: &Event) -> Result<Option<u64>> {
        let held = self.lock.is_some();
        if !held {
            self.lock()?;
        }
        let r = stele_engine::recorder_write::append(&mut self.dev, e).map_err(|source| {
            Error::RecorderWrite {
                origin: self.origin.clone(),
                source,
            }
        });
        if !held {
            self.unlock();
        }
        r
    }

    /// Writes a data reset request (`stele_engine::reset_write`: its own block, flushed;
    /// never a state copy or the ring), under the state lock.
    pub fn request_reset(&mut self, r: &data_reset::Request) -> Result<()> {
        let origin = self.origin.clone();
        self.locked(|s| {
            stele_engine::reset_write::request(&mut s.dev, r)
                .map_err(|source| Error::ResetRequest { origin, source })
        })
    }

    /// What the data reset request block holds.
    pub fn reset_request(&mut self) -> Result<data_reset::Found> {
        data_reset::read(&mut self.dev).map_err(|e| Error::ResetRequest {
            origin: self.origin.clone(),
            source: stele_engine::reset_write::RequestError::Io(e),
        })
    }

    /// Clears the data reset request (all zero, flushed), under the state lock.
    pub fn clear_reset(&mut self) -> Result<()> {
        let origin = self.origin.clone();
        self.locked(|s| {
            stele_engine::reset_write::clear(&mut s.dev)
                .map_err(|source| Error::ResetRequest { origin, source })
        })
    }

    /// The flight recorder's events, oldest first; `None` when the layout has no ring.
    pub fn events(&mut self) -> Result<Option<ring::Ring>> {
        ring::read(&mut self.dev).map_err(|source| Error::RecorderRead {
            origin: self.origin.clone(),
            source,
        })
    }
}

impl StateFile<File> {
    /// Opens the state partition at `path`, read-write with `write`.
    pub fn open(path: &str, write: bool) -> Result<Self> {
        let f = open::open(path, write)?;
        let lock_file = f.try_clone().map_err(|e| Error::io("duplicate", path, e))?;
        Ok(StateFile::locking(f, path, lock_file))
    }
}

impl<D: Storage> StateFile<D> {
    /// Takes the state lock, waiting for another holder (`stele update`, PID 1) to finish.
    /// A device that cannot be locked ([`Device::lock_handle`]) needs no lock.
    pub fn lock(&mut self) -> Result<()> {
        self.take_lock(FlockArg::LockExclusive).map(|_| ())
    }

    /// Takes the state lock if nobody holds it; false when someone does (PID 1 then tries
    /// again later instead of waiting).
    pub fn try_lock(&mut self) -> Result<bool> {
        self.take_lock(FlockArg::LockExclusiveNonblock)
    }

    /// Releases the lock (keeping the file open). Dropping the state file does too.
    pub fn unlock(&mut self) {
        self.lock = None;
    }

    /// Runs `f` with the state locked, and unlocks again.
    pub fn locked<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.lock()?;
        let r = f(self);
        self.unlock();
        r
    }

    fn take_lock(&mut self, arg: FlockArg) -> Result<bool> {
        if self.lock.is_some() {
            return Ok(true);
        }
        let lock_err = |errno| Error::Lock {
            path: self.origin.clone(),
            errno,
        };
        let Some(file) = &self.lock_file else {
            return Ok(true);
        };
        let dup = file
            .try_clone()
            .map_err(|e| Error::io("duplicate", self.origin.clone(), e))?;
        match Flock::lock(dup, arg) {
            Ok(l) => {
                self.lock = Some(l);
                Ok(true)
            }
            Err((_, nix::errno::Errno::EWOULDBLOCK)) if arg == FlockArg::LockExclusiveNonblock => {
                Ok(false)
            }
            Err((_, errno)) => Err(lock_err(errno)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use stele_verifier::testutil::state as st;

    fn fresh() -> StateFile<Cursor<Vec<u8>>> {
        let mut c = Cursor::new(vec![0u8; 8192]);
        state::initialize(&mut c, &BootState::initial(true)).unwrap();
        StateFile::new(c, "mem")
    }

    #[test]
    fn store_then_load_round_trips_through_both_copies() {
        let mut f = fresh();
        let mut s = f.load().unwrap();
        assert_eq!(s, BootState::initial(true));
        for i in 0..5u8 {
            s.slot_mut(Slot::B).tries_remaining = i;
            f.store(&mut s).unwrap();
            assert_eq!(s.sequence, u64::from(i) + 1);
            assert_eq!(f.load().unwrap(), s);
            // Each store wrote the other copy: the previous state is still on the device.
            let (_, copy) = state::load(&mut f.dev.clone()).unwrap();
            assert_eq!(copy, usize::from((i + 1) % 2));
        }
        // A store without a load first finds the current copy itself.
        let mut g = StateFile::new(f.dev.clone(), "mem");
        let mut t = st((1, 0, true), (2, 3, false));
        g.store(&mut t).unwrap();
        assert_eq!(t.sequence, s.sequence + 1);
        assert_eq!(g.load().unwrap(), t);
    }

    #[test]
    fn mark_good_writes_only_a_change() {
        let mut f = fresh();
        let mut s = f.load().unwrap();
        s.activate_new(Slot::B, 3);
        f.store(&mut s).unwrap();
        let before = f.get_ref().get_ref().clone();
        assert!(f.mark_good(Slot::B, 7).unwrap());
        let after = f.load().unwrap();
        assert!(after.slot(Slot::B).successful);
        assert_eq!(after.rollback_floor, 7);
        assert_ne!(f.get_ref().get_ref(), &before);
        let again = f.get_ref().get_ref().clone();
        assert!(!f.mark_good(Slot::B, 7).unwrap());
        assert_eq!(f.get_ref().get_ref(), &again, "nothing written");
    }

    #[test]
    fn events_are_recorded_beside_the_state_and_not_on_an_old_partition() {
        use stele_verifier::recorder::{Kind, Origin};
        let mut c = Cursor::new(vec![0u8; usize::try_from(state::PARTITION_SIZE).unwrap()]);
        state::initialize(&mut c, &BootState::initial(true)).unwrap();
        let mut f = StateFile::new(c, "mem");
        let e = Event::new(Origin::Update, Kind::InstallStarted);
        assert_eq!(f.record(&e).unwrap(), Some(0));
        assert_eq!(f.record(&e).unwrap(), Some(1));
        assert_eq!(f.events().unwrap().unwrap().events.len(), 2);
        assert_eq!(f.load().unwrap(), BootState::initial(true));
        let mut old = fresh();
        assert_eq!(old.record(&e).unwrap(), None);
        assert_eq!(old.events().unwrap(), None);
    }

    #[test]
    fn errors_name_the_device() {
        let mut f = StateFile::new(Cursor::new(vec![0u8; 8192]), "/dev/vda1");
        let e = f.load().unwrap_err();
        assert!(matches!(e, Error::StateLoad { .. }));
        assert!(e.to_string().starts_with("/dev/vda1: boot state"), "{e}");
        // Zeros hold no valid copy: the boot's one question of a state error.
        assert!(e.is_no_valid_state());
        let other = Error::NoDataPartition;
        assert!(!other.is_no_valid_state());
    }

    /// Two opens of the state device exclude each other; the non-blocking side (PID 1) is
    /// told "busy" instead of waiting, and gets the lock once it is released.
    #[test]
    fn try_lock_fails_while_another_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state");
        let mut c = Cursor::new(vec![0u8; 8192]);
        state::initialize(&mut c, &BootState::initial(true)).unwrap();
        std::fs::write(&p, c.into_inner()).unwrap();
        let path = p.to_str().unwrap();
        let mut updater = StateFile::open(path, true).unwrap();
        let mut pid1 = StateFile::open(path, true).unwrap();
        updater.lock().unwrap();
        assert!(!pid1.try_lock().unwrap());
        // Locked or not, the holder reads and writes as usual.
        assert!(updater.mark_good(Slot::B, 4).unwrap());
        updater.unlock();
        assert!(pid1.try_lock().unwrap());
        assert_eq!(pid1.load().unwrap().rollback_floor, 4);
        assert!(!updater.try_lock().unwrap());
        drop(pid1); // closing releases it
        assert!(updater.try_lock().unwrap());
    }
}

//! Power cuts during an install: every write (sector) of a recorded install is replayed
//! prefix by prefix, whole and torn, and the device must still boot the right content.

#![allow(clippy::cast_possible_truncation)] // test sizes are small

use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};

use super::tests::{blank_slot, commit, install_file, policy, verify_slot, SLOT_LEN};
use super::*;
use stele_verifier::state::{initialize, load};
use stele_verifier::testutil::image;

/// A device that applies writes and records them, split at 512-byte sectors, with the
/// sync points, so that a power cut after any prefix of the writes can be replayed.
/// Every write of every recorded device, in the order they happened: (device, offset, bytes).
pub(crate) type WriteLog = std::rc::Rc<std::cell::RefCell<Vec<(usize, u64, Vec<u8>)>>>;

pub(crate) struct Recorder {
    pub(crate) id: usize,
    pub(crate) dev: Cursor<Vec<u8>>,
    pub(crate) log: WriteLog,
}

impl Read for Recorder {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        self.dev.read(b)
    }
}
impl Seek for Recorder {
    fn seek(&mut self, p: SeekFrom) -> io::Result<u64> {
        self.dev.seek(p)
    }
}
impl Write for Recorder {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let mut at = self.dev.position();
        for piece in b.chunks(512) {
            self.log.borrow_mut().push((self.id, at, piece.to_vec()));
            at += piece.len() as u64;
        }
        self.dev.write(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
/// Every write is recorded in order: a replay of any prefix is what a cut leaves, so
/// flushing adds nothing to record.
impl crate::Storage for Recorder {
    fn sync(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A boot state where both slots are good and b (priority 2) comes before a (priority
/// 1), as every replay starts.
pub(super) fn b_first_state() -> Cursor<Vec<u8>> {
    let mut st = Cursor::new(vec![0u8; 8192]);
    let mut start = BootState::initial(true);
    start.slot_mut(Slot::A).priority = 1;
    start.slot_mut(Slot::B).priority = 2;
    initialize(&mut st, &start).unwrap();
    st
}

/// Copies of slot b (device 1) and the state (device 2) whose writes go into one log.
pub(super) struct Recording {
    pub(crate) log: WriteLog,
    pub(super) b: Recorder,
    pub(super) st: Recorder,
}

impl Recording {
    pub(super) fn new(b: &Cursor<Vec<u8>>, st: &Cursor<Vec<u8>>) -> Self {
        let log = WriteLog::default();
        let recorder = |id, dev: &Cursor<Vec<u8>>| Recorder {
            id,
            dev: dev.clone(),
            log: log.clone(),
        };
        Recording {
            b: recorder(1, b),
            st: recorder(2, st),
            log,
        }
    }

    /// Commits `w` (flip to b, footer) on the recorded devices; every write recorded and
    /// how many of them came before the flip.
    pub(super) fn commit(mut self, w: Written) -> (Vec<(usize, u64, Vec<u8>)>, usize) {
        let flip_at = self.log.borrow().len();
        w.commit(&mut self.b, SLOT_LEN, &mut self.st, Slot::B)
            .unwrap();
        let writes = self.log.borrow().clone();
        (writes, flip_at)
    }
}

/// What stele-init would boot from (slots, state): the chosen slot if it verifies,
/// else the other one; the version booted.
pub(super) fn boot(
    slots: &mut [Cursor<Vec<u8>>; 2],
    state_dev: &mut Cursor<Vec<u8>>,
) -> Option<String> {
    let (mut st, _) = load(state_dev).ok()?;
    for _ in 0..2 {
        let s = st.choose()?;
        let i = if s == Slot::A { 0 } else { 1 };
        match verify_slot(&mut slots[i]) {
            Ok(v) => return Some(v.manifest.version),
            Err(_) => st.mark_unbootable(s),
        }
    }
    None
}

/// Applies the first `cut` writes of `writes` to copies of slot b and the state (the
/// write at `cut` only half when `torn`). Device 1 is slot b, 2 the state.
pub(super) fn replay(
    writes: &[(usize, u64, Vec<u8>)],
    cut: usize,
    torn: bool,
    b: &Cursor<Vec<u8>>,
    st: &Cursor<Vec<u8>>,
) -> (Cursor<Vec<u8>>, Cursor<Vec<u8>>) {
    let (mut b, mut st) = (b.clone(), st.clone());
    for (i, (dev, off, data)) in writes.iter().enumerate().take(cut + usize::from(torn)) {
        let data = if i == cut {
            &data[..data.len() / 2]
        } else {
            &data[..]
        };
        let target = if *dev == 1 { &mut b } else { &mut st };
        let start = *off as usize;
        target.get_mut()[start..start + data.len()].copy_from_slice(data);
    }
    (b, st)
}

/// Replays every prefix of an install's `writes` into slot b (a holds "1.1", b "1.5", the
/// install "2.9"), whole and with the next write torn: the device must always boot one of
/// the three, never the new content before the flip (`flip_at` writes) nor as if good,
/// and the new content once everything is written. `then` gets each cut (the number of
/// writes, torn, slot b as cut). Returns the versions that booted.
pub(super) fn every_prefix_boots(
    writes: &[(usize, u64, Vec<u8>)],
    flip_at: usize,
    a: &Cursor<Vec<u8>>,
    b: &Cursor<Vec<u8>>,
    st: &Cursor<Vec<u8>>,
    mut then: impl FnMut(usize, bool, Cursor<Vec<u8>>),
) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    for cut in 0..=writes.len() {
        for torn in [false, true] {
            if torn && cut == writes.len() {
                continue;
            }
            let (b_cut, mut state) = replay(writes, cut, torn, b, st);
            let mut slots = [a.clone(), b_cut.clone()];
            let booted = boot(&mut slots, &mut state)
                .unwrap_or_else(|| panic!("no bootable slot after {cut} writes (torn: {torn})"));
            // Old b (before its footer is zeroed), a (while b is rewritten and until
            // its new footer is there), new b (at the end).
            assert!(
                ["1.5", "1.1", "2.9"].contains(&booted.as_str()),
                "booted {booted} after {cut} writes"
            );
            if cut <= flip_at {
                assert_ne!(
                    booted, "2.9",
                    "new content booted before the flip ({cut} writes)"
                );
            }
            if booted == "2.9" {
                // New content only ever boots as a trial, never under b's old record.
                let (st, _) = load(&mut state).unwrap();
                assert!(
                    !st.slot(Slot::B).successful,
                    "new content booted as if good after {cut} writes (torn: {torn})"
                );
            }
            if cut == writes.len() {
                assert_eq!(booted, "2.9");
            }
            seen.insert(booted);
            then(cut, torn, b_cut);
        }
    }
    seen
}

/// Power cut at every write (sector) of an install into slot b (copy, flip, footer):
/// the device always boots; never the new content before the flip is on disk, always
/// the new content once everything is. Slot b starts as a good slot first in line (a
/// was booted by preference): its old record must not carry over to the new content.
#[test]
fn power_cut_at_any_write_still_boots() {
    let (old, _) = image(8, 1, 1);
    let (new, _) = image(8, 2, 9);
    let (leftover, _) = image(8, 1, 5);
    let mut a = blank_slot();
    let w = install_stream(
        &mut &old[..],
        &mut a,
        SLOT_LEN,
        &policy(0),
        &mut stele_verifier::progress::Silent,
    )
    .unwrap();
    let _ = commit(w, &mut a);
    let mut b = blank_slot();
    let w = install_stream(
        &mut &leftover[..],
        &mut b,
        SLOT_LEN,
        &policy(0),
        &mut stele_verifier::progress::Silent,
    )
    .unwrap();
    let _ = commit(w, &mut b);
    let st = b_first_state();

    // Record the install of `new` into b: copy, then flip and footer, as they happen.
    let mut rec = Recording::new(&b, &st);
    let w = install_file(&new, &mut rec.b, SLOT_LEN, 0).unwrap();
    let (writes, flip_at) = rec.commit(w);

    let seen = every_prefix_boots(&writes, flip_at, &a, &b, &st, |_, _, _| {});
    assert_eq!(seen.len(), 3, "{seen:?}");
}

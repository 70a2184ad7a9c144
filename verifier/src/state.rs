//! The A/B boot state: two checksummed copies in the `stele-state` partition.
//!
//! Decisions (slot choice, marking) are pure functions on [`BootState`]; only
//! [`load`], [`store`] (and [`store_next`], [`initialize`]) touch the device.
//! Record layout: docs/FORMATS.md, "Boot state".

use std::io::{self, Read, Seek, SeekFrom, Write};

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Size of the state partition region used (both copies).
pub const STATE_AREA: u64 = 8192;
/// Offsets of the two copies.
pub const COPY_OFFSETS: [u64; 2] = [0, 4096];
/// Encoded size of one copy.
pub const RECORD_LEN: usize = 512;
/// Record magic.
pub const STATE_MAGIC: &[u8; 8] = b"STELESTA";
/// Record version written and understood.
pub const STATE_VERSION: u32 = 1;
/// Offset of the checksum in a record.
const CHECKSUM_OFFSET: usize = RECORD_LEN - 32;

/// A slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    A,
    B,
}

/// Per-slot boot record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SlotState {
    /// 0 = never boot; higher boots first.
    pub priority: u8,
    pub tries_remaining: u8,
    pub successful: bool,
}

impl SlotState {
    /// Priority > 0, and successful or with tries left.
    pub fn bootable(&self) -> bool {
        self.priority > 0 && (self.successful || self.tries_remaining > 0)
    }
}

/// The decoded state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootState {
    pub sequence: u64,
    pub rollback_floor: u64,
    pub slots: [SlotState; 2],
}

/// Encodes one record (with checksum).
pub fn encode(state: &BootState) -> [u8; RECORD_LEN] {
    let mut b = [0u8; RECORD_LEN];
    b[0..8].copy_from_slice(STATE_MAGIC);
    b[8..12].copy_from_slice(&STATE_VERSION.to_le_bytes());
    b[16..24].copy_from_slice(&state.sequence.to_le_bytes());
    b[24..32].copy_from_slice(&state.rollback_floor.to_le_bytes());
    for (i, s) in state.slots.iter().enumerate() {
        let at = 32 + 4 * i;
        b[at] = s.priority;
        b[at + 1] = s.tries_remaining;
        b[at + 2] = u8::from(s.successful);
    }
    let sum = Sha256::digest(&b[..CHECKSUM_OFFSET]);
    b[CHECKSUM_OFFSET..].copy_from_slice(&sum);
    b
}

/// Decodes and checks one record (magic, version, checksum, reserved bytes, flags).
pub fn decode(b: &[u8]) -> Result<BootState> {
    if b.len() != RECORD_LEN {
        return Err(Error::Truncated {
            what: "boot state record",
            offset: 0,
            needed: RECORD_LEN as u64,
            available: b.len() as u64,
        });
    }
    if &b[0..8] != STATE_MAGIC {
        return Err(Error::BadMagic {
            what: "boot state",
            found: b[0..8].to_vec(),
        });
    }
    if Sha256::digest(&b[..CHECKSUM_OFFSET]).as_slice() != &b[CHECKSUM_OFFSET..] {
        return Err(Error::invalid(
            "boot state",
            "checksum mismatch (torn or corrupt copy)",
        ));
    }
    let version = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
    if version != STATE_VERSION {
        return Err(Error::UnsupportedVersion {
            what: "boot state",
            found: u64::from(version),
            supported: u64::from(STATE_VERSION),
        });
    }
    let reserved_zero = b[12..16]
        .iter()
        .chain([&b[35], &b[39]])
        .chain(&b[40..CHECKSUM_OFFSET])
        .all(|&x| x == 0);
    if !reserved_zero {
        return Err(Error::invalid(
            "boot state",
            "reserved bytes are not zero (written by a newer stele?)",
        ));
    }
    let u64_at = |at: usize| {
        let mut v = [0u8; 8];
        v.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(v)
    };
    let mut slots = [SlotState::default(); 2];
    for (i, s) in slots.iter_mut().enumerate() {
        let at = 32 + 4 * i;
        s.priority = b[at];
        s.tries_remaining = b[at + 1];
        s.successful = match b[at + 2] {
            0 => false,
            1 => true,
            other => {
                return Err(Error::invalid(
                    "boot state",
                    format!("successful flag of slot {i} is {other}, not 0 or 1"),
                ))
            }
        };
    }
    Ok(BootState {
        sequence: u64_at(16),
        rollback_floor: u64_at(24),
        slots,
    })
}

/// Reads one copy; `None` if it is short, blank, torn or otherwise invalid.
fn read_copy<D: Read + Seek>(dev: &mut D, copy: usize) -> Result<Option<BootState>> {
    dev.seek(SeekFrom::Start(COPY_OFFSETS[copy]))
        .map_err(|e| Error::io("boot state", e))?;
    let mut b = [0u8; RECORD_LEN];
    match dev.read_exact(&mut b) {
        Ok(()) => Ok(decode(&b).ok()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(Error::io("boot state", e)),
    }
}

/// Reads both copies and returns the valid one with the highest sequence, and which copy it was.
/// On equal sequences copy 0 wins. I/O errors other than a short device are returned.
pub fn load<D: Read + Seek>(dev: &mut D) -> Result<(BootState, usize)> {
    let copies = [read_copy(dev, 0)?, read_copy(dev, 1)?];
    match copies {
        [Some(a), Some(b)] if b.sequence > a.sequence => Ok((b, 1)),
        [Some(a), _] => Ok((a, 0)),
        [None, Some(b)] => Ok((b, 1)),
        [None, None] => Err(Error::NoValidState),
    }
}

/// Writes `state` (sequence = previous + 1) into the copy that is NOT `current_copy`.
/// The caller flushes (fdatasync) afterwards.
///
/// `state.sequence` is the sequence of the copy loaded from `current_copy`; what lands on
/// disk is `state` with `sequence + 1` in copy `1 - current_copy`. The caller's `state` is
/// not changed: to store again, pass `sequence + 1` and the other copy, or use
/// [`store_next`], which does that bookkeeping.
pub fn store<D: Write + Seek>(dev: &mut D, state: &BootState, current_copy: usize) -> Result<()> {
    if current_copy > 1 {
        return Err(Error::invalid(
            "boot state copy",
            format!("{current_copy}, must be 0 or 1"),
        ));
    }
    let sequence = state.sequence.checked_add(1).ok_or_else(|| {
        Error::invalid(
            "boot state sequence",
            "at its maximum; reinitialize the state",
        )
    })?;
    let record = encode(&BootState { sequence, ..*state });
    dev.seek(SeekFrom::Start(COPY_OFFSETS[1 - current_copy]))
        .map_err(|e| Error::io("boot state", e))?;
    dev.write_all(&record)
        .map_err(|e| Error::io("boot state", e))?;
    Ok(())
}

/// [`store`], then updates `state.sequence` and `current_copy` to what is now on disk.
pub fn store_next<D: Write + Seek>(
    dev: &mut D,
    state: &mut BootState,
    current_copy: &mut usize,
) -> Result<()> {
    store(dev, state, *current_copy)?;
    state.sequence += 1;
    *current_copy = 1 - *current_copy;
    Ok(())
}

/// Writes a fresh state area: `state` as copy 0 (with its own sequence) and copy 1 zeroed,
/// so that nothing left on a reused partition can win. For `stele disk create`.
pub fn initialize<D: Write + Seek>(dev: &mut D, state: &BootState) -> Result<()> {
    let mut area = [0u8; 2 * 4096];
    area[..RECORD_LEN].copy_from_slice(&encode(state));
    dev.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io("boot state", e))?;
    dev.write_all(&area).map_err(|e| Error::io("boot state", e))
}

impl Slot {
    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
    /// `"a"` or `"b"`.
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }
    fn index(self) -> usize {
        match self {
            Slot::A => 0,
            Slot::B => 1,
        }
    }
}

impl BootState {
    /// A fresh state: slot a bootable and good (priority 2), slot b bootable only if present
    /// (priority 1, good) — what `stele disk create` writes. Sequence and floor are 0.
    pub fn initial(b_present: bool) -> Self {
        let good = |priority| SlotState {
            priority,
            tries_remaining: 0,
            successful: true,
        };
        BootState {
            sequence: 0,
            rollback_floor: 0,
            slots: [
                good(2),
                if b_present {
                    good(1)
                } else {
                    SlotState::default()
                },
            ],
        }
    }
    pub fn slot(&self, s: Slot) -> &SlotState {
        &self.slots[s.index()]
    }
    pub fn slot_mut(&mut self, s: Slot) -> &mut SlotState {
        &mut self.slots[s.index()]
    }
    /// The bootable slot (priority > 0 and (successful or tries > 0)) with the highest
    /// priority; a wins ties. Pure.
    pub fn choose(&self) -> Option<Slot> {
        let (a, b) = (self.slot(Slot::A), self.slot(Slot::B));
        match (a.bootable(), b.bootable()) {
            (true, true) if b.priority > a.priority => Some(Slot::B),
            (true, _) => Some(Slot::A),
            (false, true) => Some(Slot::B),
            (false, false) => None,
        }
    }
    /// Before booting `s`: if it is not successful, spend one try. Does not write to disk.
    pub fn begin_try(&mut self, s: Slot) {
        let st = self.slot_mut(s);
        if !st.successful {
            st.tries_remaining = st.tries_remaining.saturating_sub(1);
        }
    }
    /// `s` failed a check: priority 0, tries 0, not successful. Does not write to disk.
    pub fn mark_unbootable(&mut self, s: Slot) {
        *self.slot_mut(s) = SlotState::default();
    }
    /// `s` came up healthy: successful, tries 0, floor raised to `rollback_index` (never
    /// lowered). Does not write to disk.
    pub fn mark_good(&mut self, s: Slot, rollback_index: u64) {
        let st = self.slot_mut(s);
        st.successful = true;
        st.tries_remaining = 0;
        self.rollback_floor = self.rollback_floor.max(rollback_index);
    }
    /// A new image was installed in `s`: top priority, tries = `tries`, not successful,
    /// the other slot's priority lowered below it. Does not write to disk.
    ///
    /// "Top" is 2 and the other slot is lowered to at most 1, so it stays the fallback
    /// (unless it was unbootable, priority 0). With `tries == 0` the new slot cannot boot.
    pub fn activate_new(&mut self, s: Slot, tries: u8) {
        *self.slot_mut(s) = SlotState {
            priority: 2,
            tries_remaining: tries,
            successful: false,
        };
        let other = self.slot_mut(s.other());
        other.priority = other.priority.min(1);
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test data sizes are small
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;

    fn st(priority: u8, tries_remaining: u8, successful: bool) -> SlotState {
        SlotState {
            priority,
            tries_remaining,
            successful,
        }
    }

    fn with(a: SlotState, b: SlotState) -> BootState {
        BootState {
            sequence: 7,
            rollback_floor: 3,
            slots: [a, b],
        }
    }

    #[test]
    fn choose_table() {
        use Slot::{A, B};
        let dead = st(0, 0, false);
        #[rustfmt::skip]
        let table: &[(SlotState, SlotState, Option<Slot>)] = &[
            (dead, dead, None),
            (st(0, 3, true), st(0, 3, true), None),     // priority 0 never boots
            (st(1, 0, false), st(1, 0, false), None),   // no tries, not good
            (st(1, 0, true), dead, Some(A)),            // good
            (dead, st(1, 0, true), Some(B)),
            (st(1, 1, false), dead, Some(A)),           // one try left
            (dead, st(5, 2, false), Some(B)),
            (st(1, 0, true), st(2, 0, true), Some(B)),  // higher priority wins
            (st(2, 0, true), st(1, 0, true), Some(A)),
            (st(2, 0, true), st(2, 0, true), Some(A)),  // a wins ties
            (st(2, 1, false), st(2, 0, true), Some(A)),
            (st(1, 0, true), st(2, 3, false), Some(B)), // new image with tries
            (st(1, 0, true), st(2, 0, false), Some(A)), // new image out of tries: fallback
            (st(1, 0, false), st(2, 0, false), None),
            (st(255, 0, true), st(254, 9, false), Some(A)),
        ];
        for (i, &(a, b, want)) in table.iter().enumerate() {
            assert_eq!(with(a, b).choose(), want, "row {i}: {a:?} {b:?}");
        }
    }

    #[test]
    fn update_lifecycle() {
        let mut s = BootState::initial(true);
        assert_eq!(s.choose(), Some(Slot::A));
        assert_eq!(BootState::initial(false).choose(), Some(Slot::A));
        assert_eq!(
            BootState::initial(false).slot(Slot::B),
            &SlotState::default()
        );
        // Install into b with 2 tries: b boots twice, then a is the fallback.
        s.activate_new(Slot::B, 2);
        assert_eq!(s.slot(Slot::A).priority, 1);
        for _ in 0..2 {
            assert_eq!(s.choose(), Some(Slot::B));
            s.begin_try(Slot::B);
        }
        assert_eq!(s.slot(Slot::B).tries_remaining, 0);
        assert_eq!(s.choose(), Some(Slot::A));
        // Install again, this time it comes up healthy.
        s.activate_new(Slot::B, 1);
        s.begin_try(Slot::B);
        s.mark_good(Slot::B, 9);
        assert_eq!(s.rollback_floor, 9);
        s.mark_good(Slot::A, 4);
        assert_eq!(s.rollback_floor, 9, "the floor is never lowered");
        s.begin_try(Slot::B);
        assert_eq!(*s.slot(Slot::B), st(2, 0, true));
        assert_eq!(s.choose(), Some(Slot::B));
        s.mark_unbootable(Slot::B);
        assert_eq!(s.choose(), Some(Slot::A));
        s.mark_unbootable(Slot::A);
        assert_eq!(s.choose(), None);
    }

    #[test]
    fn record_layout() {
        let s = with(st(2, 0, true), st(1, 3, false));
        let b = encode(&s);
        assert_eq!(&b[..8], b"STELESTA");
        assert_eq!(b[8..12], [1, 0, 0, 0]);
        assert_eq!(b[16..24], 7u64.to_le_bytes());
        assert_eq!(b[24..32], 3u64.to_le_bytes());
        assert_eq!(b[32..40], [2, 0, 1, 0, 1, 3, 0, 0]);
        assert!(b[40..480].iter().all(|&x| x == 0));
        assert_eq!(&b[480..], Sha256::digest(&b[..480]).as_slice());
        assert_eq!(decode(&b).unwrap(), s);
    }

    #[test]
    fn bad_records_are_refused() {
        let good = encode(&BootState::initial(true));
        let reseal = |mut b: [u8; RECORD_LEN]| {
            let sum = Sha256::digest(&b[..CHECKSUM_OFFSET]);
            b[CHECKSUM_OFFSET..].copy_from_slice(&sum);
            b
        };
        assert!(decode(&[0u8; RECORD_LEN]).is_err());
        assert!(decode(&good[..100]).is_err());
        for (pos, val) in [
            (0, b'x'),
            (8, 2),
            (13, 1),
            (34, 2),
            (35, 1),
            (39, 1),
            (400, 1),
        ] {
            let mut b = good;
            b[pos] = val;
            assert!(decode(&b).is_err(), "unsealed {pos}");
            assert!(decode(&reseal(b)).is_err(), "resealed {pos}");
        }
    }

    #[test]
    fn load_picks_the_newest_valid_copy() {
        let mut dev = Cursor::new(vec![0u8; STATE_AREA as usize]);
        assert!(matches!(load(&mut dev), Err(Error::NoValidState)));
        assert!(matches!(
            load(&mut Cursor::new(vec![])),
            Err(Error::NoValidState)
        ));
        let s0 = BootState::initial(true);
        initialize(&mut dev, &s0).unwrap();
        assert_eq!(load(&mut dev).unwrap(), (s0, 0));
        let mut s = s0;
        let mut copy = 0;
        s.activate_new(Slot::B, 3);
        store_next(&mut dev, &mut s, &mut copy).unwrap();
        assert_eq!((s.sequence, copy), (1, 1));
        assert_eq!(load(&mut dev).unwrap(), (s, 1));
        s.begin_try(Slot::B);
        store(&mut dev, &s, 1).unwrap();
        let (loaded, c) = load(&mut dev).unwrap();
        assert_eq!((loaded.sequence, c), (2, 0));
        // Corrupt the newest: the older one is used.
        dev.get_mut()[100] ^= 1;
        assert_eq!(load(&mut dev).unwrap().1, 1);
        assert!(store(&mut dev, &s, 2).is_err());
        let max = BootState {
            sequence: u64::MAX,
            ..s
        };
        assert!(store(&mut dev, &max, 0).is_err());
    }

    /// A device that applies writes sector by sector and can replay any prefix of them,
    /// with the last sector optionally torn (only its first half written).
    #[derive(Debug)]
    struct RecordingDevice {
        base: Vec<u8>,
        pos: u64,
        /// (offset, contents) of every 512-byte sector written, in order.
        writes: Vec<(u64, Vec<u8>)>,
    }

    const SECTOR: usize = 512;

    impl RecordingDevice {
        fn new(base: Vec<u8>) -> Self {
            RecordingDevice {
                base,
                pos: 0,
                writes: Vec::new(),
            }
        }
        /// The device after the first `n` sector writes; `torn`: the n-th only half done.
        fn replay(&self, n: usize, torn: bool) -> Vec<u8> {
            let mut d = self.base.clone();
            for (i, (off, data)) in self.writes[..n].iter().enumerate() {
                let len = if torn && i + 1 == n {
                    SECTOR / 2
                } else {
                    SECTOR
                };
                let off = *off as usize;
                d[off..off + len].copy_from_slice(&data[..len]);
            }
            d
        }
    }

    impl Write for RecordingDevice {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            assert_eq!(self.pos % SECTOR as u64, 0, "unaligned write");
            let mut off = self.pos;
            for chunk in buf.chunks(SECTOR) {
                let mut sector = self.base[off as usize..off as usize + SECTOR].to_vec();
                // Later writes to the same sector overlay earlier ones.
                for (o, d) in &self.writes {
                    if *o == off {
                        sector.copy_from_slice(d);
                    }
                }
                sector[..chunk.len()].copy_from_slice(chunk);
                self.writes.push((off, sector));
                off += SECTOR as u64;
            }
            self.pos += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Seek for RecordingDevice {
        fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
            self.pos = match pos {
                SeekFrom::Start(p) => p,
                _ => return Err(io::Error::other("only SeekFrom::Start is used")),
            };
            Ok(self.pos)
        }
    }

    #[test]
    fn crash_consistency() {
        // A sequence of state changes as the init and the CLI make them.
        let mut dev = Cursor::new(vec![0u8; STATE_AREA as usize]);
        initialize(&mut dev, &BootState::initial(true)).unwrap();
        type Change = fn(&mut BootState);
        let changes: &[Change] = &[
            |s| s.activate_new(Slot::B, 3),
            |s| s.begin_try(Slot::B),
            |s| s.mark_good(Slot::B, 5),
            |s| s.mark_unbootable(Slot::A),
            |s| s.activate_new(Slot::A, 1),
            |s| s.begin_try(Slot::A),
        ];
        for change in changes {
            let (old, copy) = load(&mut dev).unwrap();
            let mut new = old;
            change(&mut new);
            let mut rec = RecordingDevice::new(dev.get_ref().clone());
            let mut c = copy;
            let mut on_disk_new = new;
            store_next(&mut rec, &mut on_disk_new, &mut c).unwrap();
            assert_eq!(on_disk_new.sequence, old.sequence + 1);
            assert!(!rec.writes.is_empty());
            for n in 0..=rec.writes.len() {
                for torn in [false, true] {
                    if torn && n == 0 {
                        continue;
                    }
                    let image = rec.replay(n, torn);
                    let (got, _) = load(&mut Cursor::new(image)).unwrap();
                    let complete = n == rec.writes.len() && !torn;
                    if complete {
                        assert_eq!(got, on_disk_new);
                    } else {
                        assert!(
                            got == old || got == on_disk_new,
                            "prefix {n} torn {torn}: {got:?} is neither old nor new"
                        );
                    }
                }
            }
            *dev.get_mut() = rec.replay(rec.writes.len(), false);
        }
        // The last change did land.
        let (last, _) = load(&mut dev).unwrap();
        assert_eq!(last.sequence, changes.len() as u64);
        assert_eq!(last.slot(Slot::A).tries_remaining, 0);
    }

    fn arb_state() -> impl Strategy<Value = BootState> {
        (any::<u64>(), any::<u64>(), any::<[(u8, u8, bool); 2]>()).prop_map(
            |(sequence, rollback_floor, s)| BootState {
                sequence,
                rollback_floor,
                slots: s.map(|(p, t, g)| st(p, t, g)),
            },
        )
    }

    proptest! {
        #[test]
        fn record_round_trip(s in arb_state()) {
            prop_assert_eq!(decode(&encode(&s)).unwrap(), s);
        }

        #[test]
        fn load_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..9000)) {
            let _ = load(&mut Cursor::new(bytes));
        }

        #[test]
        fn load_of_mutated_state_is_old_new_or_error(pos in 0usize..STATE_AREA as usize, val: u8, s in arb_state()) {
            let mut dev = Cursor::new(vec![0u8; STATE_AREA as usize]);
            let s = BootState { sequence: s.sequence / 2, ..s };
            initialize(&mut dev, &s).unwrap();
            store(&mut dev, &s, 0).unwrap();
            dev.get_mut()[pos] = val;
            let (got, _) = load(&mut dev).unwrap();
            prop_assert_eq!(BootState { sequence: s.sequence, ..got }, s);
        }
    }
}

//! Tests of the boot state: slot choice, record layout, both copy layouts, sequence
//! order, torn writes (every prefix of the writes), round trips.

#![allow(clippy::cast_possible_truncation)] // test data sizes are small

use super::*;
use proptest::prelude::*;
use std::io::Cursor;

fn st(priority: u8, tries_remaining: u8, successful: bool) -> SlotState {
    SlotState {
        priority,
        tries_remaining,
        successful,
        unconfirmed: 0,
    }
}

/// A good slot with `unconfirmed` boots.
fn failing(priority: u8, unconfirmed: u8) -> SlotState {
    SlotState {
        unconfirmed,
        ..st(priority, 0, true)
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
        // A good slot whose last boot was not confirmed: the other one if it can boot.
        (failing(2, 1), st(1, 0, true), Some(B)),
        (st(1, 0, true), failing(2, 1), Some(A)),
        (failing(2, 1), st(1, 2, false), Some(B)),
        (failing(2, 1), st(1, 0, false), Some(A)),  // no other slot: the failing one
        (failing(2, 3), dead, Some(A)),
        (failing(1, 1), failing(2, 9), Some(B)),    // both failing: priority
        (st(2, 0, false), failing(1, 1), Some(B)),  // unconfirmed means nothing on trial
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
    let s = with(failing(2, 5), st(1, 3, false));
    let b = encode(&s);
    assert_eq!(
        b[32..40],
        [2, 0, 1, 5, 1, 3, 0, 0],
        "unconfirmed in bytes 35, 39"
    );
    assert_eq!(decode(&b).unwrap(), s);
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
    for (pos, val) in [(0, b'x'), (8, 2), (13, 1), (34, 2), (40, 1), (400, 1)] {
        let mut b = good;
        b[pos] = val;
        assert!(decode(&b).is_err(), "unsealed {pos}");
        assert!(decode(&reseal(b)).is_err(), "resealed {pos}");
    }
}

#[test]
fn load_picks_the_newest_valid_copy() {
    let mut dev = Cursor::new(vec![0u8; LEGACY_AREA as usize]);
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
}

/// A valid copy at `u64::MAX` (a corrupted or forged sequence) made every store fail:
/// tries unrecordable, mark-good failing forever. Sequences compare modulo 2^64, so
/// the next store (to 0) wins, and the one after.
#[test]
fn a_sequence_at_its_maximum_still_advances() {
    for len in [LEGACY_AREA, PARTITION_SIZE] {
        let mut dev = Cursor::new(vec![0u8; len as usize]);
        let mut s = BootState {
            sequence: u64::MAX - 1,
            ..BootState::initial(true)
        };
        initialize(&mut dev, &s).unwrap();
        let mut copy = 0;
        for want in [u64::MAX, 0, 1] {
            s.begin_try(Slot::B);
            s.rollback_floor += 1;
            store_next(&mut dev, &mut s, &mut copy).unwrap();
            assert_eq!(s.sequence, want);
            assert_eq!(load(&mut dev).unwrap(), (s, copy), "{len}: after {want}");
        }
    }
    // Only the other copy valid, at the maximum: it is loaded and the store after it
    // wins over it.
    let mut dev = Cursor::new(vec![0u8; LEGACY_AREA as usize]);
    let max = BootState {
        sequence: u64::MAX,
        ..BootState::initial(false)
    };
    store(
        &mut dev,
        &BootState {
            sequence: u64::MAX - 1,
            ..max
        },
        0,
    )
    .unwrap();
    assert_eq!(load(&mut dev).unwrap(), (max, 1));
    let mut next = max;
    next.mark_good(Slot::A, 5);
    store(&mut dev, &next, 1).unwrap();
    assert_eq!(load(&mut dev).unwrap().0.rollback_floor, 5);
    assert_eq!(load(&mut dev).unwrap().0.sequence, 0);
}

#[test]
fn sequence_order_is_modulo_2_64() {
    assert!(newer(1, 0) && !newer(0, 1) && !newer(5, 5));
    assert!(newer(0, u64::MAX) && !newer(u64::MAX, 0));
    assert!(newer(3, u64::MAX - 3));
    // Exactly half the ring apart: neither, and load takes copy 0.
    assert!(!newer(1 << 63, 0) && !newer(0, 1 << 63));
}

/// New state partitions (2 MiB) keep the copies an erase block (1 MiB) apart; old ones
/// (1 MiB, copies 4 KiB apart) are still read and written where their copies are.
#[test]
fn copies_sit_an_erase_block_apart_except_on_old_partitions() {
    assert_eq!(copy_offsets(PARTITION_SIZE), [0, 1 << 20]);
    assert_eq!(copy_offsets(SPREAD_MIN_LEN), [0, 1 << 20]);
    assert_eq!(copy_offsets(1 << 20), [0, 4096]);
    assert_eq!(copy_offsets(LEGACY_AREA), [0, 4096]);
    for (len, second) in [(PARTITION_SIZE, 1usize << 20), (1 << 20, 4096)] {
        let mut dev = Cursor::new(vec![0xaau8; len as usize]);
        let mut s = BootState::initial(true);
        initialize(&mut dev, &s).unwrap();
        let d = dev.get_ref();
        assert_eq!(decode(&d[..RECORD_LEN]).unwrap(), s);
        assert!(d[RECORD_LEN..4096].iter().all(|&b| b == 0));
        assert!(d[second..second + 4096].iter().all(|&b| b == 0));
        let mut copy = 0;
        s.activate_new(Slot::B, 3);
        store_next(&mut dev, &mut s, &mut copy).unwrap();
        let d = dev.get_ref();
        assert_eq!(decode(&d[second..second + RECORD_LEN]).unwrap(), s, "{len}");
        assert_eq!(load(&mut dev).unwrap(), (s, 1));
    }
}

/// Every boot of a good slot is recorded before anything is mounted and cleared only
/// by marking it good: the boot after one that ended unconfirmed (a dm-verity
/// corruption restart) prefers the other slot, and comes back when that cannot boot.
#[test]
fn unconfirmed_boots_of_a_good_slot_fall_back() {
    let mut s = BootState::initial(true);
    s.begin_boot(Slot::A);
    assert_eq!(s.slot(Slot::A).unconfirmed, 1);
    assert_eq!(s.choose(), Some(Slot::B), "its boot was not confirmed");
    s.mark_good(Slot::A, 0);
    assert_eq!(*s.slot(Slot::A), st(2, 0, true));
    assert_eq!(s.choose(), Some(Slot::A));
    // b cannot boot: a, failing, is still chosen, and the count saturates.
    s.mark_unbootable(Slot::B);
    for _ in 0..300 {
        s.begin_boot(Slot::A);
    }
    assert_eq!(s.slot(Slot::A).unconfirmed, 255);
    assert_eq!(s.choose(), Some(Slot::A));
    // A slot on trial spends tries instead.
    s.activate_new(Slot::B, 2);
    s.begin_boot(Slot::B);
    assert_eq!(*s.slot(Slot::B), st(2, 1, false));
}

#[test]
fn a_lost_state_is_rebuilt_from_the_slots_that_verify() {
    assert_eq!(BootState::rebuilt([None, None]), None);
    let both = BootState::rebuilt([Some(4), Some(4)]).unwrap();
    assert_eq!(both.rollback_floor, 4);
    assert_eq!(both.slots, BootState::initial(true).slots);
    let b_newer = BootState::rebuilt([Some(3), Some(4)]).unwrap();
    assert_eq!(b_newer.rollback_floor, 4);
    assert_eq!(b_newer.slots, [SlotState::default(), st(2, 0, true)]);
    assert_eq!(b_newer.choose(), Some(Slot::B));
    let a_only = BootState::rebuilt([Some(7), None]).unwrap();
    assert_eq!(a_only.slots, [st(2, 0, true), SlotState::default()]);
    assert_eq!(a_only.sequence, 0);
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
            SeekFrom::End(0) => self.base.len() as u64,
            _ => return Err(io::Error::other("only SeekFrom::Start and End(0) are used")),
        };
        Ok(self.pos)
    }
}

#[test]
fn crash_consistency() {
    for len in [LEGACY_AREA, PARTITION_SIZE] {
        crash_consistency_on(len as usize);
    }
}

/// [`crash_consistency`] on a state device of `len` bytes, from a sequence close to the
/// end of the ring (it wraps on the way).
fn crash_consistency_on(len: usize) {
    // A sequence of state changes as the init and the CLI make them.
    let mut dev = Cursor::new(vec![0u8; len]);
    let start = BootState {
        sequence: u64::MAX - 2,
        ..BootState::initial(true)
    };
    initialize(&mut dev, &start).unwrap();
    type Change = fn(&mut BootState);
    let changes: &[Change] = &[
        |s| s.activate_new(Slot::B, 3),
        |s| s.begin_try(Slot::B),
        |s| s.mark_good(Slot::B, 5),
        |s| s.begin_boot(Slot::B),
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
        assert_eq!(on_disk_new.sequence, old.sequence.wrapping_add(1));
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
                        "{len}: prefix {n} torn {torn}: {got:?} is neither old nor new"
                    );
                }
            }
        }
        *dev.get_mut() = rec.replay(rec.writes.len(), false);
    }
    // The last change did land.
    let (last, _) = load(&mut dev).unwrap();
    assert_eq!(
        last.sequence,
        start.sequence.wrapping_add(changes.len() as u64)
    );
    assert_eq!(last.slot(Slot::A).tries_remaining, 0);
}

fn arb_state() -> impl Strategy<Value = BootState> {
    (any::<u64>(), any::<u64>(), any::<[(u8, u8, bool, u8); 2]>()).prop_map(
        |(sequence, rollback_floor, s)| BootState {
            sequence,
            rollback_floor,
            slots: s.map(|(p, t, g, u)| SlotState {
                unconfirmed: u,
                ..st(p, t, g)
            }),
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
    fn load_of_mutated_state_is_old_new_or_error(pos in 0usize..LEGACY_AREA as usize, val: u8, s in arb_state()) {
        let mut dev = Cursor::new(vec![0u8; LEGACY_AREA as usize]);
        let s = BootState { sequence: s.sequence / 2, ..s };
        initialize(&mut dev, &s).unwrap();
        store(&mut dev, &s, 0).unwrap();
        dev.get_mut()[pos] = val;
        let (got, _) = load(&mut dev).unwrap();
        prop_assert_eq!(BootState { sequence: s.sequence, ..got }, s);
    }
}

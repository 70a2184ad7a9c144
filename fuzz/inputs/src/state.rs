//! Targets `state_load` (bytes as the boot state area) and `state_roundtrip` (boot states
//! built from the input: store then load gives the state back; a pair of valid copies,
//! edited, loads as one of the two copies or as an error, never a third state).
//!
//! Input of `state_roundtrip` ([`StateInput`], in [`crate::codec`]): two boot states, the
//! copy the first was loaded from, byte edits of the area holding both, and a cut off its
//! end.

use std::io::Cursor;
use std::ops::Range;

use stele_verifier::state::{
    decode, encode, initialize, load, newer, store, store_next, BootState, Slot, SlotState,
    LEGACY_AREA, LEGACY_COPY_OFFSETS, RECORD_LEN,
};

use crate::codec::{Reader, Writer};
use crate::Seed;

pub const AREA_STAGES: &[&str] = &["one valid copy", "two valid copies"];
pub const STAGES: &[&str] = &["one copy survives", "both copies survive"];

/// [`LEGACY_AREA`] as a buffer length (and the largest edit offset and cut, as a u16): the
/// targets run on the layout with copies 4 KiB apart (the layout is chosen by the
/// device's length alone; the 1 MiB distance is tested in the verifier).
const AREA: usize = 8192;
const AREA_U16: u16 = 8192;
const _: () = assert!(AREA as u64 == LEGACY_AREA && AREA_U16 as usize == AREA);
const MAX_EDITS: usize = 8;

/// The bytes of copy `k` in the area.
fn copy_range(k: usize) -> Range<usize> {
    let at = usize::try_from(LEGACY_COPY_OFFSETS[k]).expect("a small offset");
    at..at + RECORD_LEN
}

/// How many copies of `area` are valid on their own.
fn valid_copies(area: &[u8]) -> usize {
    (0..2)
        .filter(|&k| area.get(copy_range(k)).is_some_and(|b| decode(b).is_ok()))
        .count()
}

pub fn run_area(data: &[u8]) {
    if let Ok((state, copy)) = load(&mut Cursor::new(data)) {
        // What loads re-encodes to a record that decodes to the same state.
        assert_eq!(decode(&encode(&state)).ok(), Some(state));
        let _ = state.choose();
        // And it is what the copy it names holds.
        assert_eq!(decode(&data[copy_range(copy)]).ok(), Some(state));
    }
}

pub fn area_depth(data: &[u8]) -> usize {
    valid_copies(data)
}

/// After building the area: `byte ^= xor` at `at` (modulo the area's size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AreaEdit {
    pub at: u16,
    pub xor: u8,
}

/// The structured input of `state_roundtrip`. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateInput {
    pub first: BootState,
    pub second: BootState,
    /// The copy `first` was loaded from (0 or 1), for the store.
    pub current: usize,
    pub edits: Vec<AreaEdit>,
    /// Bytes cut off the end of the area (at most all of it).
    pub cut: u16,
}

fn read_state(r: &mut Reader) -> BootState {
    let sequence = r.u64();
    let rollback_floor = r.u64();
    let mut slot = || SlotState {
        priority: r.u8(),
        tries_remaining: r.u8(),
        successful: r.bool(),
        unconfirmed: r.u8(),
    };
    let slots = [slot(), slot()];
    BootState {
        sequence,
        rollback_floor,
        slots,
    }
}

fn write_state(w: &mut Writer, s: &BootState) {
    w.u64(s.sequence);
    w.u64(s.rollback_floor);
    for slot in &s.slots {
        w.u8(slot.priority);
        w.u8(slot.tries_remaining);
        w.bool(slot.successful);
        w.u8(slot.unconfirmed);
    }
}

impl StateInput {
    /// Decodes any bytes.
    pub fn decode(data: &[u8]) -> Self {
        let mut r = Reader::new(data);
        StateInput {
            first: read_state(&mut r),
            second: read_state(&mut r),
            current: r.choice(2),
            edits: r.list(MAX_EDITS, |r| AreaEdit {
                at: r.u16() % AREA_U16,
                xor: r.u8(),
            }),
            cut: r.u16() % (AREA_U16 + 1),
        }
    }

    /// The bytes that [`StateInput::decode`] reads as `self` (for a `self` it can return).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        write_state(&mut w, &self.first);
        write_state(&mut w, &self.second);
        w.choice(self.current, 2);
        w.list(&self.edits, MAX_EDITS, |w, e| {
            w.u16(e.at);
            w.u8(e.xor);
        });
        w.u16(self.cut);
        w.finish()
    }

    /// The state area holding `first` as copy 0 and `second` as copy 1, edited and cut.
    pub fn area(&self) -> Vec<u8> {
        let mut area = vec![0u8; AREA];
        area[copy_range(0)].copy_from_slice(&encode(&self.first));
        area[copy_range(1)].copy_from_slice(&encode(&self.second));
        for e in &self.edits {
            area[usize::from(e.at) % AREA] ^= e.xor;
        }
        area.truncate(AREA - usize::from(self.cut).min(AREA));
        area
    }

    /// Which copies the edits and the cut left as written.
    fn intact(&self, area: &[u8]) -> [bool; 2] {
        let written = [encode(&self.first), encode(&self.second)];
        [0, 1].map(|k| area.get(copy_range(k)) == Some(&written[k][..]))
    }
}

pub fn run(data: &[u8]) {
    let input = StateInput::decode(data);
    let s = input.first;
    assert_eq!(decode(&encode(&s)).ok(), Some(s));
    // store into a blank area, then load: the state, one sequence on (modulo 2^64: a
    // store never fails on the sequence), in the other copy; the copy it was loaded from
    // is left alone.
    let mut dev = Cursor::new(vec![0u8; AREA]);
    store(&mut dev, &s, input.current).expect("writes to memory");
    let stored = BootState {
        sequence: s.sequence.wrapping_add(1),
        ..s
    };
    assert_eq!(load(&mut dev).ok(), Some((stored, 1 - input.current)));
    let from = copy_range(input.current);
    assert!(dev.get_ref()[from].iter().all(|&b| b == 0));
    // initialize, then load: the state itself, in copy 0.
    let mut dev = Cursor::new(Vec::new());
    initialize(&mut dev, &s).expect("writes to memory");
    assert_eq!(load(&mut dev).ok(), Some((s, 0)));
    // A pair of copies, edited: one of the two or an error, never a third state; exactly
    // the intact copy with the newer sequence (copy 0 when neither is).
    let area = input.area();
    let got = load(&mut Cursor::new(&area)).ok();
    match got {
        None => {}
        Some((st, 0)) => assert_eq!(st, input.first),
        Some((st, _)) => assert_eq!(st, input.second),
    }
    let (a, b) = (input.first, input.second);
    let expected = match input.intact(&area) {
        [true, true] if newer(b.sequence, a.sequence) => Some((b, 1)),
        [true, _] => Some((a, 0)),
        [false, true] => Some((b, 1)),
        [false, false] => None,
    };
    assert_eq!(got, expected);
}

pub fn depth(data: &[u8]) -> usize {
    let input = StateInput::decode(data);
    input.intact(&input.area()).iter().filter(|&&i| i).count()
}

/// A device's boot state through its life, each step as stored: fresh, an update
/// installed in b, b's try spent, b marked good, an update to a found bad.
fn history() -> Vec<(&'static str, BootState, usize)> {
    let mut s = BootState::initial(true);
    let mut copy = 0;
    let mut dev = Cursor::new(vec![0u8; AREA]);
    initialize(&mut dev, &s).expect("writes to memory");
    let mut out = vec![("fresh", s, copy)];
    type Step = (&'static str, fn(&mut BootState));
    let steps: [Step; 4] = [
        ("after-a-flip", |s| s.activate_new(Slot::B, 3)),
        ("after-a-try", |s| s.begin_try(Slot::B)),
        ("after-mark-good", |s| s.mark_good(Slot::B, 5)),
        ("after-a-bad-update", |s| {
            s.activate_new(Slot::A, 3);
            s.mark_unbootable(Slot::A);
        }),
    ];
    for (name, step) in steps {
        step(&mut s);
        store_next(&mut dev, &mut s, &mut copy).expect("writes to memory");
        out.push((name, s, copy));
    }
    out
}

/// The area after each step of [`history`] (both copies valid from the first flip on).
fn history_areas() -> Vec<(&'static str, Vec<u8>)> {
    let mut dev = Cursor::new(vec![0u8; AREA]);
    let mut out = Vec::new();
    for (name, s, copy) in history() {
        let at = copy_range(copy);
        dev.get_mut()[at].copy_from_slice(&encode(&s));
        out.push((name, dev.get_ref().clone()));
    }
    out
}

pub fn area_seeds() -> Vec<Seed> {
    let mut out: Vec<Seed> = history_areas()
        .into_iter()
        .map(|(name, area)| Seed::new(name, area))
        .collect();
    let fresh_b_absent = {
        let mut dev = Cursor::new(Vec::new());
        initialize(&mut dev, &BootState::initial(false)).expect("writes to memory");
        dev.into_inner()
    };
    out.push(Seed::new("fresh-without-b", fresh_b_absent));
    let (_, both) = history_areas().remove(2);
    let edited = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut a = both.clone();
        f(&mut a);
        a
    };
    let c0 = copy_range(0).start;
    let c1 = copy_range(1).start;
    out.extend(
        [
            // The newer copy (copy 0 after the try) half-written: the older one is read.
            (
                "newer-copy-torn",
                edited(&|a| a[c0 + 256..c0 + RECORD_LEN].fill(0)),
            ),
            ("older-copy-torn", edited(&|a| a[c1 + 300] ^= 0x40)),
            (
                "both-torn",
                edited(&|a| {
                    a[c0 + 1] ^= 1;
                    a[c1 + 1] ^= 1;
                }),
            ),
            ("bit-flipped", edited(&|a| a[c0 + 33] ^= 1)),
            ("flag-2", edited(&|a| a[c0 + 34] = 2)),
            ("truncated-by-one", edited(&|a| a.truncate(AREA - 1))),
            (
                "second-copy-cut",
                edited(&|a| a.truncate(c1 + RECORD_LEN - 1)),
            ),
            ("blank", vec![0u8; AREA]),
        ]
        .map(|(name, area)| Seed::new(name, area)),
    );
    out
}

pub fn seeds() -> Vec<Seed> {
    let h = history();
    let mut out = Vec::new();
    for pair in h.windows(2) {
        let ((_, a, from), (name, b, _)) = (pair[0], pair[1]);
        let base = StateInput {
            first: a,
            second: b,
            current: from,
            edits: Vec::new(),
            cut: 0,
        };
        // Copy 1 holds b whatever copy the real history used: the pair is what counts.
        out.push(Seed::new(name, base.encode()));
        let torn = StateInput {
            edits: vec![AreaEdit {
                at: u16::try_from(copy_range(1).start + 200).expect("a small offset"),
                xor: 0x10,
            }],
            ..base.clone()
        };
        out.push(Seed::new(format!("{name}-second-torn"), torn.encode()));
    }
    let last = StateInput {
        first: h[0].1,
        second: BootState {
            sequence: u64::MAX,
            ..h[1].1
        },
        current: 1,
        edits: vec![AreaEdit { at: 7, xor: 0xff }],
        cut: 0,
    };
    out.push(Seed::new("sequence-max-first-torn", last.encode()));
    let cut = StateInput {
        cut: u16::try_from(AREA - copy_range(1).end + 1).expect("a small cut"),
        ..last.clone()
    };
    out.push(Seed::new("second-copy-cut", cut.encode()));
    let max = StateInput {
        first: BootState {
            sequence: u64::MAX,
            ..h[0].1
        },
        ..last
    };
    out.push(Seed::new("store-at-max-sequence", max.encode()));
    out
}

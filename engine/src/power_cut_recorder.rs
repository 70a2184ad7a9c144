//! Power cuts while the flight recorder and the boot state are written in turn, as a boot
//! does (spend a try, record, mark good, record): every prefix of the writes, whole and
//! with the next 512-byte sector torn, leaves the state readable (the last state whose
//! write completed, or the one before a torn one) and the ring readable (every event whose
//! write completed, at most one damaged block, none invented).

#![allow(clippy::cast_possible_truncation)] // test sizes are small

use std::io::Cursor;

use stele_verifier::recorder::ring::{self, CAPACITY};
use stele_verifier::recorder::{Event, Kind, Origin};
use stele_verifier::state::{self, BootState, Slot, PARTITION_SIZE};

use crate::power_cut::{Recorder, WriteLog};
use crate::{recorder_write, state_write};

fn event(n: u64) -> Event {
    Event {
        text: format!("event {n}"),
        slot: Some(Slot::B),
        ..Event::new(Origin::Stage1, Kind::Verified)
    }
}

/// What a replay must find: after each write, the state and the events on the device.
struct Step {
    /// Writes recorded up to the end of this step.
    writes: usize,
    state: BootState,
    events: Vec<u64>,
}

#[test]
fn power_cut_at_every_write_of_the_recorder_and_the_state() {
    // A ring one event short of wrapping, so that the appends overwrite the oldest blocks.
    let mut start = Cursor::new(vec![0u8; PARTITION_SIZE as usize]);
    let mut st = BootState::initial(true);
    st.activate_new(Slot::B, 3);
    state_write::initialize(&mut start, &st).unwrap();
    for n in 0..CAPACITY - 1 {
        recorder_write::append(&mut start, &event(n)).unwrap();
    }
    let log = WriteLog::default();
    let mut dev = Recorder {
        id: 2,
        dev: start.clone(),
        log: log.clone(),
    };
    let live = |dev: &mut Recorder| -> Vec<u64> {
        let r = ring::read(&mut dev.dev).unwrap().unwrap();
        r.events.iter().map(|e| e.sequence).collect()
    };
    let mut steps = vec![Step {
        writes: 0,
        state: st,
        events: live(&mut dev),
    }];
    let (mut st, mut copy) = state::load(&mut dev.dev).unwrap();
    let mut n = CAPACITY - 1;
    // A boot of b on trial: spend the try, record; health fails, record; the next boot
    // marks b good, records twice more.
    let plan: [&dyn Fn(&mut BootState) -> bool; 6] = [
        &|s| {
            s.begin_boot(Slot::B);
            true
        },
        &|_| false,
        &|_| false,
        &|s| {
            s.mark_good(Slot::B, 4);
            true
        },
        &|_| false,
        &|_| false,
    ];
    for step in plan {
        if step(&mut st) {
            state_write::store(&mut dev, &mut st, &mut copy).unwrap();
        } else {
            assert_eq!(
                recorder_write::append(&mut dev, &event(n)).unwrap(),
                Some(n)
            );
            n += 1;
        }
        steps.push(Step {
            writes: log.borrow().len(),
            state: st,
            events: live(&mut dev),
        });
    }
    let writes = log.borrow().clone();
    assert!(writes.len() > 6, "{} writes", writes.len());
    for cut in 0..=writes.len() {
        for torn in [false, true] {
            if torn && cut == writes.len() {
                continue;
            }
            let mut d = start.clone();
            for (i, (_, off, data)) in writes.iter().enumerate().take(cut + usize::from(torn)) {
                let data = if i == cut {
                    &data[..data.len() / 2]
                } else {
                    &data[..]
                };
                let at = usize::try_from(*off).unwrap();
                d.get_mut()[at..at + data.len()].copy_from_slice(data);
            }
            // The last step complete at this cut; the next one is in progress.
            let done = steps.iter().rev().find(|s| s.writes <= cut).unwrap();
            let (loaded, _) = state::load(&mut d)
                .unwrap_or_else(|e| panic!("state unreadable after {cut} writes: {e}"));
            let ring = ring::read(&mut d).unwrap().unwrap();
            let got: Vec<u64> = ring.events.iter().map(|e| e.sequence).collect();
            let next = steps.iter().find(|s| s.writes > cut);
            // Inside a step (a ring block is 8 sectors) or with its next sector torn.
            if torn || cut > done.writes {
                // The write in progress: before or after it, never anything else.
                let after = next.unwrap();
                assert!(
                    loaded == done.state || loaded == after.state,
                    "state after {cut} writes (torn {torn}): {loaded:?}"
                );
                let ok = |e: &u64| done.events.contains(e) || after.events.contains(e);
                assert!(got.iter().all(ok), "events after {cut} writes: {got:?}");
                assert!(ring.damaged <= 1, "{} damaged", ring.damaged);
            } else {
                assert_eq!(loaded, done.state, "state after {cut} writes");
                assert_eq!(got, done.events, "events after {cut} writes");
                assert_eq!(ring.damaged, 0);
            }
            // Every event read is one that was appended, whole.
            for e in &ring.events {
                assert_eq!(e.text, format!("event {}", e.sequence));
            }
            // And the next append works on what the cut left.
            let mut again = d.clone();
            let seq = recorder_write::append(&mut again, &event(999))
                .unwrap()
                .unwrap();
            assert_eq!(
                ring::read(&mut again)
                    .unwrap()
                    .unwrap()
                    .events
                    .last()
                    .unwrap()
                    .sequence,
                seq
            );
        }
    }
}

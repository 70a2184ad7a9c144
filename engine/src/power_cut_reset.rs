//! Power cuts during a factory reset of the data partition: the request written by
//! `stele data reset`, then the boot making the filesystem and clearing the request.
//! Every prefix of those writes, whole and with the next 512-byte sector torn, followed
//! by the next boot: the data partition is all old or all fresh, never a mix (a
//! filesystem that would not mount), fresh whenever the request was written, the request
//! gone afterwards, and the state and the flight recorder as they were.

#![allow(clippy::cast_possible_truncation)] // test sizes are small

use std::io::{Cursor, SeekFrom};

use stele_verifier::data_reset::{self, at_boot, By, Found, Machine, Outcome, Request};
use stele_verifier::recorder::{ring, Event, Kind, Origin};
use stele_verifier::state::{self, BootState, PARTITION_SIZE};

use crate::power_cut::{Recorder, WriteLog};
use crate::{recorder_write, reset_write, state_write, Storage};

const DATA_LEN: usize = 64 * 1024;
const OLD: u8 = 0xaa;
const FRESH: u8 = 0x5f;

/// The boot's steps over a state partition and a data partition; "mkfs" writes the
/// fresh pattern over the data partition 4 KiB at a time, its first block (the
/// superblock) last, as mke2fs does.
struct Boot<'a, S: Storage, D: Storage> {
    state: &'a mut S,
    data: &'a mut D,
}

impl<S: Storage, D: Storage> Machine for Boot<'_, S, D> {
    fn request(&mut self) -> Result<Found, String> {
        data_reset::read(self.state).map_err(|e| e.to_string())
    }
    fn make_fs(&mut self) -> Result<(), String> {
        let blocks = DATA_LEN / 4096;
        for i in (1..blocks).chain([0]) {
            self.data
                .seek(SeekFrom::Start((i * 4096) as u64))
                .and_then(|_| self.data.write_all(&[FRESH; 4096]))
                .map_err(|e| e.to_string())?;
        }
        self.data.sync().map_err(|e| e.to_string())
    }
    fn clear(&mut self) -> Result<(), String> {
        reset_write::clear(self.state).map_err(|e| e.to_string())
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Data {
    Old,
    Fresh,
    Mixed,
}

fn data_is(d: &Cursor<Vec<u8>>) -> Data {
    if d.get_ref().iter().all(|&b| b == OLD) {
        Data::Old
    } else if d.get_ref().iter().all(|&b| b == FRESH) {
        Data::Fresh
    } else {
        Data::Mixed
    }
}

#[test]
fn power_cut_at_every_write_of_a_data_reset() {
    let mut st0 = Cursor::new(vec![0u8; PARTITION_SIZE as usize]);
    let booted = BootState::initial(true);
    state_write::initialize(&mut st0, &booted).unwrap();
    for n in 0..3 {
        let mut e = Event::new(Origin::Stage1, Kind::Verified);
        e.text = format!("event {n}");
        recorder_write::append(&mut st0, &e).unwrap();
    }
    let data0 = Cursor::new(vec![OLD; DATA_LEN]);
    let log = WriteLog::default();
    let mut st = Recorder {
        id: 2,
        dev: st0.clone(),
        log: log.clone(),
    };
    let mut data = Recorder {
        id: 1,
        dev: data0.clone(),
        log: log.clone(),
    };
    let r = Request {
        by: By::Device,
        wall_secs: Some(1_800_000_000),
    };
    reset_write::request(&mut st, &r).unwrap();
    let requested = log.borrow().len();
    let done = at_boot(&mut Boot {
        state: &mut st,
        data: &mut data,
    });
    assert_eq!(done, Outcome::Reset(r));
    assert_eq!(data_is(&data.dev), Data::Fresh);
    let writes = log.borrow().clone();
    assert!(
        writes.len() > requested + DATA_LEN / 512,
        "{}",
        writes.len()
    );

    for cut in 0..=writes.len() {
        for torn in [false, true] {
            if torn && cut == writes.len() {
                continue;
            }
            let (mut s, mut d) = (st0.clone(), data0.clone());
            for (i, (dev, off, bytes)) in writes.iter().enumerate().take(cut + usize::from(torn)) {
                let bytes = if i == cut {
                    &bytes[..bytes.len() / 2]
                } else {
                    &bytes[..]
                };
                let target = if *dev == 1 { &mut d } else { &mut s };
                let at = *off as usize;
                target.get_mut()[at..at + bytes.len()].copy_from_slice(bytes);
            }
            // The next boot.
            let next = at_boot(&mut Boot {
                state: &mut s,
                data: &mut d,
            });
            let what = format!("after {cut} writes (torn {torn}): {next:?}");
            let got = data_is(&d);
            assert_ne!(got, Data::Mixed, "{what}");
            if cut >= requested {
                // The command had returned: the reset happens, in this boot or the last.
                assert_eq!(got, Data::Fresh, "{what}");
            }
            if cut == 0 && !torn {
                assert_eq!((got, &next), (Data::Old, &Outcome::Nothing));
            }
            assert!(!matches!(next, Outcome::Failed { .. }), "{what}");
            assert_eq!(data_reset::read(&mut s).unwrap(), Found::None, "{what}");
            let (loaded, _) = state::load(&mut s).unwrap();
            assert_eq!(loaded, booted, "{what}");
            let events = ring::read(&mut s).unwrap().unwrap();
            assert_eq!((events.events.len(), events.damaged), (3, 0), "{what}");
        }
    }
}

//! Tests of `stele update install`: the target slot, the floor an install must meet, the
//! flip only after a good write, product binding, and the state lock left free while a
//! bundle is read.

#![allow(clippy::cast_possible_truncation)] // test sizes are small

use super::*;
use crate::runtime::rollback::Floors;
use std::io::Cursor;
use stele_verifier::exit::{Exit, Report};
use stele_verifier::progress::Silent;
use stele_verifier::state::{self, SlotState};
use stele_verifier::testutil::{image_signed_by, trusted};

/// Trusting key 1, any product, the running slot unknown.
fn open() -> Trust<'static> {
    Trust {
        keyring: trusted(),
        product: None,
        running: None,
        floors: Floors::default(),
    }
}

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

/// [`install`] into slot a of `slot` (1 MiB), quietly, with `trust`.
fn install_a(
    bundle: &mut Bundle,
    slot: &mut Cursor<Vec<u8>>,
    state: &mut StateFile<Cursor<Vec<u8>>>,
    trust: &Trust<'_>,
) -> Result<Installed> {
    install(
        bundle,
        Slot::A,
        slot,
        1 << 20,
        state,
        trust,
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
        &open(),
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
            successful: false,
            unconfirmed: 0,
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
    let e = install_a(&mut old, &mut slot, &mut state_dev, &open()).unwrap_err();
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
    let tpm = Trust {
        floors: Floors {
            tpm: Some(7),
            ..Floors::default()
        },
        ..open()
    };
    let mut v6 = seekable(image_signed_by(8, 6, 1, 1).0, "v6.img");
    let e = install_a(&mut v6, &mut slot, &mut state_dev, &tpm).unwrap_err();
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
    let e = install_a(&mut other, &mut slot, &mut state_dev, &open()).unwrap_err();
    assert!(matches!(e, Error::Bundle { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with("other.img: signature threshold not met"),
        "{e}"
    );
    assert_eq!(slot.get_ref(), &slot_before);
    assert_eq!(state_dev.get_ref().get_ref(), &before);
}

#[test]
fn the_floor_is_raised_to_a_good_running_slot() {
    let good = st((2, 0, true), (1, 0, true));
    assert_eq!(install_floor(&good, None), 2);
    assert_eq!(install_floor(&good, Some((Slot::A, 5))), 5);
    assert_eq!(install_floor(&good, Some((Slot::A, 1))), 2, "never lowered");
    let trial = st((1, 0, true), (2, 3, false));
    assert_eq!(
        install_floor(&trial, Some((Slot::B, 5))),
        2,
        "a slot on trial has not earned its index yet"
    );
}

/// A fresh disk of an older stele has floor 0 while its good slot runs index 5: an
/// older signed image is refused all the same (it used to install).
#[test]
fn an_image_below_the_running_good_slot_is_refused() {
    let mut state_dev = fresh_state();
    assert_eq!(state_dev.load().unwrap().rollback_floor, 0);
    let before = state_dev.get_ref().get_ref().clone();
    let mut slot = Cursor::new(vec![0xeeu8; 1 << 20]);
    let running_v5 = Trust {
        running: Some((Slot::B, 5)),
        ..open()
    };
    let mut st = state_dev.load().unwrap();
    *st.slot_mut(Slot::B) = st.slots[0];
    state_dev.store(&mut st).unwrap();
    let before_state = state_dev.get_ref().get_ref().clone();
    let mut v4 = seekable(image_signed_by(8, 4, 1, 1).0, "v4.img");
    let e = install_a(&mut v4, &mut slot, &mut state_dev, &running_v5).unwrap_err();
    let Error::Floors { source, .. } = &e else {
        panic!("not a floor refusal: {e}")
    };
    assert!(
        matches!(
            &**source,
            Error::Bundle {
                source: stele_verifier::Error::Rollback { index: 4, floor: 5 },
                ..
            }
        ),
        "{e}"
    );
    assert!(
        slot.get_ref().iter().all(|&b| b == 0xee),
        "the slot was written"
    );
    assert_eq!(state_dev.get_ref().get_ref(), &before_state);
    assert_ne!(before, before_state);
    let mut v5 = seekable(image_signed_by(8, 5, 1, 1).0, "v5.img");
    install_a(&mut v5, &mut slot, &mut state_dev, &running_v5).unwrap();
}

/// A device bound to a product refuses another product's image, signed by its own key.
#[test]
fn another_products_image_is_refused() {
    let mut state_dev = fresh_state();
    let before = state_dev.get_ref().get_ref().clone();
    let mut slot = Cursor::new(vec![0xeeu8; 1 << 20]);
    let router = Trust {
        product: Some("router"),
        ..open()
    };
    let mut demo = seekable(image_signed_by(8, 4, 1, 1).0, "demo.img");
    let e = install_a(&mut demo, &mut slot, &mut state_dev, &router).unwrap_err();
    assert!(
        e.to_string()
            .contains("product refused: the image is \"demo\""),
        "{e}"
    );
    assert_eq!(e.exit(), Exit::Refused);
    assert!(slot.get_ref().iter().all(|&b| b == 0xee));
    let mut stream = Bundle::Stream {
        reader: Box::new(Cursor::new(image_signed_by(8, 4, 1, 1).0)),
        name: "stdin".into(),
    };
    let e = install_a(&mut stream, &mut slot, &mut state_dev, &router).unwrap_err();
    assert!(matches!(e, Error::Written { .. }), "{e}");
    assert_eq!(state_dev.get_ref().get_ref(), &before);
    let demo_device = Trust {
        product: Some("demo"),
        ..open()
    };
    let mut demo = seekable(image_signed_by(8, 4, 1, 1).0, "demo.img");
    install_a(&mut demo, &mut slot, &mut state_dev, &demo_device).unwrap();
}

/// A bundle that hands out the first half of an image, then waits until it is told to go
/// on (a stalled download piped into `stele update install -`).
struct Stalled {
    data: Vec<u8>,
    pos: usize,
    go: std::sync::mpsc::Receiver<()>,
    stalled: Option<std::sync::mpsc::Sender<()>>,
}

impl Read for Stalled {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.data.len() / 2 {
            if let Some(tell) = self.stalled.take() {
                let _ = tell.send(());
                let _ = self.go.recv();
            }
        }
        let n = (self.data.len() - self.pos).min(out.len()).min(4096);
        out[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// While a stream stalls, the state is not locked: PID 1's try-lock and `stele update
/// mark-good` get it (the install used to hold it to the end); the install then flips
/// against the state as it is now.
#[test]
fn a_stalled_stream_does_not_hold_the_state_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    let mut c = Cursor::new(vec![0u8; 8192]);
    let mut initial = BootState::initial(true);
    initial.rollback_floor = 1;
    state::initialize(&mut c, &initial).unwrap();
    std::fs::write(&path, c.into_inner()).unwrap();
    let path = path.display().to_string();
    let (go_tx, go_rx) = std::sync::mpsc::channel();
    let (stalled_tx, stalled_rx) = std::sync::mpsc::channel();
    let img = image_signed_by(8, 4, 1, 1).0;
    let installer = {
        let path = path.clone();
        std::thread::spawn(move || {
            let mut state = StateFile::open(&path, true).unwrap();
            let mut slot = Cursor::new(vec![0u8; 1 << 20]);
            let mut bundle = Bundle::Stream {
                reader: Box::new(Stalled {
                    data: img,
                    pos: 0,
                    go: go_rx,
                    stalled: Some(stalled_tx),
                }),
                name: "stdin".into(),
            };
            let trust = Trust {
                running: Some((Slot::A, 1)),
                ..open()
            };
            install(
                &mut bundle,
                Slot::B,
                &mut slot,
                1 << 20,
                &mut state,
                &trust,
                &mut |_| {},
                &mut Silent,
            )
        })
    };
    stalled_rx.recv().unwrap();
    let mut pid1 = StateFile::open(&path, true).unwrap();
    assert!(
        pid1.try_lock().unwrap(),
        "the state is locked by a stalled install"
    );
    assert!(pid1.mark_good(Slot::A, 3).unwrap());
    pid1.unlock();
    go_tx.send(()).unwrap();
    let done = installer.join().unwrap().unwrap();
    assert_eq!(done.state.choose(), Some(Slot::B));
    assert_eq!(
        done.state.rollback_floor, 3,
        "flipped against the state as it is now"
    );
}

//! Power cuts during a delta install: the writes of a delta install into slot b (copies
//! from a, fetched blocks, tree, envelope, flip, footer) are replayed prefix by prefix,
//! whole and torn; the device must boot the right content, and a new run from any cut
//! state must finish the install, fetching only what the slot lacks.

#![allow(clippy::cast_possible_truncation)] // test sizes are small

use std::io::Cursor;

use super::delta::apply::apply;
use super::delta::plan::plan;
use super::delta::tests::{block, image_of, install, slot_with, FakeClock, MemSource};
use super::delta::{fetch_meta, Fetcher, RetryPolicy, Trust};
use super::power_cut::{b_first_state, boot, every_prefix_boots, Recording};
use super::tests::SLOT_LEN;
use super::*;
use stele_verifier::state::{initialize, load};
use stele_verifier::testutil::ring;

#[test]
fn power_cut_at_any_write_of_a_delta_install_still_boots_and_resumes() {
    // a: 1.1 (booted, good); b: 1.5, good and first in line; new: 2.9, sharing five of
    // its eight blocks with a (another salt: a's data is hashed once with the new salt).
    let old: Vec<Vec<u8>> = (0..8).map(|t| block(t, 1)).collect();
    let mut new = old.clone();
    new[2] = block(100, 2);
    new.insert(5, block(101, 2));
    new[7] = block(0, 0);
    new.pop();
    let a = slot_with(&image_of(&old, 1, 1));
    let b = slot_with(&image_of(&[block(50, 3), block(51, 3)], 5, 1));
    let new_img = image_of(&new, 9, 2);
    let st = b_first_state();

    // Record the delta install of the new image into b, with a as the base.
    let mut rec = Recording::new(&b, &st);
    let mut src = MemSource::new(new_img.clone());
    let mut clock = FakeClock::default();
    let mut f = Fetcher::new(&mut src, &mut clock, RetryPolicy::default(), None);
    let keys = ring();
    let meta = fetch_meta(&mut f, Trust::Keyring(&keys), Some(0), Some(SLOT_LEN), None).unwrap();
    let mut base = a.clone();
    let p = plan(
        &meta,
        Some((&mut rec.b.dev, SLOT_LEN)),
        Some((&mut base, SLOT_LEN)),
        Trust::Keyring(&keys),
        1 << 20,
    )
    .unwrap();
    assert_eq!((p.counts.copy, p.counts.zero, p.counts.fetch), (5, 1, 2));
    let (w, _) = apply(
        &meta,
        &p,
        &mut f,
        &mut rec.b,
        SLOT_LEN,
        Some(&mut base),
        &mut stele_verifier::progress::Silent,
    )
    .unwrap();
    let (writes, flip_at) = rec.commit(w);

    let seen = every_prefix_boots(&writes, flip_at, &a, &b, &st, |cut, _, b_cut| {
        // The slot is the journal: a new run from this state finishes the install and
        // fetches only what the slot lacks.
        let mut target = b_cut;
        let mut again = MemSource::new(new_img.clone());
        let mut base = a.clone();
        let run = install(
            &mut again,
            &mut target,
            Some(&mut base),
            RetryPolicy::default(),
        )
        .unwrap_or_else(|e| panic!("re-run after {cut} writes: {e}"));
        assert!(run.stats.fetched_blocks <= 2, "re-run after {cut} writes");
        let mut slots = [a.clone(), target];
        let mut fresh_state = Cursor::new(vec![0u8; 8192]);
        initialize(&mut fresh_state, &BootState::initial(true)).unwrap();
        let mut s = load(&mut fresh_state).unwrap().0;
        s.activate_new(Slot::B, 3);
        store_state(&mut fresh_state, &s);
        assert_eq!(boot(&mut slots, &mut fresh_state).as_deref(), Some("2.9"));
    });
    assert_eq!(seen.len(), 3, "{seen:?}");
}

fn store_state(dev: &mut Cursor<Vec<u8>>, s: &BootState) {
    let (_, copy) = load(dev).unwrap();
    state::store(dev, s, copy).unwrap();
}

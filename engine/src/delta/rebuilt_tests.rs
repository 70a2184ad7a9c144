//! Tests of the published delta written without the new hash tree: the slot equals the
//! new image and only the delta (and the signed footer and envelope) are fetched; a delta
//! that lies (a tampered frame, a copy run from the wrong old blocks, a bomb) is given up
//! with one reason before anything could boot, the slot carrying the partial-install
//! record, and the writer with the signed tree then completes the install keeping the
//! good blocks.

#![allow(clippy::cast_possible_truncation)] // test sizes are small

use std::io::Cursor;

use super::apply::{apply_with, holds_part_of, partial_record};
use super::patched_tests::{delta, images, DSource, Lie};
use super::plan::plan;
use super::published::tests::patch;
use super::published::{envelope_digest, DeltaIndex, Piece};
use super::rebuilt::{apply_rebuilt, Rebuilt};
use super::tests::{assert_installed, slot_with, FakeClock, MemSource};
use super::*;
use crate::tests::SLOT_LEN;
use stele_verifier::footer::{Footer, FOOTER_LEN};
use stele_verifier::testutil::ring;

/// The signed footer and envelope of `src` (no tree), the delta `d`'s index and pieces,
/// then the rebuilt writer into `target` with `base` as the running slot.
fn rebuild(
    src: &mut MemSource,
    d: &mut DSource,
    target: &mut Cursor<Vec<u8>>,
    base: &mut Cursor<Vec<u8>>,
) -> (Meta, Result<(Written, apply::Stats), Rebuilt>) {
    let (mut c1, mut c2) = (FakeClock::default(), FakeClock::default());
    let keys = ring();
    let old = envelope_digest(base, SLOT_LEN).unwrap();
    let mut f = Fetcher::new(src, &mut c1, RetryPolicy::default(), None);
    let meta = fetch_head(&mut f, Trust::Keyring(&keys), Some(0), Some(SLOT_LEN)).unwrap();
    assert!(meta.tree.is_empty());
    let mut df = Fetcher::new(d, &mut c2, RetryPolicy::default(), None);
    let (index, n): (DeltaIndex, u64) = patched::fetch_index(&mut df, &meta, &old, None).unwrap();
    let pieces = index.pieces(meta.params.data_blocks()).unwrap();
    let r = apply_rebuilt(
        &meta,
        &index,
        &pieces,
        n,
        &mut df,
        target,
        SLOT_LEN,
        base,
        &mut stele_verifier::progress::Silent,
    );
    (meta, r)
}

#[test]
fn a_delta_written_without_the_tree_gives_the_new_image_and_fetches_only_the_delta() {
    let (old, new) = images();
    let d = delta(&old, 120, &new, &|_, _, _| None);
    let idx = published::listing(&d).unwrap().0;
    assert!(
        idx.pieces(120)
            .unwrap()
            .iter()
            .any(|p| matches!(p, Piece::Run(r) if r.from.is_some())),
        "the unchanged blocks are copy runs"
    );
    let mut src = MemSource::new(new.clone());
    let mut ds = DSource(MemSource::new(d.clone()));
    let mut target = Cursor::new(vec![0xee; SLOT_LEN as usize]);
    let (meta, r) = rebuild(&mut src, &mut ds, &mut target, &mut slot_with(&old));
    let (w, stats) = r.unwrap();
    // Before the commit the slot is not bootable: the record of this install is where
    // its footer goes.
    assert!(holds_part_of(&mut target, SLOT_LEN, &meta.envelope).unwrap());
    assert!(Footer::parse(
        &target.get_ref()[SLOT_LEN as usize - FOOTER_LEN..],
        SLOT_LEN
    )
    .is_err());
    let _ = crate::tests::commit(w, &mut target);
    assert_installed(&target, &new);
    assert_eq!(stats.patch_blocks, 14);
    assert_eq!(stats.copied, 106);
    // Fetched: the footer and envelope of the image, and the delta (its index is read
    // with the file's last 4 KiB, which also hold the end of its last frames); no tree.
    assert!(ds.0.sent <= d.len() as u64 + 4096);
    assert_eq!(src.sent, meta.fetched);
    assert_eq!(stats.fetched, src.sent + ds.0.sent);
    assert!(meta.fetched < 3 * 4096);
}

/// Rewrites the `from` (first old block) of the delta `d`'s first copy run as `to` says.
fn set_first_run_from(d: &mut [u8], to: &dyn Fn(u64) -> u64) {
    let il = published::index_len(&d[d.len() - 96..]).unwrap() as usize;
    let idx = DeltaIndex::parse(&d[d.len() - il..], d.len() as u64).unwrap();
    let at = d.len() - il + 32 * idx.frames.len() + 8;
    let from = u64::from_le_bytes(d[at..at + 8].try_into().unwrap());
    d[at..at + 8].copy_from_slice(&to(from).to_le_bytes());
}

/// After a delta that lies was given up, the writer with the signed tree completes the
/// install and keeps the blocks that match.
fn completes_with_the_tree(new: &[u8], old: &[u8], target: &mut Cursor<Vec<u8>>) -> u64 {
    let keys = ring();
    let mut clock = FakeClock::default();
    let mut src = MemSource::new(new.to_vec());
    let mut base = slot_with(old);
    let mut f = Fetcher::new(&mut src, &mut clock, RetryPolicy::default(), None);
    let meta = fetch_meta(&mut f, Trust::Keyring(&keys), Some(0), Some(SLOT_LEN), None).unwrap();
    let p = plan(
        &meta,
        Some((&mut *target, SLOT_LEN)),
        Some((&mut base, SLOT_LEN)),
        Trust::Keyring(&keys),
        16 * 4096,
    )
    .unwrap();
    let (w, _) = apply_with::<_, Cursor<Vec<u8>>>(
        &meta,
        &p,
        &mut f,
        None,
        None,
        target,
        SLOT_LEN,
        Some(&mut base),
        &mut stele_verifier::progress::Silent,
    )
    .unwrap();
    let _ = crate::tests::commit(w, target);
    assert_installed(target, new);
    p.counts.keep
}

#[test]
fn a_delta_that_lies_is_given_up_at_the_root_and_the_tree_completes_the_install() {
    let (old, new) = images();
    let tampered: Lie<'_> = &|k, data, r| (k == 0).then(|| patch(r, &vec![0x42; data.len()]));
    let bomb: Lie<'_> = &|k, _, r| (k == 0).then(|| patch(r, &vec![0u8; 1 << 20]));
    let honest: Lie<'_> = &|_, _, _| None;
    let cases: [(&str, Lie<'_>, bool, &str); 3] = [
        (
            "tampered frame",
            tampered,
            false,
            "the hash tree rebuilt from the blocks it gave has root ",
        ),
        (
            "bomb",
            bomb,
            false,
            "delta frame 0 decompresses to more than its 40960 bytes: refused",
        ),
        (
            "copy run from the wrong old blocks",
            honest,
            true,
            ", not the signed ",
        ),
    ];
    for (what, lie, wrong_run, why) in cases {
        let mut d = delta(&old, 120, &new, lie);
        if wrong_run {
            // The first copy run's source moved by two blocks (its entry's `from`; the
            // blocks of `images` come in equal pairs).
            set_first_run_from(&mut d, &|from| from + 2);
        }
        let mut target = Cursor::new(vec![0xee; SLOT_LEN as usize]);
        let (meta, r) = rebuild(
            &mut MemSource::new(new.clone()),
            &mut DSource(MemSource::new(d)),
            &mut target,
            &mut slot_with(&old),
        );
        match r {
            Err(Rebuilt::GivenUp(w)) => assert!(w.contains(why), "{what}: {w}"),
            Err(Rebuilt::Failed(e)) => panic!("{what}: failed: {e}"),
            Ok(_) => panic!("{what}: a lying delta was written"),
        }
        // Not bootable: the record of the unfinished install, no footer.
        assert_eq!(
            &target.get_ref()[SLOT_LEN as usize - FOOTER_LEN..],
            &partial_record(&meta.envelope)[..],
            "{what}"
        );
        let kept = completes_with_the_tree(&new, &old, &mut target);
        if what != "bomb" {
            assert!(kept >= 100, "{what}: kept {kept}");
        }
    }
}

/// Regression (untrusted numbers): a copy run that names old blocks near the end of the
/// u64 range is given up with one reason (its read fails), never an overflow.
#[test]
fn a_copy_run_past_the_running_slot_is_given_up() {
    let (old, new) = images();
    let mut d = delta(&old, 120, &new, &|_, _, _| None);
    set_first_run_from(&mut d, &|_| u64::MAX - 1000);
    let mut target = Cursor::new(vec![0xee; SLOT_LEN as usize]);
    let (_, r) = rebuild(
        &mut MemSource::new(new.clone()),
        &mut DSource(MemSource::new(d)),
        &mut target,
        &mut slot_with(&old),
    );
    match r {
        Err(Rebuilt::GivenUp(w)) => assert!(w.contains("from the running slot failed"), "{w}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
}

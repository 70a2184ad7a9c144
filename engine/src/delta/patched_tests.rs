//! Tests of the `delta` way without a network: a published delta from the running
//! release installs the new image byte for byte with fewer bytes than the other ways; a
//! cut install resumes; a delta that lies (a tampered frame, a bomb, another release's)
//! only costs bytes; the planner takes the compressed image when the delta is larger.

#![allow(clippy::cast_possible_truncation)] // test sizes are small

use std::io::Cursor;

use super::apply::{apply_with, Stats};
use super::patched::{fetch_index, DeltaPlan, Patched};
use super::plan::{plan, Action, Plan};
use super::published::tests::{noise, patch};
use super::published::{digest, encode_index, envelope_digest, CopyRun, PatchFrame};
use super::tests::{assert_installed, image_of, slot_with, FakeClock, MemSource};
use super::ways::{fetch_table, FramePlan, Framed, WayKind, Ways};
use super::ways_tests::{compressed, ZSource};
use super::*;
use crate::tests::SLOT_LEN;
use stele_verifier::testutil::ring;

/// A [`MemSource`] over a delta that decodes frames like the fetch client.
pub(crate) struct DSource(pub MemSource);

impl RangeSource for DSource {
    fn name(&self) -> String {
        "mem://image.delta".into()
    }
    fn len(&mut self) -> Result<u64, FetchError> {
        self.0.len()
    }
    fn read_range(&mut self, off: u64, len: u64, sink: Sink<'_>) -> Result<(), FetchError> {
        self.0.read_range(off, len, sink)
    }
    fn start_stream(&mut self) -> Result<(), FetchError> {
        self.0.start_stream()
    }
    fn read_stream(&mut self, buf: &mut [u8]) -> Result<usize, FetchError> {
        self.0.read_stream(buf)
    }
    fn read_patch(
        &mut self,
        frame: &published::PatchFrame,
        block_size: u64,
        reference: &[u8],
        sink: Sink<'_>,
    ) -> Result<(), FetchError> {
        read_patch_by_range(self, frame, block_size, reference, sink)
    }
}

/// What replaces delta frame `k` (its new bytes and reference given), if anything.
pub(crate) type Lie<'a> = &'a dyn Fn(usize, &[u8], &[u8]) -> Option<Vec<u8>>;

/// The plan of `new` on a device running `old` (nothing in the target).
fn plan_of(old: &[u8], new: &[u8]) -> (Plan, Meta) {
    let mut clock = FakeClock::default();
    let mut src = MemSource::new(new.to_vec());
    let mut f = Fetcher::new(&mut src, &mut clock, RetryPolicy::default(), None);
    let meta = fetch_meta(&mut f, Trust::Unsigned, None, None, None).unwrap();
    let mut base = slot_with(old);
    let p = plan::<Cursor<Vec<u8>>, _>(
        &meta,
        None,
        Some((&mut base, SLOT_LEN)),
        Trust::Unsigned,
        16 * 4096,
    )
    .unwrap();
    (p, meta)
}

/// A delta as the build side writes it (runs of fetched blocks, each against the old
/// blocks at the same offset and 8 around), frame `k` replaced by `lie` when it answers.
pub(crate) fn delta(old: &[u8], old_blocks: u64, new: &[u8], lie: Lie<'_>) -> Vec<u8> {
    let (p, meta) = plan_of(old, new);
    let mut frames = Vec::new();
    let mut bodies = Vec::new();
    let mut i = 0usize;
    while i < p.actions.len() {
        if p.actions[i] != Action::Fetch {
            i += 1;
            continue;
        }
        let s = i;
        while i < p.actions.len() && p.actions[i] == Action::Fetch && i - s < 256 {
            i += 1;
        }
        let n = (i - s) as u64;
        let rf = (s as u64).saturating_sub(8).min(old_blocks);
        let rb = (n + 16).min(old_blocks - rf);
        let reference = &old[rf as usize * 4096..(rf + rb) as usize * 4096];
        let data = &new[s * 4096..i * 4096];
        let body = lie(frames.len(), data, reference).unwrap_or_else(|| patch(reference, data));
        frames.push(PatchFrame {
            index: frames.len() as u64,
            offset: 0,
            len: body.len() as u64,
            first: s as u64,
            blocks: n,
            ref_first: rf,
            ref_blocks: rb,
        });
        bodies.push(body);
    }
    // The other blocks, one copy run each (as the build side writes them, unmerged).
    let runs: Vec<CopyRun> = p
        .actions
        .iter()
        .enumerate()
        .filter_map(|(i, a)| {
            let from = match a {
                Action::Copy(j) => Some(*j),
                Action::Zero => None,
                _ => return None,
            };
            Some(CopyRun {
                first: i as u64,
                blocks: 1,
                from,
            })
        })
        .collect();
    let old_env = envelope_digest(&mut slot_with(old), SLOT_LEN).unwrap();
    let mut out: Vec<u8> = bodies.concat();
    out.extend(encode_index(
        4096,
        meta.len,
        &old_env,
        &digest(&meta.envelope),
        &frames,
        &runs,
    ));
    out
}

struct DRun {
    plan: Plan,
    ways: Ways,
    stats: Stats,
    refused: Option<String>,
}

/// Signed first, plan, the ways (with the delta `d` and the compressed form `z`), apply.
fn install_d(
    src: &mut MemSource,
    z: Option<&mut ZSource>,
    d: &mut DSource,
    target: &mut Cursor<Vec<u8>>,
    base: &mut Cursor<Vec<u8>>,
) -> Result<DRun, DeltaError> {
    let (mut c1, mut c2, mut c3) = (
        FakeClock::default(),
        FakeClock::default(),
        FakeClock::default(),
    );
    let policy = RetryPolicy {
        deadline: std::time::Duration::from_secs(60),
        ..RetryPolicy::default()
    };
    let keys = ring();
    let old = envelope_digest(base, SLOT_LEN).unwrap();
    let mut f = Fetcher::new(src, &mut c1, policy, None);
    let meta = fetch_meta(&mut f, Trust::Keyring(&keys), Some(0), Some(SLOT_LEN), None)?;
    let p = plan(
        &meta,
        Some((&mut *target, SLOT_LEN)),
        Some((&mut *base, SLOT_LEN)),
        Trust::Keyring(&keys),
        16 * 4096,
    )?;
    let mut zf = z.map(|z| Fetcher::new(z, &mut c2, policy, None));
    let mut df = Fetcher::new(d, &mut c3, policy, None);
    let table = match zf.as_mut() {
        Some(zf) => fetch_table(zf, &meta),
        None => Err("none".into()),
    };
    let frames = table.clone().map(|(t, n)| FramePlan::new(&p, t, n, 16));
    let dp = fetch_index(&mut df, &meta, &old, None)
        .map(|(i, n)| DeltaPlan::new(&p, i, n, table.ok(), 16));
    let ways = Ways::choose_with_delta(&p, frames, dp);
    let dp = ways.delta_plan().cloned();
    let fp = ways.framed_plan().map(|(f, _)| f.clone());
    let mut framed = match (fp.as_ref(), zf.as_mut()) {
        (Some(fp), Some(zf)) => Some(Framed::new(zf, fp, false)),
        _ => None,
    };
    let mut patched = dp.as_ref().map(|dp| Patched::new(&mut df, dp));
    let (w, stats) = apply_with(
        &meta,
        &p,
        &mut f,
        framed.as_mut(),
        patched.as_mut(),
        target,
        SLOT_LEN,
        Some(base),
        &mut stele_verifier::progress::Silent,
    )?;
    let refused = patched.and_then(|p| p.refused);
    let _ = crate::tests::commit(w, target);
    Ok(DRun {
        plan: p,
        ways,
        stats,
        refused,
    })
}

/// 120 blocks that do not compress, and the next release: 10 blocks changed by a few
/// bytes each (a patched file), 4 new ones; the rest the same.
fn pair() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let old: Vec<Vec<u8>> = (0..120).map(|i| noise(4096, 1000 + i)).collect();
    let mut new = old.clone();
    for b in &mut new[10..20] {
        b[100] ^= 0x5a;
        b[3000] ^= 0x33;
    }
    for (k, b) in new[60..64].iter_mut().enumerate() {
        *b = noise(4096, 77 + k as u64);
    }
    (old, new)
}

pub(crate) fn images() -> (Vec<u8>, Vec<u8>) {
    let (o, n) = pair();
    (image_of(&o, 1, 1), image_of(&n, 1, 2))
}

#[test]
fn a_published_delta_installs_the_new_image_with_the_fewest_bytes() {
    let (old, new) = images();
    let d = delta(&old, 120, &new, &|_, _, _| None);
    let mut src = MemSource::new(new.clone());
    let mut z = ZSource(MemSource::new(compressed(&new, &|_, _| None)));
    let mut ds = DSource(MemSource::new(d));
    let mut target = Cursor::new(vec![0xee; SLOT_LEN as usize]);
    let mut base = slot_with(&old);
    let run = install_d(&mut src, Some(&mut z), &mut ds, &mut target, &mut base).unwrap();
    assert_installed(&target, &new);
    assert_eq!(run.ways.chosen, WayKind::Delta, "{}", run.ways.describe());
    assert_eq!(run.refused, None);
    assert_eq!(run.plan.counts.fetch, 14);
    assert!(
        run.stats.patch_blocks >= 10,
        "the changed blocks came from the delta"
    );
    let by = |k| run.ways.ways.iter().find(|w| w.kind == k).unwrap().bytes;
    assert!(by(WayKind::Delta) < by(WayKind::Zstd));
    assert!(by(WayKind::Delta) < by(WayKind::Raw));
    // The delta's index and frames are what was fetched of it, as priced.
    let dp = run.ways.delta.as_ref().unwrap();
    assert_eq!(ds.0.sent, dp.index_fetched + dp.frame_bytes);
    // The summary counts every byte sent: the signed metadata, the compressed form's
    // table and frames of the rest, the delta.
    assert_eq!(src.sent + z.0.sent + ds.0.sent, run.stats.fetched);
}

/// A cut anywhere (a power cut: the target keeps a prefix of what was written) and a new
/// run: the blocks in place are kept, the rest comes again from the delta.
#[test]
fn a_delta_install_cut_at_any_offset_resumes() {
    let (old, new) = images();
    let d = delta(&old, 120, &new, &|_, _, _| None);
    let mut whole = Cursor::new(vec![0xee; SLOT_LEN as usize]);
    install_d(
        &mut MemSource::new(new.clone()),
        None,
        &mut DSource(MemSource::new(d.clone())),
        &mut whole,
        &mut slot_with(&old),
    )
    .unwrap();
    for cut in [1usize, 4096 * 12 + 77, 4096 * 19, 4096 * 61 + 5, 4096 * 100] {
        let mut target = Cursor::new(vec![0xee; SLOT_LEN as usize]);
        target.get_mut()[..cut].copy_from_slice(&whole.get_ref()[..cut]);
        let mut ds = DSource(MemSource::new(d.clone()));
        let run = install_d(
            &mut MemSource::new(new.clone()),
            None,
            &mut ds,
            &mut target,
            &mut slot_with(&old),
        )
        .unwrap();
        assert_installed(&target, &new);
        assert_eq!(run.refused, None, "cut at {cut}");
        assert!(run.plan.counts.keep >= (cut / 4096) as u64, "cut at {cut}");
    }
}

/// A tampered delta frame (valid zstd of other bytes) is refused block by block: its
/// blocks fail the signed tree and are fetched raw, and the way is given up.
#[test]
fn a_tampered_delta_frame_is_refused_block_by_block_and_the_install_completes() {
    let (old, new) = images();
    let lie = |k: usize, data: &[u8], r: &[u8]| (k == 0).then(|| patch(r, &vec![0x42; data.len()]));
    let d = delta(&old, 120, &new, &lie);
    let mut src = MemSource::new(new.clone());
    let mut ds = DSource(MemSource::new(d));
    let mut target = Cursor::new(vec![0xee; SLOT_LEN as usize]);
    let run = install_d(&mut src, None, &mut ds, &mut target, &mut slot_with(&old)).unwrap();
    assert_installed(&target, &new);
    assert_eq!(run.ways.chosen, WayKind::Delta);
    let why = run.refused.unwrap();
    assert!(
        why.contains("delta frame 0 gave data block 10, which does not match the signed hash tree"),
        "{why}"
    );
    assert_eq!(run.stats.patch_blocks, 0);
}

/// Regression (decompression bomb): a delta frame that decodes to more than its index
/// entry says is refused with one line, and the install completes raw.
#[test]
fn a_decompression_bomb_delta_frame_is_refused_with_one_line() {
    let (old, new) = images();
    let lie = |k: usize, _: &[u8], r: &[u8]| (k == 0).then(|| patch(r, &vec![0u8; 1 << 20]));
    let d = delta(&old, 120, &new, &lie);
    let mut ds = DSource(MemSource::new(d));
    let mut target = Cursor::new(vec![0xee; SLOT_LEN as usize]);
    let run = install_d(
        &mut MemSource::new(new.clone()),
        None,
        &mut ds,
        &mut target,
        &mut slot_with(&old),
    )
    .unwrap();
    assert_installed(&target, &new);
    assert_eq!(
        run.refused.unwrap(),
        "mem://image.delta: delta frame 0 decompresses to more than its 40960 bytes: refused"
    );
}

/// The planner takes the compressed full image when the delta would be larger: here the
/// new data compress well and the delta's frames are stored uncompressed.
#[test]
fn the_planner_picks_the_compressed_image_when_the_delta_is_larger() {
    let old: Vec<Vec<u8>> = (0..120).map(|i| noise(4096, 1000 + i)).collect();
    let new: Vec<Vec<u8>> = (0..120u8).map(|i| vec![i % 3 + 1; 4096]).collect();
    let (old, new) = (image_of(&old, 1, 1), image_of(&new, 1, 2));
    let stored = |_: usize, data: &[u8], _: &[u8]| {
        Some(zstd::bulk::compress(&noise(data.len(), 5), 1).unwrap())
    };
    let d = delta(&old, 120, &new, &stored);
    let mut z = ZSource(MemSource::new(compressed(&new, &|_, _| None)));
    let mut ds = DSource(MemSource::new(d));
    let mut target = Cursor::new(vec![0xee; SLOT_LEN as usize]);
    let run = install_d(
        &mut MemSource::new(new.clone()),
        Some(&mut z),
        &mut ds,
        &mut target,
        &mut slot_with(&old),
    )
    .unwrap();
    assert_installed(&target, &new);
    assert_eq!(run.ways.chosen, WayKind::Zstd, "{}", run.ways.describe());
    assert!(
        run.ways.describe().contains(", delta "),
        "{}",
        run.ways.describe()
    );
    assert_eq!(run.stats.patches, 0);
}

/// A delta from another release (the device runs something else) is not used.
#[test]
fn a_delta_from_another_release_is_not_used() {
    let (old, new) = images();
    let other = image_of(&pair().0[..100], 1, 1);
    let d = delta(&other, 100, &new, &|_, _, _| None);
    let mut ds = DSource(MemSource::new(d));
    let mut target = Cursor::new(vec![0xee; SLOT_LEN as usize]);
    let run = install_d(
        &mut MemSource::new(new.clone()),
        None,
        &mut ds,
        &mut target,
        &mut slot_with(&old),
    )
    .unwrap();
    assert_installed(&target, &new);
    assert_eq!(run.ways.chosen, WayKind::Raw);
    assert!(
        run.ways
            .describe()
            .contains("no delta way: the delta starts from another release than the running one"),
        "{}",
        run.ways.describe()
    );
}

/// A delta the signed channel lists is used only with its listed length and index digest
/// (what `stele channel build --delta` computed with `published::listing`); a server that
/// serves another length or another index leaves the other ways.
#[test]
fn a_listed_delta_with_another_length_or_index_digest_is_not_used() {
    let (old, new) = images();
    let d = delta(&old, 120, &new, &|_, _, _| None);
    let (index, sha256, index_sha256) = published::listing(&d).unwrap();
    assert_eq!(
        index.old_envelope,
        envelope_digest(&mut slot_with(&old), SLOT_LEN).unwrap()
    );
    let listed = stele_verifier::channel::ReleaseDelta {
        from_sha256: index.old_envelope,
        from_version: "1".into(),
        url: "d".into(),
        length: d.len() as u64,
        sha256,
        index_sha256,
    };
    let (_, meta) = plan_of(&old, &new);
    let fetch = |l: &stele_verifier::channel::ReleaseDelta| {
        let mut clock = FakeClock::default();
        let mut ds = DSource(MemSource::new(d.clone()));
        let mut f = Fetcher::new(&mut ds, &mut clock, RetryPolicy::default(), None);
        fetch_index(&mut f, &meta, &index.old_envelope, Some(l)).map(|(i, _)| i)
    };
    assert_eq!(fetch(&listed).unwrap(), index);
    let longer = stele_verifier::channel::ReleaseDelta {
        length: listed.length + 1,
        ..listed.clone()
    };
    let e = fetch(&longer).unwrap_err();
    assert!(
        e.contains(&format!(
            "it is {} bytes, the channel lists {}",
            d.len(),
            d.len() + 1
        )),
        "{e}"
    );
    let mut other = listed.clone();
    other.index_sha256[0] ^= 1;
    let e = fetch(&other).unwrap_err();
    assert!(
        e.contains("its index and trailer have sha256") && e.contains("the channel lists"),
        "{e}"
    );
    // Not a delta at all: the build side refuses it with the index's reason.
    assert!(published::listing(&d[..d.len() - 1]).is_err());
    assert!(published::listing(b"short").is_err());
}

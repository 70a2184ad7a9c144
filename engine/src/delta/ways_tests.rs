//! Tests of the ways (raw blocks, the compressed form's frames) without a network: the
//! planner's byte counts are what is fetched, it never picks more bytes than the other
//! way, and a lying compressed form (a tampered frame, a decompression bomb, a table of
//! another image) only costs bytes: the slot still equals the image byte for byte.

#![allow(clippy::cast_possible_truncation)] // test sizes are small

use std::io::Cursor;

use super::apply::{apply_with, Stats};
use super::plan::{plan, Plan};
use super::tests::{assert_installed, block, image_of, slot_with, FakeClock, Fault, MemSource};
use super::ways::{fetch_table, FramePlan, Framed, WayKind, Ways};
use super::zst::{encode_table, FRAME_RAW};
use super::*;
use crate::tests::SLOT_LEN;
use stele_verifier::testutil::ring;

/// The compressed form of `img` as the build side writes it (`zstd` level 3 here), frame
/// `k` replaced by `swap(k, raw)` when that returns bytes.
/// What replaces frame `k` (its raw bytes given), if anything.
pub(crate) type Swap<'a> = &'a dyn Fn(usize, &[u8]) -> Option<Vec<u8>>;

pub(crate) fn compressed(img: &[u8], swap: Swap<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut entries = Vec::new();
    for (k, raw) in img.chunks(FRAME_RAW as usize).enumerate() {
        let f = swap(k, raw).unwrap_or_else(|| zstd::bulk::compress(raw, 3).unwrap());
        entries.push((f.len() as u32, raw.len() as u32));
        out.extend_from_slice(&f);
    }
    out.extend_from_slice(&encode_table(&entries));
    out
}

/// A [`MemSource`] over a compressed form that decodes frames like the fetch client.
pub(crate) struct ZSource(pub MemSource);

impl RangeSource for ZSource {
    fn name(&self) -> String {
        "mem://image.zst".into()
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
    fn read_frame(&mut self, frame: &zst::Frame, sink: Sink<'_>) -> Result<(), FetchError> {
        read_frame_by_range(self, frame, sink)
    }
}

struct ZRun {
    plan: Plan,
    ways: Ways,
    stats: Stats,
    refused: Option<String>,
    meta_fetched: u64,
}

/// Signed first, plan, the ways (with the compressed form `z`), apply the chosen one.
fn install_z(
    src: &mut MemSource,
    z: &mut ZSource,
    target: &mut Cursor<Vec<u8>>,
    base: Option<&mut Cursor<Vec<u8>>>,
) -> Result<ZRun, DeltaError> {
    let mut clock = FakeClock::default();
    let mut zclock = FakeClock::default();
    let policy = RetryPolicy {
        deadline: std::time::Duration::from_secs(60),
        ..RetryPolicy::default()
    };
    let mut f = Fetcher::new(src, &mut clock, policy, None);
    let mut zf = Fetcher::new(z, &mut zclock, policy, None);
    let keys = ring();
    let mut base = base;
    let meta = fetch_meta(&mut f, Trust::Keyring(&keys), Some(0), Some(SLOT_LEN), None)?;
    let p = plan(
        &meta,
        Some((&mut *target, SLOT_LEN)),
        base.as_deref_mut().map(|b| (b, SLOT_LEN)),
        Trust::Keyring(&keys),
        16 * 4096,
    )?;
    let fp = fetch_table(&mut zf, &meta).map(|(t, n)| FramePlan::new(&p, t, n, 16));
    let ways = Ways::choose(&p, fp);
    let fp = ways.frames.clone().filter(|_| ways.chosen == WayKind::Zstd);
    let mut framed = fp.as_ref().map(|fp| Framed::new(&mut zf, fp, false));
    let (w, stats) = apply_with(
        &meta,
        &p,
        &mut f,
        framed.as_mut(),
        None,
        target,
        SLOT_LEN,
        base,
        &mut stele_verifier::progress::Silent,
    )?;
    let refused = framed.and_then(|f| f.refused);
    let _ = crate::tests::commit(w, target);
    Ok(ZRun {
        plan: p,
        ways,
        stats,
        refused,
        meta_fetched: meta.fetched,
    })
}

/// 200 blocks that compress well (a tag and a fill byte each).
fn new_blocks() -> Vec<Vec<u8>> {
    (0..200u16).map(|t| block(t, (t % 7) as u8 + 1)).collect()
}

/// A fresh install (nothing reused) takes the whole compressed image: the slot equals
/// the image, and exactly the planned bytes were fetched.
#[test]
fn a_fresh_install_takes_the_compressed_image_and_fetches_what_it_planned() {
    let img = image_of(&new_blocks(), 1, 2);
    let mut src = MemSource::new(img.clone());
    let mut z = ZSource(MemSource::new(compressed(&img, &|_, _| None)));
    let mut target = Cursor::new(vec![0xee; SLOT_LEN as usize]);
    let run = install_z(&mut src, &mut z, &mut target, None).unwrap();
    assert_installed(&target, &img);
    assert_eq!(run.ways.chosen, WayKind::Zstd, "{}", run.ways.describe());
    assert_eq!(run.refused, None);
    assert_eq!(run.stats.frame_blocks, run.plan.counts.fetch);
    assert_eq!(run.stats.fetched, run.meta_fetched + run.ways.bytes());
    assert_eq!(src.sent + z.0.sent, run.stats.fetched);
    assert!(
        run.ways.bytes() * 10 < run.plan.fetch_bytes(),
        "{}",
        run.ways.describe()
    );
}

/// The planner picks the compressed full image when the block delta would be larger:
/// a base that shares nothing with the new image.
#[test]
fn the_planner_picks_the_compressed_image_when_the_delta_is_larger() {
    let img = image_of(&new_blocks(), 1, 2);
    let other: Vec<Vec<u8>> = (0..50u16).map(|t| block(5000 + t, 0x55)).collect();
    let mut base = slot_with(&image_of(&other, 1, 1));
    let mut src = MemSource::new(img.clone());
    let mut z = ZSource(MemSource::new(compressed(&img, &|_, _| None)));
    let mut target = Cursor::new(vec![0xee; SLOT_LEN as usize]);
    let run = install_z(&mut src, &mut z, &mut target, Some(&mut base)).unwrap();
    assert_installed(&target, &img);
    assert_eq!(run.plan.counts.copy, 0);
    assert_eq!(run.ways.chosen, WayKind::Zstd);
    let raw = run
        .ways
        .ways
        .iter()
        .find(|w| w.kind == WayKind::Raw)
        .unwrap();
    assert!(raw.bytes > run.ways.bytes(), "{}", run.ways.describe());
    assert_eq!(src.sent + z.0.sent, run.meta_fetched + run.ways.bytes());
}

/// Data that does not compress: the raw way costs fewer bytes and is taken, and the
/// compressed form costs only its table.
#[test]
fn incompressible_data_is_fetched_raw() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<Vec<u8>> = (0..80)
        .map(|_| {
            (0..4096)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        })
        .collect();
    let img = image_of(&noise, 1, 2);
    let mut src = MemSource::new(img.clone());
    let mut z = ZSource(MemSource::new(compressed(&img, &|_, _| None)));
    let mut target = Cursor::new(vec![0xee; SLOT_LEN as usize]);
    let run = install_z(&mut src, &mut z, &mut target, None).unwrap();
    assert_installed(&target, &img);
    assert_eq!(run.ways.chosen, WayKind::Raw, "{}", run.ways.describe());
    assert_eq!(run.stats.frames, 0);
    assert_eq!(src.sent, run.meta_fetched + run.plan.fetch_bytes());
}

/// A tampered frame (valid zstd of other bytes) is refused block by block: its blocks
/// fail the signed tree, are fetched raw, and the way is given up with the reason.
#[test]
fn a_tampered_frame_is_refused_block_by_block_and_the_install_completes_raw() {
    let img = image_of(&new_blocks(), 1, 2);
    let lie = |k: usize, raw: &[u8]| {
        (k == 1).then(|| zstd::bulk::compress(&vec![0x42; raw.len()], 3).unwrap())
    };
    let mut src = MemSource::new(img.clone());
    let mut z = ZSource(MemSource::new(compressed(&img, &lie)));
    let mut target = Cursor::new(vec![0xee; SLOT_LEN as usize]);
    let run = install_z(&mut src, &mut z, &mut target, None).unwrap();
    assert_installed(&target, &img);
    let why = run.refused.unwrap();
    assert!(why.contains("frame 1 gave data block 64"), "{why}");
    assert!(why.contains("signed hash tree"), "{why}");
    assert_eq!(run.stats.frames, 2, "no frame is fetched after the refusal");
}

/// Regression (decompression bomb): a frame that decodes to more than the table says is
/// refused with one line naming it, and the install completes from the raw image.
#[test]
fn a_decompression_bomb_frame_is_refused_with_one_line() {
    let img = image_of(&new_blocks(), 1, 2);
    let bomb =
        |k: usize, _: &[u8]| (k == 2).then(|| zstd::bulk::compress(&[0u8; 8 << 20], 3).unwrap());
    let mut src = MemSource::new(img.clone());
    let mut z = ZSource(MemSource::new(compressed(&img, &bomb)));
    let mut target = Cursor::new(vec![0xee; SLOT_LEN as usize]);
    let run = install_z(&mut src, &mut z, &mut target, None).unwrap();
    assert_installed(&target, &img);
    let why = run.refused.unwrap();
    assert_eq!(
        why,
        "mem://image.zst: frame 2 decompresses to more than its 262144 bytes: refused"
    );
    assert!(!why.contains('\n'));
}

/// A cut in the middle of a frame's answer is retried; the frame arrives whole.
#[test]
fn a_cut_frame_is_fetched_again() {
    let img = image_of(&new_blocks(), 1, 2);
    let zfile = compressed(&img, &|_, _| None);
    let mut src = MemSource::new(img.clone());
    let mut z = ZSource(MemSource::new(zfile));
    let mut target = Cursor::new(vec![0xee; SLOT_LEN as usize]);
    z.0.faults
        .push_back(Fault::Busy(std::time::Duration::from_millis(10)));
    z.0.faults
        .push_back(Fault::Busy(std::time::Duration::from_millis(10)));
    z.0.faults.push_back(Fault::Cut(100));
    let run = install_z(&mut src, &mut z, &mut target, None).unwrap();
    assert_installed(&target, &img);
    assert_eq!(run.refused, None);
    assert_eq!(run.ways.chosen, WayKind::Zstd);
}

/// A compressed form of another image (a stale upload) is not used: the table says so
/// and the install fetches raw.
#[test]
fn a_compressed_form_of_another_image_is_not_used() {
    let img = image_of(&new_blocks(), 1, 2);
    let older = image_of(&new_blocks()[..150], 1, 1);
    let mut src = MemSource::new(img.clone());
    let mut z = ZSource(MemSource::new(compressed(&older, &|_, _| None)));
    let mut target = Cursor::new(vec![0xee; SLOT_LEN as usize]);
    let run = install_z(&mut src, &mut z, &mut target, None).unwrap();
    assert_installed(&target, &img);
    assert_eq!(run.ways.chosen, WayKind::Raw);
    assert!(
        run.ways.describe().contains("belongs to another image"),
        "{}",
        run.ways.describe()
    );
}

/// A resumed install (a cut left the first half of the image in the target) takes only
/// the frames of the blocks still missing: the kept blocks cost nothing.
#[test]
fn a_resumed_install_fetches_only_the_frames_it_still_lacks() {
    let img = image_of(&new_blocks(), 1, 2);
    let zfile = compressed(&img, &|_, _| None);
    let mut whole = ZSource(MemSource::new(zfile.clone()));
    let mut target = Cursor::new(vec![0xee; SLOT_LEN as usize]);
    let first = install_z(
        &mut MemSource::new(img.clone()),
        &mut whole,
        &mut target,
        None,
    )
    .unwrap();
    let mut target = Cursor::new(vec![0xee; SLOT_LEN as usize]);
    let half = 100 * 4096;
    target.get_mut()[..half].copy_from_slice(&img[..half]);
    let mut z = ZSource(MemSource::new(zfile));
    let run = install_z(&mut MemSource::new(img.clone()), &mut z, &mut target, None).unwrap();
    assert_installed(&target, &img);
    assert_eq!(run.plan.counts.keep, 100);
    assert_eq!(run.ways.chosen, WayKind::Zstd);
    // Frame 0 (blocks 0..64) is not fetched again; frame 1 (64..128) still is.
    assert_eq!(run.stats.frames, first.stats.frames - 1);
    assert!(z.0.sent < whole.0.sent, "{} >= {}", z.0.sent, whole.0.sent);
}

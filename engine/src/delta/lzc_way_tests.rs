//! Tests of the `lzc` way (the chained form's frames) without a network: a fresh install
//! decodes its frames in one run with no priming; a partial update primes the source's
//! decoder with the target slot's bytes between the frames it takes (or, when the source
//! lost its decoder, with the whole window); the planner prices it exactly; a tampered
//! frame only costs bytes: the slot still equals the image byte for byte.

#![allow(clippy::cast_possible_truncation)] // test sizes are small

use std::io::{Cursor, Write};

use super::apply::{apply_with, Stats};
use super::lzc::{Chain, Prime, DICT, FRAME_RAW, LZC};
use super::plan::plan;
use super::tests::{image_of, FakeClock, MemSource, BS};
use super::ways::{fetch_chained_table, FramePlan, Framed, WayKind, Ways};
use super::zst::{encode_table_of, Frame};
use super::*;
use stele_verifier::testutil::ring;

/// The slots of these tests: room for three frames and the tree.
const LEN: u64 = 16 << 20;

/// Data blocks of the images: a little over two frames.
const BLOCKS: usize = 2600;

/// A block of pseudo-random bytes, one of a few patterns: a frame compresses only by
/// matches, and a later frame's first use of a pattern matches into the frames before
/// it (so a decoder primed with the wrong bytes gives wrong blocks).
fn pattern(p: u64) -> Vec<u8> {
    let mut x = p.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..BS)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn blocks(f: impl Fn(usize) -> u64) -> Vec<Vec<u8>> {
    (0..BLOCKS).map(|i| pattern(f(i))).collect()
}

/// Frame `k` of the chained form of `img`, as the build side writes it (a faster preset
/// here; the decoder does not depend on it).
fn frame(img: &[u8], k: usize) -> Vec<u8> {
    use lzma_rust2::{Lzma2Options, Lzma2Writer};
    let (fr, dict) = (FRAME_RAW as usize, DICT as usize);
    let start = (k * fr).min(img.len());
    let end = (start + fr).min(img.len());
    let mut o = Lzma2Options::with_preset(3);
    o.lzma_options.dict_size = DICT as u32;
    if start > 0 {
        o.lzma_options.preset_dict = Some(img[start.saturating_sub(dict)..start].to_vec());
    }
    let mut w = Lzma2Writer::new(Vec::new(), o);
    w.write_all(&img[start..end]).unwrap();
    w.finish().unwrap()
}

/// The chained form of `img`, frame `k` replaced by `swap(k, frame)` when that returns
/// bytes.
fn chained(img: &[u8], swap: super::ways_tests::Swap<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut entries = Vec::new();
    for k in 0..img.len().div_ceil(FRAME_RAW as usize) {
        let f = frame(img, k);
        let f = swap(k, &f).unwrap_or(f);
        let raw = (img.len() - k * FRAME_RAW as usize).min(FRAME_RAW as usize);
        entries.push((f.len() as u32, raw as u32));
        out.extend_from_slice(&f);
    }
    out.extend_from_slice(&encode_table_of(&LZC, &entries));
    out
}

/// A chained form served by a source that decodes like the fetch client, with what it
/// was primed with; `forget`: it loses its decoder before every frame (a client that was
/// started again).
struct LSource {
    mem: MemSource,
    chain: Chain,
    forget: bool,
    primes: Vec<(u64, u64)>,
}

impl LSource {
    fn new(file: Vec<u8>) -> Self {
        LSource {
            mem: MemSource::new(file),
            chain: Chain::default(),
            forget: false,
            primes: Vec::new(),
        }
    }
}

impl RangeSource for LSource {
    fn name(&self) -> String {
        "mem://image.lzc".into()
    }
    fn len(&mut self) -> Result<u64, FetchError> {
        self.mem.len()
    }
    fn read_range(&mut self, off: u64, len: u64, sink: Sink<'_>) -> Result<(), FetchError> {
        self.mem.read_range(off, len, sink)
    }
    fn start_stream(&mut self) -> Result<(), FetchError> {
        self.mem.start_stream()
    }
    fn read_stream(&mut self, buf: &mut [u8]) -> Result<usize, FetchError> {
        self.mem.read_stream(buf)
    }
    fn read_chain(
        &mut self,
        frame: &Frame,
        prime: Prime<'_>,
        sink: Sink<'_>,
    ) -> Result<(), FetchError> {
        self.primes.push((prime.off, prime.len));
        if self.forget {
            self.chain = Chain::default();
        }
        self.chain.read(&mut self.mem, frame, prime, sink)
    }
}

struct LRun {
    ways: Ways,
    stats: Stats,
    refused: Option<String>,
    meta_fetched: u64,
}

/// Signed first, plan into `target` (no base), the ways (raw, and `lzc` from `l`), apply
/// the chosen one.
fn install_l(
    img: &[u8],
    l: &mut LSource,
    target: &mut Cursor<Vec<u8>>,
) -> Result<LRun, DeltaError> {
    let mut src = MemSource::new(img.to_vec());
    let (mut c1, mut c2) = (FakeClock::default(), FakeClock::default());
    let policy = RetryPolicy {
        deadline: std::time::Duration::from_secs(60),
        ..RetryPolicy::default()
    };
    let mut f = Fetcher::new(&mut src, &mut c1, policy, None);
    let mut lf = Fetcher::new(l, &mut c2, policy, None);
    let keys = ring();
    let meta = fetch_meta(&mut f, Trust::Keyring(&keys), Some(0), Some(LEN), None)?;
    let p = plan(
        &meta,
        Some((&mut *target, LEN)),
        None::<(&mut Cursor<Vec<u8>>, u64)>,
        Trust::Keyring(&keys),
        16 * 4096,
    )?;
    let lp = fetch_chained_table(&mut lf, &meta).map(|(t, n)| FramePlan::new(&p, t, n, 16));
    let ways = Ways::choose(&p, Err("none here".into())).with_chained(lp);
    let fp = ways.framed_plan().map(|(f, c)| (f.clone(), c));
    let mut framed = fp.as_ref().map(|(fp, c)| Framed::new(&mut lf, fp, *c));
    let (w, stats) = apply_with(
        &meta,
        &p,
        &mut f,
        framed.as_mut(),
        None,
        target,
        LEN,
        None::<&mut Cursor<Vec<u8>>>,
        &mut stele_verifier::progress::Silent,
    )?;
    let refused = framed.and_then(|f| f.refused);
    drop(w);
    Ok(LRun {
        ways,
        stats,
        refused,
        meta_fetched: meta.fetched,
    })
}

fn slot(img: &[u8]) -> Cursor<Vec<u8>> {
    Cursor::new(stele_verifier::testutil::slot_with(img, LEN as usize))
}

/// The target's image region equals the new image's (the footer is the commit's).
fn assert_slot(target: &Cursor<Vec<u8>>, img: &[u8]) {
    let body = img.len() - stele_verifier::footer::FOOTER_LEN;
    let image_len = stele_verifier::footer::Footer::parse(&img[body..], img.len() as u64)
        .unwrap()
        .image_len as usize;
    assert!(
        target.get_ref()[..image_len] == img[..image_len],
        "the slot differs"
    );
}

/// The new image: 64 patterns, frame by frame in another order.
fn new_image() -> Vec<u8> {
    image_of(&blocks(|i| (i as u64 * 7) % 64), 1, 2)
}

/// A fresh install takes the chained form in one run: no frame is primed, every block
/// comes from a frame, the slot equals the image, and the bytes fetched are the plan's.
#[test]
fn a_fresh_install_decodes_the_chained_frames_in_one_run() {
    let img = new_image();
    let mut l = LSource::new(chained(&img, &|_, _| None));
    let mut target = Cursor::new(vec![0u8; LEN as usize]);
    let run = install_l(&img, &mut l, &mut target).unwrap();
    assert_eq!(run.ways.chosen, WayKind::Lzc, "{}", run.ways.describe());
    assert_eq!(run.refused, None);
    assert_slot(&target, &img);
    assert_eq!(run.stats.frames, 3);
    assert_eq!(run.stats.frame_blocks, BLOCKS as u64);
    assert!(l.primes.iter().all(|p| p.1 == 0), "{:?}", l.primes);
    assert_eq!(run.stats.fetched, run.meta_fetched + run.ways.bytes());
    let raw = run
        .ways
        .ways
        .iter()
        .find(|w| w.kind == WayKind::Raw)
        .unwrap();
    assert!(run.ways.bytes() * 10 < raw.bytes, "{}", run.ways.describe());
}

/// An update that changes the first and the last frame only: the frame between is kept in
/// the slot, and the last frame's decoder takes it from the slot (4 MiB, not the whole
/// window); a source that lost its decoder is primed with the whole window instead. The
/// slot equals the image either way.
#[test]
fn a_partial_update_primes_the_decoder_from_the_target_slot() {
    let old = image_of(&blocks(|i| (i as u64 * 7) % 64), 1, 2);
    let changed = |i: usize| !(200..2 * 1024 + 100).contains(&i);
    let img = image_of(
        &blocks(|i| {
            if changed(i) {
                (i as u64 * 11) % 64
            } else {
                (i as u64 * 7) % 64
            }
        }),
        1,
        3,
    );
    for forget in [false, true] {
        let mut l = LSource::new(chained(&img, &|_, _| None));
        l.forget = forget;
        let mut target = slot(&old);
        let run = install_l(&img, &mut l, &mut target).unwrap();
        assert_eq!(run.ways.chosen, WayKind::Lzc, "{}", run.ways.describe());
        assert_eq!(run.refused, None, "forget {forget}");
        assert_slot(&target, &img);
        assert_eq!(run.stats.frames, 2, "{:?}", l.primes);
        let frame2 = 2 * FRAME_RAW;
        let want = if forget {
            vec![(0, 0), (frame2 - FRAME_RAW, FRAME_RAW), (0, frame2)]
        } else {
            vec![(0, 0), (FRAME_RAW, FRAME_RAW)]
        };
        assert_eq!(l.primes, want, "forget {forget}");
    }
}

/// A tampered chained frame ends the way: its blocks and the later ones are fetched raw,
/// and the slot still equals the image.
#[test]
fn a_tampered_chained_frame_costs_bytes_not_the_slot() {
    let img = new_image();
    let mut l = LSource::new(chained(&img, &|k, f| {
        (k == 1).then(|| {
            let mut f = f.to_vec();
            let n = f.len();
            f[n / 2] ^= 0x55;
            f
        })
    }));
    let mut target = Cursor::new(vec![0u8; LEN as usize]);
    let run = install_l(&img, &mut l, &mut target).unwrap();
    assert_eq!(run.ways.chosen, WayKind::Lzc);
    let why = run.refused.expect("the way was given up");
    assert!(why.contains("frame 1"), "{why}");
    assert_slot(&target, &img);
    assert_eq!(run.stats.frame_blocks, FRAME_RAW / BS as u64);
}

/// The source's decoder refuses a priming that is not the image before the frame, and
/// one that would continue a decoder it does not have.
#[test]
fn a_wrong_priming_is_refused() {
    let img = new_image();
    let file = chained(&img, &|_, _| None);
    let mut l = LSource::new(file.clone());
    let tl = super::zst::table_len_of(&LZC, &file[file.len() - 9..], file.len() as u64).unwrap();
    let t = super::lzc::parse_table(
        &file[file.len() - tl as usize..],
        file.len() as u64,
        img.len() as u64,
        BS as u64,
    )
    .unwrap();
    let f2 = t.frame(2).unwrap();
    let mut none: &[u8] = &[];
    let mut sink = |_: &[u8]| Ok(());
    for (off, len) in [(f2.raw_offset, 0), (4096, 8192)] {
        let e = l
            .read_chain(
                &f2,
                Prime {
                    off,
                    len,
                    bytes: &mut none,
                },
                &mut sink,
            )
            .unwrap_err();
        assert!(!e.to_string().is_empty());
    }
}

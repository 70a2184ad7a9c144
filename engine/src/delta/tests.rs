//! Tests of the delta install without a network: random old/new image pairs installed
//! through faulty in-memory sources; the slot must equal the new image byte for byte, the
//! planner must never fetch a block it could reuse, and bad answers are never kept.

#![allow(clippy::cast_possible_truncation)] // test sizes are small

use std::collections::{HashSet, VecDeque};
use std::io::Cursor;
use std::time::Duration;

use proptest::prelude::*;

use super::apply::{apply, Stats};
use super::plan::{plan, Action, Plan};
use super::*;
use crate::tests::SLOT_LEN;
use stele_verifier::footer::FOOTER_LEN;
use stele_verifier::slot;
use stele_verifier::testutil::{key, ring};
use stele_verifier::verity::digest_blocks;

pub(crate) const BS: usize = 4096;

/// A clock that only moves when slept on.
#[derive(Debug, Default)]
pub(crate) struct FakeClock {
    pub t: Duration,
    pub slept: Vec<Duration>,
}

impl Clock for FakeClock {
    fn now(&mut self) -> Duration {
        self.t
    }
    fn sleep(&mut self, d: Duration) {
        self.slept.push(d);
        self.t += d;
    }
    fn random(&mut self) -> f64 {
        0.5
    }
}

/// What a [`MemSource`] does to one answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The answer that covers this file offset breaks off right before it.
    Cut(u64),
    /// The answer that covers this file offset has bit 0 of that byte flipped.
    Flip(u64),
    /// 503 with Retry-After.
    Busy(Duration),
    /// A length other than the file's.
    WrongLength,
}

/// An image file in memory served through ranges, with faults, counting what it sends.
#[derive(Debug)]
pub(crate) struct MemSource {
    pub file: Vec<u8>,
    /// Applied to the answers in turn (one fault per answer).
    pub faults: VecDeque<Fault>,
    /// Answers every range request with the whole file, like a server that ignores Range.
    pub ignore_ranges: bool,
    /// Every request: (offset, length); a stream is (0, u64::MAX).
    pub requests: Vec<(u64, u64)>,
    pub sent: u64,
    stream: Option<usize>,
}

impl MemSource {
    pub fn new(file: Vec<u8>) -> Self {
        MemSource {
            file,
            faults: VecDeque::new(),
            ignore_ranges: false,
            requests: Vec::new(),
            sent: 0,
            stream: None,
        }
    }
}

impl RangeSource for MemSource {
    fn name(&self) -> String {
        "mem://image".into()
    }
    fn len(&mut self) -> Result<u64, FetchError> {
        Ok(self.file.len() as u64)
    }
    fn read_range(&mut self, off: u64, len: u64, sink: Sink<'_>) -> Result<(), FetchError> {
        self.requests.push((off, len));
        if self.ignore_ranges {
            return Err(FetchError::RangesIgnored);
        }
        let mut answer = self.file[off as usize..(off + len) as usize].to_vec();
        let mut cut = None;
        let covers = |at: u64| (off..off + len).contains(&at);
        match self.faults.pop_front() {
            Some(Fault::Cut(k)) if covers(k) => cut = Some(k - off),
            Some(Fault::Flip(at)) if covers(at) => answer[(at - off) as usize] ^= 1,
            // Waits for the answer that covers its offset.
            Some(f @ (Fault::Cut(_) | Fault::Flip(_))) => self.faults.push_front(f),
            None => {}
            Some(Fault::Busy(d)) => {
                return Err(FetchError::Transient {
                    why: "503 Service Unavailable".into(),
                    retry_after: Some(d),
                })
            }
            Some(Fault::WrongLength) => {
                return Err(FetchError::Changed {
                    was: self.file.len() as u64,
                    now: self.file.len() as u64 + 1,
                })
            }
        }
        let upto = cut.unwrap_or(len) as usize;
        for piece in answer[..upto].chunks(1500) {
            self.sent += piece.len() as u64;
            sink(piece).map_err(|_| FetchError::Aborted)?;
        }
        match cut {
            Some(_) => Err(FetchError::transient("connection reset")),
            None => Ok(()),
        }
    }
    fn start_stream(&mut self) -> Result<(), FetchError> {
        self.requests.push((0, u64::MAX));
        self.stream = Some(0);
        Ok(())
    }
    fn read_stream(&mut self, buf: &mut [u8]) -> Result<usize, FetchError> {
        let pos = self.stream.unwrap_or(self.file.len());
        let n = buf.len().min(self.file.len() - pos).min(3000);
        buf[..n].copy_from_slice(&self.file[pos..pos + n]);
        self.stream = Some(pos + n);
        self.sent += n as u64;
        Ok(n)
    }
}

/// A slot image (key 1) whose data are `blocks` (each [`BS`] bytes), with `salt`.
pub(crate) fn image_of(blocks: &[Vec<u8>], salt: u8, index: u64) -> Vec<u8> {
    image_hbs(blocks, salt, index, 4096)
}

/// [`image_of`] with hash blocks of `hbs` bytes.
pub(crate) fn image_hbs(blocks: &[Vec<u8>], salt: u8, index: u64, hbs: u32) -> Vec<u8> {
    stele_verifier::testutil::image_of_blocks(blocks, salt, index, hbs)
}

/// A block of `fill` bytes with a tag (0 tag and 0 fill: the zero block).
pub(crate) fn block(tag: u16, fill: u8) -> Vec<u8> {
    let mut b = vec![fill; BS];
    b[..2].copy_from_slice(&tag.to_le_bytes());
    b
}

/// A slot partition holding `img` at 0 and its footer at the end.
pub(crate) fn slot_with(img: &[u8]) -> Cursor<Vec<u8>> {
    Cursor::new(stele_verifier::testutil::slot_with(img, SLOT_LEN as usize))
}

/// The outcome of one delta install.
pub(crate) struct Run {
    pub plan: Plan,
    pub stats: Stats,
}

/// Signed first, plan, apply, commit into `target` with `base` as the running slot.
pub(crate) fn install(
    src: &mut MemSource,
    target: &mut Cursor<Vec<u8>>,
    base: Option<&mut Cursor<Vec<u8>>>,
    policy: RetryPolicy,
) -> Result<Run, DeltaError> {
    let mut clock = FakeClock::default();
    let mut f = Fetcher::new(src, &mut clock, policy, None);
    let keys = ring();
    let mut base = base;
    let known = match base.as_deref_mut() {
        Some(b) => KnownHashBlocks::from_slot(b, SLOT_LEN, Trust::Keyring(&keys))?,
        None => None,
    };
    let meta = fetch_meta(
        &mut f,
        Trust::Keyring(&keys),
        Some(0),
        Some(SLOT_LEN),
        known.as_ref(),
    )?;
    let p = plan(
        &meta,
        Some((&mut *target, SLOT_LEN)),
        base.as_deref_mut().map(|b| (b, SLOT_LEN)),
        Trust::Keyring(&keys),
        16 * 4096,
    )?;
    let (w, stats) = apply(
        &meta,
        &p,
        &mut f,
        target,
        SLOT_LEN,
        base,
        &mut stele_verifier::progress::Silent,
    )?;
    let _ = crate::tests::commit(w, target);
    Ok(Run { plan: p, stats })
}

/// The target's image region and footer equal the new image's.
pub(crate) fn assert_installed(target: &Cursor<Vec<u8>>, img: &[u8]) {
    let t = target.get_ref();
    let body = img.len() - FOOTER_LEN;
    let image_len = stele_verifier::footer::Footer::parse(&img[body..], img.len() as u64)
        .unwrap()
        .image_len as usize;
    assert!(
        t[..image_len] == img[..image_len],
        "the slot's image differs from the new image"
    );
    assert_eq!(&t[t.len() - FOOTER_LEN..], &img[body..], "footer");
    let full = slot::VerifyOptions {
        full: true,
        ..Default::default()
    };
    slot::verify(&mut Cursor::new(t), SLOT_LEN, &ring(), full).unwrap();
}

fn quick() -> RetryPolicy {
    RetryPolicy {
        deadline: Duration::from_secs(60),
        ..RetryPolicy::default()
    }
}

/// Random image pairs: the new image is the old one with blocks changed, inserted
/// (everything after moves) and zeroed; the same or another salt; the target slot blank,
/// holding part of the new image already, or an old image.
fn pair() -> impl Strategy<Value = (Vec<Vec<u8>>, Vec<Vec<u8>>, bool, u8)> {
    (
        proptest::collection::vec((0u16..40, 0u8..3), 3..60),
        proptest::collection::vec((0usize..60, 0u8..4, 0u16..500), 0..12),
        any::<bool>(),
        0u8..3,
    )
        .prop_map(|(old, edits, same_salt, target)| {
            let old: Vec<Vec<u8>> = old
                .into_iter()
                .map(|(t, f)| if f == 0 { block(0, 0) } else { block(t, f) })
                .collect();
            let mut new = old.clone();
            for (at, kind, tag) in edits {
                let at = at % new.len();
                match kind {
                    0 => new[at] = block(1000 + tag, 9),
                    1 => new.insert(at, block(2000 + tag, 7)),
                    2 => new[at] = block(0, 0),
                    _ => {
                        new.remove(at);
                        if new.is_empty() {
                            new.push(block(3, 3));
                        }
                    }
                }
            }
            (old, new, same_salt, target)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever the pair and whatever the target holds, the slot ends up equal to the new
    /// image byte for byte; and every fetched block was one neither slot had.
    #[test]
    fn random_pairs_install_byte_for_byte((old, new, same_salt, target_kind) in pair()) {
        let old_img = image_of(&old, 1, 1);
        let new_img = image_of(&new, if same_salt { 1 } else { 2 }, 2);
        let mut base = slot_with(&old_img);
        let mut target = match target_kind {
            0 => Cursor::new(vec![0xee; SLOT_LEN as usize]),
            1 => {
                // Half of the new image is already there (an earlier, cut run).
                let mut t = vec![0xee; SLOT_LEN as usize];
                let half = new.len() / 2 * BS;
                t[..half].copy_from_slice(&new_img[..half]);
                Cursor::new(t)
            }
            _ => slot_with(&image_of(&old[..old.len() / 2 + 1], 3, 0)),
        };
        let before = target.get_ref().clone();
        let mut src = MemSource::new(new_img.clone());
        let run = install(&mut src, &mut target, Some(&mut base), quick()).unwrap();
        assert_installed(&target, &new_img);

        // The planner never fetches a block it could reuse.
        let salt = vec![if same_salt { 1 } else { 2 }; 32];
        let params = stele_verifier::verity::VerityParams::new(4096, 4096, new.len() as u64, salt).unwrap();
        let old_digests: HashSet<[u8; 32]> =
            digest_blocks(&params, &old_img[..old.len() * BS]).into_iter().collect();
        let zero = digest_blocks(&params, &[0u8; BS])[0];
        for (i, a) in run.plan.actions.iter().enumerate() {
            let d = digest_blocks(&params, &new[i])[0];
            let at_place = before.get(i * BS..(i + 1) * BS) == Some(&new[i][..]);
            match a {
                Action::Fetch => {
                    prop_assert!(!old_digests.contains(&d), "block {} is in the base", i);
                    prop_assert!(d != zero, "block {} is zero", i);
                    prop_assert!(!at_place, "block {} is in the target", i);
                }
                Action::Keep => prop_assert!(at_place),
                Action::Copy(_) => prop_assert!(!at_place),
                Action::Zero => prop_assert!(!at_place && d == zero),
            }
        }
        // Without faults, exactly the planned blocks and the metadata were sent.
        prop_assert_eq!(run.stats.fetched_blocks, run.plan.counts.fetch);
        prop_assert_eq!(src.sent, run.stats.fetched);
        prop_assert!(src.sent <= run.plan.fetch_bytes() + (new_img.len() - new.len() * BS) as u64);
    }
}

/// An old image of `n` distinct blocks and a new one with blocks 10..13 changed.
pub(crate) fn small_pair(n: u16) -> (Vec<u8>, Vec<u8>) {
    let old: Vec<Vec<u8>> = (0..n).map(|t| block(t, 1)).collect();
    let mut new = old.clone();
    for b in &mut new[10..13] {
        b[100] = 0x77;
    }
    (image_of(&old, 1, 1), image_of(&new, 1, 2))
}

/// A fresh install (no base, blank target) of `img` through `src`.
fn fresh(src: &mut MemSource) -> (Cursor<Vec<u8>>, Result<Run, DeltaError>) {
    let mut target = Cursor::new(vec![0xee; SLOT_LEN as usize]);
    let r = install(src, &mut target, None, quick());
    (target, r)
}

#[test]
fn delta_fetches_only_the_changed_blocks() {
    let (old, new) = small_pair(100);
    let mut base = slot_with(&old);
    let mut target = Cursor::new(vec![0xee; SLOT_LEN as usize]);
    let mut src = MemSource::new(new.clone());
    let run = install(&mut src, &mut target, Some(&mut base), quick()).unwrap();
    assert_installed(&target, &new);
    assert_eq!(run.plan.counts.fetch, 3);
    assert_eq!(run.plan.counts.copy, 97);
    assert_eq!(run.plan.ranges, vec![(10, 3)]);
    // Footer, envelope, tree, then the one range of changed data.
    let data: Vec<_> = src.requests.iter().filter(|r| r.0 < 100 * 4096).collect();
    assert_eq!(data, vec![&(10 * 4096, 3 * 4096)]);
    assert_eq!(
        src.requests[0].0,
        new.len() as u64 - 4096,
        "the footer first"
    );
    // Run again over the finished slot: nothing to fetch, nothing rewritten.
    let mut src = MemSource::new(new.clone());
    let run = install(&mut src, &mut target, Some(&mut base), quick()).unwrap();
    assert_eq!(run.plan.counts.keep, 100);
    assert_eq!(run.stats.fetched_blocks, 0);
}

#[test]
fn a_flipped_bit_is_fetched_again_never_kept() {
    let (_, new) = small_pair(60);
    let mut src = MemSource::new(new.clone());
    // Footer, envelope, tree answers are clean; the first data answer has a flipped bit
    // in block 33.
    src.faults = VecDeque::from([Fault::Flip(33 * 4096 + 17)]);
    let (target, r) = fresh(&mut src);
    let run = r.unwrap();
    assert_installed(&target, &new);
    assert_eq!(run.stats.refetched_blocks, 1);
    assert!(
        src.requests.contains(&(33 * 4096, 4096)),
        "{:?}",
        src.requests
    );
    // A server that always sends the wrong block is refused, the slot cannot boot.
    let mut src = MemSource::new(new.clone());
    for _ in 0..20 {
        src.faults.push_back(Fault::Flip(5 * 4096));
    }
    let (mut target, r) = fresh(&mut src);
    assert!(
        matches!(r, Err(DeltaError::BadData { answers: 3, .. })),
        "{:?}",
        r.err()
    );
    assert!(crate::tests::verify_slot(&mut target).is_err());
}

#[test]
fn flipped_metadata_is_fetched_again_then_refused() {
    let (_, new) = small_pair(20);
    let footer_at = new.len() as u64 - 4096;
    let mut src = MemSource::new(new.clone());
    src.faults = VecDeque::from([Fault::Flip(footer_at + 20)]);
    let (target, r) = fresh(&mut src);
    r.unwrap();
    assert_installed(&target, &new);
    // Signed by another key: refused before anything is written, even after refetching.
    let mut other = new.clone();
    let r = stele_verifier::slot::locate(&mut Cursor::new(&new), new.len() as u64).unwrap();
    let mut env = r.envelope.clone();
    env.signatures.clear();
    env.sign(&key(2)).unwrap();
    let at = r.footer.manifest_offset as usize;
    other[at..at + env.to_bytes().len()].copy_from_slice(&env.to_bytes());
    let mut src = MemSource::new(other);
    let (target, r) = fresh(&mut src);
    assert!(matches!(
        r,
        Err(DeltaError::Verify(
            stele_verifier::Error::ThresholdNotMet { .. }
        ))
    ));
    assert!(
        target.get_ref().iter().all(|&b| b == 0xee),
        "the slot was written"
    );
}

#[test]
fn cuts_busy_servers_and_changed_files() {
    let (_, new) = small_pair(64);
    // A cut in the middle of the data: resumed from the first missing block.
    let mut src = MemSource::new(new.clone());
    src.faults = VecDeque::from([
        Fault::Cut(5 * 4096 + 100),
        Fault::Busy(Duration::from_secs(2)),
    ]);
    let (target, r) = fresh(&mut src);
    let run = r.unwrap();
    assert_installed(&target, &new);
    assert!(
        src.requests.contains(&(5 * 4096, 11 * 4096)),
        "{:?}",
        src.requests
    );
    assert_eq!(run.stats.refetched_blocks, 1, "only the cut block");
    // The file changed on the server: not retried.
    let mut src = MemSource::new(new.clone());
    src.faults = VecDeque::from([Fault::WrongLength]);
    let (_, r) = fresh(&mut src);
    assert!(matches!(
        r,
        Err(DeltaError::Fetch {
            error: FetchError::Changed { .. },
            gave_up: false,
            ..
        })
    ));
    // Busy for longer than the deadline: gives up with the cause.
    let mut src = MemSource::new(new.clone());
    src.faults = (0..100)
        .map(|_| Fault::Busy(Duration::from_secs(30)))
        .collect();
    let (_, r) = fresh(&mut src);
    let e = r.err().unwrap();
    assert!(matches!(e, DeltaError::Fetch { gave_up: true, .. }), "{e}");
    assert!(e.to_string().contains("503"), "{e}");
}

#[test]
fn a_server_that_ignores_range_is_streamed_through_the_same_checks() {
    let (old, new) = small_pair(200);
    let mut base = slot_with(&old);
    let mut target = Cursor::new(vec![0xee; SLOT_LEN as usize]);
    let mut src = MemSource::new(new.clone());
    src.ignore_ranges = true;
    let run = install(&mut src, &mut target, Some(&mut base), quick()).unwrap();
    assert_installed(&target, &new);
    assert_eq!(run.stats.fetched_blocks, 3);
    // One pass for footer, envelope and tree (kept from the tail), one for the data.
    let streams = src.requests.iter().filter(|r| r.1 == u64::MAX).count();
    assert_eq!(streams, 2, "{:?}", src.requests);
    assert!(src.sent < 2 * new.len() as u64);
}

/// The connection is cut at many offsets and the process dies each time (no retry):
/// every re-run completes from what the slot holds and fetches at most the cut block
/// again (plus the metadata).
#[test]
fn every_cut_resumes_with_at_most_one_block_again() {
    let blocks: Vec<Vec<u8>> = (0..80).map(|t| block(t, 5)).collect();
    let new = image_of(&blocks, 4, 2);
    let no_retry = RetryPolicy {
        deadline: Duration::ZERO,
        ..RetryPolicy::default()
    };
    let data_len = 80 * 4096u64;
    for k in (0..data_len).step_by(4096 * 7 + 1234) {
        let mut target = Cursor::new(vec![0xee; SLOT_LEN as usize]);
        let mut src = MemSource::new(new.clone());
        src.faults = VecDeque::from([Fault::Cut(k)]);
        let first = install(&mut src, &mut target, None, no_retry);
        assert!(first.is_err(), "cut at {k}");
        let mut src = MemSource::new(new.clone());
        let run = install(&mut src, &mut target, None, no_retry).unwrap();
        assert_installed(&target, &new);
        let received_before = k / 4096;
        assert!(
            run.stats.fetched_blocks <= 80 - received_before,
            "cut at {k}: fetched {} blocks again",
            run.stats.fetched_blocks
        );
        assert!(run.plan.counts.keep >= received_before);
    }
}

#[test]
fn unsigned_meta_plans_but_never_writes() {
    let (old, new) = small_pair(30);
    let mut src = MemSource::new(new);
    let mut clock = FakeClock::default();
    let mut f = Fetcher::new(&mut src, &mut clock, quick(), None);
    let meta = fetch_meta(&mut f, Trust::Unsigned, None, None, None).unwrap();
    assert!(meta.signed_by.is_none());
    let mut base = slot_with(&old);
    let p = plan::<Cursor<Vec<u8>>, _>(
        &meta,
        None,
        Some((&mut base, SLOT_LEN)),
        Trust::Unsigned,
        1 << 20,
    )
    .unwrap();
    assert_eq!(p.counts.fetch, 3);
    let mut target = Cursor::new(vec![0xee; SLOT_LEN as usize]);
    let r = apply(
        &meta,
        &p,
        &mut f,
        &mut target,
        SLOT_LEN,
        Some(&mut base),
        &mut stele_verifier::progress::Silent,
    );
    assert!(matches!(r, Err(DeltaError::Unsigned)));
    assert!(target.get_ref().iter().all(|&b| b == 0xee));
}

/// The new image's level-0 hash blocks that the running slot's tree already has are not
/// fetched (same salt): a change of three data blocks costs one level-0 block.
#[test]
fn the_tree_is_a_delta_too() {
    let old: Vec<Vec<u8>> = (0..100).map(|t| block(t, 1)).collect();
    let mut new = old.clone();
    for b in &mut new[10..13] {
        b[100] = 0x77;
    }
    // 512-byte hash blocks: 16 entries each, 7 level-0 blocks, one level-1 block.
    let (old_img, new_img) = (image_hbs(&old, 1, 1, 512), image_hbs(&new, 1, 2, 512));
    let mut base = slot_with(&old_img);
    let mut target = Cursor::new(vec![0xee; SLOT_LEN as usize]);
    let mut src = MemSource::new(new_img.clone());
    install(&mut src, &mut target, Some(&mut base), quick()).unwrap();
    assert_installed(&target, &new_img);
    let tree: Vec<_> = src
        .requests
        .iter()
        .filter(|r| (100 * 4096..100 * 4096 + 8 * 512).contains(&r.0))
        .collect();
    // Level 1 (the top), then level-0 block 0 (entries 0..16) only.
    assert_eq!(
        tree,
        vec![&(100 * 4096, 512), &(100 * 4096 + 512, 512)],
        "{:?}",
        src.requests
    );
    // Another salt: nothing to reuse, the whole tree in one answer; still byte for byte.
    let other = image_hbs(&new, 3, 2, 512);
    let mut target = Cursor::new(vec![0xee; SLOT_LEN as usize]);
    let mut src = MemSource::new(other.clone());
    install(&mut src, &mut target, Some(&mut base), quick()).unwrap();
    assert_installed(&target, &other);
    // A bad level-0 block from the server is fetched again.
    let mut target = Cursor::new(vec![0xee; SLOT_LEN as usize]);
    let mut src = MemSource::new(new_img.clone());
    src.faults = VecDeque::from([Fault::Flip(100 * 4096 + 512 + 7)]);
    install(&mut src, &mut target, Some(&mut base), quick()).unwrap();
    assert_installed(&target, &new_img);
}

/// `--max-rate`: the fetcher sleeps so that the bytes received over the time passed stay
/// at or below the rate (on the fake clock: exactly the bytes over the rate).
#[test]
fn max_rate_paces_the_fetch() {
    let (_, new) = small_pair(60);
    let mut src = MemSource::new(new.clone());
    let mut clock = FakeClock::default();
    let rate = 64 * 1024;
    let mut f = Fetcher::new(&mut src, &mut clock, quick(), Some(rate));
    let keys = ring();
    let meta = fetch_meta(&mut f, Trust::Keyring(&keys), Some(0), Some(SLOT_LEN), None).unwrap();
    let mut target = Cursor::new(vec![0xee; SLOT_LEN as usize]);
    let p = plan::<Cursor<Vec<u8>>, Cursor<Vec<u8>>>(
        &meta,
        Some((&mut target.clone(), SLOT_LEN)),
        None,
        Trust::Keyring(&keys),
        1 << 20,
    )
    .unwrap();
    let (_, stats) = apply::<_, Cursor<Vec<u8>>>(
        &meta,
        &p,
        &mut f,
        &mut target,
        SLOT_LEN,
        None,
        &mut stele_verifier::progress::Silent,
    )
    .unwrap();
    drop(f);
    let secs = clock.t.as_secs_f64();
    let expected = stats.fetched as f64 / rate as f64;
    // The first chunk of each answer arrives before any wait.
    assert!(
        secs <= expected + 0.01,
        "{secs} s for {} bytes",
        stats.fetched
    );
    assert!(
        secs >= expected - 1500.0 / rate as f64,
        "{secs} s for {} bytes",
        stats.fetched
    );
}

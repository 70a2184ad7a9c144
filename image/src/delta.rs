//! Writes a published delta `NEW.img.from-<16 hex>.delta` (the format is the engine's
//! `stele_engine::delta::published`, docs/FORMATS.md): for the blocks a device running OLD
//! would fetch (the device's own block plan, copied and zero blocks excluded), zstd
//! frames compressed against a stretch of OLD's blocks as a raw prefix (`--patch-from`).
//!
//! Extent-aware without parsing the filesystem: a changed run of new blocks usually sits
//! between blocks the device copies from OLD, and those copies say where the run's old
//! version was (the old blocks right after the preceding copied block, or right before
//! the following one). Each frame is compressed against a reference centred on each of
//! these candidate positions and on the same offset, and the smallest result is kept.
//! Every frame is decoded again with the device's decoder before it is written: the build
//! side writes nothing the device would refuse. Reproducible: the same images give the
//! same bytes.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use stele_engine::delta::plan::{Action, Plan};
use stele_engine::delta::published::{
    decode_patch, encode_index, suffix, CopyRun, DeltaIndex, PatchFrame, MAX_OUT, MAX_REF,
    MAX_RUNS, MAX_WINDOW,
};
use stele_verifier::progress::{Progress, Step};

use crate::atomic::AtomicFile;
use crate::{Error, Result};

/// The zstd level of the frames by default (`--level`).
pub const LEVEL: i32 = 19;

/// What was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeltaReport {
    pub path: PathBuf,
    /// Bytes of the delta file.
    pub len: u64,
    pub frames: u64,
    /// New blocks the frames give.
    pub blocks: u64,
    /// True when its frames and copy runs give every new block: a device writes it
    /// without fetching the new hash tree (`stele_engine::delta::rebuilt`).
    pub whole: bool,
}

/// The two images of a delta and what names them.
#[derive(Debug)]
pub struct Pair<'a, O, N> {
    pub old: &'a mut O,
    /// Data blocks of OLD (the reference never reaches past them).
    pub old_blocks: u64,
    pub new: &'a mut N,
    /// NEW's file length.
    pub new_len: u64,
    /// sha256 of each image's manifest envelope.
    pub old_envelope: [u8; 32],
    pub new_envelope: [u8; 32],
}

/// The delta's path beside `new`: `NEW.img` → `NEW.img.from-<16 hex>.delta`. Pure.
pub fn path_of(new: &Path, old_envelope: &[u8; 32]) -> PathBuf {
    let mut p = new.as_os_str().to_owned();
    p.push(suffix(old_envelope));
    PathBuf::from(p)
}

/// One frame compressed at `level` against `reference` (a raw prefix), window
/// [`MAX_WINDOW`].
fn compress(reference: &[u8], data: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    use zstd::zstd_safe::{CCtx, CParameter};
    let err = |code: usize| std::io::Error::other(zstd::zstd_safe::get_error_name(code));
    let mut c = CCtx::create();
    c.set_parameter(CParameter::CompressionLevel(level))
        .map_err(err)?;
    c.set_parameter(CParameter::ChecksumFlag(false))
        .map_err(err)?;
    c.set_parameter(CParameter::ContentSizeFlag(true))
        .map_err(err)?;
    c.set_parameter(CParameter::WindowLog(MAX_WINDOW.trailing_zeros()))
        .map_err(err)?;
    if !reference.is_empty() {
        c.ref_prefix(reference).map_err(err)?;
    }
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
    c.compress2(&mut out, data).map_err(err)?;
    Ok(out)
}

/// Fetched blocks at most this far apart go into one frame (the blocks between are given
/// too, and cost little: they are mostly in the reference).
pub const GAP: u64 = 16;

/// The spans of new blocks the frames give: each starts and ends at a block `plan`
/// fetches, holds at most [`MAX_OUT`] bytes, and has no gap of more than [`GAP`] blocks
/// not fetched: (first block, blocks). Pure.
pub fn runs(plan: &Plan) -> Vec<(u64, u64)> {
    let per = (MAX_OUT / plan.block_size.max(1)).max(1);
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (i, a) in plan.actions.iter().enumerate() {
        if *a != Action::Fetch {
            continue;
        }
        let i = i as u64;
        match out.last_mut() {
            Some((s, n)) if i - (*s + *n) <= GAP && i + 1 - *s <= per => *n = i + 1 - *s,
            _ => out.push((i, 1)),
        }
    }
    out
}

/// The copy runs of `plan` outside `spans` (the frames' blocks): runs of blocks copied
/// from consecutive old blocks, and runs of zero blocks, at most `u32::MAX` blocks each.
/// Empty when a block outside the spans is neither (the plan was made with a target
/// slot that keeps it) or there would be more than [`MAX_RUNS`]: the delta is then
/// written without them, and devices fetch the new hash tree to use it. Pure.
pub fn copy_runs(plan: &Plan, spans: &[(u64, u64)]) -> Vec<CopyRun> {
    let mut out: Vec<CopyRun> = Vec::new();
    let mut spans = spans.iter().peekable();
    for (i, a) in plan.actions.iter().enumerate() {
        let i = i as u64;
        while spans.peek().is_some_and(|(s, n)| s + n <= i) {
            spans.next();
        }
        if spans.peek().is_some_and(|(s, _)| *s <= i) {
            continue;
        }
        let from = match a {
            Action::Copy(j) => Some(*j),
            Action::Zero => None,
            Action::Keep | Action::Fetch => return Vec::new(),
        };
        match out.last_mut() {
            Some(r)
                if r.first + r.blocks == i
                    && r.blocks < u64::from(u32::MAX)
                    && match (r.from, from) {
                        (Some(f), Some(j)) => f + r.blocks == j,
                        (None, None) => true,
                        _ => false,
                    } =>
            {
                r.blocks += 1;
            }
            _ => out.push(CopyRun {
                first: i,
                blocks: 1,
                from,
            }),
        }
    }
    if out.len() as u64 > MAX_RUNS {
        return Vec::new();
    }
    out
}

/// Where span `(s, n)`'s old version likely starts in OLD: after the nearest preceding
/// copied block's source and before the nearest following one's (the second only when it
/// is not within `n` blocks of the first); the same offset when no block is copied. Pure.
pub fn candidates(plan: &Plan, s: u64, n: u64) -> Vec<u64> {
    let at = |b: u64| usize::try_from(b).map_or(plan.actions.len(), |b| b.min(plan.actions.len()));
    let before = plan.actions[..at(s)]
        .iter()
        .enumerate()
        .rev()
        .find_map(|(p, a)| match a {
            Action::Copy(j) => Some(j + (s - p as u64)),
            _ => None,
        });
    let after = plan.actions[at(s + n)..]
        .iter()
        .enumerate()
        .find_map(|(q, a)| match a {
            Action::Copy(j) => j.checked_sub(n + q as u64),
            _ => None,
        });
    match (before, after) {
        (Some(b), Some(a)) if a.abs_diff(b) > n => vec![b, a],
        (Some(x), _) | (None, Some(x)) => vec![x],
        (None, None) => vec![s],
    }
}

/// Blocks of the reference of a span of `n` blocks: eight times the span, at least
/// 2 MiB, at most [`MAX_REF`] (a larger reference finds moved data but costs the build
/// time and the device memory). Pure.
pub fn ref_blocks(n: u64, bs: u64) -> u64 {
    (n * 8).max((2 << 20) / bs).min(MAX_REF / bs)
}

/// The reference window of `n` new blocks aligned at old block `at`: [`ref_blocks`] of
/// OLD (fewer near its ends) centred on the aligned span. Pure.
pub fn window(at: u64, n: u64, old_blocks: u64, bs: u64) -> (u64, u64) {
    let r = ref_blocks(n, bs).min(old_blocks);
    let first = at
        .saturating_sub(r.saturating_sub(n) / 2)
        .min(old_blocks - r);
    (first, r)
}

fn read_at<R: Read + Seek>(r: &mut R, off: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut b = vec![0u8; usize::try_from(len).unwrap_or(0)];
    r.seek(SeekFrom::Start(off))?;
    r.read_exact(&mut b)?;
    Ok(b)
}

/// One frame's job: the new bytes and each candidate reference.
struct Job {
    first: u64,
    blocks: u64,
    data: Vec<u8>,
    refs: Vec<(u64, u64, Vec<u8>)>,
}

/// The smallest frame of a job at `level` (against each candidate reference; the first
/// on a tie) and its bytes, checked with the device's decoder. (A fast level-3 probe to
/// pick one candidate was tried: 11 % larger on a Debian security update, no faster.)
fn best(job: &Job, bs: u64, level: i32) -> std::io::Result<(PatchFrame, Vec<u8>)> {
    let mut best: Option<(PatchFrame, Vec<u8>, usize)> = None;
    for (k, (rf, rb, reference)) in job.refs.iter().enumerate() {
        let bytes = compress(reference, &job.data, level)?;
        if best.as_ref().is_none_or(|b| bytes.len() < b.1.len()) {
            let f = PatchFrame {
                index: 0,
                offset: 0,
                len: bytes.len() as u64,
                first: job.first,
                blocks: job.blocks,
                ref_first: *rf,
                ref_blocks: *rb,
            };
            best = Some((f, bytes, k));
        }
    }
    let (f, bytes, k) = best.ok_or_else(|| std::io::Error::other("no reference"))?;
    let reference = &job.refs[k].2;
    match decode_patch(&f, &bytes, reference, bs) {
        Ok(back) if back == job.data => Ok((f, bytes)),
        Ok(_) => Err(std::io::Error::other(format!(
            "the frame of blocks {}.. does not decode to them with the device's decoder",
            f.first
        ))),
        Err(e) => Err(std::io::Error::other(format!(
            "the device's decoder refuses the frame of blocks {}..: {e}",
            f.first
        ))),
    }
}

/// Writes the delta for `plan` (the device's plan of NEW with OLD as the running slot)
/// into `out`, its frames at zstd `level`; returns its length, its frames, and whether
/// its frames and copy runs give every new block. Frames are made on as many threads as
/// there are cores, a batch at a time, and written in order.
pub fn build<O: Read + Seek, N: Read + Seek, W: Write>(
    plan: &Plan,
    pair: Pair<'_, O, N>,
    level: i32,
    out: &mut W,
    progress: &mut dyn Progress,
) -> std::io::Result<(u64, Vec<PatchFrame>, bool)> {
    let bs = plan.block_size;
    let runs = runs(plan);
    let total: u64 = runs.iter().map(|r| r.1 * bs).sum();
    let mut step = Step::new(
        progress,
        "compressing the delta (zstd --patch-from)",
        Some(total),
    );
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let mut frames: Vec<(PatchFrame, Vec<u8>)> = Vec::new();
    for batch in runs.chunks(threads.max(1) * 2) {
        let mut jobs = Vec::new();
        for &(s, n) in batch {
            let data = read_at(pair.new, s * bs, n * bs)?;
            let mut refs = Vec::new();
            if pair.old_blocks > 0 {
                for at in candidates(plan, s, n) {
                    let (rf, rb) = window(at, n, pair.old_blocks, bs);
                    if !refs.iter().any(|r: &(u64, u64, Vec<u8>)| r.0 == rf) {
                        refs.push((rf, rb, read_at(pair.old, rf * bs, rb * bs)?));
                    }
                }
            }
            if refs.is_empty() {
                refs.push((0, 0, Vec::new()));
            }
            jobs.push(Job {
                first: s,
                blocks: n,
                data,
                refs,
            });
        }
        let per = jobs.len().div_ceil(threads).max(1);
        let done: Vec<std::io::Result<(PatchFrame, Vec<u8>)>> = std::thread::scope(|sc| {
            let hs: Vec<_> = jobs
                .chunks(per)
                .map(|g| sc.spawn(move || g.iter().map(|j| best(j, bs, level)).collect::<Vec<_>>()))
                .collect();
            hs.into_iter()
                .flat_map(|h| {
                    h.join()
                        .unwrap_or_else(|_| vec![Err(std::io::Error::other("a thread panicked"))])
                })
                .collect()
        });
        for d in done {
            let (f, bytes) = d?;
            step.advance(f.blocks * bs);
            frames.push((f, bytes));
        }
    }
    let index: Vec<PatchFrame> = frames
        .iter()
        .enumerate()
        .map(|(k, f)| PatchFrame {
            index: k as u64,
            ..f.0
        })
        .collect();
    let mut len = 0u64;
    for (_, bytes) in &frames {
        out.write_all(bytes)?;
        len += bytes.len() as u64;
    }
    let tail = encode_index(
        u32::try_from(bs).unwrap_or(4096),
        pair.new_len,
        &pair.old_envelope,
        &pair.new_envelope,
        &index,
        &copy_runs(plan, &runs),
    );
    out.write_all(&tail)?;
    len += tail.len() as u64;
    // Whole as a device decides it: the index it parses, the tiling it asks for.
    let whole = DeltaIndex::parse(&tail, len)
        .map_err(|e| std::io::Error::other(format!("the delta's own index is refused: {e}")))?
        .pieces(plan.actions.len() as u64)
        .is_ok();
    Ok((len, index, whole))
}

/// Writes the delta for `plan` to `path` (atomically; an existing file only with `force`),
/// its frames at zstd `level`.
pub fn write<O: Read + Seek, N: Read + Seek>(
    plan: &Plan,
    pair: Pair<'_, O, N>,
    level: i32,
    path: &Path,
    force: bool,
    progress: &mut dyn Progress,
) -> Result<DeltaReport> {
    let mut tmp = AtomicFile::output(path, 0o644, force)?;
    let (len, frames, whole) = {
        let mut w = std::io::BufWriter::new(tmp.file());
        let r = build(plan, pair, level, &mut w, progress)
            .map_err(|e| Error::io("write the delta into", path, e))?;
        w.flush().map_err(|e| Error::io("write", path, e))?;
        r
    };
    tmp.commit()?;
    Ok(DeltaReport {
        path: path.to_path_buf(),
        len,
        frames: frames.len() as u64,
        blocks: frames.iter().map(|f| f.blocks).sum(),
        whole,
    })
}

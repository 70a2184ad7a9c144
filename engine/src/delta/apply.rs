//! Carrying out a [`Plan`] in the install write order: the target's footer zeroed, the
//! data blocks in order (kept, copied, zeroed or fetched; each checked against the
//! verified tree before it is written), the tree, the envelope. [`Written::commit`] then
//! flips the state and writes the footer.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Seek, SeekFrom};

use super::patched::Patched;
use super::plan::{merge, Action, Plan};
use super::ways::Framed;
use super::{io_err, Abort, DeltaError, FetchError, Fetcher, Meta, Written};
use crate::Storage;
use stele_verifier::footer::{FOOTER_LEN, FOOTER_SIZE};
use stele_verifier::manifest::VerifiedManifest;
use stele_verifier::progress::{Progress, Step};
use stele_verifier::verity::{digest_blocks, Level0};

/// What an install did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes received from the source, all of it (footer, manifest, tree, data, answers
    /// fetched again).
    pub fetched: u64,
    pub kept: u64,
    pub copied: u64,
    pub zeroed: u64,
    /// Data blocks written from the source.
    pub fetched_blocks: u64,
    /// Blocks asked for again: a bad answer, a cut connection, a copy that no longer
    /// matched.
    pub refetched_blocks: u64,
    pub requests: u64,
    /// Frames of a compressed form fetched (the `zstd` or `lzc` way), and the blocks they
    /// gave.
    pub frames: u64,
    pub frame_blocks: u64,
    /// Frames of a published delta fetched (the `delta` way), and the blocks they gave.
    pub patches: u64,
    pub patch_blocks: u64,
}

impl Stats {
    /// Bytes of data not fetched.
    pub fn reused_bytes(&self, block_size: u64) -> u64 {
        (self.kept + self.copied + self.zeroed) * block_size
    }
}

/// Written data is flushed to stable storage at least this often, so that a power cut
/// loses at most this much of what was fetched (the slot is the journal of a resume).
pub const SYNC_EVERY: u64 = 1 << 20;

struct Out<'a, D> {
    dev: &'a mut D,
    unsynced: u64,
    bs: u64,
    l0: Level0<'a>,
    params: &'a stele_verifier::verity::VerityParams,
    stats: Stats,
    /// The data fetched, as bytes of the step (at most the plan's: an answer fetched
    /// again is not counted twice).
    step: Step<'a>,
}

impl<D: Storage> Out<'_, D> {
    fn matches(&self, block: u64, bytes: &[u8]) -> bool {
        digest_blocks(self.params, bytes).first().copied() == self.l0.get(block)
    }
    fn write(&mut self, block: u64, bytes: &[u8]) -> Result<(), DeltaError> {
        write_synced(self.dev, &mut self.unsynced, block * self.bs, bytes)
    }
}

/// Writes `bytes` at `off` of the target slot; flushes to stable storage once
/// [`SYNC_EVERY`] bytes were written since the last flush (`unsynced` counts them).
pub(crate) fn write_synced<D: Storage>(
    dev: &mut D,
    unsynced: &mut u64,
    off: u64,
    bytes: &[u8],
) -> Result<(), DeltaError> {
    dev.seek(SeekFrom::Start(off))
        .map_err(io_err("target slot"))?;
    dev.write_all(bytes).map_err(io_err("target slot"))?;
    *unsynced += bytes.len() as u64;
    if *unsynced >= SYNC_EVERY {
        *unsynced = 0;
        dev.flush().map_err(io_err("target slot"))?;
        dev.sync().map_err(io_err("target slot"))?;
    }
    Ok(())
}

/// The first 8 bytes of the record a writer puts where the target slot's footer goes
/// while it writes (docs/FORMATS.md "Installing from a URL").
pub const PARTIAL_MAGIC: &[u8; 8] = b"STELEPRT";

/// The record in place of the footer while the image whose envelope is `envelope` is
/// written ([`FOOTER_LEN`] bytes: [`PARTIAL_MAGIC`], version 1, 0, the envelope's sha256,
/// zeros). Not a footer: the slot does not boot until the footer replaces it. Pure.
pub fn partial_record(envelope: &stele_verifier::manifest::Envelope) -> Vec<u8> {
    let mut r = vec![0u8; FOOTER_LEN];
    r[..8].copy_from_slice(PARTIAL_MAGIC);
    r[8..12].copy_from_slice(&1u32.to_le_bytes());
    r[16..48].copy_from_slice(&super::published::digest(envelope));
    r
}

/// True when the target slot (`slot_len` bytes) holds the record of an unfinished install
/// of the image whose envelope is `envelope`: part of it is written (a resume).
pub fn holds_part_of<D: Read + Seek>(
    dev: &mut D,
    slot_len: u64,
    envelope: &stele_verifier::manifest::Envelope,
) -> Result<bool, DeltaError> {
    let mut r = vec![0u8; FOOTER_LEN];
    dev.seek(SeekFrom::Start(slot_len.saturating_sub(FOOTER_SIZE)))
        .map_err(io_err("slot footer"))?;
    dev.read_exact(&mut r).map_err(io_err("slot footer"))?;
    Ok(r == partial_record(envelope))
}

/// Step 1 of the writes, for either writer: refuses `meta` unless its signatures were
/// checked and image and footer fit the slot, then puts the record of this install where
/// the target's footer was, flushed (the slot cannot boot from now until the footer is
/// back). Returns what [`Written::commit`] finishes once the writes are done.
pub(crate) fn start_writing<D: Storage>(
    target: &mut D,
    slot_len: u64,
    meta: &Meta,
) -> Result<Written, DeltaError> {
    let signed_by = meta.signed_by.clone().ok_or(DeltaError::Unsigned)?;
    let needed = meta.image_len().saturating_add(FOOTER_SIZE);
    if needed > slot_len {
        return Err(DeltaError::TooLarge { needed, slot_len });
    }
    target
        .seek(SeekFrom::Start(slot_len - FOOTER_SIZE))
        .map_err(io_err("slot footer"))?;
    target
        .write_all(&partial_record(&meta.envelope))
        .map_err(io_err("slot footer"))?;
    target.flush().map_err(io_err("slot footer"))?;
    target.sync().map_err(io_err("slot footer"))?;
    Ok(Written {
        verified: VerifiedManifest {
            manifest: meta.manifest.clone(),
            signed_by,
        },
        image_len: meta.image_len(),
        footer: meta.footer,
    })
}

/// The last writes before the commit: the hash area `tree`, the padding up to the
/// manifest, the envelope checked in step 1; flushed.
pub(crate) fn finish_writing<D: Storage>(
    dev: &mut D,
    meta: &Meta,
    tree: &[u8],
) -> Result<(), DeltaError> {
    let hash_offset = meta.manifest.verity.hash_offset;
    let hash_end = hash_offset + tree.len() as u64;
    dev.seek(SeekFrom::Start(hash_offset))
        .map_err(io_err("target slot"))?;
    dev.write_all(tree).map_err(io_err("target slot"))?;
    let padding = meta.footer.manifest_offset.saturating_sub(hash_end);
    io::copy(&mut io::repeat(0).take(padding), dev).map_err(io_err("target slot"))?;
    dev.write_all(&meta.envelope.to_bytes())
        .map_err(io_err("target slot"))?;
    dev.flush().map_err(io_err("target slot"))?;
    dev.sync().map_err(io_err("target slot"))
}

/// Bytes as `12.3 MiB`. Pure.
pub fn mib(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let m = bytes as f64 / f64::from(1u32 << 20);
    format!("{m:.1} MiB")
}

/// Steps 2-3 of an install (see the module docs of [`super`]): writes `meta`'s image into
/// `target` (`slot_len` bytes) as `plan` says, copying from `base` and fetching through
/// `fetcher`; the fetched data bytes are one step of `progress` (named with what is
/// fetched and reused). Returns what [`Written::commit`] finishes, and the counts.
#[allow(clippy::too_many_arguments)]
pub fn apply<D: Storage, B: Read + Seek>(
    meta: &Meta,
    plan: &Plan,
    fetcher: &mut Fetcher<'_>,
    target: &mut D,
    slot_len: u64,
    base: Option<&mut B>,
    progress: &mut dyn Progress,
) -> Result<(Written, Stats), DeltaError> {
    apply_with(
        meta, plan, fetcher, None, None, target, slot_len, base, progress,
    )
}

/// [`apply`], the blocks that `patched` covers taken from a published delta's frames
/// (decoded against `base`) and those that `framed` covers from the compressed form's
/// frames (each still checked against the tree; a bad one, and all later ones of its way
/// once the way is given up, fetched raw through `fetcher`).
#[allow(clippy::too_many_arguments)]
pub fn apply_with<D: Storage, B: Read + Seek>(
    meta: &Meta,
    plan: &Plan,
    fetcher: &mut Fetcher<'_>,
    mut framed: Option<&mut Framed<'_, '_>>,
    mut patched: Option<&mut Patched<'_, '_>>,
    target: &mut D,
    slot_len: u64,
    mut base: Option<&mut B>,
    progress: &mut dyn Progress,
) -> Result<(Written, Stats), DeltaError> {
    let start = fetcher.received;
    let requests = fetcher.requests;
    let bs = plan.block_size;
    let n = meta.params.data_blocks();

    // 2. The slot cannot boot from now until the footer is back.
    let written = start_writing(target, slot_len, meta)?;

    // 3. The data blocks, in order.
    let mut out = Out {
        dev: target,
        unsynced: 0,
        bs,
        l0: meta.level0()?,
        params: &meta.params,
        stats: Stats::default(),
        step: Step::new(
            progress,
            &format!(
                "fetching {}, reusing {}",
                mib(plan.fetch_bytes()),
                mib(plan.reused_bytes())
            ),
            Some(plan.fetch_bytes()),
        ),
    };
    let mut late: Vec<Action> = vec![Action::Keep; plan.actions.len()];
    let mut block = vec![0u8; usize::try_from(bs).unwrap_or(4096)];
    let zero = vec![0u8; block.len()];
    let raw_ranges = match (patched.as_deref(), framed.as_deref()) {
        (Some(p), _) => p.plan.raw_ranges(),
        (None, Some(f)) => &f.plan.raw_ranges,
        (None, None) => &plan.ranges,
    };
    let framed_start = framed.as_deref().map_or(0, |f| f.fetcher.received);
    let patched_start = patched.as_deref().map_or(0, |p| p.fetcher.received);
    let framed_requests = framed.as_deref().map_or(0, |f| f.fetcher.requests);
    let patched_requests = patched.as_deref().map_or(0, |p| p.fetcher.requests);
    let mut ranges = raw_ranges.iter().copied().peekable();
    let mut i = 0u64;
    while i < n {
        let action = plan.actions[usize::try_from(i).unwrap_or(0)];
        match action {
            Action::Keep => {
                out.stats.kept += 1;
            }
            Action::Zero => {
                out.write(i, &zero)?;
                out.stats.zeroed += 1;
            }
            Action::Copy(j) => {
                let copied = match base.as_deref_mut() {
                    Some(b) => {
                        b.seek(SeekFrom::Start(j * bs))
                            .map_err(io_err("base slot"))?;
                        b.read_exact(&mut block).is_ok() && out.matches(i, &block)
                    }
                    None => false,
                };
                if copied {
                    out.write(i, &block)?;
                    out.stats.copied += 1;
                } else {
                    // The base no longer holds it: fetch it at the end.
                    late[usize::try_from(i).unwrap_or(0)] = Action::Fetch;
                    out.stats.refetched_blocks += 1;
                }
            }
            Action::Fetch if patched.as_deref().is_some_and(|p| p.plan.covers(i)) => {
                if let Some(p) = patched.as_deref_mut() {
                    patch_block(&mut out, p, base.as_deref_mut(), i, &mut block, &mut late)?;
                }
            }
            Action::Fetch if framed.as_deref().is_some_and(|f| f.plan.covers(i)) => {
                if let Some(f) = framed.as_deref_mut() {
                    frame_block(&mut out, f, i, &mut block, &mut late)?;
                }
            }
            Action::Fetch => {
                let (first, count) = match ranges.next() {
                    Some(r) if r.0 == i => r,
                    _ => (i, 1),
                };
                fetch_run(&mut out, fetcher, first, count)?;
                i = first + count;
                continue;
            }
        }
        i += 1;
    }
    for (first, count) in merge(&late, plan.ranges_max_blocks()) {
        fetch_run(&mut out, fetcher, first, count)?;
    }

    // The tree, the padding up to the manifest, the envelope checked in step 1.
    finish_writing(&mut *out.dev, meta, &meta.tree)?;
    let mut stats = out.stats;
    stats.fetched = meta.fetched + fetcher.received - start;
    if let Some(f) = framed.as_deref() {
        stats.fetched += f.plan.table_fetched + f.fetcher.received - framed_start;
        stats.frames = f.frames_fetched;
    }
    if let Some(p) = patched.as_deref() {
        stats.fetched += p.plan.index_fetched + p.fetcher.received - patched_start;
        stats.patches = p.frames_fetched;
    }
    // Every range request of the write: the image's, and the frames' of either file.
    stats.requests = fetcher.requests - requests
        + framed
            .as_deref()
            .map_or(0, |f| f.fetcher.requests - framed_requests)
        + patched
            .as_deref()
            .map_or(0, |p| p.fetcher.requests - patched_requests);
    Ok((written, stats))
}

impl Plan {
    /// The longest range the plan was merged with, in blocks.
    pub fn ranges_max_blocks(&self) -> u64 {
        self.ranges.iter().map(|r| r.1).max().unwrap_or(1)
    }
}

/// Data block `i` from its frame: checked and written, or (a bad block, the way given
/// up) left to the raw fetches at the end, the way given up with the reason.
fn frame_block<D: Storage>(
    out: &mut Out<'_, D>,
    f: &mut Framed<'_, '_>,
    i: u64,
    block: &mut [u8],
    late: &mut [Action],
) -> Result<(), DeltaError> {
    let bs = out.bs;
    let good = match f.block(i, bs, &mut *out.dev, late) {
        Some(b) => {
            block.copy_from_slice(b);
            out.matches(i, block)
        }
        None => false,
    };
    if good {
        out.write(i, block)?;
        out.stats.fetched_blocks += 1;
        out.stats.frame_blocks += 1;
        out.step.advance(bs);
        return Ok(());
    }
    if f.refused.is_none() {
        f.refuse(format!(
            "{} frame {} gave data block {i}, which does not match the signed hash tree",
            f.way().name(),
            (i * bs) / f.plan.table.frame_raw
        ));
    }
    late[usize::try_from(i).unwrap_or(0)] = Action::Fetch;
    Ok(())
}

/// Data block `i` from its delta frame (decoded against `base`): checked and written, or
/// (a bad block, the way given up) left to the raw fetches at the end, the way given up
/// with the reason.
fn patch_block<D: Storage, B: Read + Seek>(
    out: &mut Out<'_, D>,
    p: &mut Patched<'_, '_>,
    base: Option<&mut B>,
    i: u64,
    block: &mut [u8],
    late: &mut [Action],
) -> Result<(), DeltaError> {
    let bs = out.bs;
    let good = match p.block(i, bs, base) {
        Some(b) => {
            block.copy_from_slice(b);
            out.matches(i, block)
        }
        None => false,
    };
    if good {
        out.write(i, block)?;
        out.stats.fetched_blocks += 1;
        out.stats.patch_blocks += 1;
        out.step.advance(bs);
        return Ok(());
    }
    if p.refused.is_none() {
        let k = p.plan.frame_of(i).map_or(0, |f| f.index);
        p.refuse(format!(
            "delta frame {k} gave data block {i}, which does not match the signed hash tree"
        ));
    }
    late[usize::try_from(i).unwrap_or(0)] = Action::Fetch;
    Ok(())
}

/// Fetches blocks `first..first + count`, checking each against the tree and writing the
/// good ones as they arrive. A cut answer is resumed from the first block not received; a
/// bad block is asked for again, and after the policy's `bad_answers` bad answers for one
/// block the source is refused.
fn fetch_run<D: Storage>(
    out: &mut Out<'_, D>,
    fetcher: &mut Fetcher<'_>,
    first: u64,
    count: u64,
) -> Result<(), DeltaError> {
    let bs = out.bs;
    let bad_limit = fetcher.policy().bad_answers.max(1);
    let mut pending: VecDeque<(u64, u64)> = VecDeque::from([(first, count)]);
    let mut bad_answers: HashMap<u64, u32> = HashMap::new();
    let mut buf: Vec<u8> = Vec::with_capacity(usize::try_from(bs).unwrap_or(4096));
    while let Some((s, c)) = pending.pop_front() {
        buf.clear();
        let mut next = s;
        let mut bad = Vec::new();
        let mut failure: Option<DeltaError> = None;
        let end = s + c;
        let r = {
            let mut sink = |mut chunk: &[u8]| -> Result<(), Abort> {
                while !chunk.is_empty() && next < end {
                    let take = (usize::try_from(bs).unwrap_or(4096) - buf.len()).min(chunk.len());
                    buf.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    if buf.len() as u64 == bs {
                        if out.matches(next, &buf) {
                            if let Err(e) = out.write(next, &buf) {
                                failure = Some(e);
                                return Err(Abort);
                            }
                            out.stats.fetched_blocks += 1;
                            out.step.advance(bs);
                        } else {
                            bad.push(next);
                        }
                        buf.clear();
                        next += 1;
                    }
                }
                Ok(())
            };
            fetcher.attempt(s * bs, c * bs, &mut sink)
        };
        if let Some(e) = failure {
            return Err(e);
        }
        let result = match r {
            Ok(()) if next < end => Err(FetchError::transient("the answer was short")),
            other => other,
        };
        if let Err(e) = result {
            if next < end {
                pending.push_front((next, end - next));
                out.stats.refetched_blocks += u64::from(!buf.is_empty());
            }
            fetcher.failed("data", e)?;
        }
        for b in bad {
            let k = bad_answers.entry(b).or_insert(0);
            *k += 1;
            if *k >= bad_limit {
                return Err(DeltaError::BadData {
                    source_name: fetcher.name(),
                    what: format!("data block {b}"),
                    answers: *k,
                });
            }
            out.stats.refetched_blocks += 1;
            pending.push_back((b, 1));
        }
    }
    Ok(())
}

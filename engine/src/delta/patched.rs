//! The `delta` way: a published delta ([`super::published`]) carried out. [`DeltaPlan`]
//! prices it exactly before the first data byte (its index says each frame's length and
//! the new blocks it gives): a frame is taken when its compressed length is below the
//! bytes of the blocks the plan fetches from it; the blocks no frame taken gives go by the
//! `zstd` way's rule when there is a compressed form (its frames or raw ranges), raw
//! otherwise. [`Patched`] fetches a frame (decoded by the source against the running
//! slot's blocks the frame names: on the device, the fetch client) when its first block is
//! written; each block is still checked against the signed tree by the writer, and a frame
//! that fails ends the way (its blocks and every later one covered by the delta are
//! fetched raw).

use std::io::{Read, Seek, SeekFrom};

use super::frame_plan::FramePlan;
use super::plan::{merge, Action, Plan};
use super::published::{index_len, DeltaIndex, PatchFrame, MAX_REF, TRAILER_LEN};
use super::zst::SeekTable;
use super::{DeltaError, FetchError, Fetcher, Meta};
use sha2::{Digest, Sha256};
use stele_verifier::channel::ReleaseDelta;
use stele_verifier::footer::FOOTER_SIZE;

/// The `delta` way of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeltaPlan {
    pub index: DeltaIndex,
    /// Bytes read for the index and trailer.
    pub index_fetched: u64,
    /// The delta frames fetched (positions in `index.frames`), in order.
    pub frames: Vec<usize>,
    /// Per data block: the delta frame (position) it comes from.
    covered: Vec<Option<u32>>,
    /// Compressed bytes of the frames taken.
    pub frame_bytes: u64,
    /// The other fetched blocks by the `zstd` way (when there is a compressed form).
    pub rest: Option<FramePlan>,
    /// The other fetched blocks as raw ranges, without a compressed form.
    raw_ranges: Vec<(u64, u64)>,
    raw_bytes: u64,
}

impl DeltaPlan {
    /// The `delta` way for `plan` with `index` (read with `index_fetched` bytes); the
    /// rest by the compressed form's `table` (read with its bytes) when given, raw ranges
    /// of at most `max_blocks` otherwise. Pure.
    pub fn new(
        plan: &Plan,
        index: DeltaIndex,
        index_fetched: u64,
        table: Option<(SeekTable, u64)>,
        max_blocks: u64,
    ) -> Self {
        let bs = plan.block_size;
        let mut covered = vec![None; plan.actions.len()];
        let mut rest_actions = plan.actions.clone();
        let mut frames = Vec::new();
        let mut frame_bytes = 0;
        for (k, f) in index.frames.iter().enumerate() {
            let (Ok(a), Ok(b)) = (
                usize::try_from(f.first),
                usize::try_from(f.first + f.blocks),
            ) else {
                continue;
            };
            let Some(chunk) = plan.actions.get(a..b) else {
                continue;
            };
            let wanted = chunk.iter().filter(|x| **x == Action::Fetch).count() as u64;
            if wanted == 0 || f.len >= wanted * bs {
                continue;
            }
            frames.push(k);
            frame_bytes += f.len;
            for i in a..b {
                if plan.actions[i] == Action::Fetch {
                    covered[i] = u32::try_from(k).ok();
                    rest_actions[i] = Action::Keep;
                }
            }
        }
        let mut rest_plan = plan.clone();
        rest_plan.counts.fetch =
            rest_actions.iter().filter(|a| **a == Action::Fetch).count() as u64;
        rest_plan.actions = rest_actions;
        rest_plan.ranges = merge(&rest_plan.actions, max_blocks);
        let raw_bytes = rest_plan.fetch_bytes();
        let raw_ranges = rest_plan.ranges.clone();
        let rest = table.map(|(t, n)| FramePlan::new(&rest_plan, t, n, max_blocks));
        DeltaPlan {
            index,
            index_fetched,
            frames,
            covered,
            frame_bytes,
            rest,
            raw_ranges,
            raw_bytes,
        }
    }

    /// The delta frame data block `i` comes from.
    pub fn frame_of(&self, i: u64) -> Option<&PatchFrame> {
        let i = usize::try_from(i).ok()?;
        let k = (*self.covered.get(i)?)?;
        self.index.frames.get(usize::try_from(k).ok()?)
    }

    /// True when data block `i` comes from a delta frame.
    pub fn covers(&self, i: u64) -> bool {
        self.frame_of(i).is_some()
    }

    /// The raw ranges of this way (the rest's, when the rest goes by the `zstd` way).
    pub fn raw_ranges(&self) -> &[(u64, u64)] {
        match &self.rest {
            Some(r) => &r.raw_ranges,
            None => &self.raw_ranges,
        }
    }

    /// All the bytes of this way: the index, the frames, the rest.
    pub fn bytes(&self) -> u64 {
        self.index_fetched
            + self.frame_bytes
            + self.rest.as_ref().map_or(self.raw_bytes, FramePlan::bytes)
    }
}

/// The `delta` way being carried out.
pub struct Patched<'f, 'a> {
    pub fetcher: &'f mut Fetcher<'a>,
    pub plan: &'f DeltaPlan,
    /// Why the way was given up.
    pub refused: Option<String>,
    /// Delta frames fetched and decoded.
    pub frames_fetched: u64,
    current: Option<(u64, Vec<u8>)>,
    /// The reference buffer, kept from one frame to the next.
    reference: Vec<u8>,
}

impl std::fmt::Debug for Patched<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Patched")
            .field("frames", &self.plan.frames.len())
            .field("refused", &self.refused)
            .finish()
    }
}

impl<'f, 'a> Patched<'f, 'a> {
    pub fn new(fetcher: &'f mut Fetcher<'a>, plan: &'f DeltaPlan) -> Self {
        Patched {
            fetcher,
            plan,
            refused: None,
            frames_fetched: 0,
            current: None,
            reference: Vec::new(),
        }
    }

    /// Gives the way up: later blocks are fetched raw.
    pub fn refuse(&mut self, why: String) {
        self.current = None;
        self.refused.get_or_insert(why);
    }

    /// The bytes of data block `i` (`bs` bytes) from its delta frame, fetching and
    /// decoding the frame (against `base`, the running slot) when it is not the current
    /// one. `None` when the way was given up (now or before).
    pub fn block<B: Read + Seek>(
        &mut self,
        i: u64,
        bs: u64,
        base: Option<&mut B>,
    ) -> Option<&[u8]> {
        if self.refused.is_some() {
            return None;
        }
        let frame = *self.plan.frame_of(i)?;
        if self.current.as_ref().is_none_or(|c| c.0 != frame.index) {
            let got = match base {
                Some(b) => fetch_frame(self.fetcher, &frame, bs, b, &mut self.reference),
                None => Err("no running slot to read the delta's reference from".to_string()),
            };
            match got {
                Ok(bytes) => {
                    self.frames_fetched += 1;
                    self.current = Some((frame.index, bytes));
                }
                Err(why) => {
                    self.refuse(why);
                    return None;
                }
            }
        }
        let (_, bytes) = self.current.as_ref()?;
        let a = usize::try_from((i - frame.first).checked_mul(bs)?).ok()?;
        let b = a.checked_add(usize::try_from(bs).ok()?)?;
        bytes.get(a..b)
    }
}

/// Frame `frame` of the delta `fetcher` reads, decoded (by the source) against its
/// reference read from `base` (the running slot) into `reference` (a buffer kept from one
/// frame to the next), retried like any answer; the reason as text when it fails.
pub fn fetch_frame<B: Read + Seek>(
    fetcher: &mut Fetcher<'_>,
    frame: &PatchFrame,
    bs: u64,
    base: &mut B,
    reference: &mut Vec<u8>,
) -> Result<Vec<u8>, String> {
    read_reference(base, frame, bs, reference)?;
    let reference = &reference[..];
    let name = fetcher.name();
    let want = frame.blocks * bs;
    loop {
        let mut out = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
        let r = fetcher.attempt_patch(frame, bs, reference, &mut |c: &[u8]| {
            if (out.len() + c.len()) as u64 > want {
                return Err(super::Abort);
            }
            out.extend_from_slice(c);
            Ok(())
        });
        let e = match r {
            Ok(()) if out.len() as u64 == want => return Ok(out),
            Ok(()) | Err(FetchError::Aborted) => FetchError::Permanent {
                why: format!(
                    "delta frame {} gave {} bytes, not its {want}",
                    frame.index,
                    out.len()
                ),
            },
            Err(e) => e,
        };
        if let Err(d) = fetcher.failed("a delta frame", e) {
            return Err(match d {
                DeltaError::Fetch { error, .. } => format!("{name}: {error}"),
                other => other.to_string(),
            });
        }
    }
}

/// The running slot's blocks a frame names (at most [`MAX_REF`] bytes), into `r`.
fn read_reference<B: Read + Seek>(
    b: &mut B,
    f: &PatchFrame,
    bs: u64,
    r: &mut Vec<u8>,
) -> Result<(), String> {
    let len = f.ref_blocks.saturating_mul(bs).min(MAX_REF);
    r.resize(usize::try_from(len).unwrap_or(0), 0);
    b.seek(SeekFrom::Start(f.ref_first.saturating_mul(bs)))
        .and_then(|_| b.read_exact(r))
        .map_err(|e| {
            format!(
                "delta frame {}: reading its reference (old blocks {}..{}) from the running slot failed: {e}",
                f.index,
                f.ref_first,
                f.ref_first.saturating_add(f.ref_blocks)
            )
        })
}

/// Reads the index of the published delta served by `f` and checks it leads from the
/// release whose envelope digest is `old` to the signed image `meta`: the index and the
/// bytes read for it, or why there is no `delta` way (no such file, another release's,
/// malformed). Reads the file's last [`FOOTER_SIZE`] bytes (an HTTP source already has
/// them from its first request), and the rest of the index only when it is longer.
/// Retries like any read. A delta the signed channel lists (`listed`) must have its
/// listed length and its index and trailer their listed sha256 before the index is
/// parsed (docs/FORMATS.md "Update channel"): otherwise it is not used.
pub fn fetch_index(
    f: &mut Fetcher<'_>,
    meta: &Meta,
    old: &[u8; 32],
    listed: Option<&ReleaseDelta>,
) -> Result<(DeltaIndex, u64), String> {
    let start = f.received;
    let why = |e: DeltaError| match e {
        DeltaError::Fetch { error, .. } => error.to_string(),
        other => other.to_string(),
    };
    let len = f.file_len().map_err(why)?;
    if let Some(l) = listed.filter(|l| l.length != len) {
        return Err(format!(
            "it is {len} bytes, the channel lists {}: not used",
            l.length
        ));
    }
    if len < TRAILER_LEN as u64 {
        return Err(format!("it is {len} bytes long"));
    }
    let t0 = FOOTER_SIZE.min(len);
    let tail = f.read_vec("the delta's index", len - t0, t0).map_err(why)?;
    let trailer = &tail[tail.len() - TRAILER_LEN..];
    let il = index_len(trailer).map_err(|e| e.to_string())?;
    if il > len {
        return Err(format!("its index of {il} bytes is longer than the file"));
    }
    let bytes = match usize::try_from(t0.saturating_sub(il)) {
        Ok(skip) if il <= t0 => tail[skip..].to_vec(),
        _ => {
            let mut head = f
                .read_vec("the delta's index", len - il, il - t0)
                .map_err(why)?;
            head.extend_from_slice(&tail);
            head
        }
    };
    if let Some(l) = listed {
        let got: [u8; 32] = Sha256::digest(&bytes).into();
        if got != l.index_sha256 {
            return Err(format!(
                "its index and trailer have sha256 {}, the channel lists {}: not used",
                stele_verifier::hex::encode(&got),
                stele_verifier::hex::encode(&l.index_sha256)
            ));
        }
    }
    let index = DeltaIndex::parse(&bytes, len).map_err(|e| e.to_string())?;
    let new = super::published::digest(&meta.envelope);
    index
        .check(
            old,
            &new,
            meta.len,
            meta.params.data_blocks(),
            u64::from(meta.params.data_block_size()),
        )
        .map_err(|e| e.to_string())?;
    Ok((index, f.received - start))
}

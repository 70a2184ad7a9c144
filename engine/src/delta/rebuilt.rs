//! A published delta written without the new hash tree: its frames and copy runs give
//! every data block of the new image ([`DeltaIndex::pieces`]), so a device running the
//! release it starts from fetches only the delta (the tree is about 1/128 of the image,
//! and most of it changes when data moves). The device writes the blocks in order,
//! hashes them as it writes them, rebuilds the tree and compares its root with the signed
//! root hash before anything can boot the slot: the slot carries the partial-install
//! record ([`super::apply::partial_record`]) where its footer goes until the commit, and
//! the state is flipped only after the root matched.
//!
//! A delta that lies (a frame that decodes to other data, a copy run from the wrong old
//! blocks) is found at the root, not block by block: [`Rebuilt::GivenUp`] then hands the
//! install back to the writer with the signed tree ([`super::apply::apply_with`]), which
//! keeps each block the slot already holds that matches the tree, and fetches the others
//! by the other ways. So does a frame that cannot be fetched or decoded. A resume after a
//! cut takes that writer too (the record says part of this release is there): it fetches
//! the tree and reads the slot back, keeping what matches.

use std::io::{Read, Seek, SeekFrom};

use super::apply::{finish_writing, mib, start_writing, write_synced, Stats};
use super::patched::fetch_frame;
use super::published::{DeltaIndex, Piece};
use super::{DeltaError, Fetcher, Meta, Written};
use crate::Storage;
use stele_verifier::progress::{Progress, Step};
use stele_verifier::verity::TreeBuilder;

/// Why [`apply_rebuilt`] stopped.
#[derive(Debug)]
pub enum Rebuilt {
    /// The install cannot go on (the target slot failed, the time ran out): the error.
    Failed(DeltaError),
    /// The delta gave up (a frame not fetched or refused, the running slot unreadable,
    /// the rebuilt root not the signed one): why, in one line. The install goes on with
    /// the signed tree; what was written is kept where it matches.
    GivenUp(String),
}

impl From<DeltaError> for Rebuilt {
    fn from(e: DeltaError) -> Self {
        Rebuilt::Failed(e)
    }
}

/// Copies and zero runs are written this many blocks at a time at most.
const RUN_CHUNK: u64 = 256;

/// Writes `meta`'s image (its footer and envelope checked, its tree not fetched) into
/// `target` (`slot_len` bytes) from the delta `delta` reads (`index`, read with
/// `index_fetched` bytes; `pieces`, its [`DeltaIndex::pieces`]) and the running slot
/// `base`, in the install write order; the hash area written is the one rebuilt from the
/// data blocks written, after its root matched the signed root hash. Returns what
/// [`Written::commit`] finishes, and the counts.
#[allow(clippy::too_many_arguments)]
pub fn apply_rebuilt<D: Storage, B: Read + Seek>(
    meta: &Meta,
    index: &DeltaIndex,
    pieces: &[Piece],
    index_fetched: u64,
    delta: &mut Fetcher<'_>,
    target: &mut D,
    slot_len: u64,
    base: &mut B,
    progress: &mut dyn Progress,
) -> Result<(Written, Stats), Rebuilt> {
    let bs = u64::from(meta.params.data_block_size());
    let start = delta.received;
    let requests = delta.requests;
    let written = start_writing(target, slot_len, meta)?;
    let mut tree = TreeBuilder::new(meta.params.clone());
    let feed = |tree: &mut TreeBuilder, bytes: &[u8]| {
        tree.update(bytes)
            .map_err(|e| Rebuilt::GivenUp(format!("rebuilding the hash tree: {e}")))
    };
    let frame_bytes: u64 = index.frames.iter().map(|f| f.len).sum();
    let mut step = Step::new(
        progress,
        &format!(
            "fetching {} of delta frames (the hash tree is rebuilt here)",
            mib(frame_bytes)
        ),
        Some(frame_bytes),
    );
    let mut stats = Stats::default();
    let mut unsynced = 0u64;
    let mut buf = Vec::new();
    let mut reference = Vec::new();
    for piece in pieces {
        match *piece {
            Piece::Frame(k) => {
                let Some(frame) = index.frames.get(k) else {
                    return Err(Rebuilt::GivenUp(format!("the delta has no frame {k}")));
                };
                let bytes = match fetch_frame(delta, frame, bs, base, &mut reference) {
                    Ok(b) => b,
                    Err(why) => {
                        delta.check_time()?;
                        return Err(Rebuilt::GivenUp(why));
                    }
                };
                write_synced(target, &mut unsynced, frame.first * bs, &bytes)?;
                feed(&mut tree, &bytes)?;
                stats.patches += 1;
                stats.patch_blocks += frame.blocks;
                stats.fetched_blocks += frame.blocks;
                step.advance(frame.len);
            }
            Piece::Run(run) => {
                let mut done = 0;
                while done < run.blocks {
                    let n = (run.blocks - done).min(RUN_CHUNK);
                    buf.clear();
                    buf.resize(usize::try_from(n * bs).unwrap_or(0), 0);
                    if let Some(from) = run.from {
                        // Untrusted numbers: a run past the running slot fails to read.
                        let old = from.saturating_add(done);
                        base.seek(SeekFrom::Start(old.saturating_mul(bs)))
                            .and_then(|_| base.read_exact(&mut buf))
                            .map_err(|e| {
                                Rebuilt::GivenUp(format!(
                                    "reading old blocks {old}..{} from the running slot failed: {e}",
                                    old.saturating_add(n)
                                ))
                            })?;
                    }
                    write_synced(target, &mut unsynced, (run.first + done) * bs, &buf)?;
                    feed(&mut tree, &buf)?;
                    done += n;
                }
                if run.from.is_some() {
                    stats.copied += run.blocks;
                } else {
                    stats.zeroed += run.blocks;
                }
            }
        }
    }
    let (area, root) = tree
        .finish()
        .map_err(|e| Rebuilt::GivenUp(format!("rebuilding the hash tree: {e}")))?;
    let signed = meta.manifest.verity.root_hash;
    if root != signed {
        return Err(Rebuilt::GivenUp(format!(
            "the hash tree rebuilt from the blocks it gave has root {}, not the signed {}",
            stele_verifier::hex::encode(&root),
            stele_verifier::hex::encode(&signed)
        )));
    }
    finish_writing(target, meta, &area)?;
    stats.fetched = meta.fetched + index_fetched + delta.received - start;
    stats.requests = delta.requests - requests;
    Ok((written, stats))
}

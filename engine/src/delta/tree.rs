//! Fetching the new image's hash tree as a delta too: the upper levels (a few blocks) are
//! fetched and checked top-down against the signed root hash; each level-0 hash block is
//! then checked against its entry in level 1, and taken from the running slot's own hash
//! tree when a block there has that digest (same salt and hash block size: an update that
//! changes a few files leaves most of level 0 as it was), else fetched.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};

use super::{io_err, DeltaError, Fetcher, Trust};
use stele_verifier::slot::{self, VerifyOptions};
use stele_verifier::verity::{verify_hash_area, VerityParams, DIGEST_LEN};

/// The running slot's hash blocks, by their salted digest.
#[derive(Debug)]
pub struct KnownHashBlocks {
    salt: Vec<u8>,
    hash_block_size: u32,
    area: Vec<u8>,
    by_digest: HashMap<[u8; DIGEST_LEN], usize>,
}

impl KnownHashBlocks {
    /// The hash area of the slot image in `r` (`len` bytes), checked as `trust` says and
    /// against its own root hash; `None` when it is not a usable slot image.
    pub fn from_slot<R: Read + Seek>(
        r: &mut R,
        len: u64,
        trust: Trust<'_>,
    ) -> Result<Option<Self>, DeltaError> {
        let checked = match trust {
            Trust::Keyring(k) => {
                slot::verify(r, len, k, VerifyOptions::default()).map(|(_, v)| v.manifest)
            }
            Trust::Unsigned => slot::check_unsigned(r, len).map(|(_, m)| m),
        };
        let m = match checked {
            Ok(m) => m,
            Err(stele_verifier::Error::Io { source, .. }) => {
                return Err(DeltaError::Io {
                    what: "base slot",
                    source,
                })
            }
            Err(_) => return Ok(None),
        };
        let params = m.verity_params().map_err(DeltaError::Verify)?;
        let size = usize::try_from(params.hash_tree_size()).unwrap_or(0);
        let mut area = vec![0u8; size];
        r.seek(SeekFrom::Start(m.verity.hash_offset))
            .map_err(io_err("base slot"))?;
        r.read_exact(&mut area).map_err(io_err("base slot"))?;
        if verify_hash_area(&area, &params, &m.verity.root_hash).is_err() {
            // Changed since it was checked: not an index.
            return Ok(None);
        }
        let hbs = usize::try_from(params.hash_block_size()).unwrap_or(4096);
        let mut by_digest = HashMap::new();
        for (i, b) in area.chunks_exact(hbs).enumerate() {
            by_digest.entry(params.digest(b)).or_insert(i * hbs);
        }
        Ok(Some(KnownHashBlocks {
            salt: params.salt().to_vec(),
            hash_block_size: params.hash_block_size(),
            area,
            by_digest,
        }))
    }

    /// A hash block with `digest` under `params`' salt, if the slot has one.
    fn get(&self, params: &VerityParams, digest: &[u8; DIGEST_LEN]) -> Option<&[u8]> {
        if self.salt != params.salt() || self.hash_block_size != params.hash_block_size() {
            return None;
        }
        let at = *self.by_digest.get(digest)?;
        self.area
            .get(at..at + usize::try_from(self.hash_block_size).unwrap_or(0))
    }
}

fn mismatch(level: usize, block: u64) -> stele_verifier::Error {
    stele_verifier::Error::HashBlockMismatch { level, block }
}

/// Checks the levels above level 0 (the area's first `upper.len()` bytes) top-down
/// against `root`.
fn check_upper(
    upper: &[u8],
    params: &VerityParams,
    root: &[u8; DIGEST_LEN],
) -> stele_verifier::Result<()> {
    let layout = params.level_layout();
    let hbs = u64::from(params.hash_block_size());
    let top = layout.len() - 1;
    let top_block = upper
        .get(..usize::try_from(hbs).unwrap_or(0))
        .unwrap_or(&[]);
    if &params.digest(top_block) != root {
        return Err(stele_verifier::Error::RootHashMismatch {
            computed: stele_verifier::hex::encode(&params.digest(top_block)),
            expected: stele_verifier::hex::encode(root),
        });
    }
    for level in (1..top).rev() {
        let (off, blocks) = layout[level];
        let parent = layout[level + 1].0;
        for j in 0..blocks {
            let a = usize::try_from(off + j * hbs).unwrap_or(usize::MAX);
            let b = a.saturating_add(usize::try_from(hbs).unwrap_or(0));
            let block = upper.get(a..b).ok_or(mismatch(level, j))?;
            if Some(params.digest(block)) != params.entry_at(upper, parent, j) {
                return Err(mismatch(level, j));
            }
        }
    }
    Ok(())
}

/// The hash area at `hash_offset`, checked against `root`: upper levels fetched, level 0
/// from `known` where it has the blocks, the rest fetched in contiguous ranges.
pub fn fetch_tree(
    f: &mut Fetcher<'_>,
    params: &VerityParams,
    root: &[u8; DIGEST_LEN],
    hash_offset: u64,
    known: Option<&KnownHashBlocks>,
) -> Result<Vec<u8>, DeltaError> {
    let size = params.hash_tree_size();
    let layout = params.level_layout();
    let hbs = u64::from(params.hash_block_size());
    let Some(&(l0_off, l0_blocks)) = layout.first() else {
        return Ok(Vec::new());
    };
    if layout.len() == 1 || known.is_none() {
        // One hash block, or nothing to reuse: the whole area in one answer.
        let (_, area) = f.read_checked("the hash tree", hash_offset, size, |b| {
            verify_hash_area(b, params, root)
        })?;
        return Ok(area);
    }
    let (_, upper) = f.read_checked("the hash tree", hash_offset, l0_off, |b| {
        check_upper(b, params, root)
    })?;
    let parent = layout[1].0;
    let expected = |j: u64| {
        params
            .entry_at(&upper, parent, j)
            .unwrap_or([0; DIGEST_LEN])
    };
    let mut area = upper.clone();
    area.resize(usize::try_from(size).unwrap_or(0), 0);
    let mut missing: Vec<(u64, u64)> = Vec::new();
    for j in 0..l0_blocks {
        let at = usize::try_from(l0_off + j * hbs).unwrap_or(0);
        match known.and_then(|k| k.get(params, &expected(j))) {
            Some(block) => area[at..at + block.len()].copy_from_slice(block),
            None => match missing.last_mut() {
                Some((s, n)) if *s + *n == j && *n < 256 => *n += 1,
                _ => missing.push((j, 1)),
            },
        }
    }
    for (first, n) in missing {
        let off = l0_off + first * hbs;
        let (_, bytes) = f.read_checked("the hash tree", hash_offset + off, n * hbs, |b| {
            for (k, block) in b
                .chunks_exact(usize::try_from(hbs).unwrap_or(4096))
                .enumerate()
            {
                let j = first + k as u64;
                if params.digest(block) != expected(j) {
                    return Err(mismatch(0, j));
                }
            }
            Ok(())
        })?;
        let at = usize::try_from(off).unwrap_or(0);
        area[at..at + bytes.len()].copy_from_slice(&bytes);
    }
    verify_hash_area(&area, params, root).map_err(DeltaError::Verify)?;
    Ok(area)
}

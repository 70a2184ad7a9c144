//! A hash area being built: level 0 placed by whoever hashed the data blocks, then the
//! levels above it, each hashed from the one below, and the root.

use sha2::{Digest, Sha256};

use super::{hash_blocks, to_usize, usize_of, Digest32, VerityParams, DIGEST_LEN};
use crate::{Error, Result};

/// A hash area being built: level 0 placed by whoever hashed the data, then the levels
/// above it and the root.
pub(super) struct Tree<'a> {
    params: &'a VerityParams,
    threads: usize,
    base: Sha256,
    area: Vec<u8>,
    /// Where level 0 starts in `area`; `None` with a single data block.
    level0: Option<usize>,
    /// With a single data block there is no hash block: its digest is the root.
    only: Option<Digest32>,
}

impl<'a> Tree<'a> {
    pub(super) fn new(params: &'a VerityParams, threads: usize) -> Result<Self> {
        let size = usize::try_from(params.hash_tree_size()).map_err(|_| {
            Error::invalid("verity hash tree", "too large for this machine's memory")
        })?;
        Ok(Tree {
            params,
            threads,
            base: params.salted(),
            area: vec![0u8; size],
            level0: params.level_offsets().first().map(|&o| to_usize(o)),
            only: None,
        })
    }

    /// Places the digests of data blocks `first..` as level-0 entries.
    pub(super) fn place_level0(&mut self, first: u64, digests: &[Digest32]) {
        let p = self.params;
        match self.level0 {
            Some(off) => place_digests(
                &mut self.area,
                off,
                usize_of(p.hash_block_size),
                p.entries_per_block(),
                to_usize(first),
                digests,
            ),
            None => self.only = digests.first().copied(),
        }
    }

    /// Hashes the levels above level 0; the hash area (top level first) and the root hash.
    pub(super) fn finish(mut self) -> Result<(Vec<u8>, [u8; DIGEST_LEN])> {
        let p = self.params;
        let blocks = p.level_blocks();
        if blocks.is_empty() {
            let root = self
                .only
                .ok_or_else(|| Error::invalid("verity data", "no data block was hashed"))?;
            return Ok((Vec::new(), root));
        }
        let offsets = p.level_offsets();
        let hbs = usize_of(p.hash_block_size);
        let epb = p.entries_per_block();
        for i in 0..blocks.len() - 1 {
            let lo = to_usize(offsets[i]);
            let len = to_usize(blocks[i]) * hbs;
            let mut digests = vec![[0u8; DIGEST_LEN]; to_usize(blocks[i])];
            hash_blocks(
                &self.base,
                &self.area[lo..lo + len],
                hbs,
                &mut digests,
                self.threads,
            );
            place_digests(
                &mut self.area,
                to_usize(offsets[i + 1]),
                hbs,
                epb,
                0,
                &digests,
            );
        }
        let mut h = self.base.clone();
        h.update(&self.area[..hbs]);
        Ok((self.area, h.finalize().into()))
    }
}

/// Writes digests as entries `first..` of consecutive hash blocks starting at `offset`.
fn place_digests(
    area: &mut [u8],
    offset: usize,
    hbs: usize,
    epb: usize,
    first: usize,
    digests: &[Digest32],
) {
    for (j, d) in (first..).zip(digests) {
        let pos = offset + (j / epb) * hbs + (j % epb) * DIGEST_LEN;
        area[pos..pos + DIGEST_LEN].copy_from_slice(d);
    }
}

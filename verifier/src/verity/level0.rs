//! The hash tree as the block-hash index of a delta install: level 0 (the digest each
//! data block must have), the levels' layout, digests of single blocks and of many.

use sha2::Digest;

use super::*;

impl VerityParams {
    /// Each level's byte offset in the hash area and its number of hash blocks, level 0
    /// (the hashes of the data blocks) first; the last is the single top block at 0.
    pub fn level_layout(&self) -> Vec<(u64, u64)> {
        self.level_offsets()
            .into_iter()
            .zip(self.level_blocks())
            .collect()
    }

    /// The digest of one block (data or hash) with this tree's salt: `sha256(salt || block)`.
    pub fn digest(&self, block: &[u8]) -> [u8; DIGEST_LEN] {
        let mut h = self.salted();
        h.update(block);
        h.finalize().into()
    }

    /// Entry `j` of the level that starts at byte `offset` of `hash_area`.
    pub fn entry_at(&self, hash_area: &[u8], offset: u64, j: u64) -> Option<[u8; DIGEST_LEN]> {
        let epb = self.entries_per_block() as u64;
        let hbs = u64::from(self.hash_block_size);
        let pos = usize::try_from(offset + (j / epb) * hbs + (j % epb) * DIGEST_LEN as u64).ok()?;
        let mut d = [0u8; DIGEST_LEN];
        d.copy_from_slice(hash_area.get(pos..pos + DIGEST_LEN)?);
        Some(d)
    }
}

/// The salted digests of the whole data blocks of `data` (`data.len()` a multiple of the
/// data block size), hashed on several threads: the level-0 entries they must match.
pub fn digest_blocks(params: &VerityParams, data: &[u8]) -> Vec<[u8; DIGEST_LEN]> {
    let bs = usize_of(params.data_block_size);
    let n = data.len() / bs;
    let mut out = vec![[0u8; DIGEST_LEN]; n];
    hash_blocks(
        &params.salted(),
        &data[..n * bs],
        bs,
        &mut out,
        default_threads(),
    );
    out
}

/// Level 0 of a hash area already checked against its root: the digest each data block
/// must have (with a single data block, the root itself).
#[derive(Clone, Copy, Debug)]
pub struct Level0<'a> {
    area: &'a [u8],
    root: [u8; DIGEST_LEN],
    /// Offset of level 0 in the area; `None` with a single data block.
    offset: Option<usize>,
    hbs: usize,
    epb: usize,
    blocks: u64,
}

impl<'a> Level0<'a> {
    /// The view of `hash_area` (which must be `params.hash_tree_size()` bytes).
    pub fn new(
        hash_area: &'a [u8],
        params: &VerityParams,
        root: &[u8; DIGEST_LEN],
    ) -> Result<Self> {
        if hash_area.len() as u64 != params.hash_tree_size() {
            return Err(Error::invalid(
                "verity hash area",
                format!(
                    "{} bytes, the parameters need {}",
                    hash_area.len(),
                    params.hash_tree_size()
                ),
            ));
        }
        Ok(Level0 {
            area: hash_area,
            root: *root,
            offset: params.level_offsets().first().map(|&o| to_usize(o)),
            hbs: usize_of(params.hash_block_size),
            epb: params.entries_per_block(),
            blocks: params.data_blocks,
        })
    }

    /// The digest data block `block` must have; `None` past the last block.
    pub fn get(&self, block: u64) -> Option<[u8; DIGEST_LEN]> {
        if block >= self.blocks {
            return None;
        }
        let Some(off) = self.offset else {
            return Some(self.root);
        };
        let mut d = [0u8; DIGEST_LEN];
        d.copy_from_slice(entry(self.area, off, self.hbs, self.epb, to_usize(block)));
        Some(d)
    }

    /// Checks the digests of data blocks `first..` against their entries.
    /// Error: [`Error::DataBlockMismatch`] naming the first block that differs.
    pub(super) fn check(&self, first: u64, digests: &[[u8; DIGEST_LEN]]) -> Result<()> {
        for (block, d) in (first..).zip(digests) {
            if self.get(block).as_ref() != Some(d) {
                return Err(Error::DataBlockMismatch { block });
            }
        }
        Ok(())
    }
}

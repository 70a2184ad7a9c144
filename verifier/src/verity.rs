//! dm-verity hash trees, format 1, sha256: build, verify, and the kernel table line.
//!
//! Byte-identical to `veritysetup format --no-superblock` (see docs/FORMATS.md).
//! Every hash is `sha256(salt || block)`; levels are stored top first; the data level is
//! hashed on several threads, each reading and hashing its own pieces of the data.

use std::io::Read;
use std::sync::{Mutex, PoisonError};

use sha2::{Digest, Sha256};

use crate::{Error, Result};

mod level0;
mod pieces;
mod tree;

pub use level0::{digest_blocks, Level0};
pub use pieces::ReadAt;
use pieces::{for_each_chunk, hash_blocks, hash_pieces, Blocks};
use tree::Tree;

/// Size of a sha256 digest.
pub const DIGEST_LEN: usize = 32;
/// Smallest allowed data or hash block size.
pub const MIN_BLOCK_SIZE: u32 = 512;
/// Largest allowed data or hash block size.
pub const MAX_BLOCK_SIZE: u32 = 65536;
/// Largest allowed salt, in bytes.
pub const MAX_SALT_LEN: usize = 256;
/// Bytes of data hashed per batch (split between the threads); a multiple of every block size.
pub const CHUNK_SIZE: usize = 4 << 20;
/// Most hashing threads used by default.
const MAX_DEFAULT_THREADS: usize = 8;

type Digest32 = [u8; DIGEST_LEN];

/// The parameters that shape a hash tree. Validated on construction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerityParams {
    data_block_size: u32,
    hash_block_size: u32,
    data_blocks: u64,
    salt: Vec<u8>,
}

fn check_block_size(what: &'static str, size: u32) -> Result<()> {
    if !size.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&size) {
        return Err(Error::invalid(
            what,
            format!("{size} is not a power of two between {MIN_BLOCK_SIZE} and {MAX_BLOCK_SIZE}"),
        ));
    }
    Ok(())
}

/// Widens a u32 to usize (usize is at least 32 bits on every target stele supports).
fn usize_of(v: u32) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

impl VerityParams {
    /// Checks block sizes (powers of two, 512..=65536), `data_blocks >= 1` and the salt length.
    pub fn new(
        data_block_size: u32,
        hash_block_size: u32,
        data_blocks: u64,
        salt: Vec<u8>,
    ) -> Result<Self> {
        check_block_size("verity data block size", data_block_size)?;
        check_block_size("verity hash block size", hash_block_size)?;
        if data_blocks == 0 {
            return Err(Error::invalid(
                "verity data_blocks",
                "must be at least 1 (an empty filesystem image cannot be protected)",
            ));
        }
        if salt.len() > MAX_SALT_LEN {
            return Err(Error::invalid(
                "verity salt",
                format!("{} bytes, at most {MAX_SALT_LEN} allowed", salt.len()),
            ));
        }
        let params = VerityParams {
            data_block_size,
            hash_block_size,
            data_blocks,
            salt,
        };
        let data_size = data_blocks
            .checked_mul(u64::from(data_block_size))
            .ok_or_else(|| {
                Error::invalid(
                    "verity data_blocks",
                    format!("{data_blocks} blocks of {data_block_size} bytes overflow 64 bits"),
                )
            })?;
        // i64::MAX keeps every offset representable in TOML and in off_t.
        if data_size > i64::MAX as u64 {
            return Err(Error::invalid(
                "verity data_blocks",
                format!("{data_size} bytes of data is larger than 2^63 - 1"),
            ));
        }
        params.checked_tree_size().ok_or_else(|| {
            Error::invalid("verity data_blocks", "the hash tree size overflows 64 bits")
        })?;
        Ok(params)
    }
    pub fn data_block_size(&self) -> u32 {
        self.data_block_size
    }
    pub fn hash_block_size(&self) -> u32 {
        self.hash_block_size
    }
    pub fn data_blocks(&self) -> u64 {
        self.data_blocks
    }
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }
    /// Bytes of data covered: `data_blocks * data_block_size`.
    pub fn data_size(&self) -> u64 {
        // Checked in `new`.
        self.data_blocks
            .saturating_mul(u64::from(self.data_block_size))
    }
    /// Bytes of the hash area (all levels, top first).
    pub fn hash_tree_size(&self) -> u64 {
        // Checked in `new`.
        self.checked_tree_size().unwrap_or(u64::MAX)
    }
    /// The number of hash levels (0 when there is a single data block).
    pub fn levels(&self) -> usize {
        self.level_blocks().len()
    }

    /// log2 of the digests per hash block.
    fn bits(&self) -> u32 {
        (usize_of(self.hash_block_size) / DIGEST_LEN).trailing_zeros()
    }
    fn entries_per_block(&self) -> usize {
        usize_of(self.hash_block_size) / DIGEST_LEN
    }
    /// Hash blocks per level, level 0 (hashes of the data blocks) first.
    fn level_blocks(&self) -> Vec<u64> {
        let bits = self.bits();
        let last = self.data_blocks.saturating_sub(1);
        let mut levels = 0u32;
        while bits * levels < 64 && (last >> (bits * levels)) != 0 {
            levels += 1;
        }
        (0..levels)
            .map(|i| last.checked_shr((i + 1) * bits).unwrap_or(0) + 1)
            .collect()
    }
    fn checked_tree_size(&self) -> Option<u64> {
        self.level_blocks().iter().try_fold(0u64, |acc, &b| {
            acc.checked_add(b.checked_mul(u64::from(self.hash_block_size))?)
        })
    }
    /// Byte offset of each level inside the hash area (level 0 first; the top level is at 0).
    fn level_offsets(&self) -> Vec<u64> {
        let blocks = self.level_blocks();
        let hbs = u64::from(self.hash_block_size);
        let mut offsets = vec![0u64; blocks.len()];
        let mut pos = 0u64;
        for i in (0..blocks.len()).rev() {
            offsets[i] = pos;
            pos = pos.saturating_add(blocks[i].saturating_mul(hbs));
        }
        offsets
    }
    fn salted(&self) -> Sha256 {
        let mut h = Sha256::new();
        h.update(&self.salt);
        h
    }
}

fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, MAX_DEFAULT_THREADS)
}

/// Incremental hash tree builder: feed the data in order, then `finish`.
/// Uses up to `threads` threads for the data level.
#[derive(Debug)]
pub struct TreeBuilder {
    params: VerityParams,
    threads: usize,
    base: Sha256,
    /// Bytes received so far.
    fed: u64,
    /// Partial chunk not hashed yet (always less than CHUNK_SIZE bytes).
    pending: Vec<u8>,
    /// Hashes of the data blocks seen so far.
    level0: Vec<Digest32>,
}

impl TreeBuilder {
    pub fn new(params: VerityParams) -> Self {
        let base = params.salted();
        TreeBuilder {
            params,
            threads: default_threads(),
            base,
            fed: 0,
            pending: Vec::new(),
            level0: Vec::new(),
        }
    }
    /// Sets the number of hashing threads (default: available parallelism, at most 8).
    /// 0 is taken as 1.
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self
    }
    /// Feeds data. The total fed must end up equal to `data_size()`.
    pub fn update(&mut self, mut data: &[u8]) -> Result<()> {
        let fits = match self.fed.checked_add(data.len() as u64) {
            Some(total) => total <= self.params.data_size(),
            None => false,
        };
        if !fits {
            return Err(Error::invalid(
                "verity data",
                format!(
                    "more than the {} bytes declared ({} data blocks of {})",
                    self.params.data_size(),
                    self.params.data_blocks,
                    self.params.data_block_size
                ),
            ));
        }
        self.fed += data.len() as u64;
        if !self.pending.is_empty() {
            let take = data.len().min(CHUNK_SIZE - self.pending.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == CHUNK_SIZE {
                let chunk = std::mem::take(&mut self.pending);
                self.hash_data(&chunk);
                self.pending = chunk;
                self.pending.clear();
            }
        }
        while data.len() >= CHUNK_SIZE {
            self.hash_data(&data[..CHUNK_SIZE]);
            data = &data[CHUNK_SIZE..];
        }
        if !data.is_empty() {
            if self.pending.capacity() == 0 {
                self.pending.reserve_exact(CHUNK_SIZE);
            }
            self.pending.extend_from_slice(data);
        }
        Ok(())
    }

    /// Hashes whole data blocks into level 0.
    fn hash_data(&mut self, data: &[u8]) {
        let bs = usize_of(self.params.data_block_size);
        let n = data.len() / bs;
        let start = self.level0.len();
        self.level0.resize(start + n, [0; DIGEST_LEN]);
        hash_blocks(
            &self.base,
            &data[..n * bs],
            bs,
            &mut self.level0[start..],
            self.threads,
        );
    }

    /// Returns the hash area (top level first, `hash_tree_size()` bytes) and the root hash.
    pub fn finish(mut self) -> Result<(Vec<u8>, [u8; DIGEST_LEN])> {
        let expected = self.params.data_size();
        if self.fed != expected {
            return Err(Error::Truncated {
                what: "verity data",
                offset: 0,
                needed: expected,
                available: self.fed,
            });
        }
        let pending = std::mem::take(&mut self.pending);
        self.hash_data(&pending);
        let level0 = std::mem::take(&mut self.level0);
        let mut tree = Tree::new(&self.params, self.threads)?;
        tree.place_level0(0, &level0);
        drop(level0);
        tree.finish()
    }
}

/// Offsets inside a hash area that already fits in memory.
fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// The digest stored for entry `j` of the level that starts at `offset`.
fn entry(area: &[u8], offset: usize, hbs: usize, epb: usize, j: usize) -> &[u8] {
    let pos = offset + (j / epb) * hbs + (j % epb) * DIGEST_LEN;
    &area[pos..pos + DIGEST_LEN]
}

/// The data blocks of `params` at the start of `data`.
fn data_blocks<'a, D: ReadAt + ?Sized>(
    data: &'a D,
    base: &'a Sha256,
    p: &VerityParams,
) -> Blocks<'a, D> {
    Blocks {
        src: data,
        base,
        block_size: usize_of(p.data_block_size),
        blocks: p.data_blocks,
    }
}

/// Builds the tree of the `params.data_size()` bytes at the start of `data` (a file, a
/// block device, bytes in memory), each hashing thread reading its own pieces;
/// `progress` is told the bytes hashed.
pub fn build_tree<D: ReadAt + ?Sized>(
    data: &D,
    params: &VerityParams,
    progress: &mut dyn FnMut(u64),
) -> Result<(Vec<u8>, [u8; DIGEST_LEN])> {
    let base = params.salted();
    let threads = default_threads();
    let tree = Mutex::new(Tree::new(params, threads)?);
    let place = |first: u64, digests: &[Digest32]| {
        let mut tree = tree.lock().unwrap_or_else(PoisonError::into_inner);
        tree.place_level0(first, digests);
        Ok(())
    };
    let blocks = data_blocks(data, &base, params);
    hash_pieces(&blocks, threads, &place, progress)?;
    tree.into_inner()
        .unwrap_or_else(PoisonError::into_inner)
        .finish()
}

/// Checks a stored hash area against `root`: every hash block against its parent, top first.
/// Errors: [`Error::RootHashMismatch`], [`Error::HashBlockMismatch`].
///
/// With a single data block there is no hash block: the root is the hash of the data block,
/// so only [`verify_data`] (or the kernel) can check it; the hash area must then be empty.
pub fn verify_hash_area(
    hash_area: &[u8],
    params: &VerityParams,
    root: &[u8; DIGEST_LEN],
) -> Result<()> {
    let expected = params.hash_tree_size();
    if hash_area.len() as u64 != expected {
        return Err(Error::invalid(
            "verity hash area",
            format!("{} bytes, the parameters need {expected}", hash_area.len()),
        ));
    }
    let blocks = params.level_blocks();
    if blocks.is_empty() {
        return Ok(());
    }
    let hbs = usize_of(params.hash_block_size);
    let epb = params.entries_per_block();
    let offsets = params.level_offsets();
    let base = params.salted();
    let mut h = base.clone();
    h.update(&hash_area[..hbs]);
    let top: Digest32 = h.finalize().into();
    if &top != root {
        return Err(Error::RootHashMismatch {
            computed: crate::hex::encode(&top),
            expected: crate::hex::encode(root),
        });
    }
    for level in (0..blocks.len() - 1).rev() {
        let lo = to_usize(offsets[level]);
        let n = to_usize(blocks[level]);
        let parent = to_usize(offsets[level + 1]);
        for (j, block) in hash_area[lo..lo + n * hbs].chunks_exact(hbs).enumerate() {
            let mut h = base.clone();
            h.update(block);
            let d: Digest32 = h.finalize().into();
            if d.as_slice() != entry(hash_area, parent, hbs, epb, j) {
                return Err(Error::HashBlockMismatch {
                    level,
                    block: j as u64,
                });
            }
        }
    }
    Ok(())
}

/// Full check: the hash area against `root`, then every data block (read from the stream
/// `data`, positioned at the first data block) against level 0. Error names the first bad
/// block: [`Error::DataBlockMismatch`]. For a file, [`verify_data_at`] is faster.
pub fn verify_data<R: Read>(
    data: R,
    hash_area: &[u8],
    params: &VerityParams,
    root: &[u8; DIGEST_LEN],
) -> Result<()> {
    verify_hash_area(hash_area, params, root)?;
    let level0 = Level0::new(hash_area, params, root)?;
    let base = params.salted();
    let bs = usize_of(params.data_block_size);
    let mut next_block = 0u64;
    for_each_chunk(data, params.data_size(), |chunk| {
        let blocks = Blocks {
            src: chunk,
            base: &base,
            block_size: bs,
            blocks: (chunk.len() / bs) as u64,
        };
        let check = |first: u64, d: &[Digest32]| level0.check(next_block + first, d);
        hash_pieces(&blocks, default_threads(), &check, &mut |_| {})?;
        next_block += blocks.blocks;
        Ok(())
    })
}

/// [`verify_data`] of the data at the start of `data` (a file, a block device, bytes in
/// memory), each hashing thread reading its own pieces; `progress` is told the bytes
/// checked.
pub fn verify_data_at<D: ReadAt + ?Sized>(
    data: &D,
    hash_area: &[u8],
    params: &VerityParams,
    root: &[u8; DIGEST_LEN],
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    verify_hash_area(hash_area, params, root)?;
    let level0 = Level0::new(hash_area, params, root)?;
    let base = params.salted();
    let check = |first: u64, d: &[Digest32]| level0.check(first, d);
    let blocks = data_blocks(data, &base, params);
    hash_pieces(&blocks, default_threads(), &check, progress)
}

/// The dm-verity target parameters (the part after `verity` in a table line):
/// `1 <data_dev> <hash_dev> <dbs> <hbs> <blocks> <hash_start> sha256 <root> <salt|-> 1 restart_on_corruption`.
/// `hash_offset` is in bytes and must be a multiple of the hash block size.
pub fn table_params(
    params: &VerityParams,
    root: &[u8; DIGEST_LEN],
    data_dev: &str,
    hash_dev: &str,
    hash_offset: u64,
) -> Result<String> {
    for (what, dev) in [
        ("verity data device", data_dev),
        ("verity hash device", hash_dev),
    ] {
        if dev.is_empty() || dev.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::invalid(
                what,
                format!("{dev:?} must be non-empty and without spaces or control characters"),
            ));
        }
    }
    let hbs = u64::from(params.hash_block_size);
    if !hash_offset.is_multiple_of(hbs) {
        return Err(Error::invalid(
            "verity hash offset",
            format!("{hash_offset} is not a multiple of the hash block size {hbs}"),
        ));
    }
    let salt = if params.salt.is_empty() {
        "-".to_string()
    } else {
        crate::hex::encode(&params.salt)
    };
    Ok(format!(
        "1 {data_dev} {hash_dev} {} {} {} {} sha256 {} {salt} 1 restart_on_corruption",
        params.data_block_size,
        params.hash_block_size,
        params.data_blocks,
        hash_offset / hbs,
        crate::hex::encode(root),
    ))
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test data sizes are small
mod tests {
    use super::*;

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| {
                (i as u8)
                    .wrapping_mul(31)
                    .wrapping_add(seed ^ (i >> 9) as u8)
            })
            .collect()
    }

    /// A plain recursive reference implementation of the format, for comparison.
    fn reference(data: &[u8], p: &VerityParams) -> (Vec<u8>, Digest32) {
        let h = |b: &[u8]| -> Digest32 {
            let mut s = Sha256::new();
            s.update(p.salt());
            s.update(b);
            s.finalize().into()
        };
        let hbs = p.hash_block_size() as usize;
        let mut cur: Vec<Digest32> = data.chunks(p.data_block_size() as usize).map(h).collect();
        let mut levels: Vec<Vec<u8>> = Vec::new();
        if cur.len() == 1 {
            return (Vec::new(), cur[0]);
        }
        loop {
            let mut level = Vec::new();
            for group in cur.chunks(hbs / 32) {
                let mut block = vec![0u8; hbs];
                for (k, d) in group.iter().enumerate() {
                    block[k * 32..k * 32 + 32].copy_from_slice(d);
                }
                level.extend_from_slice(&block);
            }
            cur = level.chunks(hbs).map(h).collect();
            levels.push(level);
            if cur.len() == 1 {
                break;
            }
        }
        let area = levels.iter().rev().flatten().copied().collect();
        (area, cur[0])
    }

    #[test]
    fn params_are_validated() {
        assert!(VerityParams::new(4096, 4096, 1, vec![]).is_ok());
        for (dbs, hbs) in [
            (256, 4096),
            (4096, 1000),
            (131072, 4096),
            (4096, 0),
            (3000, 4096),
        ] {
            assert!(
                matches!(
                    VerityParams::new(dbs, hbs, 1, vec![]),
                    Err(Error::Invalid { .. })
                ),
                "{dbs} {hbs}"
            );
        }
        assert!(VerityParams::new(4096, 4096, 0, vec![]).is_err());
        assert!(VerityParams::new(4096, 4096, 1, vec![0; 257]).is_err());
        assert!(VerityParams::new(4096, 4096, 1, vec![0; 256]).is_ok());
        assert!(VerityParams::new(65536, 4096, u64::MAX / 1024, vec![]).is_err());
        assert!(VerityParams::new(512, 512, u64::MAX, vec![]).is_err());
    }

    #[test]
    fn geometry_matches_the_format() {
        // 4096-byte hash blocks hold 128 digests.
        let p = |n| VerityParams::new(4096, 4096, n, vec![]).unwrap();
        assert_eq!(p(1).levels(), 0);
        assert_eq!(p(1).hash_tree_size(), 0);
        assert_eq!(p(2).levels(), 1);
        assert_eq!(p(128).levels(), 1);
        assert_eq!(p(128).hash_tree_size(), 4096);
        assert_eq!(p(129).levels(), 2);
        assert_eq!(p(129).hash_tree_size(), 3 * 4096);
        assert_eq!(p(16384).hash_tree_size(), (128 + 1) * 4096);
        assert_eq!(p(16385).hash_tree_size(), (129 + 2 + 1) * 4096);
        assert_eq!(p(129).level_offsets(), vec![4096, 0]);
    }

    #[test]
    fn builder_matches_reference_for_any_chunking() {
        for (dbs, hbs, blocks, salt) in [
            (4096u32, 4096u32, 1u64, vec![]),
            (4096, 4096, 2, vec![7]),
            (512, 512, 300, vec![1; 32]),
            (1024, 512, 40, vec![9; 256]),
            (512, 4096, 1100, vec![3; 5]),
        ] {
            let p = VerityParams::new(dbs, hbs, blocks, salt).unwrap();
            let data = pattern(p.data_size() as usize, blocks as u8);
            let want = reference(&data, &p);
            assert_eq!(build_tree(&data[..], &p, &mut |_| {}).unwrap(), want);
            for step in [1usize, 511, 4097, 100_000] {
                let mut b = TreeBuilder::new(p.clone()).threads(3);
                for c in data.chunks(step) {
                    b.update(c).unwrap();
                }
                assert_eq!(b.finish().unwrap(), want, "step {step}");
            }
        }
    }

    #[test]
    fn multi_chunk_parallel_matches_reference() {
        // 2.5 chunks, odd thread count.
        let p =
            VerityParams::new(4096, 4096, (CHUNK_SIZE as u64 * 5 / 2) / 4096, vec![5; 32]).unwrap();
        let data = pattern(p.data_size() as usize, 1);
        let want = reference(&data, &p);
        let mut b = TreeBuilder::new(p.clone()).threads(3);
        for c in data.chunks(CHUNK_SIZE - 4097) {
            b.update(c).unwrap();
        }
        assert_eq!(b.finish().unwrap(), want);
        verify_data(&data[..], &want.0, &p, &want.1).unwrap();
    }

    #[test]
    fn builder_rejects_wrong_amounts() {
        let p = VerityParams::new(512, 512, 2, vec![]).unwrap();
        let mut b = TreeBuilder::new(p.clone());
        b.update(&[0; 1000]).unwrap();
        assert!(matches!(
            b.finish(),
            Err(Error::Truncated {
                available: 1000,
                ..
            })
        ));
        let mut b = TreeBuilder::new(p.clone());
        assert!(b.update(&[0; 1025]).is_err());
        assert!(matches!(
            build_tree(&[0u8; 100][..], &p, &mut |_| {}),
            Err(Error::Truncated { available: 100, .. })
        ));
    }

    #[test]
    fn verification_finds_tampering() {
        let p = VerityParams::new(512, 512, 300, vec![1, 2, 3]).unwrap();
        let mut data = pattern(p.data_size() as usize, 3);
        let (mut area, root) = build_tree(&data[..], &p, &mut |_| {}).unwrap();
        verify_hash_area(&area, &p, &root).unwrap();
        verify_data(&data[..], &area, &p, &root).unwrap();

        let mut bad_root = root;
        bad_root[0] ^= 1;
        assert!(matches!(
            verify_hash_area(&area, &p, &bad_root),
            Err(Error::RootHashMismatch { .. })
        ));
        assert!(verify_hash_area(&area[..area.len() - 1], &p, &root).is_err());

        data[200 * 512 + 17] ^= 0x40;
        assert!(matches!(
            verify_data(&data[..], &area, &p, &root),
            Err(Error::DataBlockMismatch { block: 200 })
        ));
        data[200 * 512 + 17] ^= 0x40;
        // 300 blocks, 16 per hash block: level 0 has 19 blocks, level 1 has 2, level 2 has 1.
        assert_eq!(p.level_offsets(), vec![3 * 512, 512, 0]);
        area[3 * 512 + 5 * 512 + 1] ^= 1; // level 0, block 5
        assert!(matches!(
            verify_hash_area(&area, &p, &root),
            Err(Error::HashBlockMismatch { level: 0, block: 5 })
        ));
        area[3 * 512 + 5 * 512 + 1] ^= 1;
        area[512 + 512 + 500] ^= 1; // level 1, block 1 (unused padding is covered too)
        assert!(matches!(
            verify_hash_area(&area, &p, &root),
            Err(Error::HashBlockMismatch { level: 1, block: 1 })
        ));
    }

    #[test]
    fn single_block_tree() {
        let p = VerityParams::new(4096, 4096, 1, vec![0xaa; 4]).unwrap();
        let data = pattern(4096, 9);
        let (area, root) = build_tree(&data[..], &p, &mut |_| {}).unwrap();
        assert!(area.is_empty());
        let mut h = Sha256::new();
        h.update([0xaa; 4]);
        h.update(&data);
        assert_eq!(root, <Digest32>::from(h.finalize()));
        verify_data(&data[..], &area, &p, &root).unwrap();
        let mut bad = data.clone();
        bad[4095] ^= 1;
        assert!(matches!(
            verify_data(&bad[..], &area, &p, &root),
            Err(Error::DataBlockMismatch { block: 0 })
        ));
    }

    #[test]
    fn table_line() {
        let p = VerityParams::new(4096, 4096, 302, vec![0xab, 0x01]).unwrap();
        let root = [0x11; 32];
        assert_eq!(
            table_params(&p, &root, "/dev/vda2", "/dev/vda2", 302 * 4096).unwrap(),
            format!(
                "1 /dev/vda2 /dev/vda2 4096 4096 302 302 sha256 {} ab01 1 restart_on_corruption",
                "11".repeat(32)
            )
        );
        let p = VerityParams::new(4096, 4096, 2, vec![]).unwrap();
        assert!(table_params(&p, &root, "a", "b", 0)
            .unwrap()
            .contains(" - 1 restart"));
        assert!(table_params(&p, &root, "a", "b", 100).is_err());
        assert!(table_params(&p, &root, "a b", "b", 0).is_err());
        assert!(table_params(&p, &root, "", "b", 0).is_err());
    }
}

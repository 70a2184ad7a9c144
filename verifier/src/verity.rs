//! dm-verity hash trees, format 1, sha256: build, verify, and the kernel table line.
//!
//! Byte-identical to `veritysetup format --no-superblock` (see docs/FORMATS.md).

use std::io::{Read, Seek};

use crate::{Error, Result};

/// Size of a sha256 digest.
pub const DIGEST_LEN: usize = 32;
/// Smallest allowed data or hash block size.
pub const MIN_BLOCK_SIZE: u32 = 512;
/// Largest allowed data or hash block size.
pub const MAX_BLOCK_SIZE: u32 = 65536;
/// Largest allowed salt, in bytes.
pub const MAX_SALT_LEN: usize = 256;

/// The parameters that shape a hash tree. Validated on construction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerityParams {
    data_block_size: u32,
    hash_block_size: u32,
    data_blocks: u64,
    salt: Vec<u8>,
}

impl VerityParams {
    /// Checks block sizes (powers of two, 512..=65536), `data_blocks >= 1` and the salt length.
    pub fn new(
        data_block_size: u32,
        hash_block_size: u32,
        data_blocks: u64,
        salt: Vec<u8>,
    ) -> Result<Self> {
        let _ = (
            data_block_size,
            hash_block_size,
            data_blocks,
            &salt,
            Error::NoValidState,
        );
        todo!()
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
        todo!()
    }
    /// Bytes of the hash area (all levels, top first).
    pub fn hash_tree_size(&self) -> u64 {
        todo!()
    }
}

/// Incremental hash tree builder: feed the data in order, then `finish`.
/// Uses up to `threads` threads for the data level.
#[derive(Debug)]
pub struct TreeBuilder {
    _p: (),
}

impl TreeBuilder {
    pub fn new(params: VerityParams) -> Self {
        let _ = params;
        todo!()
    }
    /// Sets the number of hashing threads (default: available parallelism, at most 8).
    pub fn threads(self, n: usize) -> Self {
        let _ = n;
        todo!()
    }
    /// Feeds data. The total fed must end up equal to `data_size()`.
    pub fn update(&mut self, data: &[u8]) -> Result<()> {
        let _ = data;
        todo!()
    }
    /// Returns the hash area (top level first, `hash_tree_size()` bytes) and the root hash.
    pub fn finish(self) -> Result<(Vec<u8>, [u8; DIGEST_LEN])> {
        todo!()
    }
}

/// Builds the tree of `params.data_size()` bytes read from `data`.
pub fn build_tree<R: Read>(data: R, params: &VerityParams) -> Result<(Vec<u8>, [u8; DIGEST_LEN])> {
    let _ = (data, params);
    todo!()
}

/// Checks a stored hash area against `root`: every hash block against its parent, top first.
/// Errors: [`Error::RootHashMismatch`], [`Error::HashBlockMismatch`].
pub fn verify_hash_area(
    hash_area: &[u8],
    params: &VerityParams,
    root: &[u8; DIGEST_LEN],
) -> Result<()> {
    let _ = (hash_area, params, root);
    todo!()
}

/// Full check: the hash area against `root`, then every data block (read from `data`,
/// positioned at the first data block) against level 0. Error names the first bad block:
/// [`Error::DataBlockMismatch`].
pub fn verify_data<R: Read>(
    data: R,
    hash_area: &[u8],
    params: &VerityParams,
    root: &[u8; DIGEST_LEN],
) -> Result<()> {
    let _ = (data, hash_area, params, root);
    todo!()
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
    let _ = (params, root, data_dev, hash_dev, hash_offset);
    todo!()
}

#[allow(dead_code)]
fn _seek_bound<R: Read + Seek>(_: R) {}

//! The delta plan: for every data block of the new image, where its bytes come from,
//! decided by the verified hash tree (the block-hash index). Pure: reads the target and
//! base slots, writes nothing.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};

use super::{io_err, DeltaError, Meta, Trust};
use stele_verifier::slot::{self, VerifyOptions};
use stele_verifier::verity::{digest_blocks, Level0, DIGEST_LEN};

/// Bytes of a slot read and hashed at once.
const SCAN_CHUNK: usize = 4 << 20;

/// Where one data block comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Already at its place in the target slot: not written again.
    Keep,
    /// The same bytes are data block `n` of the base (running) slot.
    Copy(u64),
    /// All zero.
    Zero,
    /// From the source.
    Fetch,
}

/// How the base slot was used as an index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BaseUse {
    /// No base slot.
    None,
    /// Its own verified level 0 (same salt and block size).
    OwnTree,
    /// Its data, hashed once with the new salt.
    Hashed,
    /// Not usable, and why (not a verified image, another block size).
    Unusable(String),
}

/// Counts of blocks by action.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub keep: u64,
    pub copy: u64,
    pub zero: u64,
    pub fetch: u64,
}

/// What an install would do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// One per data block.
    pub actions: Vec<Action>,
    pub block_size: u64,
    pub counts: Counts,
    /// The fetched blocks merged into ranges: (first block, blocks).
    pub ranges: Vec<(u64, u64)>,
    pub base: BaseUse,
}

impl Plan {
    /// Bytes of data to fetch.
    pub fn fetch_bytes(&self) -> u64 {
        self.counts.fetch * self.block_size
    }
    /// Bytes of data not fetched (kept, copied or zero).
    pub fn reused_bytes(&self) -> u64 {
        (self.counts.keep + self.counts.copy + self.counts.zero) * self.block_size
    }
}

/// The digest of an all-zero data block with the image's salt.
pub fn zero_digest(meta: &Meta) -> [u8; DIGEST_LEN] {
    let bs = usize::try_from(meta.params.data_block_size()).unwrap_or(4096);
    digest_blocks(&meta.params, &vec![0u8; bs])[0]
}

/// Reads `[0, blocks * bs)` of `dev` in chunks and hands each chunk's block digests (with
/// the new image's salt) to `f` with the index of the chunk's first block. Stops early at
/// the device's end.
fn scan<R: Read + Seek>(
    dev: &mut R,
    meta: &Meta,
    blocks: u64,
    what: &'static str,
    mut f: impl FnMut(u64, &[[u8; DIGEST_LEN]]),
) -> Result<(), DeltaError> {
    let bs = u64::from(meta.params.data_block_size());
    dev.seek(SeekFrom::Start(0)).map_err(io_err(what))?;
    let per = (SCAN_CHUNK as u64 / bs).max(1);
    let mut buf = vec![0u8; usize::try_from(per.min(blocks.max(1)) * bs).unwrap_or(SCAN_CHUNK)];
    let mut first = 0u64;
    while first < blocks {
        let n = (blocks - first).min(per);
        let want = usize::try_from(n * bs).unwrap_or(buf.len());
        let mut got = 0;
        while got < want {
            match dev.read(&mut buf[got..want]) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(DeltaError::Io { what, source: e }),
            }
        }
        let whole = got - got % usize::try_from(bs).unwrap_or(1);
        f(first, &digest_blocks(&meta.params, &buf[..whole]));
        if got < want {
            break;
        }
        first += n;
    }
    Ok(())
}

/// The base slot's index: digest (with the new salt) -> a block of the base holding it,
/// for the digests in `wanted` only.
fn base_index<B: Read + Seek>(
    meta: &Meta,
    base: &mut B,
    base_len: u64,
    trust: Trust<'_>,
    wanted: &HashMap<[u8; DIGEST_LEN], ()>,
) -> Result<(HashMap<[u8; DIGEST_LEN], u64>, BaseUse), DeltaError> {
    let mut index = HashMap::new();
    let opts = VerifyOptions::default();
    let checked = match trust {
        Trust::Keyring(k) => slot::verify(base, base_len, k, opts).map(|(l, v)| (l, v.manifest)),
        Trust::Unsigned => slot::check_unsigned(base, base_len),
    };
    let (_, bm) = match checked {
        Ok(c) => c,
        Err(stele_verifier::Error::Io { source, .. }) => {
            return Err(DeltaError::Io {
                what: "base slot",
                source,
            })
        }
        Err(e) => return Ok((index, BaseUse::Unusable(e.to_string()))),
    };
    if bm.verity.data_block_size != meta.manifest.verity.data_block_size {
        return Ok((
            index,
            BaseUse::Unusable(format!(
                "its data block size {} differs from the new image's {}",
                bm.verity.data_block_size, meta.manifest.verity.data_block_size
            )),
        ));
    }
    let bp = bm.verity_params().map_err(DeltaError::Verify)?;
    if bp.salt() == meta.params.salt() {
        // The running slot's own tree is the index (checked against its root by verify).
        let area = slot_region(base, bm.verity.hash_offset, bp.hash_tree_size())?;
        let l0 = Level0::new(&area, &bp, &bm.verity.root_hash).map_err(DeltaError::Verify)?;
        for j in 0..bp.data_blocks() {
            if let Some(d) = l0.get(j) {
                if wanted.contains_key(&d) {
                    index.entry(d).or_insert(j);
                }
            }
        }
        return Ok((index, BaseUse::OwnTree));
    }
    scan(
        base,
        meta,
        bp.data_blocks(),
        "base slot",
        |first, digests| {
            for (k, d) in digests.iter().enumerate() {
                if wanted.contains_key(d) {
                    index.entry(*d).or_insert(first + k as u64);
                }
            }
        },
    )?;
    Ok((index, BaseUse::Hashed))
}

fn slot_region<R: Read + Seek>(r: &mut R, off: u64, len: u64) -> Result<Vec<u8>, DeltaError> {
    r.seek(SeekFrom::Start(off)).map_err(io_err("base slot"))?;
    let mut v = vec![0u8; usize::try_from(len).unwrap_or(0)];
    r.read_exact(&mut v).map_err(io_err("base slot"))?;
    Ok(v)
}

/// Plans the install of `meta`'s image: blocks already in `target` (its first
/// `target_len` bytes), then in `base` (the running slot, `base_len` bytes, trusted as
/// `trust` says: it is only an index, every copied block is checked again when written),
/// then zero blocks; the rest is fetched, in ranges of at most `max_range` bytes.
pub fn plan<T: Read + Seek, B: Read + Seek>(
    meta: &Meta,
    target: Option<(&mut T, u64)>,
    base: Option<(&mut B, u64)>,
    trust: Trust<'_>,
    max_range: u64,
) -> Result<Plan, DeltaError> {
    let n = meta.params.data_blocks();
    let bs = u64::from(meta.params.data_block_size());
    let l0 = meta.level0()?;
    let expected = |i: u64| l0.get(i).unwrap_or([0; DIGEST_LEN]);
    let mut actions = vec![Action::Fetch; usize::try_from(n).unwrap_or(0)];
    if let Some((t, t_len)) = target {
        let blocks = n.min(t_len / bs);
        scan(t, meta, blocks, "target slot", |first, digests| {
            for (k, d) in digests.iter().enumerate() {
                let i = first + k as u64;
                if *d == expected(i) {
                    actions[usize::try_from(i).unwrap_or(0)] = Action::Keep;
                }
            }
        })?;
    }
    let zero = zero_digest(meta);
    let mut base_use = BaseUse::None;
    if let Some((b, b_len)) = base {
        let wanted: HashMap<[u8; DIGEST_LEN], ()> = actions
            .iter()
            .enumerate()
            .filter(|(_, a)| **a == Action::Fetch)
            .map(|(i, _)| (expected(i as u64), ()))
            .collect();
        let (index, used) = base_index(meta, b, b_len, trust, &wanted)?;
        base_use = used;
        for (i, a) in actions.iter_mut().enumerate() {
            if *a == Action::Fetch {
                if let Some(&j) = index.get(&expected(i as u64)) {
                    *a = Action::Copy(j);
                }
            }
        }
    }
    let mut counts = Counts::default();
    for (i, a) in actions.iter_mut().enumerate() {
        if *a == Action::Fetch && expected(i as u64) == zero {
            *a = Action::Zero;
        }
        match a {
            Action::Keep => counts.keep += 1,
            Action::Copy(_) => counts.copy += 1,
            Action::Zero => counts.zero += 1,
            Action::Fetch => counts.fetch += 1,
        }
    }
    let ranges = merge(&actions, (max_range / bs).max(1));
    Ok(Plan {
        actions,
        block_size: bs,
        counts,
        ranges,
        base: base_use,
    })
}

/// Runs of [`Action::Fetch`] as ranges of at most `max_blocks` blocks. Pure.
pub fn merge(actions: &[Action], max_blocks: u64) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for (i, a) in actions.iter().enumerate() {
        if *a != Action::Fetch {
            continue;
        }
        let i = i as u64;
        match ranges.last_mut() {
            Some((s, len)) if *s + *len == i && *len < max_blocks => *len += 1,
            _ => ranges.push((i, 1)),
        }
    }
    ranges
}

//! Hashing the blocks of a hash tree's data on several threads: every thread reads its own
//! piece of the data (a `pread` of a file, a borrow of bytes in memory) and hashes it while
//! the piece is still in its core's cache, so that the copy out of the page cache is spread
//! over the threads instead of one thread reading while the others wait.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use sha2::{Digest, Sha256};

use super::{Digest32, CHUNK_SIZE};
use crate::{Error, Result};

/// Bytes one thread reads and hashes at a time: small enough to stay in a core's L2 cache
/// from the copy to the hashing, a multiple of every block size (at most 64 KiB).
const PIECE: usize = 256 << 10;

/// Data read at any offset by several threads at once: a file or a block device (read with
/// `pread`, so no thread moves another's position), or bytes in memory.
pub trait ReadAt: Sync {
    /// The `len` bytes at `offset`, fewer where the data ends: borrowed from `self` when
    /// it is in memory, read into `buf` otherwise.
    fn bytes_at<'a>(
        &'a self,
        offset: u64,
        len: usize,
        buf: &'a mut Vec<u8>,
    ) -> io::Result<&'a [u8]>;
}

impl ReadAt for [u8] {
    fn bytes_at<'a>(&'a self, offset: u64, len: usize, _: &'a mut Vec<u8>) -> io::Result<&'a [u8]> {
        let start = usize::try_from(offset).map_or(self.len(), |o| o.min(self.len()));
        let end = start + len.min(self.len() - start);
        Ok(&self[start..end])
    }
}

impl ReadAt for File {
    fn bytes_at<'a>(
        &'a self,
        offset: u64,
        len: usize,
        buf: &'a mut Vec<u8>,
    ) -> io::Result<&'a [u8]> {
        buf.resize(len, 0);
        let mut n = 0;
        while n < len {
            match self.read_at(&mut buf[n..], offset + n as u64) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(&buf[..n])
    }
}

/// What [`hash_pieces`] hashes: the first `blocks` blocks of `block_size` bytes of `src`,
/// each digest `sha256(salt || block)` with the salt already in `base`.
pub(super) struct Blocks<'a, S: ReadAt + ?Sized> {
    pub src: &'a S,
    pub base: &'a Sha256,
    pub block_size: usize,
    pub blocks: u64,
}

/// Hashes `b` on up to `threads` threads (this one among them), [`PIECE`] bytes at a time,
/// and hands each piece's digests to `sink(index of its first block, digests)`, on any
/// thread and in any order. `progress` is told the bytes done, on this thread only.
///
/// On a failure (a read error, the data ending early, an error of `sink`) no new piece is
/// started and the failure of the lowest piece is returned. Pieces are handed out in
/// order and every piece handed out is finished, so that is the first failure in the data:
/// a verification names the first bad block, as a serial one would.
pub(super) fn hash_pieces<S: ReadAt + ?Sized>(
    b: &Blocks<'_, S>,
    threads: usize,
    sink: &(dyn Fn(u64, &[Digest32]) -> Result<()> + Sync),
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let per_piece = (PIECE / b.block_size).max(1);
    let pieces = b.blocks.div_ceil(per_piece as u64);
    let threads = u64::try_from(threads).map_or(1, |t| t.clamp(1, pieces.max(1)));
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let failure: Mutex<Option<(u64, Error)>> = Mutex::new(None);
    let bs = b.block_size as u64;
    let one = |piece: u64, buf: &mut Vec<u8>, digests: &mut Vec<Digest32>| -> Result<u64> {
        let first = piece * per_piece as u64;
        let n = usize::try_from(b.blocks - first).map_or(per_piece, |left| left.min(per_piece));
        let want = n * b.block_size;
        let bytes = b
            .src
            .bytes_at(first * bs, want, buf)
            .map_err(|e| Error::io("verity data", e))?;
        if bytes.len() < want {
            return Err(Error::Truncated {
                what: "verity data",
                offset: 0,
                needed: b.blocks * bs,
                available: first * bs + bytes.len() as u64,
            });
        }
        digests.clear();
        digests.extend(bytes.chunks_exact(b.block_size).map(|block| {
            let mut h = b.base.clone();
            h.update(block);
            Digest32::from(h.finalize())
        }));
        sink(first, digests)?;
        Ok(want as u64)
    };
    let work = |report: &mut dyn FnMut(&AtomicU64)| {
        let mut buf = Vec::new();
        let mut digests = Vec::with_capacity(per_piece);
        while !stop.load(Ordering::Relaxed) {
            let piece = next.fetch_add(1, Ordering::Relaxed);
            if piece >= pieces {
                break;
            }
            match one(piece, &mut buf, &mut digests) {
                Ok(n) => {
                    done.fetch_add(n, Ordering::Relaxed);
                }
                Err(e) => {
                    let mut f = failure.lock().unwrap_or_else(PoisonError::into_inner);
                    if f.as_ref().is_none_or(|(p, _)| piece < *p) {
                        *f = Some((piece, e));
                    }
                    stop.store(true, Ordering::Relaxed);
                }
            }
            report(&done);
        }
    };
    let mut reported = 0u64;
    let mut report = |done: &AtomicU64| {
        let now = done.load(Ordering::Relaxed);
        if now > reported {
            progress(now - reported);
            reported = now;
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..threads {
            scope.spawn(|| work(&mut |_| {}));
        }
        work(&mut report);
    });
    report(&done);
    match failure.into_inner().unwrap_or_else(PoisonError::into_inner) {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

/// Hashes each `block_size` block of `data` (salted by `base`) into `out` on up to
/// `threads` threads. `data.len()` must be `out.len() * block_size`.
pub(super) fn hash_blocks(
    base: &Sha256,
    data: &[u8],
    block_size: usize,
    out: &mut [Digest32],
    threads: usize,
) {
    let blocks = Blocks {
        src: data,
        base,
        block_size,
        blocks: out.len() as u64,
    };
    let out = Mutex::new(out);
    let place = |first: u64, digests: &[Digest32]| {
        let mut out = out.lock().unwrap_or_else(PoisonError::into_inner);
        // `first` is below out.len(), a usize.
        let first = usize::try_from(first).unwrap_or(usize::MAX);
        if let Some(slots) = out.get_mut(first..first.saturating_add(digests.len())) {
            slots.copy_from_slice(digests);
        }
        Ok(())
    };
    // In memory the data cannot end early and `place` cannot fail.
    let _ = hash_pieces(&blocks, threads, &place, &mut |_| {});
}

/// Reads `total` bytes of a stream in chunks of [`CHUNK_SIZE`] and hands each chunk to `f`
/// (which hashes it with [`hash_pieces`] over the bytes in memory). For data that can be
/// read at an offset, [`hash_pieces`] over the [`ReadAt`] is faster: no thread waits for
/// the reading.
pub(super) fn for_each_chunk<R: Read>(
    mut data: R,
    total: u64,
    mut f: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    // No more than the data: a small image does not zero a whole chunk.
    let mut buf = vec![0u8; usize::try_from(total).map_or(CHUNK_SIZE, |t| t.min(CHUNK_SIZE))];
    let mut done = 0u64;
    while done < total {
        let want = usize::try_from(total - done).map_or(CHUNK_SIZE, |r| r.min(CHUNK_SIZE));
        let n = read_full(&mut data, &mut buf[..want]).map_err(|e| Error::io("verity data", e))?;
        if n < want {
            return Err(Error::Truncated {
                what: "verity data",
                offset: 0,
                needed: total,
                available: done + n as u64,
            });
        }
        f(&buf[..n])?;
        done += n as u64;
    }
    Ok(())
}

/// Reads until `buf` is full or EOF; returns the bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test data sizes are small
mod tests {
    use std::io::Write;

    use super::super::{build_tree, verify_data_at, VerityParams};
    use super::*;

    /// Deterministic bytes that differ from block to block.
    fn pattern(len: usize) -> Vec<u8> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn file_with(data: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(data).unwrap();
        f
    }

    #[test]
    fn a_file_read_in_pieces_gives_the_tree_of_the_bytes() {
        // 11.5 pieces of 4 KiB blocks and a partial last piece, and 512-byte blocks.
        for (bs, blocks) in [(4096u32, 64 * 11 + 32 + 3), (512, 3000)] {
            let p = VerityParams::new(bs, 4096, blocks, vec![7; 32]).unwrap();
            let data = pattern(p.data_size() as usize + 100);
            let file = file_with(&data);
            let mut told = 0;
            let from_file = build_tree(file.as_file(), &p, &mut |n| told += n).unwrap();
            assert_eq!(told, p.data_size(), "progress adds up to the data");
            let mut b = super::super::TreeBuilder::new(p.clone());
            b.update(&data[..p.data_size() as usize]).unwrap();
            assert_eq!(from_file, b.finish().unwrap());
            let mut told = 0;
            verify_data_at(file.as_file(), &from_file.0, &p, &from_file.1, &mut |n| {
                told += n
            })
            .unwrap();
            assert_eq!(told, p.data_size());
        }
    }

    #[test]
    fn a_short_file_is_truncated_data() {
        let p = VerityParams::new(4096, 4096, 200, vec![]).unwrap();
        let file = file_with(&pattern(150 * 4096 + 10));
        assert!(matches!(
            build_tree(file.as_file(), &p, &mut |_| {}),
            Err(Error::Truncated {
                needed: 819_200,
                available: 614_410,
                ..
            })
        ));
    }

    #[test]
    fn verification_names_the_first_bad_block_whatever_the_threads_do() {
        let p = VerityParams::new(4096, 4096, 64 * 40, vec![1]).unwrap();
        let mut data = pattern(p.data_size() as usize);
        let (area, root) = build_tree(&data[..], &p, &mut |_| {}).unwrap();
        // Bad blocks in pieces 3, 17 and 38: the first is the one to name.
        for block in [64 * 38 + 5, 64 * 3 + 63, 64 * 17] {
            data[block * 4096 + 100] ^= 1;
        }
        let file = file_with(&data);
        assert!(matches!(
            verify_data_at(file.as_file(), &area, &p, &root, &mut |_| {}),
            Err(Error::DataBlockMismatch { block: 255 })
        ));
        // Directly, with more threads than cores and a sink that fails late pieces fast
        // and the early one slowly: still the lowest piece's failure.
        let base = p.salted();
        let blocks = Blocks {
            src: &data[..],
            base: &base,
            block_size: 4096,
            blocks: p.data_blocks(),
        };
        for _ in 0..20 {
            let sink = |first: u64, _: &[Digest32]| match first / 64 {
                3 => {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    Err(Error::DataBlockMismatch { block: first })
                }
                p if p > 3 => Err(Error::DataBlockMismatch { block: first }),
                _ => Ok(()),
            };
            assert!(matches!(
                hash_pieces(&blocks, 6, &sink, &mut |_| {}),
                Err(Error::DataBlockMismatch { block: 192 })
            ));
        }
    }
}

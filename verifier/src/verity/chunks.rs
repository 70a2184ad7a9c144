//! Reading the data of a hash tree in chunks, the next chunk read while the current one
//! is hashed.

use std::io::{self, Read};

use super::CHUNK_SIZE;
use crate::{Error, Result};

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

/// Reads `total` bytes of data in chunks and hands each chunk to `f`.
///
/// Reading overlaps with hashing: while `f` works on one chunk on a thread of its own, the
/// next chunk is read into a second buffer (from the page cache, the read is a copy that
/// would otherwise leave the hashing threads idle).
pub(super) fn for_each_chunk<R: Read>(
    mut data: R,
    total: u64,
    mut f: impl FnMut(&[u8]) -> Result<()> + Send,
) -> Result<()> {
    // No more than the data: a small image does not zero a whole chunk.
    let cap = usize::try_from(total).map_or(CHUNK_SIZE, |t| t.min(CHUNK_SIZE));
    let read = |data: &mut R, buf: &mut Vec<u8>, done: u64| -> Result<usize> {
        let want = usize::try_from(total - done).map_or(CHUNK_SIZE, |r| r.min(CHUNK_SIZE));
        buf.resize(want, 0);
        let n = read_full(data, buf).map_err(|e| Error::io("verity data", e))?;
        if n < want {
            return Err(Error::Truncated {
                what: "verity data",
                offset: 0,
                needed: total,
                available: done + n as u64,
            });
        }
        Ok(n)
    };
    if total == 0 {
        return Ok(());
    }
    let mut cur = Vec::with_capacity(cap);
    let mut next = Vec::with_capacity(cap);
    let mut done = read(&mut data, &mut cur, 0)? as u64;
    while done < total {
        let (hashed, read_next) = std::thread::scope(|s| {
            let hashing = s.spawn(|| f(&cur));
            let r = read(&mut data, &mut next, done);
            (hashing.join(), r)
        });
        hashed.unwrap_or_else(|p| std::panic::resume_unwind(p))?;
        done += read_next? as u64;
        std::mem::swap(&mut cur, &mut next);
    }
    f(&cur)
}

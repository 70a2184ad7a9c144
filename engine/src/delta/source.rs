//! Where an update image is read from: anything that serves byte ranges of one file
//! ([`RangeSource`]). HTTP (the fetch client, the host CLI) is one implementation, a local
//! file ([`ReaderSource`]) another; tests add faulty ones. A server that ignores `Range`
//! is read as one stream through [`Streamed`], with the same per-block checks.

use std::io::{self, Read, Seek, SeekFrom};
use std::time::Duration;

/// A sink refused more data (its own error is kept by whoever made the sink).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Abort;

/// Receives the bytes of a range as they arrive.
pub type Sink<'a> = &'a mut dyn FnMut(&[u8]) -> Result<(), Abort>;

/// Why a read from a source failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// Worth retrying: a cut connection, a stall, a 5xx answer, a short body.
    #[error("{why}")]
    Transient {
        why: String,
        /// What the server asked for (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help: no such file, access refused, a malformed URL.
    #[error("{why}")]
    Permanent { why: String },
    /// The server answered a range request with the whole file (`200`, not `206`).
    #[error("the server ignores Range requests")]
    RangesIgnored,
    /// The file's length changed while it was being read: another image is served now.
    #[error("the image's length changed from {was} to {now} bytes while it was being read: the server now serves another file; run the update again")]
    Changed { was: u64, now: u64 },
    /// The sink stopped the read.
    #[error("the read was stopped")]
    Aborted,
}

impl FetchError {
    /// A transient error without a server-given delay.
    pub fn transient(why: impl Into<String>) -> Self {
        FetchError::Transient {
            why: why.into(),
            retry_after: None,
        }
    }
}

/// Byte ranges of one file.
#[allow(clippy::len_without_is_empty)] // an image file is never empty; `len` asks the server
pub trait RangeSource {
    /// Where the file is, for messages (a URL or a path).
    fn name(&self) -> String;
    /// The file's length in bytes.
    fn len(&mut self) -> Result<u64, FetchError>;
    /// Reads `len` bytes at `off`, handing them to `sink` in pieces as they arrive. A
    /// failure after some pieces leaves those with the sink.
    fn read_range(&mut self, off: u64, len: u64, sink: Sink<'_>) -> Result<(), FetchError>;
    /// Starts reading the whole file from byte 0 (for a server that ignores Range).
    fn start_stream(&mut self) -> Result<(), FetchError>;
    /// The next bytes of the stream [`RangeSource::start_stream`] started; 0 at its end.
    fn read_stream(&mut self, buf: &mut [u8]) -> Result<usize, FetchError>;
    /// Frame `frame` of this file (a compressed form, `IMAGE.img.zst`), decoded, to
    /// `sink`. Only a source that decodes implements it ([`read_frame_by_range`]: the
    /// fetch client, the host CLI's HTTP); the others say they cannot, and the device
    /// (which links no decoder) asks the fetch client.
    fn read_frame(&mut self, frame: &super::zst::Frame, sink: Sink<'_>) -> Result<(), FetchError> {
        let _ = (frame, sink);
        Err(FetchError::Permanent {
            why: "this source does not decode zstd frames".into(),
        })
    }
    /// Frame `frame` of this file (the chained form, `IMAGE.img.lzc`), decoded to `sink`
    /// by the source's decoder after `prime` (the image's bytes before the frame that the
    /// decoder lacks: [`super::lzc::prime_for`]). Only a source that decodes implements it
    /// ([`super::lzc::Chain::read`]); the device asks the fetch client, sending the
    /// priming read from the target slot. A source that does not decode reads none of
    /// `prime`.
    fn read_chain(
        &mut self,
        frame: &super::zst::Frame,
        prime: super::lzc::Prime<'_>,
        sink: Sink<'_>,
    ) -> Result<(), FetchError> {
        let _ = (frame, prime, sink);
        Err(FetchError::Permanent {
            why: "this source does not decode chained frames".into(),
        })
    }
    /// Frame `frame` of this file (a published delta, `NEW.img.from-<hex>.delta`), decoded
    /// against `reference` (the old image's blocks it names), `block_size` bytes a block,
    /// to `sink`. Only a source that decodes implements it ([`read_patch_by_range`]); the
    /// device asks the fetch client, handing it the reference.
    fn read_patch(
        &mut self,
        frame: &super::published::PatchFrame,
        block_size: u64,
        reference: &[u8],
        sink: Sink<'_>,
    ) -> Result<(), FetchError> {
        let _ = (frame, block_size, reference, sink);
        Err(FetchError::Permanent {
            why: "this source does not decode delta frames".into(),
        })
    }
}

/// `len` bytes at `off` of `src` by one range read, in memory (a frame's compressed
/// bytes: the caller bounds `len`); a short answer is a transient error.
pub fn read_whole(src: &mut dyn RangeSource, off: u64, len: u64) -> Result<Vec<u8>, FetchError> {
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    src.read_range(off, len, &mut |c: &[u8]| {
        bytes.extend_from_slice(c);
        Ok(())
    })?;
    if bytes.len() as u64 != len {
        return Err(FetchError::transient("the answer was short"));
    }
    Ok(bytes)
}

/// [`RangeSource::read_patch`] for a source that decodes: the frame's compressed bytes by
/// one range read, then [`super::published::decode_patch`] (bounded: a bomb is refused).
pub fn read_patch_by_range(
    src: &mut dyn RangeSource,
    frame: &super::published::PatchFrame,
    block_size: u64,
    reference: &[u8],
    sink: Sink<'_>,
) -> Result<(), FetchError> {
    let mut decoder = super::published::PatchDecoder::default();
    read_patch_with(src, &mut decoder, frame, block_size, reference, sink)
}

/// [`read_patch_by_range`] with `decoder`, a source's decoder kept from one frame to the
/// next (its buffers reused).
pub fn read_patch_with(
    src: &mut dyn RangeSource,
    decoder: &mut super::published::PatchDecoder,
    frame: &super::published::PatchFrame,
    block_size: u64,
    reference: &[u8],
    sink: Sink<'_>,
) -> Result<(), FetchError> {
    use super::published::MAX_FRAME_COMPRESSED;
    if frame.len > MAX_FRAME_COMPRESSED {
        return Err(FetchError::Permanent {
            why: format!(
                "delta frame {} is {} bytes long: refused",
                frame.index, frame.len
            ),
        });
    }
    let bytes = read_whole(src, frame.offset, frame.len)?;
    let raw = decoder
        .decode(frame, &bytes, reference, block_size)
        .map_err(|e| FetchError::Permanent { why: e.to_string() })?;
    sink(raw).map_err(|_| FetchError::Aborted)
}

/// [`RangeSource::read_frame`] for a source that decodes: the frame's compressed bytes by
/// one range read, then [`super::zst::decode_frame`] (bounded: a bomb is refused).
pub fn read_frame_by_range(
    src: &mut dyn RangeSource,
    frame: &super::zst::Frame,
    sink: Sink<'_>,
) -> Result<(), FetchError> {
    if frame.len > super::zst::MAX_FRAME_COMPRESSED {
        return Err(FetchError::Permanent {
            why: format!("frame {} is {} bytes long: refused", frame.index, frame.len),
        });
    }
    let bytes = read_whole(src, frame.offset, frame.len)?;
    let raw = super::zst::decode_frame(frame.index, &bytes, frame.raw_len)
        .map_err(|e| FetchError::Permanent { why: e.to_string() })?;
    sink(&raw).map_err(|_| FetchError::Aborted)
}

/// A local file (or anything `Read + Seek`) as a range source.
#[derive(Debug)]
pub struct ReaderSource<R> {
    reader: R,
    name: String,
    len: Option<u64>,
}

impl<R: Read + Seek> ReaderSource<R> {
    pub fn new(reader: R, name: impl Into<String>) -> Self {
        ReaderSource {
            reader,
            name: name.into(),
            len: None,
        }
    }
}

fn local(e: &io::Error) -> FetchError {
    FetchError::Permanent {
        why: format!("read failed: {e}"),
    }
}

impl<R: Read + Seek> RangeSource for ReaderSource<R> {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn len(&mut self) -> Result<u64, FetchError> {
        if let Some(l) = self.len {
            return Ok(l);
        }
        let l = self.reader.seek(SeekFrom::End(0)).map_err(|e| local(&e))?;
        self.len = Some(l);
        Ok(l)
    }
    fn read_range(&mut self, off: u64, len: u64, sink: Sink<'_>) -> Result<(), FetchError> {
        self.reader
            .seek(SeekFrom::Start(off))
            .map_err(|e| local(&e))?;
        let mut buf = vec![0u8; usize::try_from(len.min(1 << 20)).unwrap_or(1 << 20)];
        let mut left = len;
        while left > 0 {
            let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            let n = self.reader.read(&mut buf[..want]).map_err(|e| local(&e))?;
            if n == 0 {
                return Err(FetchError::Permanent {
                    why: format!("the file ends before byte {}", off + len),
                });
            }
            sink(&buf[..n]).map_err(|_| FetchError::Aborted)?;
            left -= n as u64;
        }
        Ok(())
    }
    fn start_stream(&mut self) -> Result<(), FetchError> {
        self.reader
            .seek(SeekFrom::Start(0))
            .map(|_| ())
            .map_err(|e| local(&e))
    }
    fn read_stream(&mut self, buf: &mut [u8]) -> Result<usize, FetchError> {
        self.reader.read(buf).map_err(|e| local(&e))
    }
}

/// Serves range reads from a source that can only stream the whole file: reads forward
/// (discarding what is not asked for), starts over when a range lies behind, and keeps
/// the file's tail (footer, manifest and, for images up to a few GiB, the hash tree) from
/// the first pass, so that a whole install costs two or three passes over the file.
#[derive(Debug)]
pub struct Streamed {
    /// Position of the open stream; `None` when none is open.
    pos: Option<u64>,
    /// The last `tail.len()` bytes of the file, once a pass reached them.
    tail: Vec<u8>,
    tail_complete: bool,
    len: u64,
    /// Bytes received from the source (including what was discarded).
    pub received: u64,
}

/// Bytes of the file's end a [`Streamed`] keeps: the footer, the largest envelope (16
/// signatures and a 64 KiB body), and a hash tree of 1/100 of the file (4 KiB blocks need
/// 1/127), at most 24 MiB.
pub fn tail_keep(len: u64) -> u64 {
    use stele_verifier::manifest::{
        ENVELOPE_HEADER_LEN, MAX_BODY_LEN, MAX_SIGNATURES, SIGNATURE_ENTRY_LEN,
    };
    let envelope = ENVELOPE_HEADER_LEN + MAX_SIGNATURES * SIGNATURE_ENTRY_LEN + MAX_BODY_LEN;
    let meta = envelope as u64 + 2 * stele_verifier::footer::FOOTER_SIZE;
    (len / 100 + meta).min(24 << 20).min(len)
}

impl Streamed {
    pub fn new(len: u64) -> Self {
        Streamed {
            pos: None,
            tail: Vec::new(),
            tail_complete: false,
            len,
            received: 0,
        }
    }

    /// [`RangeSource::read_range`] through the stream of `src`.
    pub fn read_range(
        &mut self,
        src: &mut dyn RangeSource,
        off: u64,
        len: u64,
        sink: Sink<'_>,
    ) -> Result<(), FetchError> {
        let end = off
            .checked_add(len)
            .filter(|&e| e <= self.len)
            .ok_or_else(|| FetchError::Permanent {
                why: format!(
                    "range {off}+{len} lies beyond the file's {} bytes",
                    self.len
                ),
            })?;
        let tail_start = self.len - self.tail.len() as u64;
        if self.tail_complete && off >= tail_start {
            let a = usize::try_from(off - tail_start).unwrap_or(0);
            let b = usize::try_from(end - tail_start).unwrap_or(0);
            return sink(&self.tail[a..b]).map_err(|_| FetchError::Aborted);
        }
        if self.pos.is_none_or(|p| p > off) {
            self.pos = None;
            if !self.tail_complete {
                self.tail.clear();
            }
            src.start_stream()?;
            self.pos = Some(0);
        }
        let keep_from = self.len - tail_keep(self.len);
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let pos = self.pos.unwrap_or(0);
            if pos >= end {
                return Ok(());
            }
            let n = match src.read_stream(&mut buf) {
                Ok(0) => {
                    self.pos = None;
                    return Err(FetchError::transient(format!(
                        "the stream ended at byte {pos} of {}",
                        self.len
                    )));
                }
                Ok(n) => n,
                Err(e) => {
                    self.pos = None;
                    return Err(e);
                }
            };
            let chunk = &buf[..n.min(usize::try_from(self.len - pos).unwrap_or(n))];
            self.received += n as u64;
            let next = pos + chunk.len() as u64;
            // Keep the tail of the file as it goes by.
            if next > keep_from && !self.tail_complete {
                let from = usize::try_from(keep_from.saturating_sub(pos)).unwrap_or(0);
                self.tail.extend_from_slice(&chunk[from.min(chunk.len())..]);
                self.tail_complete = next == self.len;
            }
            // The part of the chunk inside [off, end).
            let a = off.max(pos);
            let b = end.min(next);
            if a < b {
                let s = usize::try_from(a - pos).unwrap_or(0);
                let e = usize::try_from(b - pos).unwrap_or(0);
                sink(&chunk[s..e]).map_err(|_| FetchError::Aborted)?;
            }
            self.pos = Some(next);
        }
    }
}

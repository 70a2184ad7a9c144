//! The chained LZMA2 form of a slot image, `IMAGE.img.lzc` (docs/FORMATS.md "The chained
//! form"): the image cut into frames of [`FRAME_RAW`] bytes, frame k a raw LZMA2 stream
//! compressed with the [`DICT`] bytes of the image before it as preset dictionary, then a
//! seek table in the `.zst`'s layout ending with [`END_MAGIC`]. A frame compresses as
//! well as one LZMA2 stream with a [`DICT`] window, yet a device fetches only the frames
//! it needs: decoding frame k takes the [`DICT`] bytes before it, which the device has
//! already written to the target slot and checked against the signed tree (the slot is
//! written in block order), or, for the frame after the one just decoded, nothing at all
//! ([`ChainDecoder`] keeps its window: a fresh install never primes, a resume once).
//!
//! Nothing here is trusted: the table is not signed and a frame can lie. Decoding frame k
//! never gives more than the table's length of it (the reader is asked for exactly that
//! much, its window is [`DICT`] whatever the stream's header says), a frame that holds
//! more is refused at the next frame, and every decoded block is checked against the
//! signed hash tree before it is written. Pure: decoding only, the writer is the build
//! side's (stele-image `lzc`).

use std::io::Read;

use super::zst::{Form, Frame, SeekTable, ZstError};

/// The file name suffix of the chained form: `IMAGE.img` → `IMAGE.img.lzc`.
pub const SUFFIX: &str = ".lzc";

/// Bytes of the image in each frame (all but the last): 4 MiB, 1024 blocks of 4 KiB.
pub const FRAME_RAW: u64 = 4 << 20;

/// The dictionary: bytes of the image before a frame that its encoder and decoder
/// hold (the LZMA2 window): 16 MiB.
pub const DICT: u64 = 16 << 20;

/// The magic that ends the table (`stLZ`, little-endian).
pub const END_MAGIC: u32 = u32::from_le_bytes(*b"stLZ");

/// A compressed frame longer than this is refused: LZMA2's worst case (uncompressed
/// chunks of 64 KiB, 3 header bytes each) plus the end marker, with room to spare.
pub const MAX_FRAME_COMPRESSED: u64 = FRAME_RAW + (FRAME_RAW >> 7) + 4096;

/// The chained form's table rules.
pub const LZC: Form = Form {
    end_magic: END_MAGIC,
    name: ".lzc",
    frame_raw_max: FRAME_RAW,
    compressed_max: MAX_FRAME_COMPRESSED,
};

/// The bytes of the image a decoder starting at frame `first` must be primed with: the
/// [`DICT`] bytes before it (all of the image before it when that is shorter), as
/// `(offset, length)` in the image. Pure.
pub fn prime_range(frame: &Frame) -> (u64, u64) {
    let len = frame.raw_offset.min(DICT);
    (frame.raw_offset - len, len)
}

/// The compressed bytes a reader takes from: the current frame's, replaced per frame.
#[derive(Debug, Default)]
struct Feed {
    buf: Vec<u8>,
    pos: usize,
}

impl Read for Feed {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let rest = self.buf.get(self.pos..).unwrap_or(&[]);
        let n = rest.len().min(out.len());
        out[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Ok(n)
    }
}

/// Decodes consecutive frames of a chained form, keeping its [`DICT`] window from one to
/// the next. Start it at any frame, prime it with that frame's [`prime_range`] bytes (in
/// pieces of any size: they go through the window as LZMA2 uncompressed chunks, so the
/// decoder never holds more than its window), then decode; after an error it is spent
/// (start another, primed again).
pub struct ChainDecoder {
    reader: lzma_rust2::Lzma2Reader<Feed>,
    /// The frame it decodes next.
    next: u64,
    /// Bytes of the image before that frame still wanted (priming, or the frames between
    /// the last one decoded and the next).
    unprimed: u64,
    /// Nothing went into its window yet: the first uncompressed chunk resets it.
    fresh: bool,
    spent: bool,
}

impl std::fmt::Debug for ChainDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainDecoder")
            .field("next", &self.next)
            .field("unprimed", &self.unprimed)
            .field("spent", &self.spent)
            .finish()
    }
}

/// Bytes of an LZMA2 uncompressed chunk at most.
const STORED_CHUNK: usize = 64 << 10;

impl ChainDecoder {
    /// A decoder whose next frame is `first`, wanting its [`prime_range`] bytes through
    /// [`ChainDecoder::prime`] before it decodes.
    pub fn start(first: &Frame) -> ChainDecoder {
        let dict = u32::try_from(DICT).unwrap_or(u32::MAX);
        ChainDecoder {
            reader: lzma_rust2::Lzma2Reader::new(Feed::default(), dict, None),
            next: first.index,
            unprimed: prime_range(first).1,
            fresh: true,
            spent: false,
        }
    }

    /// The image offset its window ends at once primed: where the frame it decodes next
    /// starts.
    pub fn at(&self) -> u64 {
        self.next.saturating_mul(FRAME_RAW)
    }

    /// Continues this decoder (which decoded the frame before [`ChainDecoder::at`]) at a
    /// later frame `to`: it then wants the image's bytes from [`ChainDecoder::at`] to
    /// `to`'s start through [`ChainDecoder::prime`] (at most [`DICT`]; the device has
    /// them in the target slot), instead of a new decoder's [`DICT`]. Refuses when the
    /// frame before held more than its length, or `to` is behind it or too far ahead.
    pub fn skip_to(&mut self, to: &Frame) -> Result<u64, ZstError> {
        let gap = to.raw_offset.checked_sub(self.at());
        let Some(gap) = gap.filter(|&g| g <= DICT && !self.spent && self.unprimed == 0) else {
            self.spent = true;
            return Err(ZstError::Corrupt {
                frame: to.index,
                why: format!("its decoder is at frame {}, too far from it", self.next),
            });
        };
        self.ended(to.index)?;
        self.next = to.index;
        self.unprimed = gap;
        Ok(gap)
    }

    /// [`ChainDecoder::start`] and [`ChainDecoder::prime`] with all of `prime` at once.
    pub fn new(first: &Frame, prime: &[u8]) -> Result<ChainDecoder, ZstError> {
        let mut d = ChainDecoder::start(first);
        d.prime(prime)?;
        if d.unprimed > 0 {
            return Err(d.short_prime());
        }
        Ok(d)
    }

    fn short_prime(&self) -> ZstError {
        ZstError::Corrupt {
            frame: self.next,
            why: format!(
                "its decoder lacks {} bytes of the image before it",
                self.unprimed
            ),
        }
    }

    /// The next bytes of the image before the first frame (its [`prime_range`], in
    /// order). Refuses more than that.
    pub fn prime(&mut self, bytes: &[u8]) -> Result<(), ZstError> {
        if bytes.len() as u64 > self.unprimed || self.spent {
            self.spent = true;
            return Err(ZstError::Corrupt {
                frame: self.next,
                why: "its decoder was primed with more than the image before it".into(),
            });
        }
        let mut sink = vec![0u8; STORED_CHUNK.min(bytes.len())];
        for piece in bytes.chunks(STORED_CHUNK) {
            let mut chunk = Vec::with_capacity(piece.len() + 3);
            chunk.push(if self.fresh { 0x01 } else { 0x02 });
            self.fresh = false;
            let n = u16::try_from(piece.len() - 1).unwrap_or(u16::MAX);
            chunk.extend_from_slice(&n.to_be_bytes());
            chunk.extend_from_slice(piece);
            *self.reader.inner_mut() = Feed { buf: chunk, pos: 0 };
            let out = &mut sink[..piece.len()];
            let mut got = 0;
            while got < out.len() {
                match self.reader.read(&mut out[got..]) {
                    Ok(n) if n > 0 => got += n,
                    _ => {
                        self.spent = true;
                        return Err(ZstError::Corrupt {
                            frame: self.next,
                            why: "its decoder could not take the image before it".into(),
                        });
                    }
                }
            }
            self.unprimed -= piece.len() as u64;
        }
        Ok(())
    }

    /// True when frame `index` is the one this decoder continues with (no priming).
    pub fn continues(&self, index: u64) -> bool {
        !self.spent && self.next == index
    }

    /// Decodes `frame` (its compressed bytes `bytes`, as the table places them) to exactly
    /// its `raw_len` bytes. The frame must be the one [`ChainDecoder::continues`] with.
    /// Refuses a frame that is not LZMA2, that ends early, that holds bytes past its
    /// length (before the end marker, or as output: found here when it decodes the next
    /// frame), or is longer than [`MAX_FRAME_COMPRESSED`].
    pub fn decode(&mut self, frame: &Frame, bytes: Vec<u8>) -> Result<Vec<u8>, ZstError> {
        let index = frame.index;
        let corrupt = |why: String| ZstError::Corrupt { frame: index, why };
        if !self.continues(index) {
            return Err(corrupt(format!(
                "the decoder is at frame {} (not primed for this one)",
                self.next
            )));
        }
        if self.unprimed > 0 {
            self.spent = true;
            return Err(self.short_prime());
        }
        self.spent = true;
        if frame.raw_len > FRAME_RAW || bytes.len() as u64 > MAX_FRAME_COMPRESSED {
            return Err(ZstError::Bomb {
                frame: index,
                claimed: frame.raw_len,
            });
        }
        self.ended(index)?;
        let Some((&0, body)) = bytes.split_last() else {
            return Err(corrupt("it does not end with the LZMA2 end marker".into()));
        };
        let body_len = body.len();
        let mut buf = bytes;
        buf.truncate(body_len);
        *self.reader.inner_mut() = Feed { buf, pos: 0 };
        let want = usize::try_from(frame.raw_len).map_err(|e| corrupt(e.to_string()))?;
        let mut out = vec![0u8; want];
        let mut got = 0;
        while got < want {
            match self.reader.read(&mut out[got..]) {
                Ok(0) => {
                    return Err(ZstError::Short {
                        frame: index,
                        got: got as u64,
                        claimed: frame.raw_len,
                    })
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Err(ZstError::Short {
                        frame: index,
                        got: got as u64,
                        claimed: frame.raw_len,
                    })
                }
                Err(e) => return Err(corrupt(e.to_string())),
            }
        }
        let feed = self.reader.inner_mut();
        if feed.pos != feed.buf.len() {
            return Err(ZstError::Bomb {
                frame: index,
                claimed: frame.raw_len,
            });
        }
        feed.buf = Vec::new();
        self.next = index + 1;
        self.fresh = false;
        self.spent = false;
        Ok(out)
    }
}

impl ChainDecoder {
    /// Checks the frame before `index` ended with its length: with nothing to read, a
    /// reader that still gives a byte holds more of that frame.
    fn ended(&mut self, index: u64) -> Result<(), ZstError> {
        self.reader.inner_mut().buf = Vec::new();
        self.reader.inner_mut().pos = 0;
        let mut probe = [0u8; 1];
        let r = match self.reader.read(&mut probe) {
            Ok(0) => Err(ZstError::Corrupt {
                frame: index,
                why: "a frame before it ended the stream".into(),
            }),
            Ok(_) => Err(ZstError::Bomb {
                frame: index.saturating_sub(1),
                claimed: FRAME_RAW,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(()),
            Err(e) => Err(ZstError::Corrupt {
                frame: index,
                why: e.to_string(),
            }),
        };
        if r.is_err() {
            self.spent = true;
        }
        r
    }
}

/// The image's bytes a chained frame's decoder takes before the frame: `len` bytes from
/// image offset `off` up to the frame's start, read from `bytes` (on the device: the
/// target slot, already written and checked; over the fetch client's pipe: what the
/// device sent). `len` is at most [`DICT`].
pub struct Prime<'p> {
    pub off: u64,
    pub len: u64,
    pub bytes: &'p mut dyn Read,
}

impl std::fmt::Debug for Prime<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prime")
            .field("off", &self.off)
            .field("len", &self.len)
            .finish()
    }
}

/// The priming a device sends for `frame` when the source's decoder is believed to end
/// at `at` (the end of the last frame it decoded; `None`: no decoder, or unknown): the
/// bytes from `at` when that continues it (at most [`DICT`] ahead), else the frame's
/// [`prime_range`]. As `(offset, length)` in the image. Pure.
pub fn prime_for(frame: &Frame, at: Option<u64>) -> (u64, u64) {
    match at {
        Some(a) if a <= frame.raw_offset && frame.raw_offset - a <= DICT => {
            (a, frame.raw_offset - a)
        }
        _ => prime_range(frame),
    }
}

/// A decoding source's chained decoder, kept from one frame to the next
/// ([`Chain::read`]): the fetch client's, the host's HTTP source's.
#[derive(Debug, Default)]
pub struct Chain {
    dec: Option<ChainDecoder>,
}

/// Bytes of priming read at a time.
const PRIME_PIECE: usize = 1 << 20;

impl Chain {
    /// [`super::RangeSource::read_chain`] for a source that decodes: `prime` goes into the
    /// kept decoder when it continues it ([`ChainDecoder::skip_to`]) or into a new one
    /// when it is the frame's whole [`prime_range`]; then the frame's compressed bytes by
    /// one range read of `src`, decoded (bounded: a bomb is refused) to `sink`. A priming
    /// that does neither is a transient error (the device primes again from the start).
    /// Reads all of `prime` unless it fails.
    pub fn read(
        &mut self,
        src: &mut dyn super::RangeSource,
        frame: &Frame,
        prime: Prime<'_>,
        sink: super::Sink<'_>,
    ) -> Result<(), super::FetchError> {
        use super::FetchError;
        let refused = |e: ZstError| FetchError::Permanent { why: e.to_string() };
        if frame.len > MAX_FRAME_COMPRESSED || frame.raw_len > FRAME_RAW {
            return Err(refused(ZstError::Bomb {
                frame: frame.index,
                claimed: frame.raw_len,
            }));
        }
        if prime.len > DICT || prime.off.checked_add(prime.len) != Some(frame.raw_offset) {
            return Err(FetchError::Permanent {
                why: format!(
                    "a priming of {} bytes at {} is not the image before frame {}",
                    prime.len, prime.off, frame.index
                ),
            });
        }
        let mut dec = match self.dec.take() {
            Some(mut d) if d.at() == prime.off && d.continues(d.next) => {
                d.skip_to(frame).map_err(refused)?;
                d
            }
            _ if (prime.off, prime.len) == prime_range(frame) => ChainDecoder::start(frame),
            _ => {
                return Err(FetchError::transient(format!(
                    "the decoder is not at byte {} of the image (frame {} needs priming)",
                    prime.off, frame.index
                )))
            }
        };
        let mut piece = vec![0u8; PRIME_PIECE.min(usize::try_from(prime.len).unwrap_or(0))];
        let mut left = prime.len;
        while left > 0 {
            let n = usize::try_from(left.min(PRIME_PIECE as u64)).unwrap_or(PRIME_PIECE);
            prime
                .bytes
                .read_exact(&mut piece[..n])
                .map_err(|e| FetchError::Permanent {
                    why: format!("reading the priming of frame {}: {e}", frame.index),
                })?;
            dec.prime(&piece[..n]).map_err(refused)?;
            left -= n as u64;
        }
        drop(piece);
        let bytes = match super::read_whole(src, frame.offset, frame.len) {
            Ok(b) => b,
            Err(e) => {
                // Primed and at this frame: a retry that sends no priming continues it.
                self.dec = Some(dec);
                return Err(e);
            }
        };
        let raw = dec.decode(frame, bytes).map_err(refused)?;
        self.dec = Some(dec);
        sink(&raw).map_err(|_| FetchError::Aborted)
    }
}

/// The table of a chained form (`table`: the file's last bytes as
/// [`super::zst::table_len_of`] with [`LZC`] gives them), checked against the signed image
/// of `raw_len` bytes in blocks of `block_size`: frames of [`FRAME_RAW`] bytes exactly (the
/// last may be shorter). Pure.
pub fn parse_table(
    table: &[u8],
    file_len: u64,
    raw_len: u64,
    block_size: u64,
) -> Result<SeekTable, ZstError> {
    let t = SeekTable::parse_of(&LZC, table, file_len, raw_len, block_size)?;
    if t.frames() > 1 && t.frame_raw != FRAME_RAW {
        return Err(ZstError::Table(format!(
            "its frames hold {} bytes, not {FRAME_RAW}",
            t.frame_raw
        )));
    }
    Ok(t)
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test sizes are small
mod tests {
    use super::*;

    /// A frame of LZMA2 uncompressed chunks holding `data` (the first resets the
    /// dictionary when `first`), then the end marker.
    fn stored(data: &[u8], first: bool) -> Vec<u8> {
        let mut f = Vec::new();
        for (k, c) in data.chunks(64 << 10).enumerate() {
            f.push(if first && k == 0 { 0x01 } else { 0x02 });
            f.extend_from_slice(&u16::try_from(c.len() - 1).unwrap().to_be_bytes());
            f.extend_from_slice(c);
        }
        f.push(0);
        f
    }

    fn frame(index: u64, raw_len: u64, len: usize) -> Frame {
        Frame {
            index,
            offset: 0,
            len: len as u64,
            raw_offset: index * FRAME_RAW,
            raw_len,
        }
    }

    #[test]
    fn stored_frames_decode_in_a_run() {
        let a: Vec<u8> = (0..FRAME_RAW as u32).map(|i| (i % 253) as u8).collect();
        let b = vec![9u8; 5000];
        let (fa, fb) = (stored(&a, true), stored(&b, false));
        let mut d = ChainDecoder::new(&frame(0, FRAME_RAW, fa.len()), &[]).unwrap();
        assert_eq!(d.decode(&frame(0, FRAME_RAW, fa.len()), fa).unwrap(), a);
        assert!(d.continues(1) && !d.continues(0));
        assert_eq!(d.decode(&frame(1, 5000, fb.len()), fb).unwrap(), b);
    }

    /// Regression (decompression bomb): a frame holding more than the table says gives
    /// exactly its claim and is refused; decoding never holds more than the frame.
    #[test]
    fn a_frame_holding_more_than_its_claim_is_refused() {
        let big = stored(&vec![1u8; 200_000], true);
        let e = ChainDecoder::new(&frame(0, 4096, big.len()), &[])
            .unwrap()
            .decode(&frame(0, 4096, big.len()), big)
            .unwrap_err();
        assert_eq!(
            e,
            ZstError::Bomb {
                frame: 0,
                claimed: 4096
            }
        );
        let short = stored(&[1u8; 100], true);
        assert!(matches!(
            ChainDecoder::new(&frame(0, 4096, short.len()), &[])
                .unwrap()
                .decode(&frame(0, 4096, short.len()), short),
            Err(ZstError::Short { claimed: 4096, .. })
        ));
        for junk in [&b"not lzma2"[..], &[0x00], &[], &[0xE0, 0, 0, 0, 0, 0, 0]] {
            let r = ChainDecoder::new(&frame(0, 4096, junk.len()), &[])
                .unwrap()
                .decode(&frame(0, 4096, junk.len()), junk.to_vec());
            assert!(r.is_err(), "{junk:?} accepted");
        }
        // A frame that keeps the dictionary with nothing primed.
        let later = stored(&[1u8; 4096], false);
        assert!(ChainDecoder::new(&frame(0, 4096, later.len()), &[])
            .unwrap()
            .decode(&frame(0, 4096, later.len()), later)
            .is_err());
        // Past the limit before decoding.
        let huge = vec![0u8; MAX_FRAME_COMPRESSED as usize + 1];
        assert!(matches!(
            ChainDecoder::new(&frame(0, FRAME_RAW, huge.len()), &[])
                .unwrap()
                .decode(&frame(0, FRAME_RAW, huge.len()), huge),
            Err(ZstError::Bomb { .. })
        ));
    }
}

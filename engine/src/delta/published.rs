//! The published delta `NEW.img.from-<16 hex>.delta` (docs/FORMATS.md "The published
//! delta"): the blocks of a new image that a device running one older release lacks, as
//! zstd frames each compressed against a stretch of the old image's blocks (a raw-content
//! prefix, zstd's `--patch-from`), followed by an index that says which new blocks each
//! frame gives and which old blocks it reads, at the file's end (so that the request a
//! device makes for the file's length, its last 4 KiB, usually brings the whole index).
//! One definition for the build side (which writes it with [`encode_index`] and checks
//! every frame with [`decode_patch`]) and the device (which reads it with
//! [`DeltaIndex::parse`] and decodes in the fetch client).
//!
//! Nothing here is trusted: the file is not signed. Every block a frame gives is checked
//! against the signed hash tree before it is written; a frame that lies only costs bytes.
//! Decoding is bounded: the reference is at most [`MAX_REF`] bytes, the output exactly the
//! index's claim (one byte more is a refused bomb), the zstd window at most [`MAX_WINDOW`].

use std::io::{Read, Seek};

use ruzstd::decoding::{BlockDecodingStrategy, Dictionary, FrameDecoder};
use sha2::{Digest, Sha256};

/// The first 8 bytes of the trailer (the file's last [`TRAILER_LEN`] bytes).
pub const MAGIC: &[u8; 8] = b"STELEDLT";
/// The format version this code reads and writes (2: the copy runs after the frames'
/// entries; a version 1 delta, without them, is refused: rebuild it).
pub const VERSION: u32 = 2;
/// Bytes of the trailer, the file's last bytes (after the index).
pub const TRAILER_LEN: usize = 96;
/// Bytes of one index entry.
pub const ENTRY_LEN: u64 = 32;
/// At most this many frames (an index of at most 2 MiB).
pub const MAX_FRAMES: u64 = 65536;
/// Bytes of one copy run.
pub const RUN_LEN: u64 = 24;
/// At most this many copy runs (6 MiB).
pub const MAX_RUNS: u64 = 1 << 18;
/// A copy run's `from` that means "all-zero blocks".
pub const ZERO_RUN: u64 = u64::MAX;
/// A frame gives at most this many bytes of the new image.
pub const MAX_OUT: u64 = 1 << 20;
/// A frame reads at most this many bytes of the old image as its reference.
pub const MAX_REF: u64 = 8 << 20;
/// A compressed frame longer than this is refused (its output plus zstd's worst case).
pub const MAX_FRAME_COMPRESSED: u64 = MAX_OUT + (MAX_OUT >> 7) + 4096;
/// The largest zstd window a frame may declare (the reference and the output fit in it).
pub const MAX_WINDOW: u64 = 16 << 20;
/// Hex digits of the old release's envelope digest in the file name.
pub const NAME_HEX: usize = 16;

/// The id under which the reference is handed to the decoder (never written in a frame:
/// the frames name no dictionary, the reference is a prefix).
const DICT_ID: u32 = 0x5354_454c;

/// A formatted zstd dictionary's header with entropy tables that frames never use (a
/// frame compressed against a raw prefix defines its own tables in its first block) and
/// the repeat offsets 1, 4, 8 of a raw-content prefix: ruzstd 0.9 takes raw content only
/// behind such a header (`Dictionary::decode_dict`). Made once by `zstd --train`; the
/// dictionary id (bytes 4..8) is [`DICT_ID`].
const DICT_HEADER: [u8; 127] = {
    const HEX: &[u8; 254] = b"37a430ec4c455453091010df303333b3770a33f1783c1e8fc7e3f1783ccff3bcf7d44241414141414141414141414141414141414141414141414141a15028140a8542a15028140a85a2288aa2284a297d74e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1e1f1783c1e8fc7e3f1789ee779ef01010000000400000008000000";
    let mut out = [0u8; 127];
    let mut i = 0;
    while i < 127 {
        out[i] = nibble(HEX[2 * i]) << 4 | nibble(HEX[2 * i + 1]);
        i += 1;
    }
    out
};

const fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        _ => c - b'a' + 10,
    }
}

/// Why a published delta (or one of its frames) was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatchError {
    /// The header or index does not follow the format.
    #[error("the delta's index is malformed: {0}")]
    Index(String),
    /// The delta was built for another pair of releases.
    #[error("the delta {0}")]
    OtherRelease(String),
    /// A frame is not valid zstd, or does not decode against its reference.
    #[error("delta frame {frame} is not a valid zstd patch: {why}")]
    Corrupt { frame: u64, why: String },
    /// A frame decodes to more than the index says (a decompression bomb).
    #[error("delta frame {frame} decompresses to more than its {claimed} bytes: refused")]
    Bomb { frame: u64, claimed: u64 },
    /// A frame decodes to fewer bytes than the index says.
    #[error("delta frame {frame} decompresses to {got} bytes, not its {claimed}")]
    Short { frame: u64, got: u64, claimed: u64 },
}

/// One frame of a delta: where it is in the file, the new blocks it gives, the old blocks
/// it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatchFrame {
    pub index: u64,
    /// Offset and length in the delta file.
    pub offset: u64,
    pub len: u64,
    /// The new image's data blocks `first .. first + blocks`.
    pub first: u64,
    pub blocks: u64,
    /// The old image's data blocks `ref_first .. ref_first + ref_blocks` (the reference).
    pub ref_first: u64,
    pub ref_blocks: u64,
}

/// New blocks that no frame gives, each either the same blocks of the old image (a run of
/// consecutive old blocks) or all zero: with the frames they make the whole new image's
/// data, so a device can write it without the new hash tree and rebuild the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyRun {
    /// The new image's data blocks `first .. first + blocks`.
    pub first: u64,
    pub blocks: u64,
    /// The old image's data block the run starts at; `None`: all-zero blocks.
    pub from: Option<u64>,
}

/// One piece of the new image's data, in block order ([`DeltaIndex::pieces`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Frame `k` of the index (a position in [`DeltaIndex::frames`]).
    Frame(usize),
    /// A copy run.
    Run(CopyRun),
}

/// A parsed header and index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeltaIndex {
    pub block_size: u64,
    /// The new image file's length.
    pub new_len: u64,
    /// sha256 of the old and the new image's manifest envelope.
    pub old_envelope: [u8; 32],
    pub new_envelope: [u8; 32],
    /// The frames, by increasing `first`, not overlapping.
    pub frames: Vec<PatchFrame>,
    /// The copy runs, by increasing `first`, not overlapping each other.
    pub runs: Vec<CopyRun>,
    /// Bytes of the header and index.
    pub index_len: u64,
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// The name suffix of the delta from the release whose envelope digest is `old`:
/// `.from-<first 16 hex digits>.delta`. Pure.
pub fn suffix(old: &[u8; 32]) -> String {
    let hex = stele_verifier::hex::encode(old);
    format!(".from-{}.delta", &hex[..NAME_HEX])
}

/// Bytes of the index and trailer at the end of a delta whose trailer is `header` (its
/// last [`TRAILER_LEN`] bytes). Pure.
pub fn index_len(header: &[u8]) -> Result<u64, PatchError> {
    let bad = |why: &str| Err(PatchError::Index(why.to_string()));
    if header.len() != TRAILER_LEN {
        return bad("the file is shorter than its trailer");
    }
    if &header[..8] != MAGIC {
        return bad("no STELEDLT magic (not a stele delta)");
    }
    if le32(header, 8) != VERSION {
        return bad("its version is not 2 (rebuild it with this stele's `stele image delta`)");
    }
    let n = u64::from(le32(header, 16));
    if n > MAX_FRAMES {
        return bad("it has more than 65536 frames");
    }
    let m = u64::from(le32(header, 20));
    if m > MAX_RUNS {
        return bad("it has more than 262144 copy runs");
    }
    Ok(TRAILER_LEN as u64 + n * ENTRY_LEN + m * RUN_LEN)
}

impl DeltaIndex {
    /// Parses the index and trailer (`tail`: the file's last [`index_len`] bytes, of a
    /// file of `file_len` bytes). Pure; refuses frames out of order or overlapping, a
    /// frame of more than [`MAX_OUT`] bytes or a reference of more than [`MAX_REF`], and
    /// lengths that do not add up to the file.
    pub fn parse(tail: &[u8], file_len: u64) -> Result<DeltaIndex, PatchError> {
        let bad = |why: String| Err(PatchError::Index(why));
        if tail.len() < TRAILER_LEN {
            return bad("the file is shorter than its trailer".into());
        }
        let head = tail.len() - TRAILER_LEN;
        let il = index_len(&tail[head..])?;
        if tail.len() as u64 != il || il > file_len {
            return bad(format!("{} bytes given for an index of {il}", tail.len()));
        }
        let bytes = &tail[head..];
        let n = usize::try_from(le32(bytes, 16)).unwrap_or(usize::MAX);
        let (entries, run_bytes) = tail[..head].split_at(n.saturating_mul(32).min(head));
        let bs = u64::from(le32(bytes, 12));
        if !(512..=65536).contains(&bs) || !bs.is_power_of_two() {
            return bad(format!(
                "its block size {bs} is not a power of two in 512..=65536"
            ));
        }
        let new_len = le64(bytes, 24);
        let mut old_envelope = [0u8; 32];
        old_envelope.copy_from_slice(&bytes[32..64]);
        let mut new_envelope = [0u8; 32];
        new_envelope.copy_from_slice(&bytes[64..96]);
        let mut frames = Vec::new();
        let mut off = 0u64;
        let mut next_free = 0u64;
        for (i, e) in entries.chunks_exact(32).enumerate() {
            let index = i as u64;
            let first = le64(e, 0);
            let blocks = u64::from(le32(e, 8));
            let len = u64::from(le32(e, 12));
            let ref_first = le64(e, 16);
            let ref_blocks = u64::from(le32(e, 24));
            if le32(e, 28) != 0 {
                return bad(format!("frame {index}: its reserved field is not 0"));
            }
            if blocks == 0 || blocks * bs > MAX_OUT {
                return bad(format!("frame {index} gives {blocks} blocks"));
            }
            if ref_blocks * bs > MAX_REF {
                return bad(format!("frame {index} reads {ref_blocks} old blocks"));
            }
            if len == 0 || len > MAX_FRAME_COMPRESSED {
                return bad(format!("frame {index} is {len} bytes long"));
            }
            if first < next_free || first.checked_add(blocks).is_none() {
                return bad(format!("frame {index} overlaps or precedes the one before"));
            }
            if ref_first.checked_add(ref_blocks).is_none() {
                return bad(format!("frame {index}'s reference overflows"));
            }
            next_free = first + blocks;
            frames.push(PatchFrame {
                index,
                offset: off,
                len,
                first,
                blocks,
                ref_first,
                ref_blocks,
            });
            off += len;
        }
        if off != file_len - il {
            return bad(format!(
                "its frames end at byte {off} but its index starts at {}",
                file_len - il
            ));
        }
        let mut runs = Vec::new();
        let mut next_free = 0u64;
        for (k, e) in run_bytes.chunks_exact(24).enumerate() {
            let first = le64(e, 0);
            let from = le64(e, 8);
            let blocks = u64::from(le32(e, 16));
            if le32(e, 20) != 0 {
                return bad(format!("copy run {k}: its reserved field is not 0"));
            }
            let end = first.checked_add(blocks);
            if blocks == 0 || end.is_none() || first < next_free {
                return bad(format!(
                    "copy run {k} is empty, overflows, or overlaps the one before"
                ));
            }
            if from != ZERO_RUN && from.checked_add(blocks).is_none() {
                return bad(format!("copy run {k}'s old blocks overflow"));
            }
            next_free = end.unwrap_or(u64::MAX);
            runs.push(CopyRun {
                first,
                blocks,
                from: (from != ZERO_RUN).then_some(from),
            });
        }
        Ok(DeltaIndex {
            block_size: bs,
            new_len,
            old_envelope,
            new_envelope,
            frames,
            runs,
            index_len: il,
        })
    }

    /// Refuses a delta that is not from the release whose envelope digest is `old` to the
    /// image of `new` (envelope digest), `new_len` bytes, `data_blocks` of `block_size`.
    /// Pure.
    pub fn check(
        &self,
        old: &[u8; 32],
        new: &[u8; 32],
        new_len: u64,
        data_blocks: u64,
        block_size: u64,
    ) -> Result<(), PatchError> {
        let other = |why: String| Err(PatchError::OtherRelease(why));
        if &self.new_envelope != new || self.new_len != new_len {
            return other(
                "was built for another image than the signed one (a stale upload)".into(),
            );
        }
        if &self.old_envelope != old {
            return other("starts from another release than the running one".into());
        }
        if self.block_size != block_size {
            return other(format!(
                "has blocks of {} bytes, the image {block_size}",
                self.block_size
            ));
        }
        if let Some(f) = self.frames.last() {
            if f.first + f.blocks > data_blocks {
                return other(format!(
                    "frame {} gives blocks past the image's {data_blocks}",
                    f.index
                ));
            }
        }
        Ok(())
    }

    /// The frames and copy runs in block order when together they give each of
    /// `data_blocks` new blocks exactly once (a delta a device can write without the new
    /// hash tree, rebuilding it); else why not. Pure.
    pub fn pieces(&self, data_blocks: u64) -> Result<Vec<Piece>, String> {
        let mut out = Vec::with_capacity(self.frames.len() + self.runs.len());
        let (mut f, mut r) = (0usize, 0usize);
        let mut next = 0u64;
        while next < data_blocks {
            let behind = self.frames.get(f).map(|x| x.first).filter(|&a| a < next);
            if let Some(a) = behind.or(self.runs.get(r).map(|x| x.first).filter(|&a| a < next)) {
                return Err(format!("a frame and a copy run both give block {a}"));
            }
            let frame = self.frames.get(f).filter(|x| x.first == next);
            let run = self.runs.get(r).filter(|x| x.first == next);
            next = match (frame, run) {
                (Some(x), None) => {
                    out.push(Piece::Frame(f));
                    f += 1;
                    x.first + x.blocks
                }
                (None, Some(x)) => {
                    out.push(Piece::Run(*x));
                    r += 1;
                    x.first + x.blocks
                }
                (Some(_), Some(_)) => {
                    return Err(format!("a frame and a copy run both give block {next}"))
                }
                (None, None) => return Err(format!("nothing in it gives block {next}")),
            };
        }
        if f < self.frames.len() || r < self.runs.len() || next != data_blocks {
            return Err(format!("it gives blocks past the image's {data_blocks}"));
        }
        Ok(out)
    }

    /// Bytes of every frame, the index and trailer: the whole file.
    pub fn file_len(&self) -> u64 {
        self.frames.last().map_or(0, |f| f.offset + f.len) + self.index_len
    }
}

/// The index and trailer of a delta, written after its frames. Pure.
pub fn encode_index(
    block_size: u32,
    new_len: u64,
    old_envelope: &[u8; 32],
    new_envelope: &[u8; 32],
    frames: &[PatchFrame],
    runs: &[CopyRun],
) -> Vec<u8> {
    let mut b = Vec::with_capacity(96 + 32 * frames.len() + 24 * runs.len());
    let w32 = |v: u64| u32::try_from(v).unwrap_or(u32::MAX).to_le_bytes();
    for f in frames {
        b.extend_from_slice(&f.first.to_le_bytes());
        b.extend_from_slice(&w32(f.blocks));
        b.extend_from_slice(&w32(f.len));
        b.extend_from_slice(&f.ref_first.to_le_bytes());
        b.extend_from_slice(&w32(f.ref_blocks));
        b.extend_from_slice(&0u32.to_le_bytes());
    }
    for r in runs {
        b.extend_from_slice(&r.first.to_le_bytes());
        b.extend_from_slice(&r.from.unwrap_or(ZERO_RUN).to_le_bytes());
        b.extend_from_slice(&w32(r.blocks));
        b.extend_from_slice(&0u32.to_le_bytes());
    }
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&block_size.to_le_bytes());
    b.extend_from_slice(&w32(frames.len() as u64));
    b.extend_from_slice(&w32(runs.len() as u64));
    b.extend_from_slice(&new_len.to_le_bytes());
    b.extend_from_slice(old_envelope);
    b.extend_from_slice(new_envelope);
    b
}

/// Decodes frame `frame` (its compressed bytes) against `reference` (the old image's
/// blocks it names) to exactly `frame.blocks * block_size` bytes: [`PatchDecoder::decode`]
/// with a decoder of its own. Pure.
pub fn decode_patch(
    frame: &PatchFrame,
    bytes: &[u8],
    reference: &[u8],
    block_size: u64,
) -> Result<Vec<u8>, PatchError> {
    PatchDecoder::default()
        .decode(frame, bytes, reference, block_size)
        .map(<[u8]>::to_vec)
}

/// A delta frame decoder kept from one frame to the next: its buffers (the reference
/// behind the dictionary header, the zstd decoder's window and its copy of the
/// reference, the output) keep their memory, so a delta of hundreds of frames does not
/// allocate (and fault in) some 30 MiB afresh for each one.
#[derive(Default)]
pub struct PatchDecoder {
    dec: FrameDecoder,
    raw: Vec<u8>,
    out: Vec<u8>,
}

impl std::fmt::Debug for PatchDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PatchDecoder").finish_non_exhaustive()
    }
}

impl PatchDecoder {
    /// Decodes frame `frame` (its compressed bytes) against `reference` (the old image's
    /// blocks it names) to exactly `frame.blocks * block_size` bytes: one zstd frame
    /// naming no dictionary, its content size given and equal to that, a window of at
    /// most [`MAX_WINDOW`], nothing after it. A frame that gives more is refused as soon
    /// as a decoded block passes the claim ([`PatchError::Bomb`]). Memory: the reference
    /// three times (here, in the dictionary, in the decoder's window), the window, the
    /// output. Pure.
    pub fn decode(
        &mut self,
        frame: &PatchFrame,
        bytes: &[u8],
        reference: &[u8],
        block_size: u64,
    ) -> Result<&[u8], PatchError> {
        let k = frame.index;
        let corrupt = |why: String| PatchError::Corrupt { frame: k, why };
        let claimed = frame.blocks.saturating_mul(block_size);
        if claimed > MAX_OUT || reference.len() as u64 > MAX_REF {
            return Err(PatchError::Bomb { frame: k, claimed });
        }
        if bytes.len() as u64 > MAX_FRAME_COMPRESSED {
            return Err(corrupt(format!("{} bytes long", bytes.len())));
        }
        let dec = &mut self.dec;
        dec.set_max_window_size(MAX_WINDOW);
        if !reference.is_empty() {
            self.raw.clear();
            self.raw.extend_from_slice(&DICT_HEADER);
            self.raw.extend_from_slice(reference);
            let dict = Dictionary::decode_dict(&self.raw).map_err(|e| corrupt(e.to_string()))?;
            dec.add_dict(dict).map_err(|e| corrupt(e.to_string()))?;
        }
        let mut input = bytes;
        dec.init(&mut input).map_err(|e| corrupt(e.to_string()))?;
        if dec.content_size() != claimed {
            return Err(if dec.content_size() > claimed {
                PatchError::Bomb { frame: k, claimed }
            } else {
                corrupt(format!(
                    "its header says {} bytes, the index {claimed}",
                    dec.content_size()
                ))
            });
        }
        if !reference.is_empty() {
            dec.force_dict(DICT_ID)
                .map_err(|e| corrupt(e.to_string()))?;
            // The decoder copied the reference into its window: the dictionary's own copy
            // is not kept until the next frame (a header-only one takes its place).
            let empty =
                Dictionary::decode_dict(&DICT_HEADER).map_err(|e| corrupt(e.to_string()))?;
            dec.add_dict(empty).map_err(|e| corrupt(e.to_string()))?;
        }
        let cap = usize::try_from(claimed).unwrap_or(0);
        let out = &mut self.out;
        out.clear();
        out.reserve(cap);
        let bomb = || PatchError::Bomb { frame: k, claimed };
        while !dec.is_finished() {
            dec.decode_blocks(&mut input, BlockDecodingStrategy::UptoBytes(128 << 10))
                .map_err(|e| corrupt(e.to_string()))?;
            if dec.can_collect() > cap - out.len() {
                return Err(bomb());
            }
            if let Some(c) = dec.collect() {
                out.extend_from_slice(&c);
            }
        }
        if dec.can_collect() > cap - out.len() {
            return Err(bomb());
        }
        if let Some(c) = dec.collect() {
            out.extend_from_slice(&c);
        }
        let got = out.len() as u64;
        if got < claimed {
            return Err(PatchError::Short {
                frame: k,
                got,
                claimed,
            });
        }
        if !input.is_empty() {
            return Err(corrupt(format!(
                "{} bytes follow the frame's end",
                input.len()
            )));
        }
        Ok(&self.out)
    }
}

/// What a signed channel lists of the delta file `file` (all its bytes): its parsed index
/// (the envelope digests of the releases it starts from and leads to, the new length),
/// the sha256 of the whole file, and the sha256 of its index and trailer (its last
/// `index_len` bytes: what a device, reading only ranges, checks before it uses the
/// index). Pure.
pub fn listing(file: &[u8]) -> Result<(DeltaIndex, [u8; 32], [u8; 32]), PatchError> {
    let header = file
        .get(file.len().saturating_sub(TRAILER_LEN)..)
        .unwrap_or(&[]);
    let il = index_len(header)?;
    let tail = usize::try_from(il)
        .ok()
        .and_then(|il| file.get(file.len().checked_sub(il)?..))
        .ok_or_else(|| PatchError::Index("its index is longer than the file".into()))?;
    let index = DeltaIndex::parse(tail, file.len() as u64)?;
    Ok((
        index,
        Sha256::digest(file).into(),
        Sha256::digest(tail).into(),
    ))
}

/// sha256 of the manifest envelope of the slot image in `r` (`len` bytes), read through
/// its footer: what names the release a delta starts from and leads to. Checks the
/// envelope's structure only (a channel or the device's keyring decide trust).
pub fn envelope_digest<R: Read + Seek>(
    r: &mut R,
    len: u64,
) -> Result<[u8; 32], stele_verifier::Error> {
    let loc = stele_verifier::slot::locate(r, len)?;
    Ok(digest(&loc.envelope))
}

/// sha256 of a manifest envelope's bytes: the name of a release in a delta (and its file
/// name). Pure.
pub fn digest(envelope: &stele_verifier::manifest::Envelope) -> [u8; 32] {
    Sha256::digest(envelope.to_bytes()).into()
}

#[cfg(test)]
#[path = "published_tests.rs"]
pub(crate) mod tests;

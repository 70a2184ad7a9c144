//! The compressed transfer form of a slot image, `IMAGE.img.zst` (docs/FORMATS.md): the
//! image file cut into frames of [`FRAME_RAW`] bytes, each an independent zstd frame,
//! followed by a seek table in the zstd seekable format (a skippable frame), so that
//! `zstd -d` gives the image back and a device fetches exactly the frames covering the
//! blocks it lacks with Range requests. One definition for the build side (which writes
//! the table with [`encode_table`]) and the device (which reads it with
//! [`SeekTable::parse`] and decodes frames with [`decode_frame`]).
//!
//! Nothing here is trusted: the table is not signed. A table or frame that lies can only
//! cost bytes (every decoded block is checked against the signed hash tree before it is
//! written, and a refused frame's blocks are fetched from the image itself); a frame that
//! decodes to more than the table says is refused without keeping the excess.

use std::io::Read;

/// The file name suffix of the compressed form: `IMAGE.img` → `IMAGE.img.zst`.
pub const SUFFIX: &str = ".zst";

/// Bytes of the image in each frame (all but the last): 256 KiB, 64 blocks of 4 KiB.
pub const FRAME_RAW: u64 = 256 << 10;

/// The magic of the skippable frame that holds the seek table (little-endian).
pub const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
/// The magic that ends the seek table.
pub const SEEKABLE_MAGIC: u32 = 0x8F92_EAB1;
/// Bytes of the skippable frame's header (magic, frame size).
pub const SKIPPABLE_HEADER_LEN: u64 = 8;
/// Bytes of one table entry (compressed size, decompressed size; no checksums).
pub const ENTRY_LEN: u64 = 8;
/// Bytes of the table's footer (number of frames, descriptor, seekable magic).
pub const TABLE_FOOTER_LEN: u64 = 9;
/// A compressed frame longer than this is refused (a raw frame plus zstd's worst case).
pub const MAX_FRAME_COMPRESSED: u64 = FRAME_RAW + (FRAME_RAW >> 7) + 4096;

/// Why the compressed form's table or a frame was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ZstError {
    /// The table's bytes do not follow the format.
    #[error("the seek table is malformed: {0}")]
    Table(String),
    /// The table describes another image than the signed one.
    #[error("the seek table describes {claimed} bytes but the signed image has {image}: it belongs to another image")]
    OtherImage { claimed: u64, image: u64 },
    /// A frame does not decode (not valid zstd for a `.zst`, not valid LZMA2 or a wrong
    /// priming for a `.lzc`).
    #[error("frame {frame} does not decode: {why}")]
    Corrupt { frame: u64, why: String },
    /// A frame decodes to more than the table says (a decompression bomb).
    #[error("frame {frame} decompresses to more than its {claimed} bytes: refused")]
    Bomb { frame: u64, claimed: u64 },
    /// A frame decodes to fewer bytes than the table says.
    #[error("frame {frame} decompresses to {got} bytes, not its {claimed}")]
    Short { frame: u64, got: u64, claimed: u64 },
}

/// One frame: where it is in the compressed file and what part of the image it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    pub index: u64,
    /// Offset and length in the compressed file.
    pub offset: u64,
    pub len: u64,
    /// Offset and length in the image.
    pub raw_offset: u64,
    pub raw_len: u64,
}

/// A parsed seek table, checked against the image it must describe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeekTable {
    /// Bytes of the image in every frame but the last.
    pub frame_raw: u64,
    /// Compressed length of each frame.
    lens: Vec<u32>,
    /// Compressed offset of each frame.
    offsets: Vec<u64>,
    /// The image's length.
    pub raw_len: u64,
    /// Bytes of the table (skippable frame), at the end of the compressed file.
    pub table_len: u64,
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

/// What differs between the forms that share this table layout: the `.zst` ([`ZST`]) and
/// the chained LZMA2 form `.lzc` (`super::lzc::LZC`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Form {
    /// The magic that ends the table.
    pub end_magic: u32,
    /// The file's name in messages (`.zst`).
    pub name: &'static str,
    /// The most image bytes a frame may hold.
    pub frame_raw_max: u64,
    /// A compressed frame longer than this is refused.
    pub compressed_max: u64,
}

/// The `.zst` form.
pub const ZST: Form = Form {
    end_magic: SEEKABLE_MAGIC,
    name: ".zst",
    frame_raw_max: FRAME_RAW,
    compressed_max: MAX_FRAME_COMPRESSED,
};

/// The table's length from the compressed file's last [`TABLE_FOOTER_LEN`] bytes. Pure.
pub fn table_len(footer: &[u8], file_len: u64) -> Result<u64, ZstError> {
    table_len_of(&ZST, footer, file_len)
}

/// [`table_len`] of the form `form`. Pure.
pub fn table_len_of(form: &Form, footer: &[u8], file_len: u64) -> Result<u64, ZstError> {
    let bad = |why: &str| Err(ZstError::Table(why.to_string()));
    if footer.len() as u64 != TABLE_FOOTER_LEN {
        return bad("the footer is not 9 bytes");
    }
    if le32(footer, 5) != form.end_magic {
        return Err(ZstError::Table(format!(
            "no magic at the end of the file (not a stele {})",
            form.name
        )));
    }
    if footer[4] != 0 {
        return bad("its descriptor is not 0 (checksums or reserved bits set)");
    }
    let n = u64::from(le32(footer, 0));
    let len = SKIPPABLE_HEADER_LEN + n * ENTRY_LEN + TABLE_FOOTER_LEN;
    if len > file_len {
        return bad("it claims more frames than the file can hold");
    }
    Ok(len)
}

impl SeekTable {
    /// Parses the whole table (`table`: the compressed file's last [`table_len`] bytes of
    /// a file of `file_len` bytes) and checks it describes an image of `raw_len` bytes in
    /// frames of one size, a multiple of `block_size` (the last frame may be shorter).
    /// Pure; refuses anything else.
    pub fn parse(
        table: &[u8],
        file_len: u64,
        raw_len: u64,
        block_size: u64,
    ) -> Result<SeekTable, ZstError> {
        Self::parse_of(&ZST, table, file_len, raw_len, block_size)
    }

    /// [`SeekTable::parse`] of the form `form`. Pure.
    pub fn parse_of(
        form: &Form,
        table: &[u8],
        file_len: u64,
        raw_len: u64,
        block_size: u64,
    ) -> Result<SeekTable, ZstError> {
        let bad = |why: String| Err(ZstError::Table(why));
        let max_raw = form.frame_raw_max;
        let tl = table.len() as u64;
        if tl < SKIPPABLE_HEADER_LEN + TABLE_FOOTER_LEN {
            return bad("shorter than its header and footer".into());
        }
        let footer = &table[table.len() - 9..];
        if table_len_of(form, footer, file_len)? != tl {
            return bad("its length does not match its number of frames".into());
        }
        if le32(table, 0) != SKIPPABLE_MAGIC {
            return bad("no skippable-frame magic at its start".into());
        }
        if u64::from(le32(table, 4)) != tl - SKIPPABLE_HEADER_LEN {
            return bad("the skippable frame's size does not match the table".into());
        }
        let n = usize::try_from(le32(footer, 0)).unwrap_or(usize::MAX);
        let entries = &table[8..table.len() - 9];
        let mut lens = Vec::with_capacity(n);
        let mut offsets = Vec::with_capacity(n);
        let mut frame_raw = 0u64;
        let mut off = 0u64;
        let mut raw = 0u64;
        for (i, e) in entries.chunks_exact(8).enumerate() {
            let (c, d) = (le32(e, 0), u64::from(le32(e, 4)));
            if c == 0 || u64::from(c) > form.compressed_max {
                return bad(format!("frame {i} has a compressed length of {c} bytes"));
            }
            if i == 0 {
                frame_raw = d;
                if d == 0 || block_size == 0 || d % block_size != 0 || d > max_raw {
                    return bad(format!(
                        "its frames hold {d} bytes, not a multiple of the {block_size}-byte block of at most {max_raw}"
                    ));
                }
            } else if d == 0 || d > frame_raw || (i + 1 < n && d != frame_raw) {
                return bad(format!("frame {i} holds {d} bytes, the first {frame_raw}"));
            }
            offsets.push(off);
            lens.push(c);
            off += u64::from(c);
            raw += d;
        }
        if off != file_len - tl {
            return bad(format!(
                "its frames add up to {off} bytes but the file has {} before the table",
                file_len - tl
            ));
        }
        if raw != raw_len {
            return Err(ZstError::OtherImage {
                claimed: raw,
                image: raw_len,
            });
        }
        Ok(SeekTable {
            frame_raw,
            lens,
            offsets,
            raw_len,
            table_len: tl,
        })
    }

    /// Number of frames.
    pub fn frames(&self) -> u64 {
        self.lens.len() as u64
    }

    /// Frame `i` (`None` past the last).
    pub fn frame(&self, i: u64) -> Option<Frame> {
        let k = usize::try_from(i).ok()?;
        let len = u64::from(*self.lens.get(k)?);
        let raw_offset = i * self.frame_raw;
        Some(Frame {
            index: i,
            offset: self.offsets[k],
            len,
            raw_offset,
            raw_len: self.frame_raw.min(self.raw_len - raw_offset),
        })
    }

    /// The frame holding image byte `off`.
    pub fn frame_at(&self, off: u64) -> Option<Frame> {
        self.frame(off / self.frame_raw)
    }

    /// Bytes of all frames and the table: the whole compressed file.
    pub fn file_len(&self) -> u64 {
        self.offsets.last().copied().unwrap_or(0)
            + self.lens.last().map_or(0, |&l| u64::from(l))
            + self.table_len
    }
}

/// The seek table for frames of (compressed, decompressed) lengths. Pure.
pub fn encode_table(frames: &[(u32, u32)]) -> Vec<u8> {
    encode_table_of(&ZST, frames)
}

/// [`encode_table`] of the form `form`. Pure.
pub fn encode_table_of(form: &Form, frames: &[(u32, u32)]) -> Vec<u8> {
    let n = u32::try_from(frames.len()).unwrap_or(u32::MAX);
    let body = frames.len() as u64 * ENTRY_LEN + TABLE_FOOTER_LEN;
    let mut t = Vec::with_capacity(usize::try_from(body).unwrap_or(0) + 8);
    t.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
    t.extend_from_slice(&u32::try_from(body).unwrap_or(u32::MAX).to_le_bytes());
    for (c, d) in frames {
        t.extend_from_slice(&c.to_le_bytes());
        t.extend_from_slice(&d.to_le_bytes());
    }
    t.extend_from_slice(&n.to_le_bytes());
    t.push(0);
    t.extend_from_slice(&form.end_magic.to_le_bytes());
    t
}

/// Decodes frame `frame` (its compressed bytes) that must hold exactly `claimed` bytes:
/// one zstd frame, nothing after it. Decoding stops at `claimed + 1` bytes: a frame that
/// gives more is refused ([`ZstError::Bomb`]) with at most that much in memory. Pure.
pub fn decode_frame(frame: u64, bytes: &[u8], claimed: u64) -> Result<Vec<u8>, ZstError> {
    let corrupt = |why: String| ZstError::Corrupt { frame, why };
    if claimed > FRAME_RAW || bytes.len() as u64 > MAX_FRAME_COMPRESSED {
        return Err(ZstError::Bomb { frame, claimed });
    }
    let mut input = bytes;
    let mut dec =
        ruzstd::decoding::StreamingDecoder::new(&mut input).map_err(|e| corrupt(e.to_string()))?;
    let mut out = Vec::with_capacity(usize::try_from(claimed).unwrap_or(0));
    (&mut dec)
        .take(claimed + 1)
        .read_to_end(&mut out)
        .map_err(|e| corrupt(e.to_string()))?;
    let got = out.len() as u64;
    if got > claimed {
        return Err(ZstError::Bomb { frame, claimed });
    }
    if got < claimed {
        return Err(ZstError::Short {
            frame,
            got,
            claimed,
        });
    }
    drop(dec);
    if !input.is_empty() {
        return Err(corrupt(format!(
            "{} bytes follow the frame's end",
            input.len()
        )));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test sizes are small
mod tests {
    use super::*;

    /// A compressed file in the format: frames stored as zstd raw blocks (ruzstd's
    /// encoder is not used; a raw-block frame is valid zstd).
    pub(crate) fn raw_frame(data: &[u8]) -> Vec<u8> {
        // Frame header: magic, descriptor (single segment, 4-byte content size).
        let mut f = vec![0x28, 0xB5, 0x2F, 0xFD, 0b1010_0000];
        f.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
        let mut chunks = data.chunks(128 << 10).peekable();
        if data.is_empty() {
            f.extend_from_slice(&[1, 0, 0]);
        }
        while let Some(c) = chunks.next() {
            let last = u32::from(chunks.peek().is_none());
            let h = last | (u32::try_from(c.len()).unwrap() << 3);
            f.extend_from_slice(&h.to_le_bytes()[..3]);
            f.extend_from_slice(c);
        }
        f
    }

    fn file(image: &[u8], frame_raw: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut entries = Vec::new();
        for c in image.chunks(frame_raw) {
            let f = raw_frame(c);
            entries.push((f.len() as u32, c.len() as u32));
            out.extend_from_slice(&f);
        }
        out.extend_from_slice(&encode_table(&entries));
        out
    }

    fn parse(f: &[u8], raw_len: u64) -> Result<SeekTable, ZstError> {
        let tl = table_len(&f[f.len() - 9..], f.len() as u64)?;
        SeekTable::parse(&f[f.len() - tl as usize..], f.len() as u64, raw_len, 4096)
    }

    #[test]
    fn a_table_round_trips_and_frames_decode_to_the_image() {
        let image: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        let f = file(&image, 65536);
        let t = parse(&f, image.len() as u64).unwrap();
        assert_eq!(t.frames(), 10);
        assert_eq!(t.file_len(), f.len() as u64);
        let last = t.frame(9).unwrap();
        assert_eq!((last.raw_offset, last.raw_len), (589_824, 10_176));
        assert_eq!(t.frame_at(70_000).unwrap().index, 1);
        let mut back = Vec::new();
        for i in 0..t.frames() {
            let fr = t.frame(i).unwrap();
            let bytes = &f[fr.offset as usize..(fr.offset + fr.len) as usize];
            back.extend(decode_frame(i, bytes, fr.raw_len).unwrap());
        }
        assert_eq!(back, image);
    }

    #[test]
    fn a_table_of_another_image_or_a_broken_one_is_refused() {
        let image = vec![7u8; 200_000];
        let f = file(&image, 65536);
        assert!(matches!(
            parse(&f, 100_000),
            Err(ZstError::OtherImage { .. })
        ));
        for at in [
            f.len() - 1,
            f.len() - 5,
            f.len() - 9,
            f.len() - 12,
            f.len() - 41,
        ] {
            let mut g = f.clone();
            g[at] ^= 0x40;
            assert!(parse(&g, 200_000).is_err(), "flip at {at} accepted");
        }
        // Frames of a size that is not a multiple of the block.
        assert!(matches!(
            parse(&file(&image, 5000), 200_000),
            Err(ZstError::Table(_))
        ));
        assert!(table_len(&[0; 9], 100).is_err());
    }

    /// Regression (decompression bomb): a frame that holds more than the table says is
    /// refused, and decoding stops one byte past the claim.
    #[test]
    fn a_decompression_bomb_frame_is_refused() {
        let f = raw_frame(&[0u8; 200_000]);
        let e = decode_frame(3, &f, 4096).unwrap_err();
        assert_eq!(
            e,
            ZstError::Bomb {
                frame: 3,
                claimed: 4096
            }
        );
        assert_eq!(
            e.to_string(),
            "frame 3 decompresses to more than its 4096 bytes: refused"
        );
        assert!(matches!(
            decode_frame(0, &raw_frame(&[1; 100]), 4096),
            Err(ZstError::Short { got: 100, .. })
        ));
        assert!(matches!(
            decode_frame(0, b"not zstd", 4096),
            Err(ZstError::Corrupt { .. })
        ));
        let mut two = raw_frame(&[1; 100]);
        two.extend(raw_frame(&[1; 100]));
        assert!(matches!(
            decode_frame(0, &two, 100),
            Err(ZstError::Corrupt { .. })
        ));
    }
}

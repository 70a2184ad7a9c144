//! Target `zst_frames`: bytes as a compressed form `IMAGE.img.zst` (docs/FORMATS.md) of an
//! image of a given length: its seekable footer, its seek table, then every frame decoded
//! with its bound (stele_engine::delta::zst). Nothing may panic; what parses must describe
//! exactly the image's length, and a decoded frame is exactly as long as its entry says.
//!
//! Input: the image length (u64, little-endian), then the compressed file.

use stele_engine::delta::zst::{
    decode_frame, encode_table, table_len, SeekTable, ZstError, FRAME_RAW,
};

use crate::Seed;

pub const STAGES: &[&str] = &[
    "seekable footer",
    "seek table",
    "first frame",
    "every frame",
];

/// Frames decoded at most (a long table is still parsed whole).
const MAX_FRAMES: u64 = 16;

fn decode(data: &[u8]) -> (u64, &[u8]) {
    let mut len = [0u8; 8];
    let head = data.get(..8).unwrap_or(&[]);
    len[..head.len()].copy_from_slice(head);
    (u64::from_le_bytes(len), data.get(8..).unwrap_or(&[]))
}

/// How far `data` gets; the target's assertions on the way.
fn walk(data: &[u8]) -> usize {
    let (raw_len, file) = decode(data);
    let len = file.len() as u64;
    let Some(footer) = file.len().checked_sub(9).map(|at| &file[at..]) else {
        return 0;
    };
    let Ok(tl) = table_len(footer, len) else {
        return 0;
    };
    let Ok(start) = usize::try_from(len - tl) else {
        return 0;
    };
    let t = match SeekTable::parse(&file[start..], len, raw_len, 4096) {
        Ok(t) => t,
        Err(_) => return 1,
    };
    assert_eq!(t.file_len(), len, "the table does not cover the file");
    let mut raw = 0u64;
    for i in 0..t.frames() {
        let f = t.frame(i).expect("a frame of the table");
        assert_eq!(f.raw_offset, raw, "frames leave a gap");
        assert!(f.raw_len <= FRAME_RAW && f.raw_len > 0);
        raw += f.raw_len;
        if i >= MAX_FRAMES {
            continue;
        }
        let (a, b) = (
            usize::try_from(f.offset).expect("offset"),
            usize::try_from(f.offset + f.len).expect("end"),
        );
        match decode_frame(i, &file[a..b], f.raw_len) {
            Ok(out) => assert_eq!(out.len() as u64, f.raw_len, "frame {i}"),
            Err(ZstError::Bomb { claimed, .. }) => {
                assert_eq!(claimed, f.raw_len);
                return if i == 0 { 2 } else { 3 };
            }
            Err(_) => return if i == 0 { 2 } else { 3 },
        }
    }
    assert_eq!(raw, raw_len, "the frames do not add up to the image");
    4
}

pub fn run(data: &[u8]) {
    walk(data);
}

pub fn depth(data: &[u8]) -> usize {
    walk(data)
}

/// A zstd frame of raw blocks holding `data`.
pub(crate) fn raw_frame(data: &[u8]) -> Vec<u8> {
    let mut f = vec![0x28, 0xB5, 0x2F, 0xFD, 0xA0];
    f.extend_from_slice(&u32::try_from(data.len()).unwrap_or(0).to_le_bytes());
    let mut chunks = data.chunks(128 << 10).peekable();
    while let Some(c) = chunks.next() {
        let h = u32::from(chunks.peek().is_none()) | (u32::try_from(c.len()).unwrap_or(0) << 3);
        f.extend_from_slice(&h.to_le_bytes()[..3]);
        f.extend_from_slice(c);
    }
    f
}

/// A zstd frame of `blocks` RLE blocks of 128 KiB of `byte` (no content size): a few bytes
/// that decode to `blocks` × 128 KiB.
pub(crate) fn rle_frame(byte: u8, blocks: u32) -> Vec<u8> {
    // Descriptor: no content size, a window descriptor (8 MiB window).
    let mut f = vec![0x28, 0xB5, 0x2F, 0xFD, 0x00, 0x58];
    for k in 0..blocks {
        let h = u32::from(k + 1 == blocks) | (1 << 1) | ((128u32 << 10) << 3);
        f.extend_from_slice(&h.to_le_bytes()[..3]);
        f.push(byte);
    }
    f
}

fn file(frames: &[(Vec<u8>, u32)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut entries = Vec::new();
    for (f, raw) in frames {
        entries.push((u32::try_from(f.len()).unwrap_or(0), *raw));
        out.extend_from_slice(f);
    }
    out.extend_from_slice(&encode_table(&entries));
    out
}

fn encode(raw_len: u64, file: &[u8]) -> Vec<u8> {
    let mut v = raw_len.to_le_bytes().to_vec();
    v.extend_from_slice(file);
    v
}

pub fn seeds() -> Vec<Seed> {
    let image: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    let frames: Vec<(Vec<u8>, u32)> = image
        .chunks(262_144)
        .map(|c| (raw_frame(c), u32::try_from(c.len()).unwrap_or(0)))
        .collect();
    let good = file(&frames);
    let mut out = vec![
        Seed::new("valid-3-frames", encode(600_000, &good)),
        Seed::new("other-image-length", encode(500_000, &good)),
        Seed::new(
            "one-rle-frame",
            encode(262_144, &file(&[(rle_frame(7, 2), 262_144)])),
        ),
        Seed::new(
            "bomb-64-MiB",
            encode(262_144, &file(&[(rle_frame(0, 512), 262_144)])),
        ),
        Seed::new(
            "short-frame",
            encode(262_144, &file(&[(raw_frame(&[1; 1000]), 262_144)])),
        ),
        Seed::new(
            "bomb-in-second-frame",
            encode(
                524_288,
                &file(&[frames[0].clone(), (rle_frame(0, 512), 262_144)]),
            ),
        ),
        Seed::new("no-table", encode(600_000, &good[..good.len() - 30])),
        Seed::new("empty", encode(0, &[])),
    ];
    let mut flipped = good.clone();
    let at = flipped.len() - 20;
    flipped[at] ^= 0x10;
    out.push(Seed::new("table-entry-flipped", encode(600_000, &flipped)));
    out
}

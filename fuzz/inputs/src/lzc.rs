//! Target `lzc_frames`: bytes as a chained form `IMAGE.img.lzc` (docs/FORMATS.md "The
//! chained form") of an image of a given length: its table, then its frames decoded in a
//! run by one [`ChainDecoder`] from frame 0, and the second frame again by a decoder
//! primed with zeros (stele_engine::delta::lzc). Nothing may panic; what parses describes
//! exactly the image's length, and a decoded frame is exactly as long as its entry says.
//!
//! Input: the image length (u64, little-endian), then the chained file.

use stele_engine::delta::lzc::{
    parse_table, prime_range, ChainDecoder, FRAME_RAW, LZC, MAX_FRAME_COMPRESSED,
};
use stele_engine::delta::zst::{encode_table_of, table_len_of, Frame};

use crate::Seed;

pub const STAGES: &[&str] = &["table footer", "table", "first frame", "every frame"];

/// Frames decoded at most (a long table is still parsed whole).
const MAX_FRAMES: u64 = 8;

fn decode(data: &[u8]) -> (u64, &[u8]) {
    let mut len = [0u8; 8];
    let head = data.get(..8).unwrap_or(&[]);
    len[..head.len()].copy_from_slice(head);
    (u64::from_le_bytes(len), data.get(8..).unwrap_or(&[]))
}

fn bytes_of<'a>(file: &'a [u8], f: &Frame) -> &'a [u8] {
    let a = usize::try_from(f.offset).expect("offset");
    let b = usize::try_from(f.offset + f.len).expect("end");
    &file[a..b]
}

/// One frame through `d`: its decoded length checked; false when refused.
fn one(d: &mut ChainDecoder, file: &[u8], f: &Frame) -> bool {
    assert!(f.len <= MAX_FRAME_COMPRESSED && f.raw_len <= FRAME_RAW && f.raw_len > 0);
    match d.decode(f, bytes_of(file, f).to_vec()) {
        Ok(out) => {
            assert_eq!(out.len() as u64, f.raw_len, "frame {}", f.index);
            true
        }
        Err(_) => false,
    }
}

/// How far `data` gets; the target's assertions on the way.
fn walk(data: &[u8]) -> usize {
    let (raw_len, file) = decode(data);
    let len = file.len() as u64;
    let Some(footer) = file.len().checked_sub(9).map(|at| &file[at..]) else {
        return 0;
    };
    let Ok(tl) = table_len_of(&LZC, footer, len) else {
        return 0;
    };
    let Ok(start) = usize::try_from(len - tl) else {
        return 0;
    };
    let t = match parse_table(&file[start..], len, raw_len, 4096) {
        Ok(t) => t,
        Err(_) => return 1,
    };
    assert_eq!(t.file_len(), len, "the table does not cover the file");
    let mut raw = 0u64;
    for i in 0..t.frames() {
        let f = t.frame(i).expect("a frame of the table");
        assert_eq!(f.raw_offset, raw, "frames leave a gap");
        raw += f.raw_len;
    }
    assert_eq!(raw, raw_len, "the frames do not add up to the image");
    if let Some(f1) = t.frame(1) {
        let prime = vec![0u8; usize::try_from(prime_range(&f1).1).expect("prime")];
        let mut d = ChainDecoder::new(&f1, &prime).expect("primed with its length");
        one(&mut d, file, &f1);
    }
    let first = t.frame(0).expect("a table has a frame");
    let mut d = ChainDecoder::new(&first, &[]).expect("frame 0 needs no priming");
    for i in 0..t.frames().min(MAX_FRAMES) {
        let f = t.frame(i).expect("a frame of the table");
        if !one(&mut d, file, &f) {
            return if i == 0 { 2 } else { 3 };
        }
    }
    4
}

pub fn run(data: &[u8]) {
    walk(data);
}

pub fn depth(data: &[u8]) -> usize {
    walk(data)
}

/// A frame of LZMA2 uncompressed chunks holding `data` (the first resets the dictionary
/// when `first`), then the end marker.
fn stored(data: &[u8], first: bool) -> Vec<u8> {
    let mut f = Vec::new();
    for (k, c) in data.chunks(64 << 10).enumerate() {
        f.push(if first && k == 0 { 0x01 } else { 0x02 });
        f.extend_from_slice(&u16::try_from(c.len() - 1).unwrap_or(0).to_be_bytes());
        f.extend_from_slice(c);
    }
    f.push(0);
    f
}

fn file(frames: &[(Vec<u8>, u32)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut entries = Vec::new();
    for (f, raw) in frames {
        entries.push((u32::try_from(f.len()).unwrap_or(0), *raw));
        out.extend_from_slice(f);
    }
    out.extend_from_slice(&encode_table_of(&LZC, &entries));
    out
}

fn encode(raw_len: u64, file: &[u8]) -> Vec<u8> {
    let mut v = raw_len.to_le_bytes().to_vec();
    v.extend_from_slice(file);
    v
}

pub fn seeds() -> Vec<Seed> {
    let fr = usize::try_from(FRAME_RAW).unwrap_or(1 << 20);
    let image: Vec<u8> = (0..fr + 12_288)
        .map(|i| u8::try_from(i % 251).unwrap_or(0))
        .collect();
    let frames: Vec<(Vec<u8>, u32)> = image
        .chunks(fr)
        .enumerate()
        .map(|(k, c)| (stored(c, k == 0), u32::try_from(c.len()).unwrap_or(0)))
        .collect();
    let n = image.len() as u64;
    let good = file(&frames);
    let mut out = vec![
        Seed::new("valid-2-frames", encode(n, &good)),
        Seed::new("other-image-length", encode(n - 4096, &good)),
        Seed::new(
            "bomb-first-frame",
            encode(4096, &file(&[(stored(&[0; 200_000], true), 4096)])),
        ),
        Seed::new(
            "short-frame",
            encode(8192, &file(&[(stored(&[1; 1000], true), 8192)])),
        ),
        Seed::new(
            "no-dictionary-reset",
            encode(4096, &file(&[(stored(&[1; 4096], false), 4096)])),
        ),
        Seed::new(
            "bomb-second-frame",
            encode(
                n,
                &file(&[frames[0].clone(), (stored(&[0; 200_000], false), 12_288)]),
            ),
        ),
        Seed::new("no-table", encode(n, &good[..good.len() - 30])),
        Seed::new("empty", encode(0, &[])),
    ];
    let mut flipped = good.clone();
    let at = flipped.len() - 20;
    flipped[at] ^= 0x10;
    out.push(Seed::new("table-entry-flipped", encode(n, &flipped)));
    let mut body = good;
    body[0] ^= 0x80;
    out.push(Seed::new("first-chunk-header-flipped", encode(n, &body)));
    out
}

//! Target `delta_frames`: bytes as a published delta `NEW.img.from-<hex>.delta`
//! (docs/FORMATS.md) over a running slot of given bytes: its trailer, its index (and
//! whether its frames and copy runs tile the image), then every frame decoded against the old blocks it names, with its bound
//! (stele_engine::delta::published). Nothing may panic; what parses adds up to the file,
//! and a decoded frame is exactly as long as its entry says.
//!
//! Input: the old bytes' length (u32, little-endian), the old bytes, then the delta file.

use stele_engine::delta::published::{
    decode_patch, encode_index, index_len, CopyRun, DeltaIndex, PatchError, PatchFrame, Piece,
    MAX_OUT, TRAILER_LEN,
};

use crate::zst::{raw_frame, rle_frame};
use crate::Seed;

pub const STAGES: &[&str] = &["trailer", "index", "first frame", "every frame"];

/// Frames decoded at most (a long index is still parsed whole).
const MAX_FRAMES: usize = 16;

fn decode(data: &[u8]) -> (&[u8], &[u8]) {
    let mut n = [0u8; 4];
    let head = data.get(..4).unwrap_or(&[]);
    n[..head.len()].copy_from_slice(head);
    let n = u32::from_le_bytes(n) as usize;
    let rest = data.get(4..).unwrap_or(&[]);
    let n = n.min(rest.len());
    (&rest[..n], &rest[n..])
}

/// How far `data` gets; the target's assertions on the way.
fn walk(data: &[u8]) -> usize {
    let (old, file) = decode(data);
    let len = file.len() as u64;
    let Some(trailer) = file.len().checked_sub(TRAILER_LEN).map(|at| &file[at..]) else {
        return 0;
    };
    let Ok(il) = index_len(trailer) else {
        return 0;
    };
    let Some(start) = len.checked_sub(il).and_then(|s| usize::try_from(s).ok()) else {
        return 1;
    };
    let idx = match DeltaIndex::parse(&file[start..], len) {
        Ok(i) => i,
        Err(_) => return 1,
    };
    assert_eq!(idx.file_len(), len, "the index does not cover the file");
    let bs = idx.block_size;
    // Whether the frames and copy runs give every block up to the last one named.
    let end = idx
        .frames
        .iter()
        .map(|f| f.first + f.blocks)
        .chain(idx.runs.iter().map(|r| r.first + r.blocks))
        .max()
        .unwrap_or(0);
    if let Ok(pieces) = idx.pieces(end) {
        let given: u64 = pieces
            .iter()
            .map(|p| match p {
                Piece::Frame(k) => idx.frames[*k].blocks,
                Piece::Run(r) => r.blocks,
            })
            .sum();
        assert_eq!(given, end, "the pieces do not tile the image");
    }
    let mut depth = 2;
    for (k, f) in idx.frames.iter().enumerate().take(MAX_FRAMES) {
        assert!(f.blocks * bs <= MAX_OUT && f.blocks > 0);
        let (a, b) = (
            usize::try_from(f.offset).expect("offset"),
            usize::try_from(f.offset + f.len).expect("end"),
        );
        let r0 = usize::try_from(f.ref_first.saturating_mul(bs)).unwrap_or(usize::MAX);
        let r1 = usize::try_from(f.ref_blocks.saturating_mul(bs)).unwrap_or(usize::MAX);
        let reference = old.get(r0..r0.saturating_add(r1)).unwrap_or(&[]);
        match decode_patch(f, &file[a..b], reference, bs) {
            Ok(out) => assert_eq!(out.len() as u64, f.blocks * bs, "frame {k}"),
            Err(PatchError::Bomb { claimed, .. }) => {
                assert_eq!(claimed, f.blocks * bs);
                return if k == 0 { 2 } else { 3 };
            }
            Err(_) => return if k == 0 { 2 } else { 3 },
        }
        depth = if k == 0 { 3 } else { 4 };
    }
    depth
}

pub fn run(data: &[u8]) {
    walk(data);
}

pub fn depth(data: &[u8]) -> usize {
    walk(data)
}

fn delta(frames: &[(Vec<u8>, u64, u64, u64)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut index = Vec::new();
    let mut runs = Vec::new();
    let mut first = 0;
    for (k, (body, blocks, ref_first, ref_blocks)) in frames.iter().enumerate() {
        index.push(PatchFrame {
            index: k as u64,
            offset: 0,
            len: body.len() as u64,
            first,
            blocks: *blocks,
            ref_first: *ref_first,
            ref_blocks: *ref_blocks,
        });
        // The 3 blocks after each frame: copied, then zero.
        runs.push(CopyRun {
            first: first + blocks,
            blocks: 2,
            from: Some(*ref_first),
        });
        runs.push(CopyRun {
            first: first + blocks + 2,
            blocks: 1,
            from: None,
        });
        first += blocks + 3;
        out.extend_from_slice(body);
    }
    out.extend(encode_index(
        4096,
        1 << 24,
        &[1; 32],
        &[2; 32],
        &index,
        &runs,
    ));
    out
}

fn encode(old: &[u8], file: &[u8]) -> Vec<u8> {
    let mut v = u32::try_from(old.len()).unwrap_or(0).to_le_bytes().to_vec();
    v.extend_from_slice(old);
    v.extend_from_slice(file);
    v
}

pub fn seeds() -> Vec<Seed> {
    let old: Vec<u8> = (0..40_960u32).map(|i| (i % 253) as u8).collect();
    let good = delta(&[
        (raw_frame(&old[..8192]), 2, 0, 4),
        (raw_frame(&old[4096..16384]), 3, 2, 8),
    ]);
    let mut out = vec![
        Seed::new("valid-2-frames", encode(&old, &good)),
        Seed::new("no-old-bytes", encode(&[], &good)),
        Seed::new(
            "bomb-64-MiB",
            encode(&old, &delta(&[(rle_frame(0, 512), 2, 0, 2)])),
        ),
        Seed::new(
            "short-frame",
            encode(&old, &delta(&[(raw_frame(&[1; 1000]), 1, 0, 1)])),
        ),
        Seed::new(
            "bomb-in-second-frame",
            encode(
                &old,
                &delta(&[
                    (raw_frame(&old[..4096]), 1, 0, 1),
                    (rle_frame(0, 512), 2, 0, 2),
                ]),
            ),
        ),
        Seed::new("no-trailer", encode(&old, &good[..good.len() - 40])),
        Seed::new("empty", encode(&[], &[])),
    ];
    let mut flipped = good.clone();
    // The last copy run's reserved field (the 4 bytes before the trailer): refused.
    let at = flipped.len() - TRAILER_LEN - 2;
    flipped[at] ^= 0x10;
    out.push(Seed::new("index-entry-flipped", encode(&old, &flipped)));
    out
}

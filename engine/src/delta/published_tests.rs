//! Tests of the published delta's format: the index round-trips and refuses what does not
//! add up, frames compressed by libzstd against a prefix decode with ruzstd against the
//! same reference, and a frame that gives more than its claim is refused as a bomb.

#![allow(clippy::cast_possible_truncation)] // test sizes are small

use super::*;

/// A frame as the build side writes it: libzstd, level 19, `reference` as a raw prefix.
pub(crate) fn patch(reference: &[u8], data: &[u8]) -> Vec<u8> {
    use zstd::zstd_safe::{CCtx, CParameter};
    let mut c = CCtx::create();
    c.set_parameter(CParameter::CompressionLevel(19)).unwrap();
    c.set_parameter(CParameter::ChecksumFlag(false)).unwrap();
    c.set_parameter(CParameter::ContentSizeFlag(true)).unwrap();
    c.set_parameter(CParameter::WindowLog(24)).unwrap();
    c.ref_prefix(reference).unwrap();
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
    c.compress2(&mut out, data).unwrap();
    out
}

/// Bytes that do not compress by themselves (a xorshift stream).
pub(crate) fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn frame(blocks: u64, len: u64, ref_blocks: u64) -> PatchFrame {
    PatchFrame {
        index: 0,
        offset: 0,
        len,
        first: 0,
        blocks,
        ref_first: 0,
        ref_blocks,
    }
}

#[test]
fn a_frame_patched_against_its_old_version_decodes_with_ruzstd_and_is_small() {
    let old = noise(3 << 20, 5);
    let mut new = old[1 << 20..2 << 20].to_vec();
    for i in (0..new.len()).step_by(50_000) {
        new[i] ^= 0x55;
    }
    let f = patch(&old, &new);
    assert!(f.len() < 20_000, "{} bytes for 21 changed bytes", f.len());
    let fr = frame(256, f.len() as u64, 768);
    assert_eq!(decode_patch(&fr, &f, &old, 4096).unwrap(), new);
    // Without a reference (new data): still a plain zstd frame.
    let plain = patch(&[], &new[..8192]);
    assert_eq!(
        decode_patch(&frame(2, plain.len() as u64, 0), &plain, &[], 4096).unwrap(),
        new[..8192]
    );
    // Against another reference the output differs (the tree check refuses it) or the
    // frame is refused: never a panic.
    let other = noise(3 << 20, 6);
    if let Ok(out) = decode_patch(&fr, &f, &other, 4096) {
        assert_ne!(out, new);
    }
}

/// Regression (decompression bomb): a delta frame that holds more than its index entry
/// says is refused with one line.
#[test]
fn a_decompression_bomb_delta_frame_is_refused() {
    let f = patch(&[], &vec![0u8; 1 << 20]);
    let e = decode_patch(&frame(1, f.len() as u64, 0), &f, &[], 4096).unwrap_err();
    assert_eq!(
        e,
        PatchError::Bomb {
            frame: 0,
            claimed: 4096
        }
    );
    assert_eq!(
        e.to_string(),
        "delta frame 0 decompresses to more than its 4096 bytes: refused"
    );
    assert!(matches!(
        decode_patch(&frame(2, 10, 0), b"not zstd!!", &[], 4096),
        Err(PatchError::Corrupt { .. })
    ));
    let mut two = f.clone();
    two.extend_from_slice(&f);
    assert!(decode_patch(&frame(256, two.len() as u64, 0), &two, &[], 4096).is_err());
}

#[test]
fn an_index_round_trips_and_refuses_what_does_not_add_up() {
    let frames = [
        PatchFrame {
            index: 0,
            offset: 0,
            len: 100,
            first: 3,
            blocks: 2,
            ref_first: 1,
            ref_blocks: 10,
        },
        PatchFrame {
            index: 1,
            offset: 0,
            len: 50,
            first: 9,
            blocks: 256,
            ref_first: 0,
            ref_blocks: 0,
        },
    ];
    let runs = [
        CopyRun {
            first: 0,
            blocks: 3,
            from: Some(7),
        },
        CopyRun {
            first: 5,
            blocks: 4,
            from: None,
        },
    ];
    let idx = encode_index(4096, 1 << 20, &[1; 32], &[2; 32], &frames, &runs);
    let file_len = idx.len() as u64 + 150;
    assert_eq!(index_len(&idx[idx.len() - 96..]).unwrap(), idx.len() as u64);
    let d = DeltaIndex::parse(&idx, file_len).unwrap();
    assert_eq!(d.frames.len(), 2);
    assert_eq!(d.frames[1].offset, 100);
    assert_eq!(d.file_len(), file_len);
    assert_eq!(d.runs, runs);
    // Frames and runs tile the 265 blocks: the delta can be written without the tree.
    assert_eq!(
        d.pieces(265).unwrap(),
        vec![
            Piece::Run(runs[0]),
            Piece::Frame(0),
            Piece::Run(runs[1]),
            Piece::Frame(1)
        ]
    );
    assert!(d.pieces(266).unwrap_err().contains("block 265"));
    assert!(d.pieces(200).is_err());
    let mut gap = d.clone();
    gap.runs[1].blocks = 3;
    assert_eq!(gap.pieces(265).unwrap_err(), "nothing in it gives block 8");
    let mut both = d.clone();
    both.runs[1].blocks = 5;
    assert!(both.pieces(265).unwrap_err().contains("both give block 9"));
    assert!(d.check(&[1; 32], &[2; 32], 1 << 20, 265, 4096).is_ok());
    assert!(matches!(
        d.check(&[3; 32], &[2; 32], 1 << 20, 265, 4096),
        Err(PatchError::OtherRelease(_))
    ));
    assert!(d.check(&[1; 32], &[3; 32], 1 << 20, 265, 4096).is_err());
    assert!(d.check(&[1; 32], &[2; 32], 1 << 20, 264, 4096).is_err());
    assert!(DeltaIndex::parse(&idx, file_len + 1).is_err());
    // Every single bit flip in the header's checked fields or an entry is refused or
    // parses to something else; never a panic.
    for at in 0..idx.len() {
        let mut g = idx.clone();
        g[at] ^= 0x80;
        if let Ok(p) = DeltaIndex::parse(&g, file_len) {
            assert_ne!(p, d, "flip at {at} ignored");
        }
    }
    // Overlapping frames.
    let mut bad = frames;
    bad[1].first = 4;
    let idx = encode_index(4096, 1 << 20, &[1; 32], &[2; 32], &bad, &runs);
    assert!(DeltaIndex::parse(&idx, file_len).is_err());
    // Overlapping runs.
    let mut bad = runs;
    bad[1].first = 2;
    let idx = encode_index(4096, 1 << 20, &[1; 32], &[2; 32], &frames, &bad);
    assert!(DeltaIndex::parse(&idx, file_len).is_err());
    assert_eq!(
        suffix(&[0xab; 32]),
        ".from-abababababababab.delta".to_string()
    );
}

/// One decoder kept from frame to frame (as the fetch client keeps it) gives what a fresh
/// one gives, whatever came before: another reference, no reference, a refused bomb.
#[test]
fn a_kept_decoder_decodes_each_frame_as_a_fresh_one() {
    let old = noise(3 << 20, 5);
    let mut a = old[..1 << 20].to_vec();
    a[7] ^= 1;
    let mut b = old[2 << 20..].to_vec();
    b[70_000] ^= 2;
    let fa = patch(&old[..2 << 20], &a);
    let fb = patch(&old[1 << 20..], &b);
    let plain = patch(&[], &a[..8192]);
    let bomb = patch(&[], &vec![0u8; 1 << 20]);
    let mut kept = PatchDecoder::default();
    // (the frame, its reference, its blocks, what it decodes to; None: a refused bomb)
    type Step<'a> = (&'a [u8], &'a [u8], u64, Option<&'a [u8]>);
    let steps: [Step<'_>; 5] = [
        (&fa, &old[..2 << 20], 256, Some(&a)),
        (&bomb, &[], 1, None),
        (&fb, &old[1 << 20..], 256, Some(&b)),
        (&plain, &[], 2, Some(&a[..8192])),
        (&fa, &old[..2 << 20], 256, Some(&a)),
    ];
    for (k, (bytes, reference, blocks, want)) in steps.into_iter().enumerate() {
        let f = PatchFrame {
            index: k as u64,
            ..frame(blocks, bytes.len() as u64, reference.len() as u64 / 4096)
        };
        let got = kept.decode(&f, bytes, reference, 4096).map(<[u8]>::to_vec);
        assert_eq!(got, decode_patch(&f, bytes, reference, 4096), "step {k}");
        match want {
            Some(w) => assert_eq!(got.unwrap(), w, "step {k}"),
            None => assert!(matches!(got, Err(PatchError::Bomb { .. })), "step {k}"),
        }
    }
}

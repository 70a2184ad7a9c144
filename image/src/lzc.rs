//! Writes the chained LZMA2 form of a slot image, `IMAGE.img.lzc` (the format and its
//! decoder are the engine's `stele_engine::delta::lzc`, docs/FORMATS.md "The chained
//! form"): frame k is the image's bytes `[k * FRAME_RAW, (k + 1) * FRAME_RAW)` as a raw
//! LZMA2 stream at [`PRESET`] with a [`DICT`] window, primed with the [`DICT`] bytes before
//! it; then the seek table. Reproducible: each frame depends only on the image (frames
//! are compressed apart, on as many threads as there are cores, and written in order).

use std::io::Write;

use lzma_rust2::{Lzma2Options, Lzma2Writer};
use stele_engine::delta::lzc::{DICT, FRAME_RAW, LZC};
use stele_engine::delta::zst::encode_table_of;

/// The LZMA2 preset of the frames (xz's -9: the BT4 match finder, the longest matches);
/// the dictionary is [`DICT`], not the preset's 64 MiB.
pub const PRESET: u32 = 9;

/// Frame `k` of `image`: its bytes as a raw LZMA2 stream primed with the [`DICT`] bytes
/// before it (the decoder's `prime_range`). Pure.
pub fn frame(image: &[u8], k: usize) -> std::io::Result<Vec<u8>> {
    let fr = usize::try_from(FRAME_RAW).unwrap_or(usize::MAX);
    let dict = usize::try_from(DICT).unwrap_or(usize::MAX);
    let start = k.saturating_mul(fr).min(image.len());
    let end = start.saturating_add(fr).min(image.len());
    let mut o = Lzma2Options::with_preset(PRESET);
    o.lzma_options.dict_size = u32::try_from(DICT).unwrap_or(u32::MAX);
    if start > 0 {
        o.lzma_options.preset_dict = Some(image[start.saturating_sub(dict)..start].to_vec());
    }
    let mut w = Lzma2Writer::new(Vec::new(), o);
    w.write_all(&image[start..end])?;
    w.finish()
}

/// The chained form of an image, whole: frames, then the table; and every frame's
/// (compressed, raw) length.
pub type Encoded = (Vec<u8>, Vec<(u32, u32)>);

/// The chained form of `image` ([`Encoded`]). Frames are compressed on `threads` threads.
pub fn encode(image: &[u8], threads: usize) -> std::io::Result<Encoded> {
    let fr = usize::try_from(FRAME_RAW).unwrap_or(usize::MAX);
    let n = image.len().div_ceil(fr);
    let per = n.div_ceil(threads.max(1)).max(1);
    let ks: Vec<usize> = (0..n).collect();
    let parts: Vec<std::io::Result<Vec<Vec<u8>>>> = std::thread::scope(|s| {
        let hs: Vec<_> = ks
            .chunks(per)
            .map(|group| s.spawn(move || group.iter().map(|&k| frame(image, k)).collect()))
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("a thread panicked")))
            })
            .collect()
    });
    let mut out = Vec::new();
    let mut entries = Vec::with_capacity(n);
    let mut k = 0;
    for p in parts {
        for f in p? {
            let raw = (image.len() - k * fr).min(fr);
            let too_big = |_| std::io::Error::other("a frame over 4 GiB");
            entries.push((
                u32::try_from(f.len()).map_err(too_big)?,
                u32::try_from(raw).map_err(too_big)?,
            ));
            out.extend_from_slice(&f);
            k += 1;
        }
    }
    out.extend_from_slice(&encode_table_of(&LZC, &entries));
    Ok((out, entries))
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test sizes are small
mod tests {
    use super::*;
    use stele_engine::delta::lzc::{parse_table, prime_range, ChainDecoder};
    use stele_engine::delta::zst::{table_len_of, SeekTable, ZstError};

    /// An image whose later frames repeat, far apart, what earlier frames hold (as a
    /// filesystem repeats a library's pages): only a window reaching back finds them.
    fn image(len: usize) -> Vec<u8> {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let seed: Vec<u8> = (0..(640 << 10))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 56) as u8
            })
            .collect();
        (0..len).map(|i| seed[i % seed.len()]).collect()
    }

    fn table(file: &[u8], raw_len: u64) -> Result<SeekTable, ZstError> {
        let n = file.len() as u64;
        let tl = table_len_of(&LZC, &file[file.len() - 9..], n)?;
        parse_table(&file[(n - tl) as usize..], n, raw_len, 4096)
    }

    fn bytes_of(file: &[u8], t: &SeekTable, i: u64) -> Vec<u8> {
        let f = t.frame(i).unwrap();
        file[f.offset as usize..(f.offset + f.len) as usize].to_vec()
    }

    /// The form decodes to the image, frame after frame with one decoder, and from any
    /// frame with a decoder primed from the image before it (a resume, a partial
    /// update); the window reaches back across frames, so the repeats cost almost
    /// nothing.
    #[test]
    fn the_chained_form_decodes_in_a_run_and_from_any_primed_frame() {
        let img = image((3 << 20) + 8192);
        let (file, entries) = encode(&img, 2).unwrap();
        assert_eq!(entries.len(), 4);
        assert!(
            file.len() < (640 << 10) + (64 << 10),
            "{} bytes: the window did not reach the repeats",
            file.len()
        );
        let t = table(&file, img.len() as u64).unwrap();
        assert_eq!(t.file_len(), file.len() as u64);
        let first = t.frame(0).unwrap();
        let mut d = ChainDecoder::new(&first, &[]).unwrap();
        let mut back = Vec::new();
        for i in 0..t.frames() {
            let f = t.frame(i).unwrap();
            assert!(d.continues(i));
            back.extend(d.decode(&f, bytes_of(&file, &t, i)).unwrap());
        }
        assert!(back == img, "a run decoded to other bytes");
        for i in [1, 2, 3] {
            let f = t.frame(i).unwrap();
            let (at, len) = prime_range(&f);
            let prime = &img[at as usize..(at + len) as usize];
            // Primed in pieces of any size, as a device streams it from its slot.
            let mut d = ChainDecoder::start(&f);
            for piece in prime.chunks(100_000) {
                d.prime(piece).unwrap();
            }
            let out = d.decode(&f, bytes_of(&file, &t, i)).unwrap();
            assert!(
                out[..] == img[f.raw_offset as usize..(f.raw_offset + f.raw_len) as usize],
                "frame {i} primed decoded to other bytes"
            );
        }
        // Same bytes again: reproducible.
        assert!(encode(&img, 1).unwrap().0 == file);
    }

    /// A tampered frame, a wrong priming, a frame out of turn: refused with the frame
    /// named, never a panic; a table of the .zst form is not a .lzc's.
    #[test]
    fn a_tampered_frame_or_a_wrong_priming_is_refused() {
        let img = image(3 << 20);
        let (file, _) = encode(&img, 2).unwrap();
        let t = table(&file, img.len() as u64).unwrap();
        let f1 = t.frame(1).unwrap();
        let (at, len) = prime_range(&f1);
        let prime = &img[at as usize..(at + len) as usize];
        let mut bad = bytes_of(&file, &t, 1);
        let mid = bad.len() / 2;
        bad[mid] ^= 0x55;
        let r = ChainDecoder::new(&f1, prime).unwrap().decode(&f1, bad);
        match r {
            Ok(out) => assert!(out[..] != img[1 << 20..2 << 20], "a flip went unseen"),
            Err(e) => assert!(e.to_string().contains("frame 1"), "{e}"),
        }
        // Primed with the wrong length; asked for a frame out of turn (refused, the
        // decoder still at its frame); primed with other bytes (the frame's blocks come
        // out wrong, which the signed tree refuses).
        assert!(ChainDecoder::new(&f1, &prime[1..]).is_err());
        let mut d = ChainDecoder::new(&f1, prime).unwrap();
        let f2 = t.frame(2).unwrap();
        let e = d.decode(&f2, bytes_of(&file, &t, 2)).unwrap_err();
        assert!(e.to_string().contains("not primed for this one"), "{e}");
        assert!(d.continues(1));
        let mut other = prime.to_vec();
        other[prime.len() - 10] ^= 1;
        if let Ok(out) = ChainDecoder::new(&f1, &other)
            .unwrap()
            .decode(&f1, bytes_of(&file, &t, 1))
        {
            assert!(
                out[..] != img[1 << 20..2 << 20],
                "another priming went unseen"
            );
        }
        // After a tampered frame the decoder is spent: prime it again.
        let mut bad = bytes_of(&file, &t, 1);
        bad.truncate(bad.len() / 2);
        bad.push(0);
        let mut d = ChainDecoder::new(&f1, prime).unwrap();
        assert!(d.decode(&f1, bad).is_err());
        assert!(!d.continues(1) && !d.continues(2));
        // Without the end marker.
        let mut cut = bytes_of(&file, &t, 1);
        cut.pop();
        assert!(ChainDecoder::new(&f1, prime)
            .unwrap()
            .decode(&f1, cut)
            .is_err());
        let mut zst_table = file.clone();
        let n = zst_table.len();
        zst_table[n - 4..].copy_from_slice(&0x8F92_EAB1u32.to_le_bytes());
        assert!(table(&zst_table, img.len() as u64).is_err());
    }
}

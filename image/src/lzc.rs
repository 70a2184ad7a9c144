//! Writes the chained LZMA2 form of a slot image, `IMAGE.img.lzc` (the format and its
//! decoder are the engine's `stele_engine::delta::lzc`, docs/FORMATS.md "The chained
//! form"): frame k is the image's bytes `[k * FRAME_RAW, (k + 1) * FRAME_RAW)` as a raw
//! LZMA2 stream at [`PRESET`] with a [`DICT`] window, primed with the [`DICT`] bytes before
//! it; then the seek table. Reproducible: each frame depends only on the image (frames
//! are compressed apart, on as many threads as there are cores, and written in order).
//! It costs the build about `DICT / FRAME_RAW + 1` = 5 `xz -9` passes over the image
//! (each frame's encoder takes the 16 MiB before it into its match finder).

use std::io::{Read, Write};
use std::path::Path;

use lzma_rust2::{Lzma2Options, Lzma2Writer};
use stele_engine::delta::lzc::{DICT, FRAME_RAW, LZC, SUFFIX};
use stele_engine::delta::zst::encode_table_of;
use stele_verifier::progress::{Progress, Step};

use crate::zst::ZstReport;

/// The LZMA2 preset of the frames (xz's -9: the BT4 match finder, the longest matches);
/// the dictionary is [`DICT`], not the preset's 64 MiB.
pub const PRESET: u32 = 9;

/// `data` as a raw LZMA2 stream primed with `prime` (the image's bytes before it, at most
/// [`DICT`]). Pure.
pub fn frame_with(prime: &[u8], data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut o = Lzma2Options::with_preset(PRESET);
    o.lzma_options.dict_size = u32::try_from(DICT).unwrap_or(u32::MAX);
    if !prime.is_empty() {
        o.lzma_options.preset_dict = Some(prime.to_vec());
    }
    let mut w = Lzma2Writer::new(Vec::new(), o);
    w.write_all(data)?;
    w.finish()
}

/// Frame `k` of `image`: its bytes as a raw LZMA2 stream primed with the [`DICT`] bytes
/// before it (the decoder's `prime_range`). Pure.
pub fn frame(image: &[u8], k: usize) -> std::io::Result<Vec<u8>> {
    let fr = usize::try_from(FRAME_RAW).unwrap_or(usize::MAX);
    let dict = usize::try_from(DICT).unwrap_or(usize::MAX);
    let start = k.saturating_mul(fr).min(image.len());
    let end = start.saturating_add(fr).min(image.len());
    frame_with(
        &image[start.saturating_sub(dict)..start],
        &image[start..end],
    )
}

/// The chained form of an image, whole: frames, then the table; and every frame's
/// (compressed, raw) length.
pub type Encoded = (Vec<u8>, Vec<(u32, u32)>);

/// The chained form of `image` ([`Encoded`]).
pub fn encode(image: &[u8]) -> std::io::Result<Encoded> {
    let mut out = Vec::new();
    let (_, entries) = compress(
        &mut &image[..],
        image.len() as u64,
        &mut out,
        &mut stele_verifier::progress::Silent,
    )?;
    Ok((out, entries))
}

/// The chained form of everything `image` yields (`raw_len` bytes) into `out`; returns
/// its length and every frame's (compressed, raw) length. Frames are compressed on as
/// many threads as there are cores, a batch at a time; memory: the [`DICT`] before the
/// batch and the batch.
pub fn compress<R: Read, W: Write + ?Sized>(
    image: &mut R,
    raw_len: u64,
    out: &mut W,
    progress: &mut dyn Progress,
) -> std::io::Result<(u64, Vec<(u32, u32)>)> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let fr = usize::try_from(FRAME_RAW).unwrap_or(usize::MAX);
    let dict = usize::try_from(DICT).unwrap_or(usize::MAX);
    let mut step = Step::new(progress, "compressing (lzc)", Some(raw_len));
    let mut entries = Vec::new();
    let mut len = 0u64;
    // `win`: up to DICT bytes of the image before the batch, then the batch.
    let mut win: Vec<u8> = Vec::new();
    loop {
        let before = win.len();
        let want = fr * threads.max(1);
        let got = (&mut *image).take(want as u64).read_to_end(&mut win)?;
        if got == 0 {
            break;
        }
        let starts: Vec<usize> = (before..win.len()).step_by(fr).collect();
        let w = &win;
        let done: Vec<std::io::Result<Vec<u8>>> = std::thread::scope(|s| {
            let hs: Vec<_> = starts
                .iter()
                .map(|&a| {
                    let b = (a + fr).min(w.len());
                    s.spawn(move || frame_with(&w[a.saturating_sub(dict)..a], &w[a..b]))
                })
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(std::io::Error::other("a thread panicked")))
                })
                .collect()
        });
        for (&a, f) in starts.iter().zip(done) {
            let f = f?;
            let raw = (win.len() - a).min(fr);
            let too_big = |_| std::io::Error::other("a frame over 4 GiB");
            entries.push((
                u32::try_from(f.len()).map_err(too_big)?,
                u32::try_from(raw).map_err(too_big)?,
            ));
            out.write_all(&f)?;
            len += f.len() as u64;
        }
        step.advance(got as u64);
        let keep = win.len().saturating_sub(dict);
        win.drain(..keep);
        if got < want {
            break;
        }
    }
    let table = encode_table_of(&LZC, &entries);
    out.write_all(&table)?;
    Ok((len + table.len() as u64, entries))
}

/// The chained form's path beside `image`: `IMAGE.img` → `IMAGE.img.lzc`. Pure.
pub fn path_of(image: &Path) -> std::path::PathBuf {
    crate::zst::path_with(image, SUFFIX)
}

/// Writes the chained form of the slot image `image` beside it (atomically; an existing
/// one only with `force`).
pub fn write_beside(
    image: &Path,
    force: bool,
    progress: &mut dyn Progress,
) -> crate::Result<ZstReport> {
    crate::zst::write_form(&path_of(image), image, force, &mut |src, raw_len, w| {
        compress(src, raw_len, w, progress).map(|(len, e)| (len, e.len() as u64))
    })
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
        let img = image(3 * FRAME_RAW as usize + 8192);
        let (file, entries) = encode(&img).unwrap();
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
        assert!(encode(&img).unwrap().0 == file);
    }

    /// A tampered frame, a wrong priming, a frame out of turn: refused with the frame
    /// named, never a panic; a table of the .zst form is not a .lzc's.
    #[test]
    fn a_tampered_frame_or_a_wrong_priming_is_refused() {
        let img = image(3 * FRAME_RAW as usize);
        let (file, _) = encode(&img).unwrap();
        let t = table(&file, img.len() as u64).unwrap();
        let f1 = t.frame(1).unwrap();
        let (at, len) = prime_range(&f1);
        let prime = &img[at as usize..(at + len) as usize];
        let mut bad = bytes_of(&file, &t, 1);
        let mid = bad.len() / 2;
        bad[mid] ^= 0x55;
        let r = ChainDecoder::new(&f1, prime).unwrap().decode(&f1, bad);
        match r {
            Ok(out) => assert!(
                out[..] != img[FRAME_RAW as usize..2 * FRAME_RAW as usize],
                "a flip went unseen"
            ),
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
                out[..] != img[FRAME_RAW as usize..2 * FRAME_RAW as usize],
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

//! Writes the compressed transfer form of a slot image, `IMAGE.img.zst` (the format is the
//! engine's `stele_engine::delta::zst`, docs/FORMATS.md): independent zstd
//! frames of [`FRAME_RAW`] bytes at [`LEVEL`], then the seek table. Reproducible: the same
//! image gives the same bytes (frames are compressed apart, on as many threads as there
//! are cores, and written in order).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use stele_engine::delta::zst::{encode_table, FRAME_RAW, SUFFIX};
use stele_verifier::progress::{Progress, Step};

use crate::atomic::AtomicFile;
use crate::{Error, Result};

/// The zstd level of the frames (libzstd's highest without --ultra's memory needs on the
/// device: the window never exceeds a frame, 256 KiB).
pub const LEVEL: i32 = 19;

/// Frames compressed per batch (one batch in memory at a time: 8 MiB of image).
const BATCH: usize = 32;

/// What was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZstReport {
    pub path: PathBuf,
    /// Bytes of the compressed form (frames and table).
    pub len: u64,
    /// Bytes of the image.
    pub raw_len: u64,
    pub frames: u64,
}

/// The compressed form's path beside `image`: `IMAGE.img` → `IMAGE.img.zst`. Pure.
pub fn path_of(image: &Path) -> PathBuf {
    path_with(image, SUFFIX)
}

/// `image`'s path with `suffix` added. Pure.
pub fn path_with(image: &Path, suffix: &str) -> PathBuf {
    let mut p = image.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Compresses one frame. Pure.
fn frame(raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut c = zstd::bulk::Compressor::new(LEVEL)?;
    c.include_checksum(false)?;
    c.include_contentsize(true)?;
    c.compress(raw)
}

/// The compressed form of everything `image` yields (`raw_len` bytes) into `out`; returns
/// its length and frame count.
pub fn compress<R: Read, W: Write + ?Sized>(
    image: &mut R,
    raw_len: u64,
    out: &mut W,
    progress: &mut dyn Progress,
) -> std::io::Result<(u64, u64)> {
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let fr = usize::try_from(FRAME_RAW).unwrap_or(1 << 18);
    let mut entries: Vec<(u32, u32)> = Vec::new();
    let mut len = 0u64;
    let mut step = Step::new(progress, "compressing (zstd)", Some(raw_len));
    let mut buf = vec![0u8; fr * BATCH];
    loop {
        let mut got = 0;
        while got < buf.len() {
            match image.read(&mut buf[got..])? {
                0 => break,
                n => got += n,
            }
        }
        if got == 0 {
            break;
        }
        let raws: Vec<&[u8]> = buf[..got].chunks(fr).collect();
        let per = raws.len().div_ceil(threads);
        let done: Vec<std::io::Result<Vec<u8>>> = std::thread::scope(|s| {
            let handles: Vec<_> = raws
                .chunks(per.max(1))
                .map(|group| s.spawn(move || group.iter().map(|r| frame(r)).collect::<Vec<_>>()))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| {
                    h.join().unwrap_or_else(|_| {
                        vec![Err(std::io::Error::other("a compressing thread panicked"))]
                    })
                })
                .collect()
        });
        for (raw, c) in raws.iter().zip(done) {
            let c = c?;
            out.write_all(&c)?;
            len += c.len() as u64;
            let too_big = || std::io::Error::other("a frame does not fit the seek table");
            entries.push((
                u32::try_from(c.len()).map_err(|_| too_big())?,
                u32::try_from(raw.len()).map_err(|_| too_big())?,
            ));
        }
        step.advance(got as u64);
        if got < buf.len() {
            break;
        }
    }
    let table = encode_table(&entries);
    out.write_all(&table)?;
    Ok((len + table.len() as u64, entries.len() as u64))
}

/// Writes the compressed form of the slot image `image` beside it (atomically; an
/// existing one only with `force`).
pub fn write_beside(image: &Path, force: bool, progress: &mut dyn Progress) -> Result<ZstReport> {
    write_form(&path_of(image), image, force, &mut |src, raw_len, w| {
        compress(src, raw_len, w, progress)
    })
}

/// How a form is written: from the image (`raw_len` bytes) to the output; its length
/// and frame count.
pub type Compress<'c> =
    dyn FnMut(&mut File, u64, &mut dyn Write) -> std::io::Result<(u64, u64)> + 'c;

/// Writes a form of the slot image `image` at `path` with `compress` (atomically; an
/// existing one only with `force`): the one writer of the files beside an image.
pub fn write_form(
    path: &Path,
    image: &Path,
    force: bool,
    compress: &mut Compress<'_>,
) -> Result<ZstReport> {
    let mut src = File::open(image).map_err(|e| Error::io("open", image, e))?;
    let raw_len = src
        .metadata()
        .map_err(|e| Error::io("stat", image, e))?
        .len();
    let mut tmp = AtomicFile::output(path, 0o644, force)?;
    let (len, frames) = {
        let mut w = std::io::BufWriter::new(tmp.file());
        let r =
            compress(&mut src, raw_len, &mut w).map_err(|e| Error::io("compress into", path, e))?;
        w.flush().map_err(|e| Error::io("write", path, e))?;
        r
    };
    tmp.commit()?;
    Ok(ZstReport {
        path: path.to_path_buf(),
        len,
        raw_len,
        frames,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stele_engine::delta::zst::{decode_frame, table_len, SeekTable};

    /// The compressed form decodes, frame by frame, to the image, and the same image
    /// gives the same bytes.
    #[test]
    fn the_compressed_form_is_reproducible_and_decodes_to_the_image() {
        let image: Vec<u8> = (0..3_000_000u32)
            .map(|i| (i / 4096 % 13) as u8 ^ (i % 7) as u8)
            .collect();
        let mut a = Vec::new();
        let (len, frames) = compress(
            &mut &image[..],
            image.len() as u64,
            &mut a,
            &mut stele_verifier::progress::Silent,
        )
        .unwrap();
        assert_eq!(len, a.len() as u64);
        assert_eq!(frames, 12);
        let mut b = Vec::new();
        compress(
            &mut &image[..],
            image.len() as u64,
            &mut b,
            &mut stele_verifier::progress::Silent,
        )
        .unwrap();
        assert_eq!(a, b);
        let tl = table_len(&a[a.len() - 9..], a.len() as u64).unwrap();
        let t = SeekTable::parse(
            &a[a.len() - usize::try_from(tl).unwrap()..],
            a.len() as u64,
            image.len() as u64,
            4096,
        )
        .unwrap();
        let mut back = Vec::new();
        for i in 0..t.frames() {
            let f = t.frame(i).unwrap();
            let (s, e) = (
                usize::try_from(f.offset).unwrap(),
                usize::try_from(f.offset + f.len).unwrap(),
            );
            back.extend(decode_frame(i, &a[s..e], f.raw_len).unwrap());
        }
        assert_eq!(back, image);
        // zstd itself reads it whole (the table is a skippable frame).
        assert_eq!(zstd::stream::decode_all(&a[..]).unwrap(), image);
    }
}

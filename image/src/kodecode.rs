//! Compressed kernel modules at build time: the pure-Rust decoders (lzma-rust2, ruzstd,
//! flate2/miniz_oxide) that let `stele initramfs` read a `.ko.xz`, `.ko.zst` or `.ko.gz`
//! module's `.modinfo` (soft dependencies, the watchdog's `nowayout`). The initramfs keeps
//! the compressed file as the distribution shipped it; the kernel decompresses it at load
//! (docs/FORMATS.md, "Initramfs").

use std::io::Read;

use stele_verifier::kmod::ModuleFormat;

/// The largest decompressed module accepted (the largest amd64 module, amdgpu, is about
/// 40 MiB): more is refused rather than filling memory (a bomb).
pub const MAX_MODULE_BYTES: u64 = 256 << 20;

/// Why a compressed module could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not valid {format} data: {why}")]
    Corrupt { format: &'static str, why: String },
    #[error("decompresses to more than {} MiB", MAX_MODULE_BYTES >> 20)]
    TooLarge,
}

/// The module's uncompressed bytes (a plain module as it is). Pure; never panics on any
/// input, never allocates more than [`MAX_MODULE_BYTES`] for the output.
pub fn decode(format: ModuleFormat, data: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let corrupt = |e: std::io::Error| DecodeError::Corrupt {
        format: format.name(),
        why: e.to_string(),
    };
    let limit = MAX_MODULE_BYTES + 1;
    let mut out = Vec::new();
    match format {
        ModuleFormat::Plain => return Ok(data.to_vec()),
        ModuleFormat::Gzip => flate2::read::GzDecoder::new(data)
            .take(limit)
            .read_to_end(&mut out)
            .map_err(corrupt)?,
        ModuleFormat::Xz => lzma_rust2::XzReader::new(data, false)
            .take(limit)
            .read_to_end(&mut out)
            .map_err(corrupt)?,
        ModuleFormat::Zstd => {
            let bad = |why: String| DecodeError::Corrupt {
                format: format.name(),
                why,
            };
            let mut z =
                ruzstd::decoding::StreamingDecoder::new(data).map_err(|e| bad(e.to_string()))?;
            let n = (&mut z)
                .take(limit)
                .read_to_end(&mut out)
                .map_err(corrupt)?;
            let frame = z.into_frame_decoder();
            if (n as u64) <= MAX_MODULE_BYTES && !frame.is_finished() {
                return Err(bad("truncated frame".into()));
            }
            // ruzstd computes the frame's checksum but leaves comparing it to the caller.
            if let (Some(want), Some(got)) = (
                frame.get_checksum_from_data(),
                frame.get_calculated_checksum(),
            ) {
                if want != got {
                    return Err(bad("content checksum mismatch".into()));
                }
            }
            n
        }
    };
    if out.len() as u64 > MAX_MODULE_BYTES {
        return Err(DecodeError::TooLarge);
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// `data` compressed by the standard tool (`xz`, `zstd`, `gzip`), as distributions
    /// compress their modules.
    pub(crate) fn compress(format: ModuleFormat, data: &[u8]) -> Vec<u8> {
        let argv: &[&str] = match format {
            ModuleFormat::Plain => return data.to_vec(),
            ModuleFormat::Gzip => &["gzip", "-9", "-n", "-c"],
            ModuleFormat::Xz => &["xz", "--check=crc32", "--lzma2=dict=1MiB", "-c"],
            ModuleFormat::Zstd => &["zstd", "-q", "-19", "-c"],
        };
        let mut child = Command::new(argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask setup`)", argv[0]));
        let mut stdin = child.stdin.take().unwrap();
        let input = data.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert!(out.status.success(), "{argv:?}");
        out.stdout
    }

    #[test]
    fn decodes_what_the_standard_tools_write() {
        let ko: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for f in ModuleFormat::ALL {
            let c = compress(f, &ko);
            assert_eq!(decode(f, &c).unwrap(), ko, "{f:?}");
        }
    }

    #[test]
    fn corrupt_or_truncated_data_is_an_error() {
        let ko = b"\x7fELF module body with parmtype=nowayout:bool".repeat(100);
        for f in [ModuleFormat::Gzip, ModuleFormat::Xz, ModuleFormat::Zstd] {
            let c = compress(f, &ko);
            for cut in [0, 1, c.len() / 2, c.len() - 1] {
                let r = decode(f, &c[..cut]);
                assert!(
                    r.is_err() || r.ok().as_deref() != Some(&ko[..]),
                    "{f:?} cut at {cut}"
                );
            }
            let mut flipped = c.clone();
            let mid = flipped.len() / 2;
            flipped[mid] ^= 0x55;
            assert!(decode(f, &flipped).is_err(), "{f:?} with a flipped byte");
            assert!(decode(f, b"not compressed at all").is_err(), "{f:?}");
        }
    }

    #[test]
    fn a_bomb_is_refused() {
        let zeros = vec![0u8; usize::try_from(MAX_MODULE_BYTES + 1).unwrap()];
        let c = compress(ModuleFormat::Zstd, &zeros);
        drop(zeros);
        assert!(matches!(
            decode(ModuleFormat::Zstd, &c),
            Err(DecodeError::TooLarge)
        ));
    }
}

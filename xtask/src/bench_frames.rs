//! The options of the compressed form, measured on the real images of `cargo xtask bench
//! delta debian` (docs/BENCH.md, "The compressed form's options"): for each codec, level
//! and frame size, the image cut into independent frames of that size and each compressed
//! apart, then priced with the planner's own rule (engine `delta::ways::FramePlan`: a frame
//! is fetched when it costs fewer bytes than the raw blocks it replaces, those blocks raw
//! otherwise; plus a seek table of 8 bytes a frame and 17 more): the fresh install (nothing
//! to reuse) against the whole image with `xz -9`, and the security update (what the
//! planner fetches from the old image's point of view) in % of the new image. The plans
//! are the engine's (`delta::plan`, the old image as the running slot), so the blocks
//! counted are the ones a device fetches.
//!
//! zstd frames go through libzstd (the `zstd` crate, as `stele image build` writes the
//! `.zst`); xz frames through `xz` itself, one process per frame, each a whole `.xz`
//! stream (`--check=none`, LZMA2 preset 9 with the dictionary capped to the frame, the
//! most a decoder of that frame can use). The chained form `.lzc` ([`lzc_row`]) through
//! its own encoder (stele-image `lzc`), whose frames are not independent (each primed
//! with the 16 MiB of the image before it), priced by the same rule; encoding all its
//! frames costs about 17 `xz -9` passes, so by default every 16th frame is encoded and the
//! others estimated from it (`STELE_BENCH_LZC_STEP=1`: all, exact).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stele_engine::delta::plan::{plan, Action};
use stele_engine::delta::{
    fetch_meta, Clock, Fetcher, KnownHashBlocks, ReaderSource, RetryPolicy, Trust,
    DEFAULT_MAX_RANGE,
};

/// A codec of the frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// libzstd at this level, with long-distance matching when `ldm`; the window is at
    /// most the frame (libzstd sizes it to the frame's known length).
    Zstd { level: i32, ldm: bool },
    /// `xz`, LZMA2 preset 9, the dictionary the frame's size.
    Xz,
}

impl Codec {
    fn name(self) -> String {
        match self {
            Codec::Zstd { level, ldm } => format!(
                "zstd {}{level}{}",
                if level > 19 { "--ultra -" } else { "-" },
                if ldm { " --long" } else { "" }
            ),
            Codec::Xz => "xz -9 (LZMA2, dictionary = frame)".into(),
        }
    }
}

/// The options measured: smaller frames than today's form first.
pub const OPTIONS: &[(Codec, u64)] = &[
    (
        Codec::Zstd {
            level: 19,
            ldm: false,
        },
        64 << 10,
    ),
    (
        Codec::Zstd {
            level: 19,
            ldm: false,
        },
        128 << 10,
    ),
    (
        Codec::Zstd {
            level: 19,
            ldm: false,
        },
        256 << 10,
    ),
    (
        Codec::Zstd {
            level: 19,
            ldm: false,
        },
        1 << 20,
    ),
    (
        Codec::Zstd {
            level: 19,
            ldm: false,
        },
        4 << 20,
    ),
    (
        Codec::Zstd {
            level: 19,
            ldm: false,
        },
        16 << 20,
    ),
    (
        Codec::Zstd {
            level: 22,
            ldm: false,
        },
        4 << 20,
    ),
    (
        Codec::Zstd {
            level: 22,
            ldm: false,
        },
        16 << 20,
    ),
    (
        Codec::Zstd {
            level: 19,
            ldm: true,
        },
        16 << 20,
    ),
    (Codec::Xz, 1 << 20),
    (Codec::Xz, 4 << 20),
    (Codec::Xz, 16 << 20),
];

/// A clock for reading local files (nothing is retried or waited for).
struct NoClock(Instant);

impl Clock for NoClock {
    fn now(&mut self) -> Duration {
        self.0.elapsed()
    }
    fn sleep(&mut self, _: Duration) {}
    fn random(&mut self) -> f64 {
        0.5
    }
}

/// What a device fetches for `new`, running `old` (`None`: a fresh install, nothing to
/// reuse): per data block, true when fetched; the block size; the bytes of footer,
/// manifest and tree fetched first.
pub struct Wanted {
    pub fetch: Vec<bool>,
    pub block_size: u64,
    pub meta: u64,
}

/// [`Wanted`] from the engine's planner (signatures not checked: the figures are the
/// same either way).
pub fn wanted(old: Option<&Path>, new: &Path) -> Result<Wanted, String> {
    let e = |e: &dyn std::fmt::Display| format!("{}: {e}", new.display());
    let file = File::open(new).map_err(|x| e(&x))?;
    let mut src = ReaderSource::new(file, new.display().to_string());
    let mut clock = NoClock(Instant::now());
    let mut f = Fetcher::new(&mut src, &mut clock, RetryPolicy::default(), None);
    let mut base = match old {
        Some(p) => {
            let mut b = File::open(p).map_err(|x| format!("{}: {x}", p.display()))?;
            let len = b.seek(SeekFrom::End(0)).map_err(|x| e(&x))?;
            Some((b, len))
        }
        None => None,
    };
    let known = match base.as_mut() {
        Some((b, l)) => KnownHashBlocks::from_slot(b, *l, Trust::Unsigned).map_err(|x| e(&x))?,
        None => None,
    };
    let meta =
        fetch_meta(&mut f, Trust::Unsigned, None, None, known.as_ref()).map_err(|x| e(&x))?;
    let p = plan::<File, File>(
        &meta,
        None,
        base.as_mut().map(|(b, l)| (b, *l)),
        Trust::Unsigned,
        DEFAULT_MAX_RANGE,
    )
    .map_err(|x| e(&x))?;
    Ok(Wanted {
        fetch: p.actions.iter().map(|a| *a == Action::Fetch).collect(),
        block_size: p.block_size,
        meta: meta.fetched,
    })
}

/// The compressed length of each `frame`-byte frame of `img`, on two threads.
pub fn frame_lens(img: &Path, codec: Codec, frame: u64) -> Result<Vec<u64>, String> {
    let mut data = Vec::new();
    File::open(img)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(|e| format!("{}: {e}", img.display()))?;
    let fr = usize::try_from(frame).map_err(|e| e.to_string())?;
    let starts: Vec<usize> = (0..data.len()).step_by(fr.max(1)).collect();
    let per = starts.len().div_ceil(2).max(1);
    let data = &data;
    let parts: Vec<Result<Vec<u64>, String>> = std::thread::scope(|s| {
        let hs: Vec<_> = starts
            .chunks(per)
            .map(|group| {
                s.spawn(move || {
                    group
                        .iter()
                        .map(|&at| {
                            compress(codec, &data[at..(at + fr).min(data.len())]).map(|c| c as u64)
                        })
                        .collect::<Result<Vec<u64>, String>>()
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a thread panicked".into())))
            .collect()
    });
    let mut lens = Vec::with_capacity(starts.len());
    for p in parts {
        lens.extend(p?);
    }
    Ok(lens)
}

/// The compressed length of one independent frame.
fn compress(codec: Codec, raw: &[u8]) -> Result<usize, String> {
    match codec {
        Codec::Zstd { level, ldm } => {
            let mut c = zstd::bulk::Compressor::new(level).map_err(|e| e.to_string())?;
            c.include_checksum(false).map_err(|e| e.to_string())?;
            c.include_contentsize(true).map_err(|e| e.to_string())?;
            if ldm {
                c.set_parameter(zstd::zstd_safe::CParameter::EnableLongDistanceMatching(
                    true,
                ))
                .map_err(|e| e.to_string())?;
            }
            c.compress(raw).map(|v| v.len()).map_err(|e| e.to_string())
        }
        Codec::Xz => {
            let mut child = Command::new("xz")
                .args([
                    "-c",
                    "--format=xz",
                    "--check=none",
                    "--threads=1",
                    &format!("--lzma2=preset=9,dict={}", raw.len().max(4096)),
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| format!("could not start xz: {e}"))?;
            let mut stdin = child.stdin.take().ok_or("no stdin")?;
            let out = std::thread::scope(|s| {
                let w = s.spawn(move || stdin.write_all(raw));
                let mut n = 0usize;
                let mut so = child.stdout.take().ok_or("no stdout")?;
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    match so.read(&mut buf) {
                        Ok(0) => break,
                        Ok(k) => n += k,
                        Err(e) => return Err(e.to_string()),
                    }
                }
                w.join()
                    .map_err(|_| "writer panicked".to_string())?
                    .map_err(|e| e.to_string())?;
                Ok(n)
            })?;
            let st = child.wait().map_err(|e| e.to_string())?;
            if !st.success() {
                return Err(format!("xz failed: {st}"));
            }
            Ok(out)
        }
    }
}

/// The compressed length of each frame of the compressed form `stele image build` wrote
/// beside `image`, and its frame size (its seek table, read as the device reads it).
pub fn frame_lens_of(image: &Path) -> Result<(Vec<u64>, u64), String> {
    use stele_engine::delta::zst::{SeekTable, ZST};
    form_lens_of(
        &stele_image::zst::path_of(image),
        image,
        &ZST,
        SeekTable::parse,
    )
}

/// [`frame_lens_of`] of the chained form `IMAGE.img.lzc`.
pub fn chained_lens_of(image: &Path) -> Result<(Vec<u64>, u64), String> {
    use stele_engine::delta::lzc::{parse_table, LZC};
    form_lens_of(&stele_image::lzc::path_of(image), image, &LZC, parse_table)
}

/// The table parser of a form (the engine's `SeekTable::parse`, `lzc::parse_table`).
type Parse = fn(
    &[u8],
    u64,
    u64,
    u64,
) -> Result<stele_engine::delta::zst::SeekTable, stele_engine::delta::zst::ZstError>;

fn form_lens_of(
    file: &Path,
    image: &Path,
    form: &stele_engine::delta::zst::Form,
    parse: Parse,
) -> Result<(Vec<u64>, u64), String> {
    use stele_engine::delta::zst::table_len_of;
    let e = |x: &dyn std::fmt::Display| format!("{}: {x}", file.display());
    let bytes = std::fs::read(file).map_err(|x| e(&x))?;
    let raw_len = std::fs::metadata(image).map_err(|x| e(&x))?.len();
    let n = bytes.len() as u64;
    let tail = bytes.get(bytes.len().saturating_sub(9)..).unwrap_or(&[]);
    let tl = table_len_of(form, tail, n).map_err(|x| e(&x))?;
    let at = usize::try_from(n - tl).map_err(|x| e(&x))?;
    let t = parse(&bytes[at..], n, raw_len, 4096).map_err(|x| e(&x))?;
    let lens = (0..t.frames())
        .filter_map(|i| t.frame(i).map(|f| f.len))
        .collect();
    Ok((lens, t.frame_raw))
}

/// The bytes of the planner's way over frames of `lens` (each `frame` bytes of the
/// image) for `w`: the footer, manifest and tree, the seek table, each frame cheaper than
/// its wanted raw blocks, the other wanted blocks raw ([`stele_engine::delta::ways`]'s
/// rule). Pure.
pub fn price(w: &Wanted, lens: &[u64], frame: u64) -> u64 {
    let per = usize::try_from((frame / w.block_size).max(1)).unwrap_or(1);
    let table = 8 + 8 * lens.len() as u64 + 9;
    let mut bytes = w.meta + table;
    for (f, chunk) in w.fetch.chunks(per).enumerate() {
        let raw = chunk.iter().filter(|x| **x).count() as u64 * w.block_size;
        if raw == 0 {
            continue;
        }
        bytes += match lens.get(f) {
            Some(&l) if l < raw => l,
            _ => raw,
        };
    }
    bytes
}

/// [`price`] of a plan that takes each region of `big` bytes (a frame of the form with
/// frames `big_lens`) from whichever form costs less there: that frame, or the frames of
/// `small` bytes (`small_lens`, each at most its wanted raw blocks) within it; both tables
/// counted. Pure.
pub fn price_mixed(w: &Wanted, small_lens: &[u64], small: u64, big_lens: &[u64], big: u64) -> u64 {
    let bs = w.block_size.max(1);
    let per_small = usize::try_from((small / bs).max(1)).unwrap_or(1);
    let per_big = usize::try_from((big / bs).max(1)).unwrap_or(1);
    let tables = 2 * 17 + 8 * (small_lens.len() + big_lens.len()) as u64;
    let mut bytes = w.meta + tables;
    for (r, region) in w.fetch.chunks(per_big).enumerate() {
        let raw = region.iter().filter(|x| **x).count() as u64 * bs;
        if raw == 0 {
            continue;
        }
        let smalls: u64 = region
            .chunks(per_small)
            .enumerate()
            .map(|(k, c)| {
                let raw = c.iter().filter(|x| **x).count() as u64 * bs;
                let f = r * (per_big / per_small) + k;
                match small_lens.get(f) {
                    Some(&l) if l < raw => l,
                    _ => raw,
                }
            })
            .sum();
        bytes += match big_lens.get(r) {
            Some(&l) if l < smalls => l,
            _ => smalls,
        };
    }
    bytes
}

/// The table of [`OPTIONS`] on the security update `old` -> `new`, against `xz_bytes`
/// (the whole new image with `xz -9`); prints it and returns nothing but errors.
pub fn options_table(old: &Path, new: &Path, xz_bytes: u64) -> Result<(), String> {
    options_table_of(old, new, xz_bytes, "")
}

/// [`options_table`] of the options whose name and frame (`zstd -19 128 KiB`) contain
/// `only` (all when empty).
pub fn options_table_of(old: &Path, new: &Path, xz_bytes: u64, only: &str) -> Result<(), String> {
    let size = std::fs::metadata(new).map_err(|e| e.to_string())?.len();
    let update = wanted(Some(old), new)?;
    let fresh = wanted(None, new)?;
    println!(
        "  the compressed form's options on the security update's new image ({size} bytes; xz -9: {xz_bytes}), priced by the planner's rule:"
    );
    println!(
        "    | frames | frame | fresh install bytes | x xz -9 | security update bytes | % of the new image | decoder window | compress s |"
    );
    println!("    | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    if "chained .lzc".contains(only) || only.is_empty() {
        let step = std::env::var("STELE_BENCH_LZC_STEP")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(16);
        lzc_row(old, new, xz_bytes, step)?;
    }
    for &(codec, frame) in OPTIONS {
        if !format!("{} {} KiB", codec.name(), frame >> 10).contains(only) {
            continue;
        }
        let start = Instant::now();
        let lens = frame_lens(new, codec, frame)?;
        let secs = start.elapsed().as_secs_f64();
        let whole = price(&fresh, &lens, frame);
        let sec = price(&update, &lens, frame);
        let window = match codec {
            Codec::Zstd {
                level: 19,
                ldm: false,
            } => frame.min(8 << 20),
            _ => frame,
        };
        println!(
            "    | {} | {} KiB | {whole} | {:.3} | {sec} | {:.2} % | {} KiB | {secs:.0} |",
            codec.name(),
            frame >> 10,
            whole as f64 / xz_bytes as f64,
            100.0 * sec as f64 / size as f64,
            window >> 10,
        );
    }
    Ok(())
}

/// The chained form on the security update, estimated when encoding every frame costs
/// too long (each frame re-reads its 16 MiB dictionary: about 17 times an `xz -9` pass):
/// every `step`-th frame is encoded with stele-image's `lzc` encoder, the image's frames
/// also as independent `xz -9` frames of the same size; each frame's chained length is
/// estimated as its independent length times the sample's ratio, then priced with the
/// planner's rule. `step` 1 encodes them all: exact. Prints one row.
pub fn lzc_row(old: &Path, new: &Path, xz_bytes: u64, step: usize) -> Result<(), String> {
    use stele_engine::delta::lzc::{DICT, FRAME_RAW};
    let size = std::fs::metadata(new).map_err(|e| e.to_string())?.len();
    let update = wanted(Some(old), new)?;
    let fresh = wanted(None, new)?;
    let start = Instant::now();
    let xz = frame_lens(new, Codec::Xz, FRAME_RAW)?;
    let data = std::fs::read(new).map_err(|e| format!("{}: {e}", new.display()))?;
    let ks: Vec<usize> = (step / 2..xz.len()).step_by(step.max(1)).collect();
    let per = ks.len().div_ceil(2).max(1);
    let data = &data;
    let parts: Vec<Result<Vec<(usize, u64)>, String>> = std::thread::scope(|s| {
        let hs: Vec<_> = ks
            .chunks(per)
            .map(|g| {
                s.spawn(move || {
                    g.iter()
                        .map(|&k| {
                            stele_image::lzc::frame(data, k)
                                .map(|f| (k, f.len() as u64))
                                .map_err(|e| e.to_string())
                        })
                        .collect()
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("a thread panicked".into())))
            .collect()
    });
    let mut chained = Vec::new();
    for p in parts {
        chained.extend(p?);
    }
    let secs = start.elapsed().as_secs_f64();
    let (c, x) = chained
        .iter()
        .fold((0u64, 0u64), |(c, x), &(k, l)| (c + l, x + xz[k]));
    let ratio = c as f64 / x.max(1) as f64;
    let lens: Vec<u64> = if step <= 1 {
        chained.iter().map(|p| p.1).collect()
    } else {
        xz.iter()
            .map(|&l| {
                u64::try_from(u128::from(l) * u128::from(c) / u128::from(x.max(1)))
                    .unwrap_or(u64::MAX)
            })
            .collect()
    };
    let whole = price(&fresh, &lens, FRAME_RAW);
    let sec = price(&update, &lens, FRAME_RAW);
    let how = if step <= 1 {
        "exact".to_string()
    } else {
        format!(
            "estimate: {} of {} frames encoded, {ratio:.3} x their independent xz -9 frames",
            chained.len(),
            xz.len()
        )
    };
    if let Ok((zl, zf)) = frame_lens_of(new) {
        let mixed = price_mixed(&update, &zl, zf, &lens, FRAME_RAW);
        println!(
            "    | each region from the cheaper of .zst and chained .lzc ({how}) | {} / {} KiB | - | - | {mixed} | {:.2} % | {} KiB | - |",
            zf >> 10,
            FRAME_RAW >> 10,
            100.0 * mixed as f64 / size as f64,
            DICT >> 10,
        );
    }
    println!(
        "    | chained .lzc (LZMA2 -9, the {} MiB before as dictionary; {how}) | {} KiB | {whole} | {:.3} | {sec} | {:.2} % | {} KiB | {secs:.0} |",
        DICT >> 20,
        FRAME_RAW >> 10,
        whole as f64 / xz_bytes as f64,
        100.0 * sec as f64 / size as f64,
        DICT >> 10,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{price, Wanted};

    /// The price follows the planner: a frame whose blocks are all wanted costs its
    /// compressed length, one costlier than its wanted blocks is fetched raw, one with
    /// nothing wanted costs nothing; plus the table and the signed metadata.
    #[test]
    fn frames_are_priced_as_the_planner_prices_them() {
        let w = Wanted {
            fetch: vec![true, true, false, false, false, true, false, false],
            block_size: 4096,
            meta: 100,
        };
        // Frames of 2 blocks: [tt] [ff] [ft] [ff].
        let lens = [3000, 5000, 6000, 10];
        assert_eq!(price(&w, &lens, 8192), 100 + (8 + 32 + 9) + 3000 + 4096);
        // Nothing wanted: only the metadata and the table.
        let none = Wanted {
            fetch: vec![false; 8],
            ..w
        };
        assert_eq!(price(&none, &lens, 8192), 100 + 49);
    }
}

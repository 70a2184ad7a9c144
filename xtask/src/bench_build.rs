//! `cargo xtask bench build`: `stele image build` against `mkfs.erofs` + `veritysetup
//! format --no-superblock` by hand on the same generated tree (medians, ratio, peak disk
//! use); `cargo xtask bench erofs-delta`: how many 4 KiB blocks of an EROFS image change
//! when one file grows by 10 KiB, with and without inline tail data.
//!
//! Settings: STELE_BENCH_MIB (tree size, default 1024), STELE_BENCH_RUNS (default 3),
//! STELE_BENCH_BASELINE (another `stele` binary, e.g. an older build: run once, for its
//! time and peak disk use; its image may differ, as its defaults may).

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use stele_image::fs::{derive_uuid, erofs_args, FsOptions};
use stele_verifier::manifest::FsType;

use crate::bench::{median, root_hash, SALT};
use crate::util::{build_cli, output, target_dir};

pub(crate) fn env_u64(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| format!("{name}={v:?} is not a number")),
        Err(_) => Ok(default),
    }
}

/// xorshift64*: cheap, deterministic filler and sizes.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A realistic tree of about `mib` MiB under `dir` (made once, then reused): 100
/// directories, files of mixed sizes like a Debian root's (74 % under 8 KiB, 25 % up to
/// 64 KiB, 1 % up to 2 MiB; about 22 KiB on average), pseudo-random content. Returns the
/// file count and the bytes.
pub(crate) fn make_tree(dir: &Path, mib: u64) -> Result<(u64, u64), String> {
    let done = dir.join(".complete-v2");
    if let Ok(s) = fs::read_to_string(&done) {
        if let Some((n, b)) = s.trim().split_once(' ') {
            if let (Ok(n), Ok(b)) = (n.parse(), b.parse()) {
                return Ok((n, b));
            }
        }
    }
    let _ = fs::remove_dir_all(dir);
    eprintln!("xtask: writing a {mib} MiB tree under {}", dir.display());
    let mut sizes = Rng(0x5eed_0000 ^ mib);
    let mut data = Rng(0x0da7_a000);
    let (mut files, mut bytes) = (0u64, 0u64);
    let want = mib << 20;
    let mut buf = vec![0u8; 1 << 20];
    while bytes < want {
        let r = sizes.next();
        let size = match r % 100 {
            0 => (64 << 10) + (r >> 8) % (2 << 20),
            1..=25 => (8 << 10) + (r >> 8) % (56 << 10),
            _ => 100 + (r >> 8) % (8 << 10),
        }
        .min(want - bytes);
        let d = dir.join(format!("d{:03}", files % 100));
        fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        let path = d.join(format!("f{files:06}"));
        let f = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let mut left = size;
        while left > 0 {
            let n = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            data.fill(&mut buf[..n]);
            w.write_all(&buf[..n])
                .map_err(|e| format!("{}: {e}", path.display()))?;
            left -= n as u64;
        }
        w.flush().map_err(|e| format!("{}: {e}", path.display()))?;
        files += 1;
        bytes += size;
    }
    fs::write(&done, format!("{files} {bytes}\n")).map_err(|e| e.to_string())?;
    Ok((files, bytes))
}

/// Bytes allocated under `dir` (recursively, hidden files included).
fn disk_use(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_use(&e.path()) + m.blocks() * 512,
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

/// Runs `f` while sampling the disk use of `dir` every 10 ms; returns (seconds, peak bytes).
fn timed<T>(dir: &Path, f: impl FnOnce() -> Result<T, String>) -> Result<(f64, u64, T), String> {
    let stop = AtomicBool::new(false);
    let peak = AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(disk_use(dir), Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        });
        let start = Instant::now();
        let r = f();
        let secs = start.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        r.map(|v| (secs, peak.load(Ordering::Relaxed), v))
    })
}

fn fresh_dir(dir: &Path) -> Result<(), String> {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))
}

/// One `stele image build` of `tree` into `dir`; the root hash it printed.
fn stele_build(stele: &Path, key: &Path, tree: &Path, dir: &Path) -> Result<String, String> {
    let out = output(
        Command::new(stele)
            .args(["image", "build", "--rootfs"])
            .arg(tree)
            .arg("--key")
            .arg(key)
            .args(["--name", "bench", "--version", "1", "--rollback-index", "1"])
            .args(["--salt", SALT, "--out"])
            .arg(dir.join("slot.img"))
            .env("SOURCE_DATE_EPOCH", "0"),
        "stele image build",
    )?;
    out.split_whitespace()
        .find_map(|w| w.strip_prefix("root_hash="))
        .map(str::to_owned)
        .ok_or_else(|| format!("stele printed no root_hash: {out}"))
}

/// mkfs.erofs with stele's options, then veritysetup; the root hash veritysetup printed.
fn by_hand(tree: &Path, dir: &Path) -> Result<String, String> {
    let opts = FsOptions::new(FsType::Erofs, 0, derive_uuid("bench", &salt()), false);
    let fs_img = dir.join("fs.erofs");
    output(
        Command::new("mkfs.erofs")
            .args(erofs_args(&opts))
            .arg(&fs_img)
            .arg(tree),
        "mkfs.erofs",
    )?;
    let out = output(
        Command::new("veritysetup")
            .args(["format", "--no-superblock", "--salt", SALT])
            .arg(&fs_img)
            .arg(dir.join("fs.hash")),
        "veritysetup format",
    )?;
    root_hash(&out).ok_or_else(|| "veritysetup printed no Root hash".into())
}

fn salt() -> Vec<u8> {
    (0..SALT.len() / 2)
        .map(|i| u8::from_str_radix(&SALT[2 * i..2 * i + 2], 16).unwrap_or(0))
        .collect()
}

pub(crate) const MIB: f64 = 1024.0 * 1024.0;

/// `sync` before a timed run: the write-back of the tree or of the previous run's image
/// (over a GiB) does not land in the next run's time.
fn settle() -> Result<(), String> {
    output(&mut Command::new("sync"), "sync").map(drop)
}

/// `cargo xtask bench build`.
pub fn build() -> Result<(), String> {
    crate::setup::setup()?;
    let mib = env_u64("STELE_BENCH_MIB", 1024)?;
    let runs = usize::try_from(env_u64("STELE_BENCH_RUNS", 3)?.max(1)).unwrap_or(3);
    let stele = build_cli()?;
    let bench = target_dir().join("bench");
    let tree = bench.join(format!("tree-{mib}m"));
    let (files, bytes) = make_tree(&tree, mib)?;
    let key = bench.join("bench.key");
    if !key.exists() {
        output(
            Command::new(&stele)
                .args(["keygen", "--private"])
                .arg(&key)
                .arg("--public")
                .arg(bench.join("bench.pub")),
            "stele keygen",
        )?;
    }
    // Warm the page cache: neither side pays for the first read of the tree.
    by_hand(&tree, &{
        let d = bench.join("out-hand");
        fresh_dir(&d)?;
        d
    })?;
    let mut contenders: Vec<(String, PathBuf)> = vec![("stele".into(), stele.clone())];
    if let Ok(b) = std::env::var("STELE_BENCH_BASELINE") {
        contenders.push(("baseline".into(), PathBuf::from(b)));
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); contenders.len() + 1];
    let mut peaks = vec![0u64; contenders.len() + 1];
    let mut image = 0u64;
    for run in 0..runs {
        let hand_dir = bench.join("out-hand");
        fresh_dir(&hand_dir)?;
        settle()?;
        let (t, p, hand_root) = timed(&hand_dir, || by_hand(&tree, &hand_dir))?;
        eprintln!("xtask: run {}: by hand {t:.3} s", run + 1);
        times[0].push(t);
        peaks[0] = peaks[0].max(p);
        for (i, (name, exe)) in contenders.iter().enumerate() {
            // The baseline (another build, other defaults) runs once, for its disk use.
            if i > 0 && run > 0 {
                continue;
            }
            let dir = bench.join(format!("out-{name}"));
            fresh_dir(&dir)?;
            settle()?;
            let (t, p, root) = timed(&dir, || stele_build(exe, &key, &tree, &dir))?;
            eprintln!("xtask: run {}: {name} {t:.3} s", run + 1);
            if i == 0 && root != hand_root {
                return Err(format!(
                    "{name}'s root hash {root} differs from the hand-made image's {hand_root}"
                ));
            }
            if i == 0 {
                image = fs::metadata(dir.join("slot.img")).map_or(0, |m| m.len());
            }
            times[i + 1].push(t);
            peaks[i + 1] = peaks[i + 1].max(p);
        }
    }
    let hand = median(&mut times[0]);
    println!(
        "bench build: {files} files, {:.0} MiB, erofs, {runs} runs each; slot image {:.0} MiB",
        bytes as f64 / MIB,
        image as f64 / MIB
    );
    println!(
        "  mkfs.erofs + veritysetup format  median {hand:.3} s  peak disk {:.0} MiB",
        peaks[0] as f64 / MIB
    );
    for (i, (name, _)) in contenders.iter().enumerate() {
        let t = median(&mut times[i + 1]);
        println!(
            "  {name:<32} median {t:.3} s  peak disk {:.0} MiB  ratio {name}/by-hand = {:.2}",
            peaks[i + 1] as f64 / MIB,
            t / hand
        );
    }
    println!("  (target ratio <= 1.1; root hashes identical to the hand-made image's)");
    Ok(())
}

/// `(blocks, blocks at a changed position, blocks whose content is not in the old image)`.
pub(crate) fn delta(old: &[u8], new: &[u8]) -> (usize, usize, usize) {
    const B: usize = 4096;
    let known: HashSet<&[u8]> = old.chunks(B).collect();
    let changed = new
        .chunks(B)
        .enumerate()
        .filter(|(i, b)| old.get(i * B..(i * B + b.len()).min(old.len())) != Some(*b))
        .count();
    let fresh = new.chunks(B).filter(|b| !known.contains(b)).count();
    (new.len().div_ceil(B), changed, fresh)
}

/// `cargo xtask bench erofs-delta`.
pub fn erofs_delta() -> Result<(), String> {
    crate::setup::setup()?;
    let bench = target_dir().join("bench");
    let tree = bench.join("delta-tree");
    let (files, bytes) = make_tree(&tree, env_u64("STELE_BENCH_DELTA_MIB", 100)?)?;
    // The file that grows: one in the first tenth of the tree, so most of it follows.
    let victim = tree.join("d010").join("f000010");
    let original = fs::read(&victim).map_err(|e| format!("{}: {e}", victim.display()))?;
    println!(
        "bench erofs-delta: {files} files, {:.0} MiB; {} grows by 10 KiB",
        bytes as f64 / MIB,
        victim.display()
    );
    let result = (|| {
        for inline in [true, false] {
            let mut opts = FsOptions::new(FsType::Erofs, 0, derive_uuid("delta", b"salt"), false);
            opts.erofs_inline_data = inline;
            let mut images = Vec::new();
            for grown in [false, true] {
                let mut content = original.clone();
                if grown {
                    let mut extra = vec![0u8; 10 << 10];
                    Rng(7).fill(&mut extra);
                    content.extend_from_slice(&extra);
                }
                fs::write(&victim, &content).map_err(|e| e.to_string())?;
                let img = bench.join("delta.erofs");
                let _ = fs::remove_file(&img);
                output(
                    Command::new("mkfs.erofs")
                        .args(erofs_args(&opts))
                        .arg(&img)
                        .arg(&tree),
                    "mkfs.erofs",
                )?;
                images.push(fs::read(&img).map_err(|e| e.to_string())?);
            }
            let (n, moved, fresh) = delta(&images[0], &images[1]);
            let name = if inline {
                "inline tail data (mkfs.erofs default)"
            } else {
                "-Enoinline_data"
            };
            println!(
                "  {name:<38} {n} blocks; {moved} differ at the same offset; {fresh} have content the old image lacks"
            );
        }
        Ok::<(), String>(())
    })();
    fs::write(&victim, &original).map_err(|e| e.to_string())?;
    result?;
    println!(
        "  stele's default: inline data {} (stele_image::fs::EROFS_INLINE_DATA)",
        if stele_image::fs::EROFS_INLINE_DATA {
            "on"
        } else {
            "off"
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_counts_moved_and_fresh_blocks() {
        let a: Vec<u8> = [1u8, 2, 3].iter().flat_map(|&b| vec![b; 4096]).collect();
        let b: Vec<u8> = [9u8, 1, 2, 3].iter().flat_map(|&b| vec![b; 4096]).collect();
        // Every block moved by one; only the first has new content.
        assert_eq!(delta(&a, &b), (4, 4, 1));
        assert_eq!(delta(&a, &a), (3, 0, 0));
    }
}

//! `cargo xtask bench delta debian`: a real distribution update. Three Debian appliance
//! roots (bench_debian.rs: a bookworm point release, the same root after its security and
//! updates suites, the same root upgraded to trixie), each built with `stele image build`
//! (EROFS, SOURCE_DATE_EPOCH=0, one salt); for the security update and the major upgrade,
//! in the same run: the bytes of stele's delta install (`stele image diff`, exact), xdelta3
//! -9, `zstd -19 --long=31 --patch-from`, casync seeded with the old image and the whole
//! new image with `xz -9`, with ratios against stele; the wall time and peak RSS of a real
//! `stele update install --disk` over loopback nginx against `zstd --patch-from -d`; and
//! the image size and delta bytes with EROFS's own compression (every `mkfs.erofs -z`
//! compressor the host's erofs-utils has, of lz4hc, lz4, lzma, zstd, deflate) against
//! stele's uncompressed default.
//!
//! Needs root and, the first time, the network (debootstrap and apt; the roots are cached).
//! STELE_BENCH_MKFS_EROFS names another mkfs.erofs for the compressed variants (e.g. a newer
//! erofs-utils with lzma and zstd; the uncompressed default is always the host's, through
//! `stele image build`).

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use stele_image::fs::{derive_uuid, erofs_args, FsOptions};
use stele_verifier::manifest::FsType;

use crate::bench::SALT;
use crate::bench_build::MIB;
use crate::bench_debian::{self, remove_root};
use crate::bench_delta::{build_image, diff, nginx};
use crate::util::{build_cli, len, output, target_dir, timed};

/// The compressors measured, when the host's mkfs.erofs has them.
const COMPRESSORS: &[&str] = &["lz4hc", "lz4", "lzma", "zstd", "deflate"];

/// `cargo xtask bench delta debian`; with `erofs_only` (`bench delta debian-erofs`) only
/// the images and the EROFS compression table, without the other tools and the install.
pub fn debian_bench(erofs_only: bool) -> Result<(), String> {
    crate::setup::setup()?;
    crate::setup::install_packages(crate::setup::BENCH_PACKAGES)?;
    if !crate::setup::is_root() {
        return Err("the Debian roots need root (debootstrap, chroot, owners kept in the images): run `cargo xtask bench delta debian` as root".into());
    }
    let stele = build_cli()?;
    let (old, new, trixie) = bench_debian::roots()?;
    let run = if erofs_only {
        "debian-erofs-run"
    } else {
        "debian-run"
    };
    let work = target_dir().join("bench").join(run);
    remove_root(&work)?;
    fs::create_dir_all(work.join("www")).map_err(|e| e.to_string())?;
    let (key, public) = (work.join("k.key"), work.join("k.pem"));
    output(
        Command::new(&stele)
            .args(["keygen", "--private"])
            .arg(&key)
            .arg("--public")
            .arg(&public),
        "stele keygen",
    )?;
    let (available, missing) = compressors()?;
    let mut variants = vec!["none".to_string()];
    variants.extend(available);
    // images[variant][0..3] = old, new, trixie.
    let mut images: Vec<Vec<PathBuf>> = Vec::new();
    let roots = [("old", &old), ("new", &new), ("trixie", &trixie)];
    for (i, (name, root)) in roots.iter().enumerate() {
        let dir = work.join(format!("root-{name}"));
        bench_debian::extract(&root.tar, &dir)?;
        for (v, variant) in variants.iter().enumerate() {
            if images.len() <= v {
                images.push(Vec::new());
            }
            let img = work.join(format!("{name}-{variant}.img"));
            let version = (i + 1).to_string();
            eprintln!("xtask: building {}", img.display());
            if variant == "none" {
                build_image(&stele, &key, &dir, &img, &version)?;
            } else {
                build_compressed(&stele, &key, &dir, &img, &version, variant)?;
            }
            images[v].push(img);
        }
        remove_root(&dir)?;
    }
    let cpu = crate::bench::cpu_model();
    let (up, added, removed) = bench_debian::changed(&old, &new);
    let (up2, added2, removed2) = bench_debian::changed(&new, &trixie);
    println!(
        "bench delta debian: debootstrap minbase + {}; CPU: {cpu}",
        bench_debian::INCLUDE
    );
    println!(
        "  security update: bookworm (point release, {} packages) -> + bookworm-updates and bookworm-security: {} upgraded ({}), {added} added, {removed} removed",
        old.packages.len(),
        up.len(),
        up.join(", ")
    );
    println!(
        "  major upgrade: that root -> trixie: {} upgraded, {added2} added, {removed2} removed ({} packages)",
        up2.len(),
        trixie.packages.len()
    );
    let plain = &images[0];
    if erofs_only {
        return compression(&stele, &variants, &images, &missing);
    }
    let port = free_port()?;
    let _server = nginx(&work.join("nginx"), &work.join("www"), port)?;
    for (what, from, to) in [
        ("security update", &plain[0], &plain[1]),
        ("major upgrade", &plain[1], &plain[2]),
    ] {
        let xz_bytes = pair(&stele, &work, what, from, to)?;
        crate::bench_install::install(&stele, &work, &public, port, from, to)?;
        if what == "security update" {
            crate::bench_frames::options_table(from, to, xz_bytes)?;
        }
    }
    compression(&stele, &variants, &images, &missing)?;
    Ok(())
}

/// A free TCP port on 127.0.0.1 for the loopback nginx.
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// `cargo xtask bench delta debian-pairs`: the security update's and the major upgrade's
/// tables and real installs again, on the uncompressed images of the last `bench delta
/// debian` run (target/bench/debian-run), without rebuilding them; the compressed form's
/// options and the EROFS compression tables are not printed (`debian-frames`,
/// `debian-erofs`).
pub fn pairs_again() -> Result<(), String> {
    crate::setup::setup()?;
    crate::setup::install_packages(crate::setup::BENCH_PACKAGES)?;
    let stele = build_cli()?;
    let work = target_dir().join("bench").join("debian-run");
    let img = |name: &str| work.join(format!("{name}-none.img"));
    let (old, new, trixie) = (img("old"), img("new"), img("trixie"));
    let public = work.join("k.pem");
    for p in [&old, &new, &trixie, &public] {
        if !p.exists() {
            return Err(format!(
                "{}: not there: run `cargo xtask bench delta debian` first",
                p.display()
            ));
        }
    }
    println!(
        "bench delta debian-pairs: the images of the last run ({}); CPU: {}",
        work.display(),
        crate::bench::cpu_model()
    );
    fs::create_dir_all(work.join("www")).map_err(|e| e.to_string())?;
    let port = free_port()?;
    let _server = nginx(&work.join("nginx"), &work.join("www"), port)?;
    for (what, from, to) in [
        ("security update", &old, &new),
        ("major upgrade", &new, &trixie),
    ] {
        pair(&stele, &work, what, from, to)?;
        crate::bench_install::install(&stele, &work, &public, port, from, to)?;
    }
    Ok(())
}

/// The mkfs.erofs of the compressed variants.
fn mkfs_erofs() -> PathBuf {
    std::env::var_os("STELE_BENCH_MKFS_EROFS").map_or_else(|| "mkfs.erofs".into(), PathBuf::from)
}

/// The compressors of [`COMPRESSORS`] the host's mkfs.erofs has, and those it lacks.
fn compressors() -> Result<(Vec<String>, Vec<String>), String> {
    let mut text = String::new();
    for arg in ["--help", "--version"] {
        let out = Command::new(mkfs_erofs())
            .arg(arg)
            .output()
            .map_err(|e| format!("could not start mkfs.erofs: {e}"))?;
        text.push_str(&String::from_utf8_lossy(&out.stdout));
        text.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    Ok(parse_compressors(&text))
}

/// [`compressors`] from `mkfs.erofs --help` and `--version`: erofs-utils 1.5's help says
/// "Available compressors are: lz4hc, lz4"; 1.9's `--version` "available compressors: lz4,
/// lz4hc, lzma, deflate, zstd".
fn parse_compressors(help: &str) -> (Vec<String>, Vec<String>) {
    let has = |c: &str| {
        help.lines().any(|l| {
            let l = l.trim_start();
            l.to_ascii_lowercase().starts_with("available compressors")
                && l.split(|ch: char| !ch.is_ascii_alphanumeric())
                    .any(|w| w == c)
        })
    };
    let (yes, no): (Vec<&str>, Vec<&str>) = COMPRESSORS.iter().partition(|c| has(c));
    (
        yes.into_iter().map(str::to_string).collect(),
        no.into_iter().map(str::to_string).collect(),
    )
}

/// mkfs.erofs with stele's options and `-z<compressor>`, wrapped by `stele image build
/// --fs-image` with the benchmark's key and salt.
fn build_compressed(
    stele: &Path,
    key: &Path,
    dir: &Path,
    img: &Path,
    version: &str,
    compressor: &str,
) -> Result<(), String> {
    let salt = stele_verifier::hex::decode(SALT).ok_or("bad salt")?;
    let opts = FsOptions::new(FsType::Erofs, 0, derive_uuid("bench", &salt), false);
    let fs_img = img.with_extension("erofs");
    let _ = fs::remove_file(&fs_img);
    output(
        Command::new(mkfs_erofs())
            .args(erofs_args(&opts))
            .arg(format!("-z{compressor}"))
            .arg(&fs_img)
            .arg(dir),
        &format!("mkfs.erofs -z{compressor}"),
    )?;
    output(
        Command::new(stele)
            .args(["image", "build", "--fs", "erofs", "--fs-image"])
            .arg(&fs_img)
            .arg("--key")
            .arg(key)
            .args(["--name", "bench", "--version", version])
            .args(["--rollback-index", "2", "--salt", SALT, "--out"])
            .arg(img)
            .env("SOURCE_DATE_EPOCH", "0"),
        "stele image build --fs-image",
    )?;
    fs::remove_file(&fs_img).map_err(|e| e.to_string())
}

/// The file names (chunk ids) in a casync store.
fn chunks(store: &Path) -> Result<Vec<(String, u64)>, String> {
    let mut all = Vec::new();
    for dir in fs::read_dir(store).map_err(|e| format!("{}: {e}", store.display()))? {
        let dir = dir.map_err(|e| e.to_string())?.path();
        if !dir.is_dir() {
            continue;
        }
        for f in fs::read_dir(&dir).map_err(|e| e.to_string())? {
            let f = f.map_err(|e| e.to_string())?;
            let size = f.metadata().map_err(|e| e.to_string())?.len();
            all.push((f.file_name().to_string_lossy().into_owned(), size));
        }
    }
    Ok(all)
}

/// stele's ways for `from` -> `to` from `stele image diff` (its last two lines): the
/// footer, manifest and tree fetched first, the raw blocks' and the compressed blocks'
/// data bytes (`None` without `to`.zst), and the way it takes with its total bytes.
pub(crate) struct SteleWays {
    pub meta: u64,
    pub raw: u64,
    pub zstd: Option<u64>,
    pub lzc: Option<u64>,
    pub chosen: String,
    pub total: u64,
}

/// [`SteleWays`] of `stele image diff OLD NEW`.
pub(crate) fn stele_ways(stele: &Path, from: &Path, to: &Path) -> Result<SteleWays, String> {
    let out = output(
        Command::new(stele)
            .args(["image", "diff"])
            .arg(from)
            .arg(to),
        "stele image diff",
    )?;
    parse_ways(&out).ok_or_else(|| format!("stele image diff: no way lines in: {out}"))
}

/// [`stele_ways`] from the output of `stele image diff`. Pure.
fn parse_ways(out: &str) -> Option<SteleWays> {
    let nums = |s: &str| -> Vec<u64> {
        s.split(|c: char| !c.is_ascii_digit())
            .filter_map(|w| w.parse().ok())
            .collect()
    };
    // "diff: a device on OLD fetches T bytes (D of data, way W, M of footer, ...".
    let fetch = out.lines().find_map(|l| {
        let at = l.find(" fetches ")?;
        Some(&l[at..])
    })?;
    let n = nums(fetch.split(", way ").next()?);
    let meta = *nums(fetch.split(", way ").nth(1)?).first()?;
    let (total, _data) = (*n.first()?, *n.get(1)?);
    // "diff: way W: raw R bytes, zstd Z bytes (chosen)" or "..., no zstd way: why".
    let way = out.lines().find_map(|l| l.strip_prefix("diff: way "))?;
    let (chosen, rest) = way.split_once(": ")?;
    let of = |name: &str| {
        rest.split(", ")
            .find_map(|w| w.strip_prefix(name))
            .and_then(|w| nums(w).first().copied())
    };
    Some(SteleWays {
        meta,
        raw: of("raw ")?,
        zstd: of("zstd "),
        lzc: of("lzc "),
        chosen: chosen.to_string(),
        total,
    })
}

/// The bytes a device on the old release downloads through the published delta, as
/// `stele image delta` says them ("delta: a device running OLD fetches T bytes with it
/// (...; the hash tree is rebuilt on the device)": the delta, the footer and the
/// manifest); for a delta that does not give every block, the delta file (its length,
/// from the first line, "delta: OLD -> NEW: N bytes in ...") and the footer, manifest
/// and hash tree (`meta`) fetched first. Pure.
fn published_delta_bytes(delta_output: &str, meta: u64) -> Option<u64> {
    if let Some(l) = delta_output
        .lines()
        .find(|l| l.starts_with("delta: a device running "))
    {
        let after = &l[l.find(" fetches ")? + " fetches ".len()..];
        return after.split(' ').next()?.parse().ok();
    }
    let line = delta_output.lines().find(|l| l.starts_with("delta: "))?;
    let after = &line[line.find(": ")? + 2..];
    let after = &after[after.find(": ")? + 2..];
    let n: u64 = after.split(' ').next()?.parse().ok()?;
    (after[n.to_string().len()..].starts_with(" bytes in ")).then_some(n + meta)
}

/// The bytes a device on `from` downloads for `to`, stele's ways and the standard tools,
/// printed as a table with ratios against `xz -9` and `zstd --patch-from`; returns the
/// bytes of `xz -9` of `to`.
fn pair(stele: &Path, work: &Path, what: &str, from: &Path, to: &Path) -> Result<u64, String> {
    let size = len(to)?;
    let ways = stele_ways(stele, from, to)?;
    let fresh = crate::bench_frames::wanted(None, to)?;
    let fresh_bytes = match crate::bench_frames::frame_lens_of(to) {
        Ok((lens, frame)) => Some(crate::bench_frames::price(&fresh, &lens, frame)),
        Err(e) => {
            eprintln!("xtask: no whole compressed image row: {e}");
            None
        }
    };
    let fresh_chained = match crate::bench_frames::chained_lens_of(to) {
        Ok((lens, frame)) => Some(crate::bench_frames::price(&fresh, &lens, frame)),
        Err(e) => {
            eprintln!("xtask: no whole chained image row: {e}");
            None
        }
    };
    let d = work.join("pair");
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).map_err(|e| e.to_string())?;
    let xd = d.join("xdelta3.vcdiff");
    let t_xd = timed(
        Command::new("xdelta3")
            .args(["-9", "-e", "-f", "-s"])
            .arg(from)
            .arg(to)
            .arg(&xd),
        "xdelta3",
        None,
    )?;
    let zp = d.join("patch.zst");
    let from_arg = format!("--patch-from={}", from.display());
    let t_zp = timed(
        Command::new("zstd")
            .args(["-q", "-f", "-19", "--long=31", &from_arg])
            .arg(to)
            .arg("-o")
            .arg(&zp),
        "zstd --patch-from",
        None,
    )?;
    let (store_old, store_new) = (d.join("store-old"), d.join("store-new"));
    for (img, store, index) in [
        (from, &store_old, d.join("old.caibx")),
        (to, &store_new, d.join("new.caibx")),
    ] {
        output(
            Command::new("casync")
                .arg("make")
                .arg(format!("--store={}", store.display()))
                .arg(&index)
                .arg(img),
            "casync make",
        )?;
    }
    let seeded: HashSet<String> = chunks(&store_old)?.into_iter().map(|c| c.0).collect();
    let casync_bytes = len(&d.join("new.caibx"))?
        + chunks(&store_new)?
            .iter()
            .filter(|(id, _)| !seeded.contains(id))
            .map(|c| c.1)
            .sum::<u64>();
    let xz = d.join("new.img.xz");
    let t_xz = timed(
        Command::new("xz").args(["-9", "-T1", "-c"]).arg(to),
        "xz -9",
        Some(&xz),
    )?;
    let (xz_bytes, zp_bytes) = (len(&xz)?, len(&zp)?);
    println!(
        "  {what}: new image {size} bytes ({:.1} MiB); without a published delta stele takes way {} ({} bytes)",
        size as f64 / MIB,
        ways.chosen,
        ways.total
    );
    println!(
        "    | what a device on the old release downloads | bytes | % of the new image | x xz -9 | x zstd --patch-from | encode s |"
    );
    println!("    | --- | ---: | ---: | ---: | ---: | ---: |");
    let mut rows: Vec<(String, Option<u64>, Option<f64>)> = vec![
        (
            "stele, block delta, raw blocks (way `raw`, `image diff`, exact)".into(),
            Some(ways.meta + ways.raw),
            None,
        ),
        (
            "stele, block delta, compressed blocks (way `zstd`, `image diff`, exact)".into(),
            ways.zstd.map(|z| ways.meta + z),
            None,
        ),
        (
            "stele, block delta, chained blocks (way `lzc`, `image diff`, exact)".into(),
            ways.lzc.map(|l| ways.meta + l),
            None,
        ),
        (
            "stele, the whole compressed image IMAGE.img.zst (a fresh install, planner's price)"
                .into(),
            fresh_bytes,
            None,
        ),
        (
            "stele, the whole chained image IMAGE.img.lzc (a fresh install, planner's price)"
                .into(),
            fresh_chained,
            None,
        ),
    ];
    // The published delta from `from` to `to` (issue 21 item 2), built as a vendor would.
    let delta = d.join("to.img.delta");
    let delta_log = d.join("delta.out");
    match timed(
        Command::new(stele)
            .args(["image", "delta", "--force", "--out"])
            .arg(&delta)
            .arg(from)
            .arg(to),
        "stele image delta",
        Some(&delta_log),
    ) {
        Ok(t) => {
            let out = fs::read_to_string(&delta_log).unwrap_or_default();
            let b = published_delta_bytes(&out, ways.meta);
            if b.is_none() {
                eprintln!("xtask: stele image delta: no size in: {out}");
            }
            rows.push((
                "stele, published delta (`stele image delta`, with footer and manifest; the tree rebuilt on the device)"
                    .into(),
                b,
                Some(t),
            ));
        }
        Err(e) => eprintln!("xtask: no published delta row: {e}"),
    }
    rows.extend([
        (
            "casync (default chunks, compressed, seeded with the old image)".into(),
            Some(casync_bytes),
            None,
        ),
        (
            "the whole new image, `xz -9`".into(),
            Some(xz_bytes),
            Some(t_xz),
        ),
        (
            "xdelta3 `-9` old image -> new image".into(),
            Some(len(&xd)?),
            Some(t_xd),
        ),
        (
            "`zstd -19 --long=31 --patch-from=old new`".into(),
            Some(zp_bytes),
            Some(t_zp),
        ),
        (
            "the whole new image, raw (a fresh install without the compressed form)".into(),
            Some(size),
            None,
        ),
    ]);
    for (name, bytes, secs) in rows {
        let Some(bytes) = bytes else {
            println!("    | {name} | - | - | - | - | - |");
            continue;
        };
        println!(
            "    | {name} | {bytes} | {:.1} % | {:.2} | {:.2} | {} |",
            100.0 * bytes as f64 / size as f64,
            bytes as f64 / xz_bytes as f64,
            bytes as f64 / zp_bytes as f64,
            secs.map_or("-".into(), |s| format!("{s:.1}"))
        );
    }
    Ok(xz_bytes)
}

/// Image sizes and stele's delta bytes for each EROFS compressor against the
/// uncompressed default.
fn compression(
    stele: &Path,
    variants: &[String],
    images: &[Vec<PathBuf>],
    missing: &[String],
) -> Result<(), String> {
    let mkfs = mkfs_erofs();
    let version = Command::new(&mkfs)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "erofs-utils 1.5 or older: no --version".to_string(),
            |o| {
                let text = String::from_utf8_lossy(&o.stdout);
                text.lines().next().unwrap_or("").trim().to_string()
            },
        );
    println!(
        "  EROFS compression, {} ({version}) -z, 4 KiB physical clusters; stele's delta bytes, % of that variant's new image / of the uncompressed new image:",
        mkfs.display()
    );
    println!("    | mkfs.erofs | new image bytes | security update | major upgrade |");
    println!("    | --- | ---: | ---: | ---: |");
    let base = [len(&images[0][1])?, len(&images[0][2])?];
    for (variant, imgs) in variants.iter().zip(images) {
        let sizes = [len(&imgs[0])?, len(&imgs[1])?, len(&imgs[2])?];
        let sec = diff(stele, &imgs[0], &imgs[1])?.0;
        let major = diff(stele, &imgs[1], &imgs[2])?.0;
        let name = if variant == "none" {
            "uncompressed (default)".to_string()
        } else {
            format!("-z{variant}")
        };
        println!(
            "    | {name} | {} ({:.1} %) | {sec} ({:.1} % / {:.1} %) | {major} ({:.1} % / {:.1} %) |",
            sizes[1],
            100.0 * sizes[1] as f64 / base[0] as f64,
            100.0 * sec as f64 / sizes[1] as f64,
            100.0 * sec as f64 / base[0] as f64,
            100.0 * major as f64 / sizes[2] as f64,
            100.0 * major as f64 / base[1] as f64,
        );
    }
    if !missing.is_empty() {
        println!(
            "    (not measured: -z{} are not in this mkfs.erofs)",
            missing.join(", -z")
        );
    }
    Ok(())
}

/// `cargo xtask bench delta debian-frames [ONLY]`: the compressed form's options table
/// again on the security update's images of the last `bench delta debian` run (kept in
/// target/bench/debian-run), only the options whose name contains ONLY; the `xz -9`
/// size of the new image is STELE_BENCH_XZ_BYTES, or measured.
pub fn frames_again(only: &str) -> Result<(), String> {
    let work = target_dir().join("bench").join("debian-run");
    let (old, new) = (work.join("old-none.img"), work.join("new-none.img"));
    if !new.exists() {
        return Err(format!(
            "{} is missing: run `cargo xtask bench delta debian` first",
            new.display()
        ));
    }
    let xz_bytes = match std::env::var("STELE_BENCH_XZ_BYTES") {
        Ok(v) => v
            .parse()
            .map_err(|_| format!("STELE_BENCH_XZ_BYTES={v:?} is not a number"))?,
        Err(_) => {
            let xz = work.join("new-none.img.xz");
            timed(
                Command::new("xz").args(["-9", "-T1", "-c"]).arg(&new),
                "xz -9",
                Some(&xz),
            )?;
            len(&xz)?
        }
    };
    println!("CPU: {}", crate::bench::cpu_model());
    if std::env::var_os("STELE_BENCH_LZC_WRITE").is_some() {
        // The chained form beside the new image, as `stele image build` writes it now
        // (images of an earlier run have none), for an install to measure.
        let start = Instant::now();
        let r = stele_image::lzc::write_beside(&new, true, &mut stele_verifier::progress::Silent)
            .map_err(|e| e.to_string())?;
        println!(
            "  wrote {} ({} bytes in {} frames) in {:.0} s",
            r.path.display(),
            r.len,
            r.frames,
            start.elapsed().as_secs_f64()
        );
    }
    crate::bench_frames::options_table_of(&old, &new, xz_bytes, only)
}

#[cfg(test)]
mod tests {
    #[test]
    fn published_delta_bytes_from_the_delta_line() {
        let out = "delta: old.img -> new.img: 3018067 bytes in 257 frames giving 7000 blocks (...)\ndelta: wrote x\n";
        assert_eq!(super::published_delta_bytes(out, 100), Some(3018167));
        // A delta that gives every block: what the device fetches, as the command says.
        let whole = format!("{out}delta: a device running old.img fetches 3022500 bytes with it (3018067 of delta, 4433 of footer and manifest; the hash tree is rebuilt on the device): 1.40 % of the image\n");
        assert_eq!(super::published_delta_bytes(&whole, 100), Some(3022500));
        assert_eq!(super::published_delta_bytes("delta: wrote x\n", 1), None);
        assert_eq!(
            super::published_delta_bytes("delta: a -> b: many bytes in\n", 1),
            None
        );
    }

    use super::parse_compressors;

    #[test]
    fn compressors_of_erofs_utils_1_5_and_later() {
        let v15 = " -zX[,Y]               X=compressor (Y=compression level, optional)\n\nAvailable compressors are: lz4hc, lz4\n";
        let (yes, no) = parse_compressors(v15);
        assert_eq!(yes, ["lz4hc", "lz4"]);
        assert_eq!(no, ["lzma", "zstd", "deflate"]);
        // erofs-utils 1.9.3: --help lists them without the word, --version with it.
        let v19 = " -zX[,level=Y]  X=compressor (Y=compression level)\n    [:...]  supported compressors and their option ranges are:\n      lz4\n      lz4hc\n      zstd\nmkfs.erofs (erofs-utils) 1.9.3\navailable compressors: lz4, lz4hc, lzma, deflate, zstd\n";
        assert_eq!(
            parse_compressors(v19).0,
            ["lz4hc", "lz4", "lzma", "zstd", "deflate"]
        );
        assert!(parse_compressors("usage: [options] FILE DIRECTORY\n")
            .0
            .is_empty());
    }
    /// The bench reads stele's ways from `stele image diff` (docs/CLI.md's example).
    #[test]
    fn ways_of_image_diff() {
        let out = "diff: OLD.img -> NEW.img: 65792 data blocks of 4096 bytes: 65731 copied from the old image, 2 zero, 59 fetched in 3 ranges (old image: its own hash tree (same salt))\n\
                   diff: a device on OLD.img fetches 683812 bytes (122112 of data, way zstd, 561700 of footer, manifest and hash tree) of the 271585280 bytes of NEW.img\n\
                   diff: way zstd: raw 241664 bytes, zstd 122112 bytes (chosen)\n";
        let w = super::parse_ways(out).unwrap();
        assert_eq!(
            (w.meta, w.raw, w.zstd, w.chosen.as_str(), w.total),
            (561_700, 241_664, Some(122_112), "zstd", 683_812)
        );
        let raw = "diff: a device on O fetches 561764 bytes (64 of data, way raw, 561700 of footer, manifest and hash tree) of the 9 bytes of N\n\
                   diff: way raw: raw 64 bytes (chosen), no zstd way: N.zst: not found\n";
        let w = super::parse_ways(raw).unwrap();
        assert_eq!((w.raw, w.zstd, w.lzc, w.total), (64, None, None, 561_764));
        let lzc = "diff: a device on O fetches 561800 bytes (100 of data, way lzc, 561700 of footer, manifest and hash tree) of the 9 bytes of N\n\
                   diff: way lzc: raw 4096 bytes, zstd 300 bytes, lzc 100 bytes (chosen)\n";
        let w = super::parse_ways(lzc).unwrap();
        assert_eq!(
            (w.zstd, w.lzc, w.chosen.as_str()),
            (Some(300), Some(100), "lzc")
        );
        assert!(super::parse_ways("diff: a device on O fetches 5 bytes\n").is_none());
    }
    #[test]
    fn roots_list_packages_that_changed() {
        use crate::bench_debian::{changed, Root};
        let root = |list: &[(&str, &str)]| Root {
            tar: Default::default(),
            packages: list
                .iter()
                .map(|(p, v)| (p.to_string(), v.to_string()))
                .collect(),
        };
        let a = root(&[("openssl", "3.0.15-1"), ("zlib1g", "1.2.13"), ("gone", "1")]);
        let b = root(&[("openssl", "3.0.16-1"), ("zlib1g", "1.2.13"), ("new", "1")]);
        assert_eq!(changed(&a, &b), (vec!["openssl".to_string()], 1, 1));
    }
}

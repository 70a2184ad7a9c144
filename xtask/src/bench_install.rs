//! The install row of `cargo xtask bench delta debian` (bench_distro.rs): a real
//! `stele update install --disk` of the new image over loopback nginx, with what a
//! vendor uploads served beside it (the compressed forms, the published delta), its bytes
//! against the plan's, its wall time and peak RSS against `zstd --patch-from -d`.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::util::{len, output, timed};

/// A real `stele update install --disk` of `to` (served by the loopback nginx with its
/// compressed forms and the published delta from `from` that [`pair`] wrote, under the
/// name a device looks for) over a disk whose slot a holds `from`, under `/usr/bin/time
/// -v`, its bytes against `stele update plan`'s; against `zstd --patch-from -d` of the
/// same pair (the patch [`pair`] left).
pub(crate) fn install(
    stele: &Path,
    work: &Path,
    public: &Path,
    port: u16,
    from: &Path,
    to: &Path,
) -> Result<(), String> {
    // The image and its compressed forms beside it, as `stele image build` left them.
    let served = work.join("www").join("new.img");
    for (from, at) in [
        (to.to_path_buf(), served.clone()),
        (
            stele_image::zst::path_of(to),
            stele_image::zst::path_of(&served),
        ),
        (
            stele_image::lzc::path_of(to),
            stele_image::lzc::path_of(&served),
        ),
    ] {
        let _ = fs::remove_file(&at);
        if from.exists() {
            fs::hard_link(&from, &at).map_err(|e| format!("{}: {e}", from.display()))?;
        }
    }
    let old_envelope = fs::File::open(from)
        .map_err(|e| e.to_string())
        .and_then(|mut f| {
            let l = len(from)?;
            stele_engine::delta::published::envelope_digest(&mut f, l).map_err(|e| e.to_string())
        })?;
    let delta_at = stele_image::delta::path_of(&served, &old_envelope);
    let _ = fs::remove_file(&delta_at);
    let delta = work.join("pair").join("to.img.delta");
    if delta.exists() {
        fs::hard_link(&delta, &delta_at).map_err(|e| format!("{}: {e}", delta.display()))?;
    }
    let disk = work.join("disk.img");
    let _ = fs::remove_file(&disk);
    let slot_mib = len(from)?.max(len(to)?) / (1 << 20) + 8;
    output(
        Command::new(stele)
            .args(["disk", "create", "--out"])
            .arg(&disk)
            .args(["--slot-size", &format!("{slot_mib}M"), "--a"])
            .arg(from),
        "stele disk create",
    )?;
    let url = format!("http://127.0.0.1:{port}/new.img");
    let plan = output(
        Command::new(stele)
            .args(["update", "plan", "--disk"])
            .arg(&disk)
            .arg("--key")
            .arg(public)
            .arg(&url),
        "stele update plan",
    )?;
    let planned = number_after(&plan, "plan: fetch ")
        .ok_or_else(|| format!("no fetch line in the plan: {plan}"))?;
    let start = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(stele)
        .args(["update", "install", "--disk"])
        .arg(&disk)
        .arg("--key")
        .arg(public)
        .arg(&url)
        .output()
        .map_err(|e| format!("could not start /usr/bin/time: {e}"))?;
    let secs = start.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("stele update install failed: {}", stderr.trim()));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let fetched = number_after(&stdout, "stele: fetched ")
        .ok_or_else(|| format!("no summary line: {stdout}"))?;
    let rss = crate::bench_delta::peak_rss(&stderr);
    let way = stdout
        .lines()
        .find_map(|l| l.split("; way ").nth(1))
        .unwrap_or("?")
        .to_string();
    let patch = work.join("pair").join("patch.zst");
    let decoded = work.join("pair").join("decoded.img");
    let from_arg = format!("--patch-from={}", from.display());
    let t_zstd = timed(
        Command::new("zstd")
            .args(["-q", "-f", "-d", "--long=31", &from_arg])
            .arg(&patch)
            .arg("-o")
            .arg(&decoded),
        "zstd --patch-from -d",
        None,
    )?;
    if fs::read(&decoded).map_err(|e| e.to_string())? != fs::read(to).map_err(|e| e.to_string())? {
        return Err("zstd --patch-from -d did not give the new image".into());
    }
    let _ = fs::remove_file(&decoded);
    println!(
        "    install over loopback nginx (image, .zst, .lzc and the published delta served): way {way}, fetched {fetched} bytes ({}, {:.2} % of the new image), {secs:.2} s, peak RSS {:.1} MiB; zstd --patch-from -d {t_zstd:.2} s; stele/zstd time {:.2}",
        if fetched == planned {
            "as `stele update plan` said".to_string()
        } else {
            format!("`stele update plan` said {planned}")
        },
        100.0 * fetched as f64 / len(to)? as f64,
        rss as f64 / 1024.0,
        secs / t_zstd
    );
    fs::remove_file(&disk).map_err(|e| e.to_string())
}

/// The number that starts the first line of `text` beginning with `prefix`, after it
/// (`plan: fetch N bytes ...`, `stele: fetched N bytes ...`). Pure.
fn number_after(text: &str, prefix: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
}

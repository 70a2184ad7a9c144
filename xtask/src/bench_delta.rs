//! `cargo xtask bench delta`: what a device fetches for an update of a ~256 MiB EROFS slot
//! image, against the whole image and against RAUC's fixed 4 KiB block-hash index on the
//! same pair, for (a) one file changed in place, (b) one file grown by 10 KiB, (c) one new
//! 100 KiB file; then, on a loopback nginx, a fresh install's bytes against the image size,
//! a full download by the fetch client against `curl -o`, and the fetch client's peak RSS.
//!
//! Settings: STELE_BENCH_DELTA_MIB (tree size, default 256), STELE_BENCH_RUNS (downloads
//! per contender, default 5).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::bench::{median, SALT};
use crate::bench_build::{delta, env_u64, make_tree, Rng, MIB};
use crate::util::{build_cli, build_static_fetch, output, target_dir};

/// `stele image build` of `tree` into `out` with the benchmark's key and salt.
pub(crate) fn build_image(
    stele: &Path,
    key: &Path,
    tree: &Path,
    out: &Path,
    version: &str,
) -> Result<(), String> {
    build_salted(stele, key, tree, out, version, SALT)
}

/// [`build_image`] with another salt.
fn build_salted(
    stele: &Path,
    key: &Path,
    tree: &Path,
    out: &Path,
    version: &str,
    salt: &str,
) -> Result<(), String> {
    output(
        Command::new(stele)
            .args(["image", "build", "--rootfs"])
            .arg(tree)
            .arg("--key")
            .arg(key)
            .args([
                "--name",
                "bench",
                "--version",
                version,
                "--rollback-index",
                "2",
            ])
            .args(["--salt", salt, "--out"])
            .arg(out)
            .env("SOURCE_DATE_EPOCH", "0"),
        "stele image build",
    )
    .map(|_| ())
}

/// The bytes `stele image diff` says a device on `old` fetches for `new`: (total, data).
pub(crate) fn diff(stele: &Path, old: &Path, new: &Path) -> Result<(u64, u64), String> {
    let out = output(
        Command::new(stele)
            .args(["image", "diff"])
            .arg(old)
            .arg(new),
        "stele image diff",
    )?;
    let line = out
        .lines()
        .find(|l| l.contains(" fetches "))
        .ok_or_else(|| format!("no fetch line: {out}"))?;
    // "... fetches N bytes (D of data, M of ...) of the L bytes ..."
    let pos = line.find(" fetches ").unwrap_or(0);
    let after: Vec<u64> = line[pos..]
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    Ok((after[0], after[1]))
}

pub(crate) struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nginx on 127.0.0.1:`port` serving `root` (no master process, as the current user).
pub(crate) fn nginx(dir: &Path, root: &Path, port: u16) -> Result<Nginx, String> {
    fs::create_dir_all(dir.join("tmp")).map_err(|e| e.to_string())?;
    let conf = dir.join("nginx.conf");
    fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{}}\nhttp {{ access_log off; sendfile on; client_body_temp_path {d}/tmp;\n\
             server {{ listen 127.0.0.1:{port}; root {r}; }} }}\n",
            d = dir.display(),
            r = root.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("could not start nginx: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("nginx did not start".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Nginx(child))
}

/// Runs `cmd` under `/usr/bin/time -v`: (seconds, peak RSS in KiB).
fn timed_rss(cmd: &mut Command) -> Result<(f64, u64), String> {
    let start = Instant::now();
    let out = cmd
        .output()
        .map_err(|e| format!("could not start /usr/bin/time: {e}"))?;
    let secs = start.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!(
            "download failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok((secs, peak_rss(&String::from_utf8_lossy(&out.stderr))))
}

/// The peak RSS in KiB that `/usr/bin/time -v` wrote to `stderr` (0 without it). Pure.
pub(crate) fn peak_rss(stderr: &str) -> u64 {
    stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// `cargo xtask bench delta`.
pub fn delta_bench() -> Result<(), String> {
    crate::setup::setup()?;
    let stele = build_cli()?;
    let fetch = build_static_fetch()?;
    let mib = env_u64("STELE_BENCH_DELTA_MIB", 256)?;
    let runs = usize::try_from(env_u64("STELE_BENCH_RUNS", 5)?.max(1)).unwrap_or(5);
    let bench = target_dir().join("bench");
    let work = bench.join("delta");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(work.join("www")).map_err(|e| e.to_string())?;
    let tree = bench.join(format!("delta-tree-{mib}m"));
    let (files, bytes) = make_tree(&tree, mib)?;
    let (key, public) = (work.join("k.key"), work.join("k.pem"));
    output(
        Command::new(&stele)
            .args(["keygen", "--private"])
            .arg(&key)
            .arg("--public")
            .arg(&public),
        "stele keygen",
    )?;
    let old = work.join("old.img");
    build_image(&stele, &key, &tree, &old, "1")?;
    let old_bytes = fs::read(&old).map_err(|e| e.to_string())?;
    println!(
        "bench delta: a {:.0} MiB tree of {files} files; EROFS slot image {} bytes ({:.1} MiB)",
        bytes as f64 / MIB,
        old_bytes.len(),
        old_bytes.len() as f64 / MIB
    );
    println!(
        "  {:<34} {:>12} {:>12} {:>14} {:>10}",
        "change", "stele", "RAUC 4 KiB", "changed blocks", "of image"
    );
    let in_place = tree.join("d050").join("f000050");
    let grown = tree.join("d010").join("f000010");
    let added = tree.join("d000").join("new-100k");
    let scenarios: [(&str, &Path); 3] = [
        ("(a) one file changed in place", &in_place),
        ("(b) one file grown by 10 KiB", &grown),
        ("(c) one new 100 KiB file", &added),
    ];
    let mut last_new = PathBuf::new();
    for (i, (name, path)) in scenarios.iter().enumerate() {
        let original = fs::read(path).ok();
        let mut content = original.clone().unwrap_or_default();
        match i {
            0 => {
                // 100 bytes in the middle, same length.
                let mid = content.len() / 2;
                let mut patch = vec![0u8; 100.min(content.len())];
                Rng(11).fill(&mut patch);
                let end = (mid + patch.len()).min(content.len());
                content[mid..end].copy_from_slice(&patch[..end - mid]);
            }
            1 => {
                let mut extra = vec![0u8; 10 << 10];
                Rng(7).fill(&mut extra);
                content.extend_from_slice(&extra);
            }
            _ => {
                content = vec![0u8; 100 << 10];
                Rng(5).fill(&mut content);
            }
        }
        fs::write(path, &content).map_err(|e| e.to_string())?;
        let new = work.join(format!("new-{}.img", i + 1));
        let other_salt = work.join("new-other-salt.img");
        let built = build_image(&stele, &key, &tree, &new, "2").and_then(|()| {
            if i == 0 {
                build_salted(&stele, &key, &tree, &other_salt, "2", &"ab".repeat(32))
            } else {
                Ok(())
            }
        });
        match &original {
            Some(o) => fs::write(path, o).map_err(|e| e.to_string())?,
            None => fs::remove_file(path).map_err(|e| e.to_string())?,
        }
        built?;
        let new_bytes = fs::read(&new).map_err(|e| e.to_string())?;
        let (fetched, _data) = diff(&stele, &old, &new)?;
        let (_, changed, fresh) = delta(&old_bytes, &new_bytes);
        let rauc = fresh as u64 * 4096;
        println!(
            "  {name:<34} {fetched:>12} {rauc:>12} {changed:>14} {:>9.3} %",
            100.0 * fetched as f64 / new_bytes.len() as f64
        );
        if i == 0 {
            let (f2, _) = diff(&stele, &old, &other_salt)?;
            println!(
                "  {:<34} {f2:>12} {:>12} {:>14} {:>9.3} %",
                "(a) built with another salt",
                "-",
                "-",
                100.0 * f2 as f64 / new_bytes.len() as f64
            );
        }
        last_new = new;
    }
    println!("  (stele: bytes fetched, footer, manifest and hash tree included; RAUC: 4 KiB chunks of the new image whose content the old image lacks; changed blocks: 4 KiB blocks that differ at the same offset)");

    // On a loopback nginx: a fresh install, the fetch client against curl.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())?;
    let served = work.join("www").join("image.img");
    fs::copy(&last_new, &served).map_err(|e| e.to_string())?;
    let size = fs::metadata(&served).map_err(|e| e.to_string())?.len();
    // Its compressed form (written by `stele image build`) beside it: the fresh install
    // below takes it when it costs fewer bytes than the raw image.
    let zst_len = {
        let mut z = last_new.clone().into_os_string();
        z.push(".zst");
        let zs = work.join("www").join("image.img.zst");
        fs::copy(&z, &zs).map_err(|e| format!("{}: {e}", PathBuf::from(&z).display()))?
    };
    let _server = nginx(&work.join("nginx"), &work.join("www"), port)?;
    let url = format!("http://127.0.0.1:{port}/image.img");
    // Warm the page cache.
    let _ = fs::read(&served);
    let (mut curl, mut client, mut rss) = (Vec::new(), Vec::new(), 0u64);
    let dl = work.join("download.img");
    for _ in 0..runs {
        let (t, _) = timed_rss(
            Command::new("/usr/bin/time")
                .args(["-v", "curl", "-s", "-f", "-o"])
                .arg(&dl)
                .arg(&url),
        )?;
        curl.push(t);
        let (t, r) = timed_rss(
            Command::new("/usr/bin/time")
                .arg("-v")
                .arg(&fetch)
                .arg("--output")
                .arg(&dl)
                .arg(&url),
        )?;
        client.push(t);
        rss = rss.max(r);
        if fs::read(&dl).map_err(|e| e.to_string())?
            != fs::read(&served).map_err(|e| e.to_string())?
        {
            return Err("the fetch client's download differs from the file".into());
        }
    }
    let (c, s) = (median(&mut curl), median(&mut client));
    // A fresh install: slot a holds an unrelated tiny image, nothing to reuse.
    let tiny_tree = work.join("tiny");
    fs::create_dir_all(tiny_tree.join("etc/stele")).map_err(|e| e.to_string())?;
    fs::create_dir_all(tiny_tree.join("bin")).map_err(|e| e.to_string())?;
    fs::write(
        tiny_tree.join("etc/stele/system.toml"),
        "exec = [\"/bin/app\"]\n",
    )
    .map_err(|e| e.to_string())?;
    fs::write(tiny_tree.join("bin/app"), "#!/bin/sh\n").map_err(|e| e.to_string())?;
    output(
        Command::new("chmod")
            .arg("755")
            .arg(tiny_tree.join("bin/app")),
        "chmod",
    )?;
    let tiny = work.join("tiny.img");
    build_image(&stele, &key, &tiny_tree, &tiny, "0")?;
    let disk = work.join("disk.img");
    let slot_mib = size / (1 << 20) + 8;
    output(
        Command::new(&stele)
            .args(["disk", "create", "--out"])
            .arg(&disk)
            .args(["--slot-size", &format!("{slot_mib}M"), "--a"])
            .arg(&tiny),
        "stele disk create",
    )?;
    let start = Instant::now();
    let out = output(
        Command::new(&stele)
            .args(["update", "install", "--disk"])
            .arg(&disk)
            .arg("--key")
            .arg(&public)
            .arg(&url),
        "stele update install URL",
    )?;
    let install_secs = start.elapsed().as_secs_f64();
    let fresh: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("stele: fetched "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("no summary line: {out}"))?;
    let way = out
        .lines()
        .find_map(|l| l.strip_prefix("stele: fetched "))
        .and_then(|l| l.rsplit_once("; way "))
        .map_or("?", |w| w.1)
        .to_string();
    let mib_s = |secs: f64| size as f64 / MIB / secs;
    println!(
        "  compressed form image.img.zst (zstd frames of 256 KiB): {zst_len} bytes = {:.1} % of the image; the fresh install took way {way}",
        100.0 * zst_len as f64 / size as f64
    );
    println!("  on loopback nginx, {size} bytes, {runs} runs each (medians):");
    println!(
        "    fresh install: fetched {fresh} bytes = {:.3} % of the image (target <= 100.5 %), {install_secs:.2} s",
        100.0 * fresh as f64 / size as f64
    );
    println!(
        "    curl -o                      {c:.3} s ({:.0} MiB/s)",
        mib_s(c)
    );
    println!(
        "    stele-fetch --output         {s:.3} s ({:.0} MiB/s), {:.1} % of curl's time (target <= 105 %)",
        mib_s(s),
        100.0 * s / c
    );
    println!(
        "    stele-fetch peak RSS         {:.1} MiB (target <= 32 MiB)",
        rss as f64 / 1024.0
    );
    Ok(())
}

//! `cargo xtask bench verity`: stele's hash tree build and check against `veritysetup
//! format|verify --no-superblock` on the same 1 GiB file with the same salt, and the
//! machine's 2-core sha256 limit on 4 KiB blocks (`openssl speed`), in the same run.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::util::{build_cli, output, target_dir};

const SIZE: u64 = 1 << 30;
const RUNS: usize = 5;
pub(crate) const SALT: &str = "5ee1e57a7e5a175ee1e57a7e5a175ee1e57a7e5a175ee1e57a7e5a175ee1e5aa";

/// Runs the benchmark and prints medians and the ratio.
pub fn verity() -> Result<(), String> {
    crate::setup::setup()?;
    let stele = build_cli()?;
    let dir = target_dir().join("bench");
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let data = dir.join("verity-1g.img");
    if fs::metadata(&data).map(|m| m.len()).ok() != Some(SIZE) {
        eprintln!(
            "xtask: writing {} (1 GiB of pseudo-random data)",
            data.display()
        );
        write_data(&data)?;
    }
    // Warm the page cache so neither side pays for the first read.
    let _ = fs::read(&data);
    let stele_hash = dir.join("stele.hash");
    let vs_hash = dir.join("veritysetup.hash");
    let mut t_stele = Vec::new();
    let mut t_vs = Vec::new();
    let mut root_stele = String::new();
    let mut root_vs = String::new();
    let mut cpu_stele = Vec::new();
    for i in 0..RUNS {
        for (which, times, root, hash) in [
            ("stele", &mut t_stele, &mut root_stele, &stele_hash),
            ("veritysetup", &mut t_vs, &mut root_vs, &vs_hash),
        ] {
            File::create(hash).map_err(|e| format!("creating {}: {e}", hash.display()))?;
            let mut cmd = if which == "stele" {
                let mut c = Command::new(&stele);
                c.args(["verity", "format"]);
                c
            } else {
                let mut c = Command::new("veritysetup");
                c.args(["format", "--no-superblock"]);
                c
            };
            cmd.arg(&data).arg(hash).args(["--salt", SALT]);
            let start = Instant::now();
            let cpu0 = children_cpu_secs()?;
            let out = output(&mut cmd, which)?;
            let secs = start.elapsed().as_secs_f64();
            let cpu = children_cpu_secs()? - cpu0;
            *root = root_hash(&out).ok_or_else(|| format!("{which} printed no Root hash line"))?;
            times.push(secs);
            if which == "stele" {
                cpu_stele.push(cpu);
            }
            eprintln!("xtask: run {}: {which} {secs:.3} s", i + 1);
        }
    }
    if root_stele != root_vs {
        return Err(format!(
            "root hashes differ: stele {root_stele}, veritysetup {root_vs}"
        ));
    }
    let same = fs::read(&stele_hash).map_err(|e| e.to_string())?
        == fs::read(&vs_hash).map_err(|e| e.to_string())?;
    if !same {
        return Err("hash areas differ between stele and veritysetup".into());
    }
    let (mut v_stele, mut v_vs) = (Vec::new(), Vec::new());
    let mut cpu_verify = Vec::new();
    for i in 0..RUNS {
        for (which, times) in [("stele", &mut v_stele), ("veritysetup", &mut v_vs)] {
            let mut cmd = if which == "stele" {
                let mut c = Command::new(&stele);
                c.args(["verity", "verify"])
                    .arg(&data)
                    .arg(&stele_hash)
                    .arg(&root_stele)
                    .args(["--salt", SALT]);
                c
            } else {
                let mut c = Command::new("veritysetup");
                c.args(["verify", "--no-superblock", "--salt", SALT])
                    .arg(&data)
                    .arg(&vs_hash)
                    .arg(&root_vs);
                c
            };
            let start = Instant::now();
            let cpu0 = children_cpu_secs()?;
            output(&mut cmd, which)?;
            let secs = start.elapsed().as_secs_f64();
            if which == "stele" {
                cpu_verify.push(children_cpu_secs()? - cpu0);
            }
            times.push(secs);
            eprintln!("xtask: verify run {}: {which} {secs:.3} s", i + 1);
        }
    }
    let limit = sha256_limit()?;
    let ms = median(&mut t_stele);
    let mv = median(&mut t_vs);
    let vs = median(&mut v_stele);
    let vv = median(&mut v_vs);
    let mib = |secs: f64| 1024.0 / secs;
    println!("bench verity: 1 GiB, sha256, 4096-byte blocks, {RUNS} runs each");
    println!(
        "  stele verity format                 median {ms:.3} s  ({:.0} MiB/s)",
        mib(ms)
    );
    println!(
        "  veritysetup format --no-superblock  median {mv:.3} s  ({:.0} MiB/s)",
        mib(mv)
    );
    println!(
        "  ratio stele/veritysetup (format) = {:.2} (below 1 means stele is faster)",
        ms / mv
    );
    println!(
        "  stele verity verify                 median {vs:.3} s  ({:.0} MiB/s)",
        mib(vs)
    );
    println!(
        "  veritysetup verify --no-superblock  median {vv:.3} s  ({:.0} MiB/s)",
        mib(vv)
    );
    println!("  ratio stele/veritysetup (verify) = {:.2}", vs / vv);
    println!("  sha256 limit, 2 processes, 4096-byte blocks (2 x openssl speed): {limit:.0} MiB/s");
    println!(
        "  stele at {:.0} % (format) and {:.0} % (verify) of that limit (target >= 75 %)",
        100.0 * mib(ms) / limit,
        100.0 * mib(vs) / limit
    );
    // Wall time depends on what else runs on the machine; CPU time much less: the MiB
    // stele hashes per CPU-second against one openssl process's rate (half the limit).
    let (cf, cv) = (median(&mut cpu_stele), median(&mut cpu_verify));
    println!(
        "  stele CPU time (user+sys) median {cf:.3} s (format), {cv:.3} s (verify): {:.0} and {:.0} MiB per CPU-second,",
        mib(cf),
        mib(cv)
    );
    println!(
        "  {:.0} % and {:.0} % of one core's openssl rate ({:.0} MiB/s); the wall-clock percentages above",
        100.0 * mib(cf) / (limit / 2.0),
        100.0 * mib(cv) / (limit / 2.0),
        limit / 2.0
    );
    println!(
        "  hold only on an otherwise idle machine (load average now: {})",
        load_average()
    );
    println!("  root hash (both): {root_stele}; hash areas identical");
    Ok(())
}

/// The machine's sha256 throughput on 4 KiB blocks with 2 processes, in MiB/s: two
/// `openssl speed -bytes 4096 -seconds 3 sha256` at the same time, their rates added
/// (`openssl speed -multi 2 -bytes 4096` misreports the rate in OpenSSL 3.0; its table is
/// in 1000s of bytes per second).
fn sha256_limit() -> Result<f64, String> {
    let spawn = || {
        Command::new("openssl")
            .args(["speed", "-bytes", "4096", "-seconds", "3", "sha256"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("could not start openssl speed: {e}"))
    };
    let children = [spawn()?, spawn()?];
    let mut total = 0.0;
    for c in children {
        let out = c
            .wait_with_output()
            .map_err(|e| format!("openssl speed: {e}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .rev()
            .find(|l| l.trim_start().starts_with("sha256"))
            .ok_or_else(|| format!("no sha256 line in openssl's output: {text}"))?;
        let k: f64 = line
            .split_whitespace()
            .last()
            .and_then(|v| v.trim_end_matches('k').parse().ok())
            .ok_or_else(|| format!("cannot read openssl's rate from {line:?}"))?;
        total += k * 1000.0 / (1024.0 * 1024.0);
    }
    Ok(total)
}

/// The 1-, 5- and 15-minute load averages (/proc/loadavg), as text.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// CPU seconds (user + system) of this process's waited-for children so far:
/// `cutime` + `cstime` of /proc/self/stat, in clock ticks of `getconf CLK_TCK`.
fn children_cpu_secs() -> Result<f64, String> {
    let hz = clock_ticks()?;
    let stat =
        fs::read_to_string("/proc/self/stat").map_err(|e| format!("/proc/self/stat: {e}"))?;
    // The fields after the command name (which may hold spaces) end at its last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64, String> {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| format!("/proc/self/stat: no field {}", i + 3))
    };
    Ok((ticks(13)? + ticks(14)?) / hz)
}

/// Clock ticks per second, asked once (a `getconf` run would add to the children's time).
fn clock_ticks() -> Result<f64, String> {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    if let Some(t) = TICKS.get() {
        return Ok(*t);
    }
    let out = output(Command::new("getconf").arg("CLK_TCK"), "getconf")?;
    let t = out
        .trim()
        .parse()
        .map_err(|_| format!("getconf CLK_TCK printed {out:?}"))?;
    Ok(*TICKS.get_or_init(|| t))
}

pub(crate) fn root_hash(out: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .map(|s| s.trim().to_owned())
}

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn write_data(path: &Path) -> Result<(), String> {
    let f = File::create(path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..(SIZE >> 20) {
        for chunk in buf.chunks_exact_mut(8) {
            // xorshift64*: cheap, deterministic filler.
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            chunk.copy_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        w.write_all(&buf)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    w.flush()
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// The CPU model and the number of CPUs (/proc/cpuinfo), for benchmark headers.
pub(crate) fn cpu_model() -> String {
    let info = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_string();
    let n = info.lines().filter(|l| l.starts_with("processor")).count();
    format!("{model} x {n}")
}

//! `cargo xtask fuzz [--seconds N] [--target T]... [--sanitizer S] [--seeds-only]`: writes
//! the seed corpora,
//! builds the cargo-fuzz targets with the nightly toolchain, runs each target N seconds and
//! prints its execs, coverage, corpus size and how deep its corpus gets into the checks.
//! Fails on any crash, timeout or out-of-memory, naming the input libFuzzer saved.
//!
//! The targets, their seeds and the depth replay are `stele_fuzz_inputs::TARGETS`; this file
//! only runs programs and counts. Directories, under the cargo target directory:
//! `fuzz-seeds/<t>/` (rewritten every run), `fuzz-corpus/<t>/` (what libFuzzer found, kept
//! from run to run), `fuzz-artifacts/<t>/` (failing inputs), `fuzz-logs/<t>.log`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use stele_fuzz_inputs::{Target, TARGETS};

use crate::util::{root, target_dir};

/// Seconds per target when `--seconds` is not given.
const DEFAULT_SECONDS: u64 = 30;
/// libFuzzer's limit for one input, in seconds (`-timeout`).
const INPUT_TIMEOUT: u64 = 10;
/// libFuzzer's memory limit (`-rss_limit_mb`; also its malloc limit).
const RSS_LIMIT_MB: u64 = 2048;
/// Sanitizers `--sanitizer` accepts. `none` is the default: the code under test is safe
/// Rust (the compiler's checks find what AddressSanitizer would), and without it the
/// targets run three to four times as many inputs; `address` is for campaigns that also
/// want the unsafe code of the dependencies (sha2, curve25519) watched.
const SANITIZERS: &[&str] = &["none", "address"];

#[derive(Debug)]
struct Options {
    seconds: u64,
    targets: Vec<&'static Target>,
    sanitizer: &'static str,
    seeds_only: bool,
}

impl Options {
    /// cargo-fuzz build options, the same for the build and every run (`-a`: debug
    /// assertions and overflow checks, so that an overflow is a crash, not a wrapped value).
    fn build_flags(&self) -> [&'static str; 3] {
        ["-a", "--sanitizer", self.sanitizer]
    }
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        seconds: DEFAULT_SECONDS,
        targets: Vec::new(),
        sanitizer: SANITIZERS[0],
        seeds_only: false,
    };
    let names = || {
        TARGETS
            .iter()
            .map(|t| t.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                let v = it.next().ok_or("--seconds needs a number")?;
                o.seconds = v
                    .parse()
                    .ok()
                    .filter(|&s| s > 0)
                    .ok_or_else(|| format!("--seconds {v}: not a positive whole number"))?;
            }
            "--target" => {
                let v = it.next().ok_or("--target needs a target name")?;
                let t = stele_fuzz_inputs::target(v).ok_or_else(|| {
                    format!("--target {v}: no such target (targets: {})", names())
                })?;
                o.targets.push(t);
            }
            "--sanitizer" => {
                let v = it.next().ok_or("--sanitizer needs a name")?;
                o.sanitizer = SANITIZERS.iter().find(|s| *s == v).ok_or_else(|| {
                    format!("--sanitizer {v}: use one of {}", SANITIZERS.join(", "))
                })?;
            }
            "--seeds-only" => o.seeds_only = true,
            other => {
                return Err(format!(
                    "fuzz: unknown option {other}; usage: cargo xtask fuzz [--seconds N] \
                     [--target T]... [--sanitizer none|address] [--seeds-only] (targets: {})",
                    names()
                ))
            }
        }
    }
    if o.targets.is_empty() {
        o.targets = TARGETS.iter().collect();
    }
    Ok(o)
}

fn dir(kind: &str, t: &Target) -> PathBuf {
    target_dir().join(kind).join(t.name)
}

fn io_err(path: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", path.display())
}

/// Replaces `fuzz-seeds/<t>/` by the target's seeds; returns their count and bytes.
fn write_seeds(t: &Target) -> Result<(usize, u64), String> {
    let d = dir("fuzz-seeds", t);
    if d.exists() {
        fs::remove_dir_all(&d).map_err(|e| io_err(&d, e))?;
    }
    fs::create_dir_all(&d).map_err(|e| io_err(&d, e))?;
    let seeds = (t.seeds)();
    let mut bytes = 0;
    for s in &seeds {
        let p = d.join(format!("seed-{}", s.name));
        fs::write(&p, &s.bytes).map_err(|e| io_err(&p, e))?;
        bytes += s.bytes.len() as u64;
    }
    Ok((seeds.len(), bytes))
}

/// `rustup run nightly cargo ...` in the repository root, clear of what the stable cargo
/// that runs this xtask put in the environment.
fn nightly_cargo() -> Command {
    let mut c = Command::new("rustup");
    c.args(["run", "nightly", "cargo"])
        .current_dir(root())
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTUP_TOOLCHAIN");
    c
}

/// The nightly toolchain (cargo-fuzz needs it for `-Zsanitizer`), then cargo-fuzz itself.
fn ensure_tools() -> Result<(), String> {
    let list = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .map_err(|e| {
            format!(
                "cannot run rustup ({e}): fuzzing needs a nightly toolchain through rustup; \
                 install rustup, then `rustup toolchain install nightly`"
            )
        })?;
    let list = String::from_utf8_lossy(&list.stdout);
    if !list.lines().any(|l| l.starts_with("nightly")) {
        return Err(
            "no nightly toolchain (`rustup toolchain list` shows none): cargo-fuzz \
                    needs one for -Zsanitizer; install it with `rustup toolchain install nightly`"
                .into(),
        );
    }
    let have_fuzz = nightly_cargo()
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_fuzz {
        eprintln!(
            "xtask: cargo-fuzz is not installed: installing it from crates.io \
             (cargo install cargo-fuzz --locked)"
        );
        crate::util::run(
            crate::util::cargo().args(["install", "cargo-fuzz", "--locked"]),
            "cargo install cargo-fuzz --locked",
        )?;
    }
    Ok(())
}

/// What libFuzzer reported at the end of a run.
#[derive(Debug, Default)]
struct Stats {
    execs: Option<u64>,
    exec_per_sec: Option<u64>,
    cov: Option<u64>,
    ft: Option<u64>,
    /// `corp: N/SIZE`: inputs in the in-memory corpus and their size as libFuzzer prints it.
    corpus: Option<(u64, String)>,
    peak_rss_mb: Option<u64>,
    /// Inputs libFuzzer wrote because they failed (crash-, timeout-, oom-, leak-).
    artifacts: Vec<PathBuf>,
}

/// The number after `key` in `line` (`cov: 123`, `stat::x: 123`).
fn number_after(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

fn parse_stats(log: &str) -> Stats {
    let mut s = Stats::default();
    for line in log.lines() {
        if line.starts_with('#') && line.contains(" cov: ") {
            s.cov = number_after(line, " cov: ").or(s.cov);
            s.ft = number_after(line, " ft: ").or(s.ft);
            if let Some(c) = line
                .split(" corp: ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
            {
                if let Some((n, size)) = c.split_once('/') {
                    if let Ok(n) = n.parse() {
                        s.corpus = Some((n, size.to_string()));
                    }
                }
            }
        }
        s.execs = number_after(line, "stat::number_of_executed_units:").or(s.execs);
        s.exec_per_sec = number_after(line, "stat::average_exec_per_sec:").or(s.exec_per_sec);
        s.peak_rss_mb = number_after(line, "stat::peak_rss_mb:").or(s.peak_rss_mb);
        if let Some(p) = line.split("Test unit written to ").nth(1) {
            s.artifacts.push(PathBuf::from(p.trim()));
        }
    }
    s
}

/// Files in `d` (not below) and their total size.
fn dir_size(d: &Path) -> (usize, u64) {
    let Ok(entries) = fs::read_dir(d) else {
        return (0, 0);
    };
    entries
        .flatten()
        .filter_map(|e| e.metadata().ok().filter(|m| m.is_file()))
        .fold((0, 0), |(n, b), m| (n + 1, b + m.len()))
}

/// How many inputs in `d` stopped at each stage (index = depth).
fn replay(t: &Target, d: &Path) -> Vec<usize> {
    let mut counts = vec![0; t.stages.len() + 1];
    for e in fs::read_dir(d).into_iter().flatten().flatten() {
        if let Ok(bytes) = fs::read(e.path()) {
            counts[(t.depth)(&bytes).min(t.stages.len())] += 1;
        }
    }
    counts
}

/// The result of one target's run.
#[derive(Debug)]
struct Report {
    name: &'static str,
    stats: Stats,
    seeds: Vec<usize>,
    found: Vec<usize>,
    corpus_dir: (usize, u64),
    failure: Option<String>,
}

fn run_target(t: &'static Target, o: &Options) -> Result<Report, String> {
    let seconds = o.seconds;
    let corpus = dir("fuzz-corpus", t);
    let seeds = dir("fuzz-seeds", t);
    let artifacts = dir("fuzz-artifacts", t);
    let logs = target_dir().join("fuzz-logs");
    for d in [&corpus, &artifacts, &logs] {
        fs::create_dir_all(d).map_err(|e| io_err(d, e))?;
    }
    let log_path = logs.join(format!("{}.log", t.name));
    let log = File::create(&log_path).map_err(|e| io_err(&log_path, e))?;
    let log2 = log.try_clone().map_err(|e| io_err(&log_path, e))?;
    eprintln!(
        "xtask: fuzz {}: {seconds} s (log: {})",
        t.name,
        log_path.display()
    );
    let start = Instant::now();
    let status = nightly_cargo()
        .args(["fuzz", "run"])
        .args(o.build_flags())
        .arg(t.name)
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT}"))
        .arg(format!("-rss_limit_mb={RSS_LIMIT_MB}"))
        .arg("-print_final_stats=1")
        // The trailing slash: libFuzzer prepends the prefix to the file name.
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .status()
        .map_err(|e| format!("could not start cargo fuzz run {}: {e}", t.name))?;
    let text = fs::read_to_string(&log_path).map_err(|e| io_err(&log_path, e))?;
    let stats = parse_stats(&text);
    let failure = if status.success() && stats.artifacts.is_empty() {
        None
    } else {
        let tail: Vec<&str> = text.lines().rev().take(30).collect();
        eprintln!("xtask: fuzz {}: the last lines of its log:", t.name);
        for l in tail.iter().rev() {
            eprintln!("    {l}");
        }
        Some(match stats.artifacts.first() {
            Some(a) => format!(
                "fuzz target {} failed ({status}); input saved at {}; reproduce with \
                 `cargo +nightly fuzz run {} {} {}`; log: {}",
                t.name,
                a.display(),
                o.build_flags().join(" "),
                t.name,
                a.display(),
                log_path.display()
            ),
            None => format!(
                "fuzz target {} failed ({status}) without saving an input; log: {}",
                t.name,
                log_path.display()
            ),
        })
    };
    eprintln!(
        "xtask: fuzz {}: done in {:.0} s",
        t.name,
        start.elapsed().as_secs_f64()
    );
    Ok(Report {
        name: t.name,
        seeds: replay(t, &seeds),
        found: replay(t, &corpus),
        corpus_dir: dir_size(&corpus),
        stats,
        failure,
    })
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "?".into(), |v| v.to_string())
}

/// Inputs past the first check, of all in `counts`.
fn past_first(counts: &[usize]) -> String {
    let all: usize = counts.iter().sum();
    format!("{}/{all}", all - counts.first().copied().unwrap_or(0))
}

fn print_reports(reports: &[Report], o: &Options) {
    println!();
    println!(
        "fuzz: {} s per target, sanitizer {} (-timeout={INPUT_TIMEOUT} -rss_limit_mb={RSS_LIMIT_MB})",
        o.seconds, o.sanitizer
    );
    println!();
    println!("| target | execs | exec/s | cov | ft | corpus (in memory) | new inputs on disk | past the first check: seeds | found |");
    println!("| --- | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: |");
    for r in reports {
        let s = &r.stats;
        let corpus = s
            .corpus
            .as_ref()
            .map_or_else(|| "?".into(), |(n, size)| format!("{n} inputs, {size}"));
        println!(
            "| {} | {} | {} | {} | {} | {corpus} | {} files, {} bytes | {} | {} |",
            r.name,
            opt(s.execs),
            opt(s.exec_per_sec),
            opt(s.cov),
            opt(s.ft),
            r.corpus_dir.0,
            r.corpus_dir.1,
            past_first(&r.seeds),
            past_first(&r.found),
        );
    }
    println!();
    for r in reports {
        let t = stele_fuzz_inputs::target(r.name).expect("a known target");
        let stopped = |counts: &[usize]| {
            let mut parts: Vec<String> = t
                .stages
                .iter()
                .zip(counts)
                .map(|(stage, n)| format!("{stage} {n}"))
                .collect();
            parts.push(format!("passed all {}", counts[t.stages.len()]));
            parts.join(", ")
        };
        println!("{}: stopped at: seeds: {}", r.name, stopped(&r.seeds));
        println!("{}: stopped at: found: {}", r.name, stopped(&r.found));
    }
}

/// `cargo xtask fuzz`.
pub fn fuzz(args: &[String]) -> Result<(), String> {
    let o = parse(args)?;
    for t in &o.targets {
        let (n, bytes) = write_seeds(t)?;
        eprintln!(
            "xtask: fuzz seeds: {}: {n} inputs, {bytes} bytes in {}",
            t.name,
            dir("fuzz-seeds", t).display()
        );
    }
    if o.seeds_only {
        return Ok(());
    }
    ensure_tools()?;
    let mut build = nightly_cargo();
    build.args(["fuzz", "build"]).args(o.build_flags());
    if o.targets.len() == 1 {
        build.arg(o.targets[0].name);
    }
    crate::util::run(&mut build, "cargo +nightly fuzz build")?;
    let mut reports = Vec::new();
    for t in &o.targets {
        reports.push(run_target(t, &o)?);
    }
    print_reports(&reports, &o);
    let failures: Vec<&str> = reports
        .iter()
        .filter_map(|r| r.failure.as_deref())
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\nxtask: error: "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_stats_are_read() {
        let log = "#2\tINITED cov: 10 ft: 11 corp: 1/1b exec/s: 0 rss: 30Mb\n\
                   #1000\tNEW    cov: 120 ft: 300 corp: 40/2Kb lim: 4 exec/s: 0 rss: 31Mb\n\
                   #50000\tDONE   cov: 123 ft: 456 corp: 41/2151b lim: 4096 exec/s: 1666 rss: 44Mb\n\
                   Done 50000 runs in 30 second(s)\n\
                   stat::number_of_executed_units: 50000\n\
                   stat::average_exec_per_sec:     1666\n\
                   stat::peak_rss_mb:              44\n";
        let s = parse_stats(log);
        assert_eq!(
            (s.execs, s.exec_per_sec, s.peak_rss_mb),
            (Some(50000), Some(1666), Some(44))
        );
        assert_eq!((s.cov, s.ft), (Some(123), Some(456)));
        assert_eq!(s.corpus, Some((41, "2151b".to_string())));
        assert!(s.artifacts.is_empty());
    }

    #[test]
    fn a_saved_input_is_found() {
        let log = "==1== ERROR: libFuzzer: deadly signal\n\
                   artifact_prefix='/t/fuzz-artifacts/footer/'; Test unit written to /t/fuzz-artifacts/footer/crash-abc\n";
        let s = parse_stats(log);
        assert_eq!(
            s.artifacts,
            [PathBuf::from("/t/fuzz-artifacts/footer/crash-abc")]
        );
    }

    #[test]
    fn options() {
        let o = parse(&[
            "--seconds".into(),
            "5".into(),
            "--target".into(),
            "footer".into(),
        ])
        .unwrap();
        assert_eq!((o.seconds, o.targets.len(), o.seeds_only), (5, 1, false));
        assert_eq!(o.sanitizer, "none");
        let o = parse(&["--sanitizer".into(), "address".into()]).unwrap();
        assert_eq!(o.build_flags(), ["-a", "--sanitizer", "address"]);
        assert!(parse(&["--sanitizer".into(), "thread".into()]).is_err());
        assert_eq!(parse(&[]).unwrap().targets.len(), TARGETS.len());
        assert!(parse(&["--target".into(), "nope".into()]).is_err());
        assert!(parse(&["--seconds".into(), "0".into()]).is_err());
    }
}

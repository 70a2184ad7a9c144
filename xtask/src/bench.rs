//! `cargo xtask bench verity`: stele's hash tree build against `veritysetup format
//! --no-superblock` on the same 1 GiB file with the same salt, in the same run.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use crate::util::{build_cli, output, target_dir};

const SIZE: u64 = 1 << 30;
const RUNS: usize = 5;
const SALT: &str = "5ee1e57a7e5a175ee1e57a7e5a175ee1e57a7e5a175ee1e57a7e5a175ee1e5aa";

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
            let out = output(&mut cmd, which)?;
            let secs = start.elapsed().as_secs_f64();
            *root = root_hash(&out).ok_or_else(|| format!("{which} printed no Root hash line"))?;
            times.push(secs);
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
    let ms = median(&mut t_stele);
    let mv = median(&mut t_vs);
    println!("bench verity: 1 GiB, sha256, 4096-byte blocks, {RUNS} runs each");
    println!(
        "  stele verity format                 median {ms:.3} s  ({:.0} MiB/s)",
        1024.0 / ms
    );
    println!(
        "  veritysetup format --no-superblock  median {mv:.3} s  ({:.0} MiB/s)",
        1024.0 / mv
    );
    println!(
        "  ratio stele/veritysetup = {:.2} (below 1 means stele is faster)",
        ms / mv
    );
    println!("  root hash (both): {root_stele}; hash areas identical");
    Ok(())
}

fn root_hash(out: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .map(|s| s.trim().to_owned())
}

fn median(v: &mut [f64]) -> f64 {
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

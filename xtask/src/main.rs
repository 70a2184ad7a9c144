//! cargo xtask: set-up of host tools and the test kernel, the test suite, the demo,
//! benchmarks, fuzzing.
//!
//! Usage: `cargo xtask setup | test | demo | bench verity|build|erofs-delta|boot|delta [synthetic|debian|debian-erofs|debian-pairs|debian-frames [ONLY]] | fuzz`.
//! Everything here runs other programs; it holds no logic of stele's own (the fuzz
//! targets and their seeds are stele-fuzz-inputs).

mod bench;
mod bench_boot;
mod bench_build;
mod bench_debian;
mod bench_delta;
mod bench_distro;
mod bench_frames;
mod bench_install;
mod bench_modules;
mod bench_script;
mod demo;
mod fuzz;
#[cfg(test)]
mod imports;
mod kernel;
mod setup;
#[cfg(test)]
mod tidy;
mod util;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <setup | test [-- cargo test args] | demo \
                     | bench verity|build|erofs-delta|delta [synthetic|debian|debian-erofs|debian-pairs|debian-frames [ONLY]]|boot [--runs N] \
                     | fuzz [--seconds N] [--target T]... [--sanitizer S] [--seeds-only]>";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::setup().map(|_| ()),
        Some("test") => test(&args[1..]),
        Some("demo") => demo::demo(),
        Some("fuzz") => fuzz::fuzz(&args[1..]),
        Some("bench") => match args.get(1).map(String::as_str) {
            Some("verity") => bench::verity(),
            Some("build") => bench_build::build(),
            Some("erofs-delta") => bench_build::erofs_delta(),
            Some("delta") => match args.get(2).map(String::as_str) {
                None => bench_delta::delta_bench().and_then(|()| bench_distro::debian_bench(false)),
                Some("synthetic") => bench_delta::delta_bench(),
                Some("debian") => bench_distro::debian_bench(false),
                Some("debian-erofs") => bench_distro::debian_bench(true),
                Some("debian-pairs") => bench_distro::pairs_again(),
                Some("debian-frames") => bench_distro::frames_again(args.get(3).map_or("", String::as_str)),
                Some(other) => Err(format!(
                    "unknown delta benchmark {other:?}: synthetic, debian, debian-erofs or debian-frames (default: synthetic and debian)"
                )),
            },
            Some("boot") => bench_boot::boot(&args[2..]),
            _ => Err(format!("unknown benchmark; {USAGE}")),
        },
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => Err(format!("unknown or missing task; {USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo xtask test`: set-up, the static init and fetch client, then the whole workspace's tests with the
/// kernel, modules, init and fetch client paths in the environment.
fn test(extra: &[String]) -> Result<(), String> {
    let env = setup::setup()?;
    let env13 = kernel::ensure_debian13()?;
    let init = util::build_static_init()?;
    let fetch = util::build_static_fetch()?;
    let mut args = vec!["test", "--workspace", "--all-targets"];
    let extra: Vec<&str> = extra
        .iter()
        .map(String::as_str)
        .skip_while(|a| *a == "--")
        .collect();
    let (cargo_args, test_args): (Vec<&str>, Vec<&str>) =
        match extra.iter().position(|a| *a == "--") {
            Some(i) => (extra[..i].to_vec(), extra[i + 1..].to_vec()),
            None => (extra.clone(), Vec::new()),
        };
    args.extend(cargo_args);
    if !test_args.is_empty() {
        args.push("--");
        args.extend(test_args);
    }
    let mut cmd = util::cargo();
    cmd.args(&args)
        .env("STELE_KERNEL", &env.kernel)
        .env("STELE_MODULES", &env.modules)
        .env("STELE_KERNEL13", &env13.kernel)
        .env("STELE_MODULES13", &env13.modules)
        .env("STELE_INIT", &init)
        .env("STELE_FETCH", &fetch);
    util::run(&mut cmd, "cargo test")
}

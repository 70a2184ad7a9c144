//! Small helpers shared by the tasks: running commands, paths, building the binaries.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The workspace root (parent of xtask/).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// The cargo target directory.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => root().join("target"),
    }
}

/// A `cargo` command in the workspace root.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut c = Command::new(cargo);
    c.current_dir(root());
    c
}

/// Runs a command to completion; a non-zero exit is an error naming `what`.
pub fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let status = cmd
        .status()
        .map_err(|e| format!("could not start {what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

/// Runs a command and returns its stdout; a non-zero exit is an error with its stderr.
pub fn output(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("could not start {what}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Is `name` an executable in PATH (or in the sbin directories, which a non-login root
/// shell may lack)?
pub fn have_tool(name: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .any(|d| d.join(name).is_file())
}

/// Builds the `stele` CLI in release mode and returns its path.
pub fn build_cli() -> Result<PathBuf, String> {
    run(
        cargo().args(["build", "--release", "--quiet", "-p", "stele"]),
        "cargo build --release -p stele",
    )?;
    Ok(target_dir().join("release").join("stele"))
}

/// The target triple the static init is built for.
pub const INIT_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Builds stele-init static (`+crt-static`, profile `init`) and returns its path.
pub fn build_static_init() -> Result<PathBuf, String> {
    build_static("stele-init", "stele-init")
}

/// Builds the fetch client static like the init: it runs from a slot image, with no
/// libraries of the image's own.
pub fn build_static_fetch() -> Result<PathBuf, String> {
    build_static("stele-fetch", "stele-fetch")
}

/// Builds `package`'s binary `bin` static (`+crt-static`, profile `init`).
fn build_static(package: &str, bin: &str) -> Result<PathBuf, String> {
    run(
        cargo()
            .args([
                "build",
                "--quiet",
                "--profile",
                "init",
                "-p",
                package,
                "--bin",
                bin,
                "--target",
                INIT_TARGET,
            ])
            // RUSTFLAGS, when set at all, would override the per-target flags below.
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env(
                "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
                "-C target-feature=+crt-static",
            ),
        &format!("building the static {bin}"),
    )?;
    let path = target_dir().join(INIT_TARGET).join("init").join(bin);
    let size = std::fs::metadata(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    eprintln!(
        "xtask: static {bin}: {} ({size} bytes, {:.2} MiB)",
        path.display(),
        size as f64 / f64::from(1u32 << 20)
    );
    Ok(path)
}

/// `apt-get update`, once per setup run.
pub fn apt_update() -> Result<(), String> {
    use std::sync::atomic::{AtomicBool, Ordering};
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    run(
        Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get update",
    )
}

/// The length of the file at `p`.
pub fn len(p: &Path) -> Result<u64, String> {
    fs::metadata(p)
        .map(|m| m.len())
        .map_err(|e| format!("{}: {e}", p.display()))
}

/// Runs `cmd` (stdout to `stdout` when given) and returns its wall time.
pub fn timed(cmd: &mut Command, what: &str, stdout: Option<&Path>) -> Result<f64, String> {
    if let Some(p) = stdout {
        cmd.stdout(Stdio::from(
            File::create(p).map_err(|e| format!("{}: {e}", p.display()))?,
        ));
    }
    let start = Instant::now();
    let out = cmd
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("could not start {what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(start.elapsed().as_secs_f64())
}

//! The test kernel: Debian's current amd64 kernel package, downloaded with `apt-get
//! download`, unpacked with `dpkg -x`, `depmod -b` run on it, cached under target/.
//!
//! `STELE_KERNEL` (a vmlinuz) and `STELE_MODULES` (its /lib/modules/<version> directory)
//! override it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{apt_update, output, run, target_dir};

/// Where the kernel and its modules are.
#[derive(Debug, Clone)]
pub struct KernelEnv {
    pub kernel: PathBuf,
    pub modules: PathBuf,
}

fn cache_dir() -> PathBuf {
    target_dir().join("stele-kernel")
}

/// Returns the kernel, downloading and unpacking it on first use.
pub fn ensure() -> Result<KernelEnv, String> {
    if let Some(kernel) = std::env::var_os("STELE_KERNEL") {
        let modules = std::env::var_os("STELE_MODULES").ok_or(
            "STELE_KERNEL is set but STELE_MODULES is not: set it to the kernel's modules directory (…/lib/modules/<version>)",
        )?;
        let env = KernelEnv {
            kernel: PathBuf::from(kernel),
            modules: PathBuf::from(modules),
        };
        return check(env);
    }
    let marker = cache_dir().join("kernel.env");
    if let Ok(text) = fs::read_to_string(&marker) {
        if let Some(env) = parse_marker(&text) {
            if let Ok(env) = check(env) {
                return Ok(env);
            }
        }
    }
    let env = download()?;
    fs::write(
        &marker,
        format!(
            "KERNEL={}\nMODULES={}\n",
            env.kernel.display(),
            env.modules.display()
        ),
    )
    .map_err(|e| format!("writing {}: {e}", marker.display()))?;
    Ok(env)
}

fn parse_marker(text: &str) -> Option<KernelEnv> {
    let mut kernel = None;
    let mut modules = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("KERNEL=") {
            kernel = Some(PathBuf::from(v));
        } else if let Some(v) = line.strip_prefix("MODULES=") {
            modules = Some(PathBuf::from(v));
        }
    }
    Some(KernelEnv {
        kernel: kernel?,
        modules: modules?,
    })
}

fn check(env: KernelEnv) -> Result<KernelEnv, String> {
    if !env.kernel.is_file() {
        return Err(format!("kernel {} not found", env.kernel.display()));
    }
    if !env.modules.join("modules.dep").is_file() {
        return Err(format!(
            "{} has no modules.dep: run `depmod -b <root> <version>` on it",
            env.modules.display()
        ));
    }
    Ok(env)
}

/// The kernel image package that `linux-image-amd64` depends on.
fn resolve_package() -> Result<String, String> {
    let query = || {
        output(
            Command::new("apt-cache").args(["depends", "linux-image-amd64"]),
            "apt-cache depends linux-image-amd64",
        )
        .ok()
        .and_then(|out| {
            out.lines()
                .filter_map(|l| l.trim().strip_prefix("Depends:"))
                .map(str::trim)
                .find(|p| p.starts_with("linux-image-"))
                .map(str::to_owned)
        })
    };
    if let Some(p) = query() {
        return Ok(p);
    }
    apt_update()?;
    query().ok_or_else(|| {
        "cannot resolve the kernel package: `apt-cache depends linux-image-amd64` names no linux-image-* (is this Debian with its package lists?); set STELE_KERNEL and STELE_MODULES instead".to_owned()
    })
}

fn download() -> Result<KernelEnv, String> {
    let pkg = resolve_package()?;
    let dir = cache_dir();
    let dl = dir.join("download");
    let unpack = dir.join("root");
    let _ = fs::remove_dir_all(&dl);
    let _ = fs::remove_dir_all(&unpack);
    fs::create_dir_all(&dl).map_err(|e| format!("creating {}: {e}", dl.display()))?;
    // apt-get download drops privileges to _apt when it can write the directory.
    let _ = fs::set_permissions(&dl, std::os::unix::fs::PermissionsExt::from_mode(0o777));
    eprintln!("xtask: downloading the test kernel {pkg}");
    run(
        Command::new("apt-get")
            .arg("download")
            .arg(&pkg)
            .current_dir(&dl),
        &format!("apt-get download {pkg}"),
    )?;
    let deb = fs::read_dir(&dl)
        .map_err(|e| format!("reading {}: {e}", dl.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| format!("apt-get download {pkg} produced no .deb"))?;
    run(
        Command::new("dpkg").arg("-x").arg(&deb).arg(&unpack),
        "dpkg -x",
    )?;
    let _ = fs::remove_file(&deb);
    let kernel = find_prefixed(&unpack.join("boot"), "vmlinuz-")?;
    let (mods_base, version) = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|p| unpack.join(p))
        .find_map(|d| {
            let v = fs::read_dir(&d)
                .ok()?
                .filter_map(Result::ok)
                .find(|e| e.path().is_dir())?
                .file_name()
                .to_string_lossy()
                .into_owned();
            Some((d, v))
        })
        .ok_or_else(|| format!("{pkg} has no lib/modules/<version>"))?;
    run(
        Command::new("depmod")
            .arg("-b")
            .arg(&unpack)
            .arg(&version)
            .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin"),
        "depmod -b",
    )?;
    check(KernelEnv {
        kernel,
        modules: mods_base.join(version),
    })
}

fn find_prefixed(dir: &Path, prefix: &str) -> Result<PathBuf, String> {
    fs::read_dir(dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .ok_or_else(|| format!("no {prefix}* in {}", dir.display()))
}

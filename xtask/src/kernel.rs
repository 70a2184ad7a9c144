//! The test kernels: Debian's current amd64 kernel package (of the machine's release), and
//! Debian 13's ("trixie": compressed modules, in /usr/lib/modules) from a private apt
//! source list under target/ (the machine's sources stay as they are); each downloaded
//! with `apt-get download`, unpacked with `dpkg -x`, `depmod -b` run on it, cached under
//! target/.
//!
//! `STELE_KERNEL` (a vmlinuz) and `STELE_MODULES` (its /lib/modules/<version> directory)
//! override the first, `STELE_KERNEL13` and `STELE_MODULES13` the second.

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

/// Where a test kernel comes from.
struct Source {
    /// Its cache under target/.
    dir: &'static str,
    /// The variables that override it (kernel, modules).
    vars: (&'static str, &'static str),
    /// A Debian release fetched through a private apt source list, or `None`: the
    /// machine's own.
    release: Option<&'static str>,
}

const MACHINE: Source = Source {
    dir: "stele-kernel",
    vars: ("STELE_KERNEL", "STELE_MODULES"),
    release: None,
};

const DEBIAN13: Source = Source {
    dir: "stele-kernel-debian13",
    vars: ("STELE_KERNEL13", "STELE_MODULES13"),
    release: Some("trixie"),
};

/// Returns the kernel, downloading and unpacking it on first use.
pub fn ensure() -> Result<KernelEnv, String> {
    ensure_from(&MACHINE)
}

/// Returns Debian 13's kernel, downloading and unpacking it on first use.
pub fn ensure_debian13() -> Result<KernelEnv, String> {
    ensure_from(&DEBIAN13)
}

fn ensure_from(src: &Source) -> Result<KernelEnv, String> {
    let (kvar, mvar) = src.vars;
    if let Some(kernel) = std::env::var_os(kvar) {
        let modules = std::env::var_os(mvar).ok_or(format!(
            "{kvar} is set but {mvar} is not: set it to the kernel's modules directory (…/lib/modules/<version>)"
        ))?;
        let env = KernelEnv {
            kernel: PathBuf::from(kernel),
            modules: PathBuf::from(modules),
        };
        return check(env);
    }
    let marker = target_dir().join(src.dir).join("kernel.env");
    if let Ok(text) = fs::read_to_string(&marker) {
        if let Some(env) = parse_marker(&text) {
            if let Ok(env) = check(env) {
                return Ok(env);
            }
        }
    }
    let env = download(src)?;
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

/// The `-o` options that point apt at a private source list of `release` under `dir`
/// (lists and cache there too), written (and its lists fetched) when missing.
fn private_apt(dir: &Path, release: &str) -> Result<Vec<String>, String> {
    let apt = dir.join("apt");
    let lists = apt.join("lists");
    let cache = apt.join("cache");
    for d in [lists.join("partial"), cache.join("archives/partial")] {
        fs::create_dir_all(&d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    let sources = apt.join("sources.list");
    let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
    let text = format!(
        "deb [signed-by={keyring}] http://deb.debian.org/debian {release} main\n\
         deb [signed-by={keyring}] http://deb.debian.org/debian-security {release}-security main\n"
    );
    fs::write(&sources, text).map_err(|e| format!("writing {}: {e}", sources.display()))?;
    let opts = vec![
        format!("-oDir::Etc::sourcelist={}", sources.display()),
        "-oDir::Etc::sourceparts=-".to_owned(),
        format!("-oDir::State::Lists={}", lists.display()),
        format!("-oDir::Cache={}", cache.display()),
        "-oAPT::Get::List-Cleanup=0".to_owned(),
    ];
    if !Path::new(keyring).is_file() {
        return Err(format!(
            "{keyring} not found: install the Debian package debian-archive-keyring"
        ));
    }
    eprintln!("xtask: fetching the package lists of Debian {release} (private, under target/)");
    run(
        Command::new("apt-get")
            .args(&opts)
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &format!("apt-get update (Debian {release})"),
    )?;
    Ok(opts)
}

/// The kernel image package that `linux-image-amd64` depends on (with `apt`'s options).
fn resolve_package(apt: &[String]) -> Result<String, String> {
    let query = || {
        output(
            Command::new("apt-cache")
                .args(apt)
                .args(["depends", "linux-image-amd64"]),
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
    if !apt.is_empty() {
        return Err(
            "cannot resolve the kernel package in the private Debian source list (apt-get update failed?)"
                .to_owned(),
        );
    }
    apt_update()?;
    query().ok_or_else(|| {
        "cannot resolve the kernel package: `apt-cache depends linux-image-amd64` names no linux-image-* (is this Debian with its package lists?); set STELE_KERNEL and STELE_MODULES instead".to_owned()
    })
}

fn download(src: &Source) -> Result<KernelEnv, String> {
    let dir = target_dir().join(src.dir);
    let apt = match src.release {
        Some(r) => private_apt(&dir, r)?,
        None => Vec::new(),
    };
    let pkg = resolve_package(&apt)?;
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
            .args(&apt)
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
    // depmod -b BASE reads BASE/lib/modules/<version>: BASE is the unpacked root, or its
    // usr/ for a kernel that ships /usr/lib/modules (Debian 13).
    let base = mods_base
        .parent()
        .and_then(Path::parent)
        .ok_or("no base directory above lib/modules")?;
    run(
        Command::new("depmod")
            .arg("-b")
            .arg(base)
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

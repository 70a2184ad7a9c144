//! `cargo xtask bench boot`'s inputs for compressed modules: Debian 13's kernel with its
//! modules as shipped (xz, the kernel decompresses them at load) and the same modules
//! decompressed at build time (a modules directory holding, uncompressed, just the files
//! the first initramfs carries, its modules.dep rewritten to `.ko`), each with its own
//! initramfs: the boot time and size of the two ways.

use std::fs;
use std::path::{Path, PathBuf};

use stele_verifier::config::BootConfig;

use crate::util::{output, run};

/// The two initramfs files and their kernel.
pub struct Compressed {
    pub kernel: PathBuf,
    /// Modules as shipped (`.ko.xz`).
    pub shipped: PathBuf,
    /// The same modules, decompressed at build time.
    pub plain: PathBuf,
}

fn io<T>(what: &Path, r: std::io::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{}: {e}", what.display()))
}

/// The boot.toml `modules` of an initramfs (read back with cpio).
fn modules_of(initrd: &Path) -> Result<Vec<String>, String> {
    let mut c = std::process::Command::new("cpio");
    c.args(["-i", "--quiet", "--to-stdout", "etc/stele/boot.toml"])
        .stdin(io(initrd, fs::File::open(initrd))?);
    let text = output(&mut c, "cpio -i etc/stele/boot.toml")?;
    let cfg = BootConfig::parse(&text, "boot.toml").map_err(|e| e.to_string())?;
    Ok(cfg.modules)
}

/// Builds both initramfs files in `dir` with `initramfs(modules_dir, out)` (stele
/// initramfs with the bench's keys and init).
pub fn prepare(
    dir: &Path,
    kernel: &Path,
    modules: &Path,
    initramfs: &dyn Fn(&Path, &str) -> Result<(), String>,
) -> Result<Compressed, String> {
    initramfs(modules, "initrd13-xz.cpio")?;
    let carried = modules_of(&dir.join("initrd13-xz.cpio"))?;
    let version = modules
        .file_name()
        .ok_or("the Debian 13 modules directory has no name")?;
    let root = dir.join("plain13");
    let _ = fs::remove_dir_all(&root);
    let plain = root.join("lib/modules").join(version);
    io(&plain, fs::create_dir_all(&plain))?;
    let dep = io(modules, fs::read_to_string(modules.join("modules.dep")))?;
    for line in dep.lines() {
        let Some((rel, _)) = line.split_once(':') else {
            continue;
        };
        let base = rel.rsplit('/').next().unwrap_or(rel);
        if !carried.iter().any(|c| c == base) {
            continue;
        }
        let Some(stem) = rel.strip_suffix(".xz") else {
            return Err(format!("{rel}: not an xz-compressed module"));
        };
        let to = plain.join(stem);
        io(&to, fs::create_dir_all(to.parent().unwrap_or(&plain)))?;
        let from = modules.join(rel);
        let sh = format!("xz -dc '{}' > '{}'", from.display(), to.display());
        run(std::process::Command::new("sh").args(["-c", &sh]), "xz -dc")?;
    }
    io(
        &plain,
        fs::write(plain.join("modules.dep"), dep.replace(".ko.xz", ".ko")),
    )?;
    for f in [
        "modules.alias",
        "modules.softdep",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        if modules.join(f).exists() {
            io(&plain, fs::copy(modules.join(f), plain.join(f)))?;
        }
    }
    initramfs(&plain, "initrd13-plain.cpio")?;
    Ok(Compressed {
        kernel: kernel.to_path_buf(),
        shipped: dir.join("initrd13-xz.cpio"),
        plain: dir.join("initrd13-plain.cpio"),
    })
}

//! The kernel's build configuration (`/boot/config-<version>`, as Debian, Ubuntu, Fedora
//! and Arch install it), read by `stele initramfs` to know whether the kernel can load the
//! compressed modules it is given (docs/CLI.md, `stele initramfs`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use stele_verifier::kmod::ModuleFormat;

/// The options set to `y` in one kernel's configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelConfig {
    /// Where it was read.
    pub path: PathBuf,
    yes: HashSet<String>,
}

impl KernelConfig {
    /// The `CONFIG_X=y` lines of `text`. Pure.
    pub fn parse(path: &Path, text: &str) -> KernelConfig {
        let yes = text
            .lines()
            .filter_map(|l| l.trim().strip_suffix("=y"))
            .filter(|k| k.starts_with("CONFIG_"))
            .map(str::to_owned)
            .collect();
        KernelConfig {
            path: path.to_path_buf(),
            yes,
        }
    }

    /// Where the configuration of the kernel whose modules are in `modules_dir`
    /// (`<root>/lib/modules/<version>` or `<root>/usr/lib/modules/<version>`) is looked
    /// for, in order: `<root>/boot/config-<version>`, then `<modules_dir>/config` (Fedora)
    /// and `<modules_dir>/build/.config` (kernel headers). Pure.
    pub fn candidates(modules_dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let version = modules_dir.file_name().map(|v| v.to_string_lossy());
        // <root>/lib/modules/<v>, or <root>/usr/lib/modules/<v>.
        let root = modules_dir
            .parent()
            .and_then(Path::parent)
            .and_then(Path::parent);
        if let (Some(v), Some(root)) = (version, root) {
            let root = match root.file_name() {
                Some(n) if n == "usr" => root.parent().unwrap_or(root),
                _ => root,
            };
            out.push(root.join("boot").join(format!("config-{v}")));
        }
        out.push(modules_dir.join("config"));
        out.push(modules_dir.join("build").join(".config"));
        out
    }

    /// The first of [`KernelConfig::candidates`] that exists, read; `None` when there is
    /// none.
    pub fn find(modules_dir: &Path) -> std::io::Result<Option<KernelConfig>> {
        for p in Self::candidates(modules_dir) {
            match std::fs::read(&p) {
                Ok(b) => return Ok(Some(Self::parse(&p, &String::from_utf8_lossy(&b)))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// The options the kernel lacks to load a module in `format` (empty: it can). Pure.
    pub fn missing(&self, format: ModuleFormat) -> Vec<&'static str> {
        format
            .kernel_config()
            .iter()
            .copied()
            .filter(|o| !self.yes.contains(*o))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The relevant lines of Debian 13's 6.12 configuration.
    const TRIXIE: &str = "CONFIG_MODULE_SIG=y\nCONFIG_MODULE_COMPRESS=y\n\
        # CONFIG_MODULE_COMPRESS_GZIP is not set\nCONFIG_MODULE_COMPRESS_XZ=y\n\
        # CONFIG_MODULE_COMPRESS_ZSTD is not set\nCONFIG_MODULE_COMPRESS_ALL=y\n\
        CONFIG_MODULE_DECOMPRESS=y\nCONFIG_VIRTIO_BLK=m\n";

    #[test]
    fn which_formats_a_kernel_loads() {
        let c = KernelConfig::parse(Path::new("/boot/config-6.12"), TRIXIE);
        assert!(c.missing(ModuleFormat::Plain).is_empty());
        assert!(c.missing(ModuleFormat::Xz).is_empty());
        assert_eq!(
            c.missing(ModuleFormat::Zstd),
            ["CONFIG_MODULE_COMPRESS_ZSTD"]
        );
        // Debian 12's 6.1: no in-kernel decompression at all.
        let old = KernelConfig::parse(Path::new("c"), "# CONFIG_MODULE_DECOMPRESS is not set\n");
        assert_eq!(
            old.missing(ModuleFormat::Gzip),
            ["CONFIG_MODULE_DECOMPRESS", "CONFIG_MODULE_COMPRESS_GZIP"]
        );
        // `=m` or a comment is not `y`.
        let m = KernelConfig::parse(Path::new("c"), "CONFIG_MODULE_DECOMPRESS=m\n");
        assert_eq!(m.missing(ModuleFormat::Xz).len(), 2);
    }

    #[test]
    fn looked_for_beside_the_modules() {
        let c = KernelConfig::candidates(Path::new("/r/usr/lib/modules/6.12.1-amd64"));
        assert_eq!(c[0], Path::new("/r/boot/config-6.12.1-amd64"));
        let c = KernelConfig::candidates(Path::new("/lib/modules/6.1.0-57-amd64"));
        assert_eq!(
            c,
            [
                PathBuf::from("/boot/config-6.1.0-57-amd64"),
                PathBuf::from("/lib/modules/6.1.0-57-amd64/config"),
                PathBuf::from("/lib/modules/6.1.0-57-amd64/build/.config"),
            ]
        );
    }

    #[test]
    fn found_on_disk() {
        let d = tempfile::tempdir().unwrap();
        let mods = d.path().join("usr/lib/modules/6.12.9");
        std::fs::create_dir_all(&mods).unwrap();
        assert_eq!(KernelConfig::find(&mods).unwrap(), None);
        std::fs::create_dir_all(d.path().join("boot")).unwrap();
        let p = d.path().join("boot/config-6.12.9");
        std::fs::write(&p, TRIXIE).unwrap();
        let c = KernelConfig::find(&mods).unwrap().unwrap();
        assert_eq!(c.path, p);
        assert!(c.missing(ModuleFormat::Xz).is_empty());
    }
}

//! Kernel module resolution: which `.ko` files an initramfs needs, in load order.
//!
//! Reads the kernel's module index (`/lib/modules/<version>`: `modules.dep`,
//! `modules.softdep`, `modules.alias`, `modules.builtin`, `modules.builtin.modinfo`) and
//! the `softdep=` strings in each module's `.modinfo`. Names compare with dashes and
//! underscores equivalent, as modprobe does.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use stele_verifier::exit::{Exit, Report};
use stele_verifier::kmod::ModuleFormat;

use crate::kconfig::KernelConfig;
use crate::kodecode::{decode, DecodeError};

/// What went wrong while resolving modules.
#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    /// An index or module file could not be read.
    #[error("failed to read {path}: {source} (is --modules-dir the kernel's /lib/modules/<version>, after depmod?)")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// No module, built-in or alias has this name.
    #[error("kernel module {name:?} not found in {dir} (not in modules.dep, modules.builtin or modules.alias)")]
    Unknown { name: String, dir: PathBuf },
    /// The module is compressed and the kernel's configuration, which says whether the
    /// kernel can load it, was not found.
    #[error("kernel module {} is {}-compressed and the kernel's configuration was not found ({}): put the kernel's config-<version> there (stele checks that the kernel can decompress {} modules)", path.display(), format.name(), looked, format.name())]
    NoKernelConfig {
        path: PathBuf,
        format: ModuleFormat,
        looked: String,
    },
    /// The kernel cannot load the module as it is compressed.
    #[error("kernel module {} is {}-compressed but this kernel cannot load it ({} lacks {}=y): decompress the modules (`{}`) and rerun depmod, or use a kernel built with {}", path.display(), format.name(), config.display(), missing.join("=y and "), unpack(*format), format.kernel_config().join(" and "))]
    CannotLoad {
        path: PathBuf,
        format: ModuleFormat,
        config: PathBuf,
        missing: Vec<&'static str>,
    },
    /// A compressed module does not decompress.
    #[error("kernel module {}: {source}", path.display())]
    Decode {
        path: PathBuf,
        #[source]
        source: DecodeError,
    },
    /// A line of an index file is malformed.
    #[error("malformed {file} line {line}: {why}")]
    BadIndex {
        file: &'static str,
        line: usize,
        why: String,
    },
}

/// The command that decompresses modules in `format` in place.
fn unpack(format: ModuleFormat) -> &'static str {
    match format {
        ModuleFormat::Plain => "",
        ModuleFormat::Gzip => "gunzip",
        ModuleFormat::Xz => "unxz",
        ModuleFormat::Zstd => "unzstd --rm",
    }
}

impl Report for ModulesError {
    /// An unreadable index or configuration is the environment; an unknown module, one the
    /// kernel cannot load or a corrupt one is the arguments.
    fn exit(&self) -> Exit {
        match self {
            ModulesError::Read { .. } => Exit::Environment,
            _ => Exit::Usage,
        }
    }
}

/// One module to put in the initramfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedModule {
    /// Normalized name (underscores): `dm_verity`.
    pub name: String,
    /// The file in the modules dir.
    pub path: PathBuf,
    /// Its base file name: `dm-verity.ko`, or `dm-verity.ko.xz` as the kernel shipped it.
    pub file_name: String,
    /// It declares a `nowayout` parameter ([`takes_nowayout`]).
    pub nowayout: bool,
    /// The modules (normalized names) that must be loaded before it: its `modules.dep`
    /// dependencies and soft dependencies `pre:` (boot.toml `module_deps`).
    pub after: Vec<String>,
}

impl ResolvedModule {
    /// Under `kernel/drivers/watchdog/`: with a `nowayout` parameter ([`takes_nowayout`]),
    /// a watchdog driver, which boot.toml lists in `watchdog_modules` and stele-init loads
    /// with `nowayout=1` when it uses the watchdog (docs/BOOT.md, "The watchdog").
    pub fn in_watchdog_dir(&self) -> bool {
        let parts: Vec<_> = self.path.components().map(|c| c.as_os_str()).collect();
        parts
            .windows(2)
            .any(|w| w[0] == "drivers" && w[1] == "watchdog")
    }
}

/// The module index of one kernel.
#[derive(Clone, Debug, Default)]
pub struct ModuleDb {
    dir: PathBuf,
    /// name -> (relative path, dependency names in modules.dep order)
    deps: HashMap<String, (String, Vec<String>)>,
    softdeps: HashMap<String, Vec<String>>,
    aliases: Vec<(String, String)>,
    builtin: HashSet<String>,
    builtin_aliases: HashSet<String>,
    /// The kernel's configuration, read when the first compressed module is resolved.
    kernel_config: std::cell::OnceCell<Option<KernelConfig>>,
}

/// `kernel/drivers/md/dm-verity.ko` -> `dm_verity` (also `.ko.xz`, ...).
pub fn module_name(path: &str) -> String {
    stele_verifier::kmod::module_name(path)
}

/// Dashes and underscores are equivalent in module names.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// Parses the `pre:` names out of a softdep value (`pre: a b post: c`).
pub fn parse_softdep_pre(value: &str) -> Vec<String> {
    let mut pre = false;
    let mut out = Vec::new();
    for tok in value.split_whitespace() {
        match tok {
            "pre:" => pre = true,
            "post:" => pre = false,
            t if pre => out.push(t.to_string()),
            _ => {}
        }
    }
    out
}

/// The `softdep=` values in a module's `.modinfo` section.
pub fn modinfo_softdeps(ko: &[u8]) -> Vec<String> {
    modinfo_values(ko, "softdep")
}

/// True when the module declares a `nowayout` parameter (`parmtype=nowayout:...`), as
/// the watchdog drivers do (the watchdog core module does not).
pub fn takes_nowayout(ko: &[u8]) -> bool {
    modinfo_values(ko, "parmtype")
        .iter()
        .any(|v| v.starts_with("nowayout:"))
}

/// The values of `key` in a module's `.modinfo` section, found by scanning the bytes for
/// NUL-delimited `key=...` strings.
pub fn modinfo_values(ko: &[u8], key: &str) -> Vec<String> {
    let key = format!("{key}=");
    let key = key.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(off) = find(&ko[i..], key) {
        let start = i + off;
        let at_string_start = start == 0 || ko[start - 1] == 0;
        let vstart = start + key.len();
        let vend = ko[vstart..]
            .iter()
            .position(|&b| b == 0)
            .map_or(ko.len(), |p| vstart + p);
        if at_string_start {
            if let Ok(v) = std::str::from_utf8(&ko[vstart..vend]) {
                out.push(v.to_string());
            }
        }
        i = vend.max(start + 1);
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Shell-style pattern match, as modules.alias patterns use (the one matcher,
/// [`stele_verifier::modalias::glob_match`]).
pub use stele_verifier::modalias::glob_match;

fn read_text(path: &Path, required: bool) -> Result<String, ModulesError> {
    match std::fs::read(path) {
        Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(ModulesError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Where a requested name leads.
enum Target {
    Module(String),
    Builtin,
}

impl ModuleDb {
    /// Reads the index files of `dir` (modules.dep is required, the others optional).
    pub fn load(dir: &Path) -> Result<Self, ModulesError> {
        let dep = read_text(&dir.join("modules.dep"), true)?;
        let softdep = read_text(&dir.join("modules.softdep"), false)?;
        let alias = read_text(&dir.join("modules.alias"), false)?;
        let builtin = read_text(&dir.join("modules.builtin"), false)?;
        let builtin_modinfo =
            std::fs::read(dir.join("modules.builtin.modinfo")).unwrap_or_default();
        Self::parse(dir, &dep, &softdep, &alias, &builtin, &builtin_modinfo)
    }

    /// Builds the index from the files' contents. Pure.
    pub fn parse(
        dir: &Path,
        dep: &str,
        softdep: &str,
        alias: &str,
        builtin: &str,
        builtin_modinfo: &[u8],
    ) -> Result<Self, ModulesError> {
        let mut db = ModuleDb {
            dir: dir.to_path_buf(),
            ..Default::default()
        };
        for (i, line) in dep.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let Some((path, rest)) = line.split_once(':') else {
                return Err(ModulesError::BadIndex {
                    file: "modules.dep",
                    line: i + 1,
                    why: String::from("no `:` after the module path"),
                });
            };
            let deps = rest.split_whitespace().map(module_name).collect();
            db.deps
                .insert(module_name(path), (path.trim().to_string(), deps));
        }
        for line in softdep.lines() {
            let mut toks = line.split_whitespace();
            if toks.next() != Some("softdep") {
                continue;
            }
            let Some(name) = toks.next() else { continue };
            let rest: Vec<&str> = toks.collect();
            db.softdeps
                .entry(normalize(name))
                .or_default()
                .extend(parse_softdep_pre(&rest.join(" ")));
        }
        for line in alias.lines() {
            let mut toks = line.split_whitespace();
            if toks.next() != Some("alias") {
                continue;
            }
            if let (Some(pat), Some(m)) = (toks.next(), toks.next()) {
                db.aliases.push((pat.to_string(), normalize(m)));
            }
        }
        for line in builtin.lines() {
            if !line.trim().is_empty() {
                db.builtin.insert(module_name(line.trim()));
            }
        }
        for s in builtin_modinfo.split(|&b| b == 0) {
            let Ok(s) = std::str::from_utf8(s) else {
                continue;
            };
            if let Some((m, a)) = s.split_once(".alias=") {
                db.builtin.insert(normalize(m));
                db.builtin_aliases.insert(a.to_string());
            }
        }
        Ok(db)
    }

    fn lookup(&self, requested: &str) -> Result<Target, ModulesError> {
        let n = normalize(requested);
        if self.deps.contains_key(&n) {
            return Ok(Target::Module(n));
        }
        if self.builtin.contains(&n) || self.builtin_aliases.contains(requested) {
            return Ok(Target::Builtin);
        }
        let mut hits: Vec<&str> = self
            .aliases
            .iter()
            .filter(|(p, _)| p == requested)
            .map(|(_, m)| m.as_str())
            .collect();
        if hits.is_empty() {
            hits = self
                .aliases
                .iter()
                .filter(|(p, _)| glob_match(p, requested))
                .map(|(_, m)| m.as_str())
                .collect();
        }
        if hits.iter().any(|m| self.builtin.contains(*m)) {
            return Ok(Target::Builtin);
        }
        hits.retain(|m| self.deps.contains_key(*m));
        // Several modules may provide one alias (crc32c: crc32c_intel, crc32c_generic):
        // take the portable `_generic` one when there is one, else the first listed.
        let pick = hits
            .iter()
            .find(|m| m.ends_with("_generic"))
            .or(hits.first());
        match pick {
            Some(m) => Ok(Target::Module((*m).to_string())),
            None => Err(ModulesError::Unknown {
                name: requested.to_string(),
                dir: self.dir.clone(),
            }),
        }
    }

    /// The modules whose file lies under one of `dirs` (`kernel/drivers/ata/`), sorted.
    pub fn modules_under(&self, dirs: &[&str]) -> Vec<String> {
        let mut out: Vec<String> = self
            .deps
            .iter()
            .filter(|(_, (rel, _))| dirs.iter().any(|d| rel.starts_with(d)))
            .map(|(n, _)| n.clone())
            .collect();
        out.sort();
        out
    }

    /// `requested` is a loadable module of this kernel (not built in, not unknown).
    pub fn is_module(&self, requested: &str) -> bool {
        matches!(self.lookup(requested), Ok(Target::Module(_)))
    }

    /// The modules.alias patterns of module `name` for devices on the buses stele-init
    /// scans ([`stele_verifier::kmod::scanned_alias`]), in file order.
    pub fn device_aliases(&self, name: &str) -> Vec<String> {
        let n = normalize(name);
        self.aliases
            .iter()
            .filter(|(p, m)| *m == n && stele_verifier::kmod::scanned_alias(p))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// The modules to load for `requested`, each after its dependencies and `pre:`
    /// soft dependencies; built-in modules are left out. Reads the `.ko` files.
    pub fn resolve(&self, requested: &[&str]) -> Result<Vec<ResolvedModule>, ModulesError> {
        let mut order = Vec::new();
        let mut state: HashMap<String, bool> = HashMap::new(); // false: visiting, true: done
        for r in requested {
            if let Target::Module(m) = self.lookup(r)? {
                self.visit(&m, &mut state, &mut order)?;
            }
        }
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        state: &mut HashMap<String, bool>,
        order: &mut Vec<ResolvedModule>,
    ) -> Result<(), ModulesError> {
        if state.contains_key(name) {
            // Done, or a soft-dependency cycle: the first visit places it.
            return Ok(());
        }
        state.insert(name.to_string(), false);
        let Some((rel, deps)) = self.deps.get(name) else {
            return Err(ModulesError::Unknown {
                name: name.to_string(),
                dir: self.dir.clone(),
            });
        };
        let path = self.dir.join(rel);
        let format = ModuleFormat::of(rel).unwrap_or(ModuleFormat::Plain);
        if format.compressed() {
            self.check_loadable(&path, format)?;
        }
        let raw = std::fs::read(&path).map_err(|source| ModulesError::Read {
            path: path.clone(),
            source,
        })?;
        let ko = decode(format, &raw).map_err(|source| ModulesError::Decode {
            path: path.clone(),
            source,
        })?;
        let mut pre: Vec<String> = self.softdeps.get(name).cloned().unwrap_or_default();
        for v in modinfo_softdeps(&ko) {
            pre.extend(parse_softdep_pre(&v));
        }
        let mut seen = HashSet::new();
        let mut after = Vec::new();
        for p in pre.iter().filter(|p| seen.insert(p.as_str())) {
            if let Target::Module(m) = self.lookup(p)? {
                self.visit(&m, state, order)?;
                after.push(m);
            }
        }
        for d in deps {
            if !self.deps.contains_key(d) && self.builtin.contains(d) {
                continue;
            }
            self.visit(d, state, order)?;
            after.push(d.clone());
        }
        state.insert(name.to_string(), true);
        let file_name = rel.rsplit('/').next().unwrap_or(rel).to_string();
        order.push(ResolvedModule {
            name: name.to_string(),
            path,
            file_name,
            nowayout: takes_nowayout(&ko),
            after,
        });
        Ok(())
    }

    /// The kernel (by its configuration) can decompress a module in `format`, else the one
    /// error line that says so.
    fn check_loadable(&self, path: &Path, format: ModuleFormat) -> Result<(), ModulesError> {
        let config = self.kernel_config.get_or_init(|| {
            // An unreadable configuration counts as none found (the error names where).
            KernelConfig::find(&self.dir).ok().flatten()
        });
        let Some(config) = config else {
            let looked = KernelConfig::candidates(&self.dir)
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ModulesError::NoKernelConfig {
                path: path.to_path_buf(),
                format,
                looked,
            });
        };
        let missing = config.missing(format);
        if missing.is_empty() {
            return Ok(());
        }
        Err(ModulesError::CannotLoad {
            path: path.to_path_buf(),
            format,
            config: config.path.clone(),
            missing,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A fake modules dir shaped like Debian 12's 6.1 kernel.
    pub(crate) fn fake_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let files: &[(&str, &[u8])] = &[
            (
                "kernel/drivers/virtio/virtio_ring.ko",
                b"\0name=virtio_ring\0",
            ),
            ("kernel/drivers/virtio/virtio.ko", b"\0name=virtio\0"),
            (
                "kernel/drivers/virtio/virtio_pci.ko",
                b"\0name=virtio_pci\0",
            ),
            ("kernel/drivers/block/virtio_blk.ko", b"\0name=virtio_blk\0"),
            ("kernel/drivers/md/dm-mod.ko", b"\0name=dm_mod\0"),
            ("kernel/drivers/md/dm-verity.ko", b"\0name=dm_verity\0"),
            (
                "kernel/lib/libcrc32c.ko",
                b"ELF\0softdep=pre: crc32c\0name=libcrc32c\0",
            ),
            (
                "kernel/crypto/crc32c_generic.ko",
                b"\0name=crc32c_generic\0",
            ),
            (
                "kernel/arch/x86/crypto/crc32c-intel.ko",
                b"\0name=crc32c_intel\0",
            ),
            ("kernel/fs/erofs/erofs.ko", b"\0name=erofs\0"),
            ("kernel/fs/jbd2/jbd2.ko", b"\0softdep=pre: crypto-crc32c\0"),
            ("kernel/fs/ext4/ext4.ko", b"\0xsoftdep=pre: bogus\0"),
            ("kernel/fs/z.ko.xz", b""),
            (
                "kernel/drivers/watchdog/i6300esb.ko",
                b"\0parmtype=nowayout:bool\0depends=watchdog\0name=i6300esb\0",
            ),
            (
                "kernel/drivers/watchdog/watchdog.ko",
                b"\0parmtype=open_timeout:uint\0name=watchdog\0",
            ),
        ];
        for (p, c) in files {
            let p = d.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, c).unwrap();
        }
        std::fs::write(
            d.path().join("modules.dep"),
            "kernel/drivers/virtio/virtio_ring.ko:\n\
             kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko\n\
             kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
             kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko\n\
             kernel/drivers/md/dm-mod.ko:\n\
             kernel/drivers/md/dm-verity.ko: kernel/drivers/md/dm-mod.ko\n\
             kernel/lib/libcrc32c.ko:\n\
             kernel/crypto/crc32c_generic.ko:\n\
             kernel/arch/x86/crypto/crc32c-intel.ko:\n\
             kernel/fs/erofs/erofs.ko: kernel/lib/libcrc32c.ko\n\
             kernel/fs/jbd2/jbd2.ko:\n\
             kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/jbd2/jbd2.ko\n\
             kernel/fs/z.ko.xz:\n\
             kernel/drivers/watchdog/i6300esb.ko: kernel/drivers/watchdog/watchdog.ko\n\
             kernel/drivers/watchdog/watchdog.ko:\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("modules.softdep"),
            "# comment\nsoftdep ext4 pre: crypto-crc32c\nsoftdep cifs gcm\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("modules.alias"),
            "alias crypto-crc32c crc32c_intel\nalias crc32c crc32c_intel\n\
             alias crypto-crc32c crc32c_generic\nalias crc32c crc32c_generic\n\
             alias fs-erofs erofs\nalias virtio:d00000002v* virtio_blk\n",
        )
        .unwrap();
        std::fs::write(d.path().join("modules.builtin"), "kernel/lib/crc16.ko\n").unwrap();
        d
    }

    fn names(v: &[ResolvedModule]) -> Vec<&str> {
        v.iter().map(|m| m.name.as_str()).collect()
    }

    fn pos(v: &[ResolvedModule], n: &str) -> usize {
        v.iter().position(|m| m.name == n).unwrap()
    }

    #[test]
    fn erofs_pulls_libcrc32c_after_crc32c_generic() {
        let d = fake_dir();
        let db = ModuleDb::load(d.path()).unwrap();
        let r = db.resolve(&["erofs"]).unwrap();
        assert_eq!(names(&r), ["crc32c_generic", "libcrc32c", "erofs"]);
        assert_eq!(r[1].file_name, "libcrc32c.ko");
        assert_eq!(r[1].path, d.path().join("kernel/lib/libcrc32c.ko"));
    }

    #[test]
    fn dashes_and_underscores_and_dependency_order() {
        let d = fake_dir();
        let db = ModuleDb::load(d.path()).unwrap();
        let r = db
            .resolve(&["virtio-blk", "dm_verity", "virtio_pci"])
            .unwrap();
        assert_eq!(
            names(&r),
            [
                "virtio_ring",
                "virtio",
                "virtio_blk",
                "dm_mod",
                "dm_verity",
                "virtio_pci"
            ]
        );
        assert_eq!(r[4].file_name, "dm-verity.ko");
    }

    #[test]
    fn builtin_satisfied_and_softdeps_from_both_sources() {
        let d = fake_dir();
        let db = ModuleDb::load(d.path()).unwrap();
        let r = db.resolve(&["ext4", "crc16"]).unwrap();
        // ext4: softdep (modules.softdep) crypto-crc32c -> crc32c_generic, then jbd2
        // (whose modinfo softdep is the same); crc16 is built in; `xsoftdep=` is not a key.
        assert_eq!(names(&r), ["crc32c_generic", "jbd2", "ext4"]);
        assert!(pos(&r, "crc32c_generic") < pos(&r, "jbd2"));
    }

    #[test]
    fn aliases_exact_and_glob() {
        let d = fake_dir();
        let db = ModuleDb::load(d.path()).unwrap();
        assert_eq!(
            names(&db.resolve(&["fs-erofs"]).unwrap()).last(),
            Some(&"erofs")
        );
        let r = db.resolve(&["virtio:d00000002v00001AF4"]).unwrap();
        assert_eq!(names(&r).last(), Some(&"virtio_blk"));
    }

    #[test]
    fn errors_unknown_and_unreadable() {
        let d = fake_dir();
        let db = ModuleDb::load(d.path()).unwrap();
        assert!(matches!(
            db.resolve(&["nope"]),
            Err(ModulesError::Unknown { ref name, .. }) if name == "nope"
        ));
        let missing = tempfile::tempdir().unwrap();
        assert!(matches!(
            ModuleDb::load(missing.path()),
            Err(ModulesError::Read { .. })
        ));
    }

    /// Debian 13's shape: every module xz-compressed, the kernel able to load only xz.
    fn compressed_dir(config: Option<&str>) -> tempfile::TempDir {
        use crate::kodecode::tests::compress;
        let d = tempfile::tempdir().unwrap();
        let files: &[(&str, ModuleFormat, &[u8])] = &[
            (
                "kernel/drivers/watchdog/i6300esb.ko.xz",
                ModuleFormat::Xz,
                b"\0parmtype=nowayout:bool\0depends=\0name=i6300esb\0",
            ),
            (
                "kernel/fs/jbd2/jbd2.ko.zst",
                ModuleFormat::Zstd,
                b"\0name=jbd2\0",
            ),
            (
                "kernel/fs/ext4/ext4.ko.xz",
                ModuleFormat::Xz,
                b"\0softdep=pre: jbd2\0name=ext4\0",
            ),
            ("kernel/fs/bad.ko.xz", ModuleFormat::Plain, b"\0name=bad\0"),
        ];
        let mut dep = String::new();
        for (p, f, c) in files {
            let path = d.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, compress(*f, c)).unwrap();
            dep.push_str(&format!("{p}:\n"));
        }
        std::fs::write(d.path().join("modules.dep"), dep).unwrap();
        if let Some(c) = config {
            std::fs::write(d.path().join("config"), c).unwrap();
        }
        d
    }

    #[test]
    fn compressed_modules_kept_when_the_kernel_loads_them() {
        let d = compressed_dir(Some(
            "CONFIG_MODULE_DECOMPRESS=y\nCONFIG_MODULE_COMPRESS_XZ=y\nCONFIG_MODULE_COMPRESS_ZSTD=y\n",
        ));
        let db = ModuleDb::load(d.path()).unwrap();
        let r = db.resolve(&["i6300esb", "ext4"]).unwrap();
        // The softdep comes from the decompressed .modinfo; the files stay as shipped.
        assert_eq!(names(&r), ["i6300esb", "jbd2", "ext4"]);
        assert_eq!(r[0].file_name, "i6300esb.ko.xz");
        assert!(r[0].nowayout && r[0].in_watchdog_dir());
        assert_eq!(r[1].file_name, "jbd2.ko.zst");
        assert!(!r[2].nowayout);
    }

    #[test]
    fn compressed_modules_the_kernel_cannot_load_are_refused() {
        let d = compressed_dir(Some(
            "CONFIG_MODULE_DECOMPRESS=y\nCONFIG_MODULE_COMPRESS_XZ=y\n",
        ));
        let db = ModuleDb::load(d.path()).unwrap();
        assert!(db.resolve(&["i6300esb"]).is_ok());
        let e = db.resolve(&["ext4"]).unwrap_err();
        assert!(
            matches!(e, ModulesError::CannotLoad { format: ModuleFormat::Zstd, ref missing, .. } if missing == &["CONFIG_MODULE_COMPRESS_ZSTD"]),
            "{e}"
        );
        assert!(e.to_string().contains("unzstd"), "{e}");
        let e = db.resolve(&["bad"]).unwrap_err();
        assert!(matches!(e, ModulesError::Decode { .. }), "{e}");

        let none = compressed_dir(None);
        let e = ModuleDb::load(none.path())
            .unwrap()
            .resolve(&["i6300esb"])
            .unwrap_err();
        assert!(matches!(e, ModulesError::NoKernelConfig { .. }), "{e}");
        assert!(e.to_string().contains("/config"), "{e}");
        let old = compressed_dir(Some("# CONFIG_MODULE_DECOMPRESS is not set\n"));
        let e = ModuleDb::load(old.path())
            .unwrap()
            .resolve(&["i6300esb"])
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("CONFIG_MODULE_DECOMPRESS=y and CONFIG_MODULE_COMPRESS_XZ=y"),
            "{e}"
        );
        assert_eq!(e.exit(), Exit::Usage);
    }

    #[test]
    fn softdep_and_glob_helpers() {
        assert_eq!(parse_softdep_pre("pre: a b post: c"), ["a", "b"]);
        assert_eq!(parse_softdep_pre("post: c pre: d"), ["d"]);
        assert!(parse_softdep_pre("gcm").is_empty());
        assert_eq!(
            modinfo_softdeps(b"softdep=pre: x\0a=softdep=no\0softdep=pre: y"),
            ["pre: x", "pre: y"]
        );
        assert!(glob_match("pci:v*d[0-9]?", "pci:v10d5x"));
        assert!(!glob_match("pci:v*d[!0-9]", "pci:v10d5"));
        assert!(glob_match("a*", "a"));
        assert!(!glob_match("a", "ab"));
        assert_eq!(module_name("kernel/a/dm-verity.ko.xz"), "dm_verity");
    }

    #[test]
    fn default_set_resolves_on_fake_dir_shape() {
        // The default set on a kernel with everything as modules: every module comes after
        // what it depends on.
        let d = fake_dir();
        let db = ModuleDb::load(d.path()).unwrap();
        let r = db
            .resolve(&["virtio_pci", "virtio_blk", "dm_verity", "erofs", "ext4"])
            .unwrap();
        assert!(pos(&r, "virtio_ring") < pos(&r, "virtio"));
        assert!(pos(&r, "virtio") < pos(&r, "virtio_pci"));
        assert!(pos(&r, "dm_mod") < pos(&r, "dm_verity"));
        assert!(pos(&r, "crc32c_generic") < pos(&r, "libcrc32c"));
        assert!(pos(&r, "libcrc32c") < pos(&r, "erofs"));
        assert!(!names(&r).contains(&"crc32c_intel"));
        let unique: HashSet<&str> = names(&r).into_iter().collect();
        assert_eq!(unique.len(), r.len());
    }
}

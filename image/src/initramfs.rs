//! The initramfs: stele-init, boot.toml, trusted keys and kernel modules in a newc cpio.
//!
//! Layout (docs/FORMATS.md, "Initramfs"): `/init`, `/etc/stele/boot.toml`,
//! `/etc/stele/keys/<keyid>.pem`, `/lib/modules/<name>.ko` (paths: verifier::layout), the
//! mount-point directories and `/dev/console`. [`boot_toml`] and [`build_archive`] are
//! pure; [`load_keys`] and [`build`] read the inputs. The final boot.toml is checked by
//! `BootConfig::from_table`, exactly what stele-init runs, before anything is written.

use std::path::{Path, PathBuf};

use sha2::Digest;

use stele_verifier::config::{parse_table, BootConfig, ConfigError};
use stele_verifier::exit::{Exit, Report};
use stele_verifier::layout;

use crate::cpio::{Archive, CpioError};
use crate::hardware::{self, Hardware};
use crate::modules::{ModuleDb, ModulesError, ResolvedModule};

/// Keys `stele initramfs` writes itself, and the option that sets each.
pub const GENERATED_KEYS: &[(&str, &str)] = &[
    ("threshold", "--threshold"),
    ("modules", "--module"),
    ("watchdog_modules", "--module"),
    ("modaliases", "--hardware"),
    ("module_deps", "--module"),
    ("stage", "--stage2"),
    ("kernel_sha256", "--kernel"),
    ("name", "--name"),
];

/// A key the user's boot.toml or an option sets, not both.
pub const OPTION_KEYS: &[(&str, &str)] = &[
    ("min_rollback_index", "--min-rollback-index"),
    ("boot_disk", "--boot-disk"),
];

/// Directories every initramfs has (mode 0755).
pub const DIRS: &[&str] = &[
    "dev",
    "etc",
    "etc/stele",
    "etc/stele/keys",
    "lib",
    "lib/modules",
    "newroot",
    "proc",
    "run",
    "sys",
];

/// What went wrong while building an initramfs.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// An input file could not be read.
    #[error("failed to read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The boot.toml is refused by its schema (the message stele-init would log).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The user boot.toml sets a key `stele initramfs` generates.
    #[error("bad boot config {origin}: `{key}` is set by `stele initramfs` (use {option}), remove it from the file")]
    Generated {
        origin: String,
        key: String,
        option: &'static str,
    },
    /// A key file is not an ed25519 SPKI PEM public key (the verifier's error names it).
    #[error(transparent)]
    KeyParse(stele_verifier::Error),
    /// A key is given twice.
    #[error("bad key {}: key {id} is given twice", path.display())]
    Duplicate { path: PathBuf, id: String },
    /// No keys, or a threshold outside 1..=number of keys.
    #[error("threshold {threshold} is invalid with {}: it must be between 1 and the number of --key files", stele_verifier::plural::count_len(*keys, "key", "keys"))]
    Threshold { threshold: usize, keys: usize },
    /// Two modules share a base file name, which the flat /lib/modules cannot hold.
    #[error("modules {a} and {b} have the same file name; the initramfs stores modules flat in /lib/modules")]
    ModuleClash { a: PathBuf, b: PathBuf },
    /// Module resolution failed.
    #[error(transparent)]
    Modules(#[from] ModulesError),
    /// Building the archive failed.
    #[error(transparent)]
    Cpio(#[from] CpioError),
    /// The host's mke2fs cannot be carried (the factory reset needs it).
    #[error("mke2fs for the initramfs (the data partition's factory reset): {0}")]
    Mke2fs(String),
}

impl Report for InitramfsError {
    /// Unreadable inputs are the environment; everything else is the arguments.
    fn exit(&self) -> Exit {
        match self {
            InitramfsError::Read { .. } | InitramfsError::Mke2fs(_) => Exit::Environment,
            InitramfsError::Modules(e) => e.exit(),
            InitramfsError::Cpio(e) => e.exit(),
            _ => Exit::Usage,
        }
    }
}

/// A trusted key as it goes into the initramfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedKey {
    /// 16 hex digits (verifier::keys::key_id).
    pub id: String,
    /// The SPKI PEM text (canonical, as verifier::keys::public_pem writes it).
    pub pem: String,
}

/// A kernel module as it goes into the initramfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleFile {
    pub file_name: String,
    pub data: Vec<u8>,
}

/// What `stele initramfs` puts into boot.toml itself ([`GENERATED_KEYS`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Generated {
    pub threshold: usize,
    /// File names, in load order.
    pub modules: Vec<String>,
    /// The watchdog drivers among `modules`.
    pub watchdog_modules: Vec<String>,
    /// The modules loaded only for present devices, with their device aliases.
    pub modaliases: std::collections::BTreeMap<String, Vec<String>>,
    /// For each module that needs others loaded first, their file names.
    pub module_deps: std::collections::BTreeMap<String, Vec<String>>,
    /// `--stage2`: `stage = 2`.
    pub stage2: bool,
    /// `--kernel`: the sha256 of the kernel this initramfs runs under.
    pub kernel_sha256: Option<[u8; 32]>,
    /// `--min-rollback-index`.
    pub min_rollback_index: Option<u64>,
    /// `--name`: the product the initramfs binds the device to, if any.
    pub name: Option<String>,
    /// `--boot-disk`: the GPT disk GUID of the disk the machine boots from.
    pub boot_disk: Option<stele_verifier::gpt::Guid>,
}

/// The final boot.toml: the user's settings (`origin` names the file in errors) plus what
/// the builder generates (`threshold`, `modules`, and only when they say something:
/// `watchdog_modules`, `stage`, `kernel_sha256`, `name`), checked by the one boot.toml
/// schema stele-init runs ([`BootConfig::from_table`]), so that what builds is what boots.
/// Pure.
pub fn boot_toml(user: Option<(&str, &str)>, g: &Generated) -> Result<String, InitramfsError> {
    let (origin, mut table) = match user {
        Some((origin, text)) => (origin, parse_table(text, origin)?),
        None => ("generated boot.toml", toml::Table::new()),
    };
    // In the file's (sorted) key order, so the first one named is the first one set.
    let set = table
        .keys()
        .find_map(|k| GENERATED_KEYS.iter().find(|(g, _)| g == k));
    if let Some((key, option)) = set {
        return Err(InitramfsError::Generated {
            origin: origin.to_string(),
            key: (*key).to_string(),
            option,
        });
    }
    let names = |v: &[String]| toml::Value::Array(v.iter().map(|m| m.clone().into()).collect());
    let t = i64::try_from(g.threshold).unwrap_or(i64::MAX);
    table.insert("threshold".into(), toml::Value::Integer(t));
    table.insert("modules".into(), names(&g.modules));
    if !g.watchdog_modules.is_empty() {
        table.insert("watchdog_modules".into(), names(&g.watchdog_modules));
    }
    if !g.modaliases.is_empty() {
        let t: toml::Table = g
            .modaliases
            .iter()
            .map(|(m, p)| (m.clone(), names(p)))
            .collect();
        table.insert("modaliases".into(), toml::Value::Table(t));
    }
    if !g.module_deps.is_empty() {
        let t: toml::Table = g
            .module_deps
            .iter()
            .map(|(m, d)| (m.clone(), names(d)))
            .collect();
        table.insert("module_deps".into(), toml::Value::Table(t));
    }
    if g.stage2 {
        table.insert("stage".into(), toml::Value::Integer(2));
    }
    if let Some(d) = &g.kernel_sha256 {
        let hex = stele_verifier::hex::encode(d);
        table.insert("kernel_sha256".into(), toml::Value::String(hex));
    }
    let option_value = |i: usize, v: toml::Value, table: &mut toml::Table| {
        let (key, option) = OPTION_KEYS[i];
        if table.contains_key(key) {
            return Err(InitramfsError::Generated {
                origin: origin.to_string(),
                key: key.to_string(),
                option,
            });
        }
        table.insert(key.into(), v);
        Ok(())
    };
    if let Some(n) = g.min_rollback_index {
        let v = i64::try_from(n).map_err(|_| {
            ConfigError::key(
                origin,
                OPTION_KEYS[0].0,
                format!("{n} is above the TOML limit {}", i64::MAX),
            )
        })?;
        option_value(0, toml::Value::Integer(v), &mut table)?;
    }
    if let Some(g) = g.boot_disk {
        option_value(1, toml::Value::String(g.to_string()), &mut table)?;
    }
    if let Some(n) = &g.name {
        table.insert("name".into(), toml::Value::String(n.clone()));
    }
    BootConfig::from_table(table.clone(), origin)?;
    toml::to_string(&table)
        .map_err(|e| ConfigError::file(origin, format!("cannot be written as TOML: {e}")).into())
}

/// Assembles the archive from loaded inputs. Pure. `modules` is in load order.
pub fn build_archive(
    init: Vec<u8>,
    boot_toml: &str,
    keys: &[TrustedKey],
    modules: Vec<ModuleFile>,
    mtime: u32,
) -> Result<Archive, InitramfsError> {
    // Archive paths are relative to the initramfs root.
    let rel = |p: &'static str| p.trim_start_matches('/');
    let mut a = Archive::new(mtime);
    for d in DIRS {
        a.add_dir(d, 0o755)?;
    }
    a.add_char_dev("dev/console", 0o600, 5, 1)?;
    a.add_file(rel(layout::INIT), 0o755, init)?;
    a.add_file(rel(layout::BOOT_TOML), 0o644, boot_toml.as_bytes().to_vec())?;
    for k in keys {
        a.add_file(
            &format!("{}/{}.pem", rel(layout::KEYS_DIR), k.id),
            0o644,
            k.pem.as_bytes().to_vec(),
        )?;
    }
    for m in modules {
        a.add_file(
            &format!("{}/{}", rel(layout::MODULES_DIR), m.file_name),
            0o644,
            m.data,
        )?;
    }
    Ok(a)
}

fn read(path: &Path) -> Result<Vec<u8>, InitramfsError> {
    std::fs::read(path).map_err(|source| InitramfsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads and checks the key files (ed25519 SPKI PEM), and the threshold against them.
pub fn load_keys(paths: &[PathBuf], threshold: usize) -> Result<Vec<TrustedKey>, InitramfsError> {
    let mut out: Vec<TrustedKey> = Vec::new();
    for p in paths {
        let key = stele_verifier::keys::parse_public_key(&read(p)?, &p.display().to_string())
            .map_err(InitramfsError::KeyParse)?;
        let id = stele_verifier::keys::key_id(&key).to_string();
        if out.iter().any(|k| k.id == id) {
            return Err(InitramfsError::Duplicate {
                path: p.clone(),
                id,
            });
        }
        // Stored re-encoded: the init parses exactly what the verifier writes.
        let pem = stele_verifier::keys::public_pem(&key);
        out.push(TrustedKey { id, pem });
    }
    if threshold == 0 || threshold > out.len() {
        return Err(InitramfsError::Threshold {
            threshold,
            keys: out.len(),
        });
    }
    Ok(out)
}

/// Everything `stele initramfs` needs.
#[derive(Clone, Debug)]
pub struct InitramfsSpec {
    pub modules_dir: PathBuf,
    /// Modules asked for besides (or, without `default_modules`, instead of) the defaults;
    /// they load on every boot.
    pub modules: Vec<String>,
    /// The core ([`hardware::CORE`]) and the `hardware` profile's drivers.
    pub default_modules: bool,
    /// `--hardware`: the drivers carried (each loaded only for a present device).
    pub hardware: Hardware,
    pub keys: Vec<PathBuf>,
    pub threshold: usize,
    pub config: Option<PathBuf>,
    pub init: PathBuf,
    pub mtime: u32,
    /// `--name`: the product the device is bound to.
    pub name: Option<String>,
    /// `--stage2`: a stage-2 initramfs (boot.toml `stage = 2`).
    pub stage2: bool,
    /// `--kernel`: the kernel this initramfs runs under (boot.toml `kernel_sha256`).
    pub kernel: Option<PathBuf>,
    /// `--min-rollback-index` (boot.toml `min_rollback_index`).
    pub min_rollback_index: Option<u64>,
    /// `--boot-disk` (boot.toml `boot_disk`).
    pub boot_disk: Option<stele_verifier::gpt::Guid>,
}

/// The module names `spec` asks for on every boot (the core first, unless
/// `default_modules` is off, then `--module`s), without repeats.
pub fn requested_modules(spec: &InitramfsSpec) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let defaults = hardware::CORE.iter().map(|s| s.to_string());
    let base: Vec<String> = if spec.default_modules {
        defaults.collect()
    } else {
        Vec::new()
    };
    for n in base.into_iter().chain(spec.modules.iter().cloned()) {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    names
}

/// boot.toml `module_deps`: for each module that needs others loaded first (its
/// dependencies and soft dependencies `pre:`), their file names, so that stele-init can
/// load independent modules at the same time. Pure.
fn module_deps(resolved: &[ResolvedModule]) -> std::collections::BTreeMap<String, Vec<String>> {
    let file: std::collections::HashMap<&str, &str> = resolved
        .iter()
        .map(|m| (m.name.as_str(), m.file_name.as_str()))
        .collect();
    resolved
        .iter()
        .filter_map(|m| {
            let d: Vec<String> = m
                .after
                .iter()
                .filter_map(|a| file.get(a.as_str()).map(|f| (*f).to_owned()))
                .collect();
            (!d.is_empty()).then(|| (m.file_name.clone(), d))
        })
        .collect()
}

/// Reads all inputs and builds the archive. Returns it and the module load order.
pub fn build(spec: &InitramfsSpec) -> Result<(Archive, Vec<String>), InitramfsError> {
    let keys = load_keys(&spec.keys, spec.threshold)?;
    let user = match &spec.config {
        Some(p) => {
            let b = read(p)?;
            let text = String::from_utf8(b)
                .map_err(|_| ConfigError::file(&p.display().to_string(), "not UTF-8"))?;
            Some((p.display().to_string(), text))
        }
        None => None,
    };
    let db = ModuleDb::load(&spec.modules_dir)?;
    let names = requested_modules(spec);
    let (resolved, modaliases) = if spec.default_modules {
        let present = match spec.hardware {
            Hardware::Host => hardware::present_modaliases(std::path::Path::new("/sys")),
            _ => Vec::new(),
        };
        let drivers = hardware::drivers(&db, spec.hardware, &present);
        let host = (spec.hardware == Hardware::Host).then_some(present.as_slice());
        hardware::plan(&db, &names, &drivers, host)?
    } else {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        (db.resolve(&refs)?, Default::default())
    };
    let mut files: Vec<ModuleFile> = Vec::new();
    for (i, m) in resolved.iter().enumerate() {
        if let Some(j) = resolved[..i]
            .iter()
            .position(|o| o.file_name == m.file_name)
        {
            return Err(InitramfsError::ModuleClash {
                a: resolved[j].path.clone(),
                b: m.path.clone(),
            });
        }
        files.push(ModuleFile {
            file_name: m.file_name.clone(),
            data: read(&m.path)?,
        });
    }
    let order: Vec<String> = files.iter().map(|m| m.file_name.clone()).collect();
    let kernel_sha256 = match &spec.kernel {
        Some(k) => Some(sha2::Sha256::digest(read(k)?).into()),
        None => None,
    };
    let generated = Generated {
        threshold: spec.threshold,
        modules: order.clone(),
        watchdog_modules: resolved
            .iter()
            .filter(|m| m.in_watchdog_dir() && m.nowayout)
            .map(|m| m.file_name.clone())
            .collect(),
        modaliases,
        module_deps: module_deps(&resolved),
        stage2: spec.stage2,
        kernel_sha256,
        min_rollback_index: spec.min_rollback_index,
        name: spec.name.clone(),
        boot_disk: spec.boot_disk,
    };
    let toml_text = boot_toml(
        user.as_ref().map(|(o, t)| (o.as_str(), t.as_str())),
        &generated,
    )?;
    let init = read(&spec.init)?;
    let mut archive = build_archive(init, &toml_text, &keys, files, spec.mtime)?;
    crate::initramfs_mke2fs::add(&mut archive).map_err(InitramfsError::Mke2fs)?;
    let aliases = storage_aliases(&spec.modules_dir)?;
    if !aliases.is_empty() {
        let path = stele_verifier::modalias::STORAGE_ALIAS.trim_start_matches('/');
        archive.add_file(path, 0o644, aliases.into_bytes())?;
    }
    Ok((archive, order))
}

/// The initramfs's storage aliases (`/etc/stele/storage.alias`, docs/FORMATS.md): the
/// storage-driver subset of the kernel's `modules.alias` in `dir`, filtered by
/// `stele_verifier::modalias::storage_subset` (the one definition); empty when `dir` has
/// no `modules.alias` (PID 1 then names a driverless controller by its PCI id).
pub fn storage_aliases(dir: &Path) -> Result<String, InitramfsError> {
    let read = |name: &str| -> Result<String, InitramfsError> {
        let path = dir.join(name);
        match std::fs::read(&path) {
            Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(source) => Err(InitramfsError::Read { path, source }),
        }
    };
    let alias = read("modules.alias")?;
    if alias.is_empty() {
        return Ok(String::new());
    }
    Ok(stele_verifier::modalias::storage_subset(
        &read("modules.dep")?,
        &alias,
    ))
}

/// The kernel runs `/init` before any library is there: it must be an ELF executable
/// without a program interpreter (statically linked). Pure; `Err` says why and how to fix.
pub fn check_static_elf(bytes: &[u8]) -> Result<(), String> {
    const PT_INTERP: u32 = 3;
    let rebuild = "build stele-init static: `cargo build --profile init -p stele-init --target \
                   x86_64-unknown-linux-gnu` with CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS=\
                   '-C target-feature=+crt-static' (`cargo xtask test` does this)";
    if bytes.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err(format!("not an ELF executable; {rebuild}"));
    }
    if bytes.get(4..6) != Some([2u8, 1].as_slice()) {
        return Err("not a 64-bit little-endian ELF executable".to_owned());
    }
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let truncated = || "truncated ELF header".to_owned();
    let phoff = usize::try_from(u64_at(0x20).ok_or_else(truncated)?).map_err(|_| truncated())?;
    let phentsize = usize::from(u16_at(0x36).ok_or_else(truncated)?);
    let phnum = usize::from(u16_at(0x38).ok_or_else(truncated)?);
    for i in 0..phnum {
        let at = phentsize
            .checked_mul(i)
            .and_then(|o| o.checked_add(phoff))
            .ok_or_else(truncated)?;
        let p_type = bytes
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(truncated)?;
        if p_type == PT_INTERP {
            return Err(format!(
                "dynamically linked (it needs a program interpreter, which the initramfs does not have; the kernel would fail with \"Failed to execute /init (error -2)\"); {rebuild}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "initramfs_tests.rs"]
mod tests;

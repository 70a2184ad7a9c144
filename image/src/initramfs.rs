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
use crate::modules::{takes_nowayout, ModuleDb, ModulesError, DEFAULT_MODULES};

/// Keys `stele initramfs` writes itself, and the option that sets each.
pub const GENERATED_KEYS: &[(&str, &str)] = &[
    ("threshold", "--threshold"),
    ("modules", "--module"),
    ("watchdog_modules", "--module"),
    ("stage", "--stage2"),
    ("kernel_sha256", "--kernel"),
    ("name", "--name"),
];

/// A key the user's boot.toml or an option sets, not both.
pub const OPTION_KEYS: &[(&str, &str)] = &[("min_rollback_index", "--min-rollback-index")];

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
}

impl Report for InitramfsError {
    /// Unreadable inputs are the environment; everything else is the arguments.
    fn exit(&self) -> Exit {
        match self {
            InitramfsError::Read { .. } => Exit::Environment,
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
    /// `--stage2`: `stage = 2`.
    pub stage2: bool,
    /// `--kernel`: the sha256 of the kernel this initramfs runs under.
    pub kernel_sha256: Option<[u8; 32]>,
    /// `--min-rollback-index`.
    pub min_rollback_index: Option<u64>,
    /// `--name`: the product the initramfs binds the device to, if any.
    pub name: Option<String>,
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
    if g.stage2 {
        table.insert("stage".into(), toml::Value::Integer(2));
    }
    if let Some(d) = &g.kernel_sha256 {
        let hex = stele_verifier::hex::encode(d);
        table.insert("kernel_sha256".into(), toml::Value::String(hex));
    }
    if let Some(n) = g.min_rollback_index {
        let (key, option) = OPTION_KEYS[0];
        if table.contains_key(key) {
            return Err(InitramfsError::Generated {
                origin: origin.to_string(),
                key: key.to_string(),
                option,
            });
        }
        let v = i64::try_from(n).map_err(|_| {
            ConfigError::key(
                origin,
                key,
                format!("{n} is above the TOML limit {}", i64::MAX),
            )
        })?;
        table.insert(key.into(), toml::Value::Integer(v));
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
    /// Modules asked for besides (or, without `default_modules`, instead of) the defaults.
    pub modules: Vec<String>,
    pub default_modules: bool,
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
}

/// The module names `spec` asks for, defaults first, without repeats.
pub fn requested_modules(spec: &InitramfsSpec) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let defaults = DEFAULT_MODULES.iter().map(|s| s.to_string());
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
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let resolved = db.resolve(&refs)?;
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
            .zip(&files)
            .filter(|(m, f)| m.in_watchdog_dir() && takes_nowayout(&f.data))
            .map(|(m, _)| m.file_name.clone())
            .collect(),
        stage2: spec.stage2,
        kernel_sha256,
        min_rollback_index: spec.min_rollback_index,
        name: spec.name.clone(),
    };
    let toml_text = boot_toml(
        user.as_ref().map(|(o, t)| (o.as_str(), t.as_str())),
        &generated,
    )?;
    let init = read(&spec.init)?;
    let archive = build_archive(init, &toml_text, &keys, files, spec.mtime)?;
    Ok((archive, order))
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
mod tests {
    use super::*;
    use crate::cpio::EntryKind;

    /// A minimal 64-bit ELF header with one program header of type `p_type`.
    fn elf(p_type: u32) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        b[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        b[64..68].copy_from_slice(&p_type.to_le_bytes());
        b
    }

    #[test]
    fn init_must_be_a_static_elf() {
        assert_eq!(check_static_elf(&elf(1)), Ok(()));
        let dynamic = check_static_elf(&elf(3)).unwrap_err();
        assert!(dynamic.contains("dynamically linked"), "{dynamic}");
        assert!(check_static_elf(b"#!/bin/sh\n")
            .unwrap_err()
            .contains("not an ELF"));
        assert!(check_static_elf(&elf(1)[..66]).is_err());
        // The test binary itself is dynamically linked (cargo's default).
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(check_static_elf(&me).is_err());
    }

    #[test]
    fn boot_toml_adds_threshold_and_modules() {
        let user = "verify = \"full\"\non_failure = \"poweroff\"\nfailure_delay_secs = 3\n";
        let g = Generated {
            threshold: 2,
            modules: vec!["virtio_ring.ko".into(), "virtio.ko".into()],
            name: Some("router".into()),
            ..Generated::default()
        };
        let out = boot_toml(Some(("b.toml", user)), &g).unwrap();
        let t: toml::Table = out.parse().unwrap();
        assert_eq!(t["threshold"].as_integer(), Some(2));
        assert_eq!(t["verify"].as_str(), Some("full"));
        assert_eq!(t["failure_delay_secs"].as_integer(), Some(3));
        let m: Vec<&str> = t["modules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(m, ["virtio_ring.ko", "virtio.ko"]);
        assert_eq!(t["name"].as_str(), Some("router"));
        // No user file: only the generated keys, and only those that say something.
        let t: toml::Table = boot_toml(None, &one()).unwrap().parse().unwrap();
        assert_eq!(t.len(), 2);
        // A name the schema refuses is refused with PID 1's message.
        let bad = Generated {
            name: Some("my router".into()),
            ..one()
        };
        let e = boot_toml(None, &bad).unwrap_err();
        assert!(
            e.to_string()
                .contains("name: \"my router\" is not a product name"),
            "{e}"
        );
        let g = Generated {
            modules: vec!["i6300esb.ko".into()],
            watchdog_modules: vec!["i6300esb.ko".into()],
            stage2: true,
            ..one()
        };
        let t: toml::Table = boot_toml(None, &g).unwrap().parse().unwrap();
        assert_eq!(t["stage"].as_integer(), Some(2));
        assert_eq!(t["watchdog_modules"].as_array().map(Vec::len), Some(1));
        let g = Generated {
            kernel_sha256: Some([0xab; 32]),
            ..one()
        };
        let t: toml::Table = boot_toml(None, &g).unwrap().parse().unwrap();
        assert_eq!(
            t["kernel_sha256"].as_str().map(str::to_owned),
            Some("ab".repeat(32))
        );
        // The schema's own rule on generated values: stage 2 never kexecs.
        let g = Generated { stage2: true, ..g };
        let e = boot_toml(None, &g).unwrap_err();
        assert!(e.to_string().contains("never kexecs"), "{e}");
    }

    #[test]
    fn min_rollback_index_from_the_option_or_the_file_not_both() {
        let g = Generated {
            min_rollback_index: Some(3),
            ..one()
        };
        let t: toml::Table = boot_toml(None, &g).unwrap().parse().unwrap();
        assert_eq!(t["min_rollback_index"].as_integer(), Some(3));
        let file = Some((
            "b.toml",
            "min_rollback_index = 2\nrollback_storage = \"tpm\"\n",
        ));
        let t: toml::Table = boot_toml(file, &one()).unwrap().parse().unwrap();
        assert_eq!(t["min_rollback_index"].as_integer(), Some(2));
        let e = boot_toml(file, &g).unwrap_err();
        assert!(matches!(e, InitramfsError::Generated { .. }), "{e}");
        assert!(e.to_string().contains("--min-rollback-index"), "{e}");
        let huge = Generated {
            min_rollback_index: Some(u64::MAX),
            ..one()
        };
        assert!(boot_toml(None, &huge).is_err());
    }

    fn one() -> Generated {
        Generated {
            threshold: 1,
            ..Generated::default()
        }
    }

    #[test]
    fn boot_toml_refuses_what_stele_init_refuses() {
        for (text, needle) in [
            (
                "threshold = 2",
                "set by `stele initramfs` (use --threshold)",
            ),
            ("modules = []", "set by `stele initramfs` (use --module)"),
            ("name = \"demo\"", "set by `stele initramfs` (use --name)"),
            ("stage = 2", "set by `stele initramfs` (use --stage2)"),
            (
                "stage = 2\nkernel_sha256 = \"\"",
                "`kernel_sha256` is set by `stele initramfs` (use --kernel)",
            ),
            (
                "watchdog_modules = []",
                "set by `stele initramfs` (use --module)",
            ),
            ("colour = \"red\"", "colour: unknown key"),
            ("verify = 1", "verify: must be a string"),
            ("failure_delay_secs = \"3\"", "non-negative integer"),
            ("verify = \"none\"", "one of tree, full"),
            ("on_failure = \"halt\"", "one of reboot, poweroff"),
            (
                "data_mount = \"/usr\"",
                "data_mount: \"/usr\" would put writable storage",
            ),
            ("this is not toml", "not valid TOML"),
        ] {
            let e = boot_toml(Some(("u.toml", text)), &one()).unwrap_err();
            assert_eq!(e.exit(), Exit::Usage, "{text}");
            let msg = e.to_string();
            assert!(
                msg.contains(needle) && msg.contains("u.toml"),
                "{text}: {msg}"
            );
            if !needle.contains("set by") {
                // The very message stele-init would log for the same file.
                let pid1 = BootConfig::parse(text, "u.toml").unwrap_err();
                assert_eq!(msg, pid1.to_string());
            }
        }
        // A generated value the schema refuses (a module name it would not load).
        let g = Generated {
            modules: vec!["bad".into()],
            ..one()
        };
        let e = boot_toml(None, &g).unwrap_err();
        assert!(e.to_string().contains("modules"), "{e}");
    }

    #[test]
    fn dirs_hold_every_directory_of_the_layout() {
        let file_dir = |p: &'static str| Path::new(p).parent().unwrap();
        for p in [
            file_dir(layout::BOOT_TOML),
            Path::new(layout::KEYS_DIR),
            Path::new(layout::MODULES_DIR),
        ] {
            for d in p.ancestors().filter(|d| *d != Path::new("/")) {
                let rel = d.to_str().unwrap().trim_start_matches('/');
                assert!(
                    DIRS.contains(&rel),
                    "{rel} (of {}) is not in DIRS",
                    p.display()
                );
            }
        }
    }

    #[test]
    fn archive_has_contract_layout() {
        let keys = [TrustedKey {
            id: "0123456789abcdef".into(),
            pem: "PEM".into(),
        }];
        let mods = vec![
            ModuleFile {
                file_name: "virtio_ring.ko".into(),
                data: b"r".to_vec(),
            },
            ModuleFile {
                file_name: "virtio.ko".into(),
                data: b"v".to_vec(),
            },
        ];
        let a = build_archive(b"ELF".to_vec(), "threshold = 1\n", &keys, mods, 0).unwrap();
        let entries: Vec<(&str, u32, &EntryKind)> =
            a.entries().map(|(p, e)| (p, e.mode(), &e.kind)).collect();
        let find = |p: &str| entries.iter().find(|e| e.0 == p).copied();
        for d in DIRS {
            assert_eq!(find(d).map(|e| e.1), Some(0o040_755), "{d}");
        }
        assert_eq!(
            find("dev/console").map(|e| (e.1, e.2.clone())),
            Some((0o020_600, EntryKind::CharDev { major: 5, minor: 1 }))
        );
        assert_eq!(find("init").map(|e| e.1), Some(0o100_755));
        assert_eq!(find("etc/stele/boot.toml").map(|e| e.1), Some(0o100_644));
        assert_eq!(
            find("etc/stele/keys/0123456789abcdef.pem").map(|e| e.2.clone()),
            Some(EntryKind::File(b"PEM".to_vec()))
        );
        assert!(find("lib/modules/virtio.ko").is_some());
        assert_eq!(entries.len(), DIRS.len() + 6);
        // Same inputs, same bytes.
        let again = build_archive(b"ELF".to_vec(), "threshold = 1\n", &keys, vec![], 0)
            .unwrap()
            .to_bytes()
            .unwrap();
        let again2 = build_archive(b"ELF".to_vec(), "threshold = 1\n", &keys, vec![], 0)
            .unwrap()
            .to_bytes()
            .unwrap();
        assert_eq!(again, again2);
    }

    #[test]
    fn requested_modules_defaults_and_replacement() {
        let mut spec = InitramfsSpec {
            modules_dir: PathBuf::new(),
            modules: vec!["vfat".into(), "erofs".into()],
            default_modules: true,
            keys: vec![],
            threshold: 1,
            config: None,
            init: PathBuf::new(),
            mtime: 0,
            name: None,
            stage2: false,
            kernel: None,
            min_rollback_index: None,
        };
        let r = requested_modules(&spec);
        assert_eq!(r.len(), DEFAULT_MODULES.len() + 1);
        assert_eq!(r.last().map(String::as_str), Some("vfat"));
        spec.default_modules = false;
        assert_eq!(requested_modules(&spec), ["vfat", "erofs"]);
    }

    #[test]
    fn threshold_checked_against_keys() {
        assert!(matches!(
            load_keys(&[], 1),
            Err(InitramfsError::Threshold {
                threshold: 1,
                keys: 0
            })
        ));
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("nope.pem");
        let e = load_keys(&[missing], 1).unwrap_err();
        assert_eq!(e.exit(), Exit::Environment);
    }

    fn key_file(dir: &Path, seed: u8) -> (PathBuf, String) {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
        let vk = sk.verifying_key();
        let p = dir.join(format!("k{seed}.pem"));
        std::fs::write(&p, stele_verifier::keys::public_pem(&vk)).unwrap();
        (p, stele_verifier::keys::key_id(&vk).to_string())
    }

    #[test]
    fn load_keys_ids_threshold_and_duplicates() {
        let d = tempfile::tempdir().unwrap();
        let (k1, id1) = key_file(d.path(), 1);
        let (k2, id2) = key_file(d.path(), 2);
        let keys = load_keys(&[k1.clone(), k2.clone()], 2).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(
            (keys[0].id.as_str(), keys[1].id.as_str()),
            (id1.as_str(), id2.as_str())
        );
        assert_eq!(keys[0].id.len(), 16);
        assert!(matches!(
            load_keys(&[k1.clone(), k2.clone()], 3),
            Err(InitramfsError::Threshold {
                threshold: 3,
                keys: 2
            })
        ));
        assert!(matches!(
            load_keys(std::slice::from_ref(&k1), 0),
            Err(InitramfsError::Threshold { .. })
        ));
        let e = load_keys(&[k1.clone(), k1.clone()], 1).unwrap_err();
        assert!(matches!(e, InitramfsError::Duplicate { .. }), "{e}");
        assert!(e.to_string().contains("twice"), "{e}");
        let junk = d.path().join("junk.pem");
        std::fs::write(
            &junk,
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        let e = load_keys(&[junk], 1).unwrap_err();
        assert!(matches!(e, InitramfsError::KeyParse(_)));
        assert!(e.to_string().contains("junk.pem"), "{e}");
        assert_eq!(e.exit(), Exit::Usage);
    }

    #[test]
    fn build_from_files() {
        let d = tempfile::tempdir().unwrap();
        let mods = crate::modules::tests::fake_dir();
        let (k1, id1) = key_file(d.path(), 1);
        let init = d.path().join("init");
        std::fs::write(&init, elf(1)).unwrap();
        let cfg = d.path().join("boot.toml");
        std::fs::write(&cfg, "verify = \"full\"\n").unwrap();
        let spec = InitramfsSpec {
            modules_dir: mods.path().to_path_buf(),
            modules: vec!["erofs".into(), "virtio-blk".into(), "i6300esb".into()],
            default_modules: false,
            keys: vec![k1],
            threshold: 1,
            config: Some(cfg),
            init,
            mtime: 77,
            name: None,
            stage2: false,
            kernel: None,
            min_rollback_index: None,
        };
        let (a, order) = build(&spec).unwrap();
        assert_eq!(
            order,
            [
                "crc32c_generic.ko",
                "libcrc32c.ko",
                "erofs.ko",
                "virtio_ring.ko",
                "virtio.ko",
                "virtio_blk.ko",
                "watchdog.ko",
                "i6300esb.ko"
            ]
        );
        let file = |p: &str| match a.entries().find(|(q, _)| *q == p).map(|(_, e)| &e.kind) {
            Some(EntryKind::File(d)) => d.clone(),
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(file("init"), elf(1));
        let t: toml::Table = String::from_utf8(file("etc/stele/boot.toml"))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(t["verify"].as_str(), Some("full"));
        let listed: Vec<&str> = t["modules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(listed, order);
        assert_eq!(
            t["watchdog_modules"].as_array().unwrap()[..],
            [toml::Value::from("i6300esb.ko")]
        );
        assert!(!t.contains_key("stage") && !t.contains_key("kernel_sha256"));
        assert!(
            file(&format!("etc/stele/keys/{id1}.pem")).starts_with(b"-----BEGIN PUBLIC KEY-----")
        );
        assert_eq!(
            file("lib/modules/libcrc32c.ko"),
            b"ELF\0softdep=pre: crc32c\0name=libcrc32c\0"
        );
        // Same inputs, same bytes.
        assert_eq!(
            a.to_bytes().unwrap(),
            build(&spec).unwrap().0.to_bytes().unwrap()
        );
        // --stage2 and --kernel: stage = 2, the kernel's sha256.
        let kernel = d.path().join("vmlinuz");
        std::fs::write(&kernel, b"kernel bytes").unwrap();
        let boot_toml_of = |spec: &InitramfsSpec| -> toml::Table {
            let (a, _) = build(spec).unwrap();
            let text = a
                .entries()
                .find_map(|(p, e)| match (&e.kind, p == "etc/stele/boot.toml") {
                    (EntryKind::File(d), true) => Some(String::from_utf8(d.clone()).unwrap()),
                    _ => None,
                })
                .unwrap();
            text.parse().unwrap()
        };
        let t = boot_toml_of(&InitramfsSpec {
            kernel: Some(kernel.clone()),
            ..spec.clone()
        });
        let sha = stele_verifier::hex::encode(&sha2::Sha256::digest(b"kernel bytes"));
        assert_eq!(t["kernel_sha256"].as_str(), Some(sha.as_str()));
        let t = boot_toml_of(&InitramfsSpec {
            stage2: true,
            ..spec.clone()
        });
        assert_eq!(t["stage"].as_integer(), Some(2));
        // A config that sets threshold is refused.
        let bad = d.path().join("bad.toml");
        std::fs::write(&bad, "threshold = 1\n").unwrap();
        let spec = InitramfsSpec {
            config: Some(bad),
            ..spec
        };
        assert!(matches!(
            build(&spec),
            Err(InitramfsError::Generated { .. })
        ));
    }
}

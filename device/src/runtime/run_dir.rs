//! THE `/run/stele` contract: what the boot publishes before switch root ([`publish`],
//! [`install_self`]) and what the device commands read back ([`RunDir::read`]).
//!
//! ```text
//! /run/stele/slot           a or b: the booted slot
//! /run/stele/manifest.toml  the booted image's verified manifest body, byte for byte
//! /run/stele/boot.toml      the initramfs's boot.toml (threshold, name)
//! /run/stele/devices        esp=, state=/dev/vda2, a=, b=, data= (empty: absent)
//! /run/stele/keys/          the initramfs's trusted keys
//! /run/stele/bin/stele      stele-init itself: the device's `stele update`
//! ```

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use stele_verifier::config::BootConfig;
use stele_verifier::keys::Keyring;
use stele_verifier::layout::{PerRole, Role, ROLES};
use stele_verifier::manifest::Manifest;
use stele_verifier::state::Slot;

use crate::runtime::keyring::load_keyring;
use crate::{Error, Result};
use stele_verifier::exit::print_warning;

/// Where the boot publishes.
pub const RUN_DIR: &str = "/run/stele";
/// Where the boot copies its own executable, first in the services' PATH.
pub const BIN_DIR: &str = "/run/stele/bin";
/// The multi-call name of that copy.
pub const PROGRAM: &str = "stele";
/// The booted slot.
pub const SLOT: &str = "slot";
/// The booted image's manifest body.
pub const MANIFEST: &str = "manifest.toml";
/// The initramfs's boot.toml.
pub const BOOT_TOML: &str = "boot.toml";
/// The partitions found.
pub const DEVICES: &str = "devices";
/// The trusted keys.
pub const KEYS: &str = "keys";
/// The verified root's read-only lower layer, mounted by the boot (init/src/mounts.rs
/// `LOWER`), kept after switch root: what is run from the image is run from here.
pub const LOWER: &str = "lower";

/// A malformed `slot` or `devices` file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("{0:?} is not a or b")]
    NotASlot(String),
    #[error("line {0:?} is not key=value")]
    NotKeyValue(String),
    #[error("no state= line")]
    NoState,
}

/// `/run/stele/devices`: the partition of each role the boot found ([`PerRole`], the one
/// partition record; the state's is always there).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Devices(pub PerRole<Option<String>>);

impl Devices {
    /// The partition of `role`, if present.
    pub fn get(&self, role: Role) -> Option<&str> {
        self.0.get(role).as_deref().filter(|p| !p.is_empty())
    }

    /// The partition of slot `s`, if present.
    pub fn slot(&self, s: Slot) -> Option<&str> {
        self.get(Role::slot(s))
    }

    /// The state partition ([`Devices::parse`] requires it).
    pub fn state(&self) -> &str {
        self.get(Role::State).unwrap_or_default()
    }

    /// One `<key>=<path>` line per role, in [`ROLES`] order (empty when absent). Pure.
    pub fn to_text(&self) -> String {
        ROLES
            .iter()
            .map(|r| format!("{}={}\n", r.devices_key, self.get(r.role).unwrap_or("")))
            .collect()
    }

    /// Parses [`Devices::to_text`]; unknown keys are ignored, `state` is required. Pure.
    pub fn parse(text: &str) -> std::result::Result<Self, FormatError> {
        let mut d = Devices::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| FormatError::NotKeyValue(line.into()))?;
            let v = v.trim();
            if let Some(r) = ROLES.iter().find(|r| r.devices_key == k.trim()) {
                *d.0.get_mut(r.role) = (!v.is_empty()).then(|| v.to_string());
            }
        }
        if d.get(Role::State).is_none() {
            return Err(FormatError::NoState);
        }
        Ok(d)
    }
}

/// Parses `/run/stele/slot` (`a` or `b`, one line). Pure.
pub fn parse_slot(text: &str) -> std::result::Result<Slot, FormatError> {
    match text.trim() {
        "a" => Ok(Slot::A),
        "b" => Ok(Slot::B),
        other => Err(FormatError::NotASlot(other.into())),
    }
}

/// What the boot publishes.
#[derive(Clone, Copy, Debug)]
pub struct Publish<'a> {
    pub slot: Slot,
    /// The verified manifest body.
    pub manifest: &'a [u8],
    /// The boot.toml text the boot read.
    pub boot_toml: &'a str,
    pub devices: &'a Devices,
    /// Where the trusted keys are (every file is copied).
    pub keys_dir: &'a Path,
}

/// Writes `slot`, `manifest.toml`, `boot.toml`, `devices` and `keys/` into `dir`.
pub fn publish(dir: &Path, p: &Publish<'_>) -> Result<()> {
    let show = |q: &Path| q.display().to_string();
    let keys = dir.join(KEYS);
    std::fs::create_dir_all(&keys).map_err(|e| Error::io("mkdir", show(&keys), e))?;
    for (name, bytes) in [
        (SLOT, format!("{}\n", p.slot.name()).into_bytes()),
        (MANIFEST, p.manifest.to_vec()),
        (BOOT_TOML, p.boot_toml.as_bytes().to_vec()),
        (DEVICES, p.devices.to_text().into_bytes()),
    ] {
        let q = dir.join(name);
        std::fs::write(&q, bytes).map_err(|e| Error::io("write", show(&q), e))?;
    }
    let rd = std::fs::read_dir(p.keys_dir).map_err(|e| Error::io("read", show(p.keys_dir), e))?;
    for ent in rd.flatten() {
        let to = keys.join(ent.file_name());
        std::fs::copy(ent.path(), &to).map_err(|e| Error::io("copy", show(&to), e))?;
    }
    Ok(())
}

/// Copies this executable (`/proc/self/exe`) to `<bin_dir>/stele`, mode 0755: the device's
/// `stele` command. Called by the boot before switch root (/run survives it).
pub fn install_self(bin_dir: &Path) -> Result<()> {
    let show = |q: &Path| q.display().to_string();
    std::fs::create_dir_all(bin_dir).map_err(|e| Error::io("mkdir", show(bin_dir), e))?;
    let to = bin_dir.join(PROGRAM);
    std::fs::copy("/proc/self/exe", &to).map_err(|e| Error::io("copy", show(&to), e))?;
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io("chmod", show(&to), e))
}

/// What the device commands read back.
#[derive(Debug)]
pub struct RunDir {
    pub dir: PathBuf,
    pub booted: Slot,
    pub devices: Devices,
    /// The trusted keys with boot.toml's threshold: the keyring that checked the boot.
    pub keyring: Keyring,
    /// boot.toml as the boot read it (its `name`: the product the device is bound to;
    /// rollback_storage, min_rollback_index, ...).
    pub config: BootConfig,
}

impl RunDir {
    /// Reads `slot`, `devices`, `boot.toml` (threshold, name) and `keys/` from `dir`.
    pub fn read(dir: &Path) -> Result<RunDir> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| Error::NotPublished { path, source })
        };
        let format = |name: &str| {
            let path = dir.join(name);
            move |why| Error::PublishedFormat { path, why }
        };
        let booted = parse_slot(&read(SLOT)?).map_err(format(SLOT))?;
        let devices = Devices::parse(&read(DEVICES)?).map_err(format(DEVICES))?;
        let origin = dir.join(BOOT_TOML).display().to_string();
        let cfg = BootConfig::parse(&read(BOOT_TOML)?, &origin).map_err(Error::PublishedConfig)?;
        let keyring = load_keyring(&[], &[dir.join(KEYS)], cfg.threshold, &mut |s| {
            print_warning(&s)
        })
        .map_err(Error::PublishedKeys)?;
        Ok(RunDir {
            dir: dir.to_path_buf(),
            booted,
            devices,
            keyring,
            config: cfg,
        })
    }

    /// The partition of slot `s`.
    pub fn slot_path(&self, s: Slot) -> Result<&str> {
        self.devices.slot(s).ok_or_else(|| Error::NoSlotPartition {
            slot: s,
            devices: self.dir.join(DEVICES),
        })
    }

    /// The verified root's lower layer (`/run/stele/lower`).
    pub fn lower(&self) -> PathBuf {
        self.dir.join(LOWER)
    }

    /// The state partition.
    pub fn state_path(&self) -> &str {
        self.devices.state()
    }

    /// The rollback index of the manifest verified at boot (`manifest.toml`).
    pub fn booted_rollback_index(&self) -> Result<u64> {
        let path = self.dir.join(MANIFEST);
        let body = std::fs::read(&path).map_err(|source| Error::NotPublished {
            path: path.clone(),
            source,
        })?;
        let m = Manifest::parse_body(&body)
            .map_err(|source| Error::PublishedManifest { path, source })?;
        Ok(m.rollback_index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stele_verifier::exit::{Exit, Report};
    use stele_verifier::keys::{key_id, public_pem};
    use stele_verifier::testutil::{image, key};

    #[test]
    fn files_parse() {
        assert_eq!(parse_slot("b\n").unwrap(), Slot::B);
        assert_eq!(parse_slot("a").unwrap(), Slot::A);
        assert!(parse_slot("c\n").is_err());
        assert!(parse_slot("").is_err());
        let d =
            Devices::parse("state=/dev/vda1\na=/dev/vda2\nb=\ndata=/dev/vda4\nnew=x\n").unwrap();
        assert_eq!(d.state(), "/dev/vda1");
        assert_eq!(d.slot(Slot::A), Some("/dev/vda2"));
        assert_eq!(d.slot(Slot::B), None);
        assert_eq!(d.get(Role::Data), Some("/dev/vda4"));
        assert_eq!(
            d.get(Role::Esp),
            None,
            "no esp= line (a boot before the ESP role): no ESP"
        );
        assert_eq!(Devices::parse("a=/dev/vda2\n"), Err(FormatError::NoState));
        assert!(Devices::parse("state /dev/vda1\n").is_err());
    }

    /// What the boot writes, the device commands read back, field by field.
    #[test]
    fn what_the_boot_publishes_the_commands_read_back() {
        let base = tempfile::tempdir().unwrap();
        let keys_in = base.path().join("etc-stele-keys");
        std::fs::create_dir(&keys_in).unwrap();
        for seed in [1, 2] {
            let k = key(seed).verifying_key();
            std::fs::write(keys_in.join(format!("{}.pem", key_id(&k))), public_pem(&k)).unwrap();
        }
        let devices = Devices(PerRole::from_fn(|r| match r {
            Role::Esp => Some("/dev/vda1".into()),
            Role::State => Some("/dev/vda2".into()),
            Role::SlotA => Some("/dev/vda3".into()),
            Role::SlotB => Some("/dev/vda4".into()),
            Role::Data => None,
        }));
        let (img, _) = image(8, 5, 1);
        let body = stele_verifier::slot::locate(&mut std::io::Cursor::new(&img), img.len() as u64)
            .unwrap()
            .envelope
            .body;
        let run = base.path().join("run");
        publish(
            &run,
            &Publish {
                slot: Slot::B,
                manifest: &body,
                boot_toml: "threshold = 2\nmodules = [\"virtio_blk.ko\"]\n",
                devices: &devices,
                keys_dir: &keys_in,
            },
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(run.join(DEVICES)).unwrap(),
            "esp=/dev/vda1\nstate=/dev/vda2\na=/dev/vda3\nb=/dev/vda4\ndata=\n"
        );

        let back = RunDir::read(&run).unwrap();
        assert_eq!(back.dir, run);
        assert_eq!(back.booted, Slot::B);
        assert_eq!(back.devices, devices);
        assert_eq!(back.state_path(), "/dev/vda2");
        assert_eq!(back.slot_path(Slot::A).unwrap(), "/dev/vda3");
        assert_eq!(back.keyring.threshold(), 2);
        let mut ids = vec![
            key_id(&key(1).verifying_key()),
            key_id(&key(2).verifying_key()),
        ];
        ids.sort();
        assert_eq!(back.keyring.ids(), ids);
        assert_eq!(back.booted_rollback_index().unwrap(), 5);
        assert_eq!(std::fs::read(run.join(MANIFEST)).unwrap(), body);

        // Absent slot partition, missing files: environment errors naming the file.
        let mut no_b = devices.clone();
        *no_b.0.get_mut(Role::SlotB) = None;
        std::fs::write(run.join(DEVICES), no_b.to_text()).unwrap();
        let e = RunDir::read(&run).unwrap().slot_path(Slot::B).unwrap_err();
        assert!(e.to_string().contains("has no b= path"), "{e}");
        let e = RunDir::read(&base.path().join("nowhere")).unwrap_err();
        assert_eq!(e.exit(), Exit::Environment);
        assert!(e.to_string().contains("nowhere/slot"), "{e}");
        std::fs::write(run.join(BOOT_TOML), "threshold = 0\n").unwrap();
        let e = RunDir::read(&run).unwrap_err();
        assert!(matches!(e, Error::PublishedConfig(_)), "{e}");
        assert_eq!(e.exit(), Exit::Environment);
    }
}

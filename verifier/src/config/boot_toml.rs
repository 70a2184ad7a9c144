//! `/etc/stele/boot.toml`: partition names, data mount and its options, overlay size,
//! verification mode, failure policy, keyring threshold, module list, the product the
//! device is bound to, the stage (1: choose a slot and kexec into its kernel; 2: boot the
//! slot stage 1 chose), the running kernel's sha256 and the watchdog (docs/BOOT.md).
//! Parsed and validated by [`BootConfig::parse`], the one function the initramfs builder
//! and PID 1 both call.

use super::{is_under, parse_table, ConfigError, Fields};
use crate::layout::{PerRole, Role, ROLES};
use crate::manifest::{valid_name, NAME_RULE};

/// `verify`: how much is checked in userspace before mounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum VerifyMode {
    /// Signatures and the hash tree; data blocks are checked by the kernel on read.
    #[default]
    Tree,
    /// Also every data block before mounting.
    Full,
}

/// What to do when the machine must end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Action {
    #[default]
    Reboot,
    Poweroff,
}

impl Action {
    /// The TOML (and console) names.
    pub const CHOICES: [(&'static str, Action); 2] =
        [("reboot", Action::Reboot), ("poweroff", Action::Poweroff)];

    /// `"reboot"` or `"poweroff"`.
    pub fn name(self) -> &'static str {
        match self {
            Action::Reboot => "reboot",
            Action::Poweroff => "poweroff",
        }
    }
}

/// Which stage an initramfs is (docs/BOOT.md, "Two stages").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Stage {
    /// Started by the firmware or a boot loader: chooses the slot, spends its try, and
    /// hands over to the slot's own kernel when it has one.
    #[default]
    One,
    /// Started only by stage 1 (kexec): boots the slot named by `stele.stage2=`, verifies
    /// it again, spends no try, never kexecs.
    Two,
}

impl Stage {
    /// `1` or `2`, as in boot.toml and the console lines.
    pub fn number(self) -> u64 {
        match self {
            Stage::One => 1,
            Stage::Two => 2,
        }
    }
}

impl VerifyMode {
    /// The TOML names.
    pub const CHOICES: [(&'static str, VerifyMode); 2] =
        [("tree", VerifyMode::Tree), ("full", VerifyMode::Full)];
}

/// `rollback_storage`: where the rollback floor is kept besides the boot state
/// (docs/BOOT.md "With a TPM").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RollbackStorage {
    /// A TPM 2.0 NV counter too; without a TPM the boot refuses.
    Tpm,
    /// The TPM counter when the machine has a TPM, else the state alone (with a warning).
    #[default]
    TpmIfPresent,
    /// The boot state alone (a disk writer can lower it).
    State,
}

impl RollbackStorage {
    /// The TOML names.
    pub const CHOICES: [(&'static str, RollbackStorage); 3] = [
        ("tpm", RollbackStorage::Tpm),
        ("tpm-if-present", RollbackStorage::TpmIfPresent),
        ("state", RollbackStorage::State),
    ];
}

/// A mount flag `data_options` may set on the data partition (PID 1 maps each to its
/// `MS_*` bit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountFlag {
    NoSuid,
    NoDev,
    NoExec,
    NoSymFollow,
    NoAtime,
    NoDirAtime,
    RelAtime,
    StrictAtime,
    LazyTime,
    Sync,
    DirSync,
}

impl MountFlag {
    /// The option names, as in mount(8).
    pub const CHOICES: [(&'static str, MountFlag); 11] = [
        ("nosuid", MountFlag::NoSuid),
        ("nodev", MountFlag::NoDev),
        ("noexec", MountFlag::NoExec),
        ("nosymfollow", MountFlag::NoSymFollow),
        ("noatime", MountFlag::NoAtime),
        ("nodiratime", MountFlag::NoDirAtime),
        ("relatime", MountFlag::RelAtime),
        ("strictatime", MountFlag::StrictAtime),
        ("lazytime", MountFlag::LazyTime),
        ("sync", MountFlag::Sync),
        ("dirsync", MountFlag::DirSync),
    ];
}

/// ext4 options `data_options` may pass to the data partition's filesystem (besides
/// `commit=<1..=300>`).
pub const DATA_FS_OPTIONS: &[&str] = &[
    "errors=remount-ro",
    "errors=continue",
    "errors=panic",
    "data=ordered",
    "data=journal",
    "data=writeback",
    "discard",
    "nodiscard",
    "noauto_da_alloc",
    "journal_checksum",
];

/// The options the data partition is mounted with unless boot.toml says otherwise.
pub const DEFAULT_DATA_OPTIONS: [&str; 3] = ["nosuid", "nodev", "noexec"];

/// Options every `data_options` must keep: without them a disk writer could plant a
/// setuid-root program or a device node that a service would then use.
pub const REQUIRED_DATA_OPTIONS: [&str; 2] = ["nosuid", "nodev"];

/// `/etc/stele/boot.toml`. See docs/BOOT.md.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootConfig {
    /// The GPT partition name of each role (keys `esp_partition`, `state_partition`, ...:
    /// [`RoleSpec::config_key`](crate::layout::RoleSpec)).
    pub partitions: PerRole<String>,
    pub data_mount: String,
    pub overlay_size: String,
    pub verify: VerifyMode,
    pub on_failure: Action,
    pub failure_delay_secs: u64,
    pub partition_timeout_secs: u64,
    pub threshold: usize,
    pub modules: Vec<String>,
    /// The product this initramfs (so the device) is bound to: a slot or bundle whose
    /// manifest `name` differs is refused. `None`: any product signed by the keys.
    pub name: Option<String>,
    /// Mount options of the data partition (checked: [`BootConfig::data_mount_options`]).
    pub data_options: Vec<String>,
    /// `grow_data`: on a disk larger than its image, PID 1 grows the data partition (the
    /// last one) and its ext4 to the disk's end (docs/BOOT.md).
    pub grow_data: bool,
    /// `stage`: 1 (default) or 2.
    pub stage: Stage,
    /// `kernel_sha256`: the kernel this (stage-1) initramfs runs under; a slot whose kernel
    /// has this sha256 boots in place, without kexec.
    pub kernel_sha256: Option<[u8; 32]>,
    /// `stage2_panic_secs`: the `panic=` stage 1 gives the slot's kernel (1..=3600).
    pub stage2_panic_secs: u64,
    /// `watchdog_secs`: the hardware watchdog's timeout; 0 = not used.
    pub watchdog_secs: u64,
    /// `watchdog_modules`: the watchdog drivers among `modules`, loaded with `nowayout=1`
    /// when the watchdog is used.
    pub watchdog_modules: Vec<String>,
    /// `modaliases`: modules (file names among `modules`) loaded only when a present
    /// device's modalias matches one of their patterns; the others always load.
    pub modaliases: std::collections::BTreeMap<String, Vec<String>>,
    /// `module_deps`: for a module among `modules`, the modules that must be loaded before
    /// it (each earlier in `modules`); stele-init loads modules whose dependencies are
    /// loaded at the same time. A module without an entry needs none.
    pub module_deps: std::collections::BTreeMap<String, Vec<String>>,
    /// `rollback_storage`: also keep the floor in a TPM counter.
    pub rollback_storage: RollbackStorage,
    /// `min_rollback_index`: the floor this initramfs sets, whatever the state and TPM say.
    pub min_rollback_index: u64,
    /// `boot_disk`: the GPT disk GUID of the disk this machine boots from, where the
    /// firmware does not say (direct kernel boot, BIOS); docs/BOOT.md "The boot disk".
    pub boot_disk: Option<crate::gpt::Guid>,
    /// `allow_removable`: a removable disk may supply the state, the slots and the data
    /// partition (an appliance that boots from its own USB stick without UEFI).
    pub allow_removable: bool,
}

impl Default for BootConfig {
    fn default() -> Self {
        BootConfig {
            partitions: PerRole::default_names(),
            data_mount: "/var".into(),
            overlay_size: "50%".into(),
            verify: VerifyMode::Tree,
            on_failure: Action::Reboot,
            failure_delay_secs: 10,
            partition_timeout_secs: 10,
            threshold: 1,
            modules: Vec::new(),
            name: None,
            data_options: DEFAULT_DATA_OPTIONS.map(String::from).to_vec(),
            grow_data: true,
            stage: Stage::One,
            kernel_sha256: None,
            stage2_panic_secs: DEFAULT_STAGE2_PANIC_SECS,
            watchdog_secs: 0,
            watchdog_modules: Vec::new(),
            modaliases: std::collections::BTreeMap::new(),
            module_deps: std::collections::BTreeMap::new(),
            rollback_storage: RollbackStorage::TpmIfPresent,
            min_rollback_index: 0,
            boot_disk: None,
            allow_removable: false,
        }
    }
}

/// A `modaliases` or `module_deps` value: a table of arrays of strings.
fn string_lists(v: toml::Value) -> Option<std::collections::BTreeMap<String, Vec<String>>> {
    let toml::Value::Table(t) = v else {
        return None;
    };
    t.into_iter()
        .map(|(k, v)| match v {
            toml::Value::Array(items) => items
                .into_iter()
                .map(|i| match i {
                    toml::Value::String(s) => Some(s),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()
                .map(|p| (k, p)),
            _ => None,
        })
        .collect()
}

/// Default `stage2_panic_secs`.
pub const DEFAULT_STAGE2_PANIC_SECS: u64 = 10;

/// The keys of boot.toml, in the order docs/BOOT.md lists them.
pub const KEYS: &[&str] = &[
    "esp_partition",
    "state_partition",
    "slot_a_partition",
    "slot_b_partition",
    "data_partition",
    "data_mount",
    "overlay_size",
    "verify",
    "on_failure",
    "failure_delay_secs",
    "partition_timeout_secs",
    "threshold",
    "modules",
    "name",
    "data_options",
    "grow_data",
    "stage",
    "kernel_sha256",
    "stage2_panic_secs",
    "watchdog_secs",
    "watchdog_modules",
    "modaliases",
    "module_deps",
    "rollback_storage",
    "min_rollback_index",
    "boot_disk",
    "allow_removable",
];

/// Directories the writable data partition must not cover: they hold the verified system
/// (programs, libraries, configuration) or the kernel's own filesystems.
pub const SYSTEM_DIRS: &[&str] = &[
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run",
    "/sbin", "/sys", "/usr",
];

impl BootConfig {
    /// Parses and validates boot.toml text; `origin` names the file in errors. Pure.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        Self::from_table(parse_table(text, origin)?, origin)
    }

    /// Reads and validates an already parsed boot.toml table (what [`BootConfig::parse`]
    /// does after the TOML syntax). The initramfs builder calls it on the final table,
    /// its user's settings plus `threshold` and `modules`. Pure.
    pub fn from_table(table: toml::Table, origin: &str) -> Result<Self, ConfigError> {
        let mut f = Fields::new(origin, "", table);
        let mut c = BootConfig::default();
        for r in ROLES {
            if let Some(v) = f.string(r.config_key)? {
                *c.partition_mut(r.role) = v;
            }
        }
        for (key, field) in [
            ("data_mount", &mut c.data_mount),
            ("overlay_size", &mut c.overlay_size),
        ] {
            if let Some(v) = f.string(key)? {
                *field = v;
            }
        }
        if let Some(v) = f.choice("verify", &VerifyMode::CHOICES)? {
            c.verify = v;
        }
        if let Some(v) = f.choice("on_failure", &Action::CHOICES)? {
            c.on_failure = v;
        }
        if let Some(v) = f.secs("failure_delay_secs")? {
            c.failure_delay_secs = v;
        }
        if let Some(v) = f.secs("partition_timeout_secs")? {
            c.partition_timeout_secs = v;
        }
        if let Some(v) = f.uint("threshold")? {
            c.threshold = usize::try_from(v).unwrap_or(usize::MAX);
        }
        if let Some(v) = f.strings("modules")? {
            c.modules = v;
        }
        c.name = f.string("name")?;
        if let Some(v) = f.strings("data_options")? {
            c.data_options = v;
        }
        if let Some(v) = f.boolean("grow_data")? {
            c.grow_data = v;
        }
        match f.uint("stage")? {
            None | Some(1) => {}
            Some(2) => c.stage = Stage::Two,
            Some(n) => return Err(f.error("stage", format!("must be 1 or 2, not {n}"))),
        }
        if let Some(h) = f.string("kernel_sha256")? {
            let digest = crate::hex::decode(&h).and_then(|v| <[u8; 32]>::try_from(v).ok());
            match digest {
                Some(d) if h.len() == 64 => c.kernel_sha256 = Some(d),
                _ => {
                    return Err(f.error(
                        "kernel_sha256",
                        format!("{h:?} is not a sha256 (64 hex digits)"),
                    ))
                }
            }
        }
        if let Some(v) = f.secs("stage2_panic_secs")? {
            c.stage2_panic_secs = v;
        }
        if let Some(v) = f.secs("watchdog_secs")? {
            c.watchdog_secs = v;
        }
        if let Some(v) = f.strings("watchdog_modules")? {
            c.watchdog_modules = v;
        }
        if let Some(v) = f.take("modaliases") {
            c.modaliases = string_lists(v).ok_or_else(|| {
                f.error(
                    "modaliases",
                    "must be a table of module file names to arrays of modalias patterns",
                )
            })?;
        }
        if let Some(v) = f.take("module_deps") {
            c.module_deps = string_lists(v).ok_or_else(|| {
                f.error(
                    "module_deps",
                    "must be a table of module file names to arrays of module file names",
                )
            })?;
        }
        if let Some(v) = f.choice("rollback_storage", &RollbackStorage::CHOICES)? {
            c.rollback_storage = v;
        }
        if let Some(v) = f.uint("min_rollback_index")? {
            c.min_rollback_index = v;
        }
        if let Some(g) = f.string("boot_disk")? {
            c.boot_disk = Some(crate::gpt::Guid::parse(&g).filter(|g| !g.is_zero()).ok_or_else(
                || {
                    f.error(
                        "boot_disk",
                        format!("{g:?} is not a disk GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, not all zero)"),
                    )
                },
            )?);
        }
        if let Some(v) = f.boolean("allow_removable")? {
            c.allow_removable = v;
        }
        f.finish(KEYS)?;
        c.validate(origin)?;
        Ok(c)
    }

    /// The GPT partition name of `role`.
    pub fn partition(&self, role: Role) -> &str {
        self.partitions.get(role)
    }

    fn partition_mut(&mut self, role: Role) -> &mut String {
        self.partitions.get_mut(role)
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let err = |key: &str, why: String| ConfigError::key(origin, key, why);
        let parts = ROLES.map(|r| (r.config_key, self.partition(r.role)));
        for (key, name) in parts {
            if name.is_empty() || name.len() > 36 || name.chars().any(char::is_control) {
                return Err(err(
                    key,
                    format!("{name:?} is not a GPT partition name (1..=36 printable characters)"),
                ));
            }
        }
        for (i, (ka, a)) in parts.iter().enumerate() {
            for (kb, b) in &parts[i + 1..] {
                if a == b {
                    return Err(err(ka, format!("same partition name {a:?} as {kb}")));
                }
            }
        }
        check_data_mount(&self.data_mount).map_err(|why| err("data_mount", why))?;
        self.data_mount_options()
            .map_err(|why| err("data_options", why))?;
        if let Some(n) = self.name.as_deref().filter(|n| !valid_name(n)) {
            return Err(err(
                "name",
                format!("{n:?} is not a product name: {NAME_RULE}"),
            ));
        }
        if !valid_size(&self.overlay_size) {
            return Err(err(
                "overlay_size",
                format!(
                    "{:?}: expected a tmpfs size such as \"50%\", \"256m\" or \"1g\"",
                    self.overlay_size
                ),
            ));
        }
        if self.threshold == 0 {
            return Err(err(
                "threshold",
                "must be at least 1 (a manifest needs at least one trusted signature)".into(),
            ));
        }
        for m in &self.modules {
            if m.is_empty()
                || m.contains('/')
                || m.starts_with('.')
                || crate::kmod::ModuleFormat::of(m).is_none()
                || m.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                return Err(err(
                    "modules",
                    format!("{m:?} is not a module file name like \"dm-verity.ko\" or \"dm-verity.ko.xz\""),
                ));
            }
        }
        if let Some((m, p)) = self.modaliases.iter().find(|(m, p)| {
            !self.modules.contains(m)
                || p.is_empty()
                || p.iter()
                    .any(|a| a.is_empty() || a.chars().any(|c| c.is_control() || c.is_whitespace()))
        }) {
            let why = if self.modules.contains(m) {
                format!("{m:?}: {p:?} is not a list of modalias patterns")
            } else {
                format!("{m:?} is not one of the modules")
            };
            return Err(err("modaliases", why));
        }
        let index = |m: &String| self.modules.iter().position(|x| x == m);
        for (m, deps) in &self.module_deps {
            let Some(at) = index(m) else {
                return Err(err(
                    "module_deps",
                    format!("{m:?} is not one of the modules"),
                ));
            };
            if let Some(d) = deps.iter().find(|d| index(d).is_none_or(|i| i >= at)) {
                return Err(err(
                    "module_deps",
                    format!("{m:?} needs {d:?}, which is not one of the modules before it"),
                ));
            }
        }
        if let Some(m) = self
            .watchdog_modules
            .iter()
            .find(|m| !self.modules.contains(m))
        {
            return Err(err(
                "watchdog_modules",
                format!("{m:?} is not one of the modules"),
            ));
        }
        if self.stage2_panic_secs == 0 {
            return Err(err(
                "stage2_panic_secs",
                "must be at least 1 (with panic=0 a panicking slot kernel would wait forever instead of rebooting)".into(),
            ));
        }
        if self.stage == Stage::Two && self.kernel_sha256.is_some() {
            return Err(err(
                "kernel_sha256",
                "a stage-2 initramfs never kexecs (build it without --kernel)".into(),
            ));
        }
        Ok(())
    }
}

impl BootConfig {
    /// `data_options` as the mount flags and the filesystem's option string (comma
    /// separated): each option known (a [`MountFlag`], one of [`DATA_FS_OPTIONS`] or
    /// `commit=<1..=300>`), none twice, [`REQUIRED_DATA_OPTIONS`] present. Pure.
    pub fn data_mount_options(&self) -> Result<(Vec<MountFlag>, String), String> {
        let mut flags = Vec::new();
        let mut fs: Vec<&str> = Vec::new();
        for (i, o) in self.data_options.iter().enumerate() {
            if self.data_options[..i].contains(o) {
                return Err(format!("{o:?} is given twice"));
            }
            if let Some((_, f)) = MountFlag::CHOICES.iter().find(|(n, _)| n == o) {
                flags.push(*f);
            } else if DATA_FS_OPTIONS.contains(&o.as_str()) || valid_commit(o) {
                fs.push(o);
            } else {
                let names: Vec<&str> = MountFlag::CHOICES.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "{o:?} is not a data partition option (known: {}, {}, commit=<1..=300>)",
                    names.join(", "),
                    DATA_FS_OPTIONS.join(", ")
                ));
            }
        }
        if let Some(r) = REQUIRED_DATA_OPTIONS
            .iter()
            .find(|r| !self.data_options.iter().any(|o| o == *r))
        {
            return Err(format!(
                "must include {r:?}: without it a disk writer could plant a {} on the writable data partition",
                if *r == "nosuid" { "setuid-root program" } else { "device node" }
            ));
        }
        Ok((flags, fs.join(",")))
    }
}

/// `commit=<seconds>`, 1..=300.
fn valid_commit(o: &str) -> bool {
    o.strip_prefix("commit=")
        .and_then(|n| n.parse::<u64>().ok())
        .is_some_and(|n| (1..=300).contains(&n))
        && !o.contains('+')
}

/// `data_mount`: a plain absolute path below `/` that does not cover a system directory.
fn check_data_mount(p: &str) -> Result<(), String> {
    if !p.starts_with('/') || p == "/" {
        return Err(format!("{p:?} must be an absolute path below /"));
    }
    if p.split('/').any(|c| c == ".." || c == ".") || p.contains("//") || p.ends_with('/') {
        return Err(format!(
            "{p:?} must be a plain absolute path (no ., .., //)"
        ));
    }
    if p.chars().any(|c| c.is_control() || c == ',') {
        return Err(format!("{p:?} contains a control character or a comma"));
    }
    match SYSTEM_DIRS.iter().find(|d| is_under(p, d)) {
        Some(d) => Err(format!(
            "{p:?} would put writable storage over {d}, which must come from the verified image (use /var or /srv)"
        )),
        None => Ok(()),
    }
}

/// A tmpfs `size=`: digits with an optional `k`/`m`/`g` suffix, or a percentage 1..=100.
fn valid_size(s: &str) -> bool {
    let digits = s.trim_end_matches(['%', 'k', 'm', 'g', 'K', 'M', 'G']);
    let suffix = &s[digits.len()..];
    !digits.is_empty()
        && digits.len() <= 18
        && digits.bytes().all(|b| b.is_ascii_digit())
        && suffix.len() <= 1
        && !(suffix == "%" && digits.parse::<u64>().map_or(true, |n| n == 0 || n > 100))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_full_file() {
        let d = BootConfig::parse("", "boot.toml").unwrap();
        assert_eq!(d, BootConfig::default());
        let text = r#"
esp_partition = "EFI system"
state_partition = "st"
slot_a_partition = "ra"
slot_b_partition = "rb"
data_partition = "dd"
data_mount = "/srv/data"
overlay_size = "256m"
verify = "full"
on_failure = "poweroff"
failure_delay_secs = 3
partition_timeout_secs = 20
threshold = 2
modules = ["virtio_blk.ko", "dm-verity.ko", "i6300esb.ko"]
name = "router-x1"
data_options = ["nodev", "nosuid", "noatime", "errors=remount-ro", "commit=30"]
grow_data = false
stage = 1
kernel_sha256 = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF"
stage2_panic_secs = 3
watchdog_secs = 30
watchdog_modules = ["i6300esb.ko"]
modaliases = { "virtio_blk.ko" = ["virtio:d00000002v*"] }
rollback_storage = "tpm"
min_rollback_index = 7
boot_disk = "5A1E0000-0000-4000-8000-00000000D15C"
allow_removable = true
"#;
        let c = BootConfig::parse(text, "boot.toml").unwrap();
        assert_eq!(c.name.as_deref(), Some("router-x1"));
        let (flags, fs) = c.data_mount_options().unwrap();
        assert_eq!(
            flags,
            [MountFlag::NoDev, MountFlag::NoSuid, MountFlag::NoAtime]
        );
        assert_eq!(fs, "errors=remount-ro,commit=30");
        let d = BootConfig::default();
        assert_eq!(d.name, None);
        assert_eq!(
            d.data_mount_options().unwrap().0,
            [MountFlag::NoSuid, MountFlag::NoDev, MountFlag::NoExec]
        );
        assert_eq!(c.verify, VerifyMode::Full);
        assert_eq!(c.on_failure, Action::Poweroff);
        assert_eq!(c.threshold, 2);
        assert_eq!(c.modules, ["virtio_blk.ko", "dm-verity.ko", "i6300esb.ko"]);
        assert_eq!(c.stage, Stage::One);
        assert_eq!(c.kernel_sha256.map(|d| d[31]), Some(0xff));
        assert_eq!((c.stage2_panic_secs, c.watchdog_secs), (3, 30));
        assert_eq!(c.watchdog_modules, ["i6300esb.ko"]);
        assert_eq!(c.modaliases["virtio_blk.ko"], ["virtio:d00000002v*"]);
        assert!(d.modaliases.is_empty(), "every module loads unless told");
        assert_eq!(
            (c.rollback_storage, c.min_rollback_index),
            (RollbackStorage::Tpm, 7)
        );
        assert_eq!(d.rollback_storage, RollbackStorage::TpmIfPresent);
        assert_eq!(d.min_rollback_index, 0);
        assert_eq!(
            c.boot_disk.map(|g| g.to_string()).as_deref(),
            Some("5a1e0000-0000-4000-8000-00000000d15c"),
            "a GUID in either case"
        );
        assert!(c.allow_removable);
        assert_eq!((d.boot_disk, d.allow_removable), (None, false));
        let two = BootConfig::parse("stage = 2", "boot.toml").unwrap();
        assert_eq!((two.stage, two.stage.number()), (Stage::Two, 2));
        assert_eq!(d.stage2_panic_secs, DEFAULT_STAGE2_PANIC_SECS);
        assert_eq!(d.watchdog_secs, 0, "the watchdog is off unless asked for");
        assert_eq!(c.data_mount, "/srv/data");
        assert!(
            d.grow_data && !c.grow_data,
            "the data partition grows unless told"
        );
        assert_eq!(c.partition(Role::State), "st");
        assert_eq!(c.partition_timeout_secs, 20);
        assert_eq!(c.partition(Role::Data), "dd");
        assert_eq!(c.partition(Role::Esp), "EFI system");
        for r in ROLES {
            assert!(KEYS.contains(&r.config_key), "{}", r.config_key);
        }
    }

    #[test]
    fn writable_storage_cannot_cover_system_directories() {
        for bad in ["/etc", "/usr/local", "/bin", "/lib64/x", "/run"] {
            assert!(check_data_mount(bad).is_err(), "{bad}");
        }
        for ok in ["/var", "/srv/data", "/etcetera", "/home"] {
            assert!(check_data_mount(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn sizes() {
        for ok in ["50%", "100%", "256m", "1g", "4096", "2K"] {
            assert!(valid_size(ok), "{ok}");
        }
        for bad in ["lots", "0%", "150%", "", "m", "1mm", "-1"] {
            assert!(!valid_size(bad), "{bad}");
        }
    }
}

//! boot.toml (initramfs), the kernel command line (`stele.*`) and system.toml (the image).
//!
//! Parsers are pure: they take text and return values or one-line errors. The command line
//! is merged so that nothing on it can weaken verification.

use std::collections::BTreeMap;

use serde::Deserialize;
use stele_verifier::state::Slot;

use crate::{Error, Result};

/// Path of boot.toml in the initramfs.
pub const BOOT_TOML: &str = "/etc/stele/boot.toml";
/// Directory of trusted public keys in the initramfs.
pub const KEYS_DIR: &str = "/etc/stele/keys";
/// Path of system.toml inside the verified root.
pub const SYSTEM_TOML: &str = "/etc/stele/system.toml";
/// PATH given to services unless their `env` sets one; `/run/stele/bin` (the device's
/// `stele`, a copy of stele-init) comes first.
pub const DEFAULT_PATH: &str = "/run/stele/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `verify`: how much is checked in userspace before mounting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum VerifyMode {
    /// Signatures and the hash tree; data blocks are checked by the kernel on read.
    #[default]
    Tree,
    /// Also every data block before mounting.
    Full,
}

/// What to do when the machine must end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Reboot,
    Poweroff,
}

impl Action {
    /// `"reboot"` or `"poweroff"`.
    pub fn name(self) -> &'static str {
        match self {
            Action::Reboot => "reboot",
            Action::Poweroff => "poweroff",
        }
    }
}

/// `/etc/stele/boot.toml`. See docs/BOOT.md.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootConfig {
    pub state_partition: String,
    pub slot_a_partition: String,
    pub slot_b_partition: String,
    pub data_partition: String,
    pub data_mount: String,
    pub overlay_size: String,
    pub verify: VerifyMode,
    pub on_failure: Action,
    pub failure_delay_secs: u64,
    pub partition_timeout_secs: u64,
    pub threshold: usize,
    pub modules: Vec<String>,
}

impl Default for BootConfig {
    fn default() -> Self {
        BootConfig {
            state_partition: "stele-state".into(),
            slot_a_partition: "stele-root-a".into(),
            slot_b_partition: "stele-root-b".into(),
            data_partition: "stele-data".into(),
            data_mount: "/var".into(),
            overlay_size: "50%".into(),
            verify: VerifyMode::Tree,
            on_failure: Action::Reboot,
            failure_delay_secs: 10,
            partition_timeout_secs: 10,
            threshold: 1,
            modules: Vec::new(),
        }
    }
}

/// Largest accepted delay or timeout, in seconds.
const MAX_SECS: u64 = 3600;

fn bad(what: &str, why: impl Into<String>) -> Error {
    Error::config(what, why)
}

impl BootConfig {
    /// Parses and validates boot.toml text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let cfg: BootConfig =
            toml::from_str(text).map_err(|e| bad(origin, one_line(&e.to_string())))?;
        cfg.validate(origin)?;
        Ok(cfg)
    }

    fn validate(&self, origin: &str) -> Result<()> {
        let parts = [
            ("state_partition", &self.state_partition),
            ("slot_a_partition", &self.slot_a_partition),
            ("slot_b_partition", &self.slot_b_partition),
            ("data_partition", &self.data_partition),
        ];
        for (key, name) in parts {
            if name.is_empty() || name.len() > 36 || name.chars().any(|c| c.is_control()) {
                return Err(bad(
                    &format!("{origin}: {key}"),
                    format!("{name:?} is not a GPT partition name (1..=36 printable characters)"),
                ));
            }
        }
        for (i, (ka, a)) in parts.iter().enumerate() {
            for (kb, b) in &parts[i + 1..] {
                if a == b {
                    return Err(bad(
                        &format!("{origin}: {ka}"),
                        format!("same partition name {a:?} as {kb}"),
                    ));
                }
            }
        }
        check_abs_path(&self.data_mount)
            .and_then(|()| check_data_mount(&self.data_mount))
            .map_err(|why| bad(&format!("{origin}: data_mount"), why))?;
        if !valid_size(&self.overlay_size) {
            return Err(bad(
                &format!("{origin}: overlay_size"),
                format!(
                    "{:?}: expected a tmpfs size such as \"50%\", \"256m\" or \"1g\"",
                    self.overlay_size
                ),
            ));
        }
        for (key, v) in [
            ("failure_delay_secs", self.failure_delay_secs),
            ("partition_timeout_secs", self.partition_timeout_secs),
        ] {
            if v > MAX_SECS {
                return Err(bad(
                    &format!("{origin}: {key}"),
                    format!("{v} is above the limit of {MAX_SECS} seconds"),
                ));
            }
        }
        if self.threshold == 0 {
            return Err(bad(
                &format!("{origin}: threshold"),
                "must be at least 1 (a manifest needs at least one trusted signature)",
            ));
        }
        for m in &self.modules {
            if m.is_empty()
                || m.contains('/')
                || m.starts_with('.')
                || !m.ends_with(".ko")
                || m.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                return Err(bad(
                    &format!("{origin}: modules"),
                    format!("{m:?} is not a module file name like \"dm-verity.ko\""),
                ));
            }
        }
        Ok(())
    }

    /// Applies the kernel command line. Returns warnings to log. Never weakens verification:
    /// `stele.verify=tree` over a boot.toml `full` is ignored.
    pub fn apply_cmdline(&mut self, cmd: &Cmdline) -> Vec<String> {
        let mut warnings = cmd.warnings.clone();
        match cmd.verify {
            Some(VerifyMode::Full) => self.verify = VerifyMode::Full,
            Some(VerifyMode::Tree) if self.verify == VerifyMode::Full => warnings.push(
                "stele.verify=tree ignored: boot.toml asks for full verification and the command line cannot weaken it".into(),
            ),
            _ => {}
        }
        if let Some(a) = cmd.on_failure {
            self.on_failure = a;
        }
        if let Some(d) = cmd.failure_delay {
            self.failure_delay_secs = d;
        }
        warnings
    }
}

/// `stele.*` options from /proc/cmdline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cmdline {
    pub verify: Option<VerifyMode>,
    pub on_failure: Option<Action>,
    pub failure_delay: Option<u64>,
    pub slot: Option<Slot>,
    pub debug: bool,
    /// Lines to log: unknown or malformed `stele.*` options (ignored).
    pub warnings: Vec<String>,
}

impl Cmdline {
    /// Parses the kernel command line. Options not starting with `stele.` are skipped;
    /// double quotes group words as the kernel does.
    pub fn parse(text: &str) -> Self {
        let mut c = Cmdline::default();
        for word in split_cmdline(text) {
            let Some(opt) = word.strip_prefix("stele.") else {
                continue;
            };
            let (key, value) = match opt.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (opt, None),
            };
            let mut warn = |why: &str| {
                c.warnings
                    .push(format!("kernel option stele.{opt} ignored: {why}"))
            };
            match (key, value) {
                ("verify", Some("full")) => c.verify = Some(VerifyMode::Full),
                ("verify", Some("tree")) => c.verify = Some(VerifyMode::Tree),
                ("verify", _) => warn("expected stele.verify=full or stele.verify=tree"),
                ("on_failure", Some("reboot")) => c.on_failure = Some(Action::Reboot),
                ("on_failure", Some("poweroff")) => c.on_failure = Some(Action::Poweroff),
                ("on_failure", _) => warn("expected stele.on_failure=reboot or poweroff"),
                ("failure_delay", Some(v)) => match v.parse::<u64>() {
                    Ok(n) if n <= MAX_SECS => c.failure_delay = Some(n),
                    _ => warn("expected seconds 0..=3600"),
                },
                ("slot", Some("a")) => c.slot = Some(Slot::A),
                ("slot", Some("b")) => c.slot = Some(Slot::B),
                ("slot", _) => warn("expected stele.slot=a or stele.slot=b"),
                ("debug", None) | ("debug", Some("1")) => c.debug = true,
                _ => warn("unknown option"),
            }
        }
        c
    }
}

fn split_cmdline(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for ch in text.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(cur);
    }
    words
}

fn check_abs_path(p: &str) -> std::result::Result<(), String> {
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
    Ok(())
}

/// Directories the writable data partition must not cover: they hold the verified system
/// (programs, libraries, configuration) or the kernel's own filesystems.
const SYSTEM_DIRS: &[&str] = &[
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run",
    "/sbin", "/sys", "/usr",
];

/// True when `path` is `dir` or below it.
fn is_under(path: &str, dir: &str) -> bool {
    path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn check_data_mount(p: &str) -> std::result::Result<(), String> {
    match SYSTEM_DIRS.iter().find(|d| is_under(p, d)) {
        Some(d) => Err(format!(
            "{p:?} would put writable storage over {d}, which must come from the verified image (use /var or /srv)"
        )),
        None => Ok(()),
    }
}

fn valid_size(s: &str) -> bool {
    let digits = s.trim_end_matches(['%', 'k', 'm', 'g', 'K', 'M', 'G']);
    let suffix = &s[digits.len()..];
    !digits.is_empty()
        && digits.len() <= 18
        && digits.bytes().all(|b| b.is_ascii_digit())
        && suffix.len() <= 1
        && !(suffix == "%" && digits.parse::<u64>().map_or(true, |n| n == 0 || n > 100))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `restart` policy of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    Never,
    #[default]
    OnFailure,
    Always,
}

/// One `[[service]]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    pub exec: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default = "default_workdir")]
    pub workdir: String,
    #[serde(default)]
    pub restart: Restart,
    #[serde(default = "default_restart_delay")]
    pub restart_delay: u64,
    #[serde(default)]
    pub on_exit: Option<Action>,
}

fn default_workdir() -> String {
    "/".into()
}
fn default_restart_delay() -> u64 {
    1
}
fn default_healthy_after() -> u64 {
    5
}
fn default_grace() -> u64 {
    5
}
fn default_trial_timeout() -> u64 {
    300
}

/// `/etc/stele/system.toml` in the image. See docs/BOOT.md.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemConfig {
    #[serde(default)]
    pub exec: Option<Vec<String>>,
    #[serde(default = "default_healthy_after")]
    pub healthy_after: u64,
    #[serde(default)]
    pub health: Option<Vec<String>>,
    #[serde(default = "default_grace")]
    pub shutdown_grace: u64,
    /// Seconds a slot on trial has to be marked good before PID 1 reboots (boot counting).
    #[serde(default = "default_trial_timeout")]
    pub trial_timeout: u64,
    #[serde(default, rename = "service")]
    pub services: Vec<Service>,
}

impl SystemConfig {
    /// Refuses programs (exec, health, services) that would run from the writable data
    /// partition mounted at `data_mount`: only the verified image may provide what PID 1
    /// runs. Pure.
    pub fn check_programs(&self, data_mount: &str) -> std::result::Result<(), String> {
        let programs = self
            .exec
            .iter()
            .chain(self.health.iter())
            .chain(self.services.iter().map(|s| &s.exec))
            .filter_map(|argv| argv.first());
        for p in programs {
            if is_under(p, data_mount) {
                return Err(format!(
                    "{p} is on the writable data partition ({data_mount}); programs must come from the verified image"
                ));
            }
        }
        Ok(())
    }
}

fn check_argv(what: &str, argv: &[String]) -> Result<()> {
    match argv.first() {
        None => Err(bad(what, "empty command")),
        Some(p) if !p.starts_with('/') => Err(bad(
            what,
            format!("{p:?}: the program must be an absolute path"),
        )),
        Some(_) if argv.iter().any(|a| a.contains('\0')) => {
            Err(bad(what, "an argument contains a NUL byte"))
        }
        Some(_) => Ok(()),
    }
}

impl SystemConfig {
    /// Parses and validates system.toml text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let cfg: SystemConfig =
            toml::from_str(text).map_err(|e| bad(origin, one_line(&e.to_string())))?;
        match (&cfg.exec, cfg.services.is_empty()) {
            (Some(_), false) => {
                return Err(bad(
                    origin,
                    "`exec` and [[service]] are exclusive: either hand PID 1 to the image's init or list services",
                ))
            }
            (None, true) => {
                return Err(bad(
                    origin,
                    "nothing to run: set `exec` or add at least one [[service]]",
                ))
            }
            _ => {}
        }
        if let Some(argv) = &cfg.exec {
            check_argv(&format!("{origin}: exec"), argv)?;
        }
        if let Some(argv) = &cfg.health {
            check_argv(&format!("{origin}: health"), argv)?;
        }
        if cfg.trial_timeout <= cfg.healthy_after {
            return Err(bad(
                &format!("{origin}: trial_timeout"),
                format!(
                    "{} must be longer than healthy_after ({}), or no trial could succeed",
                    cfg.trial_timeout, cfg.healthy_after
                ),
            ));
        }
        for (key, v) in [
            ("healthy_after", cfg.healthy_after),
            ("shutdown_grace", cfg.shutdown_grace),
            ("trial_timeout", cfg.trial_timeout),
        ] {
            if v > MAX_SECS {
                return Err(bad(
                    &format!("{origin}: {key}"),
                    format!("{v} is above the limit of {MAX_SECS} seconds"),
                ));
            }
        }
        for (i, s) in cfg.services.iter().enumerate() {
            let what = format!("{origin}: service {:?}", s.name);
            if s.name.is_empty()
                || s.name.len() > 64
                || !s
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return Err(bad(
                    &what,
                    "name must be 1..=64 characters of [A-Za-z0-9._-]",
                ));
            }
            if cfg.services[..i].iter().any(|o| o.name == s.name) {
                return Err(bad(&what, "duplicate service name"));
            }
            check_argv(&format!("{what} exec"), &s.exec)?;
            if !s.workdir.starts_with('/') {
                return Err(bad(&what, "workdir must be an absolute path"));
            }
            for (k, v) in &s.env {
                if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                    return Err(bad(&what, format!("bad environment variable {k:?}")));
                }
            }
            if s.restart_delay > MAX_SECS {
                return Err(bad(&what, "restart_delay above 3600 seconds"));
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_toml_defaults_and_full_file() {
        let d = BootConfig::parse("", "boot.toml").unwrap();
        assert_eq!(d, BootConfig::default());
        let text = r#"
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
modules = ["virtio_blk.ko", "dm-verity.ko"]
"#;
        let c = BootConfig::parse(text, "boot.toml").unwrap();
        assert_eq!(c.verify, VerifyMode::Full);
        assert_eq!(c.on_failure, Action::Poweroff);
        assert_eq!(c.threshold, 2);
        assert_eq!(c.modules, vec!["virtio_blk.ko", "dm-verity.ko"]);
        assert_eq!(c.data_mount, "/srv/data");
    }

    #[test]
    fn boot_toml_rejects_bad_values() {
        for bad in [
            "unknown = 1",
            "threshold = 0",
            "data_mount = \"var\"",
            "data_mount = \"/\"",
            "data_mount = \"/var/../etc\"",
            "overlay_size = \"lots\"",
            "overlay_size = \"0%\"",
            "overlay_size = \"150%\"",
            "verify = \"none\"",
            "on_failure = \"shell\"",
            "modules = [\"../x.ko\"]",
            "modules = [\"dm-mod\"]",
            "state_partition = \"stele-root-a\"",
            "failure_delay_secs = 99999",
        ] {
            let r = BootConfig::parse(bad, "boot.toml");
            assert!(matches!(r, Err(Error::Config { .. })), "accepted {bad}");
        }
    }

    #[test]
    fn cmdline_parses_stele_options_only() {
        let c = Cmdline::parse(
            "console=ttyS0 stele.verify=full stele.slot=b stele.debug  stele.on_failure=poweroff stele.failure_delay=2 quiet\n",
        );
        assert_eq!(c.verify, Some(VerifyMode::Full));
        assert_eq!(c.slot, Some(Slot::B));
        assert!(c.debug);
        assert_eq!(c.on_failure, Some(Action::Poweroff));
        assert_eq!(c.failure_delay, Some(2));
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn cmdline_warns_on_unknown_and_malformed() {
        let c = Cmdline::parse(
            "stele.bogus=1 stele.slot=c stele.verify stele.failure_delay=x \"stele.x=a b\"",
        );
        assert_eq!(c.warnings.len(), 5, "{:?}", c.warnings);
        assert_eq!(c.slot, None);
        assert!(c.warnings[0].contains("stele.bogus=1"));
        assert!(c.warnings[4].contains("stele.x=a b"));
    }

    #[test]
    fn cmdline_cannot_weaken_verification() {
        let mut cfg = BootConfig {
            verify: VerifyMode::Full,
            ..BootConfig::default()
        };
        let w = cfg.apply_cmdline(&Cmdline::parse("stele.verify=tree"));
        assert_eq!(cfg.verify, VerifyMode::Full);
        assert_eq!(w.len(), 1);
        let mut cfg = BootConfig::default();
        let w = cfg.apply_cmdline(&Cmdline::parse("stele.verify=full stele.failure_delay=0"));
        assert_eq!(cfg.verify, VerifyMode::Full);
        assert_eq!(cfg.failure_delay_secs, 0);
        assert!(w.is_empty());
    }

    const SYSTEM: &str = r#"
healthy_after = 2
health = ["/usr/bin/check"]
shutdown_grace = 3
[[service]]
name = "demo"
exec = ["/bin/demo", "--flag"]
env = { KEY = "value" }
workdir = "/srv"
restart = "always"
restart_delay = 2
on_exit = "poweroff"
[[service]]
name = "other"
exec = ["/bin/other"]
"#;

    #[test]
    fn system_toml_services() {
        let s = SystemConfig::parse(SYSTEM, "system.toml").unwrap();
        assert_eq!(s.services.len(), 2);
        assert_eq!(s.healthy_after, 2);
        assert_eq!(s.shutdown_grace, 3);
        let d = &s.services[0];
        assert_eq!(d.restart, Restart::Always);
        assert_eq!(d.on_exit, Some(Action::Poweroff));
        assert_eq!(d.env.get("KEY").map(String::as_str), Some("value"));
        let o = &s.services[1];
        assert_eq!(o.restart, Restart::OnFailure);
        assert_eq!(o.restart_delay, 1);
        assert_eq!(o.workdir, "/");
        assert_eq!(o.on_exit, None);
    }

    #[test]
    fn system_toml_exec_mode() {
        let s = SystemConfig::parse("exec = [\"/sbin/init\", \"arg\"]", "s").unwrap();
        assert_eq!(
            s.exec.as_deref(),
            Some(&["/sbin/init".to_string(), "arg".to_string()][..])
        );
        assert_eq!(s.healthy_after, 5);
        assert_eq!(s.shutdown_grace, 5);
    }

    #[test]
    fn system_toml_rejects() {
        for bad in [
            "",
            "exec = []",
            "exec = [\"sbin/init\"]",
            "exec = [\"/sbin/init\"]\n[[service]]\nname = \"a\"\nexec = [\"/a\"]",
            "[[service]]\nname = \"a b\"\nexec = [\"/a\"]",
            "[[service]]\nname = \"a\"\nexec = [\"/a\"]\n[[service]]\nname = \"a\"\nexec = [\"/b\"]",
            "[[service]]\nname = \"a\"\nexec = [\"/a\"]\nrestart = \"sometimes\"",
            "[[service]]\nname = \"a\"\nexec = [\"/a\"]\nbogus = 1",
            "[[service]]\nname = \"a\"\nexec = [\"/a\"]\nworkdir = \"rel\"",
            "[[service]]\nname = \"a\"\nexec = [\"/a\"]\non_exit = \"halt\"",
        ] {
            let r = SystemConfig::parse(bad, "system.toml");
            assert!(matches!(r, Err(Error::Config { .. })), "accepted {bad:?}");
        }
    }

    #[test]
    fn writable_storage_cannot_cover_or_provide_programs() {
        for bad in ["/etc", "/usr/local", "/bin", "/lib64/x", "/run"] {
            assert!(check_data_mount(bad).is_err(), "{bad}");
        }
        for ok in ["/var", "/srv/data", "/etcetera", "/home"] {
            assert!(check_data_mount(ok).is_ok(), "{ok}");
        }
        let cfg = SystemConfig::parse(
            "[[service]]\nname = \"x\"\nexec = [\"/var/lib/app/run\"]\n",
            "system.toml",
        )
        .unwrap();
        let e = cfg.check_programs("/var").unwrap_err();
        assert!(e.contains("/var/lib/app/run"), "{e}");
        assert!(cfg.check_programs("/srv").is_ok());
        let cfg = SystemConfig::parse("exec = [\"/var/init\"]\n", "system.toml").unwrap();
        assert!(cfg.check_programs("/var").is_err());
    }
}

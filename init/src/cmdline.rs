//! The kernel command line's `stele.*` options (only PID 1 reads them) and their merge into
//! boot.toml's settings, so that nothing on the command line can weaken verification.
//! boot.toml and system.toml themselves are the verifier's schemas (`stele_verifier::config`).

use stele_verifier::config::{Action, BootConfig, Stage, VerifyMode, MAX_SECS};
use stele_verifier::state::Slot;

/// PATH given to services unless their `env` sets one; `/run/stele/bin` (the device's
/// `stele`, a copy of stele-init: `stele_device::runtime::run_dir::BIN_DIR`) comes first.
pub const DEFAULT_PATH: &str = "/run/stele/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Kernel options that make this boot's kernel refuse a kexec image it would load without
/// them (lockdown, IMA appraisal): a `kexec_file_load` refused (EPERM/EACCES) while one is
/// on the command line is this boot's policy, not the slot's fault (docs/BOOT.md "Two
/// stages"). An entry ending in `=` matches any value.
pub const POLICY_OPTIONS: &[&str] = &[
    "lockdown=",
    "ima_appraise=",
    "ima_policy=",
    "ima_appraise_tcb",
];

/// True when the kernel option `word` is one of [`POLICY_OPTIONS`]. Pure.
pub fn is_policy_option(word: &str) -> bool {
    POLICY_OPTIONS.iter().any(|o| match o.strip_suffix('=') {
        Some(key) => word.split_once('=').is_some_and(|(k, _)| k == key),
        None => word == *o,
    })
}

/// `stele.*` options from /proc/cmdline, and the kernel's own policy options.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cmdline {
    pub verify: Option<VerifyMode>,
    pub on_failure: Option<Action>,
    pub failure_delay: Option<u64>,
    pub slot: Option<Slot>,
    /// `stele.stage2=<a|b>`: the slot stage 1 chose (only a stage-2 initramfs heeds it).
    pub stage2: Option<Slot>,
    pub debug: bool,
    /// Options (as written) that set this boot's kernel policy for kexec: see
    /// [`POLICY_OPTIONS`].
    pub policy: Vec<String>,
    /// Lines to log: unknown or malformed `stele.*` options (ignored).
    pub warnings: Vec<String>,
}

impl Cmdline {
    /// Parses the kernel command line. Options not starting with `stele.` are skipped;
    /// double quotes group words as the kernel does.
    pub fn parse(text: &str) -> Self {
        let mut c = Cmdline::default();
        for word in split_cmdline(text) {
            if is_policy_option(&word) {
                c.policy.push(word.clone());
            }
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
                ("stage2", Some("a")) => c.stage2 = Some(Slot::A),
                ("stage2", Some("b")) => c.stage2 = Some(Slot::B),
                ("stage2", _) => warn("expected stele.stage2=a or stele.stage2=b"),
                ("debug", None) | ("debug", Some("1")) => c.debug = true,
                _ => warn("unknown option"),
            }
        }
        c
    }
}

/// Applies the kernel command line to boot.toml's settings. Returns warnings to log.
/// Never weakens verification: `stele.verify=tree` over a boot.toml `full` is ignored, and
/// a stage-1 initramfs ignores `stele.stage2=` (it would skip the try; only stage 1 itself
/// gives it, to the slot's kernel).
pub fn apply_cmdline(cfg: &mut BootConfig, cmd: &Cmdline) -> Vec<String> {
    let mut warnings = cmd.warnings.clone();
    if let (Stage::One, Some(s)) = (cfg.stage, cmd.stage2) {
        warnings.push(format!(
            "kernel option stele.stage2={} ignored: this is a stage-1 initramfs, which chooses the slot and spends its try itself",
            s.name()
        ));
    }
    match cmd.verify {
        Some(VerifyMode::Full) => cfg.verify = VerifyMode::Full,
        Some(VerifyMode::Tree) if cfg.verify == VerifyMode::Full => warnings.push(
            "stele.verify=tree ignored: boot.toml asks for full verification and the command line cannot weaken it".into(),
        ),
        _ => {}
    }
    if let Some(a) = cmd.on_failure {
        cfg.on_failure = a;
    }
    if let Some(d) = cmd.failure_delay {
        cfg.failure_delay_secs = d;
    }
    warnings
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let w = apply_cmdline(&mut cfg, &Cmdline::parse("stele.verify=tree"));
        assert_eq!(cfg.verify, VerifyMode::Full);
        assert_eq!(w.len(), 1);
        let mut cfg = BootConfig::default();
        let w = apply_cmdline(
            &mut cfg,
            &Cmdline::parse("stele.verify=full stele.failure_delay=0"),
        );
        assert_eq!(cfg.verify, VerifyMode::Full);
        assert_eq!(cfg.failure_delay_secs, 0);
        assert!(w.is_empty());
    }

    #[test]
    fn stage2_option_counts_only_in_stage_2() {
        let c = Cmdline::parse("console=ttyS0 stele.stage2=b panic=10");
        assert_eq!(c.stage2, Some(Slot::B));
        let mut cfg = BootConfig::default();
        let w = apply_cmdline(&mut cfg, &c);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("stele.stage2=b ignored"), "{w:?}");
        let mut two = BootConfig {
            stage: Stage::Two,
            ..BootConfig::default()
        };
        assert!(apply_cmdline(&mut two, &c).is_empty());
        let c = Cmdline::parse("stele.stage2=c stele.stage2");
        assert_eq!((c.stage2, c.warnings.len()), (None, 2));
    }

    #[test]
    fn lockdown_and_ima_options_are_this_boots_policy() {
        let c = Cmdline::parse(
            "console=ttyS0 lockdown=integrity ima_appraise=enforce ima_policy=secure_boot ima_appraise_tcb lockdownx=1 ima_hash=sha256 stele.slot=b",
        );
        assert_eq!(
            c.policy,
            [
                "lockdown=integrity",
                "ima_appraise=enforce",
                "ima_policy=secure_boot",
                "ima_appraise_tcb"
            ]
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert!(Cmdline::parse("console=ttyS0 ima_hash=sha256 lockdown")
            .policy
            .is_empty());
    }

    #[test]
    fn services_find_the_device_stele_first() {
        assert!(DEFAULT_PATH.starts_with(&format!("{}:", stele_device::runtime::run_dir::BIN_DIR)));
    }
}

//! Targets `boot_toml` and `system_toml`: bytes as boot.toml (the initramfs) and system.toml
//! (the image), through the one schema of each (`stele_verifier::config`), which both the
//! build side and PID 1 call.
//!
//! Assertions: an accepted file satisfies every rule PID 1 relies on afterwards (so a bug in
//! one rule's check shows up as an assertion, not as a boot that goes wrong later), and a
//! refusal is one error that names the file.

use stele_verifier::config::cases::{File, CASES, VALID_SYSTEM};
use stele_verifier::config::{is_under, BootConfig, ConfigError, Stage, SystemConfig, MAX_SECS};

use crate::Seed;

pub const STAGES: &[&str] = &["UTF-8", "TOML", "schema"];

const BOOT_ORIGIN: &str = "/etc/stele/boot.toml";
const SYSTEM_ORIGIN: &str = "/etc/stele/system.toml";

fn depth_of<T>(data: &[u8], parse: fn(&str, &str) -> Result<T, ConfigError>) -> usize {
    let Ok(text) = std::str::from_utf8(data) else {
        return 0;
    };
    if toml::from_str::<toml::Table>(text).is_err() {
        return 1;
    }
    if parse(text, "f").is_err() {
        return 2;
    }
    3
}

fn refusal_names_the_file(e: &ConfigError, origin: &str) {
    let line = e.to_string();
    assert!(line.contains(origin), "{line:?} does not name {origin}");
}

/// An accepted boot.toml keeps every rule of docs/BOOT.md.
fn check_boot(c: &BootConfig) {
    assert!(c.threshold >= 1, "threshold {}", c.threshold);
    assert!(
        c.data_mount.starts_with('/') && c.data_mount != "/",
        "data_mount {:?}",
        c.data_mount
    );
    for d in stele_verifier::config::boot_toml::SYSTEM_DIRS {
        assert!(
            !is_under(&c.data_mount, d),
            "data_mount {:?} over {d}",
            c.data_mount
        );
    }
    assert!(c.failure_delay_secs <= MAX_SECS && c.partition_timeout_secs <= MAX_SECS);
    use stele_verifier::layout::Role;
    let names = [Role::State, Role::SlotA, Role::SlotB, Role::Data].map(|r| c.partition(r));
    for (i, a) in names.iter().enumerate() {
        assert!(!a.is_empty(), "empty partition name");
        assert!(
            names[i + 1..].iter().all(|b| b != a),
            "duplicate name {a:?}"
        );
    }
    for m in &c.modules {
        assert!(m.ends_with(".ko") && !m.contains('/'), "module {m:?}");
    }
    for required in stele_verifier::config::boot_toml::REQUIRED_DATA_OPTIONS {
        assert!(
            c.data_options.iter().any(|o| o == required),
            "data_options {:?} without {required}",
            c.data_options
        );
    }
    assert!(
        c.data_mount_options().is_ok(),
        "data_options {:?}",
        c.data_options
    );
    if let Some(n) = &c.name {
        assert!(stele_verifier::manifest::valid_name(n), "name {n:?}");
    }
    for m in &c.watchdog_modules {
        assert!(c.modules.contains(m), "watchdog module {m:?} not loaded");
    }
    assert!(
        (1..=MAX_SECS).contains(&c.stage2_panic_secs) && c.watchdog_secs <= MAX_SECS,
        "stage2_panic_secs {} watchdog_secs {}",
        c.stage2_panic_secs,
        c.watchdog_secs
    );
    assert!(
        c.stage == Stage::One || c.kernel_sha256.is_none(),
        "a stage-2 initramfs with a kernel digest"
    );
}

/// An accepted system.toml keeps every rule of docs/BOOT.md.
fn check_system(c: &SystemConfig) {
    assert!(
        c.exec.is_some() == c.services.is_empty(),
        "exec and services must be exclusive and one of them present"
    );
    let argvs = c
        .exec
        .iter()
        .chain(c.health.iter())
        .chain(c.services.iter().map(|s| &s.exec));
    for argv in argvs {
        let p = argv.first().expect("an empty command was accepted");
        assert!(p.starts_with('/'), "program {p:?} is not absolute");
        assert!(argv.iter().all(|a| !a.contains('\0')), "NUL in {argv:?}");
    }
    assert!(c.trial_timeout > c.healthy_after);
    assert!(c.healthy_after <= MAX_SECS && c.shutdown_grace <= MAX_SECS);
    assert!(c.trial_timeout <= MAX_SECS);
    for (i, s) in c.services.iter().enumerate() {
        assert!(
            (1..=64).contains(&s.name.len())
                && s.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
            "service name {:?}",
            s.name
        );
        assert!(c.services[..i].iter().all(|o| o.name != s.name));
        assert!(s.workdir.starts_with('/'));
        assert!(s.restart_delay <= MAX_SECS);
        for a in s
            .run_as
            .user
            .iter()
            .chain(&s.run_as.group)
            .chain(&s.run_as.supplementary_groups)
        {
            if let stele_verifier::config::Account::Id(id) = a {
                assert_ne!(*id, u32::MAX, "id -1 accepted");
            }
        }
    }
}

pub fn run_boot(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match BootConfig::parse(text, BOOT_ORIGIN) {
        Ok(c) => {
            check_boot(&c);
            // Parsing is a function of the text alone.
            assert_eq!(BootConfig::parse(text, BOOT_ORIGIN).ok(), Some(c));
        }
        Err(e) => refusal_names_the_file(&e, BOOT_ORIGIN),
    }
}

pub fn run_system(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match SystemConfig::parse(text, SYSTEM_ORIGIN) {
        Ok(c) => {
            check_system(&c);
            assert_eq!(SystemConfig::parse(text, SYSTEM_ORIGIN).ok(), Some(c));
        }
        Err(e) => refusal_names_the_file(&e, SYSTEM_ORIGIN),
    }
}

pub fn boot_depth(data: &[u8]) -> usize {
    depth_of(data, BootConfig::parse)
}

pub fn system_depth(data: &[u8]) -> usize {
    depth_of(data, SystemConfig::parse)
}

/// A boot.toml that sets every key (accepted).
const FULL_BOOT: &str = r#"state_partition = "st"
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
data_options = ["nosuid", "nodev", "noatime", "commit=30"]
stage = 1
kernel_sha256 = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
stage2_panic_secs = 5
watchdog_secs = 30
watchdog_modules = ["i6300esb.ko"]
"#;

/// A system.toml with services, health and every service key (accepted).
const FULL_SYSTEM: &str = r#"healthy_after = 2
health = ["/usr/bin/check"]
shutdown_grace = 3
trial_timeout = 60
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
user = "app"
group = 1001
supplementary_groups = ["audio", 44]
no_new_privs = true
"#;

fn seeds_for(files: &[File], valid: &[(&str, &str)]) -> Vec<Seed> {
    let mut out: Vec<Seed> = valid
        .iter()
        .map(|(n, t)| Seed::new(*n, t.as_bytes().to_vec()))
        .collect();
    let mut not_utf8 = valid[valid.len() - 1].1.as_bytes().to_vec();
    not_utf8[1] = 0xff;
    out.push(Seed::new("not-utf-8", not_utf8));
    for (i, c) in CASES.iter().enumerate() {
        if files.contains(&c.file) {
            out.push(Seed::new(
                format!("refused-{i}-{}", c.key.unwrap_or("file")),
                c.text.as_bytes().to_vec(),
            ));
        }
    }
    out
}

pub fn boot_seeds() -> Vec<Seed> {
    seeds_for(
        &[File::Boot, File::BootGenerated],
        &[("empty", ""), ("full", FULL_BOOT)],
    )
}

pub fn system_seeds() -> Vec<Seed> {
    seeds_for(
        &[File::System],
        &[("exec", VALID_SYSTEM), ("services", FULL_SYSTEM)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_seeds_pass_every_check_and_refused_ones_stop_at_the_schema() {
        for (seeds, depth) in [
            (boot_seeds(), boot_depth as fn(&[u8]) -> usize),
            (system_seeds(), system_depth),
        ] {
            for s in &seeds {
                let d = depth(&s.bytes);
                if s.name.starts_with("refused-") || s.name == "not-utf-8" {
                    assert!(d <= 2, "{} passed the schema", s.name);
                } else {
                    assert_eq!(d, 3, "{} was refused", s.name);
                }
            }
        }
    }
}

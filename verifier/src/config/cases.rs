//! The shared rule table: one refused input per boot.toml and system.toml rule PID 1
//! enforces. The verifier's tests check that [`BootConfig::parse`] / [`SystemConfig::parse`]
//! refuse each with the named key and rule; the CLI tests feed the same table to
//! `stele initramfs --config` and `stele image build` and expect the very same line.
//! (Feature `test-util`.)
//!
//! [`BootConfig::parse`]: super::BootConfig::parse
//! [`SystemConfig::parse`]: super::SystemConfig::parse

/// Which file a case is, and who refuses it on the build side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum File {
    /// boot.toml: `stele initramfs --config` refuses it with PID 1's message.
    Boot,
    /// boot.toml setting a key `stele initramfs` generates (`threshold`, `modules`): the
    /// builder refuses the key itself; PID 1's rule applies to what it generates.
    BootGenerated,
    /// system.toml: `stele image build --rootfs` refuses it with PID 1's message.
    System,
}

/// One refused input.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub file: File,
    pub text: &'static str,
    /// The key the error names (`None`: the file as a whole).
    pub key: Option<&'static str>,
    /// A piece of the rule's text.
    pub rule: &'static str,
}

const fn boot(text: &'static str, key: Option<&'static str>, rule: &'static str) -> Case {
    Case {
        file: File::Boot,
        text,
        key,
        rule,
    }
}

const fn generated(text: &'static str, key: &'static str, rule: &'static str) -> Case {
    Case {
        file: File::BootGenerated,
        text,
        key: Some(key),
        rule,
    }
}

const fn system(text: &'static str, key: Option<&'static str>, rule: &'static str) -> Case {
    Case {
        file: File::System,
        text,
        key,
        rule,
    }
}

/// A valid service, to put next to a broken one.
const EXEC: &str = "exec = [\"/sbin/init\"]\n";

/// Every rule, at least one case each.
pub const CASES: &[Case] = &[
    // boot.toml: syntax, keys, types.
    boot("this is not toml", None, "not valid TOML"),
    boot("colour = \"red\"", Some("colour"), "unknown key"),
    boot("verify = 1", Some("verify"), "must be a string"),
    boot("data_mount = 5", Some("data_mount"), "must be a string"),
    boot(
        "failure_delay_secs = \"3\"",
        Some("failure_delay_secs"),
        "non-negative integer",
    ),
    boot(
        "partition_timeout_secs = -1",
        Some("partition_timeout_secs"),
        "non-negative integer",
    ),
    boot(
        "verify = \"none\"",
        Some("verify"),
        "must be one of tree, full",
    ),
    boot(
        "on_failure = \"shell\"",
        Some("on_failure"),
        "must be one of reboot, poweroff",
    ),
    // Partition names.
    boot(
        "data_partition = \"\"",
        Some("data_partition"),
        "not a GPT partition name",
    ),
    boot(
        "slot_a_partition = \"0123456789012345678901234567890123456\"",
        Some("slot_a_partition"),
        "not a GPT partition name",
    ),
    boot(
        "slot_b_partition = \"b\\u0007\"",
        Some("slot_b_partition"),
        "not a GPT partition name",
    ),
    boot(
        "state_partition = \"stele-root-a\"",
        Some("state_partition"),
        "same partition name",
    ),
    // data_mount.
    boot(
        "data_mount = \"relative\"",
        Some("data_mount"),
        "absolute path below /",
    ),
    boot(
        "data_mount = \"/\"",
        Some("data_mount"),
        "absolute path below /",
    ),
    boot(
        "data_mount = \"/var/../etc\"",
        Some("data_mount"),
        "plain absolute path",
    ),
    boot(
        "data_mount = \"/srv/a,b\"",
        Some("data_mount"),
        "control character or a comma",
    ),
    boot(
        "data_mount = \"/usr\"",
        Some("data_mount"),
        "writable storage over /usr",
    ),
    boot(
        "data_mount = \"/etc/app\"",
        Some("data_mount"),
        "writable storage over /etc",
    ),
    // Sizes and times.
    boot(
        "overlay_size = \"lots\"",
        Some("overlay_size"),
        "expected a tmpfs size",
    ),
    boot(
        "overlay_size = \"150%\"",
        Some("overlay_size"),
        "expected a tmpfs size",
    ),
    boot(
        "failure_delay_secs = 99999",
        Some("failure_delay_secs"),
        "above the limit of 3600 seconds",
    ),
    boot(
        "partition_timeout_secs = 3601",
        Some("partition_timeout_secs"),
        "above the limit of 3600 seconds",
    ),
    // The data partition's mount options.
    boot(
        "data_options = [\"nosuid\"]",
        Some("data_options"),
        "must include \"nodev\"",
    ),
    boot(
        "data_options = [\"nodev\", \"noexec\"]",
        Some("data_options"),
        "must include \"nosuid\"",
    ),
    boot(
        "data_options = [\"nosuid\", \"nodev\", \"suid\"]",
        Some("data_options"),
        "not a data partition option",
    ),
    boot(
        "data_options = [\"nosuid\", \"nodev\", \"commit=0\"]",
        Some("data_options"),
        "not a data partition option",
    ),
    boot(
        "data_options = [\"nosuid\", \"nodev\", \"nodev\"]",
        Some("data_options"),
        "given twice",
    ),
    boot(
        "data_options = \"nosuid,nodev\"",
        Some("data_options"),
        "array of strings",
    ),
    boot(
        "grow_data = \"no\"",
        Some("grow_data"),
        "must be true or false",
    ),
    // What `stele initramfs` writes itself.
    generated("name = \"my product\"", "name", "not a product name"),
    generated("name = \"\"", "name", "not a product name"),
    generated("name = 1", "name", "must be a string"),
    generated("threshold = 0", "threshold", "must be at least 1"),
    generated("threshold = \"1\"", "threshold", "non-negative integer"),
    generated(
        "modules = [\"../x.ko\"]",
        "modules",
        "not a module file name",
    ),
    generated(
        "modules = [\"dm-mod\"]",
        "modules",
        "not a module file name",
    ),
    generated("modules = \"dm-verity.ko\"", "modules", "array of strings"),
    generated("stage = 3", "stage", "must be 1 or 2"),
    generated("stage = \"2\"", "stage", "non-negative integer"),
    generated(
        "kernel_sha256 = \"abc\"",
        "kernel_sha256",
        "not a sha256 (64 hex digits)",
    ),
    generated(
        "stage = 2\nkernel_sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"",
        "kernel_sha256",
        "never kexecs",
    ),
    generated(
        "watchdog_modules = [\"i6300esb.ko\"]",
        "watchdog_modules",
        "not one of the modules",
    ),
    generated(
        "modaliases = { \"nvme.ko\" = [\"pci:v*\"] }",
        "modaliases",
        "not one of the modules",
    ),
    generated(
        "modules = [\"nvme.ko\"]\nmodaliases = { \"nvme.ko\" = [] }",
        "modaliases",
        "not a list of modalias patterns",
    ),
    generated(
        "modaliases = [\"pci:v*\"]",
        "modaliases",
        "must be a table of module file names",
    ),
    generated(
        "modules = [\"nvme.ko\", \"nvme-core.ko\"]\nmodule_deps = { \"nvme.ko\" = [\"nvme-core.ko\"] }",
        "module_deps",
        "\"nvme.ko\" needs \"nvme-core.ko\", which is not one of the modules before it",
    ),
    generated(
        "modules = [\"nvme.ko\"]\nmodule_deps = { \"nvme.ko\" = [\"nvme-core.ko\"] }",
        "module_deps",
        "not one of the modules before it",
    ),
    generated(
        "modules = [\"nvme.ko\"]\nmodule_deps = { \"ahci.ko\" = [] }",
        "module_deps",
        "\"ahci.ko\" is not one of the modules",
    ),
    generated(
        "module_deps = [\"nvme.ko\"]",
        "module_deps",
        "must be a table of module file names to arrays of module file names",
    ),
    // The boot disk (docs/BOOT.md "The boot disk").
    boot(
        "boot_disk = \"vda\"",
        Some("boot_disk"),
        "is not a disk GUID",
    ),
    boot(
        "boot_disk = \"00000000-0000-0000-0000-000000000000\"",
        Some("boot_disk"),
        "not all zero",
    ),
    boot("allow_removable = 1", Some("allow_removable"), "must be true or false"),
    // The rollback floor's storage and the initramfs minimum.
    boot(
        "rollback_storage = \"tpm2\"",
        Some("rollback_storage"),
        "must be one of tpm, tpm-if-present, state, not \"tpm2\"",
    ),
    boot(
        "min_rollback_index = -1",
        Some("min_rollback_index"),
        "non-negative integer",
    ),
    // The watchdog and the slot kernel's panic delay.
    boot(
        "watchdog_secs = 4000",
        Some("watchdog_secs"),
        "above the limit of 3600 seconds",
    ),
    boot(
        "watchdog_secs = \"30\"",
        Some("watchdog_secs"),
        "non-negative integer",
    ),
    boot(
        "stage2_panic_secs = 0",
        Some("stage2_panic_secs"),
        "must be at least 1",
    ),
    boot(
        "stage2_panic_secs = 3601",
        Some("stage2_panic_secs"),
        "above the limit of 3600 seconds",
    ),
    // system.toml: syntax, keys, what to run.
    system("[service", None, "not valid TOML"),
    system("mode = \"exec\"", Some("mode"), "unknown key"),
    system("", None, "nothing to run"),
    system(
        "exec = [\"/sbin/init\"]\n[[service]]\nname = \"a\"\nexec = [\"/a\"]",
        None,
        "are exclusive",
    ),
    // Commands.
    system("exec = []", Some("exec"), "empty command"),
    system(
        "exec = [\"sbin/init\"]",
        Some("exec"),
        "must be an absolute path",
    ),
    system("exec = \"/sbin/init\"", Some("exec"), "array of strings"),
    system(
        "exec = [\"/sbin/init\", \"a\\u0000b\"]",
        Some("exec"),
        "NUL byte",
    ),
    system(
        "exec = [\"/sbin/init\"]\nhealth = [\"check\"]",
        Some("health"),
        "must be an absolute path",
    ),
    // Times.
    system(
        "exec = [\"/sbin/init\"]\nhealthy_after = 4000",
        Some("healthy_after"),
        "above the limit of 3600 seconds",
    ),
    system(
        "exec = [\"/sbin/init\"]\nshutdown_grace = -1",
        Some("shutdown_grace"),
        "non-negative integer",
    ),
    system(
        "exec = [\"/sbin/init\"]\nhealthy_after = 10\ntrial_timeout = 10",
        Some("trial_timeout"),
        "must be longer than healthy_after",
    ),
    // Reports ([report]).
    system(
        "exec = [\"/sbin/init\"]\nreport = 1",
        Some("report"),
        "must be a table",
    ),
    system(
        "exec = [\"/sbin/init\"]\n[report]\nmethod = \"post\"",
        Some("report.url"),
        "missing",
    ),
    system(
        "exec = [\"/sbin/init\"]\n[report]\nurl = \"ftp://x/r\"",
        Some("report.url"),
        "not an http:// or https:// URL",
    ),
    system(
        "exec = [\"/sbin/init\"]\n[report]\nurl = \"https://x/{device}\"\nmethod = \"put\"",
        Some("report.url"),
        "needs {seq}",
    ),
    system(
        "exec = [\"/sbin/init\"]\n[report]\nurl = \"https://x/{host}\"",
        Some("report.url"),
        "the only placeholders",
    ),
    system(
        "exec = [\"/sbin/init\"]\n[report]\nurl = \"https://x/\"\nmethod = \"get\"",
        Some("report.method"),
        "must be one of put, post",
    ),
    // Services.
    system("service = 1", Some("service"), "array of tables"),
    system(
        "[[service]]\nexec = [\"/a\"]",
        Some("service #1"),
        "missing name",
    ),
    system(
        "[[service]]\nname = \"a b\"\nexec = [\"/a\"]",
        Some("service \"a b\""),
        "1..=64 characters",
    ),
    system(
        "[[service]]\nname = \"a\"\nexec = [\"/a\"]\n[[service]]\nname = \"a\"\nexec = [\"/b\"]",
        Some("service \"a\""),
        "duplicate service name",
    ),
    system(
        "[[service]]\nname = \"a\"",
        Some("service \"a\""),
        "missing exec",
    ),
    system(
        "[[service]]\nname = \"a\"\nexec = [\"a\"]",
        Some("service \"a\" exec"),
        "must be an absolute path",
    ),
    system(
        "[[service]]\nname = \"a\"\nexec = [\"/a\"]\nrestart = \"sometimes\"",
        Some("service \"a\" restart"),
        "must be one of never, on-failure, always",
    ),
    system(
        "[[service]]\nname = \"a\"\nexec = [\"/a\"]\nbogus = 1",
        Some("service \"a\" bogus"),
        "unknown key",
    ),
    system(
        "[[service]]\nname = \"a\"\nexec = [\"/a\"]\nworkdir = \"rel\"",
        Some("service \"a\" workdir"),
        "must be an absolute path",
    ),
    system(
        "[[service]]\nname = \"a\"\nexec = [\"/a\"]\non_exit = \"halt\"",
        Some("service \"a\" on_exit"),
        "must be one of reboot, poweroff",
    ),
    system(
        "[[service]]\nname = \"a\"\nexec = [\"/a\"]\nenv = { \"A=B\" = \"x\" }",
        Some("service \"a\" env"),
        "bad environment variable",
    ),
    system(
        "[[service]]\nname = \"a\"\nexec = [\"/a\"]\nenv = { A = 1 }",
        Some("service \"a\" env"),
        "must be a string",
    ),
    system(
        "[[service]]\nname = \"a\"\nexec = [\"/a\"]\nrestart_delay = 4000",
        Some("service \"a\" restart_delay"),
        "above the limit of 3600 seconds",
    ),
    // Who a service runs as.
    system(
        "[[service]]\nname = \"a\"\nexec = [\"/a\"]\nuser = \"a b\"",
        Some("service \"a\" user"),
        "a name of 1..=32 characters",
    ),
    system(
        "[[service]]\nname = \"a\"\nexec = [\"/a\"]\ngroup = -1",
        Some("service \"a\" group"),
        "a name of 1..=32 characters",
    ),
    system(
        "[[service]]\nname = \"a\"\nexec = [\"/a\"]\nsupplementary_groups = \"audio\"",
        Some("service \"a\" supplementary_groups"),
        "array of group names or ids",
    ),
    system(
        "[[service]]\nname = \"a\"\nexec = [\"/a\"]\nsupplementary_groups = [\"audio\", true]",
        Some("service \"a\" supplementary_groups"),
        "each must be a name",
    ),
    system(
        "[[service]]\nname = \"a\"\nexec = [\"/a\"]\nno_new_privs = \"yes\"",
        Some("service \"a\" no_new_privs"),
        "must be true or false",
    ),
];

/// A valid system.toml, for the tests that need one.
pub const VALID_SYSTEM: &str = EXEC;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BootConfig, ConfigError, SystemConfig};

    fn refusal(c: &Case, origin: &str) -> ConfigError {
        let r = match c.file {
            File::Boot | File::BootGenerated => BootConfig::parse(c.text, origin).map(|_| ()),
            File::System => SystemConfig::parse(c.text, origin).map(|_| ()),
        };
        match r {
            Err(e) => e,
            Ok(()) => panic!("accepted {:?}", c.text),
        }
    }

    #[test]
    fn every_case_is_refused_naming_its_key_and_rule() {
        for c in CASES {
            let e = refusal(c, "f.toml");
            assert_eq!(e.origin, "f.toml", "{c:?}");
            assert_eq!(e.key.as_deref(), c.key, "{c:?}: {e}");
            assert!(e.why.contains(c.rule), "{c:?}: {e}");
            let line = e.to_string();
            assert!(line.starts_with("invalid f.toml: "), "{line}");
            if let Some(k) = c.key {
                assert!(line.contains(&format!(": {k}: ")), "{line}");
            }
        }
    }

    #[test]
    fn the_table_covers_both_files_and_the_valid_file_is_valid() {
        for f in [File::Boot, File::BootGenerated, File::System] {
            assert!(CASES.iter().any(|c| c.file == f), "{f:?}");
        }
        SystemConfig::parse(VALID_SYSTEM, "s").unwrap();
    }
}

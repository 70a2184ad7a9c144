//! Firmware boots of a stele disk under QEMU with the real Debian kernel: OVMF boots the
//! stage-1 UKI from the ESP (no -kernel), Secure Boot refuses an unsigned UKI and boots a
//! signed one, a boot loader's command line has an effect only without Secure Boot, and
//! SeaBIOS boots the same disk through SYSLINUX. Needs `cargo xtask test` (kernel,
//! modules, static stele-init; OVMF, virt-fw-vars, syslinux from `cargo xtask setup`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use stele_qemu::firmware::{self, Firmware};

use crate::cli::uki::secure_boot_key;
use crate::fixture::{env_path, Fixture, Guest};
use crate::util::{stele_env, Out};

/// The VM's hard limit in `stele qemu run --timeout` (the fixture's limits for the other
/// boots are longer): one boot under TCG through OVMF takes 8-15 s.
const BOOT: Duration = Duration::from_secs(150);
/// The stage-1 command line embedded in the UKIs.
const CMDLINE: &str = "console=ttyS0 panic=-1";
/// What a boot loader passes in the attacks below.
const INJECTED: &str = "console=ttyS0 panic=-1 stele.injected=1";
const ESP_FILE: &str = "\\EFI\\BOOT\\BOOTX64.EFI";
/// The service in the slot image: prints a line and what the kernel was told, then powers off.
const SYSTEM_TOML: &str = r#"
[[service]]
name = "hello"
exec = ["/bin/sh", "-c", "echo svc: hello from the verified root; echo svc: cmdline=$(cat /proc/cmdline)"]
restart = "never"
on_exit = "poweroff"
"#;

/// Built once for all tests, in one shared fixture: a signed slot image, the initramfs,
/// the UKI unsigned and signed with a test db key.
struct Artifacts {
    fx: Fixture,
    slot: String,
    uki: PathBuf,
    signed: PathBuf,
    db_cert: PathBuf,
}

fn artifacts() -> &'static Artifacts {
    static A: OnceLock<Artifacts> = OnceLock::new();
    A.get_or_init(|| {
        let fx = Fixture::shared("uefi-vm");
        let (key, public) = fx.keygen("release");
        let root = fx.rootfs("rootfs", SYSTEM_TOML).build();
        let slot = fx.image(&root, &key).build("slot.img");
        let initrd = fx.initramfs(&[&public]).build();
        let kernel = env_path("STELE_KERNEL").display().to_string();
        let uki = || fx.uki(&kernel, &initrd).cmdline(CMDLINE);
        let unsigned = uki().build("uki.efi");
        let (db_key, db_cert) = secure_boot_key(fx.dir(), "db");
        let signed = uki().signed(&db_key, &db_cert).build("signed.efi");
        Artifacts {
            slot,
            uki: PathBuf::from(unsigned),
            signed: PathBuf::from(signed),
            db_cert,
            fx,
        }
    })
}

/// A test's own directory in the shared fixture, and its disk there
/// (`stele disk create --uki UKI [extra]`).
fn disk(test: &str, uki: &Path, extra: &[&str]) -> (PathBuf, PathBuf) {
    let a = artifacts();
    let dir = a.fx.path(test);
    std::fs::create_dir_all(&dir).unwrap();
    let disk =
        a.fx.disk(&a.slot)
            .out(&format!("{test}/disk.img"))
            .slot_size("16M")
            .no_data()
            .args(&["--uki", uki.to_str().unwrap()])
            .args(extra)
            .build();
    (dir, PathBuf::from(disk))
}

/// Boots `disk` by `fw` alone, QEMU ending at the guest's power-off or reboot; the
/// console goes to `dir/console.log`.
fn start(fw: Firmware, disk: &Path, dir: &Path) -> Guest {
    let log = dir.join("console.log");
    let boot = artifacts()
        .fx
        .firmware_boot(fw, disk.to_str().unwrap())
        .no_reboot()
        .console_log(log.to_str().unwrap());
    let args = boot.qemu_args();
    assert!(
        !args.iter().any(|a| a == "-kernel" || a == "-initrd"),
        "{args:?}"
    );
    boot.start()
}

/// Boots to `stele: ready` and the service's lines; returns the kernel's and the
/// service's view of the command line, and prints the time to `stele: ready`.
fn boots_to_ready(vm: &mut Guest, what: &str) -> (String, String) {
    let cmdline = vm.expect("Command line: ");
    let verified = vm.expect("verified");
    assert!(
        verified.contains("stele: slot=a version=1.0.0 rollback_index=1"),
        "{verified}"
    );
    vm.expect("stele: ready");
    eprintln!(
        "{what}: QEMU start to `stele: ready` in {:.1} s",
        vm.uptime().as_secs_f64()
    );
    vm.expect("svc: hello from the verified root");
    let seen = vm.expect("svc: cmdline=");
    vm.expect("stele: shutdown: poweroff");
    // The VM powers off.
    vm.exits();
    assert_eq!(vm.boot_count(), 1, "one kernel boot");
    (cmdline, seen)
}

fn uefi(
    secure_boot_db: Option<&Path>,
    vars: Option<&Path>,
) -> (Firmware, Option<firmware::VarsDir>) {
    let (u, dir) = firmware::prepare_uefi(secure_boot_db, vars).expect("OVMF variable store");
    (Firmware::Uefi(u), dir)
}

#[test]
fn uefi_boots_the_disk_from_its_esp() {
    let (dir, disk) = disk("uefi", &artifacts().uki, &[]);
    let (fw, _vars) = uefi(None, None);
    let mut vm = start(fw, &disk, &dir);
    let line = vm.expect("BdsDxe: starting Boot");
    assert!(
        line.contains("PciRoot"),
        "the firmware booted something other than the disk: {line}"
    );
    let (cmdline, seen) = boots_to_ready(&mut vm, "UEFI");
    assert!(
        cmdline.ends_with(&format!("Command line: {CMDLINE}")),
        "{cmdline}"
    );
    assert!(seen.ends_with(&format!("svc: cmdline={CMDLINE}")), "{seen}");
}

#[test]
fn secure_boot_refuses_the_unsigned_uki() {
    let a = artifacts();
    let (dir, disk) = disk("sb-unsigned", &a.uki, &[]);
    let (fw, _vars) = uefi(Some(&a.db_cert), None);
    let mut vm = start(fw, &disk, &dir);
    let refused = vm.expect("BdsDxe: failed to load Boot");
    assert!(
        refused.contains("Access Denied"),
        "not a Secure Boot refusal: {refused}"
    );
    vm.expect("No bootable option or device was found");
    // Give it time to try anything else: nothing of Linux or stele may run.
    std::thread::sleep(Duration::from_secs(15));
    let console = vm.console();
    vm.power_cut();
    assert!(
        !console.contains("Linux version"),
        "a kernel started:\n{console}"
    );
    assert!(!console.contains("stele"), "stele ran:\n{console}");
}

/// Runs `stele qemu run ARGS` (its console goes to stdout).
fn qemu_cli(args: &[&str]) -> Out {
    stele_env(args, &[])
}

/// The JUnit file parsed by python3's xml.etree: (suite attributes, cases as
/// (name, [(child tag, message, text)])), system-out.
fn parse_junit(path: &Path) -> serde_json::Value {
    let script = r#"
import json, sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == "testsuites", root.tag
s = root.find("testsuite")
print(json.dumps({
    "suite": dict(s.attrib),
    "cases": [[c.get("name"), [[x.tag, x.get("message"), x.text or ""] for x in c]] for c in s.findall("testcase")],
    "out": s.findtext("system-out"),
}))
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python3 could not parse the JUnit XML: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json from python")
}

/// Through the CLI: `stele qemu run --secure-boot DB.crt` boots the signed UKI with Secure
/// Boot enforcing; `--junit` records every expectation, the one that never comes as a
/// failure with its cause and the console's end.
#[test]
fn secure_boot_boots_the_signed_uki_and_junit_reports_it() {
    let a = artifacts();
    let (dir, disk) = disk("sb-signed", &a.signed, &[]);
    let junit = dir.join("report.xml");
    let out = qemu_cli(&[
        "qemu",
        "run",
        "--secure-boot",
        a.db_cert.to_str().unwrap(),
        "--disk",
        disk.to_str().unwrap(),
        "--expect",
        "secureboot: Secure boot enabled",
        "--expect",
        "stele: ready",
        "--expect",
        "svc: hello from the verified root",
        "--expect",
        "NOT-ON-THE-CONSOLE",
        "--junit",
        junit.to_str().unwrap(),
        "--timeout",
        &BOOT.as_secs().to_string(),
    ]);
    assert_eq!(
        out.code, 1,
        "the last expectation must fail: {}",
        out.stderr
    );
    assert!(out.stderr.contains("NOT-ON-THE-CONSOLE"), "{}", out.stderr);
    assert!(
        out.stdout
            .contains("Kernel is locked down from EFI Secure Boot"),
        "{}",
        out.stdout
    );
    let j = parse_junit(&junit);
    let suite = &j["suite"];
    assert_eq!(
        (suite["tests"].as_str(), suite["failures"].as_str()),
        (Some("4"), Some("1")),
        "{j}"
    );
    let cases = j["cases"].as_array().unwrap();
    for c in &cases[..3] {
        assert!(
            c[1].as_array().unwrap().is_empty(),
            "passed cases have no children: {c}"
        );
    }
    let failure = &cases[3][1][0];
    assert_eq!(
        (cases[3][0].as_str(), failure[0].as_str()),
        (Some("NOT-ON-THE-CONSOLE"), Some("failure"))
    );
    assert!(
        failure[1].as_str().unwrap().contains("exited"),
        "cause: {failure}"
    );
    assert!(
        failure[2].as_str().unwrap().contains("stele: halted"),
        "console tail: {failure}"
    );
    assert!(j["out"].as_str().unwrap().contains("stele: ready"));
}

/// A boot entry for the ESP's UKI with a command line as load options, as a boot loader,
/// `efibootmgr -u` or the firmware setup would add it. Returns the firmware's "starting"
/// line, the kernel's command line and the service's view of it.
fn boot_with_loader_cmdline(test: &str, uki: &Path, db: Option<&Path>) -> (String, String, String) {
    let (dir, disk) = disk(test, uki, &[]);
    let vars = dir.join("OVMF_VARS.fd");
    let (fw, _) = uefi(db, Some(&vars));
    firmware::add_boot_entry(&vars, ESP_FILE, INJECTED)
        .expect("virt-fw-vars --append-boot-filepath");
    let mut vm = start(fw, &disk, &dir);
    let started = vm.expect("BdsDxe: starting Boot");
    let (cmdline, seen) = boots_to_ready(&mut vm, test);
    (started, cmdline, seen)
}

/// Without Secure Boot, systemd-stub takes the loader's command line: the test below can
/// therefore fail.
#[test]
fn loader_command_line_replaces_the_embedded_one_without_secure_boot() {
    let (started, cmdline, seen) = boot_with_loader_cmdline("cmdline-open", &artifacts().uki, None);
    assert!(
        started.contains("BOOTX64.EFI"),
        "our boot entry was not used: {started}"
    );
    assert!(
        cmdline.ends_with(&format!("Command line: {INJECTED}")),
        "{cmdline}"
    );
    assert!(
        seen.ends_with(&format!("svc: cmdline={INJECTED}")),
        "{seen}"
    );
}

/// Under Secure Boot the same boot entry changes nothing: the kernel gets the command line
/// signed into the UKI.
#[test]
fn loader_command_line_is_ignored_under_secure_boot() {
    let a = artifacts();
    let (started, cmdline, seen) =
        boot_with_loader_cmdline("cmdline-sb", &a.signed, Some(&a.db_cert));
    assert!(
        started.contains("BOOTX64.EFI"),
        "our boot entry was not used: {started}"
    );
    assert!(
        cmdline.ends_with(&format!("Command line: {CMDLINE}")),
        "{cmdline}"
    );
    assert!(seen.ends_with(&format!("svc: cmdline={CMDLINE}")), "{seen}");
}

#[test]
fn bios_boots_the_same_disk_through_syslinux() {
    let (dir, disk) = disk("bios", &artifacts().uki, &["--bios"]);
    let mut vm = start(Firmware::Bios, &disk, &dir);
    let (cmdline, _) = boots_to_ready(&mut vm, "BIOS");
    assert!(
        cmdline.contains("BOOT_IMAGE=/SYSLINUX/VMLINUZ"),
        "not booted by SYSLINUX: {cmdline}"
    );
    assert!(
        cmdline.contains(CMDLINE),
        "not the UKI's command line: {cmdline}"
    );
}

/// Under Secure Boot the stage-1 kernel is locked down: kexec_file_load refuses a slot
/// kernel that no db key signed. That slot is refused with the line that says so and marked,
/// and the other slot, whose kernel the test db key signed, kexecs in the same boot; its
/// stage 2 verifies it and runs the service.
#[test]
fn secure_boot_refuses_a_slot_kernel_without_a_db_signature_and_kexecs_a_signed_one() {
    let a = artifacts();
    let fx = &a.fx;
    let dir = fx.path("sb-kexec");
    std::fs::create_dir_all(&dir).unwrap();
    let unsigned = crate::vm::kexec::stripped_kernel(fx);
    let signed = fx.p("sb-kexec/vmlinuz.db-signed");
    crate::util::need_tool("sbsign");
    let o = std::process::Command::new("sbsign")
        .arg("--key")
        .arg(fx.path("db.key"))
        .arg("--cert")
        .arg(&a.db_cert)
        .arg("--output")
        .arg(&signed)
        .arg(&unsigned)
        .output()
        .expect("sbsign");
    assert!(o.status.success(), "sbsign: {o:?}");
    let public = fx.p("release.pem");
    let stage2 = fx
        .initramfs(&[&public])
        .args(&["--stage2"])
        .out("sb-kexec/stage2.cpio")
        .build();
    let image = |kernel: &str, version: &str, out: &str| {
        fx.image(&fx.p("rootfs"), &fx.p("release.key"))
            .version(version)
            .args(&["--kernel", kernel, "--initrd", &stage2])
            .args(&["--kernel-cmdline", "console=ttyS0"])
            .build(out)
    };
    let slot_a = image(&unsigned, "1.0.0", "sb-kexec/a.img");
    let slot_b = image(&signed, "1.0.1", "sb-kexec/b.img");
    let disk = fx
        .disk(&slot_a)
        .b(&slot_b)
        .out("sb-kexec/disk.img")
        .slot_size("32M")
        .no_data()
        .args(&["--uki", a.signed.to_str().unwrap()])
        .build();
    let (fw, _vars) = uefi(Some(&a.db_cert), None);
    let mut vm = start(fw, Path::new(&disk), &dir);
    vm.expect_all(&[
        "Kernel is locked down from EFI Secure Boot",
        "stele: slot=a version=1.0.0",
    ]);
    // The errno depends on the kernel's configuration: Debian 6.1 enforces kexec
    // signatures under Secure Boot, so a kernel without one is ENODATA (plain lockdown
    // says EPERM, an untrusted signature ENOKEY or EKEYREJECTED).
    let refused = vm.expect("stele: refused slot a:");
    assert!(
        refused.contains("stele: refused slot a: kernel refused by kexec_file_load: E")
            && refused
                .ends_with("(under Secure Boot the slot's kernel must be signed by a db key)"),
        "{refused}"
    );
    vm.expect_all(&[
        "stele: slot=b version=1.0.1",
        "stele: slot=b kernel ",
        "kexec_core: Starting new kernel",
        "Command line: console=ttyS0 stele.stage2=b panic=10",
        "stele: slot=b version=1.0.1",
        "stele: ready",
        "svc: hello from the verified root",
        "stele: shutdown: poweroff",
    ]);
    vm.exits();
    assert_eq!(vm.boot_count(), 2, "stage 1 and the signed slot kernel");
    // Slot a is marked unbootable on disk (the refusal was the slot's fault).
    let status = crate::util::ok(crate::util::stele(&[
        "update", "status", "--disk", &disk, "--key", &public,
    ]));
    assert!(
        status.contains("slot a: version=1.0.0 rollback_index=1 priority=0"),
        "{status}"
    );
}

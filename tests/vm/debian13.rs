//! Debian 13's kernel (6.12, its modules xz-compressed in /usr/lib/modules, as packaged;
//! `cargo xtask setup` fetches it beside Debian 12's): `stele initramfs` takes its
//! modules as they are, and under QEMU it boots a verified slot as stage 1, and as a slot's
//! own kernel after stage 1 (Debian 12's kernel) kexecs into it. Needs `cargo xtask test`
//! (STELE_KERNEL13, STELE_MODULES13).

use crate::fixture::{env_path, Fixture};
use crate::vm::kexec::{
    app_root, kernel_image, line, release, short_sha, stage1, status_on_disk, updated_disk,
    SHOW_AND_POWER_OFF, SYSTEM,
};

fn kernel13() -> String {
    env_path("STELE_KERNEL13").display().to_string()
}

fn modules13() -> String {
    env_path("STELE_MODULES13").display().to_string()
}

/// The modules of an initramfs `cpio` (boot.toml's list), read back with `cpio`.
fn boot_toml_modules(cpio: &str) -> String {
    let o = std::process::Command::new("cpio")
        .args(["-i", "--to-stdout", "etc/stele/boot.toml"])
        .stdin(std::fs::File::open(cpio).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "cpio: {o:?}");
    let toml = String::from_utf8(o.stdout).unwrap();
    toml.lines()
        .find(|l| l.starts_with("modules = "))
        .unwrap_or_else(|| panic!("no modules in {toml}"))
        .to_owned()
}

#[test]
fn debian13_kernel_boots_a_verified_slot_with_its_compressed_modules() {
    let fx = Fixture::new();
    let (key, public) = release(&fx);
    let initrd = fx
        .initramfs(&[&public])
        .modules_dir(&modules13())
        .out("initrd13.cpio")
        .build();
    let modules = boot_toml_modules(&initrd);
    assert!(modules.contains("dm-verity.ko.xz"), "{modules}");
    let root = app_root(&fx, "root", SYSTEM, SHOW_AND_POWER_OFF);
    let slot = fx.image(&root, &key).name("test").build("slot.img");
    let disk = fx.disk(&slot).build();
    let mut vm = fx
        .boot(&initrd, &disk)
        .kernel(&kernel13())
        .append("stele.debug")
        .start();
    vm.expect("Linux version 6.12");
    let loaded = vm.expect("modules: ");
    assert!(loaded.contains(" 0 failed"), "{loaded}");
    let verified = vm.expect(" verified");
    assert!(verified.contains("stele: slot=a"), "{verified}");
    vm.expect_all(&["stele: ready", "stele: slot=a marked good", "svc: done"]);
    vm.powered_off();
    let console = vm.console();
    assert!(!console.contains("stele: warning: module"), "{console}");
}

#[test]
fn stage1_kexecs_into_debian13_as_the_slots_kernel() {
    let fx = Fixture::new();
    let (key, public) = release(&fx);
    let kernel = fx.p("vmlinuz-6.12");
    std::fs::copy(kernel13(), &kernel).unwrap();
    let stage2 = fx
        .initramfs(&[&public])
        .modules_dir(&modules13())
        .args(&["--stage2"])
        .out("stage2.cpio")
        .build();
    let r2 = app_root(&fx, "root2", SYSTEM, SHOW_AND_POWER_OFF);
    let v2 = kernel_image(&fx, (&r2, &key), ("2.0.0", 2), (&kernel, &stage2), "v2.img");
    let disk = updated_disk(&fx, (&key, &public), &v2);
    let initrd = stage1(&fx, &public, "", &[]);
    let mut vm = fx.boot(&initrd, &disk).start();
    let first = vm.expect(" verified");
    assert!(first.contains("stele: slot=b version=2.0.0"), "{first}");
    vm.expect(&format!(
        "stele: slot=b kernel {} kexec",
        short_sha(&kernel)
    ));
    vm.expect("kexec_core: Starting new kernel");
    vm.expect("Linux version 6.12");
    vm.expect("stele: stele-init ");
    let second = vm.expect(" verified");
    assert!(second.contains("stele: slot=b version=2.0.0"), "{second}");
    let phases = vm.expect("stele: boot phases:");
    assert!(phases.contains("stage=2 "), "{phases}");
    vm.expect_all(&["stele: ready", "stele: slot=b marked good", "svc: done"]);
    vm.powered_off();
    assert_eq!(vm.boot_count(), 2, "stage 1 (6.1) and stage 2 (6.12)");
    let st = status_on_disk(&disk, &public);
    assert!(line(&st, "b").contains("successful=yes"), "{st}");
}

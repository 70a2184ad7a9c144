//! Boots the real kernel (STELE_KERNEL) with a busybox initramfs built by stele's cpio
//! writer: proves the cpio format, the QEMU command line and the harness end to end.

use std::path::PathBuf;
use std::time::Duration;

use stele_image::cpio::Archive;
use stele_qemu::{Vm, VmConfig};

/// A path the set-up provides (STELE_KERNEL, STELE_MODULES); panics naming the command.
fn env_path(var: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => panic!(
            "{var} is not set: run the VM tests with `cargo xtask test` (it downloads the test \
             kernel and sets STELE_KERNEL and STELE_MODULES)"
        ),
    }
}

fn kernel() -> PathBuf {
    env_path("STELE_KERNEL")
}

fn busybox() -> Vec<u8> {
    std::fs::read("/bin/busybox").unwrap_or_else(|e| {
        panic!("/bin/busybox (static) is needed: run `cargo xtask setup` ({e})")
    })
}

/// An initramfs with /bin/busybox, /dev/console and `init` as /init.
fn initramfs(dir: &std::path::Path, init: &str) -> PathBuf {
    let mut a = Archive::new(0);
    a.add_file("bin/busybox", 0o755, busybox()).unwrap();
    a.add_dir("dev", 0o755).unwrap();
    a.add_char_dev("dev/console", 0o600, 5, 1).unwrap();
    a.add_file("init", 0o755, init.as_bytes().to_vec()).unwrap();
    let p = dir.join("initrd.cpio");
    std::fs::write(&p, a.to_bytes().unwrap()).unwrap();
    p
}

#[test]
fn busybox_guest_prints_marker_and_powers_off() {
    let k = kernel();
    let d = tempfile::tempdir().unwrap();
    let initrd = initramfs(
        d.path(),
        "#!/bin/busybox sh\n/bin/busybox echo STELE-TEST-MARKER-$((40 + 2))\n/bin/busybox poweroff -f\n",
    );
    let mut cfg = VmConfig::from_env(k, initrd);
    cfg.append = "quiet".into();
    cfg.timeout = Duration::from_secs(240);
    cfg.serial_log = Some(d.path().join("console.log"));
    let mut vm = Vm::start(&cfg).unwrap();
    // The shell computed 42: the script really ran in the guest.
    let line = vm
        .expect("STELE-TEST-MARKER-42", Duration::from_secs(200))
        .unwrap();
    assert_eq!(line, "STELE-TEST-MARKER-42");
    let status = vm.wait_exit(Duration::from_secs(60)).unwrap();
    assert!(status.success(), "qemu exit status {status}");
    let log = std::fs::read_to_string(d.path().join("console.log")).unwrap();
    assert!(log.contains("STELE-TEST-MARKER-42"));
}

#[test]
fn guest_reboot_is_counted_and_kill_cuts_power() {
    let k = kernel();
    let d = tempfile::tempdir().unwrap();
    let initrd = initramfs(
        d.path(),
        "#!/bin/busybox sh\n/bin/busybox echo STELE-BOOTED\n/bin/busybox reboot -f\n",
    );
    let mut cfg = VmConfig::from_env(k, initrd);
    cfg.timeout = Duration::from_secs(400);
    let mut vm = Vm::start(&cfg).unwrap();
    for _ in 0..2 {
        vm.expect("STELE-BOOTED", Duration::from_secs(180)).unwrap();
    }
    assert!(vm.boot_count() >= 2, "boot count {}", vm.boot_count());
    vm.kill().unwrap();
    assert!(vm.wait_exit(Duration::from_secs(1)).is_ok());
}

/// `stele initramfs` on the real kernel's modules: a busybox /init loads the modules in
/// the order boot.toml lists them; every one must load and the virtio disk must appear.
/// efivarfs is the exception: gated by `firmware:efi`, stele-init loads it only on a UEFI
/// boot (the kernel refuses it on this BIOS boot: "No such device"), so the script skips it.
#[test]
fn initramfs_modules_load_in_boot_toml_order() {
    use stele_image::initramfs::{build, InitramfsSpec};
    let k = kernel();
    let mods = env_path("STELE_MODULES");
    let d = tempfile::tempdir().unwrap();
    let sk = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let key = d.path().join("k.pem");
    std::fs::write(&key, stele_verifier::keys::public_pem(&sk.verifying_key())).unwrap();
    let init = d.path().join("init.sh");
    std::fs::write(
        &init,
        "#!/bin/busybox sh\n\
         B=/bin/busybox\n\
         $B mount -t proc proc /proc\n\
         $B mount -t sysfs sys /sys\n\
         n=0\n\
         for m in $($B sed -n 's/^modules = \\[\\(.*\\)\\]$/\\1/p' /etc/stele/boot.toml | $B tr -d '\"' | $B tr ',' ' '); do\n\
           [ $m = efivarfs.ko ] && continue\n\
           $B insmod /lib/modules/$m && n=$((n + 1)) || $B echo MODFAIL $m\n\
         done\n\
         $B echo BLOCK: $($B ls /sys/block)\n\
         $B echo FS: $($B grep -c -E 'erofs|squashfs|ext4|overlay' /proc/filesystems)\n\
         $B echo LOADED: $n\n\
         $B poweroff -f\n",
    )
    .unwrap();
    let spec = InitramfsSpec {
        modules_dir: mods,
        modules: vec![],
        default_modules: true,
        hardware: stele_image::hardware::Hardware::Qemu,
        keys: vec![key],
        threshold: 1,
        config: None,
        init,
        mtime: 0,
        name: None,
        stage2: false,
        kernel: None,
        min_rollback_index: None,
        boot_disk: None,
    };
    let (mut archive, order) = build(&spec).unwrap();
    archive.add_file("bin/busybox", 0o755, busybox()).unwrap();
    let initrd = d.path().join("initrd.cpio");
    std::fs::write(&initrd, archive.to_bytes().unwrap()).unwrap();
    let disk = d.path().join("vda.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();

    let mut cfg = VmConfig::from_env(k, initrd);
    cfg.append = "quiet".into();
    cfg.disks = vec![stele_qemu::Disk::new(disk).read_only()];
    cfg.timeout = Duration::from_secs(240);
    let mut vm = Vm::start(&cfg).unwrap();
    let loaded = vm.expect("LOADED:", Duration::from_secs(200)).unwrap();
    let console = vm.console();
    assert!(
        !console.contains("MODFAIL"),
        "a module failed to load:\n{console}"
    );
    let efi_only = order.iter().filter(|m| m.as_str() == "efivarfs.ko").count();
    assert_eq!(
        efi_only, 1,
        "the default initramfs carries efivarfs: {order:?}"
    );
    assert_eq!(
        loaded,
        format!("LOADED: {}", order.len() - efi_only),
        "{console}"
    );
    assert!(console.contains("BLOCK: vda"), "{console}");
    assert!(console.contains("FS: 4"), "{console}");
    assert!(vm.wait_exit(Duration::from_secs(60)).unwrap().success());
}

//! Issue 18 under QEMU: a trusted file of the image (system.toml, /etc/passwd) that is a
//! symlink into /var, where the data partition is mounted, with an attacker's file there.
//! Such an image is built by hand (mkfs.erofs, then `stele image build --fs-image`), past
//! the check `stele image build --rootfs` makes; the data partition is written by hand too.
//! PID 1 refuses to run what the link points to, says which link, and runs nothing.
//!
//! Needs STELE_KERNEL, STELE_MODULES and STELE_INIT, set by `cargo xtask test`.

use std::path::Path;

use crate::fixture::{change_partition, partition_bytes, Fixture};
use crate::util::{host, ok};

/// The attacker's system.toml and passwd, on the data partition at /var/lib/x.
const ATTACKER_SYSTEM: &str = "[[service]]\nname = \"pwn\"\nexec = [\"/bin/sh\", \"-c\", \"echo attacker: ran as $(/bin/busybox id -u)\"]\nrestart = \"never\"\non_exit = \"poweroff\"\n";
const ATTACKER_PASSWD: &str = "root:x:0:0::/:/bin/sh\nsvc:x:0:0::/:/bin/sh\n";

/// The image's own system.toml for the passwd case: one service as user `svc`.
const SVC_SYSTEM: &str = "[[service]]\nname = \"who\"\nexec = [\"/bin/sh\", \"-c\", \"echo who: uid $(/bin/busybox id -u)\"]\nuser = \"svc\"\nrestart = \"never\"\non_exit = \"poweroff\"\n";

/// Boots an image whose `link` (relative to the root) is a symlink to `/var/lib/x/NAME`,
/// with `attacker` at that place on the data partition; returns the console.
fn boot_with_link_into_var(system: &str, link: &str, attacker: &str) -> String {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("k");
    let root = fx.rootfs("root", system).build();
    let r = Path::new(&root);
    let name = Path::new(link).file_name().expect("file name");
    let target = Path::new("/var/lib/x").join(name);
    let _ = std::fs::remove_file(r.join(link));
    std::os::unix::fs::symlink(&target, r.join(link)).expect("symlink");
    // Past the build's check: the filesystem is made by hand and wrapped.
    ok(host("mkfs.erofs", &[&fx.p("fs.erofs"), &root]));
    let img = fx.fs_image(&fx.p("fs.erofs"), &k).build("s.img");
    let initrd = fx
        .initramfs(&[&p])
        .config("on_failure = \"poweroff\"\nfailure_delay_secs = 1\n")
        .build();
    let d = fx.disk(&img).slot_size("16M").data_size("16M").build();
    // The data partition, as whoever can write it leaves it.
    let data = fx.path("data");
    std::fs::create_dir_all(data.join("lib/x")).expect("mkdir");
    std::fs::write(data.join("lib/x").join(name), attacker).expect("write");
    let len = partition_bytes(&d, "stele-data").len();
    let ext4 = fx.path("data.ext4");
    std::fs::File::create(&ext4)
        .and_then(|f| f.set_len(len as u64))
        .expect("create data.ext4");
    ok(host(
        "mkfs.ext4",
        &["-q", "-F", "-d", &fx.p("data"), &fx.p("data.ext4")],
    ));
    let bytes = std::fs::read(&ext4).expect("read data.ext4");
    change_partition(&d, "stele-data", |part| part.copy_from_slice(&bytes));
    let mut vm = fx.boot(&initrd, &d).no_reboot().start();
    vm.expect_all(&[
        "stele: slot=a version=1.0.0",
        &format!(
            "stele: nothing to run: refused /run/stele/lower/{link}: /{link} is reached through the symbolic link /{link} -> {}, into /var, which the device writes",
            target.display()
        ),
        "stele: shutdown: poweroff",
        "stele: halted",
    ]);
    vm.powered_off()
}

/// `/etc/stele/system.toml -> /var/lib/x/system.toml` used to run the data partition's
/// file as PID 1's configuration, as root.
#[test]
fn system_toml_linked_into_var_is_not_run() {
    let console = boot_with_link_into_var("", "etc/stele/system.toml", ATTACKER_SYSTEM);
    assert!(!console.contains("attacker: ran"), "{console}");
}

/// `/etc/passwd -> /var/lib/x/passwd` used to let the data partition give the service's
/// user uid 0.
#[test]
fn passwd_linked_into_var_does_not_choose_a_services_uid() {
    let console = boot_with_link_into_var(SVC_SYSTEM, "etc/passwd", ATTACKER_PASSWD);
    assert!(!console.contains("who: uid"), "{console}");
}

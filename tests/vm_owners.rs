//! One boot under QEMU of an image built from a tar archive: inside the guest, a file keeps
//! its owner 1000:1001 and setuid mode, and a file capability works (a non-root user who
//! runs the binary gets CAP_NET_RAW, and only through that binary).

use std::os::unix::fs::PermissionsExt;

use crate::boot::{expect, Lab, BOOT};
use crate::cli_owners::{tar_of, CAP_NET_RAW};

#[test]
fn owners_and_file_capabilities_survive_into_the_guest() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test sets owners and file capabilities: run it as root (as `cargo xtask test` does)"
    );
    let lab = Lab::new();
    lab.keygen("release");
    let check = r#"#!/bin/sh
echo "owners: $(stat -c '%u:%g %a' /srv/owned)"
echo "caps-plain: $(su svc -c '/bin/busybox grep CapEff /proc/self/status')"
echo "caps-file: $(su svc -c '/opt/cap/busybox grep CapEff /proc/self/status')"
"#;
    let system = r#"
[[service]]
name = "check"
exec = ["/bin/check"]
restart = "never"
on_exit = "poweroff"
"#;
    let root = lab.rootfs(
        "rootfs",
        system,
        &[
            ("bin/check", check, 0o755),
            ("srv/owned", "owned by 1000:1001\n", 0o4754),
            (
                "etc/passwd",
                "root:x:0:0:root:/root:/bin/sh\nsvc:x:1000:1001::/:/bin/sh\n",
                0o644,
            ),
            ("etc/group", "root:x:0:\nsvc:x:1001:\n", 0o644),
        ],
    );
    for applet in ["stat", "su"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    let owned = root.join("srv/owned");
    std::os::unix::fs::lchown(&owned, Some(1000), Some(1001)).unwrap();
    std::fs::set_permissions(&owned, std::fs::Permissions::from_mode(0o4754)).unwrap();
    let capbox = root.join("opt/cap/busybox");
    std::fs::create_dir_all(capbox.parent().unwrap()).unwrap();
    std::fs::copy(root.join("bin/busybox"), &capbox).unwrap();
    xattr::set(&capbox, "security.capability", &CAP_NET_RAW).unwrap();
    // Through a tar archive, as a container export would deliver the root.
    let tar = lab.path("root.tar");
    tar_of(&root, &tar);
    lab.stele(&[
        "image",
        "build",
        "--rootfs-tar",
        tar.to_str().unwrap(),
        "--key",
        "release.key",
        "--name",
        "test",
        "--version",
        "1.0.0",
        "--rollback-index",
        "1",
        "--out",
        "slot.img",
    ]);
    let initrd = lab.initramfs(&["release"]);
    let disk = lab.disk(&lab.path("slot.img"), None);
    let mut vm = lab.boot(&initrd, &disk, "", true);
    expect(&mut vm, "stele: ready");
    let owners = expect(&mut vm, "owners: ");
    assert!(owners.contains("owners: 1000:1001 4754"), "{owners}");
    let plain = expect(&mut vm, "caps-plain: ");
    assert!(
        plain.contains("CapEff:") && plain.contains("0000000000000000"),
        "{plain}"
    );
    let file = expect(&mut vm, "caps-file: ");
    assert!(
        file.contains("CapEff:") && file.contains("0000000000002000"),
        "{file}"
    );
    let _ = vm.wait_exit(BOOT).expect("the VM powers off");
}

//! One boot under QEMU of an image built from a tar archive: inside the guest, a file keeps
//! its owner 1000:1001 and setuid mode, and a file capability works (a non-root user who
//! runs the binary gets CAP_NET_RAW, and only through that binary).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::cli::owners::{need_root, tar_of, CAP_NET_RAW};
use crate::fixture::Fixture;

#[test]
fn owners_and_file_capabilities_survive_into_the_guest() {
    need_root();
    let fx = Fixture::new();
    let (key, public) = fx.keygen("release");
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
    let root = fx
        .rootfs("rootfs", system)
        .file("bin/check", check, 0o755)
        .file("srv/owned", "owned by 1000:1001\n", 0o4754)
        .file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nsvc:x:1000:1001::/:/bin/sh\n",
            0o644,
        )
        .file("etc/group", "root:x:0:\nsvc:x:1001:\n", 0o644)
        .symlink("bin/stat", "busybox")
        .symlink("bin/su", "busybox")
        .build();
    let root = Path::new(&root);
    let owned = root.join("srv/owned");
    std::os::unix::fs::lchown(&owned, Some(1000), Some(1001)).unwrap();
    std::fs::set_permissions(&owned, std::fs::Permissions::from_mode(0o4754)).unwrap();
    let capbox = root.join("opt/cap/busybox");
    std::fs::create_dir_all(capbox.parent().unwrap()).unwrap();
    std::fs::copy(root.join("bin/busybox"), &capbox).unwrap();
    xattr::set(&capbox, "security.capability", &CAP_NET_RAW).unwrap();
    // Through a tar archive, as a container export would deliver the root.
    let tar = fx.path("root.tar");
    tar_of(root, &tar);
    let img = fx
        .tar_image(tar.to_str().expect("utf-8"), &key)
        .build("slot.img");
    let initrd = fx.initramfs(&[&public]).build();
    let disk = fx.disk(&img).build();
    let mut vm = fx.boot(&initrd, &disk).no_reboot().start();
    vm.expect("stele: ready");
    let owners = vm.expect("owners: ");
    assert!(owners.contains("owners: 1000:1001 4754"), "{owners}");
    let plain = vm.expect("caps-plain: ");
    assert!(
        plain.contains("CapEff:") && plain.contains("0000000000000000"),
        "{plain}"
    );
    let file = vm.expect("caps-file: ");
    assert!(
        file.contains("CapEff:") && file.contains("0000000000002000"),
        "{file}"
    );
    // The VM powers off.
    vm.exits();
}

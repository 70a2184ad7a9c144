//! `stele initramfs` refuses inputs that could never boot, before writing anything.

use crate::util::{fails, stele};

/// A dynamically linked /init would die in the kernel with "Failed to execute /init
/// (error -2)"; the command says so up front, with the fix.
#[test]
fn dynamic_init_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("initrd.cpio");
    let dynamic = env!("CARGO_BIN_EXE_stele"); // cargo's default linking is dynamic
    let res = stele(&[
        "initramfs",
        "--modules-dir",
        dir.path().to_str().unwrap(),
        "--key",
        "unused.pub",
        "--init",
        dynamic,
        "--out",
        out.to_str().unwrap(),
    ]);
    fails(&res, 2, &["dynamically linked", "crt-static"]);
    assert!(!out.exists(), "an initramfs was written");

    let script = dir.path().join("init.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    let res = stele(&[
        "initramfs",
        "--modules-dir",
        dir.path().to_str().unwrap(),
        "--key",
        "unused.pub",
        "--init",
        script.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    fails(&res, 2, &["not an ELF"]);
}

//! `stele initramfs` refuses inputs that could never boot, before writing anything.

use crate::fixture::Fixture;
use crate::util::fails;

/// A dynamically linked /init would die in the kernel with "Failed to execute /init
/// (error -2)"; the command says so up front, with the fix.
#[test]
fn dynamic_init_is_refused_with_the_fix() {
    let fx = Fixture::new();
    let dynamic = env!("CARGO_BIN_EXE_stele"); // cargo's default linking is dynamic
    let initramfs = |init: &str| {
        fx.initramfs(&["unused.pub"])
            .modules_dir(fx.dir().to_str().expect("utf-8"))
            .init(init)
            .run()
    };
    fails(
        &initramfs(dynamic),
        2,
        &["dynamically linked", "crt-static"],
    );
    assert!(!fx.path("initrd.cpio").exists(), "an initramfs was written");

    let script = fx.path("init.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    fails(&initramfs(&fx.p("init.sh")), 2, &["not an ELF"]);
}

/// The summary counts with the plural rule ("1 key"), and an existing output needs --force.
#[test]
fn summary_counts_keys_and_an_existing_output_needs_force() {
    let fx = Fixture::new();
    let (_, p) = fx.keygen("a");
    let out = crate::util::ok(fx.initramfs(&[&p]).run());
    assert!(
        out.contains(" bytes, 1 key, threshold 1, product any, modules: "),
        "{out}"
    );
    let before = std::fs::read(fx.path("initrd.cpio")).unwrap();
    fails(
        &fx.initramfs(&[&p]).run(),
        3,
        &["already exists", "--force"],
    );
    assert_eq!(std::fs::read(fx.path("initrd.cpio")).unwrap(), before);
    crate::util::ok(fx.initramfs(&[&p]).args(&["--force"]).run());
}

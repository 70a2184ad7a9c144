//! The build refuses what PID 1 refuses, with PID 1's message: the verifier's one table of
//! boot.toml and system.toml cases (stele_verifier::config::cases) fed to
//! `stele initramfs --config` and `stele image build --rootfs`. Each must exit 2 with the
//! very line `BootConfig::parse` / `SystemConfig::parse` give, and write nothing.

use std::path::Path;

use stele_verifier::config::cases::{File, CASES};
use stele_verifier::config::{BootConfig, SystemConfig};
use stele_verifier::exit::error_line;

use crate::fixture::Fixture;
use crate::util::*;

/// A 64-bit ELF header with one PT_LOAD program header and no interpreter: what
/// `stele initramfs` accepts as a static /init (it is never run here).
pub fn static_elf() -> Vec<u8> {
    let mut b = vec![0u8; 64 + 56];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2;
    b[5] = 1;
    b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
    b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
    b[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
    b[64..68].copy_from_slice(&1u32.to_le_bytes());
    b
}

/// An empty modules directory and a static /init for `stele initramfs` (nothing is ever
/// loaded or run): (modules dir, init path).
fn fake_kernel(fx: &Fixture) -> (String, String) {
    let modules = fx.path("modules");
    std::fs::create_dir(&modules).expect("mkdir");
    std::fs::write(modules.join("modules.dep"), "").expect("write modules.dep");
    let init = fx.path("init");
    std::fs::write(&init, static_elf()).expect("write init");
    (fx.p("modules"), fx.p("init"))
}

/// `stele image build` of `root` signed with `key` into `out`.
fn build(fx: &Fixture, root: &str, key: &str, out: &Path) -> Out {
    fx.image(root, key)
        .version("1")
        .run(out.to_str().expect("utf-8"))
}

/// The single stderr line of a refusal, exit 2, nothing at `out` nor beside it.
fn refused_with(out: &Out, line: &str, out_path: &Path) {
    fails(out, 2, &[]);
    assert_eq!(out.stderr.trim_end(), line, "{out:?}");
    assert!(!out_path.exists(), "{} was written", out_path.display());
    let dir = out_path.parent().expect("output dir");
    let left: Vec<_> = std::fs::read_dir(dir).expect("read output dir").collect();
    assert!(left.is_empty(), "leftovers next to the output: {left:?}");
}

#[test]
fn initramfs_config_refuses_what_stele_init_refuses() {
    let fx = Fixture::new();
    let (_, p) = fx.keygen("k");
    let (modules, init) = fake_kernel(&fx);
    let out_dir = fx.path("out");
    std::fs::create_dir(&out_dir).expect("mkdir");
    let out = out_dir.join("initrd");
    // The builder writes its config text to boot.toml and passes it as --config.
    let cfg = fx.path("boot.toml");
    let run = |text: &str| {
        fx.initramfs(&[&p])
            .modules_dir(&modules)
            .init(&init)
            .args(&["--no-default-modules"])
            .config(text)
            .out("out/initrd")
            .run()
    };
    let origin = cfg.display().to_string();
    let mut seen = 0;
    for case in CASES.iter().filter(|c| c.file != File::System) {
        let res = run(case.text);
        if case.file == File::BootGenerated {
            // The user's file may not set what the builder generates; PID 1's rule for
            // those values is applied to what it generates instead.
            let key = case.key.expect("generated cases name their key");
            let (_, option) = stele_image::initramfs::GENERATED_KEYS
                .iter()
                .find(|(k, _)| *k == key)
                .expect("a generated key");
            let want = format!(
                "stele: error: bad boot config {origin}: `{key}` is set by `stele initramfs` (use {option}), remove it from the file"
            );
            refused_with(&res, &want, &out);
        } else {
            let pid1 = BootConfig::parse(case.text, &origin).expect_err(case.text);
            let want = format!("stele: error: {}", error_line(&pid1.to_string()));
            refused_with(&res, &want, &out);
        }
        seen += 1;
    }
    assert!(seen > 20, "{seen} boot.toml cases");
    // The same builder accepts a valid file (so the refusals above are about the values).
    ok(run("data_mount = \"/srv\"\nfailure_delay_secs = 3\n"));
    let cpio = std::fs::read(&out).expect("initrd written");
    let text = String::from_utf8_lossy(&cpio);
    assert!(
        text.contains("data_mount = \"/srv\""),
        "boot.toml not in the archive"
    );
}

/// `stele initramfs --name` binds the initramfs to a product (boot.toml `name`, checked by
/// PID 1's schema); without it the build warns that any product's image would boot.
#[test]
fn initramfs_name_binds_the_product_and_its_absence_is_a_warning() {
    let fx = Fixture::new();
    let (_, p) = fx.keygen("k");
    let (modules, init) = fake_kernel(&fx);
    let build = |name: Option<&str>| {
        let mut b = fx
            .initramfs(&[&p])
            .modules_dir(&modules)
            .init(&init)
            .args(&["--no-default-modules", "--force"]);
        if let Some(n) = name {
            b = b.args(&["--name", n]);
        }
        b.run()
    };
    let bound = build(Some("router-x1"));
    assert_eq!(bound.code, 0, "{bound:?}");
    assert!(bound.stderr.is_empty(), "{bound:?}");
    assert!(bound.stdout.contains("product router-x1"), "{bound:?}");
    let cpio = String::from_utf8_lossy(&std::fs::read(fx.path("initrd.cpio")).expect("initrd"))
        .into_owned();
    assert!(
        cpio.contains("name = \"router-x1\""),
        "boot.toml has no name"
    );
    let open = build(None);
    assert_eq!(open.code, 0, "{open:?}");
    assert!(
        open.stderr.starts_with(
            "stele: warning: no --name: this initramfs boots and installs any product's image"
        ),
        "{open:?}"
    );
    assert!(open.stdout.contains("product any"), "{open:?}");
    // A name the schema refuses: PID 1's line, nothing written.
    std::fs::remove_file(fx.path("initrd.cpio")).expect("rm");
    let bad = build(Some("my router"));
    fails(
        &bad,
        2,
        &["invalid generated boot.toml: name: \"my router\" is not a product name"],
    );
    assert!(!fx.path("initrd.cpio").exists());
}

#[test]
fn image_build_refuses_a_system_toml_stele_init_would_refuse() {
    let fx = Fixture::new();
    let (k, _) = fx.keygen("k");
    let out_dir = fx.path("out");
    std::fs::create_dir(&out_dir).expect("mkdir");
    let out = out_dir.join("s.img");
    let root = fx.tree("root", false).build();
    let system = Path::new(&root).join("etc/stele/system.toml");
    let origin = system.display().to_string();
    let mut seen = 0;
    for case in CASES.iter().filter(|c| c.file == File::System) {
        std::fs::write(&system, case.text).expect("write system.toml");
        let pid1 = SystemConfig::parse(case.text, &origin).expect_err(case.text);
        let want = format!("stele: error: {}", error_line(&pid1.to_string()));
        refused_with(&build(&fx, &root, &k, &out), &want, &out);
        seen += 1;
    }
    assert!(seen > 20, "{seen} system.toml cases");
}

/// Programs are looked up inside the rootfs, as the device will: missing, not executable,
/// or reached through a symlink out of the tree, the build refuses naming file and key.
#[test]
fn image_build_refuses_programs_the_rootfs_does_not_have() {
    need_tool("mkfs.erofs");
    let fx = Fixture::new();
    let (k, p) = fx.keygen("k");
    let root = fx.tree("root", false).build();
    let r = Path::new(&root);
    std::os::unix::fs::symlink("/bin/sh", r.join("usr/bin/hostsh")).expect("symlink");
    let system = r.join("etc/stele/system.toml");
    let origin = system.display().to_string();
    let out = fx.path("s.img");
    std::fs::write(r.join("usr/bin/plain"), "data").expect("write");
    for (text, key, why) in [
        ("exec = [\"/bin/nope\"]", "exec", "does not exist in the rootfs"),
        ("exec = [\"/usr/bin/plain\"]", "exec", "is not executable"),
        // /bin/sh exists on the build host, not in this tree.
        ("exec = [\"/usr/bin/hostsh\"]", "exec", "does not exist in the rootfs"),
        (
            "[[service]]\nname = \"web\"\nexec = [\"/bin/hello\"]\n[[service]]\nname = \"db\"\nexec = [\"/etc\"]",
            "service \"db\" exec",
            "is not a regular file",
        ),
    ] {
        std::fs::write(&system, text).expect("write system.toml");
        let res = build(&fx, &root, &k, &out);
        fails(&res, 2, &[&format!("invalid {origin}: {key}: "), why]);
        assert!(!out.exists());
    }
    // Through the tree's own symlink (bin -> usr/bin) it is found: the image builds.
    std::fs::write(&system, "exec = [\"/bin/hello\"]\n").expect("write system.toml");
    ok(build(&fx, &root, &k, &out));
    ok(stele(&[
        "verify",
        out.to_str().expect("utf-8"),
        "--key",
        &p,
    ]));
}

/// Issue 18: an image whose trusted files (/etc/stele/system.toml, /etc/passwd, /etc/group,
/// the channel keys and each key in them, the fetch client, or a directory above one) sit behind a symlink out
/// of the image, or into what the device writes (/var, /run, /tmp...), built with exit 0;
/// on the device whoever writes the data partition then chose what PID 1 runs. The build
/// refuses each with one line naming the path and the link; a link inside the image builds.
#[test]
fn image_build_refuses_a_trusted_file_linked_out_of_the_image() {
    need_tool("mkfs.erofs");
    let fx = Fixture::new();
    let (k, p) = fx.keygen("k");
    let out = fx.path("s.img");
    for (i, (at, target, path, why)) in [
        (
            "etc/stele/system.toml",
            "/var/lib/x/system.toml",
            "/etc/stele/system.toml",
            "into /var",
        ),
        (
            "etc/stele",
            "/var/lib/stele",
            "/etc/stele/system.toml",
            "into /var",
        ),
        (
            "etc/passwd",
            "../../../../tmp/passwd",
            "/etc/passwd",
            "leaves the image",
        ),
        ("etc/group", "/run/group", "/etc/group", "into /run"),
        (
            "etc/stele/channel-keys",
            "/var/lib/keys",
            "/etc/stele/channel-keys",
            "into /var",
        ),
        (
            "etc/stele/channel-keys/a.pem",
            "/var/lib/keys/a.pem",
            "/etc/stele/channel-keys/a.pem",
            "into /var",
        ),
        (
            "usr/lib/stele/stele-fetch",
            "/tmp/stele-fetch",
            "/usr/lib/stele/stele-fetch",
            "into /tmp",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let root = fx.tree(&format!("root{i}"), false).build();
        let r = Path::new(&root);
        let link = r.join(at);
        if at == "etc/stele" {
            std::fs::remove_dir_all(&link).expect("rm etc/stele");
        } else {
            std::fs::create_dir_all(link.parent().expect("parent")).expect("mkdir");
            let _ = std::fs::remove_file(&link);
        }
        std::os::unix::fs::symlink(target, &link).expect("symlink");
        let res = build(&fx, &root, &k, &out);
        let named = format!("/{at} -> {target}");
        fails(&res, 2, &["invalid rootfs: ", path, &named, why]);
        assert!(!out.exists(), "{at}: an image was written");
    }
    // The same from a tar archive: checked once it is unpacked, before anything is built.
    let root = fx.tree("tar-root", false).build();
    let r = Path::new(&root);
    std::fs::remove_file(r.join("etc/passwd")).ok();
    std::os::unix::fs::symlink("/var/lib/x/passwd", r.join("etc/passwd")).expect("symlink");
    let tar = fx.path("root.tar");
    crate::cli::owners::tar_of(r, &tar);
    let res = fx
        .tar_image(tar.to_str().expect("utf-8"), &k)
        .run(out.to_str().expect("utf-8"));
    fails(
        &res,
        2,
        &[
            "invalid rootfs: ",
            "/etc/passwd -> /var/lib/x/passwd",
            "into /var",
        ],
    );
    assert!(!out.exists(), "tar: an image was written");
    // Links that stay inside the image and out of what the device writes are fine.
    let root = fx.tree("inside", false).build();
    let r = Path::new(&root);
    std::fs::create_dir_all(r.join("usr/share/stele")).expect("mkdir");
    std::fs::rename(
        r.join("etc/stele/system.toml"),
        r.join("usr/share/stele/system.toml"),
    )
    .expect("move system.toml");
    std::os::unix::fs::symlink(
        "../../usr/share/stele/system.toml",
        r.join("etc/stele/system.toml"),
    )
    .expect("symlink");
    std::fs::write(r.join("usr/share/stele/passwd"), "root:x:0:0::/:/bin/sh\n").expect("write");
    std::os::unix::fs::symlink("/usr/share/stele/passwd", r.join("etc/passwd")).expect("symlink");
    ok(build(&fx, &root, &k, &out));
    ok(stele(&[
        "verify",
        out.to_str().expect("utf-8"),
        "--key",
        &p,
    ]));
}

//! `stele image build --kernel --initrd [--kernel-cmdline]` and `stele initramfs --kernel
//! | --stage2`: the files go into the image (from a directory without touching it, and
//! from a tar archive, also unprivileged) exactly as if the tree had held them, the
//! manifest names them, and what the device would refuse is refused at build time.
//! `--fetch-client` goes in by the same mechanism (image/src/added.rs).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::cli::owners::{as_nobody, owners, owners_tree, tar_of};
use crate::fixture::{Fixture, Image, SALT};
use crate::util::*;

const FILESYSTEMS: [&str; 3] = ["erofs", "squashfs", "ext4"];

/// A fake kernel and stage-2 initrd (never booted here): some bytes each.
fn kernel_files(fx: &Fixture) -> (String, String) {
    let (k, i) = (fx.path("vmlinuz"), fx.path("initrd.cpio"));
    let bytes = |n: u32, seed: u32| -> Vec<u8> {
        (0..n)
            .map(|x| u8::try_from((x.wrapping_mul(seed) >> 7) & 0xff).unwrap_or(0))
            .collect()
    };
    std::fs::write(&k, bytes(300_000, 2_654_435_761)).unwrap();
    std::fs::write(&i, bytes(70_001, 40_503)).unwrap();
    (k.display().to_string(), i.display().to_string())
}

/// The build of tests/cli/owners.rs in filesystem `fs`, with the fixture's salt and
/// `extra` options.
fn build<'a>(image: Image<'a>, fs: &str, extra: &[&str]) -> Image<'a> {
    owners(image, fs).salt(SALT).args(extra)
}

/// Mode, uid, gid, inode, size and content hash of one path.
type Entry = (u32, u32, u32, u64, u64, Vec<u8>);

/// Every path under `root` with its type, mode, owner, inode, size and content hash.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let md = p.symlink_metadata().unwrap();
        let content = if md.is_file() {
            Sha256::digest(std::fs::read(&p).unwrap()).to_vec()
        } else {
            Vec::new()
        };
        if md.is_dir() {
            todo.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
        let rel = p.strip_prefix(root).unwrap().to_path_buf();
        out.insert(
            rel,
            (md.mode(), md.uid(), md.gid(), md.ino(), md.len(), content),
        );
    }
    out
}

/// The filesystem part of a slot image (what the tools made from the tree).
fn fs_bytes(img: &str) -> Vec<u8> {
    let bytes = std::fs::read(img).unwrap();
    let size = body_int(&String::from_utf8(body(&bytes)).unwrap(), "size");
    bytes[..usize::try_from(size).unwrap()].to_vec()
}

/// Gives `p` mode `mode` and owner 0:0, as a vendor's tree holds its files.
fn root_owned(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    std::os::unix::fs::lchown(p, Some(0), Some(0)).unwrap();
}

/// Puts the kernel files into `root` by hand, as a vendor's tree would hold them.
fn place_by_hand(root: &Path, kernel: &str, initrd: &str) {
    let dir = root.join("boot/stele");
    std::fs::create_dir_all(&dir).unwrap();
    for d in [root.join("boot"), dir.clone()] {
        root_owned(&d, 0o755);
    }
    for (src, name) in [(kernel, "vmlinuz"), (initrd, "initrd")] {
        let p = dir.join(name);
        std::fs::copy(src, &p).unwrap();
        root_owned(&p, 0o644);
    }
}

#[test]
fn kernel_files_go_in_as_if_the_tree_held_them_and_the_tree_is_left_alone() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("a");
    let (kernel, initrd) = kernel_files(&fx);
    let root = fx.path("root");
    owners_tree(&root);
    let r = root.display().to_string();
    let before = snapshot(&root);
    let with = [
        "--kernel",
        &kernel,
        "--initrd",
        &initrd,
        "--kernel-cmdline",
        "console=ttyS0 quiet",
    ];
    for fs in FILESYSTEMS {
        let img = fx.p(&format!("{fs}-k.img"));
        let line = ok(build(fx.image(&r, &k), fs, &with).run(&img));
        let sha = |f: &str| Sha256::digest(std::fs::read(f).unwrap());
        let ksha = stele_verifier::hex::encode(&sha(&kernel));
        assert!(
            line.trim_end()
                .ends_with(&format!(" kernel={}", &ksha[..12])),
            "{line}"
        );
        ok(stele(&["verify", &img, "--key", &p, "--full"]));
        let j: serde_json::Value =
            serde_json::from_str(&ok(stele(&["inspect", &img, "--json"]))).unwrap();
        let m = &j["manifest"]["kernel"];
        assert_eq!(m["path"], "/boot/stele/vmlinuz");
        assert_eq!(m["size"], 300_000);
        assert_eq!(m["sha256"], ksha.as_str());
        assert_eq!(m["initrd_path"], "/boot/stele/initrd");
        assert_eq!(m["initrd_size"], 70_001);
        assert_eq!(
            m["initrd_sha256"],
            stele_verifier::hex::encode(&sha(&initrd)).as_str()
        );
        assert_eq!(m["cmdline"], "console=ttyS0 quiet");
        let text = ok(stele(&["inspect", &img]));
        assert!(
            text.contains("kernel cmdline:  console=ttyS0 quiet"),
            "{text}"
        );
        assert_eq!(snapshot(&root), before, "{fs}: the root tree was changed");
        let left: Vec<_> = std::fs::read_dir(fx.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("stele-"))
            .collect();
        assert!(left.is_empty(), "{fs}: temporary files left: {left:?}");
    }
    // The same tree holding the files itself (no --kernel): the very same filesystem bytes,
    // owners, modes, xattrs and hard links included.
    place_by_hand(&root, &kernel, &initrd);
    for fs in FILESYSTEMS {
        let img = fx.p(&format!("{fs}-hand.img"));
        let line = ok(build(fx.image(&r, &k), fs, &[]).run(&img));
        assert!(!line.contains("kernel="), "{line}");
        assert!(
            fs_bytes(&img) == fs_bytes(&fx.p(&format!("{fs}-k.img"))),
            "{fs}: the staged build differs from the tree holding the files"
        );
        // A tree that holds the very same files already: accepted, nothing staged.
        let again = fx.p(&format!("{fs}-again.img"));
        ok(build(fx.image(&r, &k), fs, &with).run(&again));
        assert!(fs_bytes(&again) == fs_bytes(&img), "{fs}");
    }
}

#[test]
fn tar_builds_add_the_kernel_files_also_for_an_unprivileged_user() {
    let fx = Fixture::new();
    let (k, _) = fx.keygen("a");
    let (kernel, initrd) = kernel_files(&fx);
    let root = fx.path("root");
    owners_tree(&root);
    let tar = fx.path("root.tar");
    tar_of(&root, &tar);
    let held = fx.path("held");
    owners_tree(&held);
    place_by_hand(&held, &kernel, &initrd);
    let held_tar = fx.path("held.tar");
    tar_of(&held, &held_tar);
    std::fs::set_permissions(fx.dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    for f in [&k, &kernel, &initrd] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    need_tool("setpriv");
    need_tool("fakeroot");
    let (t, ht) = (tar.display().to_string(), held_tar.display().to_string());
    let with = ["--kernel", kernel.as_str(), "--initrd", &initrd];
    for fs in FILESYSTEMS {
        let img = |n: &str| fx.p(&format!("{fs}-{n}.img"));
        // Under fakeroot (stele as an unprivileged user) and as root: the added files are
        // what an archive holding them gives. (fakeroot lists a file's xattrs in another
        // order than the kernel does, so the two ways differ from each other in the order
        // of the shared xattr table, with or without a kernel.)
        as_nobody(&build(fx.tar_image(&t, &k), fs, &with).argv(&img("user")));
        as_nobody(&build(fx.tar_image(&ht, &k), fs, &[]).argv(&img("user-held")));
        ok(build(fx.tar_image(&t, &k), fs, &with).run(&img("root")));
        ok(build(fx.tar_image(&ht, &k), fs, &[]).run(&img("root-held")));
        for who in ["user", "root"] {
            assert!(
                fs_bytes(&img(who)) == fs_bytes(&img(&format!("{who}-held"))),
                "{fs} as {who}: added files differ from an archive holding them"
            );
        }
    }
}

/// Puts a fetch client into `root` by hand at its path: 0:0, mode 0755.
fn place_client_by_hand(root: &Path, client: &str) {
    let mut at = root.to_path_buf();
    for d in ["usr", "lib", "stele"] {
        at.push(d);
        if !at.exists() {
            std::fs::create_dir(&at).unwrap();
            root_owned(&at, 0o755);
        }
    }
    let p = at.join("stele-fetch");
    std::fs::copy(client, &p).unwrap();
    root_owned(&p, 0o755);
}

#[test]
fn the_fetch_client_goes_in_by_the_same_staging_as_the_kernel_files() {
    let fx = Fixture::new();
    let (k, _) = fx.keygen("a");
    let (kernel, initrd) = kernel_files(&fx);
    let client = fx.p("stele-fetch");
    std::fs::write(&client, b"\x7fELF a static fetch client").unwrap();
    let root = fx.path("root");
    owners_tree(&root);
    let r = root.display().to_string();
    let before = snapshot(&root);
    let with = [
        "--kernel",
        kernel.as_str(),
        "--initrd",
        &initrd,
        "--fetch-client",
        &client,
    ];
    let staged = fx.p("staged.img");
    ok(build(fx.image(&r, &k), "erofs", &with).run(&staged));
    assert_eq!(snapshot(&root), before, "the root tree was changed");
    // The tree holding all three files itself: the very same filesystem.
    let held = fx.path("held");
    owners_tree(&held);
    place_by_hand(&held, &kernel, &initrd);
    place_client_by_hand(&held, &client);
    let hand = fx.p("hand.img");
    let h = held.display().to_string();
    ok(build(fx.image(&h, &k), "erofs", &[]).run(&hand));
    assert!(
        fs_bytes(&staged) == fs_bytes(&hand),
        "the staged build differs from the tree holding the files"
    );
    // From a tar archive, unprivileged (fakeroot): as if the archive held it.
    let tar = fx.path("root.tar");
    tar_of(&root, &tar);
    let held_tar = fx.path("held.tar");
    place_client_by_hand(&root, &client);
    tar_of(&root, &held_tar);
    std::fs::set_permissions(fx.dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    for f in [&k, &client] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    need_tool("setpriv");
    need_tool("fakeroot");
    let (t, ht) = (tar.display().to_string(), held_tar.display().to_string());
    let (user, user_held) = (fx.p("user.img"), fx.p("user-held.img"));
    as_nobody(&build(fx.tar_image(&t, &k), "erofs", &["--fetch-client", &client]).argv(&user));
    as_nobody(&build(fx.tar_image(&ht, &k), "erofs", &[]).argv(&user_held));
    assert!(
        fs_bytes(&user) == fs_bytes(&user_held),
        "the tar build's fetch client differs from an archive holding it"
    );
}

#[test]
fn what_the_device_would_refuse_is_refused_at_build_time() {
    let fx = Fixture::new();
    let (k, _) = fx.keygen("a");
    let (kernel, initrd) = kernel_files(&fx);
    let root = fx.tree("root", false).build();
    let out = fx.p("s.img");
    let build = |extra: &[&str]| {
        let mut a = vec!["image", "build"];
        a.extend_from_slice(extra);
        a.extend([
            "--key",
            &k,
            "--name",
            "k",
            "--version",
            "1",
            "--rollback-index",
            "1",
            "--out",
            &out,
        ]);
        stele(&a)
    };
    let fs_img = fx.path("fs.img");
    std::fs::write(&fs_img, vec![0u8; 8192]).unwrap();
    let f = fs_img.display().to_string();
    let empty = fx.p("empty");
    std::fs::write(&empty, b"").unwrap();
    for (extra, code, needle) in [
        (
            vec!["--rootfs", &root, "--kernel", &kernel],
            2,
            "go together",
        ),
        (
            vec!["--rootfs", &root, "--initrd", &initrd],
            2,
            "go together",
        ),
        (
            vec!["--rootfs", &root, "--kernel-cmdline", "quiet"],
            2,
            "--kernel-cmdline needs --kernel",
        ),
        (
            vec!["--fs-image", &f, "--kernel", &kernel, "--initrd", &initrd],
            2,
            "a --fs-image is wrapped as it is",
        ),
        (
            vec!["--fs-image", &f, "--fetch-client", &kernel],
            2,
            "--fetch-client needs --rootfs or --rootfs-tar",
        ),
        (
            vec![
                "--rootfs",
                &root,
                "--kernel",
                &kernel,
                "--initrd",
                &initrd,
                "--kernel-cmdline",
                "stele.stage2=a",
            ],
            2,
            "--kernel-cmdline",
        ),
        (
            vec![
                "--rootfs",
                &root,
                "--kernel",
                &kernel,
                "--initrd",
                &initrd,
                "--kernel-cmdline",
                "a\tb",
            ],
            2,
            "printable ascii",
        ),
        (
            vec!["--rootfs", &root, "--kernel", &kernel, "--initrd", &empty],
            2,
            "invalid --initrd: 0 bytes",
        ),
        (
            vec![
                "--rootfs",
                &root,
                "--kernel",
                "/nonexistent/vmlinuz",
                "--initrd",
                &initrd,
            ],
            3,
            "/nonexistent/vmlinuz",
        ),
    ] {
        fails(&build(&extra), code, &[needle]);
        assert!(!Path::new(&out).exists(), "{extra:?}");
    }
    // The tree already holds another file at the kernel's path: refused, nothing changed.
    std::fs::create_dir_all(Path::new(&root).join("boot/stele")).unwrap();
    std::fs::write(Path::new(&root).join("boot/stele/vmlinuz"), b"old").unwrap();
    let before = snapshot(Path::new(&root));
    let o = build(&["--rootfs", &root, "--kernel", &kernel, "--initrd", &initrd]);
    fails(&o, 2, &["boot/stele/vmlinuz", "another file"]);
    assert_eq!(snapshot(Path::new(&root)), before);
    assert!(!Path::new(&out).exists());
}

#[test]
fn initramfs_records_the_kernel_or_the_stage() {
    let fx = Fixture::new();
    let (_, p) = fx.keygen("k");
    let modules = fx.path("modules");
    std::fs::create_dir(&modules).unwrap();
    std::fs::write(modules.join("modules.dep"), "").unwrap();
    let init = fx.path("init");
    std::fs::write(&init, crate::cli::config::static_elf()).unwrap();
    let (kernel, _) = kernel_files(&fx);
    let out = fx.p("initrd");
    let run = |extra: &[&str]| {
        fx.initramfs(&[&p])
            .modules_dir(modules.to_str().unwrap())
            .init(init.to_str().unwrap())
            // The same --out each time (the output rule: replaced only with --force).
            .args(&["--no-default-modules", "--force"])
            .args(extra)
            .out("initrd")
            .run()
    };
    let boot_toml = || {
        need_tool("cpio");
        let o = Command::new("cpio")
            .args(["-i", "--quiet", "--to-stdout", "etc/stele/boot.toml"])
            .stdin(std::fs::File::open(&out).unwrap())
            .output()
            .unwrap();
        String::from_utf8(o.stdout).unwrap()
    };
    ok(run(&["--kernel", &kernel]));
    let sha = stele_verifier::hex::encode(&Sha256::digest(std::fs::read(&kernel).unwrap()));
    assert!(
        boot_toml().contains(&format!("kernel_sha256 = \"{sha}\"")),
        "{}",
        boot_toml()
    );
    ok(run(&["--stage2"]));
    let t = boot_toml();
    assert!(
        t.contains("stage = 2") && !t.contains("kernel_sha256"),
        "{t}"
    );
    ok(run(&[]));
    let t = boot_toml();
    assert!(!t.contains("stage") && !t.contains("kernel_sha256"), "{t}");
    // A stage-2 initramfs never kexecs: it has no use for the running kernel's digest.
    fails(
        &run(&["--stage2", "--kernel", &kernel]),
        2,
        &["--stage2", "never kexecs"],
    );
}

/// `--out` on another filesystem than the root tree: the staging tree cannot link and
/// copies instead (owners, modes, xattrs, holes, hard-link groups), with the same bytes.
/// (One xattr per file here: the other filesystem may list several in another order,
/// which mkfs.erofs and mksquashfs keep; docs/CLI.md says so.)
#[test]
fn a_staging_tree_on_another_filesystem_copies_with_the_same_result() {
    let fx = Fixture::new();
    let (k, _) = fx.keygen("a");
    let (kernel, initrd) = kernel_files(&fx);
    let root = fx.path("root");
    owners_tree(&root);
    xattr::remove(root.join("usr/bin/ping"), "user.stele").unwrap();
    // A small hole: /dev/shm may be a small tmpfs (64 MiB in a container).
    std::fs::OpenOptions::new()
        .write(true)
        .open(root.join("var/sparse"))
        .and_then(|f| f.set_len(1 << 20))
        .unwrap();
    let elsewhere = tempfile::tempdir_in("/dev/shm").expect("a tmpfs at /dev/shm");
    assert_ne!(
        elsewhere.path().metadata().unwrap().dev(),
        root.metadata().unwrap().dev(),
        "/dev/shm must be another filesystem than the test's temporary directory"
    );
    let r = root.display().to_string();
    let with = ["--kernel", kernel.as_str(), "--initrd", &initrd];
    let mut staged = Vec::new();
    for fs in FILESYSTEMS {
        let img = elsewhere.path().join(format!("{fs}.img"));
        ok(build(fx.image(&r, &k), fs, &with).run(img.to_str().unwrap()));
        staged.push(fs_bytes(img.to_str().unwrap()));
        std::fs::remove_file(&img).unwrap();
    }
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0);
    place_by_hand(&root, &kernel, &initrd);
    for (fs, bytes) in FILESYSTEMS.iter().zip(staged) {
        let img = fx.p(&format!("{fs}-hand.img"));
        ok(build(fx.image(&r, &k), fs, &[]).run(&img));
        assert!(
            bytes == fs_bytes(&img),
            "{fs}: the copied staging tree differs"
        );
    }
}

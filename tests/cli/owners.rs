//! Owners, modes, xattrs, hard links and holes survive `stele image build` for EROFS,
//! SquashFS and ext4, from a directory and from a tar archive (also built by an
//! unprivileged user), read back with each filesystem's own tools.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use crate::fixture::{Fixture, Image, SALT};
use crate::util::*;

/// `setcap cap_net_raw+ep` as stored in `security.capability` (vfs_cap_data revision 2).
pub const CAP_NET_RAW: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];
const FILESYSTEMS: [&str; 3] = ["erofs", "squashfs", "ext4"];

/// Fails naming the fix unless the tests run as root.
pub fn need_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test sets owners and file capabilities: run it as root (as `cargo xtask test` does in CI)"
    );
}

/// A root tree with what a Debian root needs kept: a setuid file owned 1000:1001 with a
/// file capability and a user xattr, a hard link to it, the shadow group's file, a
/// sticky directory, a symlink and a 64 MiB sparse file. No system.toml: these images are
/// only read back, never booted (nothing to run).
pub fn owners_tree(root: &Path) {
    need_root();
    for d in ["usr/bin", "etc", "tmp", "var"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let ping = root.join("usr/bin/ping");
    std::fs::write(&ping, b"#!/bin/sh\necho ping\n").unwrap();
    std::os::unix::fs::lchown(&ping, Some(1000), Some(1001)).unwrap();
    std::fs::set_permissions(&ping, std::fs::Permissions::from_mode(0o4755)).unwrap();
    xattr::set(&ping, "security.capability", &CAP_NET_RAW).unwrap();
    xattr::set(&ping, "user.stele", b"kept").unwrap();
    std::fs::hard_link(&ping, root.join("usr/bin/ping-hard")).unwrap();
    let shadow = root.join("etc/shadow");
    std::fs::write(&shadow, b"root:*:19000:0:99999:7:::\n").unwrap();
    std::os::unix::fs::lchown(&shadow, Some(0), Some(42)).unwrap();
    std::fs::set_permissions(&shadow, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    std::fs::File::create(root.join("var/sparse"))
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
}

/// A PAX tar of `root` with numeric owners and every xattr, as GNU tar makes it.
pub fn tar_of(root: &Path, out: &Path) {
    need_tool("tar");
    let st = Command::new("tar")
        .args([
            "--xattrs",
            "--xattrs-include=*",
            "--numeric-owner",
            "--format=pax",
        ])
        .arg("-C")
        .arg(root)
        .arg("-cf")
        .arg(out)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
}

/// Runs `stele ARGS` as the unprivileged user 65534 (setpriv), asserting success.
pub fn as_nobody(args: &[String]) {
    need_tool("setpriv");
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_stele"))
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The build of these tests (name owners, version 1) of `image`, in filesystem `fs`.
pub fn owners<'a>(image: Image<'a>, fs: &str) -> Image<'a> {
    image.name("owners").version("1").fs(fs)
}

/// The slot image's filesystem part, as its own file (for the filesystem tools).
fn fs_part(img: &str, dest: &Path) -> String {
    let bytes = std::fs::read(img).unwrap();
    let size = body_int(&String::from_utf8(body(&bytes)).unwrap(), "size");
    std::fs::write(dest, &bytes[..usize::try_from(size).unwrap()]).unwrap();
    dest.display().to_string()
}

fn tool_out(tool: &str, args: &[&str]) -> String {
    let o = host(tool, args);
    assert_eq!(o.code, 0, "{tool} {args:?}: {o:?}");
    o.stdout + &o.stderr
}

/// The xattrs of `path` in an EROFS image: dump.erofs gives the inode number, the inode's
/// xattr body is read per the EROFS format (inline entries and shared ones).
fn erofs_xattrs(fs: &str, path: &str) -> Vec<(u8, String, Vec<u8>)> {
    let info = tool_out("dump.erofs", &[&format!("--path={path}"), fs]);
    let nid: usize = info
        .split_whitespace()
        .skip_while(|w| *w != "NID:")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no NID in {info}"));
    let d = std::fs::read(fs).unwrap();
    let u16_at = |o: usize| usize::from(u16::from_le_bytes([d[o], d[o + 1]]));
    let u32_at = |o: usize| u32::from_le_bytes(d[o..o + 4].try_into().unwrap()) as usize;
    let (meta, xattr_blk) = (u32_at(1024 + 40), u32_at(1024 + 44));
    let inode = meta * 4096 + nid * 32;
    let extended = d[inode] & 1 == 1;
    let icount = u16_at(inode + 2);
    if icount == 0 {
        return Vec::new();
    }
    let body = inode + if extended { 64 } else { 32 };
    let end = body + 12 + (icount - 1) * 4;
    let shared = usize::from(d[body + 4]);
    let entry = |at: usize| -> ((u8, String, Vec<u8>), usize) {
        let (len, index, vsize) = (usize::from(d[at]), d[at + 1], u16_at(at + 2));
        let name = String::from_utf8(d[at + 4..at + 4 + len].to_vec()).unwrap();
        let value = d[at + 4 + len..at + 4 + len + vsize].to_vec();
        ((index, name, value), (4 + len + vsize).div_ceil(4) * 4)
    };
    let mut out = Vec::new();
    for i in 0..shared {
        let id = u32_at(body + 12 + i * 4);
        out.push(entry(xattr_blk * 4096 + id * 4).0);
    }
    let mut at = body + 12 + shared * 4;
    while at < end {
        let (e, size) = entry(at);
        out.push(e);
        at += size;
    }
    out
}

/// Asserts what the tree keeps, in the image `img` of type `fs` (`all_root`: 0:0, no xattrs).
fn check_image(img: &str, fs: &str, work: &Path, all_root: bool) {
    let part = fs_part(img, &work.join(format!("{fs}.part")));
    let owner = if all_root { (0, 0) } else { (1000, 1001) };
    match fs {
        "erofs" => {
            let ping = tool_out("dump.erofs", &["--path=/usr/bin/ping", &part]);
            assert!(
                ping.contains(&format!("Uid: {}   Gid: {}", owner.0, owner.1)),
                "{ping}"
            );
            assert!(ping.contains("Links: 2"), "hard link lost: {ping}");
            let x = erofs_xattrs(&part, "/usr/bin/ping");
            if all_root {
                assert!(x.is_empty(), "{x:?}");
            } else {
                // Name index 6 is "security.", 1 is "user.".
                assert!(
                    x.contains(&(6, "capability".into(), CAP_NET_RAW.to_vec())),
                    "{x:?}"
                );
                assert!(x.contains(&(1, "stele".into(), b"kept".to_vec())), "{x:?}");
            }
            let shadow = tool_out("dump.erofs", &["--path=/etc/shadow", &part]);
            let g = if all_root { 0 } else { 42 };
            assert!(shadow.contains(&format!("Gid: {g}")), "{shadow}");
        }
        "squashfs" => {
            let list = tool_out("unsquashfs", &["-lln", &part]);
            let line = |p: &str| {
                list.lines()
                    .find(|l| l.ends_with(p))
                    .unwrap_or_else(|| panic!("{p} not in {list}"))
                    .to_string()
            };
            let ping = line("squashfs-root/usr/bin/ping");
            assert!(
                ping.starts_with(&format!("-rwsr-xr-x {}/{} ", owner.0, owner.1)),
                "{ping}"
            );
            assert!(
                line("squashfs-root/tmp").starts_with("drwxrwxrwt "),
                "{list}"
            );
            let g = if all_root { 0 } else { 42 };
            assert!(line("squashfs-root/etc/shadow").starts_with(&format!("-rw-r----- 0/{g} ")));
            let dir = work.join("sq-extract");
            let _ = std::fs::remove_dir_all(&dir);
            tool_out("unsquashfs", &["-d", dir.to_str().unwrap(), &part]);
            let p = dir.join("usr/bin/ping");
            assert_eq!(p.metadata().unwrap().nlink(), 2, "hard link lost");
            let cap = xattr::get(&p, "security.capability").unwrap();
            let user = xattr::get(&p, "user.stele").unwrap();
            if all_root {
                assert_eq!((cap, user), (None, None));
            } else {
                assert_eq!(cap.as_deref(), Some(&CAP_NET_RAW[..]));
                assert_eq!(user.as_deref(), Some(&b"kept"[..]));
            }
        }
        _ => {
            let words = |s: String| s.split_whitespace().collect::<Vec<_>>().join(" ");
            let stat = words(tool_out("debugfs", &["-R", "stat /usr/bin/ping", &part]));
            let want = format!("User: {} Group: {}", owner.0, owner.1);
            assert!(stat.contains(&want), "{stat}");
            assert!(stat.contains("Mode: 04755"), "{stat}");
            assert!(stat.contains("Links: 2"), "hard link lost: {stat}");
            let ea = tool_out("debugfs", &["-R", "ea_list /usr/bin/ping", &part]);
            assert_eq!(
                ea.contains("security.capability (20) = 01 00 00 02 00 20"),
                !all_root,
                "{ea}"
            );
            assert_eq!(ea.contains("user.stele"), !all_root, "{ea}");
            let tmp = words(tool_out("debugfs", &["-R", "stat /tmp", &part]));
            assert!(tmp.contains("Mode: 01777"), "{tmp}");
        }
    }
}

#[test]
fn directory_builds_keep_owners_modes_xattrs_and_hard_links() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("a");
    let root = fx.path("root");
    owners_tree(&root);
    let root = root.display().to_string();
    for fs in FILESYSTEMS {
        let img = fx.p(&format!("{fs}.img"));
        ok(owners(fx.image(&root, &k), fs).run(&img));
        ok(stele(&["verify", &img, "--key", &p, "--full"]));
        check_image(&img, fs, fx.dir(), false);
        // Holes stay holes where the filesystem keeps them (EROFS in erofs-utils 1.5
        // writes them as zero blocks: docs/FORMATS.md).
        let len = std::fs::metadata(&img).unwrap().len();
        if fs != "erofs" {
            assert!(
                len < 8 << 20,
                "{fs}: a 64 MiB sparse file made a {len}-byte image"
            );
        }
    }
    let img = fx.p("all-root.img");
    for fs in FILESYSTEMS {
        ok(owners(fx.image(&root, &k), fs)
            .args(&["--all-root", "--force"])
            .run(&img));
        check_image(&img, fs, fx.dir(), true);
    }
}

#[test]
fn tar_builds_keep_owners_and_xattrs_also_for_an_unprivileged_user() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("a");
    let root = fx.path("root");
    owners_tree(&root);
    let tar = fx.path("root.tar");
    tar_of(&root, &tar);
    let tar = tar.display().to_string();
    // A directory the unprivileged user may write to, a key it may read.
    let out = fx.path("out");
    std::fs::create_dir(&out).unwrap();
    for p in [fx.dir(), out.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o644)).unwrap();
    need_tool("setpriv");
    need_tool("fakeroot");
    for fs in FILESYSTEMS {
        let img = out.join(format!("{fs}.img")).display().to_string();
        let args = owners(fx.tar_image(&tar, &k), fs).argv(&img);
        as_nobody(&args);
        assert_eq!(std::fs::metadata(&img).unwrap().uid(), 65534);
        ok(stele(&["verify", &img, "--key", &p, "--full"]));
        check_image(&img, fs, fx.dir(), false);
        // As root (no fakeroot), from stdin: the same bytes.
        let again = fx.p(&format!("{fs}-root.img"));
        let from_stdin = owners(fx.tar_image("-", &k), fs).salt(SALT);
        ok(from_stdin.run_stdin(&again, &std::fs::read(&tar).unwrap()));
        let rebuild = owners(fx.tar_image(&tar, &k), fs).salt(SALT);
        ok(rebuild.args(&["--force"]).run(&img));
        assert!(
            std::fs::read(&img).unwrap() == std::fs::read(&again).unwrap(),
            "{fs}: stdin and file builds differ"
        );
    }
    // Nothing but the images in the output directory.
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 3, "{left:?}");
}

#[test]
fn tar_members_that_leave_the_root_are_refused() {
    let fx = Fixture::new();
    let (k, _) = fx.keygen("a");
    let out = fx.path("out");
    std::fs::create_dir(&out).unwrap();
    let img = out.join("s.img").display().to_string();
    // `tar -P` keeps the `..` that GNU tar would otherwise strip.
    std::fs::create_dir(fx.path("sub")).unwrap();
    std::fs::write(fx.path("evil"), "x").unwrap();
    let tar = fx.p("evil.tar");
    let st = Command::new("tar")
        .current_dir(fx.path("sub"))
        .args(["-P", "-cf", &tar, "../evil"])
        .status()
        .unwrap();
    assert!(st.success());
    fails(
        &owners(fx.tar_image(&tar, &k), "erofs").run(&img),
        2,
        &["..", "leaves the root"],
    );
    std::fs::write(fx.path("junk.tar"), vec![b'x'; 4096]).unwrap();
    fails(
        &owners(fx.tar_image(&fx.p("junk.tar"), &k), "erofs").run(&img),
        2,
        &["tar"],
    );
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        0,
        "leftovers in the output dir"
    );
}

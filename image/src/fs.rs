//! Filesystem images from a root directory, built reproducibly by the host's mkfs tools:
//! fixed timestamps (the caller's epoch), a fixed UUID, sorted input; owners, modes and
//! xattrs as in the tree (or, with `all_root`, every file owned by 0:0 and no xattrs).

use std::io::Write;
use std::path::Path;
#[cfg(test)]
use std::process::Command;

use sha2::{Digest, Sha256};
use stele_verifier::manifest::FsType;

use crate::tool::{Tool, MKFS_EROFS, MKFS_EXT4, MKSQUASHFS};
use crate::{Error, Result};

/// How to build a filesystem image.
#[derive(Clone, Debug)]
pub struct FsOptions {
    pub fs_type: FsType,
    /// Every timestamp in the image (SOURCE_DATE_EPOCH, or 0).
    pub epoch: u64,
    /// Filesystem UUID (unused by SquashFS, which has none).
    pub uuid: [u8; 16],
    /// Every file owned by uid 0 / gid 0 and no xattrs (`--all-root`); otherwise owners,
    /// modes and xattrs come from the tree.
    pub all_root: bool,
    /// EROFS: keep each file's tail in its inode block (mkfs.erofs's default), or give
    /// every tail a block of its own (`-Enoinline_data`; see [`EROFS_INLINE_DATA`]).
    pub erofs_inline_data: bool,
}

/// stele's default for [`FsOptions::erofs_inline_data`], chosen for A/B delta updates
/// (docs/FORMATS.md, "Filesystem images built by stele image build").
pub const EROFS_INLINE_DATA: bool = false;

impl FsOptions {
    /// The options for `fs_type` with stele's defaults.
    pub fn new(fs_type: FsType, epoch: u64, uuid: [u8; 16], all_root: bool) -> FsOptions {
        FsOptions {
            fs_type,
            epoch,
            uuid,
            all_root,
            erofs_inline_data: EROFS_INLINE_DATA,
        }
    }
}

/// The host tool that builds `fs_type`.
pub fn tool_for(fs_type: FsType) -> Tool {
    match fs_type {
        FsType::Erofs => MKFS_EROFS,
        FsType::Squashfs => MKSQUASHFS,
        FsType::Ext4 => MKFS_EXT4,
    }
}

/// Parses `erofs`, `squashfs` or `ext4`.
pub fn parse_fs_type(s: &str) -> Result<FsType> {
    match s {
        "erofs" => Ok(FsType::Erofs),
        "squashfs" => Ok(FsType::Squashfs),
        "ext4" => Ok(FsType::Ext4),
        other => Err(Error::invalid(
            "filesystem type",
            format!("{other:?} (expected erofs, squashfs or ext4)"),
        )),
    }
}

/// Bytes of a filesystem image's head that hold every superblock magic stele knows.
pub const MAGIC_HEAD: usize = 2048;

/// The filesystem whose superblock magic `head` (the image's first bytes) carries, as
/// mkfs.erofs, mksquashfs and mke2fs write them: EROFS 0xE0F5E1E2 (little-endian) at byte
/// 1024, SquashFS `hsqs` at 0, ext2/3/4 0xEF53 (little-endian) at 1080 (superblock 1024 +
/// 0x38). Pure.
pub fn detect_fs_type(head: &[u8]) -> Option<FsType> {
    let at = |off: usize, magic: &[u8]| head.get(off..off + magic.len()) == Some(magic);
    if at(1024, &0xE0F5_E1E2u32.to_le_bytes()) {
        Some(FsType::Erofs)
    } else if at(0, b"hsqs") {
        Some(FsType::Squashfs)
    } else if at(1080, &0xEF53u16.to_le_bytes()) {
        Some(FsType::Ext4)
    } else {
        None
    }
}

/// Refuses a `--fs-image` whose superblock is not a `--fs` one (exit 2), naming what it is.
pub fn check_fs_image(path: &Path, head: &[u8], expected: FsType) -> Result<()> {
    let found = detect_fs_type(head);
    if found == Some(expected) {
        return Ok(());
    }
    let a = |t: FsType| match t {
        FsType::Squashfs => "a squashfs",
        FsType::Erofs => "an erofs",
        FsType::Ext4 => "an ext4",
    };
    let why = match found {
        Some(t) => format!(
            "{} is {} image, not {}: pass --fs {}",
            path.display(),
            a(t),
            expected.name(),
            t.name()
        ),
        None => format!(
            "{} has no erofs, squashfs or ext4 superblock: give {} image (made by {})",
            path.display(),
            a(expected),
            tool_for(expected).name
        ),
    };
    Err(Error::invalid("--fs-image", why))
}

/// A deterministic version-4-shaped UUID from the image name and salt.
pub fn derive_uuid(name: &str, salt: &[u8]) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"stele-fs-uuid\0");
    h.update(name.as_bytes());
    h.update(b"\0");
    h.update(salt);
    let d = h.finalize();
    let mut u = [0u8; 16];
    u.copy_from_slice(&d[..16]);
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

/// `8-4-4-4-12` lower-case form.
pub fn format_uuid(u: &[u8; 16]) -> String {
    let h = stele_verifier::hex::encode(u);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Builds a filesystem image of `rootfs` at `out`, an existing empty file that the tool
/// writes by its path (callers reopen it afterwards).
pub fn build_fs(rootfs: &Path, out: &Path, opts: &FsOptions) -> Result<()> {
    let meta = rootfs
        .metadata()
        .map_err(|e| Error::io("read root directory", rootfs, e))?;
    if !meta.is_dir() {
        return Err(Error::invalid(
            "--rootfs",
            format!("{} is not a directory", rootfs.display()),
        ));
    }
    let tool = tool_for(opts.fs_type);
    let epoch = opts.epoch.to_string();
    let mut cmd = tool.command()?;
    match opts.fs_type {
        FsType::Erofs => {
            cmd.args(erofs_args(opts)).arg(out).arg(rootfs);
            tool.run(&mut cmd).map(drop)
        }
        FsType::Squashfs => {
            cmd.arg(rootfs)
                .arg(out)
                .args(["-noappend", "-quiet", "-no-progress", "-reproducible"])
                .args(["-mkfs-time", &epoch, "-all-time", &epoch]);
            if opts.all_root {
                cmd.args(["-all-root", "-no-xattrs"]);
            }
            tool.run(&mut cmd).map(drop)
        }
        FsType::Ext4 => {
            let ext4 = crate::ext4::Ext4Options {
                uuid: format_uuid(&opts.uuid),
                epoch: opts.epoch,
                all_root: opts.all_root,
            };
            crate::ext4::build(cmd, rootfs, out, &ext4)
        }
    }
}

/// The options stele gives mkfs.erofs (before the output and source paths).
pub fn erofs_args(opts: &FsOptions) -> Vec<String> {
    let mut args = vec![
        "--quiet".to_string(),
        format!("-T{}", opts.epoch),
        "--ignore-mtime".into(),
        format!("-U{}", format_uuid(&opts.uuid)),
    ];
    if !opts.erofs_inline_data {
        args.push("-Enoinline_data".into());
    }
    if opts.all_root {
        args.extend(["--all-root".into(), "-x-1".into()]);
    }
    args
}

/// Writes `len` zero bytes to `w`.
pub(crate) fn write_zeros<W: Write>(w: &mut W, mut len: u64) -> std::io::Result<()> {
    let zeros = [0u8; 65536];
    while len > 0 {
        let n = usize::try_from(len.min(zeros.len() as u64)).unwrap_or(zeros.len());
        w.write_all(&zeros[..n])?;
        len -= n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_is_deterministic_and_v4_shaped() {
        let a = derive_uuid("demo", &[1, 2, 3]);
        assert_eq!(a, derive_uuid("demo", &[1, 2, 3]));
        assert_ne!(a, derive_uuid("demo", &[1, 2, 4]));
        assert_ne!(a, derive_uuid("demp", &[1, 2, 3]));
        let s = format_uuid(&a);
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
    }

    #[test]
    fn magics_name_the_filesystem() {
        let mut head = vec![0u8; MAGIC_HEAD];
        assert_eq!(detect_fs_type(&head), None);
        head[1024..1028].copy_from_slice(&[0xe2, 0xe1, 0xf5, 0xe0]);
        assert_eq!(detect_fs_type(&head), Some(FsType::Erofs));
        let mut sq = vec![0u8; 96];
        sq[..4].copy_from_slice(b"hsqs");
        assert_eq!(detect_fs_type(&sq), Some(FsType::Squashfs));
        let mut e = vec![0u8; MAGIC_HEAD];
        e[1080..1082].copy_from_slice(&[0x53, 0xef]);
        assert_eq!(detect_fs_type(&e), Some(FsType::Ext4));
        let p = Path::new("x.img");
        assert!(check_fs_image(p, &e, FsType::Ext4).is_ok());
        let msg = check_fs_image(p, &sq, FsType::Erofs)
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "invalid --fs-image: x.img is a squashfs image, not erofs: pass --fs squashfs"
        );
        let msg = check_fs_image(p, &[0; 10], FsType::Ext4)
            .unwrap_err()
            .to_string();
        assert_eq!(msg, "invalid --fs-image: x.img has no erofs, squashfs or ext4 superblock: give an ext4 image (made by mkfs.ext4)");
    }

    #[test]
    fn fs_type_names_round_trip() {
        for t in [FsType::Erofs, FsType::Squashfs, FsType::Ext4] {
            assert_eq!(parse_fs_type(t.name()).unwrap(), t);
        }
        assert!(parse_fs_type("vfat").is_err());
    }

    fn make_tree(root: &Path) {
        std::fs::create_dir_all(root.join("etc/sub")).unwrap();
        std::fs::write(root.join("etc/hostname"), "demo\n").unwrap();
        std::fs::write(root.join("etc/sub/big"), vec![0x5a; 300_000]).unwrap();
        std::fs::write(root.join("zz"), "last").unwrap();
        own(root);
        std::os::unix::fs::symlink("etc/hostname", root.join("link")).unwrap();
    }

    /// Owners and xattrs, when the test may set them (as root).
    fn own(root: &Path) {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let f = root.join("zz");
        std::os::unix::fs::lchown(&f, Some(1000), Some(1001)).unwrap();
        xattr::set(&f, "user.stele", b"test").unwrap();
        xattr::set(&f, "trusted.stele", b"t").unwrap();
    }

    /// Same tree content, created at different times and in a different order: same bytes,
    /// also with epoch 0 (which mke2fs's fake time treats as "unset").
    #[test]
    fn builds_are_reproducible_for_every_fs_type() {
        let cases = [FsType::Erofs, FsType::Squashfs, FsType::Ext4]
            .into_iter()
            .flat_map(|t| [(t, 1_700_000_000), (t, 0)]);
        for (t, epoch) in cases {
            let work = tempfile::tempdir().unwrap();
            let (a, b) = (work.path().join("a"), work.path().join("b"));
            make_tree(&a);
            let opts = FsOptions::new(t, epoch, derive_uuid("demo", b"salt"), false);
            let (ia, ib) = (work.path().join("a.img"), work.path().join("b.img"));
            std::fs::File::create(&ia).unwrap();
            std::fs::File::create(&ib).unwrap();
            build_fs(&a, &ia, &opts).unwrap_or_else(|e| panic!("{e}"));
            // Later, in another order: other mtimes, ctimes and inode numbers.
            std::thread::sleep(std::time::Duration::from_millis(1100));
            std::fs::create_dir(&b).unwrap();
            std::fs::write(b.join("zz"), "last").unwrap();
            make_tree_rest(&b);
            build_fs(&b, &ib, &opts).unwrap_or_else(|e| panic!("{e}"));
            let (x, y) = (std::fs::read(&ia).unwrap(), std::fs::read(&ib).unwrap());
            assert!(!x.is_empty());
            assert!(x == y, "{t:?} images differ (epoch {epoch})");
            if t == FsType::Ext4 {
                let fsck = crate::tool::find("e2fsck").expect("e2fsck: run `cargo xtask setup`");
                let o = Command::new(fsck).arg("-fn").arg(&ia).output().unwrap();
                assert!(
                    o.status.success(),
                    "e2fsck: {}",
                    String::from_utf8_lossy(&o.stdout)
                );
            }
            // Nothing left behind next to the output.
            let left: Vec<_> = std::fs::read_dir(work.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(left.len(), 4, "{left:?}");
        }
    }

    fn make_tree_rest(root: &Path) {
        own(root);
        std::os::unix::fs::symlink("etc/hostname", root.join("link")).unwrap();
        std::fs::create_dir_all(root.join("etc/sub")).unwrap();
        std::fs::write(root.join("etc/sub/big"), vec![0x5a; 300_000]).unwrap();
        std::fs::write(root.join("etc/hostname"), "demo\n").unwrap();
    }
}

//! Filesystem images from a root directory, built reproducibly by the host's mkfs tools:
//! fixed timestamps (the caller's epoch), a fixed UUID, every file owned by root, sorted
//! input, and no host xattrs where the tool allows it.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use sha2::{Digest, Sha256};
use stele_verifier::manifest::FsType;

use crate::{Error, Result};

/// Block size of ext4 images built here.
const EXT4_BLOCK: u64 = 4096;

/// How to build a filesystem image.
#[derive(Clone, Debug)]
pub struct FsOptions {
    pub fs_type: FsType,
    /// Every timestamp in the image (SOURCE_DATE_EPOCH, or 0).
    pub epoch: u64,
    /// Filesystem UUID (unused by SquashFS, which has none).
    pub uuid: [u8; 16],
}

/// The host tool that builds `fs_type` and the Debian package that ships it.
pub fn tool_for(fs_type: FsType) -> (&'static str, &'static str) {
    match fs_type {
        FsType::Erofs => ("mkfs.erofs", "erofs-utils"),
        FsType::Squashfs => ("mksquashfs", "squashfs-tools"),
        FsType::Ext4 => ("mkfs.ext4", "e2fsprogs"),
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

/// Finds `tool` in $PATH or the usual sbin directories.
pub fn find_tool(tool: &'static str, package: &'static str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"];
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or(Error::ToolMissing { tool, package })
}

/// Builds a filesystem image of `rootfs` at `out` (which must not exist yet).
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
    let (tool, package) = tool_for(opts.fs_type);
    let exe = find_tool(tool, package)?;
    let epoch = opts.epoch.to_string();
    let uuid = format_uuid(&opts.uuid);
    let mut cmd = Command::new(&exe);
    cmd.env_remove("SOURCE_DATE_EPOCH");
    match opts.fs_type {
        FsType::Erofs => {
            cmd.arg("--quiet")
                .arg(format!("-T{epoch}"))
                .arg("--ignore-mtime")
                .arg("--all-root")
                .arg("-x-1")
                .arg(format!("-U{uuid}"))
                .arg(out)
                .arg(rootfs);
            run(cmd, tool)
        }
        FsType::Squashfs => {
            cmd.arg(rootfs)
                .arg(out)
                .args(["-noappend", "-quiet", "-no-progress", "-reproducible"])
                .args(["-all-root", "-no-xattrs"])
                .args(["-mkfs-time", &epoch, "-all-time", &epoch]);
            run(cmd, tool)
        }
        FsType::Ext4 => build_ext4(cmd, rootfs, out, opts, &uuid),
    }
}

fn run(mut cmd: Command, tool: &'static str) -> Result<()> {
    let output = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            let (_, package) = match tool {
                "mkfs.erofs" => tool_for(FsType::Erofs),
                "mksquashfs" => tool_for(FsType::Squashfs),
                _ => tool_for(FsType::Ext4),
            };
            Error::ToolMissing { tool, package }
        } else {
            Error::ToolFailed {
                tool,
                status: "could not start".into(),
                stderr: e.to_string(),
            }
        }
    })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let text = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    Err(Error::ToolFailed {
        tool,
        status: output.status.to_string(),
        stderr: text.trim().lines().last().unwrap_or("").to_string(),
    })
}

/// A directory that is removed with everything in it when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

static STAGE_COUNTER: AtomicU32 = AtomicU32::new(0);

fn build_ext4(
    mut cmd: Command,
    rootfs: &Path,
    out: &Path,
    opts: &FsOptions,
    uuid: &str,
) -> Result<()> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let stage = TempDir(dir.join(format!(
        ".stele-stage-{}-{}",
        std::process::id(),
        STAGE_COUNTER.fetch_add(1, Ordering::Relaxed)
    )));
    std::fs::create_dir(&stage.0)
        .map_err(|e| Error::io("create staging directory", &stage.0, e))?;
    let mut usage = Usage::default();
    stage_copy(rootfs, &stage.0, &mut usage)?;
    std::fs::set_permissions(
        &stage.0,
        std::fs::Permissions::from_mode(meta_mode(rootfs)?),
    )
    .map_err(|e| Error::io("set mode of", &stage.0, e))?;
    set_times(&stage.0, opts.epoch)?;
    let size = usage.image_size();
    let inodes = usage.entries + 64;
    let f = File::create(out).map_err(|e| Error::io("create", out, e))?;
    f.set_len(size).map_err(|e| Error::io("size", out, e))?;
    drop(f);
    cmd.env("E2FSPROGS_FAKE_TIME", fake_time(opts.epoch))
        .env("MKE2FS_DEVICE_SECTSIZE", "512")
        .args([
            "-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0", "-I", "256",
        ])
        .arg("-N")
        .arg(inodes.to_string())
        .args(["-O", "^has_journal,^resize_inode"])
        .arg("-U")
        .arg(uuid)
        .arg("-E")
        .arg(format!(
            "hash_seed={uuid},root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0,nodiscard"
        ))
        .arg("-d")
        .arg(&stage.0)
        .arg(out);
    run(cmd, "mkfs.ext4")?;
    normalise_inodes(out, &stage.0, &usage.paths, opts.epoch)
}

/// `mkfs.ext4 -d` copies each file's ctime (and owner) from the staged copy, and ctime
/// cannot be set from userspace: rewrite every inode's times and owner with debugfs.
fn normalise_inodes(image: &Path, stage: &Path, paths: &[String], epoch: u64) -> Result<()> {
    let exe = find_tool("debugfs", "e2fsprogs")?;
    // The superblock times and the inodes mke2fs makes itself (bad-blocks inode 1, the
    // root, lost+found) carry the fake time: set them to the epoch as well. (debugfs
    // rewrites s_wtime with the fake time when it closes the filesystem.)
    let mut script = String::new();
    for field in ["mkfs_time", "lastcheck"] {
        script.push_str(&format!("ssv {field} @{epoch}\n"));
    }
    for field in ["atime", "mtime", "ctime"] {
        script.push_str(&format!("sif <1> {field} @{epoch}\n"));
    }
    let own = ["/", "/lost+found"];
    for p in own.into_iter().chain(paths.iter().map(String::as_str)) {
        for field in ["atime", "mtime", "ctime", "crtime"] {
            script.push_str(&format!("sif \"{p}\" {field} @{epoch}\n"));
        }
        for field in ["uid", "gid"] {
            script.push_str(&format!("sif \"{p}\" {field} 0\n"));
        }
    }
    let cmds = stage.join(".stele-debugfs");
    std::fs::write(&cmds, script).map_err(|e| Error::io("write", &cmds, e))?;
    let output = Command::new(exe)
        .env("E2FSPROGS_FAKE_TIME", fake_time(epoch))
        .arg("-w")
        .arg("-f")
        .arg(&cmds)
        .arg(image)
        .output()
        .map_err(|e| Error::ToolFailed {
            tool: "debugfs",
            status: "could not start".into(),
            stderr: e.to_string(),
        })?;
    // debugfs exits 0 even when a request fails; failures are the stderr lines other than
    // its version banner.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let bad = stderr
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with("debugfs "));
    match bad {
        None if output.status.success() => Ok(()),
        _ => Err(Error::ToolFailed {
            tool: "debugfs",
            status: output.status.to_string(),
            stderr: bad.unwrap_or("").to_string(),
        }),
    }
}

/// E2FSPROGS_FAKE_TIME for `epoch`: e2fsprogs treats 0 as "unset" (and then uses the
/// current time), so epoch 0 is faked as 1 second; everything the debugfs pass can set is
/// then set to the epoch itself, leaving only the superblock's last-write time at 1.
fn fake_time(epoch: u64) -> String {
    epoch.max(1).to_string()
}

/// A file name as debugfs can take it in a double-quoted argument.
fn debugfs_name(name: &std::ffi::OsStr, full: &Path) -> Result<String> {
    match name.to_str() {
        Some(n) if !n.chars().any(|c| c == '"' || c == '\\' || c.is_control()) => Ok(n.to_string()),
        _ => Err(Error::invalid(
            "root directory",
            format!(
                "{}: ext4 images are built only from names without quotes, backslashes or control characters (use erofs or squashfs)",
                full.display()
            ),
        )),
    }
}

fn meta_mode(p: &Path) -> Result<u32> {
    Ok(p.metadata().map_err(|e| Error::io("stat", p, e))?.mode() & 0o7777)
}

/// What the staged tree needs, to size the ext4 image.
#[derive(Debug, Default)]
struct Usage {
    blocks: u64,
    entries: u64,
    /// Upper bound of the directory entry bytes.
    dirent_bytes: u64,
    /// Paths inside the image (`/a/b`), in staging order.
    paths: Vec<String>,
}

impl Usage {
    fn image_size(&self) -> u64 {
        // Inode tables, data and directory blocks, plus 1/8 for bitmaps, group descriptors,
        // extent blocks and half-full directory blocks, plus 4 MiB.
        let inode_bytes = (self.entries + 64) * 256;
        let data = self.blocks * EXT4_BLOCK + self.dirent_bytes * 2;
        let raw = data + data / 8 + inode_bytes + 4 * 1024 * 1024;
        raw.div_ceil(1024 * 1024) * 1024 * 1024
    }
}

/// Copies `src` into the existing directory `dst`: regular files, directories and
/// symlinks, modes kept, in sorted order. Other file types are refused.
fn stage_copy(src: &Path, dst: &Path, usage: &mut Usage) -> Result<()> {
    stage_dir(src, dst, "", usage)
}

fn stage_dir(src: &Path, dst: &Path, prefix: &str, usage: &mut Usage) -> Result<()> {
    let mut names = std::fs::read_dir(src)
        .map_err(|e| Error::io("read directory", src, e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::io("read directory", src, e))?;
    names.sort();
    for name in names {
        let s = src.join(&name);
        let d = dst.join(&name);
        let m = s.symlink_metadata().map_err(|e| Error::io("stat", &s, e))?;
        let ft = m.file_type();
        let inner = format!("{prefix}/{}", debugfs_name(&name, &s)?);
        usage.paths.push(inner.clone());
        usage.entries += 1;
        usage.dirent_bytes += 12 + inner.len() as u64;
        if ft.is_dir() {
            std::fs::create_dir(&d).map_err(|e| Error::io("create directory", &d, e))?;
            stage_dir(&s, &d, &inner, usage)?;
            usage.blocks += 1;
        } else if ft.is_file() {
            std::fs::copy(&s, &d).map_err(|e| Error::io("copy", &s, e))?;
            usage.blocks += m.len().div_ceil(EXT4_BLOCK);
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&s).map_err(|e| Error::io("read link", &s, e))?;
            std::os::unix::fs::symlink(&target, &d)
                .map_err(|e| Error::io("create symlink", &d, e))?;
            // Targets under 60 bytes live in the inode.
            usage.blocks += u64::from(target.as_os_str().len() >= 60);
        } else {
            let kind = if ft.is_fifo() {
                "fifo"
            } else if ft.is_socket() {
                "socket"
            } else {
                "device node"
            };
            return Err(Error::invalid(
                "root directory",
                format!(
                    "{} is a {kind}; ext4 images are built from regular files, directories and symlinks only (use erofs or squashfs)",
                    s.display()
                ),
            ));
        }
        if !ft.is_symlink() {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(m.mode() & 0o7777))
                .map_err(|e| Error::io("set mode of", &d, e))?;
        }
    }
    Ok(())
}

/// Sets atime and mtime of everything under `root` (and `root` itself) to `epoch`,
/// children before parents, symlinks themselves rather than their targets.
fn set_times(root: &Path, epoch: u64) -> Result<()> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let secs =
        i64::try_from(epoch).map_err(|_| Error::invalid("SOURCE_DATE_EPOCH", "too large"))?;
    let t = TimeSpec::new(secs, 0);
    let m = root
        .symlink_metadata()
        .map_err(|e| Error::io("stat", root, e))?;
    if m.is_dir() {
        for entry in std::fs::read_dir(root).map_err(|e| Error::io("read directory", root, e))? {
            let entry = entry.map_err(|e| Error::io("read directory", root, e))?;
            set_times(&entry.path(), epoch)?;
        }
    }
    utimensat(None, root, &t, &t, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| Error::io("set times of", root, std::io::Error::from(e)))
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
    fn fs_type_names_round_trip() {
        for t in [FsType::Erofs, FsType::Squashfs, FsType::Ext4] {
            assert_eq!(parse_fs_type(t.name()).unwrap(), t);
        }
        assert!(parse_fs_type("vfat").is_err());
    }

    #[test]
    fn missing_tool_names_package() {
        let e = find_tool("stele-no-such-tool", "some-package").unwrap_err();
        assert!(e.to_string().contains("some-package"));
    }

    #[test]
    fn ext4_size_grows_with_content() {
        let small = Usage {
            blocks: 1,
            entries: 1,
            ..Usage::default()
        }
        .image_size();
        let big = Usage {
            blocks: 10_000,
            entries: 100,
            ..Usage::default()
        }
        .image_size();
        assert!(small >= 4 * 1024 * 1024 && big > 10_000 * 4096);
        assert_eq!(big % (1024 * 1024), 0);
    }

    #[test]
    fn stage_copy_refuses_fifo() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(
            &src.path().join("p"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let e = stage_copy(src.path(), dst.path(), &mut Usage::default()).unwrap_err();
        assert!(e.to_string().contains("fifo"), "{e}");
    }

    fn make_tree(root: &Path) {
        std::fs::create_dir_all(root.join("etc/sub")).unwrap();
        std::fs::write(root.join("etc/hostname"), "demo\n").unwrap();
        std::fs::write(root.join("etc/sub/big"), vec![0x5a; 300_000]).unwrap();
        std::fs::write(root.join("zz"), "last").unwrap();
        std::os::unix::fs::symlink("etc/hostname", root.join("link")).unwrap();
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
            let opts = FsOptions {
                fs_type: t,
                epoch,
                uuid: derive_uuid("demo", b"salt"),
            };
            let (ia, ib) = (work.path().join("a.img"), work.path().join("b.img"));
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
                let fsck = find_tool("e2fsck", "e2fsprogs").unwrap_or_else(|e| panic!("{e}"));
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
        std::os::unix::fs::symlink("etc/hostname", root.join("link")).unwrap();
        std::fs::create_dir_all(root.join("etc/sub")).unwrap();
        std::fs::write(root.join("etc/sub/big"), vec![0x5a; 300_000]).unwrap();
        std::fs::write(root.join("etc/hostname"), "demo\n").unwrap();
    }
}

//! Building a filesystem image from a tar archive (`--rootfs-tar`).
//!
//! None of the Debian 12 tools reads a tar archive with owners and xattrs for all three
//! filesystems (mkfs.erofs 1.5 has no tar input, mke2fs 1.47.0 neither), so the archive
//! is unpacked into a staging directory next to the output (`.<out>.stele-stage-<pid>-<n>`)
//! and the filesystem tool reads that directory. Owners, modes and xattrs come from the
//! archive:
//! - run as root, the staging tree gets them for real (chown, chmod, setxattr);
//! - run as any other user, stele runs its own unpacking step and the filesystem tool
//!   together under one `fakeroot` session (`fakeroot -- stele image fs-from-tar ...`):
//!   fakeroot records the owners, device nodes and xattrs the tool then reads back, and
//!   nothing on the host is owned by anyone but the build user.
//!
//! The staging directory is removed as soon as the filesystem image is written, and on
//! any error or signal (see [`crate::cleanup`]).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::added::Additions;
use crate::archive::{self, Kind, Member};
use crate::cleanup::{self, TempPath};
use crate::fs::{build_fs, FsOptions};
use crate::{Error, Result};
use stele_verifier::hex;
use stele_verifier::manifest::KernelFile;

/// Where the archive is read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TarInput {
    File(PathBuf),
    /// Standard input (`-`).
    Stdin,
}

impl TarInput {
    /// How errors name the archive: its path, or `stdin`.
    pub fn describe(&self) -> String {
        match self {
            TarInput::File(p) => p.display().to_string(),
            TarInput::Stdin => "stdin".to_string(),
        }
    }

    /// `-` is standard input, anything else a file.
    pub fn parse(arg: &Path) -> TarInput {
        if arg == Path::new("-") {
            TarInput::Stdin
        } else {
            TarInput::File(arg.to_path_buf())
        }
    }

    /// The command-line form.
    pub fn arg(&self) -> &Path {
        match self {
            TarInput::File(p) => p,
            TarInput::Stdin => Path::new("-"),
        }
    }

    fn open(&self) -> Result<Box<dyn Read>> {
        match self {
            TarInput::File(p) => {
                let f = File::open(p).map_err(|e| Error::io("open", p, e))?;
                Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, f)))
            }
            TarInput::Stdin => Ok(Box::new(std::io::BufReader::with_capacity(
                1 << 20,
                std::io::stdin(),
            ))),
        }
    }
}

/// The xattr namespaces that every filesystem image keeps.
const XATTR_PREFIXES: [&str; 3] = ["security.", "trusted.", "user."];

/// Unpacks `tar` next to `out` (adding the files of `adds`) and builds the
/// filesystem image of it at `fs_out` (an existing empty file), under fakeroot unless this
/// process is root.
pub fn build_fs_from_tar(
    tar: &TarInput,
    adds: &Additions,
    out: &Path,
    fs_out: &Path,
    opts: &FsOptions,
) -> Result<()> {
    let stage = TempPath::register(
        crate::atomic::temp_name(out, "stage")
            .map_err(|e| Error::io("name a staging directory for", out, e))?,
    );
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(stage.path())
        .map_err(|e| Error::io("create staging directory", stage.path(), e))?;
    std::fs::set_permissions(stage.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io("set mode of", stage.path(), e))?;
    let privileged = nix::unistd::geteuid().is_root();
    let args = StageArgs {
        tar: tar.clone(),
        adds: adds.clone(),
        stage: stage.path().to_path_buf(),
        fs_out: fs_out.to_path_buf(),
        opts: opts.clone(),
    };
    if privileged {
        stage_and_build(&args)
    } else {
        under_fakeroot(&args)
    }
    // `stage` is dropped here: the staging tree is removed.
}

/// The arguments of the unpacking step run under fakeroot (`stele image fs-from-tar`).
#[derive(Clone, Debug)]
pub struct StageArgs {
    pub tar: TarInput,
    /// The slot's kernel and initrd and the fetch client, added after the archive.
    pub adds: Additions,
    /// The (existing, empty) staging directory.
    pub stage: PathBuf,
    /// The (existing, empty) filesystem image file.
    pub fs_out: PathBuf,
    pub opts: FsOptions,
}

impl StageArgs {
    /// The command-line arguments of `stele image fs-from-tar` for these.
    fn to_args(&self) -> Vec<std::ffi::OsString> {
        let o = &self.opts;
        let mut v: Vec<std::ffi::OsString> = vec![
            "image".into(),
            "fs-from-tar".into(),
            "--tar".into(),
            self.tar.arg().into(),
            "--stage".into(),
            self.stage.clone().into(),
            "--fs-out".into(),
            self.fs_out.clone().into(),
            "--fs".into(),
            o.fs_type.name().into(),
            "--epoch".into(),
            o.epoch.to_string().into(),
            "--uuid".into(),
            stele_verifier::hex::encode(&o.uuid).into(),
        ];
        if o.all_root {
            v.push("--all-root".into());
        }
        if let Some(k) = &self.adds.kernel {
            let digest = |f: &KernelFile| digest_arg(f.size, &f.sha256);
            v.extend([
                "--kernel".into(),
                k.input.kernel.clone().into(),
                "--kernel-digest".into(),
                digest(&k.info.kernel).into(),
                "--initrd".into(),
                k.input.initrd.clone().into(),
                "--initrd-digest".into(),
                digest(&k.info.initrd).into(),
                "--kernel-cmdline".into(),
                k.input.cmdline.clone().into(),
            ]);
        }
        if let Some(f) = &self.adds.fetch_client {
            v.extend([
                "--fetch-client".into(),
                f.src.clone().into(),
                "--fetch-client-digest".into(),
                digest_arg(f.size, &f.sha256).into(),
            ]);
        }
        v
    }
}

/// `SIZE:SHA256HEX` of a file [`StageArgs`] passes to the helper. Pure.
fn digest_arg(size: u64, sha256: &[u8; 32]) -> String {
    format!("{size}:{}", hex::encode(sha256))
}

/// `SIZE:SHA256HEX` (the form [`StageArgs`] passes to the helper). Pure.
pub fn parse_digest(s: &str) -> Option<(u64, [u8; 32])> {
    let (size, h) = s.split_once(':')?;
    let d = hex::decode(h)?;
    Some((size.parse().ok()?, d.try_into().ok()?))
}

/// The unpacking step itself (as root, or under fakeroot): unpack, add the files, then
/// build.
pub fn stage_and_build(a: &StageArgs) -> Result<()> {
    unpack(a.tar.open()?, &a.stage, !a.opts.all_root)?;
    crate::added::place(&a.stage, &a.adds.files())?;
    // What PID 1 would refuse to run is refused before the filesystem is built.
    let origin = format!(
        "{}:{}",
        a.tar.describe(),
        stele_verifier::layout::SYSTEM_TOML
    );
    crate::rootfs_check::check(&crate::rootfs_check::DirTree::new(&a.stage), &origin)?;
    build_fs(&a.stage, &a.fs_out, &a.opts)
}

/// Runs [`stage_and_build`] in `stele image fs-from-tar` under fakeroot; its error line
/// becomes this build's error.
fn under_fakeroot(args: &StageArgs) -> Result<()> {
    let fakeroot = crate::tool::FAKEROOT.path()?;
    let exe = std::env::current_exe().map_err(|e| Error::io("find", "the stele binary", e))?;
    let mut cmd = Command::new(fakeroot);
    cmd.arg("--")
        .arg(exe)
        .args(args.to_args())
        .stdin(Stdio::inherit())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let out = cleanup::spawn(&mut cmd)
        .and_then(cleanup::wait_output)
        .map_err(|e| Error::ToolFailed {
            tool: "fakeroot",
            status: "could not start".into(),
            stderr: e.to_string(),
        })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    match line.strip_prefix("stele: error: ") {
        Some(message) => Err(Error::Helper {
            code: out.status.code().unwrap_or(3),
            message: message.to_string(),
        }),
        None => Err(Error::ToolFailed {
            tool: "fakeroot",
            status: out.status.to_string(),
            stderr: line.to_string(),
        }),
    }
}

/// Unpacks the archive read from `r` into the existing directory `root`. With
/// `keep_meta`, owners and xattrs are set from the archive (modes always are).
pub fn unpack<R: Read>(r: R, root: &Path, keep_meta: bool) -> Result<()> {
    // Directory modes and owners are set last, deepest first, so that a read-only
    // directory of the archive does not stop its own members from being unpacked.
    let mut dirs: Vec<Member> = Vec::new();
    archive::for_each(r, |m, data| {
        // A signal's clean-up removes `root`: stop here rather than race it.
        cleanup::checkpoint();
        if keep_meta {
            check_xattrs(m)?;
        }
        let dst = root.join(&m.path);
        make_parents(root, &m.path)?;
        match &m.kind {
            Kind::Dir => {
                if !dst.is_dir() {
                    std::fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&dst)
                        .map_err(|e| Error::io("create directory", &dst, e))?;
                }
                dirs.retain(|d| d.path != m.path);
                dirs.push(m.clone());
                return Ok(());
            }
            Kind::File { size } => {
                replace(&dst)?;
                write_sparse(data, &dst, *size)?;
            }
            Kind::Symlink(target) => {
                replace(&dst)?;
                std::os::unix::fs::symlink(target, &dst)
                    .map_err(|e| Error::io("create symlink", &dst, e))?;
            }
            Kind::HardLink(target) => {
                replace(&dst)?;
                // A hard link shares its target's inode, owner, mode and xattrs.
                return std::fs::hard_link(root.join(target), &dst)
                    .map_err(|e| Error::io("create hard link", &dst, e));
            }
            Kind::Char { major, minor } | Kind::Block { major, minor } => {
                use nix::sys::stat::{makedev, mknod, Mode, SFlag};
                replace(&dst)?;
                let kind = if matches!(m.kind, Kind::Char { .. }) {
                    SFlag::S_IFCHR
                } else {
                    SFlag::S_IFBLK
                };
                let dev = makedev(u64::from(*major), u64::from(*minor));
                mknod(&dst, kind, Mode::from_bits_truncate(0o600), dev)
                    .map_err(|e| Error::io("create device node", &dst, e.into()))?;
            }
            Kind::Fifo => {
                replace(&dst)?;
                nix::unistd::mkfifo(&dst, nix::sys::stat::Mode::from_bits_truncate(0o600))
                    .map_err(|e| Error::io("create fifo", &dst, e.into()))?;
            }
        }
        set_meta(&dst, m, keep_meta)
    })?;
    dirs.sort_by_key(|d| std::cmp::Reverse(d.path.components().count()));
    for d in &dirs {
        set_meta(&root.join(&d.path), d, keep_meta)?;
    }
    Ok(())
}

fn check_xattrs(m: &Member) -> Result<()> {
    match m
        .xattrs
        .iter()
        .find(|(n, _)| !XATTR_PREFIXES.iter().any(|p| n.starts_with(p)))
    {
        None => Ok(()),
        Some((name, _)) => Err(Error::invalid(
            "--rootfs-tar",
            format!(
                "member {} has the xattr {name}; images keep only security.*, trusted.* and user.* xattrs (remove it, or pass --all-root to drop all xattrs)",
                m.path.display()
            ),
        )),
    }
}

/// Owner (with `keep_meta`), mode, then xattrs (with `keep_meta`): in this order, because
/// chown clears setuid bits and file capabilities.
fn set_meta(dst: &Path, m: &Member, keep_meta: bool) -> Result<()> {
    let is_link = matches!(m.kind, Kind::Symlink(_));
    if keep_meta {
        std::os::unix::fs::lchown(dst, Some(m.uid), Some(m.gid))
            .map_err(|e| Error::io("set the owner of", dst, e))?;
    }
    if !is_link {
        std::fs::set_permissions(dst, std::fs::Permissions::from_mode(m.mode))
            .map_err(|e| Error::io("set mode of", dst, e))?;
    }
    if keep_meta {
        for (name, value) in &m.xattrs {
            xattr::set(dst, name, value).map_err(|e| Error::io("set an xattr on", dst, e))?;
        }
    }
    Ok(())
}

/// Creates the missing parent directories of `rel` (mode 0755, owned by the unpacking
/// user: 0:0 as root or under fakeroot), as `tar -x` does.
fn make_parents(root: &Path, rel: &Path) -> Result<()> {
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    let mut dir = root.to_path_buf();
    for c in parent.components() {
        dir.push(c);
        if !dir.is_dir() {
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(&dir)
                .map_err(|e| Error::io("create directory", &dir, e))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| Error::io("set mode of", &dir, e))?;
        }
    }
    Ok(())
}

/// Removes a non-directory at `dst` (a later member replaces an earlier one).
fn replace(dst: &Path) -> Result<()> {
    match dst.symlink_metadata() {
        Ok(m) if !m.is_dir() => std::fs::remove_file(dst).map_err(|e| Error::io("replace", dst, e)),
        _ => Ok(()),
    }
}

/// Writes `size` bytes from `data` to a new file, leaving holes where whole 4 KiB blocks
/// are zero (so sparse files stay sparse and the staging copy stays small).
pub(crate) fn write_sparse(data: &mut dyn Read, dst: &Path, size: u64) -> Result<()> {
    const BLOCK: usize = 4096;
    let mut f = File::create(dst).map_err(|e| Error::io("create", dst, e))?;
    let mut buf = vec![0u8; 64 * BLOCK];
    let mut written = 0u64;
    let skip = i64::try_from(BLOCK).unwrap_or(4096);
    loop {
        let n = read_up_to(data, &mut buf).map_err(|e| Error::io("read", "the tar archive", e))?;
        if n == 0 {
            break;
        }
        for block in buf[..n].chunks(BLOCK) {
            if block.len() == BLOCK && block.iter().all(|&b| b == 0) {
                f.seek(SeekFrom::Current(skip))
                    .map_err(|e| Error::io("seek in", dst, e))?;
            } else {
                f.write_all(block).map_err(|e| Error::io("write", dst, e))?;
            }
        }
        written += n as u64;
    }
    if written != size {
        return Err(Error::invalid(
            "--rootfs-tar",
            format!(
                "member {}: {} of data, the header says {size}",
                dst.display(),
                stele_verifier::plural::count(written, "byte", "bytes")
            ),
        ));
    }
    f.set_len(size).map_err(|e| Error::io("size", dst, e))
}

fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::tests::{archive, pax_archive};
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn unpacks_links_modes_and_holes() {
        use tar::EntryType as T;
        let mut big = vec![0u8; 1 << 20];
        big[5000] = 1;
        let a = archive(&[
            ("etc/passwd", T::Regular, b"root:x:0:0::/root:/bin/sh\n"),
            ("etc/hard", T::Link, b"etc/passwd"),
            ("etc/soft", T::Symlink, b"passwd"),
            ("ro/", T::Directory, b""),
            ("ro/inside", T::Regular, b"x"),
            ("sparse", T::Regular, &big),
        ]);
        let dir = tempfile::tempdir().unwrap();
        unpack(&a[..], dir.path(), false).unwrap();
        let p = dir.path();
        let (m1, m2) = (
            p.join("etc/passwd").metadata().unwrap(),
            p.join("etc/hard").metadata().unwrap(),
        );
        assert_eq!(m1.ino(), m2.ino());
        assert_eq!(m1.mode() & 0o7777, 0o4755);
        assert_eq!(
            std::fs::read_link(p.join("etc/soft")).unwrap(),
            Path::new("passwd")
        );
        assert_eq!(p.join("etc").metadata().unwrap().mode() & 0o777, 0o755);
        let s = p.join("sparse").metadata().unwrap();
        assert_eq!(s.len(), 1 << 20);
        assert!(s.blocks() * 512 <= 64 * 1024, "{} blocks", s.blocks());
        assert_eq!(std::fs::read(p.join("sparse")).unwrap(), big);
    }

    #[test]
    fn unsupported_xattrs_are_refused_unless_dropped() {
        let a = pax_archive(&[("SCHILY.xattr.system.posix_acl_access", b"x")], "f", b"");
        let dir = tempfile::tempdir().unwrap();
        let e = unpack(&a[..], dir.path(), true).unwrap_err();
        assert!(e.to_string().contains("system.posix_acl_access"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        unpack(&a[..], dir.path(), false).unwrap();
    }
}

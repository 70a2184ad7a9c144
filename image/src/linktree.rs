//! A staging tree of a root directory, for adding files to it without touching it or
//! copying it: the same directories (new ones, given the source's owners, modes and
//! xattrs) holding hard links to the very same files, so owners, modes, xattrs, holes and
//! hard-link groups are the source's by construction. A file that cannot be linked
//! (another filesystem, `fs.protected_hardlinks`) is copied with its owner, mode, xattrs
//! and holes, and the members of one hard-link group stay one group.
//!
//! A linked file shares its inode with the source: nothing here ever changes a file's
//! metadata or content, only those of the directories and copies it creates itself.

use std::collections::HashMap;
use std::fs::Metadata;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// How the staging tree was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mirrored {
    /// Non-directories linked to the source.
    pub linked: u64,
    /// Non-directories copied (could not be linked).
    pub copied: u64,
}

/// Fills the existing empty directory `dst` with the tree of `src` (see the module doc),
/// then gives `dst` itself the owner, mode and xattrs of `src`.
pub fn mirror(src: &Path, dst: &Path) -> Result<Mirrored> {
    let mut m = Mirror {
        done: Mirrored::default(),
        copies: HashMap::new(),
    };
    m.dir(src, dst)?;
    let md = src
        .symlink_metadata()
        .map_err(|e| Error::io("read", src, e))?;
    set_meta(src, dst, &md)?;
    Ok(m.done)
}

#[derive(Debug)]
struct Mirror {
    done: Mirrored,
    /// (device, inode) of a copied file with more links -> its copy.
    copies: HashMap<(u64, u64), PathBuf>,
}

impl Mirror {
    fn dir(&mut self, src: &Path, dst: &Path) -> Result<()> {
        let entries = std::fs::read_dir(src).map_err(|e| Error::io("read directory", src, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read directory", src, e))?;
            let (s, d) = (entry.path(), dst.join(entry.file_name()));
            let md = s.symlink_metadata().map_err(|e| Error::io("read", &s, e))?;
            if md.is_dir() {
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&d)
                    .map_err(|e| Error::io("create directory", &d, e))?;
                self.dir(&s, &d)?;
                // Last: a read-only directory of the source must not stop its own entries.
                set_meta(&s, &d, &md)?;
                continue;
            }
            match std::fs::hard_link(&s, &d) {
                Ok(()) => self.done.linked += 1,
                // Another filesystem, or a link the kernel protects: copy it.
                Err(e) if must_copy(&e) => {
                    self.copy(&s, &d, &md)?;
                    self.done.copied += 1;
                }
                Err(e) => return Err(Error::io("hard-link into the staging tree", &s, e)),
            }
        }
        Ok(())
    }

    fn copy(&mut self, s: &Path, d: &Path, md: &Metadata) -> Result<()> {
        let key = (md.dev(), md.ino());
        if let Some(first) = self.copies.get(&key) {
            // The rest of a hard-link group: one more link to the first copy.
            return std::fs::hard_link(first, d).map_err(|e| Error::io("create hard link", d, e));
        }
        let ft = md.file_type();
        if ft.is_file() {
            let mut f = std::fs::File::open(s).map_err(|e| Error::io("open", s, e))?;
            crate::stage::write_sparse(&mut f, d, md.len())?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(s).map_err(|e| Error::io("read symlink", s, e))?;
            std::os::unix::fs::symlink(target, d).map_err(|e| Error::io("create symlink", d, e))?;
        } else if ft.is_char_device() || ft.is_block_device() {
            use nix::sys::stat::{mknod, Mode, SFlag};
            let kind = if ft.is_char_device() {
                SFlag::S_IFCHR
            } else {
                SFlag::S_IFBLK
            };
            mknod(d, kind, Mode::from_bits_truncate(0o600), md.rdev())
                .map_err(|e| Error::io("create device node", d, e.into()))?;
        } else if ft.is_fifo() {
            nix::unistd::mkfifo(d, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| Error::io("create fifo", d, e.into()))?;
        } else {
            return Err(Error::invalid(
                "--rootfs",
                format!(
                    "{} is a socket on another filesystem than the output: put --out on the filesystem of the root directory",
                    s.display()
                ),
            ));
        }
        set_meta(s, d, md)?;
        if md.nlink() > 1 {
            self.copies.insert(key, d.to_path_buf());
        }
        Ok(())
    }
}

/// Linking failed because the staging tree is on another filesystem (EXDEV) or the kernel
/// protects the file from being linked by this user (EPERM): copying it is the way.
fn must_copy(e: &std::io::Error) -> bool {
    use nix::errno::Errno;
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EXDEV | Errno::EPERM)
    )
}

/// Owner, then mode, then the xattrs in the order the source lists them: the order the
/// filesystem tools would have read from the source (chown clears setuid bits and file
/// capabilities, so it comes first).
fn set_meta(s: &Path, d: &Path, md: &Metadata) -> Result<()> {
    std::os::unix::fs::lchown(d, Some(md.uid()), Some(md.gid())).map_err(|e| {
        if e.kind() == ErrorKind::PermissionDenied {
            Error::invalid(
                "--rootfs",
                format!(
                    "cannot give {} its owner {}:{} in the staging tree without root: build as root, from --rootfs-tar (owners without root), or put --out on the filesystem of the root directory",
                    s.display(),
                    md.uid(),
                    md.gid()
                ),
            )
        } else {
            Error::io("set the owner of", d, e)
        }
    })?;
    if !md.file_type().is_symlink() {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(md.mode() & 0o7777))
            .map_err(|e| Error::io("set mode of", d, e))?;
    }
    let names = xattr::list(s).map_err(|e| Error::io("list the xattrs of", s, e))?;
    for name in names {
        let value = xattr::get(s, &name).map_err(|e| Error::io("read an xattr of", s, e))?;
        if let Some(v) = value {
            xattr::set(d, &name, &v).map_err(|e| Error::io("set an xattr on", d, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_files_and_recreates_directories() {
        let t = tempfile::tempdir().unwrap();
        let (src, dst) = (t.path().join("src"), t.path().join("dst"));
        std::fs::create_dir_all(src.join("etc/ro")).unwrap();
        std::fs::write(src.join("etc/a"), "a").unwrap();
        std::fs::hard_link(src.join("etc/a"), src.join("etc/a2")).unwrap();
        std::fs::write(src.join("etc/ro/f"), "f").unwrap();
        std::os::unix::fs::symlink("a", src.join("etc/l")).unwrap();
        std::fs::set_permissions(src.join("etc/ro"), std::fs::Permissions::from_mode(0o555))
            .unwrap();
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o751)).unwrap();
        std::fs::create_dir(&dst).unwrap();
        let m = mirror(&src, &dst).unwrap();
        assert_eq!(
            m,
            Mirrored {
                linked: 4,
                copied: 0
            }
        );
        let ino = |p: &Path| p.symlink_metadata().unwrap().ino();
        for f in ["etc/a", "etc/a2", "etc/ro/f", "etc/l"] {
            assert_eq!(ino(&src.join(f)), ino(&dst.join(f)), "{f}");
        }
        for d in ["", "etc", "etc/ro"] {
            let (a, b) = (
                src.join(d).metadata().unwrap(),
                dst.join(d).metadata().unwrap(),
            );
            assert_ne!(a.ino(), b.ino(), "{d}: a new directory");
            assert_eq!(a.mode(), b.mode(), "{d}");
        }
        std::fs::set_permissions(dst.join("etc/ro"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
    }

    #[test]
    fn copies_keep_holes_links_and_metadata() {
        let t = tempfile::tempdir().unwrap();
        let (src, dst) = (t.path().join("src"), t.path().join("dst"));
        std::fs::create_dir_all(&src).unwrap();
        let mut big = vec![0u8; 1 << 20];
        big[7] = 1;
        std::fs::write(src.join("sparse"), &big).unwrap();
        std::fs::hard_link(src.join("sparse"), src.join("sparse2")).unwrap();
        std::fs::set_permissions(src.join("sparse"), std::fs::Permissions::from_mode(0o4711))
            .unwrap();
        std::os::unix::fs::symlink("sparse", src.join("l")).unwrap();
        nix::unistd::mkfifo(
            &src.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o640),
        )
        .unwrap();
        let _ = xattr::set(src.join("sparse"), "user.stele", b"x");
        std::fs::create_dir(&dst).unwrap();
        // What `mirror` does when linking is refused.
        let mut m = Mirror {
            done: Mirrored::default(),
            copies: HashMap::new(),
        };
        for f in ["sparse", "sparse2", "l", "fifo"] {
            let md = src.join(f).symlink_metadata().unwrap();
            m.copy(&src.join(f), &dst.join(f), &md).unwrap();
        }
        let (a, b) = (
            dst.join("sparse").metadata().unwrap(),
            dst.join("sparse2").metadata().unwrap(),
        );
        assert_eq!(a.ino(), b.ino(), "the hard-link group stays one");
        assert_ne!(a.ino(), src.join("sparse").metadata().unwrap().ino());
        assert_eq!(a.mode() & 0o7777, 0o4711);
        assert!(a.blocks() * 512 <= 64 * 1024, "holes kept: {}", a.blocks());
        assert_eq!(std::fs::read(dst.join("sparse")).unwrap(), big);
        assert_eq!(
            std::fs::read_link(dst.join("l")).unwrap(),
            Path::new("sparse")
        );
        let fifo = dst.join("fifo").symlink_metadata().unwrap();
        assert!(fifo.file_type().is_fifo());
        assert_eq!(fifo.mode() & 0o777, 0o640);
        assert_eq!(
            xattr::get(dst.join("sparse"), "user.stele").unwrap(),
            xattr::get(src.join("sparse"), "user.stele").unwrap()
        );
    }
}

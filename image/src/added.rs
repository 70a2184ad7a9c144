//! Files `stele image build` adds to the root tree, one mechanism for all of them: the
//! slot's kernel and stage-2 initramfs (`--kernel --initrd`, described by
//! [`SlotKernel`]) and the fetch client (`--fetch-client`, at
//! `verifier::layout::FETCH_CLIENT`). A `--rootfs` directory is never changed: the files go
//! into a staging tree of hard links to it ([`crate::linktree`], made by
//! [`crate::slot::build_from_root`]); a `--rootfs-tar` archive's staging directory gets
//! them after it is unpacked ([`crate::stage`]). Each added file is a new regular file
//! owned by 0:0 with its own mode, checked against the size and sha256 taken when the
//! build started; directories made on the way are 0755 owned by 0:0.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use stele_verifier::manifest::{KernelFile, KernelInfo};

use crate::{Error, Result};

/// One file to add: its source, where it goes in the tree, its mode and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddedFile {
    pub src: PathBuf,
    /// Absolute path inside the tree.
    pub path: String,
    pub mode: u32,
    pub size: u64,
    pub sha256: [u8; 32],
    /// The option that names the file, for messages (`--kernel/--initrd`).
    pub option: &'static str,
}

impl AddedFile {
    /// The fetch client `src` (a regular file), at its fixed path, mode 0755.
    pub fn fetch_client(src: &Path) -> Result<AddedFile> {
        let md = std::fs::metadata(src).map_err(|e| Error::io("read", src, e))?;
        if !md.is_file() {
            return Err(Error::invalid(
                "--fetch-client",
                format!("{} is not a regular file", src.display()),
            ));
        }
        let (size, sha256) = digest(src)?;
        Ok(AddedFile {
            src: src.to_path_buf(),
            path: stele_verifier::layout::FETCH_CLIENT.to_string(),
            mode: 0o755,
            size,
            sha256,
            option: "--fetch-client",
        })
    }
}

/// Everything a build adds to the root tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Additions {
    /// The slot's kernel and initrd (also named by the manifest's `[kernel]` table).
    pub kernel: Option<SlotKernel>,
    pub fetch_client: Option<AddedFile>,
}

impl Additions {
    /// The files, in the order they are placed.
    pub fn files(&self) -> Vec<AddedFile> {
        let mut v: Vec<AddedFile> = self.kernel.iter().flat_map(SlotKernel::files).collect();
        v.extend(self.fetch_client.iter().cloned());
        v
    }
}

/// What a root tree holds at the added files' paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Present {
    /// None of the files: all go in.
    None,
    /// Some of them already, byte for byte: the others go in.
    Some,
    /// All of them already, byte for byte (or there are none): nothing to add.
    All,
}

/// Size and sha256 of a file, reading it once.
pub(crate) fn digest(path: &Path) -> Result<(u64, [u8; 32])> {
    let mut f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut h = Sha256::new();
    let n = std::io::copy(&mut f, &mut h).map_err(|e| Error::io("read", path, e))?;
    Ok((n, h.finalize().into()))
}

/// `root` + an absolute path inside it.
fn inside(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// Refuses a tree that holds anything but directories on the way to the files' paths,
/// or at those paths anything but a regular file with the very bytes to be added.
pub fn check_tree(root: &Path, files: &[AddedFile]) -> Result<Present> {
    let mut present = 0;
    for f in files {
        let mut at = root.to_path_buf();
        let parts: Vec<&str> = f.path.trim_start_matches('/').split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            at.push(part);
            let md = match at.symlink_metadata() {
                Ok(md) => md,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => return Err(Error::io("read", &at, e)),
            };
            let last = i + 1 == parts.len();
            let ok = if last {
                md.is_file() && md.len() == f.size && digest(&at)?.1 == f.sha256
            } else {
                md.is_dir()
            };
            if !ok {
                let what = if last {
                    "another file"
                } else {
                    "not a directory"
                };
                return Err(Error::invalid(
                    f.option,
                    format!(
                        "the root tree already has {} at {} ({what}): remove it, or leave out {}",
                        at.display(),
                        f.path,
                        f.option
                    ),
                ));
            }
            if last {
                present += 1;
            }
        }
    }
    Ok(match present {
        _ if present == files.len() => Present::All,
        0 => Present::None,
        _ => Present::Some,
    })
}

/// Writes `files` into the staging tree `root` at their paths, unless the tree has them
/// already ([`check_tree`] first), hashing each copy: a file that changed since its
/// [`AddedFile`] was made is an error.
pub fn place(root: &Path, files: &[AddedFile]) -> Result<()> {
    check_tree(root, files)?;
    for f in files {
        let dst = inside(root, &f.path);
        if dst.symlink_metadata().is_ok() {
            continue;
        }
        if let Some(parent) = dst.parent() {
            make_dirs(root, parent, f.option)?;
        }
        let src = &f.src;
        let mut from = File::open(src).map_err(|e| Error::io("open", src, e))?;
        // A new file: never an inode the tree shares with the source.
        let mut to = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(f.mode)
            .open(&dst)
            .map_err(|e| Error::io("create", &dst, e))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let k = from.read(&mut buf).map_err(|e| Error::io("read", src, e))?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            to.write_all(&buf[..k])
                .map_err(|e| Error::io("write", &dst, e))?;
            n += k as u64;
        }
        if n != f.size || <[u8; 32]>::from(h.finalize()) != f.sha256 {
            return Err(Error::invalid(
                f.option,
                format!("{} changed while the image was built", src.display()),
            ));
        }
        own_root(&dst, f.mode, f.option)?;
    }
    Ok(())
}

/// The missing directories from `root` down to `dir`, each 0755 owned by 0:0.
fn make_dirs(root: &Path, dir: &Path, option: &'static str) -> Result<()> {
    let rel = dir.strip_prefix(root).unwrap_or(dir);
    let mut at = root.to_path_buf();
    for c in rel.components() {
        at.push(c);
        if at.symlink_metadata().is_err() {
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(&at)
                .map_err(|e| Error::io("create directory", &at, e))?;
            own_root(&at, 0o755, option)?;
        }
    }
    Ok(())
}

/// Owner 0:0 and `mode` (root, or fakeroot's root, can; anyone else is told how).
fn own_root(p: &Path, mode: u32, option: &'static str) -> Result<()> {
    std::os::unix::fs::lchown(p, Some(0), Some(0)).map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            Error::invalid(
                option,
                "the files stele adds are owned by 0:0 in the image, which needs root: build as root, or from --rootfs-tar (owners without root)",
            )
        } else {
            Error::io("set the owner of", p, e)
        }
    })?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("set mode of", p, e))
}

/// `--kernel`, `--initrd` and `--kernel-cmdline`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelInput {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
}

/// The input files with the `[kernel]` table that describes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotKernel {
    pub input: KernelInput,
    pub info: KernelInfo,
}

impl KernelInput {
    /// Reads both files: the `[kernel]` table for them at the default paths, checked by
    /// the manifest's own rules (`KernelInfo::check`).
    pub fn describe(self) -> Result<SlotKernel> {
        let info = KernelInfo::at_default_paths(
            digest(&self.kernel)?,
            digest(&self.initrd)?,
            self.cmdline.clone(),
        );
        // The manifest's rules, named by the option that gave the value.
        info.check().map_err(|e| match e {
            stele_verifier::Error::Invalid { what, why } => {
                let option = if what.ends_with("cmdline") {
                    "--kernel-cmdline"
                } else if what.contains("initrd") {
                    "--initrd"
                } else {
                    "--kernel"
                };
                Error::invalid(option, why)
            }
            e => e.into(),
        })?;
        Ok(SlotKernel { input: self, info })
    }
}

impl SlotKernel {
    /// The kernel and initrd as files the build adds to the root tree (mode 0644).
    pub fn files(&self) -> [AddedFile; 2] {
        let file = |src: &Path, f: &KernelFile| AddedFile {
            src: src.to_path_buf(),
            path: f.path.clone(),
            mode: 0o644,
            size: f.size,
            sha256: f.sha256,
            option: "--kernel/--initrd",
        };
        [
            file(&self.input.kernel, &self.info.kernel),
            file(&self.input.initrd, &self.info.initrd),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn the_fetch_client_goes_in_with_mode_0755_beside_the_kernel() {
        let t = tempfile::tempdir().unwrap();
        let client = t.path().join("stele-fetch");
        std::fs::write(&client, b"\x7fELF client").unwrap();
        let adds = Additions {
            kernel: None,
            fetch_client: Some(AddedFile::fetch_client(&client).unwrap()),
        };
        let files = adds.files();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("usr")).unwrap();
        assert_eq!(check_tree(&root, &files).unwrap(), Present::None);
        place(&root, &files).unwrap();
        assert_eq!(check_tree(&root, &files).unwrap(), Present::All);
        let at = root.join("usr/lib/stele/stele-fetch");
        assert_eq!(std::fs::read(&at).unwrap(), b"\x7fELF client");
        assert_eq!(at.metadata().unwrap().mode() & 0o7777, 0o755);
        assert_eq!(
            root.join("usr/lib/stele").metadata().unwrap().mode() & 0o777,
            0o755
        );
        assert_eq!(
            check_tree(&root, &[]).unwrap(),
            Present::All,
            "nothing to add"
        );
        // A directory is not a fetch client.
        assert!(matches!(
            AddedFile::fetch_client(t.path()),
            Err(Error::Invalid {
                what: "--fetch-client",
                ..
            })
        ));
        // Another file at the path is refused, naming the option.
        std::fs::write(&at, b"other").unwrap();
        let e = check_tree(&root, &files).unwrap_err();
        assert!(e.to_string().contains("--fetch-client"), "{e}");
    }
}

#[cfg(test)]
mod kernel_tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::fs::PermissionsExt;

    fn input(dir: &Path) -> KernelInput {
        std::fs::write(dir.join("vmlinuz"), b"kernel").unwrap();
        std::fs::write(dir.join("initrd"), b"initrd!").unwrap();
        KernelInput {
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd"),
            cmdline: "console=ttyS0".into(),
        }
    }

    #[test]
    fn describes_both_files_at_the_default_paths() {
        let t = tempfile::tempdir().unwrap();
        let i = input(t.path());
        let k = i.clone().describe().unwrap().info;
        assert_eq!(k.kernel.path, "/boot/stele/vmlinuz");
        assert_eq!((k.kernel.size, k.initrd.size), (6, 7));
        assert_eq!(k.kernel.sha256, <[u8; 32]>::from(Sha256::digest(b"kernel")));
        let bad = KernelInput {
            cmdline: "stele.stage2=a".into(),
            ..i.clone()
        };
        assert!(matches!(
            bad.describe(),
            Err(Error::Invalid {
                what: "--kernel-cmdline",
                ..
            })
        ));
        std::fs::write(&i.initrd, b"").unwrap();
        assert!(i.describe().is_err(), "an empty initrd");
    }

    #[test]
    fn places_files_and_refuses_other_files_at_their_paths() {
        let t = tempfile::tempdir().unwrap();
        let sk = input(t.path()).describe().unwrap();
        let k = &sk.files();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("boot")).unwrap();
        std::fs::set_permissions(root.join("boot"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        assert_eq!(check_tree(&root, k).unwrap(), Present::None);
        place(&root, &sk.files()).unwrap();
        assert_eq!(check_tree(&root, k).unwrap(), Present::All);
        let md = |p: &str| root.join(p).metadata().unwrap();
        assert_eq!(
            md("boot").mode() & 0o777,
            0o700,
            "an existing directory is kept"
        );
        assert_eq!(md("boot/stele").mode() & 0o777, 0o755);
        assert_eq!(md("boot/stele/vmlinuz").mode() & 0o7777, 0o644);
        assert_eq!(
            std::fs::read(root.join("boot/stele/initrd")).unwrap(),
            b"initrd!"
        );
        // Already there with the same bytes: nothing to do, no error.
        place(&root, &sk.files()).unwrap();
        // A different file, a symlink, a file where a directory must be: refused.
        std::fs::write(root.join("boot/stele/initrd"), b"other").unwrap();
        assert!(check_tree(&root, k).is_err());
        std::fs::remove_file(root.join("boot/stele/initrd")).unwrap();
        assert_eq!(check_tree(&root, k).unwrap(), Present::Some);
        std::os::unix::fs::symlink("vmlinuz", root.join("boot/stele/initrd")).unwrap();
        assert!(check_tree(&root, k).is_err());
        let flat = t.path().join("flat");
        std::fs::create_dir_all(&flat).unwrap();
        std::fs::write(flat.join("boot"), b"").unwrap();
        let e = check_tree(&flat, k).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        // A kernel that changed after it was described.
        let other = t.path().join("other");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(&sk.input.kernel, b"KERNEL").unwrap();
        let e = place(&other, &sk.files()).unwrap_err();
        assert!(e.to_string().contains("changed"), "{e}");
    }
}

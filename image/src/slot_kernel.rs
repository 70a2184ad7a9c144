//! The slot's own kernel and stage-2 initramfs (`stele image build --kernel --initrd
//! [--kernel-cmdline]`): described for the manifest's `[kernel]` table (sizes, sha256,
//! the default paths); [`crate::added`] checks them against what the root tree already
//! holds at those paths and places them into the staging tree (owner 0:0, mode 0644).

use std::path::{Path, PathBuf};

use stele_verifier::manifest::{KernelFile, KernelInfo};

use crate::added::{digest, AddedFile};
use crate::{Error, Result};

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
    use crate::added::{check_tree, place, Present};
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

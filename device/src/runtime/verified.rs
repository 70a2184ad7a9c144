//! Reading the files PID 1 and the updater trust (verifier::layout::TRUSTED) from the
//! verified lower layer (`/run/stele/lower`) after switch root: relative to a directory fd
//! of it, with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so a symlink of the image
//! resolves inside the image or not at all, never into the overlay or the data partition.
//! Before opening, the path is checked with the build's own rule
//! (stele_verifier::resolve::check_trusted): a link that would lead out of the image or
//! into a directory the device writes refuses the file with one line naming the link.
//!
//! No `unsafe`: rustix's `openat2`, `statat` and `readlinkat` return owned descriptors and
//! plain values (nix 0.29's `openat2` returns a raw fd, which needs `unsafe` to own).

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::runtime::keyring::{KeyringError, Skipped, KEY_EXTENSIONS};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use stele_verifier::exit::{Exit, Report};
use stele_verifier::keys::{parse_public_key, Keyring};
use stele_verifier::resolve::{
    check_all_trusted, check_trusted, writable_dirs, LinkOut, Node, Tree,
};

/// Largest trusted file read into memory (system.toml, /etc/passwd, a key).
pub const MAX_TRUSTED_LEN: u64 = 4 << 20;

/// Why a trusted file of the verified layer was not read.
#[derive(Debug, thiserror::Error)]
pub enum VerifiedError {
    /// A link on the way leads out of the verified image.
    #[error("refused {}: {out}", lower.display())]
    LinkOut { lower: PathBuf, out: LinkOut },
    /// It is there but is not a regular file (a directory, device, FIFO or socket).
    #[error("refused {}: not a regular file of the image", path.display())]
    NotAFile { path: PathBuf },
    /// It is larger than [`MAX_TRUSTED_LEN`].
    #[error("refused {}: larger than {MAX_TRUSTED_LEN} bytes", path.display())]
    TooLarge { path: PathBuf },
    /// The lower layer or the file cannot be opened or read.
    #[error("cannot read {} in the verified layer: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Report for VerifiedError {
    /// What the image contains is the image's fault (it was built past the check, or by
    /// hand); an unreadable layer is the device's.
    fn exit(&self) -> Exit {
        match self {
            VerifiedError::Io { .. } => Exit::Environment,
            _ => Exit::Refused,
        }
    }
}

/// The verified lower layer, opened once as a directory.
#[derive(Debug)]
pub struct Lower {
    dir: OwnedFd,
    path: PathBuf,
    data_mount: String,
}

impl Lower {
    /// Opens the lower layer at `path`; `data_mount` is boot.toml's, the data partition's
    /// mount point (a trusted file linked there is refused like one linked into /var).
    pub fn open(path: &Path, data_mount: &str) -> Result<Lower, VerifiedError> {
        let dir = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| VerifiedError::Io {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        Ok(Lower {
            dir,
            path: path.to_path_buf(),
            data_mount: data_mount.to_string(),
        })
    }

    /// Checks every trusted file of the image (verifier::layout::TRUSTED and the entries
    /// of TRUSTED_DIRS) with the build's rule, as `stele image build` does: PID 1 runs
    /// nothing from an image that the build would have refused.
    pub fn check_all(&self) -> Result<(), VerifiedError> {
        let out =
            check_all_trusted(self, &self.data_mount).map_err(|source| VerifiedError::Io {
                path: self.path.clone(),
                source,
            })?;
        match out {
            Some(out) => Err(VerifiedError::LinkOut {
                lower: self.show(&out.path),
                out,
            }),
            None => Ok(()),
        }
    }

    /// Where `path` (absolute in the image) is under the lower layer, for messages.
    pub fn show(&self, path: &str) -> PathBuf {
        self.path.join(path.trim_start_matches('/'))
    }

    /// Opens the trusted regular file `path` (absolute in the image, one of
    /// verifier::layout::TRUSTED or below one) read-only: `None` when the image has none.
    pub fn open_file(&self, path: &str) -> Result<Option<File>, VerifiedError> {
        let writable = writable_dirs(&self.data_mount);
        let io_err = |source: io::Error| VerifiedError::Io {
            path: self.show(path),
            source,
        };
        if let Some(out) = check_trusted(self, path, &writable).map_err(io_err)? {
            return Err(VerifiedError::LinkOut {
                lower: self.show(path),
                out,
            });
        }
        let fd = match rustix::fs::openat2(
            &self.dir,
            path,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => return Err(io_err(e.into())),
        };
        let f = File::from(fd);
        if !f.metadata().map_err(io_err)?.is_file() {
            return Err(VerifiedError::NotAFile {
                path: self.show(path),
            });
        }
        Ok(Some(f))
    }

    /// The bytes of the trusted file `path`; `None` when the image has none.
    pub fn read(&self, path: &str) -> Result<Option<Vec<u8>>, VerifiedError> {
        match self.open_file(path)? {
            Some(f) => self.read_open(f, path).map(Some),
            None => Ok(None),
        }
    }

    /// The bytes of `f`, the trusted file `path` opened by [`Lower::open_file`].
    fn read_open(&self, f: File, path: &str) -> Result<Vec<u8>, VerifiedError> {
        let mut bytes = Vec::new();
        f.take(MAX_TRUSTED_LEN + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| VerifiedError::Io {
                path: self.show(path),
                source,
            })?;
        if bytes.len() as u64 > MAX_TRUSTED_LEN {
            return Err(VerifiedError::TooLarge {
                path: self.show(path),
            });
        }
        Ok(bytes)
    }

    /// The names in the trusted directory `dir` (absolute in the image), sorted; `None`
    /// when the image has no such directory.
    pub fn list(&self, dir: &str) -> Result<Option<Vec<String>>, VerifiedError> {
        let io_err = |source: io::Error| VerifiedError::Io {
            path: self.show(dir),
            source,
        };
        let writable = writable_dirs(&self.data_mount);
        if let Some(out) = check_trusted(self, dir, &writable).map_err(io_err)? {
            return Err(VerifiedError::LinkOut {
                lower: self.show(dir),
                out,
            });
        }
        let fd = match rustix::fs::openat2(
            &self.dir,
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => return Err(io_err(e.into())),
        };
        let mut names = names_in(&fd).map_err(io_err)?;
        names.sort();
        Ok(Some(names))
    }
}

/// The names in the open directory `fd`, without `.` and `..`.
fn names_in(fd: &OwnedFd) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(fd)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name != "." && name != ".." {
            names.push(name);
        }
    }
    Ok(names)
}

/// The lower layer as a tree for the shared link rule: `lstat` and `readlink` relative to
/// its directory fd (the paths [`stele_verifier::resolve::resolve`] asks for hold no link
/// before their last component).
impl Tree for Lower {
    fn lstat(&self, path: &str) -> io::Result<Option<Node>> {
        let rel = match path.trim_start_matches('/') {
            "" => ".",
            p => p,
        };
        let st = match rustix::fs::statat(&self.dir, rel, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(Some(match FileType::from_raw_mode(st.st_mode) {
            FileType::Symlink => {
                let target = rustix::fs::readlinkat(&self.dir, rel, Vec::new())?;
                Node::Symlink(target.to_string_lossy().into_owned())
            }
            FileType::Directory => Node::Dir,
            FileType::RegularFile => Node::File {
                mode: st.st_mode & 0o7777,
            },
            _ => Node::Other,
        }))
    }

    fn list(&self, path: &str) -> io::Result<Vec<String>> {
        let rel = match path.trim_start_matches('/') {
            "" => ".",
            p => p,
        };
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        names_in(&rustix::fs::openat(&self.dir, rel, flags, Mode::empty())?)
    }

    fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        match Lower::read(self, path) {
            Ok(Some(b)) => Ok(b),
            Ok(None) => Err(io::ErrorKind::NotFound.into()),
            Err(e) => Err(io::Error::other(e.to_string())),
        }
    }
}

impl Lower {
    /// The keyring of the trusted key directory `dir` (absolute in the image), read as
    /// crate::runtime::keyring reads a key directory (regular files named `*.pem` or `*.pub`, sorted;
    /// other regular files go to `skipped`, other entries pass without a word), every file
    /// opened inside the verified image.
    pub fn keyring(
        &self,
        dir: &str,
        threshold: usize,
        skipped: &mut dyn FnMut(Skipped),
    ) -> crate::Result<Keyring> {
        let shown = self.show(dir);
        let Some(names) = self.list(dir)? else {
            return Err(crate::Error::ChannelKeys(KeyringError::ReadDir {
                dir: shown,
                source: io::ErrorKind::NotFound.into(),
            }));
        };
        let mut keys = Vec::new();
        for name in names {
            let path = format!("{}/{name}", dir.trim_end_matches('/'));
            let f = match self.open_file(&path) {
                Ok(Some(f)) => f,
                Ok(None) | Err(VerifiedError::NotAFile { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let named = Path::new(&name)
                .extension()
                .is_some_and(|x| KEY_EXTENSIONS.iter().any(|k| x == *k));
            if !named {
                skipped(Skipped {
                    path: self.show(&path),
                });
                continue;
            }
            let bytes = self.read_open(f, &path)?;
            let key = parse_public_key(&bytes, &self.show(&path).display().to_string())
                .map_err(|e| crate::Error::ChannelKeys(KeyringError::Key(e)))?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(crate::Error::ChannelKeys(KeyringError::EmptyDir {
                dir: shown,
            }));
        }
        Keyring::new(keys, threshold)
            .map_err(|e| crate::Error::ChannelKeys(KeyringError::Threshold(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use stele_verifier::keys::public_pem;
    use stele_verifier::testutil::key;

    /// A lower layer: etc/passwd, etc/group, etc/stele, usr/share.
    fn lower() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for dir in ["etc/stele/channel-keys", "usr/share", "var/lib"] {
            std::fs::create_dir_all(r.join(dir)).unwrap();
        }
        std::fs::write(r.join("etc/passwd"), "web:x:33:33::/:/bin/false\n").unwrap();
        std::fs::write(r.join("usr/share/system.toml"), "exec = [\"/sbin/init\"]\n").unwrap();
        d
    }

    /// The attack: `/etc/stele/system.toml -> /var/lib/x/system.toml`, where the
    /// data partition is mounted on the device. Refused, naming the link.
    #[test]
    fn system_toml_linked_into_var_is_refused_not_read() {
        let d = lower();
        symlink(
            "/var/lib/x/system.toml",
            d.path().join("etc/stele/system.toml"),
        )
        .unwrap();
        let l = Lower::open(d.path(), "/var").unwrap();
        let e = l.read(SYSTEM).unwrap_err();
        assert!(matches!(e, VerifiedError::LinkOut { .. }), "{e}");
        assert_eq!(e.exit(), Exit::Refused);
        let msg = e.to_string();
        assert!(
            msg.contains("/etc/stele/system.toml -> /var/lib/x/system.toml, into /var"),
            "{msg}"
        );
        // The same through a linked directory, and into a data mount elsewhere.
        let d = lower();
        std::fs::remove_dir_all(d.path().join("etc/stele")).unwrap();
        symlink("/srv/data/stele", d.path().join("etc/stele")).unwrap();
        assert!(Lower::open(d.path(), "/var")
            .unwrap()
            .read(SYSTEM)
            .unwrap()
            .is_none());
        let e = Lower::open(d.path(), "/srv/data")
            .unwrap()
            .read(SYSTEM)
            .unwrap_err();
        assert!(e.to_string().contains("into /srv/data"), "{e}");
    }

    const SYSTEM: &str = stele_verifier::layout::SYSTEM_TOML;

    /// A link that stays inside the image is followed inside it; an absolute one never
    /// reaches the host's (or the device overlay's) file of that name.
    #[test]
    fn links_resolve_inside_the_lower_layer_only() {
        let d = lower();
        symlink(
            "../../usr/share/system.toml",
            d.path().join("etc/stele/system.toml"),
        )
        .unwrap();
        let l = Lower::open(d.path(), "/var").unwrap();
        assert_eq!(
            l.read(SYSTEM).unwrap().unwrap(),
            b"exec = [\"/sbin/init\"]\n"
        );
        // /etc/hostname exists on the host, not in this lower layer.
        let d = lower();
        std::fs::remove_file(d.path().join("etc/passwd")).unwrap();
        symlink("/etc/hostname", d.path().join("etc/passwd")).unwrap();
        let l = Lower::open(d.path(), "/var").unwrap();
        assert_eq!(l.read("/etc/passwd").unwrap(), None);
        assert_eq!(l.read("/etc/group").unwrap(), None);
        // A directory where a file is trusted is refused, not read as empty.
        let e = l.read("/etc/stele").unwrap_err();
        assert!(matches!(e, VerifiedError::NotAFile { .. }), "{e}");
    }

    #[test]
    fn channel_keys_are_read_inside_the_image_and_a_key_linked_out_is_refused() {
        let d = lower();
        let keys = d.path().join("etc/stele/channel-keys");
        std::fs::write(keys.join("a.pem"), public_pem(&key(1).verifying_key())).unwrap();
        std::fs::write(keys.join("README"), "not a key").unwrap();
        std::fs::create_dir(keys.join("old.pem")).unwrap();
        let l = Lower::open(d.path(), "/var").unwrap();
        let mut skipped = Vec::new();
        let ring = l
            .keyring(CHANNEL_KEYS, 1, &mut |s| skipped.push(s.path))
            .unwrap();
        assert_eq!(ring.ids().len(), 1);
        assert_eq!(skipped, [keys.join("README")]);
        symlink("/var/lib/keys/b.pem", keys.join("b.pem")).unwrap();
        let e = l.keyring(CHANNEL_KEYS, 1, &mut |_| {}).unwrap_err();
        assert!(
            e.to_string()
                .contains("/etc/stele/channel-keys/b.pem -> /var/lib/keys/b.pem"),
            "{e}"
        );
        std::fs::remove_dir_all(&keys).unwrap();
        let e = l.keyring(CHANNEL_KEYS, 1, &mut |_| {}).unwrap_err();
        assert!(matches!(e, crate::Error::ChannelKeys(_)), "{e}");
    }

    const CHANNEL_KEYS: &str = stele_verifier::layout::CHANNEL_KEYS_DIR;

    /// What PID 1 checks before it reads anything: the build's whole rule, down to one key
    /// of the channel-key directory and the fetch client.
    #[test]
    fn the_whole_image_is_checked_as_the_build_checks_it() {
        let d = lower();
        let l = Lower::open(d.path(), "/var").unwrap();
        l.check_all().unwrap();
        let keys = d.path().join("etc/stele/channel-keys");
        std::fs::write(keys.join("a.pem"), "key").unwrap();
        symlink("/run/keys/b.pem", keys.join("b.pem")).unwrap();
        let e = l.check_all().unwrap_err();
        assert!(
            e.to_string().contains(
                "/etc/stele/channel-keys/b.pem -> /run/keys/b.pem, into /run, which the device writes"
            ),
            "{e}"
        );
        std::fs::remove_file(keys.join("b.pem")).unwrap();
        std::fs::create_dir_all(d.path().join("usr/lib/stele")).unwrap();
        symlink(
            "../../../../tmp/f",
            d.path().join("usr/lib/stele/stele-fetch"),
        )
        .unwrap();
        let e = l.check_all().unwrap_err();
        assert!(e.to_string().contains("which leaves the image"), "{e}");
        assert_eq!(e.exit(), Exit::Refused);
    }
}

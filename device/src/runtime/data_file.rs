//! Files stele keeps on the data partition (the channel state `lib/stele/channel.toml`
//! with the rollout seed, and its temporary file), opened as data: whoever can write the
//! data partition can plant a symlink, FIFO or device at these names, so no link is
//! followed (`O_NOFOLLOW` on the file, its directory opened `O_DIRECTORY | O_NOFOLLOW`), no
//! open waits on a FIFO (`O_NONBLOCK`), only a regular file is read, and a write goes to a
//! fresh temporary file (`O_CREAT | O_EXCL | O_NOFOLLOW`), fsync, rename within the
//! directory's fd, fsync of the directory. Anything else is one error naming the file, what
//! is there and the fix.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags};
use stele_verifier::exit::{Exit, Report};

/// Largest data-partition file read (the channel state is a few hundred bytes).
pub const MAX_DATA_LEN: u64 = 1 << 20;

/// What was found where a regular file was expected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Symlink,
    Fifo,
    Device,
    Socket,
    Dir,
}

impl Kind {
    fn of(ft: std::fs::FileType) -> Option<Kind> {
        use std::os::unix::fs::FileTypeExt;
        Some(if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_block_device() || ft.is_char_device() {
            Kind::Device
        } else if ft.is_socket() {
            Kind::Socket
        } else if ft.is_dir() {
            Kind::Dir
        } else {
            return None;
        })
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Symlink => "a symbolic link",
            Kind::Fifo => "a FIFO",
            Kind::Device => "a device node",
            Kind::Socket => "a socket",
            Kind::Dir => "a directory",
        })
    }
}

/// Why a data-partition file was not read or written.
#[derive(Debug, thiserror::Error)]
pub enum DataFileError {
    /// Something other than a regular file (or a directory, for the directory) is there.
    #[error("{} is {kind}, not a {}: stele follows no link and opens nothing but {} on the data partition (remove it; stele writes a new one)", path.display(), if *dir { "directory" } else { "regular file" }, if *dir { "directories" } else { "regular files" })]
    NotRegular {
        path: PathBuf,
        kind: Kind,
        dir: bool,
    },
    /// The file is larger than [`MAX_DATA_LEN`].
    #[error("{} is larger than {MAX_DATA_LEN} bytes: not a file stele wrote (remove it)", path.display())]
    TooLarge { path: PathBuf },
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Report for DataFileError {
    fn exit(&self) -> Exit {
        Exit::Environment
    }
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl Fn(rustix::io::Errno) -> DataFileError + 'a {
    move |e| DataFileError::Io {
        op,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// What is at `name` in `dir`, not following a link (for the error of a refused open).
fn kind_at(dir: &OwnedFd, name: &str) -> Option<Kind> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
    use rustix::fs::FileType as T;
    match T::from_raw_mode(st.st_mode) {
        T::Symlink => Some(Kind::Symlink),
        T::Fifo => Some(Kind::Fifo),
        T::BlockDevice | T::CharacterDevice => Some(Kind::Device),
        T::Socket => Some(Kind::Socket),
        T::Directory => Some(Kind::Dir),
        _ => None,
    }
}

/// Opens the directory of `path` without following a link at its last component, creating
/// it (and its parents, as `mkdir -p`) when `create`; `None` when it is missing.
fn open_dir(path: &Path, create: bool) -> Result<Option<OwnedFd>, DataFileError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    if create {
        std::fs::create_dir_all(dir).map_err(|source| DataFileError::Io {
            op: "create the directory",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::open(dir, flags, Mode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR) => {
            let kind = std::fs::symlink_metadata(dir)
                .ok()
                .and_then(|m| Kind::of(m.file_type()))
                .unwrap_or(Kind::Symlink);
            Err(DataFileError::NotRegular {
                path: dir.to_path_buf(),
                kind,
                dir: true,
            })
        }
        Err(e) => Err(io("open the directory", dir)(e)),
    }
}

fn name_of(path: &Path) -> Result<&str, DataFileError> {
    path.file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| DataFileError::Io {
            op: "open",
            path: path.to_path_buf(),
            source: io::ErrorKind::InvalidInput.into(),
        })
}

/// Reads the regular file `path` on the data partition; `None` when nothing is there.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, DataFileError> {
    let Some(dir) = open_dir(path, false)? else {
        return Ok(None);
    };
    let name = name_of(path)?;
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(&dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => {
            return Err(match kind_at(&dir, name) {
                Some(kind) => DataFileError::NotRegular {
                    path: path.to_path_buf(),
                    kind,
                    dir: false,
                },
                None => io("open", path)(e),
            })
        }
    };
    let f = File::from(fd);
    let md = f.metadata().map_err(|source| DataFileError::Io {
        op: "stat",
        path: path.to_path_buf(),
        source,
    })?;
    if let Some(kind) = Kind::of(md.file_type()) {
        return Err(DataFileError::NotRegular {
            path: path.to_path_buf(),
            kind,
            dir: false,
        });
    }
    let mut bytes = Vec::new();
    f.take(MAX_DATA_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| DataFileError::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > MAX_DATA_LEN {
        return Err(DataFileError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(Some(bytes))
}

/// Replaces `path` on the data partition by `bytes`, atomically: a new temporary file
/// `.NAME.tmp-PID` beside it (`O_CREAT | O_EXCL | O_NOFOLLOW`: whatever an attacker planted
/// at that name is refused, never followed; a stale one of ours is removed first), fsync,
/// rename over `path` (which replaces a link there, never follows it), fsync of the
/// directory. The directory is created when missing.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataFileError> {
    let Some(dir) = open_dir(path, true)? else {
        return Err(io("open the directory", path)(rustix::io::Errno::NOENT));
    };
    let name = name_of(path)?;
    if kind_at(&dir, name) == Some(Kind::Dir) {
        return Err(DataFileError::NotRegular {
            path: path.to_path_buf(),
            kind: Kind::Dir,
            dir: false,
        });
    }
    let tmp = format!(".{name}.tmp-{}", std::process::id());
    let tmp_path = path.with_file_name(&tmp);
    // A leftover of an earlier process with our pid, or a planted entry: unlinking removes
    // a link itself, never its target. A directory there is refused by the create below.
    let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd =
        rustix::fs::openat(&dir, tmp.as_str(), flags, Mode::from_raw_mode(0o644)).map_err(|e| {
            match kind_at(&dir, &tmp) {
                Some(kind) => DataFileError::NotRegular {
                    path: tmp_path.clone(),
                    kind,
                    dir: false,
                },
                None => io("create", &tmp_path)(e),
            }
        })?;
    let written = (|| {
        let mut f = File::from(fd);
        f.write_all(bytes).map_err(|source| DataFileError::Io {
            op: "write",
            path: tmp_path.clone(),
            source,
        })?;
        f.sync_all().map_err(|source| DataFileError::Io {
            op: "fsync",
            path: tmp_path.clone(),
            source,
        })?;
        rustix::fs::renameat(&dir, tmp.as_str(), &dir, name).map_err(io("rename over", path))?;
        rustix::fs::fsync(&dir).map_err(io("fsync the directory of", path))
    })();
    if written.is_err() {
        let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
    }
    written
}

/// Opens the directory `dir` on the data partition (creating it, as `mkdir -p`; its last
/// component is not followed if it is a link) and takes an exclusive lock on it, waiting
/// for another process that holds it; the lock lasts as long as the returned descriptor.
pub fn lock_dir(dir: &Path) -> Result<OwnedFd, DataFileError> {
    // open_dir opens the parent of the path it is given: a name inside `dir`.
    let fd = open_dir(&dir.join("lock"), true)?
        .ok_or_else(|| io("open the directory", dir)(rustix::io::Errno::NOENT))?;
    rustix::fs::flock(&fd, rustix::fs::FlockOperation::LockExclusive)
        .map_err(io("lock the directory", dir))?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn state_dir() -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("lib/stele/channel.toml");
        (d, p)
    }

    #[test]
    fn a_state_file_is_written_and_read_back_and_missing_is_none() {
        let (_d, p) = state_dir();
        assert_eq!(read(&p).unwrap(), None);
        write_atomic(&p, b"sequence = 1\n").unwrap();
        assert_eq!(read(&p).unwrap().unwrap(), b"sequence = 1\n");
        write_atomic(&p, b"sequence = 2\n").unwrap();
        assert_eq!(read(&p).unwrap().unwrap(), b"sequence = 2\n");
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["channel.toml"], "no temporary file is left");
    }

    /// A FIFO at channel.toml hung `stele update check` (the open waited for a writer).
    #[test]
    fn a_fifo_at_the_channel_state_is_refused_not_waited_on() {
        let (_d, p) = state_dir();
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = read(&p).unwrap_err();
        assert!(
            matches!(
                e,
                DataFileError::NotRegular {
                    kind: Kind::Fifo,
                    ..
                }
            ),
            "{e}"
        );
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("{} is a FIFO, not a regular file", p.display())));
        assert!(msg.contains("remove it"), "{msg}");
        // Writing replaces the FIFO by a regular file (rename does not open it).
        write_atomic(&p, b"x").unwrap();
        assert_eq!(read(&p).unwrap().unwrap(), b"x");
    }

    /// A symlink at channel.toml is not read through.
    #[test]
    fn a_symlink_at_the_channel_state_is_refused_not_followed() {
        let (d, p) = state_dir();
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let secret = d.path().join("secret");
        std::fs::write(&secret, "sequence = 99\n").unwrap();
        symlink(&secret, &p).unwrap();
        let e = read(&p).unwrap_err();
        assert!(
            matches!(
                e,
                DataFileError::NotRegular {
                    kind: Kind::Symlink,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(e.exit(), Exit::Environment);
        // A write replaces the link itself; its target is untouched.
        write_atomic(&p, b"sequence = 1\n").unwrap();
        assert_eq!(std::fs::read(&secret).unwrap(), b"sequence = 99\n");
        assert!(std::fs::symlink_metadata(&p).unwrap().is_file());
    }

    /// A symlink planted at the temporary name was followed: the write went to its target.
    #[test]
    fn a_symlink_planted_at_the_temporary_name_is_not_followed() {
        let (d, p) = state_dir();
        let dir = p.parent().unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let tmp = dir.join(format!(".channel.toml.tmp-{}", std::process::id()));
        symlink(&victim, &tmp).unwrap();
        write_atomic(&p, b"sequence = 3\n").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");
        assert_eq!(read(&p).unwrap().unwrap(), b"sequence = 3\n");
        assert!(
            std::fs::symlink_metadata(&tmp).is_err(),
            "the planted link is gone"
        );
    }

    #[test]
    fn a_linked_directory_or_a_directory_at_the_name_is_refused() {
        let (d, p) = state_dir();
        let elsewhere = d.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::create_dir_all(d.path().join("lib")).unwrap();
        symlink(&elsewhere, d.path().join("lib/stele")).unwrap();
        for e in [read(&p).unwrap_err(), write_atomic(&p, b"x").unwrap_err()] {
            assert!(
                matches!(
                    e,
                    DataFileError::NotRegular {
                        kind: Kind::Symlink,
                        dir: true,
                        ..
                    }
                ),
                "{e}"
            );
            assert!(
                e.to_string()
                    .contains("is a symbolic link, not a directory"),
                "{e}"
            );
        }
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        let (_d, p) = state_dir();
        std::fs::create_dir_all(&p).unwrap();
        for e in [read(&p).unwrap_err(), write_atomic(&p, b"x").unwrap_err()] {
            assert!(
                matches!(
                    e,
                    DataFileError::NotRegular {
                        kind: Kind::Dir,
                        ..
                    }
                ),
                "{e}"
            );
        }
    }
}

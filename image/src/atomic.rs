//! Outputs: the one rule of every `--out` ([`output_target`]: nothing is overwritten
//! without `--force`, only regular files and block devices are outputs) and write-then-
//! rename files (a temporary file next to the destination, renamed over it only when
//! complete, removed on any error), so nothing half-written is ever left at the target.
//! A block device given with `--force` is built in a temporary file in `$TMPDIR` and then
//! copied onto the device (docs/CLI.md, "Outputs").

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use stele_verifier::progress::{Progress, Silent, Step};

use crate::cleanup::TempPath;
use crate::{Error, Result};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// What [`AtomicFile::commit_io`] reports when the flush to disk failed.
const SYNC: &str = "syncing the output file";

/// What an output path names, and so how it is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Nothing: the temporary file is renamed into place, never over a file that appeared
    /// meanwhile.
    New,
    /// A file or symlink, with `--force`: the rename replaces it (a symlink itself, not
    /// what it points to).
    Replace,
    /// A block device, with `--force`: the output is made in a temporary file in `$TMPDIR`
    /// and copied onto the device from its first byte (opened O_EXCL: not while mounted).
    Device,
}

/// The one rule of every output (`--out` of image build, disk create, initramfs, uki build,
/// the block map): a path that exists is refused without `force`, and a directory or any
/// other non-file always, exit 3 ([`Error::Exists`], [`Error::DeviceOutput`],
/// [`Error::NotAnOutput`]).
pub fn output_target(dest: &Path, force: bool) -> Result<Target> {
    let link = match dest.symlink_metadata() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Target::New),
        Err(e) => return Err(Error::io("stat", dest, e)),
        Ok(m) => m,
    };
    // The type of what a symlink points to (a /dev/disk/by-id link names a device).
    let meta = std::fs::metadata(dest).unwrap_or(link);
    let t = meta.file_type();
    let exists = || Error::Exists { path: dest.into() };
    match () {
        _ if t.is_block_device() && force => Ok(Target::Device),
        _ if t.is_block_device() => Err(Error::DeviceOutput { path: dest.into() }),
        _ if (t.is_file() || t.is_symlink()) && force => Ok(Target::Replace),
        _ if t.is_file() || t.is_symlink() => Err(exists()),
        _ => Err(Error::NotAnOutput {
            path: dest.into(),
            kind: kind_of(&t),
        }),
    }
}

/// What a non-file is, for [`Error::NotAnOutput`].
fn kind_of(t: &std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// A temporary file that becomes `dest` on [`AtomicFile::commit`], and vanishes if dropped first.
#[derive(Debug)]
pub struct AtomicFile {
    tmp: TempPath,
    dest: PathBuf,
    file: File,
    target: Target,
    /// A slot image: on a device, its footer also goes to the device's last 4 KiB.
    slot: bool,
}

impl AtomicFile {
    /// Creates the temporary file (O_EXCL, `mode` set at creation) in `dest`'s directory,
    /// to replace whatever is at `dest` (for files stele owns: keys with `--force`, an image
    /// being re-signed). Outputs the user names go through [`AtomicFile::output`].
    pub fn create(dest: &Path, mode: u32) -> Result<Self> {
        Self::with_target(dest, mode, Target::Replace)
    }

    /// The temporary file for the output `dest` under [`output_target`]'s rule.
    pub fn output(dest: &Path, mode: u32, force: bool) -> Result<Self> {
        Self::with_target(dest, mode, output_target(dest, force)?)
    }

    fn with_target(dest: &Path, mode: u32, target: Target) -> Result<Self> {
        Self::create_io(dest, mode, target).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidInput => Error::invalid("output path", e.to_string()),
            _ => Error::io("create a temporary file in", tmp_dir(dest), e),
        })
    }

    fn create_io(dest: &Path, mode: u32, target: Target) -> std::io::Result<Self> {
        let tmp = TempPath::register(temp_name(dest, "tmp")?);
        let opened = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .mode(mode)
            .open(tmp.path());
        let file = match opened {
            Ok(f) => f,
            Err(e) => {
                // Not ours to remove (create_new failed).
                tmp.keep(|_| ());
                return Err(e);
            }
        };
        Ok(AtomicFile {
            tmp,
            dest: dest.to_path_buf(),
            file,
            target,
            slot: false,
        })
    }

    /// The output is a slot image: on a block device its footer also goes to the device's
    /// last 4 KiB, where every reader looks for it.
    pub fn slot_image(mut self) -> Self {
        self.slot = true;
        self
    }

    /// Where the output goes.
    pub fn target(&self) -> Target {
        self.target
    }

    /// The open temporary file.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Path of the temporary file.
    pub fn tmp_path(&self) -> &Path {
        self.tmp.path()
    }

    /// Opens the temporary file again, after a tool has written it by its path.
    pub fn reopen(&mut self) -> Result<()> {
        self.file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(self.tmp.path())
            .map_err(|e| Error::io("open", self.tmp.path(), e))?;
        Ok(())
    }

    /// Flushes the data to disk and renames the temporary file over `dest` (or copies it
    /// onto the device).
    pub fn commit(self) -> Result<()> {
        self.commit_with(&mut Silent)
    }

    /// [`AtomicFile::commit`], reporting the copy onto a device to `progress`.
    pub fn commit_with(self, progress: &mut dyn Progress) -> Result<()> {
        let (tmp, dest) = (self.tmp.path().to_path_buf(), self.dest.clone());
        self.commit_io(progress).map_err(|(what, e)| match what {
            SYNC => Error::io("sync", tmp, e),
            DEVICE_SMALL => Error::DeviceTooSmall {
                path: dest,
                why: e.to_string(),
            },
            RENAME if e.kind() == std::io::ErrorKind::AlreadyExists => Error::Exists { path: dest },
            _ => Error::io(what, dest, e),
        })
    }

    /// [`AtomicFile::commit_with`] with the plain I/O error and which step failed.
    fn commit_io(
        mut self,
        progress: &mut dyn Progress,
    ) -> std::result::Result<(), (&'static str, std::io::Error)> {
        self.file.sync_all().map_err(|e| (SYNC, e))?;
        if self.target == Target::Device {
            let r = copy_onto_device(&mut self.file, &self.dest, self.slot, progress);
            drop(self); // removes the temporary file
            return r;
        }
        let AtomicFile {
            tmp, dest, target, ..
        } = self;
        let renamed = tmp.keep(|p| {
            let r = match target {
                Target::New => rename_new(p, &dest),
                _ => std::fs::rename(p, &dest),
            };
            if r.is_err() {
                let _ = std::fs::remove_file(p);
            }
            r
        });
        renamed.map_err(|e| (RENAME, e))
    }
}

/// What [`AtomicFile::commit_io`] reports when the rename failed.
const RENAME: &str = "rename into place";

/// What [`AtomicFile::commit_io`] reports for a device smaller than the output.
const DEVICE_SMALL: &str = "the device is too small";

/// Renames `from` to `to` unless `to` exists (renameat2 RENAME_NOREPLACE; where the
/// filesystem cannot, a check right before the rename).
fn rename_new(from: &Path, to: &Path) -> std::io::Result<()> {
    use nix::fcntl::{renameat2, RenameFlags};
    match renameat2(None, from, None, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => {
            if to.symlink_metadata().is_ok() {
                Err(std::io::ErrorKind::AlreadyExists.into())
            } else {
                std::fs::rename(from, to)
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Copies the whole of `src` onto the block device `dev` from its first byte, and for a
/// slot image its footer (last 4 KiB) again at the device's end, then flushes the device.
fn copy_onto_device(
    src: &mut File,
    dev: &Path,
    slot: bool,
    progress: &mut dyn Progress,
) -> std::result::Result<(), (&'static str, std::io::Error)> {
    const OPEN: &str = "open the device";
    const WRITE: &str = "write to the device";
    let mut d = OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_EXCL)
        .open(dev)
        .map_err(|e| (OPEN, e))?;
    let dev_len = d.seek(SeekFrom::End(0)).map_err(|e| (OPEN, e))?;
    let len = src.seek(SeekFrom::End(0)).map_err(|e| (WRITE, e))?;
    if len > dev_len {
        let why = format!("it holds {dev_len} bytes, the output is {len}");
        return Err((DEVICE_SMALL, std::io::Error::other(why)));
    }
    let name = dev.display().to_string();
    let mut step = Step::new(progress, &format!("writing {name}"), Some(len));
    src.seek(SeekFrom::Start(0)).map_err(|e| (WRITE, e))?;
    if slot {
        let mut part = step.reader(src);
        crate::flash::flash_slot(&mut d, dev_len, &mut part, len).map_err(|e| (WRITE, e))?;
    } else {
        d.seek(SeekFrom::Start(0)).map_err(|e| (WRITE, e))?;
        std::io::copy(&mut step.reader(src.take(len)), &mut d).map_err(|e| (WRITE, e))?;
    }
    drop(step);
    d.flush().and_then(|()| d.sync_all()).map_err(|e| (SYNC, e))
}

/// The directory of the temporary files made for the output `dest`: next to it (so the
/// final rename stays on one filesystem), or `$TMPDIR` when it is a block device.
fn tmp_dir(dest: &Path) -> PathBuf {
    match std::fs::metadata(dest) {
        Ok(m) if m.file_type().is_block_device() => std::env::temp_dir(),
        _ => dir_of(dest),
    }
}

/// `.<name>.stele-<what>-<pid>-<n>` in [`tmp_dir`]`(dest)`: the name of every temporary
/// file or directory made for `dest` (docs/CLI.md, "Temporary files").
pub fn temp_name(dest: &Path, what: &str) -> std::io::Result<PathBuf> {
    let dir = tmp_dir(dest);
    let name = dest.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} names no file", dest.display()),
        )
    })?;
    Ok(dir.join(format!(
        ".{}.stele-{what}-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )))
}

/// The directory a path is in (`.` for a bare file name).
fn dir_of(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn commit_renames_and_drop_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        let mut a = AtomicFile::create(&dest, 0o600).unwrap();
        a.file().write_all(b"hello").unwrap();
        let tmp = a.tmp_path().to_path_buf();
        a.commit().unwrap();
        assert!(!tmp.exists());
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
        assert_eq!(
            std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o600
        );

        let dest2 = dir.path().join("never.bin");
        let mut b = AtomicFile::create(&dest2, 0o644).unwrap();
        b.file().write_all(b"partial").unwrap();
        drop(b);
        assert!(!dest2.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn outputs_are_never_overwritten_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.img");
        assert_eq!(output_target(&out, false).unwrap(), Target::New);
        std::fs::write(&out, "old").unwrap();
        assert!(matches!(
            output_target(&out, false),
            Err(Error::Exists { .. })
        ));
        assert_eq!(output_target(&out, true).unwrap(), Target::Replace);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("nowhere", &link).unwrap();
        assert!(matches!(
            output_target(&link, false),
            Err(Error::Exists { .. })
        ));
        for (path, kind) in [
            (dir.path(), "a directory"),
            (Path::new("/dev/null"), "a character device"),
        ] {
            for force in [false, true] {
                match output_target(path, force) {
                    Err(Error::NotAnOutput { kind: k, .. }) => assert_eq!(k, kind),
                    other => panic!("{path:?}: {other:?}"),
                }
            }
        }
        // A file that appears between the check and the rename is not overwritten.
        let mut a = AtomicFile::output(&dir.path().join("race.img"), 0o644, false).unwrap();
        a.file().write_all(b"new").unwrap();
        std::fs::write(dir.path().join("race.img"), "theirs").unwrap();
        let e = a.commit().unwrap_err();
        assert!(matches!(e, Error::Exists { .. }), "{e}");
        assert_eq!(
            std::fs::read(dir.path().join("race.img")).unwrap(),
            b"theirs"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    }

    /// The device copy, on a file standing in for the device: the output from byte 0 and,
    /// for a slot image, its last 4 KiB again at the end.
    #[test]
    fn device_copy_puts_a_slot_footer_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("dev");
        std::fs::write(&dev, vec![0xee; 64 * 1024]).unwrap();
        let mut src = tempfile::tempfile().unwrap();
        let image: Vec<u8> = (0..3 * 4096u32).map(|i| (i % 251) as u8).collect();
        src.write_all(&image).unwrap();
        copy_onto_device(&mut src, &dev, true, &mut Silent).unwrap();
        let d = std::fs::read(&dev).unwrap();
        assert_eq!(&d[..image.len()], &image[..]);
        assert_eq!(&d[d.len() - 4096..], &image[image.len() - 4096..]);
        let small = dir.path().join("small");
        std::fs::write(&small, vec![0u8; 4096]).unwrap();
        let e = copy_onto_device(&mut src, &small, false, &mut Silent).unwrap_err();
        assert_eq!(e.0, DEVICE_SMALL);
        assert_eq!(std::fs::read(&small).unwrap(), vec![0u8; 4096]);
    }
}

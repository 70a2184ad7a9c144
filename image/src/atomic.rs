//! Write-then-rename files: a temporary file next to the destination, renamed over it only
//! when complete, removed on any error, so nothing half-written is ever left at the target.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::cleanup::TempPath;
use crate::{Error, Result};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// What [`AtomicFile::commit_io`] reports when the flush to disk failed.
const SYNC: &str = "syncing the output file";

/// A temporary file that becomes `dest` on [`AtomicFile::commit`], and vanishes if dropped first.
#[derive(Debug)]
pub struct AtomicFile {
    tmp: TempPath,
    dest: PathBuf,
    file: File,
}

impl AtomicFile {
    /// Creates the temporary file (O_EXCL, `mode` set at creation) in `dest`'s directory.
    pub fn create(dest: &Path, mode: u32) -> Result<Self> {
        Self::create_io(dest, mode).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidInput => Error::invalid("output path", e.to_string()),
            _ => Error::io("create a temporary file in", dir_of(dest), e),
        })
    }

    /// [`AtomicFile::create`] with the plain I/O error, for callers with their own error type.
    pub fn create_io(dest: &Path, mode: u32) -> std::io::Result<Self> {
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
        })
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

    /// Flushes the data to disk and renames the temporary file over `dest`.
    pub fn commit(self) -> Result<()> {
        let (tmp, dest) = (self.tmp.path().to_path_buf(), self.dest.clone());
        self.commit_io().map_err(|(what, e)| match what {
            SYNC => Error::io("sync", tmp, e),
            _ => Error::io("rename into place", dest, e),
        })
    }

    /// [`AtomicFile::commit`] with the plain I/O error and which step failed.
    pub fn commit_io(self) -> std::result::Result<(), (&'static str, std::io::Error)> {
        self.file.sync_all().map_err(|e| (SYNC, e))?;
        let AtomicFile { tmp, dest, .. } = self;
        let renamed = tmp.keep(|p| {
            let r = std::fs::rename(p, &dest);
            if r.is_err() {
                let _ = std::fs::remove_file(p);
            }
            r
        });
        renamed.map_err(|e| ("renaming the output file into place", e))
    }
}

/// `.<name>.stele-<what>-<pid>-<n>` in `dest`'s directory: the name of every temporary
/// file or directory made for `dest` (docs/CLI.md, "Temporary files").
pub fn temp_name(dest: &Path, what: &str) -> std::io::Result<PathBuf> {
    let name = dest.file_name().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} names no file", dest.display()),
        )
    })?;
    Ok(dir_of(dest).join(format!(
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
}

//! Writing an output file atomically: a temporary file next to it, fsync, then rename.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Creates `path` by letting `fill` write a temporary file in the same directory (it gets
/// the open file and its path, for tools that write by path), then syncing and renaming it
/// over `path`. On error the temporary file is removed and `path` is untouched. `map_io`
/// turns the I/O errors of creating, syncing and renaming (named by the first argument)
/// into the caller's error type.
pub fn write_atomic<T, E>(
    path: &Path,
    map_io: impl Fn(&'static str, io::Error) -> E,
    fill: impl FnOnce(&mut File, &Path) -> Result<T, E>,
) -> Result<T, E> {
    let tmp = temp_path(path).map_err(|e| map_io("naming the temporary output file", e))?;
    let result = (|| {
        let mut f = File::create(&tmp).map_err(|e| map_io("creating the output file", e))?;
        let v = fill(&mut f, &tmp)?;
        f.sync_all()
            .map_err(|e| map_io("syncing the output file", e))?;
        std::fs::rename(&tmp, path)
            .map_err(|e| map_io("renaming the output file into place", e))?;
        Ok(v)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn temp_path(path: &Path) -> io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a file path", path.display()),
        )
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    Ok(path.with_file_name(tmp_name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn replaces_on_success_and_keeps_old_on_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("out.img");
        let map = |_: &'static str, e: io::Error| e;
        write_atomic(&p, map, |f, tmp| {
            assert!(tmp.exists());
            f.write_all(b"one")
        })
        .unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        let r = write_atomic(&p, map, |f, _| {
            f.write_all(b"two")?;
            Err::<(), _>(io::Error::other("boom"))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }
}

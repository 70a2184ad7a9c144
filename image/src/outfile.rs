//! Writing an output file atomically with the caller's error type (over [`AtomicFile`]).

use std::fs::File;
use std::io;
use std::path::Path;

use crate::atomic::AtomicFile;

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
    // Dropping the AtomicFile on an error removes the temporary file.
    let mut out =
        AtomicFile::create_io(path, 0o644).map_err(|e| map_io("creating the output file", e))?;
    let tmp = out.tmp_path().to_path_buf();
    let v = fill(out.file(), &tmp)?;
    out.commit_io().map_err(|(what, e)| map_io(what, e))?;
    Ok(v)
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

//! Writing an output file the user named, atomically, with the caller's error type (over
//! [`AtomicFile`] and the one output rule, [`crate::atomic::output_target`]).

use std::fs::File;
use std::path::Path;

use stele_verifier::progress::Silent;

use crate::atomic::AtomicFile;

/// Creates the output `path` by letting `fill` write a temporary file (it gets the open
/// file and its path, for tools that write by path), then syncing and renaming it over
/// `path`. An existing `path` is refused unless `force` ([`crate::atomic::output_target`]).
/// On error the temporary file is removed and `path` is untouched.
pub fn write_atomic<T, E: From<crate::Error>>(
    path: &Path,
    force: bool,
    fill: impl FnOnce(&mut File, &Path) -> Result<T, E>,
) -> Result<T, E> {
    // Dropping the AtomicFile on an error removes the temporary file.
    let mut out = AtomicFile::output(path, 0o644, force)?;
    let tmp = out.tmp_path().to_path_buf();
    let v = fill(out.file(), &tmp)?;
    out.commit_with(&mut Silent)?;
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
        let io = |e| crate::Error::io("write", "out.img", e);
        write_atomic(&p, false, |f, tmp| {
            assert!(tmp.exists());
            f.write_all(b"one").map_err(io)
        })
        .unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        let r = write_atomic(&p, false, |f, _| f.write_all(b"two").map_err(io));
        assert!(matches!(r, Err(crate::Error::Exists { .. })));
        let r = write_atomic(&p, true, |f, _| {
            f.write_all(b"two").map_err(io)?;
            Err::<(), _>(io(std::io::Error::other("boom")))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        write_atomic(&p, true, |f, _| f.write_all(b"two").map_err(io)).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
    }
}

//! Loading a keyring from public key files and key directories: the one loader behind the
//! boot (`/etc/stele/keys`), the device commands (`/run/stele/keys`) and the CLI (`--key`,
//! `--keys`).
//!
//! A key directory contributes every regular file named `*.pem` or `*.pub` directly in it,
//! sorted by name; any other regular file in it is skipped with a warning ([`Skipped`]),
//! and a directory without a key file is an error (docs/CLI.md, "Key directories").

use std::io;
use std::path::{Path, PathBuf};

use stele_verifier::exit::{Exit, Report};
use stele_verifier::keys::{parse_public_key, Keyring, VerifyingKey};

/// The file name extensions a key directory reads.
pub const KEY_EXTENSIONS: [&str; 2] = ["pem", "pub"];

/// A regular file of a key directory that is not read: the warning the caller prints.
#[derive(Debug, thiserror::Error)]
#[error("{}: skipped: a key directory holds public keys named *.pem or *.pub", path.display())]
pub struct Skipped {
    pub path: PathBuf,
}

/// Why a keyring could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// A key directory cannot be listed.
    #[error("cannot read key directory {}: {source}", dir.display())]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A key file cannot be read.
    #[error("cannot read key file {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A key directory holds no key file.
    #[error("invalid key directory: {} holds no public keys (files named *.pem or *.pub)", dir.display())]
    EmptyDir { dir: PathBuf },
    /// No key at all.
    #[error("invalid keyring: no trusted public keys given (use --key P.pem or --keys DIR)")]
    NoKeys,
    /// A key file is not an ed25519 SPKI PEM public key.
    #[error(transparent)]
    Key(stele_verifier::Error),
    /// The threshold does not fit the number of keys.
    #[error("invalid threshold: {0}")]
    Threshold(#[source] stele_verifier::Error),
}

impl Report for KeyringError {
    /// Unreadable files are the environment; what the files say, and the threshold, are
    /// the caller's input.
    fn exit(&self) -> Exit {
        match self {
            KeyringError::ReadDir { .. } | KeyringError::ReadFile { .. } => Exit::Environment,
            KeyringError::Key(e) => e.exit(),
            _ => Exit::Usage,
        }
    }
}

/// The key files of `dir`: regular files named `*.pem` or `*.pub` directly in it, sorted
/// by name; every other regular file is handed to `skipped` (directories and other
/// non-files are not keys and pass without a word).
pub fn key_files_in(
    dir: &Path,
    skipped: &mut dyn FnMut(Skipped),
) -> Result<Vec<PathBuf>, KeyringError> {
    let read_dir = |source| KeyringError::ReadDir {
        dir: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    let mut other = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_dir)? {
        let p = entry.map_err(read_dir)?.path();
        if !p.is_file() {
            continue;
        }
        let named = p
            .extension()
            .is_some_and(|x| KEY_EXTENSIONS.iter().any(|k| x == *k));
        if named { &mut files } else { &mut other }.push(p);
    }
    files.sort();
    other.sort();
    for path in other {
        skipped(Skipped { path });
    }
    Ok(files)
}

/// Reads an SPKI PEM ed25519 public key file.
pub fn load_public_key(path: &Path) -> Result<VerifyingKey, KeyringError> {
    let bytes = std::fs::read(path).map_err(|source| KeyringError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    parse_public_key(&bytes, &path.display().to_string()).map_err(KeyringError::Key)
}

/// A keyring of the key `files` and every key file of each of `dirs`, with `threshold`.
/// Duplicate keys count once; a directory without key files is refused; the files a
/// directory skips go to `skipped` (to be printed as warnings).
pub fn load_keyring(
    files: &[PathBuf],
    dirs: &[PathBuf],
    threshold: usize,
    skipped: &mut dyn FnMut(Skipped),
) -> Result<Keyring, KeyringError> {
    let mut paths = files.to_vec();
    for d in dirs {
        let found = key_files_in(d, skipped)?;
        if found.is_empty() {
            return Err(KeyringError::EmptyDir { dir: d.clone() });
        }
        paths.extend(found);
    }
    if paths.is_empty() {
        return Err(KeyringError::NoKeys);
    }
    let keys = paths
        .iter()
        .map(|p| load_public_key(p))
        .collect::<Result<Vec<_>, _>>()?;
    Keyring::new(keys, threshold).map_err(KeyringError::Threshold)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stele_verifier::keys::public_pem;
    use stele_verifier::testutil::key;

    /// Loads a keyring, collecting the skipped files.
    fn load(
        files: &[PathBuf],
        dirs: &[PathBuf],
        t: usize,
    ) -> (Result<Keyring, KeyringError>, Vec<String>) {
        let mut skipped = Vec::new();
        let r = load_keyring(files, dirs, t, &mut |s| skipped.push(s.to_string()));
        (r, skipped)
    }

    #[test]
    fn a_directory_reads_its_pem_and_pub_files_sorted_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        std::fs::write(d.join("README"), "keys of the release team").unwrap();
        let (r, skipped) = load(&[], std::slice::from_ref(&d), 1);
        assert!(matches!(r, Err(KeyringError::EmptyDir { .. })));
        assert_eq!(skipped.len(), 1);
        std::fs::write(d.join("b.pem"), public_pem(&key(2).verifying_key())).unwrap();
        std::fs::write(d.join("a.pub"), public_pem(&key(1).verifying_key())).unwrap();
        std::fs::write(d.join("c.txt"), "not read").unwrap();
        std::fs::create_dir(d.join("sub.pem")).unwrap();
        let files = key_files_in(&d, &mut |_| {}).unwrap();
        assert_eq!(files, [d.join("a.pub"), d.join("b.pem")]);
        let (ring, skipped) = load(&[], std::slice::from_ref(&d), 2);
        assert_eq!(ring.unwrap().ids().len(), 2);
        let readme = d.join("README").display().to_string();
        assert_eq!(
            skipped,
            [
                format!(
                    "{readme}: skipped: a key directory holds public keys named *.pem or *.pub"
                ),
                format!(
                    "{}: skipped: a key directory holds public keys named *.pem or *.pub",
                    d.join("c.txt").display()
                ),
            ]
        );
        // A file given twice counts once: the threshold is checked against distinct keys.
        let e = load(&[d.join("b.pem")], std::slice::from_ref(&d), 3)
            .0
            .unwrap_err();
        assert!(matches!(e, KeyringError::Threshold(_)), "{e}");
        assert_eq!(e.exit(), Exit::Usage);
    }

    #[test]
    fn errors_name_the_file_and_their_class() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(load(&[], &[], 1).0, Err(KeyringError::NoKeys)));
        let missing = dir.path().join("nope.pem");
        let e = load(std::slice::from_ref(&missing), &[], 1).0.unwrap_err();
        assert_eq!(e.exit(), Exit::Environment);
        assert!(e.to_string().contains("nope.pem"), "{e}");
        let bad = dir.path().join("bad.pem");
        std::fs::write(&bad, "not a key").unwrap();
        let e = load(&[bad], &[], 1).0.unwrap_err();
        assert_eq!(e.exit(), Exit::Usage);
        assert!(e.to_string().contains("bad.pem"), "{e}");
        let e = load(&[], &[dir.path().join("none")], 1).0.unwrap_err();
        assert!(matches!(e, KeyringError::ReadDir { .. }));
    }
}

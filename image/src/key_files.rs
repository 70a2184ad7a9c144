//! Key files: generating ed25519 keys from /dev/urandom, writing PEM files safely
//! (O_EXCL, private key 0600 from creation), and loading signing keys. (Public keys and
//! keyrings are loaded by `stele_device::runtime::keyring`.)

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use stele_verifier::keys::{self as vkeys, SigningKey};

use crate::atomic::AtomicFile;
use crate::{random, Error, Result};

/// Mode of private key files.
pub const PRIVATE_MODE: u32 = 0o600;
/// Mode of public key files.
pub const PUBLIC_MODE: u32 = 0o644;

/// A fresh ed25519 key from 32 bytes of /dev/urandom.
pub fn generate() -> Result<SigningKey> {
    let seed: [u8; 32] = random::bytes()?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Writes `key` as PKCS#8 PEM to `private` (mode 0600) and its public half as SPKI PEM to
/// `public` (mode 0644). Without `force`, refuses if either file exists and writes neither.
/// With `force`, each file is replaced atomically (temporary file + rename).
pub fn write_keypair(key: &SigningKey, private: &Path, public: &Path, force: bool) -> Result<()> {
    if private == public {
        return Err(Error::invalid(
            "key paths",
            "--private and --public name the same file",
        ));
    }
    let private_pem = vkeys::private_pem(key);
    let public_pem = vkeys::public_pem(&key.verifying_key());
    if force {
        write_atomic(private, private_pem.as_bytes(), PRIVATE_MODE)?;
        return write_atomic(public, public_pem.as_bytes(), PUBLIC_MODE);
    }
    for p in [private, public] {
        if p.symlink_metadata().is_ok() {
            return Err(Error::Exists { path: p.into() });
        }
    }
    write_new(private, private_pem.as_bytes(), PRIVATE_MODE)?;
    if let Err(e) = write_new(public, public_pem.as_bytes(), PUBLIC_MODE) {
        let _ = std::fs::remove_file(private);
        return Err(e);
    }
    Ok(())
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::Exists { path: path.into() }
            } else {
                Error::io("create", path, e)
            }
        })?;
    let res = f
        .write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io("write", path, e));
    if res.is_err() {
        let _ = std::fs::remove_file(path);
    }
    res
}

fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut a = AtomicFile::create(path, mode)?;
    let tmp = a.tmp_path().to_path_buf();
    a.file()
        .write_all(bytes)
        .map_err(|e| Error::io("write", tmp, e))?;
    a.commit()
}

/// Loads a PKCS#8 PEM ed25519 private key (as written by `stele keygen` or
/// `openssl genpkey -algorithm ed25519`); any other content is a key error naming what
/// the file holds (exit 2), an unreadable file an I/O error (exit 3).
pub fn load_signing_key(path: &Path) -> Result<SigningKey> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("read key file", path, e))?;
    Ok(vkeys::parse_private_key(
        &bytes,
        &path.display().to_string(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keygen_writes_0600_and_refuses_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let (k, p) = (dir.path().join("k.pem"), dir.path().join("p.pem"));
        let key = generate().unwrap();
        write_keypair(&key, &k, &p, false).unwrap();
        let mode = std::fs::metadata(&k).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = generate().unwrap();
        assert!(matches!(
            write_keypair(&again, &k, &p, false),
            Err(Error::Exists { .. })
        ));
        assert_eq!(load_signing_key(&k).unwrap().to_bytes(), key.to_bytes());
        write_keypair(&again, &k, &p, true).unwrap();
        assert_eq!(load_signing_key(&k).unwrap().to_bytes(), again.to_bytes());
        let public = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            vkeys::parse_public_key(public.as_bytes(), "p").unwrap(),
            again.verifying_key()
        );
        let mode = std::fs::metadata(&k).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn refuses_when_only_public_exists_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (k, p) = (dir.path().join("k.pem"), dir.path().join("p.pem"));
        std::fs::write(&p, "x").unwrap();
        let key = generate().unwrap();
        assert!(matches!(
            write_keypair(&key, &k, &p, false),
            Err(Error::Exists { .. })
        ));
        assert!(!k.exists());
    }
}

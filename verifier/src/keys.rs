//! ed25519 keys: OpenSSL-compatible PEM (PKCS#8 private, SPKI public), key ids, keyrings.

use std::collections::BTreeMap;

pub use ed25519_dalek::{Signature, SigningKey, VerifyingKey};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey, KeypairBytes};
use sha2::{Digest, Sha256};

use crate::keyfile::{self, KeyProblem};
use crate::{Error, Result};

/// First 8 bytes of sha256 of the raw 32-byte public key. Displays as 16 hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::hex::encode(&self.0))
    }
}

/// The key id of a public key.
pub fn key_id(key: &VerifyingKey) -> KeyId {
    let digest = Sha256::digest(key.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&digest[..8]);
    KeyId(id)
}

fn key_error(origin: &str) -> impl FnOnce(KeyProblem) -> Error + '_ {
    move |problem| Error::Key {
        path: origin.to_string(),
        problem,
    }
}

/// Parses the bytes of an ed25519 public key file (SubjectPublicKeyInfo PEM); `origin`
/// names it in errors, which say what the file holds instead ([`crate::keyfile`]).
pub fn parse_public_key(bytes: &[u8], origin: &str) -> Result<VerifyingKey> {
    keyfile::parse_public(bytes).map_err(key_error(origin))
}

/// Parses the bytes of an ed25519 private key file (PKCS#8 PEM); `origin` names it in
/// errors, which say what the file holds instead ([`crate::keyfile`]).
pub fn parse_private_key(bytes: &[u8], origin: &str) -> Result<SigningKey> {
    keyfile::parse_private(bytes).map_err(key_error(origin))
}

/// Encodes a public key as SPKI PEM.
pub fn public_pem(key: &VerifyingKey) -> String {
    // Encoding 32 bytes into a fixed DER structure cannot fail; fall back to the fixed
    // encoding by hand should the library ever say otherwise.
    key.to_public_key_pem(LineEnding::LF).unwrap_or_else(|_| {
        let mut der = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        der.extend_from_slice(key.as_bytes());
        pem_wrap("PUBLIC KEY", &der)
    })
}

/// Encodes a private key as PKCS#8 PEM (v1, as `openssl genpkey -algorithm ed25519`).
pub fn private_pem(key: &SigningKey) -> String {
    let bytes = KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    match bytes.to_pkcs8_pem(LineEnding::LF) {
        Ok(pem) => pem.to_string(),
        Err(_) => {
            let mut der = vec![
                0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
                0x04, 0x20,
            ];
            der.extend_from_slice(&key.to_bytes());
            pem_wrap("PRIVATE KEY", &der)
        }
    }
}

/// PEM armour with 64-column base64 lines.
fn pem_wrap(label: &str, der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A set of trusted public keys and how many distinct ones must sign.
#[derive(Clone, Debug)]
pub struct Keyring {
    keys: BTreeMap<KeyId, VerifyingKey>,
    threshold: usize,
}

impl Keyring {
    /// Duplicate keys count once. Threshold must be 1..=number of distinct keys.
    pub fn new(keys: Vec<VerifyingKey>, threshold: usize) -> Result<Self> {
        let keys: BTreeMap<KeyId, VerifyingKey> =
            keys.into_iter().map(|k| (key_id(&k), k)).collect();
        if threshold == 0 || threshold > keys.len() {
            return Err(Error::invalid(
                "keyring threshold",
                format!(
                    "{threshold} with {}; it must be between 1 and the number of keys",
                    crate::plural::count_len(
                        keys.len(),
                        "distinct trusted key",
                        "distinct trusted keys"
                    )
                ),
            ));
        }
        Ok(Keyring { keys, threshold })
    }
    pub fn threshold(&self) -> usize {
        self.threshold
    }
    pub fn get(&self, id: &KeyId) -> Option<&VerifyingKey> {
        self.keys.get(id)
    }
    /// The key ids, sorted.
    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.keys().copied().collect()
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test data sizes are small
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn key_id_is_sha256_prefix() {
        let k = key(1).verifying_key();
        let d = Sha256::digest(k.to_bytes());
        assert_eq!(key_id(&k).0, d[..8]);
        assert_eq!(key_id(&k).to_string(), crate::hex::encode(&d[..8]));
    }

    #[test]
    fn pem_round_trips() {
        let sk = key(7);
        let pem = private_pem(&sk);
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert_eq!(
            parse_private_key(pem.as_bytes(), "k").unwrap().to_bytes(),
            sk.to_bytes()
        );
        let pub_pem = public_pem(&sk.verifying_key());
        assert!(pub_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert_eq!(
            parse_public_key(pub_pem.as_bytes(), "k").unwrap(),
            sk.verifying_key()
        );
    }

    #[test]
    fn hand_pem_matches_library() {
        let sk = key(9);
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&sk.to_bytes());
        assert_eq!(pem_wrap("PRIVATE KEY", &der), private_pem(&sk));
        let mut der = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        der.extend_from_slice(sk.verifying_key().as_bytes());
        assert_eq!(
            pem_wrap("PUBLIC KEY", &der),
            public_pem(&sk.verifying_key())
        );
    }

    #[test]
    fn bad_pem_is_a_key_error() {
        for bad in [
            "",
            "hello",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        ] {
            assert!(
                matches!(parse_public_key(bad.as_bytes(), "x.pem"), Err(Error::Key { path, .. }) if path == "x.pem")
            );
            assert!(matches!(
                parse_private_key(bad.as_bytes(), "x.pem"),
                Err(Error::Key { .. })
            ));
        }
        // A public key is not a private key and vice versa.
        let sk = key(3);
        assert!(parse_private_key(public_pem(&sk.verifying_key()).as_bytes(), "p").is_err());
        assert!(parse_public_key(private_pem(&sk).as_bytes(), "p").is_err());
    }

    #[test]
    fn keyring_threshold_and_duplicates() {
        let a = key(1).verifying_key();
        let b = key(2).verifying_key();
        let ring = Keyring::new(vec![a, b, a], 2).unwrap();
        assert_eq!(ring.threshold(), 2);
        assert_eq!(ring.ids().len(), 2);
        assert_eq!(ring.get(&key_id(&b)), Some(&b));
        assert!(ring.get(&KeyId([0; 8])).is_none());
        assert!(matches!(
            Keyring::new(vec![a, a], 2),
            Err(Error::Invalid { .. })
        ));
        assert!(Keyring::new(vec![a], 0).is_err());
        assert!(Keyring::new(vec![], 1).is_err());
    }

    /// Interoperability with OpenSSL, which `stele keygen` replaces and external signers use.
    #[test]
    fn openssl_compatible() {
        use std::process::Command;
        let dir = tempfile::tempdir().unwrap();
        let ossl_key = dir.path().join("ossl.pem");
        let st = Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&ossl_key)
            .status()
            .unwrap_or_else(|e| panic!("cannot run openssl ({e}): run `cargo xtask setup`"));
        assert!(
            st.success(),
            "openssl genpkey failed: run `cargo xtask setup`"
        );
        let pem = std::fs::read_to_string(&ossl_key).unwrap();
        let sk = parse_private_key(pem.as_bytes(), "ossl.pem").unwrap();
        // Same bytes back: our encoding is OpenSSL's.
        assert_eq!(private_pem(&sk), pem);
        let out = Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&ossl_key)
            .output()
            .unwrap();
        assert!(out.status.success());
        let ossl_pub = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            parse_public_key(ossl_pub.as_bytes(), "p").unwrap(),
            sk.verifying_key()
        );
        assert_eq!(public_pem(&sk.verifying_key()), ossl_pub);

        // OpenSSL accepts ours.
        let ours = dir.path().join("ours.pem");
        let ours_pub = dir.path().join("ours.pub.pem");
        std::fs::write(&ours, private_pem(&key(42))).unwrap();
        std::fs::write(&ours_pub, public_pem(&key(42).verifying_key())).unwrap();
        let ok = Command::new("openssl")
            .args(["pkey", "-noout", "-in"])
            .arg(&ours)
            .status()
            .unwrap();
        assert!(ok.success(), "openssl pkey rejects our private key");
        let ok = Command::new("openssl")
            .args(["pkey", "-pubin", "-noout", "-in"])
            .arg(&ours_pub)
            .status()
            .unwrap();
        assert!(ok.success(), "openssl pkey rejects our public key");
    }
}

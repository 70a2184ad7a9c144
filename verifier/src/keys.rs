//! ed25519 keys: OpenSSL-compatible PEM (PKCS#8 private, SPKI public), key ids, keyrings.

pub use ed25519_dalek::{Signature, SigningKey, VerifyingKey};

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
    let _ = key;
    todo!()
}

/// Parses a SubjectPublicKeyInfo PEM ed25519 public key; `origin` names it in errors.
pub fn parse_public_pem(pem: &str, origin: &str) -> Result<VerifyingKey> {
    let _ = (pem, origin, Error::NoValidState);
    todo!()
}
/// Parses a PKCS#8 PEM ed25519 private key; `origin` names it in errors.
pub fn parse_private_pem(pem: &str, origin: &str) -> Result<SigningKey> {
    let _ = (pem, origin);
    todo!()
}
/// Encodes a public key as SPKI PEM.
pub fn public_pem(key: &VerifyingKey) -> String {
    let _ = key;
    todo!()
}
/// Encodes a private key as PKCS#8 PEM (v1, as `openssl genpkey -algorithm ed25519`).
pub fn private_pem(key: &SigningKey) -> String {
    let _ = key;
    todo!()
}

/// A set of trusted public keys and how many distinct ones must sign.
#[derive(Clone, Debug)]
pub struct Keyring {
    _p: (),
}

impl Keyring {
    /// Duplicate keys count once. Threshold must be 1..=number of distinct keys.
    pub fn new(keys: Vec<VerifyingKey>, threshold: usize) -> Result<Self> {
        let _ = (keys, threshold);
        todo!()
    }
    pub fn threshold(&self) -> usize {
        todo!()
    }
    pub fn get(&self, id: &KeyId) -> Option<&VerifyingKey> {
        let _ = id;
        todo!()
    }
    pub fn ids(&self) -> Vec<KeyId> {
        todo!()
    }
}

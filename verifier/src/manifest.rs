//! The signed manifest: binary envelope (signatures) around a TOML body.
//!
//! The body is parsed only after enough signatures over its raw bytes have been checked.

use std::collections::BTreeSet;

use ed25519_dalek::Signer;
use serde::Deserialize;

use crate::keys::{key_id, KeyId, Keyring, Signature, SigningKey, VerifyingKey};
use crate::verity::{VerityParams, DIGEST_LEN};
use crate::{hex, Error, Result};

/// Envelope magic.
pub const MANIFEST_MAGIC: &[u8; 8] = b"STELEMAN";
/// Envelope version written and understood.
pub const ENVELOPE_VERSION: u32 = 1;
/// Manifest body `format_version` written and understood.
pub const FORMAT_VERSION: u64 = 1;
/// Domain separator prefixed to the body in the signed message.
pub const SIGNING_CONTEXT: &[u8] = b"stele-manifest-v1\0";
/// Largest body accepted.
pub const MAX_BODY_LEN: usize = 65536;
/// Most signatures accepted.
pub const MAX_SIGNATURES: usize = 16;
/// Fixed part of the envelope.
pub const ENVELOPE_HEADER_LEN: usize = 24;
/// One signature entry: key id + ed25519 signature.
pub const SIGNATURE_ENTRY_LEN: usize = 72;
/// Longest `name` and `version`.
pub const MAX_NAME_LEN: usize = 64;

/// One signature in the envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureEntry {
    pub key_id: KeyId,
    pub signature: [u8; 64],
}

/// The envelope, structurally parsed; nothing in it is trusted yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub signatures: Vec<SignatureEntry>,
    pub body: Vec<u8>,
}

/// Filesystem type of the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    Erofs,
    Squashfs,
    Ext4,
}

impl FsType {
    /// The name used in the manifest and by mount(2): `erofs`, `squashfs`, `ext4`.
    pub fn name(self) -> &'static str {
        match self {
            FsType::Erofs => "erofs",
            FsType::Squashfs => "squashfs",
            FsType::Ext4 => "ext4",
        }
    }
}

/// `[filesystem]` of the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilesystemInfo {
    pub fs_type: FsType,
    pub size: u64,
}

/// `[verity]` of the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerityInfo {
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub data_blocks: u64,
    pub hash_offset: u64,
    pub salt: Vec<u8>,
    pub root_hash: [u8; DIGEST_LEN],
}

/// The manifest body. See docs/FORMATS.md.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub rollback_index: u64,
    pub created: u64,
    pub filesystem: FilesystemInfo,
    pub verity: VerityInfo,
}

/// A manifest whose signatures met the keyring's threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedManifest {
    pub manifest: Manifest,
    /// Trusted keys whose signatures verified, in envelope order.
    pub signed_by: Vec<KeyId>,
}

/// The exact message that is signed: `SIGNING_CONTEXT || body`.
pub fn signing_message(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIGNING_CONTEXT.len() + body.len());
    m.extend_from_slice(SIGNING_CONTEXT);
    m.extend_from_slice(body);
    m
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

fn truncated(needed: usize, available: usize) -> Error {
    Error::Truncated {
        what: "manifest envelope",
        offset: 0,
        needed: needed as u64,
        available: available as u64,
    }
}

impl Envelope {
    /// An unsigned envelope around `body`.
    pub fn new(body: Vec<u8>) -> Self {
        Envelope {
            signatures: Vec::new(),
            body,
        }
    }

    /// Checks the limits that [`Envelope::parse`] enforces, for envelopes built in memory.
    pub fn check_structure(&self) -> Result<()> {
        if self.body.is_empty() || self.body.len() > MAX_BODY_LEN {
            return Err(Error::invalid(
                "manifest body_len",
                format!("{} bytes, must be 1..={MAX_BODY_LEN}", self.body.len()),
            ));
        }
        if self.signatures.len() > MAX_SIGNATURES {
            return Err(Error::invalid(
                "manifest sig_count",
                format!(
                    "{} signatures, at most {MAX_SIGNATURES} allowed",
                    self.signatures.len()
                ),
            ));
        }
        let mut seen = BTreeSet::new();
        for s in &self.signatures {
            if !seen.insert(s.key_id) {
                return Err(Error::invalid(
                    "manifest signatures",
                    format!("key {} signed twice", s.key_id),
                ));
            }
        }
        Ok(())
    }

    /// Parses the envelope structure (exact length, limits, distinct key ids). No crypto.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < ENVELOPE_HEADER_LEN {
            return Err(truncated(ENVELOPE_HEADER_LEN, bytes.len()));
        }
        if &bytes[0..8] != MANIFEST_MAGIC {
            return Err(Error::BadMagic {
                what: "manifest",
                found: bytes[0..8].to_vec(),
            });
        }
        let version = u32_at(bytes, 8);
        if version != ENVELOPE_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "manifest envelope",
                found: u64::from(version),
                supported: u64::from(ENVELOPE_VERSION),
            });
        }
        let body_len = u32_at(bytes, 12);
        let sig_count = u32_at(bytes, 16);
        if u32_at(bytes, 20) != 0 {
            return Err(Error::invalid(
                "manifest envelope",
                "reserved bytes are not zero (written by a newer stele?)",
            ));
        }
        let body_len = usize::try_from(body_len).unwrap_or(usize::MAX);
        if body_len == 0 || body_len > MAX_BODY_LEN {
            return Err(Error::invalid(
                "manifest body_len",
                format!("{body_len} bytes, must be 1..={MAX_BODY_LEN}"),
            ));
        }
        let sig_count = usize::try_from(sig_count).unwrap_or(usize::MAX);
        if sig_count > MAX_SIGNATURES {
            return Err(Error::invalid(
                "manifest sig_count",
                format!("{sig_count} signatures, at most {MAX_SIGNATURES} allowed"),
            ));
        }
        let body_start = ENVELOPE_HEADER_LEN + SIGNATURE_ENTRY_LEN * sig_count;
        let total = body_start + body_len;
        if bytes.len() < total {
            return Err(truncated(total, bytes.len()));
        }
        if bytes.len() > total {
            return Err(Error::invalid(
                "manifest envelope",
                format!(
                    "{} trailing bytes after the body (envelope is {total} bytes)",
                    bytes.len() - total
                ),
            ));
        }
        let signatures = bytes[ENVELOPE_HEADER_LEN..body_start]
            .chunks_exact(SIGNATURE_ENTRY_LEN)
            .map(|e| {
                let mut id = [0u8; 8];
                id.copy_from_slice(&e[..8]);
                let mut signature = [0u8; 64];
                signature.copy_from_slice(&e[8..]);
                SignatureEntry {
                    key_id: KeyId(id),
                    signature,
                }
            })
            .collect();
        let env = Envelope {
            signatures,
            body: bytes[body_start..].to_vec(),
        };
        env.check_structure()?;
        Ok(env)
    }

    /// Encodes the envelope. Limits are not checked here: [`Envelope::sign`] and
    /// [`Envelope::check_structure`] do.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(
            ENVELOPE_HEADER_LEN + SIGNATURE_ENTRY_LEN * self.signatures.len() + self.body.len(),
        );
        b.extend_from_slice(MANIFEST_MAGIC);
        b.extend_from_slice(&ENVELOPE_VERSION.to_le_bytes());
        let body_len = u32::try_from(self.body.len()).unwrap_or(u32::MAX);
        let sig_count = u32::try_from(self.signatures.len()).unwrap_or(u32::MAX);
        b.extend_from_slice(&body_len.to_le_bytes());
        b.extend_from_slice(&sig_count.to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        for s in &self.signatures {
            b.extend_from_slice(&s.key_id.0);
            b.extend_from_slice(&s.signature);
        }
        b.extend_from_slice(&self.body);
        b
    }

    /// Puts `entry` in place of the same key's signature, or appends it.
    fn put(&mut self, entry: SignatureEntry) -> Result<()> {
        let mut candidate = Envelope {
            signatures: self.signatures.clone(),
            body: Vec::new(),
        };
        if let Some(s) = candidate
            .signatures
            .iter_mut()
            .find(|s| s.key_id == entry.key_id)
        {
            *s = entry;
        } else {
            candidate.signatures.push(entry);
        }
        candidate.body = std::mem::take(&mut self.body);
        let checked = candidate.check_structure();
        if checked.is_ok() {
            self.signatures = candidate.signatures;
        }
        self.body = candidate.body;
        checked
    }

    /// Signs the body with `key` and appends (or replaces) that key's signature.
    pub fn sign(&mut self, key: &SigningKey) -> Result<()> {
        let sig = key.sign(&signing_message(&self.body));
        self.put(SignatureEntry {
            key_id: key_id(&key.verifying_key()),
            signature: sig.to_bytes(),
        })
    }

    /// Appends a signature made elsewhere (external signer); checked against `key` first.
    pub fn add_signature(&mut self, key: &VerifyingKey, signature: [u8; 64]) -> Result<()> {
        let id = key_id(key);
        key.verify_strict(
            &signing_message(&self.body),
            &Signature::from_bytes(&signature),
        )
        .map_err(|_| Error::BadSignature {
            key_id: id.to_string(),
        })?;
        self.put(SignatureEntry {
            key_id: id,
            signature,
        })
    }

    /// Checks signatures against `keyring`, then parses the body. The only way to a trusted [`Manifest`].
    pub fn verify(&self, keyring: &Keyring) -> Result<VerifiedManifest> {
        self.check_structure()?;
        let message = signing_message(&self.body);
        let mut signed_by = Vec::new();
        let mut unknown = Vec::new();
        for s in &self.signatures {
            match keyring.get(&s.key_id) {
                Some(key) => {
                    key.verify_strict(&message, &Signature::from_bytes(&s.signature))
                        .map_err(|_| Error::BadSignature {
                            key_id: s.key_id.to_string(),
                        })?;
                    signed_by.push(s.key_id);
                }
                None => unknown.push(s.key_id.to_string()),
            }
        }
        // Key ids are distinct (check_structure), so each trusted key counts once.
        if signed_by.len() < keyring.threshold() {
            return Err(Error::ThresholdNotMet {
                valid: signed_by.len(),
                threshold: keyring.threshold(),
                unknown: if unknown.is_empty() {
                    "none".to_string()
                } else {
                    unknown.join(",")
                },
            });
        }
        let manifest = Manifest::parse_body(&self.body)?;
        Ok(VerifiedManifest {
            manifest,
            signed_by,
        })
    }

    /// Parses the body WITHOUT checking signatures, for display only (`stele inspect`).
    pub fn unverified_manifest(&self) -> Result<Manifest> {
        Manifest::parse_body(&self.body)
    }
}

/// The body as written in TOML; converted to [`Manifest`] after the checks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    format_version: u64,
    name: String,
    version: String,
    rollback_index: u64,
    created: u64,
    filesystem: RawFilesystem,
    verity: RawVerity,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilesystem {
    #[serde(rename = "type")]
    fs_type: FsType,
    size: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerity {
    algorithm: String,
    data_block_size: u32,
    hash_block_size: u32,
    data_blocks: u64,
    hash_offset: u64,
    salt: String,
    root_hash: String,
}

fn decode_hex(what: &str, s: &str) -> Result<Vec<u8>> {
    if s == "-" {
        return Err(Error::Body(format!(
            "verity.{what}: write an empty salt as \"\", not \"-\""
        )));
    }
    hex::decode(s).ok_or_else(|| Error::Body(format!("verity.{what}: {s:?} is not hex")))
}

impl Manifest {
    /// Decodes a body: UTF-8, TOML, `format_version`, known keys only, then [`Manifest::check`].
    pub fn parse_body(body: &[u8]) -> Result<Self> {
        let text = std::str::from_utf8(body).map_err(|e| Error::Body(format!("not UTF-8: {e}")))?;
        let table: toml::Table =
            toml::from_str(text).map_err(|e| Error::Body(format!("not TOML: {e}")))?;
        // The version first, so that a newer format reads as "unsupported", not "unknown key".
        match table.get("format_version") {
            Some(toml::Value::Integer(1)) => {}
            Some(toml::Value::Integer(v)) => {
                return Err(Error::UnsupportedVersion {
                    what: "manifest format",
                    found: u64::try_from(*v).unwrap_or(u64::MAX),
                    supported: FORMAT_VERSION,
                })
            }
            Some(_) => return Err(Error::Body("format_version is not an integer".into())),
            None => return Err(Error::Body("format_version is missing".into())),
        }
        let raw: RawManifest = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| Error::Body(e.to_string().trim().to_string()))?;
        if raw.format_version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "manifest format",
                found: raw.format_version,
                supported: FORMAT_VERSION,
            });
        }
        if raw.verity.algorithm != "sha256" {
            return Err(Error::Body(format!(
                "verity.algorithm {:?} is not supported (only \"sha256\")",
                raw.verity.algorithm
            )));
        }
        let salt = decode_hex("salt", &raw.verity.salt)?;
        let root_hash = decode_hex("root_hash", &raw.verity.root_hash)?
            .try_into()
            .map_err(|v: Vec<u8>| {
                Error::Body(format!(
                    "verity.root_hash is {} bytes, a sha256 is 32",
                    v.len()
                ))
            })?;
        let m = Manifest {
            name: raw.name,
            version: raw.version,
            rollback_index: raw.rollback_index,
            created: raw.created,
            filesystem: FilesystemInfo {
                fs_type: raw.filesystem.fs_type,
                size: raw.filesystem.size,
            },
            verity: VerityInfo {
                data_block_size: raw.verity.data_block_size,
                hash_block_size: raw.verity.hash_block_size,
                data_blocks: raw.verity.data_blocks,
                hash_offset: raw.verity.hash_offset,
                salt,
                root_hash,
            },
        };
        m.check()?;
        Ok(m)
    }

    /// The sanity checks of docs/FORMATS.md that need only the body.
    pub fn check(&self) -> Result<()> {
        let name_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if self.name.is_empty() || self.name.len() > MAX_NAME_LEN || !self.name.chars().all(name_ok)
        {
            return Err(Error::invalid(
                "manifest name",
                format!(
                    "{:?}: use 1..=64 characters of A-Z a-z 0-9 . _ -",
                    self.name
                ),
            ));
        }
        if self.version.is_empty()
            || self.version.len() > MAX_NAME_LEN
            || !self
                .version
                .chars()
                .all(|c| c == ' ' || c.is_ascii_graphic())
        {
            return Err(Error::invalid(
                "manifest version",
                format!("{:?}: use 1..=64 printable ASCII characters", self.version),
            ));
        }
        for (what, v) in [
            ("manifest rollback_index", self.rollback_index),
            ("manifest created", self.created),
            ("manifest filesystem.size", self.filesystem.size),
            ("manifest verity.data_blocks", self.verity.data_blocks),
            ("manifest verity.hash_offset", self.verity.hash_offset),
        ] {
            if v > i64::MAX as u64 {
                return Err(Error::invalid(
                    what,
                    format!("{v} is above 2^63 - 1 (TOML's limit)"),
                ));
            }
        }
        let params = self.verity_params()?;
        let data_size = params.data_size();
        if self.verity.hash_offset != data_size {
            return Err(Error::invalid(
                "manifest verity.hash_offset",
                format!(
                    "{} is not data_blocks * data_block_size = {data_size}",
                    self.verity.hash_offset
                ),
            ));
        }
        if !self
            .verity
            .hash_offset
            .is_multiple_of(u64::from(self.verity.hash_block_size))
        {
            return Err(Error::invalid(
                "manifest verity.hash_offset",
                format!(
                    "{} is not a multiple of the hash block size {}",
                    self.verity.hash_offset, self.verity.hash_block_size
                ),
            ));
        }
        if self.filesystem.size > data_size {
            return Err(Error::invalid(
                "manifest filesystem.size",
                format!(
                    "{} bytes is more than the {data_size} bytes of verity data",
                    self.filesystem.size
                ),
            ));
        }
        Ok(())
    }

    /// Encodes the body as TOML (deterministic field order).
    pub fn to_toml(&self) -> String {
        let s = |v: &str| toml::Value::String(v.to_string()).to_string();
        let v = &self.verity;
        format!(
            "format_version = {FORMAT_VERSION}\n\
             name = {}\n\
             version = {}\n\
             rollback_index = {}\n\
             created = {}\n\
             \n\
             [filesystem]\n\
             type = \"{}\"\n\
             size = {}\n\
             \n\
             [verity]\n\
             algorithm = \"sha256\"\n\
             data_block_size = {}\n\
             hash_block_size = {}\n\
             data_blocks = {}\n\
             hash_offset = {}\n\
             salt = \"{}\"\n\
             root_hash = \"{}\"\n",
            s(&self.name),
            s(&self.version),
            self.rollback_index,
            self.created,
            self.filesystem.fs_type.name(),
            self.filesystem.size,
            v.data_block_size,
            v.hash_block_size,
            v.data_blocks,
            v.hash_offset,
            hex::encode(&v.salt),
            hex::encode(&v.root_hash),
        )
    }

    /// The verity parameters (validated).
    pub fn verity_params(&self) -> Result<VerityParams> {
        let v = &self.verity;
        VerityParams::new(
            v.data_block_size,
            v.hash_block_size,
            v.data_blocks,
            v.salt.clone(),
        )
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test data sizes are small
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample() -> Manifest {
        Manifest {
            name: "demo".into(),
            version: "1.0.0".into(),
            rollback_index: 1,
            created: 1_700_000_000,
            filesystem: FilesystemInfo {
                fs_type: FsType::Erofs,
                size: 1_234_944,
            },
            verity: VerityInfo {
                data_block_size: 4096,
                hash_block_size: 4096,
                data_blocks: 302,
                hash_offset: 302 * 4096,
                salt: vec![0x5d, 0x1f],
                root_hash: [0x9a; 32],
            },
        }
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn signed(m: &Manifest, keys: &[u8]) -> Envelope {
        let mut e = Envelope::new(m.to_toml().into_bytes());
        for &k in keys {
            e.sign(&key(k)).unwrap();
        }
        e
    }

    fn ring(keys: &[u8], threshold: usize) -> Keyring {
        Keyring::new(
            keys.iter().map(|&k| key(k).verifying_key()).collect(),
            threshold,
        )
        .unwrap()
    }

    #[test]
    fn body_round_trips_and_matches_the_doc_example() {
        let m = sample();
        let text = m.to_toml();
        assert!(text.starts_with("format_version = 1\nname = \"demo\"\n"));
        assert!(text.contains("\n[verity]\nalgorithm = \"sha256\"\n"));
        assert!(text.contains("salt = \"5d1f\"\n"));
        assert_eq!(Manifest::parse_body(text.as_bytes()).unwrap(), m);
        assert_eq!(m.to_toml(), text);
    }

    #[test]
    fn envelope_layout() {
        let e = signed(&sample(), &[1]);
        let b = e.to_bytes();
        assert_eq!(&b[..8], b"STELEMAN");
        assert_eq!(b[8..12], [1, 0, 0, 0]);
        assert_eq!(b[12..16], (e.body.len() as u32).to_le_bytes());
        assert_eq!(b[16..20], [1, 0, 0, 0]);
        assert_eq!(b[20..24], [0; 4]);
        assert_eq!(b[24..32], key_id(&key(1).verifying_key()).0);
        assert_eq!(&b[96..], e.body.as_slice());
        assert_eq!(Envelope::parse(&b).unwrap(), e);
    }

    #[test]
    fn envelope_structure_errors() {
        let b = signed(&sample(), &[1, 2]).to_bytes();
        assert!(matches!(
            Envelope::parse(&b[..10]),
            Err(Error::Truncated { .. })
        ));
        assert!(matches!(
            Envelope::parse(&b[..b.len() - 1]),
            Err(Error::Truncated { .. })
        ));
        let mut t = b.clone();
        t.push(0);
        assert!(matches!(Envelope::parse(&t), Err(Error::Invalid { .. })));
        let mut t = b.clone();
        t[0] = b'x';
        assert!(matches!(Envelope::parse(&t), Err(Error::BadMagic { .. })));
        let mut t = b.clone();
        t[8] = 9;
        assert!(matches!(
            Envelope::parse(&t),
            Err(Error::UnsupportedVersion { found: 9, .. })
        ));
        let mut t = b.clone();
        t[21] = 1;
        assert!(matches!(Envelope::parse(&t), Err(Error::Invalid { .. })));
        let mut t = b.clone();
        t[16..20].copy_from_slice(&17u32.to_le_bytes());
        assert!(matches!(Envelope::parse(&t), Err(Error::Invalid { .. })));
        let mut t = b.clone();
        t[12..16].copy_from_slice(&0u32.to_le_bytes());
        assert!(matches!(Envelope::parse(&t), Err(Error::Invalid { .. })));
        // Same key id twice.
        let mut t = b.clone();
        t.copy_within(24..32, 96);
        assert!(matches!(Envelope::parse(&t), Err(Error::Invalid { .. })));
    }

    #[test]
    fn verification_order_and_threshold() {
        let m = sample();
        let e = signed(&m, &[1, 2, 3]);
        let v = e.verify(&ring(&[1, 2], 2)).unwrap();
        assert_eq!(v.manifest, m);
        assert_eq!(
            v.signed_by,
            vec![
                key_id(&key(1).verifying_key()),
                key_id(&key(2).verifying_key())
            ]
        );
        // Unknown keys are listed, not counted.
        let err = signed(&m, &[1, 3]).verify(&ring(&[1, 2], 2)).unwrap_err();
        match err {
            Error::ThresholdNotMet {
                valid: 1,
                threshold: 2,
                unknown,
            } => assert_eq!(unknown, key_id(&key(3).verifying_key()).to_string()),
            other => panic!("unexpected {other}"),
        }
        assert!(matches!(
            Envelope::new(m.to_toml().into_bytes()).verify(&ring(&[1], 1)),
            Err(Error::ThresholdNotMet { valid: 0, ref unknown, .. }) if unknown == "none"
        ));
        // A trusted key's bad signature is fatal even when the threshold is met.
        let mut bad = signed(&m, &[1, 2]);
        bad.signatures[1].signature[5] ^= 1;
        assert!(matches!(
            bad.verify(&ring(&[1, 2], 1)),
            Err(Error::BadSignature { key_id }) if key_id == self::key_id(&key(2).verifying_key()).to_string()
        ));
        // Body tampering breaks every signature.
        let mut t = signed(&m, &[1]);
        t.body[20] ^= 1;
        assert!(matches!(
            t.verify(&ring(&[1], 1)),
            Err(Error::BadSignature { .. })
        ));
        // Garbage bodies are never parsed without signatures.
        let mut g = Envelope::new(b"\xff\xfe not toml".to_vec());
        assert!(matches!(
            g.verify(&ring(&[1], 1)),
            Err(Error::ThresholdNotMet { .. })
        ));
        g.sign(&key(1)).unwrap();
        assert!(matches!(g.verify(&ring(&[1], 1)), Err(Error::Body(_))));
    }

    #[test]
    fn sign_replaces_and_add_signature_checks() {
        let m = sample();
        let mut e = signed(&m, &[1, 1, 2]);
        assert_eq!(e.signatures.len(), 2);
        let sig = key(3).sign(&signing_message(&e.body)).to_bytes();
        assert!(matches!(
            e.add_signature(&key(4).verifying_key(), sig),
            Err(Error::BadSignature { .. })
        ));
        e.add_signature(&key(3).verifying_key(), sig).unwrap();
        assert_eq!(e.signatures.len(), 3);
        e.verify(&ring(&[1, 2, 3], 3)).unwrap();
        for k in 10..23 {
            e.sign(&key(k)).unwrap();
        }
        assert_eq!(e.signatures.len(), 16);
        assert!(e.sign(&key(99)).is_err());
        assert_eq!(e.signatures.len(), 16);
        // Replacing a signature is fine at the limit; a bad body changes nothing.
        e.sign(&key(1)).unwrap();
        let mut empty = Envelope::new(Vec::new());
        assert!(empty.sign(&key(1)).is_err());
        assert!(empty.signatures.is_empty());
    }

    fn body_with(edit: impl Fn(&str) -> String) -> Vec<u8> {
        edit(&sample().to_toml()).into_bytes()
    }

    #[test]
    fn body_checks() {
        let replace = |a: &'static str, b: &'static str| {
            body_with(move |t| {
                assert!(t.contains(a), "{a}");
                t.replace(a, b)
            })
        };
        assert!(matches!(
            Manifest::parse_body(&replace(
                "format_version = 1",
                "format_version = 2\nnew = 1"
            )),
            Err(Error::UnsupportedVersion { found: 2, .. })
        ));
        for (a, b) in [
            ("format_version = 1\n", ""),
            ("name = \"demo\"", "name = \"de mo\""),
            ("name = \"demo\"", "name = \"\""),
            ("version = \"1.0.0\"", "version = \"1.0\\n\""),
            ("created = 1700000000", "created = -1"),
            ("created = 1700000000", "created = 1700000000\nextra = 1"),
            ("type = \"erofs\"", "type = \"btrfs\""),
            ("size = 1234944", "size = 1236993"),
            ("algorithm = \"sha256\"", "algorithm = \"sha1\""),
            ("data_block_size = 4096", "data_block_size = 4097"),
            ("hash_block_size = 4096", "hash_block_size = 256"),
            ("data_blocks = 302", "data_blocks = 0"),
            ("hash_offset = 1236992", "hash_offset = 1236991"),
            ("salt = \"5d1f\"", "salt = \"5d1\""),
            ("salt = \"5d1f\"", "salt = \"-\""),
            ("root_hash = \"9a9a", "root_hash = \"9a"),
            ("[filesystem]", "[fs]"),
        ] {
            assert!(Manifest::parse_body(&replace(a, b)).is_err(), "{a} -> {b}");
        }
        // hash_offset must be a multiple of the hash block size.
        let mut m = sample();
        m.verity.data_block_size = 512;
        m.verity.data_blocks = 9;
        m.verity.hash_offset = 9 * 512;
        m.filesystem.size = 100;
        assert!(matches!(
            Manifest::parse_body(m.to_toml().as_bytes()),
            Err(Error::Invalid {
                what: "manifest verity.hash_offset",
                ..
            })
        ));
        assert!(matches!(Manifest::parse_body(b"\xff"), Err(Error::Body(_))));
        assert!(matches!(Manifest::parse_body(b"= ="), Err(Error::Body(_))));
        // Upper-case hex is accepted; output is lower-case.
        let up = replace("salt = \"5d1f\"", "salt = \"5D1F\"");
        assert_eq!(Manifest::parse_body(&up).unwrap(), sample());
        // Empty salt.
        let mut m = sample();
        m.verity.salt.clear();
        assert!(m.to_toml().contains("salt = \"\"\n"));
        assert_eq!(Manifest::parse_body(m.to_toml().as_bytes()).unwrap(), m);
    }

    fn arb_manifest() -> impl Strategy<Value = Manifest> {
        (
            "[A-Za-z0-9._-]{1,64}",
            "[ -~]{1,64}",
            0u64..=i64::MAX as u64,
            0u64..=i64::MAX as u64,
            prop_oneof![
                Just(FsType::Erofs),
                Just(FsType::Squashfs),
                Just(FsType::Ext4)
            ],
            (9u32..=16, 9u32..=16, 1u64..(1 << 30)),
            proptest::collection::vec(any::<u8>(), 0..=256),
            any::<[u8; 32]>(),
            any::<u64>(),
        )
            .prop_filter_map(
                "hash_offset multiple of hash block",
                |(
                    name,
                    version,
                    rollback_index,
                    created,
                    fs_type,
                    (d, h, blocks),
                    salt,
                    root_hash,
                    r,
                )| {
                    let data_size = blocks << d;
                    if data_size % (1u64 << h) != 0 {
                        return None;
                    }
                    Some(Manifest {
                        name,
                        version,
                        rollback_index,
                        created,
                        filesystem: FilesystemInfo {
                            fs_type,
                            size: r % (data_size + 1),
                        },
                        verity: VerityInfo {
                            data_block_size: 1 << d,
                            hash_block_size: 1 << h,
                            data_blocks: blocks,
                            hash_offset: data_size,
                            salt,
                            root_hash,
                        },
                    })
                },
            )
    }

    proptest! {
        #[test]
        fn manifest_round_trip(m in arb_manifest()) {
            let text = m.to_toml();
            prop_assert_eq!(Manifest::parse_body(text.as_bytes()).unwrap(), m);
        }

        #[test]
        fn envelope_round_trip(
            body in proptest::collection::vec(any::<u8>(), 1..2000),
            sigs in proptest::collection::btree_map(any::<[u8; 8]>(), any::<[u8; 32]>(), 0..=16),
        ) {
            let e = Envelope {
                signatures: sigs
                    .into_iter()
                    .map(|(id, half)| {
                        let mut signature = [0u8; 64];
                        signature[..32].copy_from_slice(&half);
                        SignatureEntry { key_id: KeyId(id), signature }
                    })
                    .collect(),
                body,
            };
            prop_assert_eq!(Envelope::parse(&e.to_bytes()).unwrap(), e);
        }

        #[test]
        fn garbage_envelopes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(e) = Envelope::parse(&bytes) {
                let _ = e.verify(&ring(&[1], 1));
                let _ = e.unverified_manifest();
            }
        }

        #[test]
        fn mutated_envelopes_never_panic(pos: prop::sample::Index, val: u8) {
            let mut b = signed(&sample(), &[1]).to_bytes();
            let i = pos.index(b.len());
            b[i] = val;
            if let Ok(e) = Envelope::parse(&b) {
                let _ = e.verify(&ring(&[1], 1));
                let _ = e.unverified_manifest();
            }
        }

        #[test]
        fn garbage_bodies_never_panic(text in "[ -~\n]{0,400}") {
            let _ = Manifest::parse_body(text.as_bytes());
        }
    }
}

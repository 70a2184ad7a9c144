//! The signed envelope: magic, version, signatures (key id + ed25519 signature), body;
//! signing and the threshold check, before which the body is never parsed. One format for
//! every signed document, each with its own [`Domain`] (magic and signing context): the
//! slot manifest ([`MANIFEST`]) and the update channel (`crate::channel`).

use std::collections::BTreeSet;

use ed25519_dalek::Signer;

use super::*;
use crate::keys::{key_id, Keyring, Signature, SigningKey, VerifyingKey};
use crate::{Error, Result};

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
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
        self.check_structure_in(&MANIFEST)
    }

    /// [`Envelope::check_structure`] for the documents of `domain`.
    pub fn check_structure_in(&self, domain: &Domain) -> Result<()> {
        if self.body.is_empty() || self.body.len() > MAX_BODY_LEN {
            return Err(Error::invalid(
                domain.body_len,
                format!("{} bytes, must be 1..={MAX_BODY_LEN}", self.body.len()),
            ));
        }
        if self.signatures.len() > MAX_SIGNATURES {
            return Err(Error::invalid(
                domain.sig_count,
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
                    domain.signatures,
                    format!("key {} signed twice", s.key_id),
                ));
            }
        }
        Ok(())
    }

    /// Parses a manifest envelope (exact length, limits, distinct key ids). No crypto.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        Self::parse_in(bytes, &MANIFEST)
    }

    /// Parses an envelope of `domain` (its magic; exact length, limits, distinct key ids).
    /// No crypto.
    pub fn parse_in(bytes: &[u8], domain: &Domain) -> Result<Self> {
        let truncated = |needed: usize| Error::Truncated {
            what: domain.envelope,
            offset: 0,
            needed: needed as u64,
            available: bytes.len() as u64,
        };
        if bytes.len() < ENVELOPE_HEADER_LEN {
            return Err(truncated(ENVELOPE_HEADER_LEN));
        }
        if &bytes[0..8] != domain.magic {
            return Err(Error::BadMagic {
                what: domain.name,
                found: bytes[0..8].to_vec(),
            });
        }
        let version = u32_at(bytes, 8);
        if version != ENVELOPE_VERSION {
            return Err(Error::UnsupportedVersion {
                what: domain.envelope,
                found: u64::from(version),
                supported: u64::from(ENVELOPE_VERSION),
            });
        }
        let body_len = u32_at(bytes, 12);
        let sig_count = u32_at(bytes, 16);
        if u32_at(bytes, 20) != 0 {
            return Err(Error::invalid(
                domain.envelope,
                "reserved bytes are not zero (written by a newer stele?)",
            ));
        }
        let body_len = usize::try_from(body_len).unwrap_or(usize::MAX);
        if body_len == 0 || body_len > MAX_BODY_LEN {
            return Err(Error::invalid(
                domain.body_len,
                format!("{body_len} bytes, must be 1..={MAX_BODY_LEN}"),
            ));
        }
        let sig_count = usize::try_from(sig_count).unwrap_or(usize::MAX);
        if sig_count > MAX_SIGNATURES {
            return Err(Error::invalid(
                domain.sig_count,
                format!("{sig_count} signatures, at most {MAX_SIGNATURES} allowed"),
            ));
        }
        let body_start = ENVELOPE_HEADER_LEN + SIGNATURE_ENTRY_LEN * sig_count;
        let total = body_start + body_len;
        if bytes.len() < total {
            return Err(truncated(total));
        }
        if bytes.len() > total {
            return Err(Error::invalid(
                domain.envelope,
                format!(
                    "{} after the body (envelope is {total} bytes)",
                    crate::plural::count_len(
                        bytes.len() - total,
                        "trailing byte",
                        "trailing bytes"
                    )
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
        env.check_structure_in(domain)?;
        Ok(env)
    }

    /// Encodes a manifest envelope. Limits are not checked here: [`Envelope::sign`] and
    /// [`Envelope::check_structure`] do.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_bytes_in(&MANIFEST)
    }

    /// Encodes the envelope with `domain`'s magic.
    pub fn to_bytes_in(&self, domain: &Domain) -> Vec<u8> {
        let mut b = Vec::with_capacity(
            ENVELOPE_HEADER_LEN + SIGNATURE_ENTRY_LEN * self.signatures.len() + self.body.len(),
        );
        b.extend_from_slice(domain.magic);
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
    fn put(&mut self, entry: SignatureEntry, domain: &Domain) -> Result<()> {
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
        let checked = candidate.check_structure_in(domain);
        if checked.is_ok() {
            self.signatures = candidate.signatures;
        }
        self.body = candidate.body;
        checked
    }

    /// Signs the body as a manifest with `key` and appends (or replaces) that key's signature.
    pub fn sign(&mut self, key: &SigningKey) -> Result<()> {
        self.sign_in(key, &MANIFEST)
    }

    /// Signs the body in `domain` (its signing context) with `key`.
    pub fn sign_in(&mut self, key: &SigningKey, domain: &Domain) -> Result<()> {
        let sig = key.sign(&domain.message(&self.body));
        self.put(
            SignatureEntry {
                key_id: key_id(&key.verifying_key()),
                signature: sig.to_bytes(),
            },
            domain,
        )
    }

    /// Appends a manifest signature made elsewhere (external signer); checked against
    /// `key` first.
    pub fn add_signature(&mut self, key: &VerifyingKey, signature: [u8; 64]) -> Result<()> {
        let id = key_id(key);
        key.verify_strict(
            &MANIFEST.message(&self.body),
            &Signature::from_bytes(&signature),
        )
        .map_err(|_| Error::BadSignature {
            key_id: id.to_string(),
            what: MANIFEST.name,
        })?;
        self.put(
            SignatureEntry {
                key_id: id,
                signature,
            },
            &MANIFEST,
        )
    }

    /// Checks the signatures over the raw body against `keyring` in `domain`: every
    /// signature by a trusted key must verify, and at least the threshold of them must be
    /// there. Returns the trusted keys that signed, in envelope order. The body is not
    /// looked at.
    pub fn verify_signatures_in(&self, keyring: &Keyring, domain: &Domain) -> Result<Vec<KeyId>> {
        self.check_structure_in(domain)?;
        let message = domain.message(&self.body);
        let mut signed_by = Vec::new();
        let mut unknown = Vec::new();
        for s in &self.signatures {
            match keyring.get(&s.key_id) {
                Some(key) => {
                    key.verify_strict(&message, &Signature::from_bytes(&s.signature))
                        .map_err(|_| Error::BadSignature {
                            key_id: s.key_id.to_string(),
                            what: domain.name,
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
        Ok(signed_by)
    }

    /// Checks signatures against `keyring`, then parses the body. The only way to a trusted [`Manifest`].
    pub fn verify(&self, keyring: &Keyring) -> Result<VerifiedManifest> {
        let signed_by = self.verify_signatures_in(keyring, &MANIFEST)?;
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

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test data sizes are small
mod tests {
    use super::super::tests::{key, ring, sample, signed};
    use super::*;
    use proptest::prelude::*;

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
            Err(Error::BadSignature { key_id, .. }) if key_id == self::key_id(&key(2).verifying_key()).to_string()
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

    proptest! {
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
    }
}

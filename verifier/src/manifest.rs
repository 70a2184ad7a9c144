//! The signed manifest: binary envelope (signatures) around a TOML body.
//!
//! The body is parsed only after enough signatures over its raw bytes have been checked.

use crate::keys::{KeyId, Keyring, SigningKey};
use crate::verity::{VerityParams, DIGEST_LEN};
use crate::Result;

/// Envelope magic.
pub const MANIFEST_MAGIC: &[u8; 8] = b"STELEMAN";
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
    let _ = body;
    todo!()
}

impl Envelope {
    /// Parses the envelope structure (exact length, limits, distinct key ids). No crypto.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let _ = bytes;
        todo!()
    }
    /// Encodes the envelope.
    pub fn to_bytes(&self) -> Vec<u8> {
        todo!()
    }
    /// Signs the body with `key` and appends (or replaces) that key's signature.
    pub fn sign(&mut self, key: &SigningKey) -> Result<()> {
        let _ = key;
        todo!()
    }
    /// Appends a signature made elsewhere (external signer); checked against `key` first.
    pub fn add_signature(
        &mut self,
        key: &crate::keys::VerifyingKey,
        signature: [u8; 64],
    ) -> Result<()> {
        let _ = (key, signature);
        todo!()
    }
    /// Checks signatures against `keyring`, then parses the body. The only way to a trusted [`Manifest`].
    pub fn verify(&self, keyring: &Keyring) -> Result<VerifiedManifest> {
        let _ = keyring;
        todo!()
    }
    /// Parses the body WITHOUT checking signatures, for display only (`stele inspect`).
    pub fn unverified_manifest(&self) -> Result<Manifest> {
        todo!()
    }
}

impl Manifest {
    /// Encodes the body as TOML (deterministic field order).
    pub fn to_toml(&self) -> String {
        todo!()
    }
    /// The verity parameters (validated).
    pub fn verity_params(&self) -> Result<VerityParams> {
        todo!()
    }
}

//! The signed manifest: binary envelope (signatures) around a TOML body.
//!
//! The body is parsed only after enough signatures over its raw bytes have been checked.
//! `envelope.rs`: the binary envelope, signing and signature checks; `body.rs`: the TOML
//! body and its sanity checks; `kernel.rs`: the optional `[kernel]` table. The types they
//! share are here.

mod body;
mod envelope;
mod kernel;

pub use kernel::{
    check_cmdline, check_path, KernelFile, KernelInfo, DEFAULT_INITRD_PATH, DEFAULT_KERNEL_PATH,
    MAX_CMDLINE_LEN, MAX_FILE_SIZE, MAX_PATH_LEN, STAGE2_OPTION,
};

use crate::keys::KeyId;
use crate::verity::DIGEST_LEN;

/// Envelope magic.
pub const MANIFEST_MAGIC: &[u8; 8] = b"STELEMAN";
/// Envelope version written and understood.
pub const ENVELOPE_VERSION: u32 = 1;
/// Manifest body `format_version` written and understood.
pub const FORMAT_VERSION: u64 = 1;
/// Domain separator prefixed to the body in the signed message.
pub const SIGNING_CONTEXT: &[u8] = b"stele-manifest-v1\0";

/// One kind of signed document in the envelope format: its magic, the domain separator
/// its signatures are made over (so that a signature of one kind never verifies as
/// another), and the names its errors use.
#[derive(Debug)]
pub struct Domain {
    /// The envelope's first 8 bytes.
    pub magic: &'static [u8; 8],
    /// Prefixed to the body in the signed message.
    pub context: &'static [u8],
    /// The document, in errors (`manifest`).
    pub name: &'static str,
    /// The envelope, in errors (`manifest envelope`).
    pub envelope: &'static str,
    pub body_len: &'static str,
    pub sig_count: &'static str,
    pub signatures: &'static str,
}

impl Domain {
    /// The exact message that is signed: `context || body`.
    pub fn message(&self, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(self.context.len() + body.len());
        m.extend_from_slice(self.context);
        m.extend_from_slice(body);
        m
    }
}

/// The slot manifest's domain.
pub const MANIFEST: Domain = Domain {
    magic: MANIFEST_MAGIC,
    context: SIGNING_CONTEXT,
    name: "manifest",
    envelope: "manifest envelope",
    body_len: "manifest body_len",
    sig_count: "manifest sig_count",
    signatures: "manifest signatures",
};
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
/// Largest integer of a manifest body (`rollback_index`, `created`, sizes and offsets):
/// TOML integers are signed 64-bit, so 2^63 - 1.
pub const MAX_INTEGER: u64 = i64::MAX as u64;

/// Refuses `v` above [`MAX_INTEGER`] (`what` names it): the one limit behind the body's
/// checks and the build's refusal of a `--rollback-index` no device could read. Pure.
pub fn check_integer(what: &'static str, v: u64) -> crate::Result<()> {
    if v > MAX_INTEGER {
        return Err(crate::Error::invalid(
            what,
            format!("{v} is above 2^63 - 1 = {MAX_INTEGER}, the largest integer a manifest holds (TOML's limit)"),
        ));
    }
    Ok(())
}

/// The rule of a product name (the manifest `name`, boot.toml `name`), as errors state it.
pub const NAME_RULE: &str = "use 1..=64 characters of A-Z a-z 0-9 . _ -";

/// True when `name` is a valid product name ([`NAME_RULE`]). Pure.
pub fn valid_name(name: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    !name.is_empty() && name.len() <= MAX_NAME_LEN && name.chars().all(ok)
}

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
    /// The slot's own kernel, stage-2 initramfs and command line (`[kernel]`), if any.
    pub kernel: Option<KernelInfo>,
}

/// A manifest whose signatures met the keyring's threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedManifest {
    pub manifest: Manifest,
    /// Trusted keys whose signatures verified, in envelope order.
    pub signed_by: Vec<KeyId>,
}

/// The exact message a manifest signature is over: `SIGNING_CONTEXT || body`.
pub fn signing_message(body: &[u8]) -> Vec<u8> {
    MANIFEST.message(body)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::keys::{Keyring, SigningKey};

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
            kernel: None,
        }
    }

    pub(crate) fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    pub(crate) fn signed(m: &Manifest, keys: &[u8]) -> Envelope {
        let mut e = Envelope::new(m.to_toml().into_bytes());
        for &k in keys {
            e.sign(&key(k)).unwrap();
        }
        e
    }

    pub(crate) fn ring(keys: &[u8], threshold: usize) -> Keyring {
        Keyring::new(
            keys.iter().map(|&k| key(k).verifying_key()).collect(),
            threshold,
        )
        .unwrap()
    }
}

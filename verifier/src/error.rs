//! The one error type of the verifier: each variant names what failed and where.

use std::io;

use crate::plural::{count, count_len};

/// Result alias for the verifier.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while reading or checking stele's formats.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error while reading or writing `what`.
    #[error("I/O error on {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// The input ended before `what` was complete.
    #[error("truncated image: {what} needs {} at offset {offset}, but the input has {available}", count(*needed, "byte", "bytes"))]
    Truncated {
        what: &'static str,
        offset: u64,
        needed: u64,
        available: u64,
    },
    /// A magic number did not match. For a footer the likely cause is named: the image
    /// was cut short, or it is not a slot image at all.
    #[error("bad {what} magic: not a stele {what} (found {found:02x?}){hint}", hint = magic_hint(what))]
    BadMagic { what: &'static str, found: Vec<u8> },
    /// A format version this build does not understand.
    #[error("unsupported {what} version {found} (this stele understands version {supported})")]
    UnsupportedVersion {
        what: &'static str,
        found: u64,
        supported: u64,
    },
    /// The footer's checksum does not match its contents.
    #[error("footer checksum mismatch: the footer is corrupt")]
    FooterChecksum,
    /// A field holds a value outside its allowed range.
    #[error("invalid {what}: {why}")]
    Invalid { what: &'static str, why: String },
    /// A signature by a trusted key does not verify: the document was tampered with.
    #[error("bad signature by key {key_id}: the {what} or the signature was modified")]
    BadSignature {
        key_id: String,
        /// The signed document: `manifest` or `channel`.
        what: &'static str,
    },
    /// Not enough distinct trusted keys signed the manifest.
    #[error("signature threshold not met: {} from trusted keys, {threshold} required (unknown keys: {unknown})", count_len(*valid, "valid signature", "valid signatures"))]
    ThresholdNotMet {
        valid: usize,
        threshold: usize,
        /// Key ids of signatures by keys that are not in the keyring, comma-separated, or "none".
        unknown: String,
    },
    /// The manifest body (signed and verified) is not valid UTF-8 TOML of the right shape.
    #[error("malformed manifest body: {0}")]
    Body(String),
    /// A key file does not hold the ed25519 key wanted: what it holds, and the fix.
    #[error("bad key {path}: {}", problem.describe(path))]
    Key {
        path: String,
        problem: crate::keyfile::KeyProblem,
    },
    /// The image's rollback index is below the device's rollback floor.
    #[error("rollback refused: image rollback_index {index} is below the rollback floor {floor}")]
    Rollback { index: u64, floor: u64 },
    /// A data block's hash does not match the hash tree.
    #[error("verity mismatch at data block {block}: the filesystem data was modified")]
    DataBlockMismatch { block: u64 },
    /// A hash block's hash does not match its parent (or the root hash).
    #[error("verity mismatch in hash tree: level {level} block {block} does not match")]
    HashBlockMismatch { level: usize, block: u64 },
    /// The top block of the stored hash tree does not hash to the signed root hash.
    #[error("root hash mismatch: computed {computed}, signed {expected}: hash tree mismatch (the top hash block was modified)")]
    RootHashMismatch { computed: String, expected: String },
    /// The data copied from a bundle does not hash to the signed root hash (its stored tree
    /// was checked before): the data was modified.
    #[error("root hash mismatch: the data computes {computed}, signed {expected}: the bundle's data was modified")]
    DataRootMismatch { computed: String, expected: String },
    /// A verity block size no slot image may have ([`crate::slot::check_block_size`]).
    #[error("{}", slot_block_size(what, *size))]
    SlotBlockSize { what: &'static str, size: u32 },
    /// No valid copy of the boot state.
    #[error("no valid boot state copy (both copies are corrupt or blank)")]
    NoValidState,
    /// A region to read in one piece does not fit in memory: the machine's fault, not the
    /// image's (a device with more memory can verify it).
    #[error("{what}: {bytes} bytes do not fit in memory")]
    NoMemory { what: &'static str, bytes: u64 },
    /// The signed manifest names another product than the one this device (its
    /// initramfs, `stele initramfs --name`) is bound to.
    #[error("product refused: the image is {found:?}, this device is bound to {expected:?} (stele initramfs --name): build the image with --name {expected}")]
    WrongProduct { found: String, expected: String },
}

/// The message of [`Error::SlotBlockSize`].
fn slot_block_size(what: &str, size: u32) -> String {
    use crate::slot::{MAX_SLOT_BLOCK_SIZE as MAX, MIN_SLOT_BLOCK_SIZE as MIN};
    if size.is_power_of_two() && size > MAX {
        format!(
            "invalid {what} {size}: above {MAX}, the x86-64 page size, the largest block the \
             kernel's dm-verity maps, so no device could boot this slot (use {MAX})"
        )
    } else {
        format!("invalid {what} {size}: a slot image takes a power of two from {MIN} to {MAX}")
    }
}

/// The cause added to a bad footer magic.
fn magic_hint(what: &str) -> &'static str {
    if what == "footer" {
        ": the image is truncated, or it is not a stele slot image"
    } else {
        ""
    }
}

impl Error {
    /// Shorthand for an [`Error::Invalid`].
    pub fn invalid(what: &'static str, why: impl Into<String>) -> Self {
        Error::Invalid {
            what,
            why: why.into(),
        }
    }

    /// Wraps an I/O error, turning an unexpected EOF into [`Error::Truncated`] is left to callers
    /// that know the offsets.
    pub fn io(what: &'static str, source: io::Error) -> Self {
        Error::Io { what, source }
    }
}

//! What a slot partition holds ([`Image`]), checked without reading every data block:
//! what `stele update status` shows and what an install target reads of the slot a disk
//! image boots next.

use std::io::{Read, Seek, SeekFrom};

use stele_verifier::footer::FOOTER_SIZE;
use stele_verifier::keys::Keyring;
use stele_verifier::slot::{self, VerifyOptions};

/// What a slot holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Image {
    /// Signatures (keyring threshold), layout and hash tree check out.
    Valid {
        name: String,
        version: String,
        rollback_index: u64,
    },
    /// Without trusted keys (`--disk` with no `--key`): footer, manifest, layout and hash
    /// tree check out; the signatures were not checked.
    Unverified {
        name: String,
        version: String,
        rollback_index: u64,
    },
    /// The footer is all zeros (never written) or the partial-install record of an
    /// install from a URL (`stele_engine::delta::apply::partial_record`): interrupted.
    Empty,
    /// The slot has no partition.
    Missing,
    /// Anything else, with the cause.
    Invalid(String),
}

/// Checks the image in a slot (without reading every data block) against `keyring`, or
/// without one everything but the signatures ([`Image::Unverified`]: status is not a
/// trust decision). Never fails: the outcome is the [`Image`].
pub fn inspect_slot<R: Read + Seek>(r: &mut R, len: u64, keyring: Option<&Keyring>) -> Image {
    if let Some(at) = len.checked_sub(FOOTER_SIZE) {
        let mut f = [0u8; 4096];
        let read = r
            .seek(SeekFrom::Start(at))
            .and_then(|_| r.read_exact(&mut f));
        let partial = f.starts_with(stele_engine::delta::apply::PARTIAL_MAGIC);
        if read.is_ok() && (partial || f.iter().all(|&b| b == 0)) {
            return Image::Empty;
        }
    }
    let opts = VerifyOptions {
        full: false,
        rollback_floor: None,
        product: None,
    };
    let Some(keyring) = keyring else {
        return match slot::check_unsigned(r, len) {
            Ok((_, m)) => Image::Unverified {
                name: m.name,
                version: m.version,
                rollback_index: m.rollback_index,
            },
            Err(e) => Image::Invalid(e.to_string()),
        };
    };
    match slot::verify(r, len, keyring, opts) {
        Ok((_, v)) => Image::Valid {
            name: v.manifest.name,
            version: v.manifest.version,
            rollback_index: v.manifest.rollback_index,
        },
        Err(e) => Image::Invalid(e.to_string()),
    }
}

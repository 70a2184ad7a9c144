//! Reading and checking a whole slot image (or a partition holding one) through `Read + Seek`.

use std::io::{Read, Seek};

use crate::footer::Footer;
use crate::keys::Keyring;
use crate::manifest::{Envelope, VerifiedManifest};
use crate::Result;

/// What to check besides the signatures.
#[derive(Clone, Copy, Debug, Default)]
pub struct VerifyOptions {
    /// Check every data block against the signed root hash.
    pub full: bool,
    /// Refuse a rollback_index below this.
    pub rollback_floor: Option<u64>,
}

/// Footer and envelope of a slot, located but not yet trusted.
#[derive(Clone, Debug)]
pub struct SlotLocator {
    pub footer: Footer,
    pub envelope: Envelope,
}

/// Reads the footer (last 4096 bytes of `len`) and the envelope it points at.
pub fn locate<R: Read + Seek>(r: &mut R, len: u64) -> Result<SlotLocator> {
    let _ = (r, len);
    todo!()
}

/// Signatures, rollback floor, layout sanity, the hash tree against the signed root hash,
/// and with `full` every data block.
pub fn verify<R: Read + Seek>(
    r: &mut R,
    len: u64,
    keyring: &Keyring,
    opts: VerifyOptions,
) -> Result<(SlotLocator, VerifiedManifest)> {
    let _ = (r, len, keyring, opts);
    todo!()
}

//! Measured boot: each stage extends [`PCR`] of the sha256 bank with the sha256 of the
//! verified manifest envelope (docs/BOOT.md "Measured boot").

use sha2::{Digest, Sha256};

use crate::transport::Transport;
use crate::{Result, Tpm};

/// The PCR stele measures into. 13 is for the OS (TCG PC client: 8-15) and, in the Linux
/// PCR registry, only systemd-stub's system extensions use it, which a stele UKI has
/// none of; Debian 12's firmware, shim, GRUB and systemd-stub leave it alone, and it
/// cannot be reset without a reboot (16 and 23 can).
pub const PCR: u32 = 13;

/// The digest a stage extends: sha256 of the envelope bytes. Pure.
pub fn digest(envelope: &[u8]) -> [u8; 32] {
    Sha256::digest(envelope).into()
}

/// A PCR's value after extending `value` with `digest`: sha256(value || digest). Pure.
pub fn extended(value: &[u8; 32], digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(value);
    h.update(digest);
    h.finalize().into()
}

/// Extends [`PCR`] with the envelope's digest; returns the digest.
pub fn measure<T: Transport>(tpm: &mut Tpm<T>, envelope: &[u8]) -> Result<[u8; 32]> {
    let d = digest(envelope);
    tpm.pcr_extend(PCR, &d)?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extend_is_sha256_of_old_and_new() {
        // sha256("") and the well-known first extend of a zero PCR with it.
        let d = digest(b"");
        assert_eq!(
            stele_verifier::hex::encode(&d),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let v = extended(&[0; 32], &d);
        let mut h = Sha256::new();
        h.update([0u8; 32]);
        h.update(d);
        assert_eq!(v, <[u8; 32]>::from(h.finalize()));
        assert_ne!(extended(&v, &d), v);
    }
}

//! The 4 KiB footer at the end of a slot image or partition: a locator, not trusted.

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Size of the footer in bytes, as a buffer length.
pub const FOOTER_LEN: usize = 4096;
/// Size of the footer in bytes, as a file offset.
pub const FOOTER_SIZE: u64 = FOOTER_LEN as u64;
/// Footer magic.
pub const FOOTER_MAGIC: &[u8; 8] = b"STELEFTR";
/// Footer version written and understood.
pub const FOOTER_VERSION: u32 = 1;
/// Smallest envelope: its fixed header.
pub const MIN_MANIFEST_LEN: u64 = 24;
/// Largest envelope the footer may point at.
pub const MAX_MANIFEST_LEN: u64 = 1 << 20;
/// Offset of the checksum inside the footer.
const CHECKSUM_OFFSET: usize = 4064;
const LEN: usize = FOOTER_LEN;

/// Where the manifest is. See docs/FORMATS.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footer {
    pub manifest_offset: u64,
    pub manifest_len: u64,
    pub image_len: u64,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

impl Footer {
    /// A footer for a manifest of `manifest_len` bytes at `manifest_offset`
    /// (`image_len` = their sum, saturating; an overflow is refused by [`Footer::parse`]).
    pub fn new(manifest_offset: u64, manifest_len: u64) -> Self {
        Footer {
            manifest_offset,
            manifest_len,
            image_len: manifest_offset.saturating_add(manifest_len),
        }
    }

    /// Encodes the footer (with checksum).
    pub fn to_bytes(&self) -> [u8; FOOTER_LEN] {
        let mut b = [0u8; LEN];
        b[0..8].copy_from_slice(FOOTER_MAGIC);
        b[8..12].copy_from_slice(&FOOTER_VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.manifest_offset.to_le_bytes());
        b[24..32].copy_from_slice(&self.manifest_len.to_le_bytes());
        b[32..40].copy_from_slice(&self.image_len.to_le_bytes());
        let sum = Sha256::digest(&b[..CHECKSUM_OFFSET]);
        b[CHECKSUM_OFFSET..].copy_from_slice(&sum);
        b
    }

    /// Parses and checks a footer found in the last 4096 bytes of something `container_len` long.
    pub fn parse(bytes: &[u8], container_len: u64) -> Result<Self> {
        if bytes.len() != LEN {
            return Err(Error::Truncated {
                what: "footer",
                offset: container_len.saturating_sub(FOOTER_SIZE),
                needed: FOOTER_SIZE,
                available: bytes.len() as u64,
            });
        }
        if &bytes[0..8] != FOOTER_MAGIC {
            return Err(Error::BadMagic {
                what: "footer",
                found: bytes[0..8].to_vec(),
            });
        }
        let version = u32_at(bytes, 8);
        if version != FOOTER_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "footer",
                found: u64::from(version),
                supported: u64::from(FOOTER_VERSION),
            });
        }
        if Sha256::digest(&bytes[..CHECKSUM_OFFSET]).as_slice() != &bytes[CHECKSUM_OFFSET..] {
            return Err(Error::FooterChecksum);
        }
        if bytes[12..16]
            .iter()
            .chain(&bytes[40..CHECKSUM_OFFSET])
            .any(|&b| b != 0)
        {
            return Err(Error::invalid(
                "footer",
                "reserved bytes are not zero (written by a newer stele?)",
            ));
        }
        let f = Footer {
            manifest_offset: u64_at(bytes, 16),
            manifest_len: u64_at(bytes, 24),
            image_len: u64_at(bytes, 32),
        };
        if !(MIN_MANIFEST_LEN..=MAX_MANIFEST_LEN).contains(&f.manifest_len) {
            return Err(Error::invalid(
                "footer manifest_len",
                format!(
                    "{} bytes, must be between {MIN_MANIFEST_LEN} and {MAX_MANIFEST_LEN}",
                    f.manifest_len
                ),
            ));
        }
        let end = f.manifest_offset.checked_add(f.manifest_len);
        if end != Some(f.image_len) {
            return Err(Error::invalid(
                "footer image_len",
                format!(
                    "{} is not manifest_offset {} + manifest_len {}",
                    f.image_len, f.manifest_offset, f.manifest_len
                ),
            ));
        }
        let footer_start = container_len
            .checked_sub(FOOTER_SIZE)
            .ok_or(Error::Truncated {
                what: "footer",
                offset: 0,
                needed: FOOTER_SIZE,
                available: container_len,
            })?;
        if f.image_len > footer_start {
            return Err(Error::invalid(
                "footer manifest_offset",
                format!(
                    "the manifest ends at {} but the footer starts at {footer_start}: \
                     the image is larger than its container",
                    f.image_len
                ),
            ));
        }
        Ok(f)
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test data sizes are small
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_is_as_documented() {
        let f = Footer::new(0x1000, 300);
        let b = f.to_bytes();
        assert_eq!(&b[..8], b"STELEFTR");
        assert_eq!(b[8..12], [1, 0, 0, 0]);
        assert_eq!(b[16..24], 0x1000u64.to_le_bytes());
        assert_eq!(b[24..32], 300u64.to_le_bytes());
        assert_eq!(b[32..40], 0x112cu64.to_le_bytes());
        assert_eq!(&b[4064..], Sha256::digest(&b[..4064]).as_slice());
        assert_eq!(Footer::parse(&b, 0x3000).unwrap(), f);
    }

    fn resealed(mut b: [u8; LEN]) -> [u8; LEN] {
        let sum = Sha256::digest(&b[..CHECKSUM_OFFSET]);
        b[CHECKSUM_OFFSET..].copy_from_slice(&sum);
        b
    }

    #[test]
    fn every_check_fires() {
        let good = Footer::new(8192, 100).to_bytes();
        let len = 16384;
        let mut b = good;
        b[0] = b'X';
        assert!(matches!(
            Footer::parse(&b, len),
            Err(Error::BadMagic { .. })
        ));
        let mut b = good;
        b[8] = 2;
        assert!(matches!(
            Footer::parse(&b, len),
            Err(Error::UnsupportedVersion { found: 2, .. })
        ));
        let mut b = good;
        b[100] = 1;
        assert!(matches!(Footer::parse(&b, len), Err(Error::FooterChecksum)));
        assert!(matches!(
            Footer::parse(&resealed(b), len),
            Err(Error::Invalid { .. })
        ));
        let mut b = good;
        b[13] = 1;
        assert!(matches!(
            Footer::parse(&resealed(b), len),
            Err(Error::Invalid { .. })
        ));
        for (off, mlen) in [(0, 23), (0, (1 << 20) + 1)] {
            let b = Footer::new(off, mlen).to_bytes();
            assert!(Footer::parse(&b, 1 << 30).is_err(), "{off} {mlen}");
        }
        let mut f = Footer::new(8192, 100);
        f.image_len += 1;
        assert!(Footer::parse(&f.to_bytes(), len).is_err());
        let f = Footer::new(u64::MAX - 10, 100);
        assert!(Footer::parse(&f.to_bytes(), u64::MAX).is_err());
        // The manifest must end before the footer starts.
        let b = Footer::new(8192, 4096).to_bytes();
        assert!(Footer::parse(&b, 16384).is_ok());
        assert!(Footer::parse(&b, 16383).is_err());
        assert!(matches!(
            Footer::parse(&b, 100),
            Err(Error::Truncated { .. })
        ));
        assert!(matches!(
            Footer::parse(&b[..4095], 16384),
            Err(Error::Truncated { .. })
        ));
    }

    proptest! {
        #[test]
        fn round_trip(off in 0u64..(1 << 40), len in 24u64..=(1 << 20), slack in 0u64..(1 << 20)) {
            let f = Footer::new(off, len);
            let container = off + len + slack + FOOTER_SIZE;
            prop_assert_eq!(Footer::parse(&f.to_bytes(), container).unwrap(), f);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4200), len: u64) {
            let _ = Footer::parse(&bytes, len);
        }

        #[test]
        fn mutated_footer_never_panics(pos in 0usize..LEN, val: u8, len: u64) {
            let mut b = Footer::new(4096, 1000).to_bytes();
            b[pos] = val;
            let _ = Footer::parse(&resealed(b), len);
        }
    }
}

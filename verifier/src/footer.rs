//! The 4 KiB footer at the end of a slot image or partition: a locator, not trusted.

use crate::Result;

/// Size of the footer in bytes.
pub const FOOTER_SIZE: u64 = 4096;
/// Footer magic.
pub const FOOTER_MAGIC: &[u8; 8] = b"STELEFTR";

/// Where the manifest is. See docs/FORMATS.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footer {
    pub manifest_offset: u64,
    pub manifest_len: u64,
    pub image_len: u64,
}

impl Footer {
    /// Encodes the footer (with checksum).
    pub fn to_bytes(&self) -> [u8; FOOTER_SIZE as usize] {
        todo!()
    }
    /// Parses and checks a footer found in the last 4096 bytes of something `container_len` long.
    pub fn parse(bytes: &[u8], container_len: u64) -> Result<Self> {
        let _ = (bytes, container_len);
        todo!()
    }
}

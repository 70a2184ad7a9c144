//! Target `footer`: bytes as a footer found at the end of a container.
//!
//! Input: one flag byte (bit 0: recompute the footer's checksum first, so that the checks
//! behind the checksum see mutated fields), the container length (u64, little-endian),
//! then the footer bytes.

use sha2::{Digest, Sha256};
use stele_verifier::footer::{Footer, FOOTER_LEN, FOOTER_SIZE};
use stele_verifier::Error;

use crate::Seed;

/// Offset of the checksum in the footer (docs/FORMATS.md).
const CHECKSUM_AT: usize = 4064;

pub const STAGES: &[&str] = &["length and magic", "version", "checksum", "fields"];

/// The footer bytes and container length of an input (resealed if its flag says so).
fn decode(data: &[u8]) -> (Vec<u8>, u64) {
    let reseal = data.first().is_some_and(|f| f & 1 == 1);
    let mut len = [0u8; 8];
    let head = data.get(1..9).unwrap_or(&[]);
    len[..head.len()].copy_from_slice(head);
    let mut bytes = data.get(9..).unwrap_or(&[]).to_vec();
    if reseal && bytes.len() == FOOTER_LEN {
        let sum = Sha256::digest(&bytes[..CHECKSUM_AT]);
        bytes[CHECKSUM_AT..].copy_from_slice(&sum);
    }
    (bytes, u64::from_le_bytes(len))
}

fn encode(reseal: bool, container_len: u64, bytes: &[u8]) -> Vec<u8> {
    let mut v = vec![u8::from(reseal)];
    v.extend_from_slice(&container_len.to_le_bytes());
    v.extend_from_slice(bytes);
    v
}

pub fn run(data: &[u8]) {
    let (bytes, container_len) = decode(data);
    if let Ok(footer) = Footer::parse(&bytes, container_len) {
        // What parses re-encodes to the same bytes.
        assert_eq!(&footer.to_bytes()[..], &bytes[..]);
        // What slot::locate relies on: the manifest lies wholly before the footer.
        let end = footer.manifest_offset + footer.manifest_len;
        assert!(
            end <= container_len - FOOTER_SIZE,
            "{footer:?} in {container_len}"
        );
    }
}

pub fn depth(data: &[u8]) -> usize {
    let (bytes, container_len) = decode(data);
    match Footer::parse(&bytes, container_len) {
        Ok(_) => 4,
        Err(Error::Truncated { .. }) if bytes.len() != FOOTER_LEN => 0,
        Err(Error::BadMagic { .. }) => 0,
        Err(Error::UnsupportedVersion { .. }) => 1,
        Err(Error::FooterChecksum) => 2,
        Err(_) => 3,
    }
}

pub fn seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    // Valid: an image file, a manifest ending at the footer, a partition, the largest manifest.
    for (name, off, len, container) in [
        ("file", 4096, 600, 12288),
        ("manifest-up-to-footer", 8192, 4096, 16384),
        ("partition", 4096, 24, 1 << 30),
        ("largest-manifest", 0, 1 << 20, (1 << 20) + 4096),
    ] {
        let b = Footer::new(off, len).to_bytes();
        out.push(Seed::new(
            format!("valid-{name}"),
            encode(false, container, &b),
        ));
    }
    let good = Footer::new(8192, 700).to_bytes();
    let container = 16384;
    let edited = |at: usize, v: u8| {
        let mut b = good;
        b[at] = v;
        b
    };
    // Behind the checksum (resealed by the target): each field check.
    for (name, b, container) in [
        ("reserved-12", edited(12, 1), container),
        ("reserved-100", edited(100, 0x80), container),
        (
            "manifest-len-23",
            Footer::new(8192, 23).to_bytes(),
            container,
        ),
        (
            "manifest-len-1MiB+1",
            Footer::new(0, (1 << 20) + 1).to_bytes(),
            1 << 30,
        ),
        ("image-len-off-by-one", edited(32, good[32] ^ 1), container),
        (
            "offset-overflows",
            Footer::new(u64::MAX - 10, 100).to_bytes(),
            u64::MAX,
        ),
        ("manifest-past-footer", good, 8192 + 700 + 4095),
        ("container-shorter-than-footer", good, 100),
    ] {
        out.push(Seed::new(
            format!("resealed-{name}"),
            encode(true, container, &b),
        ));
    }
    // Before the checksum: magic, version, a flipped bit, one byte short.
    out.push(Seed::new(
        "bad-magic",
        encode(false, container, &edited(0, b'X')),
    ));
    out.push(Seed::new(
        "version-2",
        encode(false, container, &edited(8, 2)),
    ));
    let mut flipped = good;
    flipped[17] ^= 1;
    out.push(Seed::new("bit-flipped", encode(false, container, &flipped)));
    out.push(Seed::new(
        "truncated-by-one",
        encode(false, container, &good[..FOOTER_LEN - 1]),
    ));
    out
}

//! Test helpers: whole slot images built in memory, for this crate's unit tests and, with
//! the `test-util` feature, for the tests of the crates above it and the fuzz targets'
//! inputs (fuzz/inputs). Never for production.

#![allow(clippy::cast_possible_truncation)] // test data sizes are small

use crate::footer::Footer;
use crate::keys::{Keyring, SigningKey};
use crate::manifest::{Envelope, FilesystemInfo, FsType, Manifest, VerityInfo};
use crate::state::{BootState, SlotState};
use crate::verity::{build_tree, VerityParams};

pub mod grow;

/// A deterministic signing key.
pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// A keyring trusting `key(1)` alone.
pub fn ring() -> Keyring {
    Keyring::new(vec![key(1).verifying_key()], 1).unwrap()
}

/// [`ring`], built once, for what borrows a keyring for the whole test.
pub fn trusted() -> &'static Keyring {
    static RING: std::sync::OnceLock<Keyring> = std::sync::OnceLock::new();
    RING.get_or_init(ring)
}

fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// A whole slot image laid out as docs/FORMATS.md says, signed by `key(1)`, with data bytes
/// derived from `seed`; returns the image and its manifest offset.
pub fn image(blocks: u64, rollback_index: u64, seed: u8) -> (Vec<u8>, u64) {
    image_signed_by(blocks, rollback_index, seed, 1)
}

/// [`image`] signed by `key(signer)`.
pub fn image_signed_by(blocks: u64, rollback_index: u64, seed: u8, signer: u8) -> (Vec<u8>, u64) {
    let params = VerityParams::new(4096, 4096, blocks, vec![0x5a; 32]).unwrap();
    signed(&params, rollback_index, seed, signer)
}

/// An [`image`] (rollback index 1) with other verity block sizes.
pub fn image_with_blocks(blocks: u64, data_block_size: u32, hash_block_size: u32) -> Vec<u8> {
    let p = VerityParams::new(data_block_size, hash_block_size, blocks, vec![0x5a; 32]).unwrap();
    signed(&p, 1, 0, 1).0
}

/// A slot image of `params`, signed by `key(signer)`.
fn signed(params: &VerityParams, rollback_index: u64, seed: u8, signer: u8) -> (Vec<u8>, u64) {
    let params = params.clone();
    let (img, root) = data_and_tree(&params, seed);
    let m = manifest_for(
        &params,
        root,
        FsType::Erofs,
        rollback_index,
        format!("{rollback_index}.{seed}"),
    );
    let mut env = Envelope::new(m.to_toml().into_bytes());
    env.sign(&key(signer)).unwrap();
    assemble(img, &env.to_bytes(), 0)
}

/// `params.data_size()` bytes of data derived from `seed`, then their hash tree (the first
/// two regions of a slot image); and the root hash.
pub fn data_and_tree(params: &VerityParams, seed: u8) -> (Vec<u8>, [u8; 32]) {
    // Byte i is (i % 251) + seed, built from whole periods (fast in instrumented fuzz builds).
    let period: Vec<u8> = (0..251u8).map(|i| i.wrapping_add(seed)).collect();
    let size = params.data_size() as usize;
    let mut img = Vec::with_capacity(size + period.len());
    while img.len() < size {
        img.extend_from_slice(&period);
    }
    img.truncate(size);
    let (area, root) = build_tree(&img[..], params, &mut |_| {}).unwrap();
    img.extend_from_slice(&area);
    (img, root)
}

/// The manifest (name `demo`) that describes data and tree laid out by [`data_and_tree`].
pub fn manifest_for(
    params: &VerityParams,
    root: [u8; 32],
    fs_type: FsType,
    rollback_index: u64,
    version: String,
) -> Manifest {
    Manifest {
        name: "demo".into(),
        version,
        rollback_index,
        created: 0,
        filesystem: FilesystemInfo {
            fs_type,
            size: params.data_size() - 10,
        },
        verity: VerityInfo {
            data_block_size: params.data_block_size(),
            hash_block_size: params.hash_block_size(),
            data_blocks: params.data_blocks(),
            hash_offset: params.data_size(),
            salt: params.salt().to_vec(),
            root_hash: root,
        },
        kernel: None,
    }
}

/// A slot image (signed by `key(1)`) whose data are `blocks` (4096 bytes each), with a
/// salt of 32 `salt` bytes, hash blocks of `hbs` bytes, version `<index>.<salt>`.
pub fn image_of_blocks(blocks: &[Vec<u8>], salt: u8, index: u64, hbs: u32) -> Vec<u8> {
    let params = VerityParams::new(4096, hbs, blocks.len() as u64, vec![salt; 32]).unwrap();
    let mut data: Vec<u8> = blocks.concat();
    let (area, root) = build_tree(&data[..], &params, &mut |_| {}).unwrap();
    data.extend_from_slice(&area);
    let m = manifest_for(
        &params,
        root,
        FsType::Erofs,
        index,
        format!("{index}.{salt}"),
    );
    let mut env = Envelope::new(m.to_toml().into_bytes());
    env.sign(&key(1)).unwrap();
    assemble(data, &env.to_bytes(), 0).0
}

/// A slot partition of `slot_len` bytes (0xee) holding `img` at 0 and its footer at the end.
pub fn slot_with(img: &[u8], slot_len: usize) -> Vec<u8> {
    let f = crate::footer::FOOTER_LEN;
    let mut s = vec![0xee; slot_len];
    s[..img.len()].copy_from_slice(img);
    s[slot_len - f..].copy_from_slice(&img[img.len() - f..]);
    s
}

/// Lays out a slot image as docs/FORMATS.md says around `data_and_tree` (see
/// [`data_and_tree`]): the envelope at the next multiple of 4096, then `slack` more bytes
/// (a partition larger than the image) and the footer at the end. Returns the image and
/// its manifest offset.
pub fn assemble(mut img: Vec<u8>, envelope: &[u8], slack: usize) -> (Vec<u8>, u64) {
    let manifest_offset = round_up(img.len() as u64, 4096);
    img.resize(manifest_offset as usize, 0);
    img.extend_from_slice(envelope);
    let footer_at = round_up(img.len() as u64, 4096) as usize + slack;
    img.resize(footer_at, 0);
    img.extend_from_slice(&Footer::new(manifest_offset, envelope.len() as u64).to_bytes());
    (img, manifest_offset)
}

/// A boot state from (priority, tries_remaining, successful) of a and b; sequence 1,
/// floor 0, no unconfirmed boot.
pub fn state(a: (u8, u8, bool), b: (u8, u8, bool)) -> BootState {
    let mk = |(priority, tries_remaining, successful)| SlotState {
        priority,
        tries_remaining,
        successful,
        unconfirmed: 0,
    };
    BootState {
        sequence: 1,
        rollback_floor: 0,
        slots: [mk(a), mk(b)],
    }
}

//! Targets `slot_locate` (bytes as a whole slot image: locate, then a full verify) and
//! `slot_verify` (a slot image built from a structured input, signed, then tampered with:
//! the whole `slot::verify`, tree-only and full, so the code behind the signature check,
//! body, verity parameters, hash tree walk and data check, is reached).
//!
//! Input of `slot_verify` ([`SlotInput`], in [`crate::codec`]): the real verity shape
//! (block sizes, block count, salt, data), the manifest fields, which keys sign and the
//! keyring's threshold, the rollback floor, values the body claims instead of the true
//! ones, edits of the body text (or a raw body), and, after signing, byte edits of one
//! region of the image and a cut off its end.

use std::io::Cursor;

use stele_verifier::footer::{Footer, FOOTER_LEN};
use stele_verifier::keys::Keyring;
use stele_verifier::manifest::{Envelope, FsType, Manifest};
use stele_verifier::slot::{check_unsigned, locate, verify, VerifyOptions};
use stele_verifier::testutil::{assemble, data_and_tree, manifest_for};
use stele_verifier::verity::{build_tree, VerityParams, MAX_SALT_LEN};
use stele_verifier::Error;

use crate::codec::{Reader, Writer};
use crate::{key, ring, Seed, KEYS};

pub const STAGES: &[&str] = &[
    "footer",
    "envelope",
    "signatures",
    "manifest body",
    "rollback floor",
    "layout and hash tree",
    "data",
];

/// The rollback floor `slot_locate` verifies against.
const LOCATE_FLOOR: u64 = 1;
/// Real block sizes an input can choose (the body may claim others).
pub const BLOCK_SIZES: [u32; 4] = [4096, 512, 1024, 2048];
/// Most data bytes of a built image, so that one run stays fast.
pub const MAX_DATA: u64 = 160 << 10;
const FS_TYPES: [FsType; 3] = [FsType::Erofs, FsType::Squashfs, FsType::Ext4];
/// Longest name or version an input writes (the manifest allows 64).
const MAX_TEXT: usize = 80;
/// Longest claimed salt (the verifier allows 256).
const MAX_CLAIMED_SALT: usize = MAX_SALT_LEN + 8;
const MAX_EDITS: usize = 8;

/// How far `img` gets through `slot::verify` (an index into [`STAGES`]; 7 = verified).
pub fn ladder(img: &[u8], keyring: &Keyring, floor: Option<u64>) -> usize {
    let len = img.len() as u64;
    let footer = img
        .len()
        .checked_sub(FOOTER_LEN)
        .is_some_and(|at| Footer::parse(&img[at..], len).is_ok());
    if !footer {
        return 0;
    }
    let Ok(loc) = locate(&mut Cursor::new(img), len) else {
        return 1;
    };
    let manifest = match loc.envelope.verify(keyring) {
        Ok(v) => v.manifest,
        Err(Error::BadSignature { .. } | Error::ThresholdNotMet { .. }) => return 2,
        Err(_) => return 3,
    };
    if floor.is_some_and(|f| manifest.rollback_index < f) {
        return 4;
    }
    let opts = |full| VerifyOptions {
        full,
        rollback_floor: floor,
        product: None,
    };
    if verify(&mut Cursor::new(img), len, keyring, opts(false)).is_err() {
        return 5;
    }
    if verify(&mut Cursor::new(img), len, keyring, opts(true)).is_err() {
        return 6;
    }
    7
}

/// The property a full verification promises: the data hashes, through the tree stored
/// in the image, to the signed root hash (recomputed here with the build side's code).
fn assert_data_matches(img: &[u8], m: &Manifest) {
    let params = m.verity_params().expect("verified parameters are valid");
    let data_end = usize::try_from(m.verity.hash_offset).expect("inside the image");
    let tree_end = data_end + usize::try_from(params.hash_tree_size()).expect("inside the image");
    let (tree, root) =
        build_tree(&img[..data_end], &params, &mut |_| {}).expect("the data is all there");
    assert_eq!(
        root, m.verity.root_hash,
        "a verified image's data has another root hash"
    );
    assert_eq!(
        tree,
        img[data_end..tree_end],
        "a verified image's tree differs"
    );
}

pub fn run_image(data: &[u8]) {
    let len = data.len() as u64;
    let located = locate(&mut Cursor::new(data), len);
    let opts = VerifyOptions {
        full: true,
        rollback_floor: Some(LOCATE_FLOOR),
        product: None,
    };
    if let Ok((_, v)) = verify(&mut Cursor::new(data), len, ring(1), opts) {
        assert!(located.is_ok());
        assert_data_matches(data, &v.manifest);
    }
}

pub fn image_depth(data: &[u8]) -> usize {
    ladder(data, ring(1), Some(LOCATE_FLOOR))
}

/// Values the manifest body claims instead of the true ones.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claims {
    pub data_block_size: Option<u32>,
    pub hash_block_size: Option<u32>,
    pub data_blocks: Option<u64>,
    pub hash_offset: Option<u64>,
    pub salt: Option<Vec<u8>>,
    pub root_hash: Option<[u8; 32]>,
    pub fs_size: Option<u64>,
}

/// An edit of the body text: replace, insert or delete one byte at `at` (modulo its length).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyEdit {
    pub op: EditOp,
    pub at: u16,
    pub byte: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EditOp {
    Replace,
    Insert,
    Delete,
}
const EDIT_OPS: [EditOp; 3] = [EditOp::Replace, EditOp::Insert, EditOp::Delete];

/// The regions of a slot image (docs/FORMATS.md), in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Region {
    Data,
    Tree,
    /// Between the tree and the manifest: never read.
    TreeGap,
    Envelope,
    /// Between the manifest and the footer: never read.
    FooterGap,
    Footer,
}
const REGIONS: [Region; 6] = [
    Region::Data,
    Region::Tree,
    Region::TreeGap,
    Region::Envelope,
    Region::FooterGap,
    Region::Footer,
];

/// After signing: `byte ^= xor` at `at` (modulo the region's length) inside `region`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageEdit {
    pub region: Region,
    pub at: u32,
    pub xor: u8,
}

/// The structured input of `slot_verify`. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotInput {
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub data_blocks: u64,
    /// Derives the data bytes.
    pub seed: u8,
    pub salt: Vec<u8>,
    pub fs_type: FsType,
    pub name: String,
    pub version: String,
    pub rollback_index: u64,
    pub created: u64,
    /// Bit `i` set: `key(i)` signs (in key order).
    pub signers: u8,
    /// Of the keyring's two trusted keys: 1 or 2.
    pub threshold: usize,
    pub floor: Option<u64>,
    pub claims: Claims,
    pub body_edits: Vec<BodyEdit>,
    /// Bytes between the manifest and the footer (a partition larger than the image).
    pub slack: u16,
    pub image_edits: Vec<ImageEdit>,
    /// Bytes cut off the end after signing.
    pub cut: u16,
    /// The body, instead of the manifest's TOML (and its edits).
    pub raw_body: Option<Vec<u8>>,
}

fn index_of<T: PartialEq>(all: &[T], v: &T) -> usize {
    all.iter()
        .position(|x| x == v)
        .expect("a value the decoder produces")
}

fn max_blocks(data_block_size: u32) -> u64 {
    MAX_DATA / u64::from(data_block_size)
}

impl SlotInput {
    /// Decodes any bytes.
    pub fn decode(data: &[u8]) -> Self {
        let mut r = Reader::new(data);
        let data_block_size = BLOCK_SIZES[r.choice(BLOCK_SIZES.len())];
        let hash_block_size = BLOCK_SIZES[r.choice(BLOCK_SIZES.len())];
        let data_blocks = 1 + u64::from(r.u16()) % max_blocks(data_block_size);
        let seed = r.u8();
        let salt = r.bytes(MAX_SALT_LEN);
        let fs_type = FS_TYPES[r.choice(FS_TYPES.len())];
        let name = r.latin1(MAX_TEXT);
        let version = r.latin1(MAX_TEXT);
        let rollback_index = r.u64();
        let created = r.u64();
        // Zero means "key(0) signs", so that a short input is signed.
        let signers = (r.u8() ^ 1) & ((1 << KEYS) - 1);
        let threshold = 1 + r.choice(2);
        let floor = r.opt(Reader::u64);
        let claims = Claims {
            data_block_size: r.opt(Reader::u32),
            hash_block_size: r.opt(Reader::u32),
            data_blocks: r.opt(Reader::u64),
            hash_offset: r.opt(Reader::u64),
            salt: r.opt(|r| r.bytes(MAX_CLAIMED_SALT)),
            root_hash: r.opt(|r| std::array::from_fn(|_| r.u8())),
            fs_size: r.opt(Reader::u64),
        };
        let body_edits = r.list(MAX_EDITS, |r| BodyEdit {
            op: EDIT_OPS[r.choice(EDIT_OPS.len())],
            at: r.u16(),
            byte: r.u8(),
        });
        let slack = r.u16();
        let image_edits = r.list(MAX_EDITS, |r| ImageEdit {
            region: REGIONS[r.choice(REGIONS.len())],
            at: r.u32(),
            xor: r.u8(),
        });
        let cut = r.u16();
        let raw_body = r.opt(Reader::rest);
        SlotInput {
            data_block_size,
            hash_block_size,
            data_blocks,
            seed,
            salt,
            fs_type,
            name,
            version,
            rollback_index,
            created,
            signers,
            threshold,
            floor,
            claims,
            body_edits,
            slack,
            image_edits,
            cut,
            raw_body,
        }
    }

    /// The bytes that [`SlotInput::decode`] reads as `self` (for a `self` it can return).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        let sizes = BLOCK_SIZES.len();
        w.choice(index_of(&BLOCK_SIZES, &self.data_block_size), sizes);
        w.choice(index_of(&BLOCK_SIZES, &self.hash_block_size), sizes);
        let blocks = self.data_blocks - 1;
        assert!(blocks < max_blocks(self.data_block_size), "{blocks} blocks");
        w.u16(u16::try_from(blocks).expect("at most MAX_DATA / 512 blocks"));
        w.u8(self.seed);
        w.bytes(&self.salt, MAX_SALT_LEN);
        w.choice(index_of(&FS_TYPES, &self.fs_type), FS_TYPES.len());
        w.latin1(&self.name, MAX_TEXT);
        w.latin1(&self.version, MAX_TEXT);
        w.u64(self.rollback_index);
        w.u64(self.created);
        w.u8(self.signers ^ 1);
        w.choice(self.threshold - 1, 2);
        w.opt(self.floor.as_ref(), |w, v| w.u64(*v));
        let c = &self.claims;
        w.opt(c.data_block_size.as_ref(), |w, v| w.u32(*v));
        w.opt(c.hash_block_size.as_ref(), |w, v| w.u32(*v));
        w.opt(c.data_blocks.as_ref(), |w, v| w.u64(*v));
        w.opt(c.hash_offset.as_ref(), |w, v| w.u64(*v));
        w.opt(c.salt.as_ref(), |w, v| w.bytes(v, MAX_CLAIMED_SALT));
        w.opt(c.root_hash.as_ref(), |w, v| v.iter().for_each(|b| w.u8(*b)));
        w.opt(c.fs_size.as_ref(), |w, v| w.u64(*v));
        w.list(&self.body_edits, MAX_EDITS, |w, e| {
            w.choice(index_of(&EDIT_OPS, &e.op), EDIT_OPS.len());
            w.u16(e.at);
            w.u8(e.byte);
        });
        w.u16(self.slack);
        w.list(&self.image_edits, MAX_EDITS, |w, e| {
            w.choice(index_of(&REGIONS, &e.region), REGIONS.len());
            w.u32(e.at);
            w.u8(e.xor);
        });
        w.u16(self.cut);
        w.opt(self.raw_body.as_ref(), |w, v| w.rest(v));
        w.finish()
    }

    /// A valid image of this shape, signed by `key(0)`, nothing claimed, edited or cut.
    pub fn valid(
        fs_type: FsType,
        data_block_size: u32,
        hash_block_size: u32,
        data_blocks: u64,
        salt: Vec<u8>,
    ) -> Self {
        SlotInput {
            data_block_size,
            hash_block_size,
            data_blocks,
            seed: 0,
            salt,
            fs_type,
            name: "demo".into(),
            version: "1.0".into(),
            rollback_index: 1,
            created: 1_700_000_000,
            signers: 1,
            threshold: 1,
            floor: None,
            claims: Claims::default(),
            body_edits: Vec::new(),
            slack: 0,
            image_edits: Vec::new(),
            cut: 0,
            raw_body: None,
        }
    }

    /// Builds the image: data and tree, the (claimed) manifest, the signed envelope, the
    /// footer; then the image edits and the cut.
    pub fn build(&self) -> Built {
        let params = VerityParams::new(
            self.data_block_size,
            self.hash_block_size,
            self.data_blocks,
            self.salt.clone(),
        )
        .expect("the decoder keeps the real shape valid");
        let (data_and_tree, root) = data_and_tree(&params, self.seed);
        let mut honest = manifest_for(
            &params,
            root,
            self.fs_type,
            self.rollback_index,
            self.version.clone(),
        );
        honest.name.clone_from(&self.name);
        honest.created = self.created;
        let mut m = honest.clone();
        let (c, v) = (&self.claims, &mut m.verity);
        v.data_block_size = c.data_block_size.unwrap_or(v.data_block_size);
        v.hash_block_size = c.hash_block_size.unwrap_or(v.hash_block_size);
        v.data_blocks = c.data_blocks.unwrap_or(v.data_blocks);
        v.hash_offset = c.hash_offset.unwrap_or(v.hash_offset);
        v.salt = c.salt.clone().unwrap_or_else(|| v.salt.clone());
        v.root_hash = c.root_hash.unwrap_or(v.root_hash);
        m.filesystem.size = c.fs_size.unwrap_or(m.filesystem.size);
        let body = match &self.raw_body {
            Some(raw) => raw.clone(),
            None => edit_body(m.to_toml().into_bytes(), &self.body_edits),
        };
        let honest = m == honest && body == honest.to_toml().as_bytes();
        let mut env = Envelope::new(body);
        for i in (0..KEYS).filter(|i| self.signers & (1 << i) != 0) {
            // A body the envelope cannot hold stays unsigned; the verifier refuses it.
            let _ = env.sign(key(i));
        }
        let envelope = env.to_bytes();
        let tree_end = data_and_tree.len();
        let (mut image, moff) = assemble(data_and_tree, &envelope, usize::from(self.slack));
        let moff = usize::try_from(moff).expect("a small image");
        let footer_at = image.len() - FOOTER_LEN;
        let data_end = usize::try_from(params.data_size()).expect("a small image");
        let regions = [
            0..data_end,
            data_end..tree_end,
            tree_end..moff,
            moff..moff + envelope.len(),
            moff + envelope.len()..footer_at,
            footer_at..image.len(),
        ];
        let original = image.clone();
        for e in &self.image_edits {
            let r = &regions[index_of(&REGIONS, &e.region)];
            if !r.is_empty() {
                let at = r.start + usize::try_from(e.at).unwrap_or(0) % r.len();
                image[at] ^= e.xor;
            }
        }
        let changed = regions.clone().map(|r| image[r.clone()] != original[r]);
        let dbs = usize::try_from(self.data_block_size).expect("a small block size");
        let first_changed_block = image[..data_end]
            .chunks(dbs)
            .zip(original[..data_end].chunks(dbs))
            .position(|(now, was)| now != was)
            .map(|b| b as u64);
        image.truncate(image.len().saturating_sub(usize::from(self.cut)));
        Built {
            image,
            manifest: m,
            honest,
            ring: ring(self.threshold),
            changed,
            first_changed_block,
            levels: params.levels(),
        }
    }
}

/// `body` with `edits` applied in order.
fn edit_body(mut body: Vec<u8>, edits: &[BodyEdit]) -> Vec<u8> {
    for e in edits {
        let at = usize::from(e.at) % (body.len() + 1);
        match e.op {
            EditOp::Replace if at < body.len() => body[at] = e.byte,
            EditOp::Insert => body.insert(at, e.byte),
            EditOp::Delete if at < body.len() => {
                body.remove(at);
            }
            _ => {}
        }
    }
    body
}

/// A slot image built from a [`SlotInput`], and what is known about it.
#[derive(Debug)]
pub struct Built {
    pub image: Vec<u8>,
    /// The manifest the body describes (before any body edit).
    pub manifest: Manifest,
    /// The body is the TOML of a manifest that tells the truth about the image.
    pub honest: bool,
    pub ring: &'static Keyring,
    /// Which regions the image edits changed, in [`REGIONS`] order.
    pub changed: [bool; 6],
    /// The first data block the edits changed.
    pub first_changed_block: Option<u64>,
    pub levels: usize,
}

impl Built {
    fn changed(&self, r: Region) -> bool {
        self.changed[index_of(&REGIONS, &r)]
    }
}

type Outcome = stele_verifier::Result<(
    stele_verifier::slot::SlotLocator,
    stele_verifier::manifest::VerifiedManifest,
)>;

pub fn run(data: &[u8]) {
    let input = SlotInput::decode(data);
    let b = input.build();
    let img = &b.image[..];
    let len = img.len() as u64;
    let opts = |full| VerifyOptions {
        full,
        rollback_floor: input.floor,
        product: None,
    };
    let quick = verify(&mut Cursor::new(img), len, b.ring, opts(false));
    let full = verify(&mut Cursor::new(img), len, b.ring, opts(true));
    let unsigned = check_unsigned(&mut Cursor::new(img), len);
    if let Ok((_, v)) = &full {
        assert_data_matches(img, &v.manifest);
        assert!(quick.is_ok(), "full check passed, tree-only check failed");
    }
    if let Ok((_, v)) = &quick {
        let m = unsigned.as_ref().map(|(_, m)| m).ok();
        assert_eq!(
            m,
            Some(&v.manifest),
            "verified, but the signer's check disagrees"
        );
    }
    if b.honest && b.manifest.check().is_ok() {
        // What the build side accepts, the device reads back the same.
        assert_eq!(
            Manifest::parse_body(b.manifest.to_toml().as_bytes()).ok(),
            Some(b.manifest.clone())
        );
        expect_honest(&input, &b, &quick, &full);
    }
}

/// The outcome of both checks of an image whose body tells the truth, from what was done
/// to it after signing.
fn expect_honest(input: &SlotInput, b: &Built, quick: &Outcome, full: &Outcome) {
    let both = |ok: fn(&Outcome) -> bool, what: &str| {
        assert!(ok(quick), "tree-only check: {what}: {quick:?}");
        assert!(ok(full), "full check: {what}: {full:?}");
    };
    if input.cut > 0 || b.changed(Region::Footer) {
        return both(|r| r.is_err(), "a cut or edited footer must be refused");
    }
    if b.changed(Region::Envelope) {
        // Unknown keys' signatures may change without effect; the body may not.
        for (_, v) in [quick, full].into_iter().flatten() {
            assert_eq!(v.manifest, b.manifest);
        }
        return;
    }
    let trusted: Vec<u8> = (0..2).filter(|i| input.signers & (1 << i) != 0).collect();
    if trusted.len() < input.threshold {
        return both(
            |r| matches!(r, Err(Error::ThresholdNotMet { .. })),
            "threshold not met",
        );
    }
    if input.floor.is_some_and(|f| f > input.rollback_index) {
        return both(|r| matches!(r, Err(Error::Rollback { .. })), "rollback");
    }
    if b.changed(Region::Tree) {
        return both(
            |r| {
                matches!(
                    r,
                    Err(Error::RootHashMismatch { .. } | Error::HashBlockMismatch { .. })
                )
            },
            "edited hash tree",
        );
    }
    if let Some(block) = b.first_changed_block {
        let mismatch =
            |r: &Outcome| matches!(r, Err(Error::DataBlockMismatch { block: b }) if *b == block);
        assert!(
            mismatch(full),
            "full check of edited data block {block}: {full:?}"
        );
        // Without hash blocks the tree-only check checks the one data block too.
        if b.levels == 0 {
            assert!(
                mismatch(quick),
                "one-block image with edited data: {quick:?}"
            );
        } else {
            assert!(quick.is_ok(), "tree-only check of edited data: {quick:?}");
        }
        return;
    }
    // Untouched (but for the bytes nobody reads): accepted, as signed, by the keys that signed.
    let signed_by: Vec<_> = trusted
        .iter()
        .map(|&i| stele_verifier::keys::key_id(&key(i).verifying_key()))
        .collect();
    for r in [quick, full] {
        match r {
            Ok((_, v)) => {
                assert_eq!(v.manifest, b.manifest);
                assert_eq!(v.signed_by, signed_by);
            }
            Err(e) => panic!("a valid image was refused: {e}"),
        }
    }
}

pub fn depth(data: &[u8]) -> usize {
    let input = SlotInput::decode(data);
    let b = input.build();
    ladder(&b.image, b.ring, input.floor)
}

/// Valid images of every filesystem type, real block-size combination (512, 1024, 4096
/// data and hash blocks), with and without salt, with one block (no hash block), one hash
/// level and several levels (where the block sizes allow it and the data stays under
/// [`MAX_DATA`]).
pub fn shapes() -> Vec<SlotInput> {
    let mut out = Vec::new();
    for dbs in [512, 1024, 4096] {
        for hbs in [512, 1024, 4096] {
            let per_block = u64::from(hbs) / 32;
            // The hash tree starts at a multiple of the hash block size.
            let unit = u64::from((hbs / dbs).max(1));
            let mut counts: Vec<u64> = [1, 2, per_block + 1]
                .map(|b| b.div_ceil(unit) * unit)
                .to_vec();
            counts.dedup();
            for blocks in counts {
                if blocks * u64::from(dbs) > MAX_DATA {
                    continue;
                }
                for salt in [Vec::new(), vec![0x5a; 32]] {
                    let fs = FS_TYPES[out.len() % FS_TYPES.len()];
                    let mut s = SlotInput::valid(fs, dbs, hbs, blocks, salt);
                    s.rollback_index = 1 + out.len() as u64;
                    s.seed = u8::try_from(out.len()).unwrap_or(0);
                    out.push(s);
                }
            }
        }
    }
    out
}

fn shape_name(s: &SlotInput) -> String {
    format!(
        "{}-d{}-h{}-{}blocks-{}",
        s.fs_type.name(),
        s.data_block_size,
        s.hash_block_size,
        s.data_blocks,
        if s.salt.is_empty() { "nosalt" } else { "salt" }
    )
}

/// Near misses around one small valid image with two hash levels: each check of the
/// verifier fails for one of them (or, for bytes nobody reads, none).
pub fn variants() -> Vec<(&'static str, SlotInput)> {
    let base = SlotInput::valid(FsType::Erofs, 512, 512, 17, vec![0x11; 8]);
    let with = |f: &dyn Fn(&mut SlotInput)| {
        let mut s = base.clone();
        f(&mut s);
        s
    };
    let edit = |region, at, xor| {
        with(&move |s: &mut SlotInput| s.image_edits = vec![ImageEdit { region, at, xor }])
    };
    let claim = |f: fn(&mut Claims)| with(&move |s: &mut SlotInput| f(&mut s.claims));
    let body_edit = |op, at, byte| {
        with(&move |s: &mut SlotInput| s.body_edits = vec![BodyEdit { op, at, byte }])
    };
    let other_body = crate::envelope::sample_manifests()[1]
        .to_toml()
        .into_bytes();
    vec![
        ("unsigned", with(&|s| s.signers = 0)),
        ("signed-twice", with(&|s| s.signers = 0b011)),
        ("signed-and-unknown-key", with(&|s| s.signers = 0b101)),
        ("unknown-key-only", with(&|s| s.signers = 0b100)),
        ("threshold-2-one-signature", with(&|s| s.threshold = 2)),
        (
            "threshold-2-met",
            with(&|s| (s.threshold, s.signers) = (2, 0b011)),
        ),
        ("floor-met", with(&|s| s.floor = Some(1))),
        ("below-floor", with(&|s| s.floor = Some(2))),
        ("rollback-0", with(&|s| s.rollback_index = 0)),
        ("rollback-above-i64", with(&|s| s.rollback_index = 1 << 63)),
        ("name-invalid", with(&|s| s.name = "bad name".into())),
        ("version-empty", with(&|s| s.version = String::new())),
        ("partition-larger", with(&|s| s.slack = 8192)),
        ("truncated-by-one", with(&|s| s.cut = 1)),
        ("data-bit-flipped", edit(Region::Data, 600, 1)),
        ("tree-top-bit-flipped", edit(Region::Tree, 3, 0x80)),
        ("tree-level0-bit-flipped", edit(Region::Tree, 700, 1)),
        ("tree-gap-edited", edit(Region::TreeGap, 5, 0xff)),
        ("envelope-magic-edited", edit(Region::Envelope, 0, 1)),
        ("envelope-body-edited", edit(Region::Envelope, 300, 1)),
        ("footer-gap-edited", edit(Region::FooterGap, 9, 0xff)),
        ("footer-bit-flipped", edit(Region::Footer, 20, 4)),
        (
            "claims-data-block-size",
            claim(|c| c.data_block_size = Some(1024)),
        ),
        (
            "claims-hash-block-size-3000",
            claim(|c| c.hash_block_size = Some(3000)),
        ),
        ("claims-more-blocks", claim(|c| c.data_blocks = Some(18))),
        (
            "claims-hash-offset",
            claim(|c| c.hash_offset = Some(512 * 16)),
        ),
        ("claims-other-salt", claim(|c| c.salt = Some(vec![0x12; 8]))),
        ("claims-long-salt", claim(|c| c.salt = Some(vec![0; 257]))),
        (
            "claims-root-hash",
            claim(|c| c.root_hash = Some([0xab; 32])),
        ),
        (
            "claims-fs-too-big",
            claim(|c| c.fs_size = Some(512 * 17 + 1)),
        ),
        ("body-byte-replaced", body_edit(EditOp::Replace, 40, b'#')),
        ("body-byte-inserted", body_edit(EditOp::Insert, 2, b'x')),
        ("body-byte-deleted", body_edit(EditOp::Delete, 0, 0)),
        (
            "raw-body-of-another-image",
            with(&|s| s.raw_body = Some(other_body.clone())),
        ),
    ]
}

fn all_inputs() -> Vec<(String, SlotInput)> {
    let mut out: Vec<_> = shapes().into_iter().map(|s| (shape_name(&s), s)).collect();
    out.extend(variants().into_iter().map(|(n, s)| (n.to_string(), s)));
    out
}

pub fn seeds() -> Vec<Seed> {
    all_inputs()
        .into_iter()
        .map(|(name, s)| Seed::new(name, s.encode()))
        .collect()
}

pub fn image_seeds() -> Vec<Seed> {
    all_inputs()
        .into_iter()
        .map(|(name, s)| Seed::new(name, s.build().image))
        .collect()
}

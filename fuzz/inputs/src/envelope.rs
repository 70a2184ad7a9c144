//! Targets `envelope` (bytes as a manifest envelope) and `manifest_verify` (bytes as a
//! manifest body, signed by a trusted key, then verified: the body parser and its checks
//! behind the signature check).

use stele_verifier::manifest::{Envelope, FsType, KernelInfo, Manifest};
use stele_verifier::testutil::manifest_for;
use stele_verifier::verity::VerityParams;
use stele_verifier::Error;

use crate::{key, ring, Seed};

pub const STAGES: &[&str] = &["structure", "signatures", "body"];
pub const BODY_STAGES: &[&str] = &["UTF-8", "TOML", "manifest fields"];

/// Verifying `env` against the targets' keyring: how far it got (after the structure).
fn verified_depth(env: &Envelope) -> usize {
    match env.verify(ring(1)) {
        Ok(_) => 3,
        Err(Error::BadSignature { .. } | Error::ThresholdNotMet { .. }) => 1,
        Err(_) => 2,
    }
}

pub fn run(data: &[u8]) {
    if let Ok(env) = Envelope::parse(data) {
        // What parses re-encodes to the same bytes.
        assert_eq!(env.to_bytes(), data);
        let unverified = env.unverified_manifest();
        if let Ok(verified) = env.verify(ring(1)) {
            // Checking the signatures does not change what the body says.
            assert_eq!(unverified.ok(), Some(verified.manifest));
        }
    }
}

pub fn depth(data: &[u8]) -> usize {
    Envelope::parse(data).map_or(0, |env| verified_depth(&env))
}

/// `body` in an envelope signed by `key(0)`, which the keyring trusts.
fn signed(body: &[u8]) -> Option<Envelope> {
    let mut env = Envelope::new(body.to_vec());
    env.sign(key(0)).ok()?;
    Some(env)
}

pub fn run_body(data: &[u8]) {
    let Some(env) = signed(data) else {
        return;
    };
    let verified = env.verify(ring(1));
    // A good signature leaves the body parser to decide, exactly as without signatures.
    let parsed = Manifest::parse_body(data);
    assert_eq!(
        verified.as_ref().ok().map(|v| &v.manifest),
        parsed.as_ref().ok()
    );
    if let Ok(verified) = verified {
        // An accepted manifest re-encodes to a body that parses to the same manifest.
        let text = verified.manifest.to_toml();
        assert_eq!(
            Manifest::parse_body(text.as_bytes()).ok(),
            Some(verified.manifest)
        );
    }
}

pub fn body_depth(data: &[u8]) -> usize {
    let Ok(text) = std::str::from_utf8(data) else {
        return 0;
    };
    if toml::from_str::<toml::Table>(text).is_err() {
        return 1;
    }
    if Manifest::parse_body(data).is_err() {
        return 2;
    }
    3
}

/// Valid manifests of each filesystem type and a few verity shapes (for bodies only: no
/// image matches their root hash).
pub fn sample_manifests() -> Vec<Manifest> {
    [
        (FsType::Erofs, 4096, 4096, 300, vec![0x5a; 32]),
        (FsType::Squashfs, 512, 1024, 40, Vec::new()),
        (FsType::Ext4, 1024, 512, 1, vec![1, 2, 3]),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (fs, dbs, hbs, blocks, salt))| {
        let params = VerityParams::new(dbs, hbs, blocks, salt).expect("valid verity parameters");
        let mut m = manifest_for(&params, [0xab; 32], fs, i as u64 + 1, format!("{i}.0"));
        m.created = 1_700_000_000;
        // One body with the slot's own kernel (`[kernel]`).
        if fs == FsType::Squashfs {
            m.kernel = Some(KernelInfo::at_default_paths(
                (8_000_000, [0x11; 32]),
                (3_000_000, [0x22; 32]),
                "console=ttyS0 quiet".into(),
            ));
        }
        m
    })
    .collect()
}

pub fn seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    let ms = sample_manifests();
    for m in &ms {
        let fs = m.filesystem.fs_type.name();
        let body = m.to_toml().into_bytes();
        for (signers, label) in [
            (&[][..], "unsigned"),
            (&[0][..], "signed"),
            (&[0, 1][..], "signed-twice"),
            (&[2, 0][..], "signed-and-unknown-key"),
            (&[2][..], "unknown-key-only"),
        ] {
            let mut env = Envelope::new(body.clone());
            for &k in signers {
                env.sign(key(k)).expect("a signable envelope");
            }
            out.push(Seed::new(format!("{fs}-{label}"), env.to_bytes()));
        }
    }
    // Near misses around one signed envelope: each structural check, and tampering.
    let mut env = Envelope::new(ms[0].to_toml().into_bytes());
    env.sign(key(0)).expect("a signable envelope");
    env.sign(key(1)).expect("a signable envelope");
    let good = env.to_bytes();
    let edited = |at: usize, v: u8| {
        let mut b = good.clone();
        b[at] = v;
        b
    };
    let mut dup = env.clone();
    dup.signatures[1] = dup.signatures[0].clone();
    let mut not_toml = Envelope::new(b"format_version = 1\nname = ".to_vec());
    not_toml.sign(key(0)).expect("a signable envelope");
    for (name, bytes) in [
        ("truncated-by-one", good[..good.len() - 1].to_vec()),
        ("trailing-byte", [&good[..], b"\n"].concat()),
        ("bad-magic", edited(0, b'X')),
        ("version-2", edited(8, 2)),
        ("body-len-0", [&good[..12], &[0; 4], &good[16..]].concat()),
        ("sig-count-17", edited(16, 17)),
        ("reserved", edited(21, 1)),
        (
            "signature-bit-flipped",
            edited(24 + 8 + 5, good[24 + 8 + 5] ^ 1),
        ),
        (
            "body-bit-flipped",
            edited(good.len() - 3, good[good.len() - 3] ^ 1),
        ),
        ("same-key-twice", dup.to_bytes()),
        ("signed-body-not-toml", not_toml.to_bytes()),
    ] {
        out.push(Seed::new(name, bytes));
    }
    out
}

/// Edits of a valid body that fail one check each (or, for `created`, none).
fn body_variants(base: &str) -> Vec<(&'static str, String)> {
    let line = |key: &str| {
        base.lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .map(str::to_string)
            .expect("the key is in to_toml's output")
    };
    let set = |key: &str, value: &str| base.replace(&line(key), &format!("{key} = {value}"));
    vec![
        ("format-version-2", set("format_version", "2")),
        ("format-version-string", set("format_version", "\"1\"")),
        ("unknown-key", format!("{base}extra = 1\n")),
        ("algorithm-sha1", set("algorithm", "\"sha1\"")),
        ("salt-dash", set("salt", "\"-\"")),
        ("salt-not-hex", set("salt", "\"zz\"")),
        (
            "root-hash-31-bytes",
            set("root_hash", &format!("\"{}\"", "ab".repeat(31))),
        ),
        ("name-with-space", set("name", "\"bad name\"")),
        ("version-empty", set("version", "\"\"")),
        ("hash-offset-wrong", set("hash_offset", "4097")),
        ("fs-size-too-big", set("size", "999999999")),
        (
            "rollback-above-i64",
            set("rollback_index", "9223372036854775808"),
        ),
        ("block-size-3000", set("data_block_size", "3000")),
        ("data-blocks-0", set("data_blocks", "0")),
        ("fs-type-btrfs", set("type", "\"btrfs\"")),
        ("created-max", set("created", "9223372036854775807")),
        (
            "no-verity-table",
            base[..base.find("[verity]").unwrap_or(base.len())].to_string(),
        ),
    ]
}

pub fn body_seeds() -> Vec<Seed> {
    let ms = sample_manifests();
    let mut out: Vec<Seed> = ms
        .iter()
        .map(|m| Seed::new(m.filesystem.fs_type.name(), m.to_toml().into_bytes()))
        .collect();
    let base = ms[0].to_toml();
    for (name, text) in body_variants(&base) {
        out.push(Seed::new(name, text.into_bytes()));
    }
    let mut not_utf8 = base.into_bytes();
    not_utf8[20] = 0xff;
    out.push(Seed::new("not-utf-8", not_utf8));
    out
}

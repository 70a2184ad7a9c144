//! Malformed input never panics: a clear one-line error and exit 1.

use crate::fixture::Fixture;
use crate::util::*;

fn refused(fx: &Fixture, name: &str, bytes: &[u8], p: &str, needles: &[&str]) {
    let path = fx.path(name);
    std::fs::write(&path, bytes).unwrap();
    let path = path.display().to_string();
    fails(&stele(&["verify", &path, "--key", p]), 1, needles);
    fails(&stele(&["verify", &path, "--key", p, "--full"]), 1, needles);
    let out = stele(&["inspect", &path]);
    assert!(out.code == 0 || out.code == 1, "inspect {name}: {out:?}");
}

#[test]
fn empty_and_truncated_images() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("a");
    let img = fx.build("s.img", &k);
    let bytes = std::fs::read(&img).unwrap();
    let r = regions(&bytes);
    refused(&fx, "empty.img", &[], &p, &["truncated"]);
    let cuts = [
        1,
        4095,
        r.hash_offset / 2,
        r.hash_offset,
        r.hash_offset + 4096,
        r.hash_tree_end,
        r.manifest_offset,
        r.manifest_offset + 30,
        r.manifest_offset + r.manifest_len,
        r.footer,
        r.footer + 2048,
        bytes.len() - 1,
    ];
    for cut in cuts {
        refused(
            &fx,
            &format!("cut{cut}.img"),
            &bytes[..cut],
            &p,
            &["truncated"],
        );
    }
    // Cutting the end off and keeping a valid footer: the manifest is outside the file.
    let mut short = bytes[..r.hash_offset].to_vec();
    short.extend_from_slice(&bytes[r.footer..]);
    refused(&fx, "short.img", &short, &p, &[]);
}

#[test]
fn footer_pointing_outside_and_absurd_lengths() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("a");
    let img = fx.build("s.img", &k);
    let bytes = std::fs::read(&img).unwrap();
    let r = regions(&bytes);
    let with_footer = |mo: u64, ml: u64, il: u64| {
        let mut b = bytes[..r.footer].to_vec();
        b.extend_from_slice(&footer_bytes(mo, ml, il));
        b
    };
    let (mo, ml) = (r.manifest_offset as u64, r.manifest_len as u64);
    let big = bytes.len() as u64 * 4;
    refused(&fx, "outside.img", &with_footer(big, ml, big + ml), &p, &[]);
    refused(
        &fx,
        "overlap.img",
        &with_footer(r.footer as u64 - 10, ml, r.footer as u64 - 10 + ml),
        &p,
        &[],
    );
    refused(
        &fx,
        "huge.img",
        &with_footer(mo, u64::MAX - mo, u64::MAX),
        &p,
        &[],
    );
    refused(
        &fx,
        "wrap.img",
        &with_footer(u64::MAX - 5, ml, (u64::MAX - 5).wrapping_add(ml)),
        &p,
        &[],
    );
    refused(&fx, "tiny.img", &with_footer(mo, 3, mo + 3), &p, &[]);
    refused(
        &fx,
        "mismatch.img",
        &with_footer(mo, ml, mo + ml + 1),
        &p,
        &[],
    );

    // Envelope fields out of range, with a consistent footer.
    let env = &bytes[r.manifest_offset..r.manifest_offset + r.manifest_len];
    let patch = |off: usize, v: u32| {
        let mut e = env.to_vec();
        e[off..off + 4].copy_from_slice(&v.to_le_bytes());
        with_envelope(&bytes, &e)
    };
    refused(&fx, "bodylen.img", &patch(12, u32::MAX), &p, &[]);
    refused(&fx, "bodylen0.img", &patch(12, 0), &p, &[]);
    refused(&fx, "sigcount.img", &patch(16, 1000), &p, &[]);
    refused(&fx, "sigcount0.img", &patch(16, 0), &p, &[]);
    refused(&fx, "reserved.img", &patch(20, 1), &p, &[]);
    refused(&fx, "envversion.img", &patch(8, 2), &p, &["version"]);
    let mut trailing = env.to_vec();
    trailing.push(0);
    refused(
        &fx,
        "trailing.img",
        &with_envelope(&bytes, &trailing),
        &p,
        &[],
    );
    let mut magic = env.to_vec();
    magic[0] = b'X';
    refused(
        &fx,
        "magic.img",
        &with_envelope(&bytes, &magic),
        &p,
        &["magic"],
    );
}

/// Writes `body` as the manifest of `img` with no signatures, then signs it with `stele sign`.
/// The image with `body`, validly signed by the private key `k` (signed here, in the
/// test: `stele sign` itself refuses a body that does not describe the image).
fn resigned(fx: &Fixture, bytes: &[u8], body: &[u8], k: &str, name: &str) -> String {
    let path = fx.path(name);
    let pem = std::fs::read_to_string(k).unwrap();
    let key = stele_verifier::keys::parse_private_key(pem.as_bytes(), k).unwrap();
    let mut env = stele_verifier::manifest::Envelope::new(body.to_vec());
    env.sign(&key).unwrap();
    std::fs::write(&path, with_envelope(bytes, &env.to_bytes())).unwrap();
    path.display().to_string()
}

/// `stele sign` refuses to sign a body that is malformed or does not describe the image:
/// a signer must know what it signs.
#[test]
fn sign_refuses_bodies_that_do_not_describe_the_image() {
    let fx = Fixture::new();
    let (k, _) = fx.keygen("a");
    let img = fx.build("s.img", &k);
    let bytes = std::fs::read(&img).unwrap();
    let good = String::from_utf8(body(&bytes)).unwrap();
    let root = body_str(&good, "root_hash");
    let wrong_root = good.replace(&root, &"0".repeat(64));
    for (name, b, cause) in [
        (
            "junk.img",
            b"this is = not [toml".to_vec(),
            "malformed manifest body",
        ),
        ("root.img", wrong_root.into_bytes(), "root hash"),
    ] {
        let path = fx.path(name);
        std::fs::write(&path, with_envelope(&bytes, &unsigned_envelope(&b))).unwrap();
        let before = std::fs::read(&path).unwrap();
        let path_s = path.display().to_string();
        fails(&stele(&["sign", &path_s, "--key", &k]), 1, &[cause]);
        assert_eq!(std::fs::read(&path).unwrap(), before, "{name} was changed");
    }
}

#[test]
fn validly_signed_but_malformed_bodies() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("a");
    let img = fx.build("s.img", &k);
    let bytes = std::fs::read(&img).unwrap();
    let good = String::from_utf8(body(&bytes)).unwrap();

    // Sanity: re-signing the original body gives a valid image, so the failures below are
    // about the body alone.
    let same = resigned(&fx, &bytes, good.as_bytes(), &k, "same.img");
    ok(stele(&["verify", &same, "--key", &p, "--full"]));

    let mut non_utf8 = good.clone().into_bytes();
    non_utf8.extend_from_slice(b"# \xff\xfe\n");
    let t = resigned(&fx, &bytes, &non_utf8, &k, "utf8.img");
    fails(
        &stele(&["verify", &t, "--key", &p]),
        1,
        &["malformed manifest body"],
    );

    let v2 = good.replace("format_version = 1", "format_version = 2");
    assert_ne!(v2, good);
    let t = resigned(&fx, &bytes, v2.as_bytes(), &k, "v2.img");
    fails(&stele(&["verify", &t, "--key", &p]), 1, &["version"]);

    let unknown = format!("{good}\n[extra]\nx = 1\n");
    let t = resigned(&fx, &bytes, unknown.as_bytes(), &k, "unknown.img");
    fails(
        &stele(&["verify", &t, "--key", &p]),
        1,
        &["malformed manifest body"],
    );

    let t = resigned(&fx, &bytes, b"this is = not [toml", &k, "toml.img");
    fails(
        &stele(&["verify", &t, "--key", &p]),
        1,
        &["malformed manifest body"],
    );

    // A signed body whose layout does not fit the file (data blocks beyond the manifest).
    let blocks = body_int(&good, "data_blocks");
    let lie = good.replace(
        &format!("data_blocks = {blocks}"),
        &format!("data_blocks = {}", blocks * 1000),
    );
    let t = resigned(&fx, &bytes, lie.as_bytes(), &k, "layout.img");
    fails(&stele(&["verify", &t, "--key", &p]), 1, &[]);
}

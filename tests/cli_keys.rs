//! Keys: keygen safety, wrong keys, thresholds, OpenSSL-made keys and signatures, --signer-cmd.

use std::os::unix::fs::PermissionsExt;

use crate::fixture::Fixture;
use crate::util::*;

#[test]
fn keygen_refuses_overwrite_and_writes_private_0600() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("a");
    let mode = std::fs::metadata(&k).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let before = (std::fs::read(&k).unwrap(), std::fs::read(&p).unwrap());
    let out = stele(&["keygen", "--private", &k, "--public", &p]);
    fails(&out, 3, &["already exists", "--force"]);
    // Only the public file existing is enough to refuse, and nothing is written.
    let k2 = fx.p("fresh.key");
    let out = stele(&["keygen", "--private", &k2, "--public", &p]);
    fails(&out, 3, &["already exists"]);
    assert!(!std::path::Path::new(&k2).exists());
    assert_eq!(
        before,
        (std::fs::read(&k).unwrap(), std::fs::read(&p).unwrap())
    );
    ok(stele(&[
        "keygen",
        "--private",
        &k,
        "--public",
        &p,
        "--force",
    ]));
    assert_ne!(before.0, std::fs::read(&k).unwrap());
    let mode = std::fs::metadata(&k).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // The key is a standard PKCS#8 ed25519 key.
    let o = host("openssl", &["pkey", "-in", &k, "-noout", "-text"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("ED25519"), "{o:?}");
}

#[test]
fn wrong_key_is_refused() {
    let fx = Fixture::new();
    let (k1, _p1) = fx.keygen("one");
    let (_k2, p2) = fx.keygen("two");
    let img = fx.build("s.img", &k1);
    let out = stele(&["verify", &img, "--key", &p2]);
    fails(&out, 1, &["threshold not met", "unknown"]);
}

#[test]
fn threshold_two_needs_two_signatures() {
    let fx = Fixture::new();
    let (k1, p1) = fx.keygen("one");
    let (k2, p2) = fx.keygen("two");
    let img = fx.build("s.img", &k1);
    let out = stele(&[
        "verify",
        &img,
        "--key",
        &p1,
        "--key",
        &p2,
        "--threshold",
        "2",
    ]);
    fails(&out, 1, &["threshold not met", "1 valid", "2 required"]);
    ok(stele(&["sign", &img, "--key", &k2]));
    let s = ok(stele(&[
        "verify",
        &img,
        "--key",
        &p1,
        "--key",
        &p2,
        "--threshold",
        "2",
    ]));
    assert!(
        s.starts_with("verified: demo 1.0.0 rollback_index=7 signed by "),
        "{s}"
    );
    assert_eq!(signature(&std::fs::read(&img).unwrap(), 1).0.len(), 16);
    // Signing again with the same key replaces its signature: still two.
    ok(stele(&["sign", &img, "--key", &k2]));
    assert_eq!(regions(&std::fs::read(&img).unwrap()).sig_count, 2);
    // A directory keyring works the same.
    let dir = fx.path("ring");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(&p1, dir.join("1.pem")).unwrap();
    std::fs::copy(&p2, dir.join("2.pem")).unwrap();
    let d = dir.display().to_string();
    ok(stele(&["verify", &img, "--keys", &d, "--threshold", "2"]));
    // A threshold above the number of keys is a usage error.
    let out = stele(&["verify", &img, "--keys", &d, "--threshold", "3"]);
    fails(&out, 2, &["threshold"]);
}

#[test]
fn openssl_generated_key_builds_and_verifies() {
    let fx = Fixture::new();
    let (k, p) = (fx.p("o.key"), fx.p("o.pem"));
    let o = host("openssl", &["genpkey", "-algorithm", "ed25519", "-out", &k]);
    assert_eq!(o.code, 0, "{o:?}");
    let o = host("openssl", &["pkey", "-in", &k, "-pubout", "-out", &p]);
    assert_eq!(o.code, 0, "{o:?}");
    let img = fx.build("s.img", &k);
    ok(stele(&["verify", &img, "--key", &p, "--full"]));
}

#[test]
fn openssl_verifies_a_stele_signature() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("a");
    let img = fx.build("s.img", &k);
    let bytes = std::fs::read(&img).unwrap();
    let mut msg = b"stele-manifest-v1\0".to_vec();
    msg.extend_from_slice(&body(&bytes));
    let (_, sig) = signature(&bytes, 0);
    std::fs::write(fx.path("msg"), &msg).unwrap();
    std::fs::write(fx.path("sig"), &sig).unwrap();
    let args = [
        "pkeyutl",
        "-verify",
        "-rawin",
        "-pubin",
        "-inkey",
        &p,
        "-in",
        &fx.p("msg"),
        "-sigfile",
        &fx.p("sig"),
    ];
    let o = host("openssl", &args);
    assert_eq!(o.code, 0, "openssl refused stele's signature: {o:?}");
    // The check is real: a changed message fails.
    msg[20] ^= 1;
    std::fs::write(fx.path("msg"), &msg).unwrap();
    let o = host("openssl", &args);
    assert_ne!(o.code, 0, "openssl accepted a modified message");
}

#[test]
fn external_signer_command_adds_a_checked_signature() {
    let fx = Fixture::new();
    let (k1, p1) = fx.keygen("one");
    let (k2, p2) = fx.keygen("two");
    let img = fx.build("s.img", &k1);
    // OpenSSL 3.0 cannot sign ed25519 from a pipe ("unable to determine file size for
    // oneshot operation"), so the signer is a two-line wrapper that spools stdin to a file.
    need_tool("openssl");
    let script = fx.path("signer.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nset -e\nt=$(mktemp)\ntrap 'rm -f \"$t\"' EXIT\ncat > \"$t\"\n\
         openssl pkeyutl -sign -rawin -inkey \"$1\" -in \"$t\"\n",
    )
    .unwrap();
    let cmd = format!("sh {} {k2}", script.display());
    let s = ok(stele(&[
        "sign",
        &img,
        "--signer-cmd",
        &cmd,
        "--public",
        &p2,
    ]));
    assert!(s.contains("external"), "{s}");
    ok(stele(&[
        "verify",
        &img,
        "--key",
        &p1,
        "--key",
        &p2,
        "--threshold",
        "2",
    ]));
    // A signer whose signature does not match --public is refused; the image is unchanged.
    let (_k3, p3) = fx.keygen("three");
    let before = std::fs::read(&img).unwrap();
    let out = stele(&["sign", &img, "--signer-cmd", &cmd, "--public", &p3]);
    fails(&out, 1, &["signature"]);
    assert_eq!(before, std::fs::read(&img).unwrap());
    // A signer that fails is an environment error naming it.
    let out = stele(&["sign", &img, "--signer-cmd", "false", "--public", &p2]);
    fails(&out, 3, &["external signer", "false"]);
}

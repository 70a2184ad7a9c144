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

/// Every other kind of key file is named, with the openssl command that converts it, as a
/// usage error (exit 2), and nothing is built.
#[test]
fn key_files_of_another_kind_say_what_they_are_and_how_to_convert_them() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("good");
    let img = fx.build("s.img", &k);
    let o = |args: &[&str]| {
        let o = host("openssl", args);
        assert_eq!(o.code, 0, "openssl {args:?}: {o:?}");
    };
    let f = |name: &str| fx.p(name);
    o(&["pkey", "-in", &k, "-outform", "DER", "-out", &f("k.der")]);
    o(&[
        "pkey",
        "-in",
        &k,
        "-pubout",
        "-outform",
        "DER",
        "-out",
        &f("p.der"),
    ]);
    o(&[
        "pkey",
        "-in",
        &k,
        "-aes256",
        "-passout",
        "pass:x",
        "-out",
        &f("enc.pem"),
    ]);
    o(&["genpkey", "-algorithm", "rsa", "-out", &f("rsa.key")]);
    o(&[
        "pkey",
        "-in",
        &f("rsa.key"),
        "-pubout",
        "-out",
        &f("rsa.pem"),
    ]);
    o(&[
        "genpkey",
        "-algorithm",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &f("ec.key"),
    ]);
    o(&[
        "req",
        "-x509",
        "-key",
        &k,
        "-subj",
        "/CN=stele",
        "-days",
        "1",
        "-out",
        &f("cert.pem"),
    ]);
    std::fs::write(fx.path("empty.pem"), "").unwrap();
    std::fs::write(fx.path("junk.pem"), [0x00, 0xff, 0x13, 0x37]).unwrap();
    std::fs::write(fx.path("text.pem"), "release key\n").unwrap();
    let public_wanted = [
        (
            "p.der",
            vec![
                "ed25519 public key in DER",
                "openssl pkey -pubin -in",
                "-out",
            ],
        ),
        (
            "k.der",
            vec!["private key where a public key is wanted", "-pubout"],
        ),
        (
            &k[..],
            vec![
                "private key where a public key is wanted",
                "openssl pkey -in",
            ],
        ),
        ("enc.pem", vec!["encrypted PKCS#8 private key", "-pubout"]),
        (
            "rsa.pem",
            vec![
                "an RSA public key",
                "ed25519 keys only: openssl genpkey -algorithm ed25519",
            ],
        ),
        ("ec.key", vec!["an EC private key", "ed25519 keys only"]),
        (
            "cert.pem",
            vec!["X.509 certificate", "openssl x509 -in", "-pubkey"],
        ),
        ("empty.pem", vec!["the file is empty", "SPKI PEM"]),
        ("junk.pem", vec!["neither PEM text nor DER"]),
        ("text.pem", vec!["without a -----BEGIN line"]),
    ];
    for (name, needles) in public_wanted {
        let path = if name.starts_with('/') {
            name.to_string()
        } else {
            f(name)
        };
        let out = stele(&["verify", &img, "--key", &path]);
        let mut all = vec!["bad key", name];
        all.extend(needles);
        fails(&out, 2, &all);
    }
    let root = fx.tree("root", false).build();
    let convert = format!("openssl pkey -in {} -out", f("k.der"));
    let private_wanted = [
        ("k.der", vec!["ed25519 private key in DER", &convert[..]]),
        (&p[..], vec!["public key where the private key is wanted"]),
        (
            "enc.pem",
            vec!["encrypted PKCS#8 private key", "openssl pkey -in"],
        ),
        ("rsa.key", vec!["an RSA private key", "ed25519 keys only"]),
        ("empty.pem", vec!["the file is empty", "PKCS#8 PEM"]),
    ];
    for (name, needles) in private_wanted {
        let path = if name.starts_with('/') {
            name.to_string()
        } else {
            f(name)
        };
        fails(&fx.image(&root, &path).run("new.img"), 2, &needles);
    }
    assert!(!fx.path("new.img").exists());
    // The converted files work.
    o(&["pkey", "-pubin", "-in", &f("p.der"), "-out", &f("p.pem")]);
    ok(stele(&["verify", &img, "--key", &f("p.pem")]));
    o(&[
        "pkey",
        "-in",
        &f("enc.pem"),
        "-passin",
        "pass:x",
        "-out",
        &f("plain.pem"),
    ]);
    ok(fx.image(&root, &f("plain.pem")).run("new.img"));
}

/// A key directory reads *.pem and *.pub (the README's `release.pub`), sorted by name, and
/// says which other files it skipped.
#[test]
fn key_directories_read_pem_and_pub_files_and_name_what_they_skip() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("release");
    let img = fx.build("s.img", &k);
    let dir = fx.path("trusted");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("README"), "the release team's keys\n").unwrap();
    let d = dir.display().to_string();
    let readme = dir.join("README").display().to_string();
    let skipped = format!(
        "stele: warning: {readme}: skipped: a key directory holds public keys named *.pem or *.pub"
    );
    // Only the README: no key, an error after the warning.
    let out = stele(&["verify", &img, "--keys", &d]);
    assert_eq!(out.code, 2, "{out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{out:?}");
    assert_eq!(lines[0], skipped);
    assert!(
        lines[1].starts_with("stele: error: invalid key directory: ")
            && lines[1].contains("holds no public keys (files named *.pem or *.pub)"),
        "{out:?}"
    );
    std::fs::copy(&p, dir.join("release.pub")).unwrap();
    let out = stele(&["verify", &img, "--keys", &d]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stderr.lines().collect::<Vec<_>>(), [skipped.as_str()]);
    assert!(out.stdout.starts_with("verified: demo"), "{out:?}");
}

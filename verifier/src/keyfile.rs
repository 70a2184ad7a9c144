//! Reading a key file the user gave: an ed25519 public key (SPKI PEM) or private key
//! (PKCS#8 PEM), and for anything else what the file holds instead — empty, DER, another
//! algorithm, an encrypted key, a certificate, the other half of the pair, an OpenSSH key —
//! with the `openssl` command that turns it into what stele takes ([`KeyProblem`]). Pure:
//! the callers read the bytes.

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};

/// Which half of a key pair a command wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Half {
    Public,
    Private,
}

impl Half {
    fn name(self) -> &'static str {
        match self {
            Half::Public => "public",
            Half::Private => "private",
        }
    }

    /// What stele takes, for the end of a message.
    fn expected(self) -> &'static str {
        match self {
            Half::Public => {
                "expected an ed25519 public key in SPKI PEM (-----BEGIN PUBLIC KEY-----)"
            }
            Half::Private => {
                "expected an ed25519 private key in PKCS#8 PEM (-----BEGIN PRIVATE KEY-----), \
                 as `openssl genpkey -algorithm ed25519` writes it"
            }
        }
    }
}

/// Why a key file is not the ed25519 key wanted: what was found in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyProblem {
    /// Nothing (or only white space) in the file.
    Empty { want: Half },
    /// Binary bytes that are not DER.
    NotAKey { want: Half },
    /// Text without a `-----BEGIN` line.
    NoPem { want: Half },
    /// A PEM block whose label is not a key stele knows.
    Label { label: String, want: Half },
    /// A key in OpenSSH's own format.
    OpenSsh { private: bool, want: Half },
    /// An X.509 certificate (of an ed25519 key or not).
    Certificate { ed25519: bool, want: Half },
    /// An encrypted PKCS#8 private key.
    Encrypted { want: Half },
    /// A key of another algorithm.
    Algorithm {
        algorithm: String,
        private: bool,
        want: Half,
    },
    /// An ed25519 key in DER rather than PEM.
    Der { private: bool, want: Half },
    /// The other half of an ed25519 key pair, in PEM.
    OtherHalf { want: Half },
    /// An ed25519 key that does not decode.
    Malformed { why: String, want: Half },
}

impl KeyProblem {
    /// The message for the key file at `path`: what was found, and the fix. Pure.
    pub fn describe(&self, path: &str) -> String {
        let convert = |private: bool| {
            let pubin = if private { "" } else { "-pubin " };
            format!("openssl pkey {pubin}-in {path} -out {}", pem_name(path, ""))
        };
        let pubout = format!(
            "openssl pkey -in {path} -pubout -out {}",
            pem_name(path, "pub")
        );
        let genpkey = format!(
            "openssl genpkey -algorithm ed25519 -out {}",
            pem_name(path, "ed25519")
        );
        match self {
            KeyProblem::Empty { want } => format!("the file is empty; {}", want.expected()),
            KeyProblem::NotAKey { want } => {
                format!(
                    "neither PEM text nor DER: not a key file; {}",
                    want.expected()
                )
            }
            KeyProblem::NoPem { want } => format!(
                "text without a -----BEGIN line: not a PEM key file; {}",
                want.expected()
            ),
            KeyProblem::Label { label, want } => {
                format!("a PEM block \"{label}\", not a key; {}", want.expected())
            }
            KeyProblem::OpenSsh { private, .. } => format!(
                "an OpenSSH {} key (ssh-keygen's format), not PEM; make an ed25519 key in PEM: \
                 {genpkey}",
                if *private { "private" } else { "public" }
            ),
            KeyProblem::Certificate {
                ed25519: true,
                want: Half::Public,
            } => format!(
                "an X.509 certificate, not a public key; take the key out of it: openssl x509 \
                 -in {path} -noout -pubkey -out {}",
                pem_name(path, "pub")
            ),
            KeyProblem::Certificate {
                ed25519: true,
                want: Half::Private,
            } => "an X.509 certificate, not a private key; sign with the private key (PKCS#8 \
                 PEM) it was made for"
                .into(),
            KeyProblem::Certificate { ed25519: false, .. } => {
                format!("an X.509 certificate of a key that is not ed25519; ed25519 keys only: {genpkey}")
            }
            KeyProblem::Encrypted {
                want: Half::Private,
            } => format!(
                "an encrypted PKCS#8 private key; stele reads it unencrypted (keep the file \
                 mode 0600): openssl pkey -in {path} -out {}",
                pem_name(path, "plain")
            ),
            KeyProblem::Encrypted { want: Half::Public } => {
                format!("an encrypted PKCS#8 private key where a public key is wanted: {pubout}")
            }
            KeyProblem::Algorithm {
                algorithm, private, ..
            } => format!(
                "an {algorithm} {} key; ed25519 keys only: {genpkey}",
                if *private { "private" } else { "public" }
            ),
            KeyProblem::Der { private, want } if (*want == Half::Private) == *private => format!(
                "an ed25519 {} key in DER; stele reads PEM: {}",
                want.name(),
                convert(*private)
            ),
            KeyProblem::Der {
                want: Half::Public, ..
            }
            | KeyProblem::OtherHalf { want: Half::Public } => {
                format!("an ed25519 private key where a public key is wanted: {pubout}")
            }
            KeyProblem::Der { .. } | KeyProblem::OtherHalf { .. } => {
                "an ed25519 public key where the private key is wanted; sign with the private \
                 key (PKCS#8 PEM) it was made from"
                    .into()
            }
            KeyProblem::Malformed { why, want } => {
                format!("a malformed ed25519 {} key: {why}", want.name())
            }
        }
    }
}

/// A sibling file name for a converted key: `k.der` -> `k.pem`, with a `tag` before the
/// extension (`k.pub.pem`), never `path` itself.
fn pem_name(path: &str, tag: &str) -> String {
    let stem = match path.rsplit_once('.') {
        Some((s, ext)) if !s.is_empty() && !s.ends_with('/') && !ext.contains('/') => s,
        _ => path,
    };
    let tag = if tag.is_empty() {
        String::new()
    } else {
        format!(".{tag}")
    };
    let name = format!("{stem}{tag}.pem");
    if name == path {
        format!("{stem}{tag}.new.pem")
    } else {
        name
    }
}

/// Parses an ed25519 public key file (SPKI PEM).
pub fn parse_public(bytes: &[u8]) -> Result<VerifyingKey, KeyProblem> {
    match read(bytes, Half::Public)? {
        Found::Public(der) => {
            VerifyingKey::from_public_key_der(&der).map_err(|e| malformed(e, Half::Public))
        }
        Found::Private(_) => Err(KeyProblem::OtherHalf { want: Half::Public }),
    }
}

/// Parses an ed25519 private key file (PKCS#8 PEM).
pub fn parse_private(bytes: &[u8]) -> Result<SigningKey, KeyProblem> {
    match read(bytes, Half::Private)? {
        Found::Private(der) => {
            SigningKey::from_pkcs8_der(&der).map_err(|e| malformed(e, Half::Private))
        }
        Found::Public(_) => Err(KeyProblem::OtherHalf {
            want: Half::Private,
        }),
    }
}

fn malformed(e: impl std::fmt::Display, want: Half) -> KeyProblem {
    KeyProblem::Malformed {
        why: e.to_string(),
        want,
    }
}

/// An ed25519 key found in PEM: the DER of its SPKI or PKCS#8 structure.
enum Found {
    Public(Vec<u8>),
    Private(Vec<u8>),
}

/// What a file holds: an ed25519 key in PEM, or the problem.
fn read(bytes: &[u8], want: Half) -> Result<Found, KeyProblem> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(KeyProblem::Empty { want });
    }
    if bytes.first() == Some(&0x30) {
        return Err(match shape(bytes) {
            Shape::Unknown => KeyProblem::NotAKey { want },
            s => s.problem(want, true),
        });
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Err(KeyProblem::NotAKey { want });
    };
    let text = text.trim_start();
    if text.starts_with("ssh-") || text.starts_with("ecdsa-sha2-") {
        return Err(KeyProblem::OpenSsh {
            private: false,
            want,
        });
    }
    let Some(begin) = text.find("-----BEGIN ") else {
        return Err(KeyProblem::NoPem { want });
    };
    let block = &text[begin..];
    let label = block["-----BEGIN ".len()..]
        .split("-----")
        .next()
        .unwrap_or_default()
        .to_string();
    let end = format!("-----END {label}-----");
    let block = block.find(&end).map_or(block, |i| &block[..i + end.len()]);
    let der = || {
        ed25519_dalek::pkcs8::spki::der::pem::decode_vec(block.as_bytes())
            .map(|(_, der)| der)
            .map_err(|e| malformed(format!("bad PEM: {e}"), want))
    };
    let private = |algorithm: &str| KeyProblem::Algorithm {
        algorithm: algorithm.into(),
        private: true,
        want,
    };
    match label.as_str() {
        "PUBLIC KEY" | "PRIVATE KEY" => {
            let der = der()?;
            match shape(&der) {
                Shape::Spki(Alg::Ed25519) => Ok(Found::Public(der)),
                Shape::Pkcs8(Alg::Ed25519) => Ok(Found::Private(der)),
                Shape::Unknown => Err(malformed(format!("not DER {label} data"), want)),
                s => Err(s.problem(want, false)),
            }
        }
        "ENCRYPTED PRIVATE KEY" => Err(KeyProblem::Encrypted { want }),
        "CERTIFICATE" | "TRUSTED CERTIFICATE" => Err(match shape(&der()?) {
            Shape::Certificate(a) => KeyProblem::Certificate {
                ed25519: a == Alg::Ed25519,
                want,
            },
            _ => KeyProblem::Certificate {
                ed25519: false,
                want,
            },
        }),
        "RSA PRIVATE KEY" => Err(private("RSA")),
        "EC PRIVATE KEY" => Err(private("EC")),
        "DSA PRIVATE KEY" => Err(private("DSA")),
        "RSA PUBLIC KEY" => Err(KeyProblem::Algorithm {
            algorithm: "RSA".into(),
            private: false,
            want,
        }),
        "OPENSSH PRIVATE KEY" => Err(KeyProblem::OpenSsh {
            private: true,
            want,
        }),
        _ => Err(KeyProblem::Label { label, want }),
    }
}

/// A key algorithm, by its object identifier.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Alg {
    Ed25519,
    Other(String),
}

impl Alg {
    /// From the content bytes of a DER OBJECT IDENTIFIER.
    fn from_oid(oid: &[u8]) -> Alg {
        let name = match oid {
            [0x2b, 0x65, 0x70] => return Alg::Ed25519,
            [0x2b, 0x65, 0x71] => "Ed448",
            [0x2b, 0x65, 0x6e] => "X25519",
            [0x2b, 0x65, 0x6f] => "X448",
            [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01] => "RSA",
            [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a] => "RSA-PSS",
            [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01] => "EC",
            [0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x01] => "DSA",
            _ => return Alg::Other(format!("unknown-algorithm (OID {})", dotted(oid))),
        };
        Alg::Other(name.into())
    }
}

/// An OBJECT IDENTIFIER's content bytes in dotted form.
fn dotted(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut v = 0u64;
    for &b in oid {
        v = v.saturating_mul(128).saturating_add(u64::from(b & 0x7f));
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = v.min(80) / 40;
                arcs.extend([first, v - first * 40]);
            } else {
                arcs.push(v);
            }
            v = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// The shape of a DER structure.
#[derive(Debug)]
enum Shape {
    Spki(Alg),
    Pkcs8(Alg),
    EncryptedPkcs8,
    Certificate(Alg),
    RsaPkcs1 { private: bool },
    EcSec1,
    Unknown,
}

impl Shape {
    /// The problem of a structure that is not the ed25519 key wanted in PEM.
    fn problem(self, want: Half, der: bool) -> KeyProblem {
        let other = |algorithm: String, private: bool| KeyProblem::Algorithm {
            algorithm,
            private,
            want,
        };
        match self {
            Shape::Spki(Alg::Ed25519) if der => KeyProblem::Der {
                private: false,
                want,
            },
            Shape::Pkcs8(Alg::Ed25519) if der => KeyProblem::Der {
                private: true,
                want,
            },
            Shape::Spki(Alg::Other(a)) => other(a, false),
            Shape::Pkcs8(Alg::Other(a)) => other(a, true),
            Shape::RsaPkcs1 { private } => other("RSA".into(), private),
            Shape::EcSec1 => other("EC".into(), true),
            Shape::EncryptedPkcs8 => KeyProblem::Encrypted { want },
            Shape::Certificate(a) => KeyProblem::Certificate {
                ed25519: a == Alg::Ed25519,
                want,
            },
            Shape::Spki(Alg::Ed25519) | Shape::Pkcs8(Alg::Ed25519) => {
                KeyProblem::OtherHalf { want }
            }
            Shape::Unknown => KeyProblem::NotAKey { want },
        }
    }
}

/// DER tags used below.
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const SEQUENCE: u8 = 0x30;

/// One DER element at the start of `b`: its tag, content and what follows.
fn element(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |a, &x| (a << 8) | usize::from(x));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The elements of a constructed element's content.
fn children(mut b: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (tag, content, rest) = element(b)?;
        out.push((tag, content));
        b = rest;
    }
    Some(out)
}

/// The algorithm of an AlgorithmIdentifier's content.
fn alg_id(content: &[u8]) -> Option<Alg> {
    match children(content)?.first() {
        Some(&(OID, oid)) => Some(Alg::from_oid(oid)),
        _ => None,
    }
}

/// The algorithm of a SubjectPublicKeyInfo's children.
fn spki(kids: &[(u8, &[u8])]) -> Option<Alg> {
    match kids {
        [(SEQUENCE, alg), (BIT_STRING, _)] => alg_id(alg),
        _ => None,
    }
}

/// What the DER structure `der` is.
fn shape(der: &[u8]) -> Shape {
    let Some((SEQUENCE, content, [])) = element(der) else {
        return Shape::Unknown;
    };
    let Some(kids) = children(content) else {
        return Shape::Unknown;
    };
    if let Some(a) = spki(&kids) {
        return Shape::Spki(a);
    }
    let tags: Vec<u8> = kids.iter().map(|k| k.0).collect();
    match (tags.as_slice(), kids.as_slice()) {
        ([INTEGER, SEQUENCE, OCTET_STRING, ..], [_, (_, alg), ..]) => {
            alg_id(alg).map_or(Shape::Unknown, Shape::Pkcs8)
        }
        ([SEQUENCE, OCTET_STRING], _) => Shape::EncryptedPkcs8,
        ([SEQUENCE, SEQUENCE, BIT_STRING], [(_, tbs), ..]) => children(tbs)
            .and_then(|fields| {
                fields
                    .iter()
                    .filter(|f| f.0 == SEQUENCE)
                    .find_map(|f| children(f.1).and_then(|k| spki(&k)))
            })
            .map_or(Shape::Unknown, Shape::Certificate),
        ([INTEGER, OCTET_STRING, ..], _) => Shape::EcSec1,
        ([INTEGER, INTEGER], _) => Shape::RsaPkcs1 { private: false },
        (t, _) if t.len() >= 9 && t.iter().all(|&x| x == INTEGER) => {
            Shape::RsaPkcs1 { private: true }
        }
        _ => Shape::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{private_pem, public_pem};
    use proptest::prelude::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[5; 32])
    }

    /// Base64 of DER, wrapped as PEM with `label`.
    fn pem(label: &str, der: &[u8]) -> String {
        use ed25519_dalek::pkcs8::spki::der::pem::{encode_string, LineEnding};
        encode_string(label, LineEnding::LF, der).unwrap()
    }

    fn der_of(pem_text: &str) -> Vec<u8> {
        ed25519_dalek::pkcs8::spki::der::pem::decode_vec(pem_text.as_bytes())
            .unwrap()
            .1
    }

    #[test]
    fn reads_both_halves_in_pem() {
        let k = key();
        assert_eq!(parse_private(private_pem(&k).as_bytes()).unwrap(), k);
        let p = public_pem(&k.verifying_key());
        assert_eq!(parse_public(p.as_bytes()).unwrap(), k.verifying_key());
        // Text around the block (openssl -text, comments) is fine.
        let noisy = format!("comment\n{p}trailing\n");
        assert_eq!(parse_public(noisy.as_bytes()).unwrap(), k.verifying_key());
    }

    #[test]
    fn names_what_was_found() {
        let k = key();
        let priv_der = der_of(&private_pem(&k));
        let pub_der = der_of(&public_pem(&k.verifying_key()));
        let p = Half::Public;
        let cases: Vec<(Vec<u8>, KeyProblem)> = vec![
            (b"".to_vec(), KeyProblem::Empty { want: p }),
            (b" \n".to_vec(), KeyProblem::Empty { want: p }),
            (vec![0, 1, 2, 0xff], KeyProblem::NotAKey { want: p }),
            (b"hello".to_vec(), KeyProblem::NoPem { want: p }),
            (
                pub_der.clone(),
                KeyProblem::Der {
                    private: false,
                    want: p,
                },
            ),
            (
                priv_der.clone(),
                KeyProblem::Der {
                    private: true,
                    want: p,
                },
            ),
            (
                private_pem(&k).into_bytes(),
                KeyProblem::OtherHalf { want: p },
            ),
            (
                pem("ENCRYPTED PRIVATE KEY", &[0x30, 0]).into_bytes(),
                KeyProblem::Encrypted { want: p },
            ),
            (
                b"ssh-ed25519 AAAAC3Nza me@host\n".to_vec(),
                KeyProblem::OpenSsh {
                    private: false,
                    want: p,
                },
            ),
            (
                pem("X509 CRL", &[0x30, 0]).into_bytes(),
                KeyProblem::Label {
                    label: "X509 CRL".into(),
                    want: p,
                },
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse_public(&bytes).unwrap_err(), want, "{bytes:?}");
        }
        assert_eq!(
            parse_private(public_pem(&k.verifying_key()).as_bytes()).unwrap_err(),
            KeyProblem::OtherHalf {
                want: Half::Private
            }
        );
        // An RSA SPKI: the algorithm is named (not Ed25519's OID as "unsupported").
        let mut rsa = vec![0x30, 0x0f, 0x30, 0x0b, 0x06, 0x09];
        rsa.extend([
            0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x03, 0x00,
        ]);
        let e = parse_public(pem("PUBLIC KEY", &rsa).as_bytes()).unwrap_err();
        assert_eq!(e.describe("r.pem"), "an RSA public key; ed25519 keys only: openssl genpkey -algorithm ed25519 -out r.ed25519.pem");
    }

    #[test]
    fn messages_carry_the_openssl_fix() {
        let p = Half::Public;
        let d = |k: KeyProblem| k.describe("k.der");
        assert_eq!(
            d(KeyProblem::Der {
                private: true,
                want: Half::Private
            }),
            "an ed25519 private key in DER; stele reads PEM: openssl pkey -in k.der -out k.pem"
        );
        assert_eq!(
            d(KeyProblem::Der { private: false, want: p }),
            "an ed25519 public key in DER; stele reads PEM: openssl pkey -pubin -in k.der -out k.pem"
        );
        assert_eq!(
            KeyProblem::OtherHalf { want: p }.describe("k.pem"),
            "an ed25519 private key where a public key is wanted: openssl pkey -in k.pem -pubout -out k.pub.pem"
        );
        assert!(KeyProblem::Empty {
            want: Half::Private
        }
        .describe("k.pem")
        .contains("openssl genpkey -algorithm ed25519"));
        assert_eq!(pem_name("k.pem", ""), "k.new.pem");
        assert_eq!(pem_name("dir.d/key", ""), "dir.d/key.pem");
        assert_eq!(pem_name(".key", "pub"), ".key.pub.pem");
    }

    #[test]
    fn oids_read_as_dotted_numbers() {
        assert_eq!(dotted(&[0x2b, 0x65, 0x70]), "1.3.101.112");
        assert_eq!(
            dotted(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]),
            "1.2.840.10045.2.1"
        );
    }

    proptest! {
        #[test]
        fn any_bytes_give_a_problem_or_a_key_never_a_panic(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_public(&b);
            let _ = parse_private(&b);
            let mut der = vec![0x30];
            der.extend(&b);
            let _ = parse_public(&der);
            let _ = parse_private(pem("PRIVATE KEY", &b).as_bytes());
        }
    }
}

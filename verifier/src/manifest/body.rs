//! The manifest body: TOML with the image's name, version, rollback index, filesystem and
//! verity parameters and the optional `[kernel]` table, decoded only after its signatures
//! were checked, and sanity-checked.

use serde::Deserialize;

use super::*;
use crate::verity::VerityParams;
use crate::{hex, Error, Result};

/// The body as written in TOML; converted to [`Manifest`] after the checks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    format_version: u64,
    name: String,
    version: String,
    rollback_index: u64,
    created: u64,
    filesystem: RawFilesystem,
    verity: RawVerity,
    kernel: Option<RawKernel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilesystem {
    #[serde(rename = "type")]
    fs_type: FsType,
    size: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerity {
    algorithm: String,
    data_block_size: u32,
    hash_block_size: u32,
    data_blocks: u64,
    hash_offset: u64,
    salt: String,
    root_hash: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKernel {
    path: String,
    size: u64,
    sha256: String,
    initrd_path: String,
    initrd_size: u64,
    initrd_sha256: String,
    cmdline: String,
}

/// Hex of the key `what` (e.g. `verity.salt`).
fn decode_hex(what: &str, s: &str) -> Result<Vec<u8>> {
    if s == "-" {
        return Err(Error::Body(format!(
            "{what}: write an empty salt as \"\", not \"-\""
        )));
    }
    hex::decode(s).ok_or_else(|| Error::Body(format!("{what}: {s:?} is not hex")))
}

/// A sha256 in hex of the key `what`.
fn decode_sha256(what: &str, s: &str) -> Result<[u8; 32]> {
    decode_hex(what, s)?
        .try_into()
        .map_err(|v: Vec<u8>| Error::Body(format!("{what} is {} bytes, a sha256 is 32", v.len())))
}

impl RawKernel {
    fn decode(self) -> Result<KernelInfo> {
        Ok(KernelInfo {
            kernel: KernelFile {
                sha256: decode_sha256("kernel.sha256", &self.sha256)?,
                path: self.path,
                size: self.size,
            },
            initrd: KernelFile {
                sha256: decode_sha256("kernel.initrd_sha256", &self.initrd_sha256)?,
                path: self.initrd_path,
                size: self.initrd_size,
            },
            cmdline: self.cmdline,
        })
    }
}

impl Manifest {
    /// Decodes a body: UTF-8, TOML, `format_version`, known keys only, then [`Manifest::check`].
    pub fn parse_body(body: &[u8]) -> Result<Self> {
        let text = std::str::from_utf8(body).map_err(|e| Error::Body(format!("not UTF-8: {e}")))?;
        let table: toml::Table =
            toml::from_str(text).map_err(|e| Error::Body(format!("not TOML: {e}")))?;
        // The version first, so that a newer format reads as "unsupported", not "unknown key".
        match table.get("format_version") {
            Some(toml::Value::Integer(1)) => {}
            Some(toml::Value::Integer(v)) => {
                return Err(Error::UnsupportedVersion {
                    what: "manifest format",
                    found: u64::try_from(*v).unwrap_or(u64::MAX),
                    supported: FORMAT_VERSION,
                })
            }
            Some(_) => return Err(Error::Body("format_version is not an integer".into())),
            None => return Err(Error::Body("format_version is missing".into())),
        }
        let raw: RawManifest = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| Error::Body(e.to_string().trim().to_string()))?;
        if raw.format_version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                what: "manifest format",
                found: raw.format_version,
                supported: FORMAT_VERSION,
            });
        }
        if raw.verity.algorithm != "sha256" {
            return Err(Error::Body(format!(
                "verity.algorithm {:?} is not supported (only \"sha256\")",
                raw.verity.algorithm
            )));
        }
        let salt = decode_hex("verity.salt", &raw.verity.salt)?;
        let root_hash = decode_sha256("verity.root_hash", &raw.verity.root_hash)?;
        let kernel = raw.kernel.map(RawKernel::decode).transpose()?;
        let m = Manifest {
            name: raw.name,
            version: raw.version,
            rollback_index: raw.rollback_index,
            created: raw.created,
            filesystem: FilesystemInfo {
                fs_type: raw.filesystem.fs_type,
                size: raw.filesystem.size,
            },
            verity: VerityInfo {
                data_block_size: raw.verity.data_block_size,
                hash_block_size: raw.verity.hash_block_size,
                data_blocks: raw.verity.data_blocks,
                hash_offset: raw.verity.hash_offset,
                salt,
                root_hash,
            },
            kernel,
        };
        m.check()?;
        Ok(m)
    }

    /// The sanity checks of docs/FORMATS.md that need only the body.
    pub fn check(&self) -> Result<()> {
        if !super::valid_name(&self.name) {
            return Err(Error::invalid(
                "manifest name",
                format!("{:?}: {}", self.name, super::NAME_RULE),
            ));
        }
        if self.version.is_empty()
            || self.version.len() > MAX_NAME_LEN
            || !self
                .version
                .chars()
                .all(|c| c == ' ' || c.is_ascii_graphic())
        {
            return Err(Error::invalid(
                "manifest version",
                format!("{:?}: use 1..=64 printable ASCII characters", self.version),
            ));
        }
        for (what, v) in [
            ("manifest rollback_index", self.rollback_index),
            ("manifest created", self.created),
            ("manifest filesystem.size", self.filesystem.size),
            ("manifest verity.data_blocks", self.verity.data_blocks),
            ("manifest verity.hash_offset", self.verity.hash_offset),
        ] {
            check_integer(what, v)?;
        }
        let params = self.verity_params()?;
        let data_size = params.data_size();
        if self.verity.hash_offset != data_size {
            return Err(Error::invalid(
                "manifest verity.hash_offset",
                format!(
                    "{} is not data_blocks * data_block_size = {data_size}",
                    self.verity.hash_offset
                ),
            ));
        }
        if !self
            .verity
            .hash_offset
            .is_multiple_of(u64::from(self.verity.hash_block_size))
        {
            return Err(Error::invalid(
                "manifest verity.hash_offset",
                format!(
                    "{} is not a multiple of the hash block size {}",
                    self.verity.hash_offset, self.verity.hash_block_size
                ),
            ));
        }
        if self.filesystem.size > data_size {
            return Err(Error::invalid(
                "manifest filesystem.size",
                format!(
                    "{} bytes is more than the {data_size} bytes of verity data",
                    self.filesystem.size
                ),
            ));
        }
        match &self.kernel {
            Some(k) => k.check(),
            None => Ok(()),
        }
    }

    /// Encodes the body as TOML (deterministic field order; `[kernel]` last, only when
    /// there is one, so a body without it is what it always was).
    pub fn to_toml(&self) -> String {
        let s = |v: &str| toml::Value::String(v.to_string()).to_string();
        let v = &self.verity;
        let kernel = self.kernel.as_ref().map_or_else(String::new, |k| {
            format!(
                "\n\
                 [kernel]\n\
                 path = {}\n\
                 size = {}\n\
                 sha256 = \"{}\"\n\
                 initrd_path = {}\n\
                 initrd_size = {}\n\
                 initrd_sha256 = \"{}\"\n\
                 cmdline = {}\n",
                s(&k.kernel.path),
                k.kernel.size,
                hex::encode(&k.kernel.sha256),
                s(&k.initrd.path),
                k.initrd.size,
                hex::encode(&k.initrd.sha256),
                s(&k.cmdline),
            )
        });
        format!(
            "format_version = {FORMAT_VERSION}\n\
             name = {}\n\
             version = {}\n\
             rollback_index = {}\n\
             created = {}\n\
             \n\
             [filesystem]\n\
             type = \"{}\"\n\
             size = {}\n\
             \n\
             [verity]\n\
             algorithm = \"sha256\"\n\
             data_block_size = {}\n\
             hash_block_size = {}\n\
             data_blocks = {}\n\
             hash_offset = {}\n\
             salt = \"{}\"\n\
             root_hash = \"{}\"\n\
             {kernel}",
            s(&self.name),
            s(&self.version),
            self.rollback_index,
            self.created,
            self.filesystem.fs_type.name(),
            self.filesystem.size,
            v.data_block_size,
            v.hash_block_size,
            v.data_blocks,
            v.hash_offset,
            hex::encode(&v.salt),
            hex::encode(&v.root_hash),
        )
    }

    /// The verity parameters (validated).
    pub fn verity_params(&self) -> Result<VerityParams> {
        let v = &self.verity;
        VerityParams::new(
            v.data_block_size,
            v.hash_block_size,
            v.data_blocks,
            v.salt.clone(),
        )
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test data sizes are small
mod tests {
    use super::super::tests::sample;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn body_round_trips_and_matches_the_doc_example() {
        let m = sample();
        let text = m.to_toml();
        assert!(text.starts_with("format_version = 1\nname = \"demo\"\n"));
        assert!(text.contains("\n[verity]\nalgorithm = \"sha256\"\n"));
        assert!(text.contains("salt = \"5d1f\"\n"));
        assert_eq!(Manifest::parse_body(text.as_bytes()).unwrap(), m);
        assert_eq!(m.to_toml(), text);
    }

    fn body_with(edit: impl Fn(&str) -> String) -> Vec<u8> {
        edit(&sample().to_toml()).into_bytes()
    }

    #[test]
    fn body_checks() {
        let replace = |a: &'static str, b: &'static str| {
            body_with(move |t| {
                assert!(t.contains(a), "{a}");
                t.replace(a, b)
            })
        };
        assert!(matches!(
            Manifest::parse_body(&replace(
                "format_version = 1",
                "format_version = 2\nnew = 1"
            )),
            Err(Error::UnsupportedVersion { found: 2, .. })
        ));
        for (a, b) in [
            ("format_version = 1\n", ""),
            ("name = \"demo\"", "name = \"de mo\""),
            ("name = \"demo\"", "name = \"\""),
            ("version = \"1.0.0\"", "version = \"1.0\\n\""),
            ("created = 1700000000", "created = -1"),
            ("created = 1700000000", "created = 1700000000\nextra = 1"),
            ("type = \"erofs\"", "type = \"btrfs\""),
            ("size = 1234944", "size = 1236993"),
            ("algorithm = \"sha256\"", "algorithm = \"sha1\""),
            ("data_block_size = 4096", "data_block_size = 4097"),
            ("hash_block_size = 4096", "hash_block_size = 256"),
            ("data_blocks = 302", "data_blocks = 0"),
            ("hash_offset = 1236992", "hash_offset = 1236991"),
            ("salt = \"5d1f\"", "salt = \"5d1\""),
            ("salt = \"5d1f\"", "salt = \"-\""),
            ("root_hash = \"9a9a", "root_hash = \"9a"),
            ("[filesystem]", "[fs]"),
        ] {
            assert!(Manifest::parse_body(&replace(a, b)).is_err(), "{a} -> {b}");
        }
        // hash_offset must be a multiple of the hash block size.
        let mut m = sample();
        m.verity.data_block_size = 512;
        m.verity.data_blocks = 9;
        m.verity.hash_offset = 9 * 512;
        m.filesystem.size = 100;
        assert!(matches!(
            Manifest::parse_body(m.to_toml().as_bytes()),
            Err(Error::Invalid {
                what: "manifest verity.hash_offset",
                ..
            })
        ));
        assert!(matches!(Manifest::parse_body(b"\xff"), Err(Error::Body(_))));
        assert!(matches!(Manifest::parse_body(b"= ="), Err(Error::Body(_))));
        // Upper-case hex is accepted; output is lower-case.
        let up = replace("salt = \"5d1f\"", "salt = \"5D1F\"");
        assert_eq!(Manifest::parse_body(&up).unwrap(), sample());
        // Empty salt.
        let mut m = sample();
        m.verity.salt.clear();
        assert!(m.to_toml().contains("salt = \"\"\n"));
        assert_eq!(Manifest::parse_body(m.to_toml().as_bytes()).unwrap(), m);
    }

    fn with_kernel() -> Manifest {
        Manifest {
            kernel: Some(super::super::kernel::tests::sample()),
            ..sample()
        }
    }

    #[test]
    fn kernel_table_round_trips_after_verity() {
        let m = with_kernel();
        let text = m.to_toml();
        assert!(text.starts_with(&sample().to_toml()), "{text}");
        assert!(
            text.ends_with(&format!(
                "\n[kernel]\npath = \"/boot/stele/vmlinuz\"\nsize = 8000000\nsha256 = \"{}\"\ninitrd_path = \"/boot/stele/initrd\"\ninitrd_size = 3000000\ninitrd_sha256 = \"{}\"\ncmdline = \"console=ttyS0 quiet\"\n",
                "11".repeat(32),
                "22".repeat(32)
            )),
            "{text}"
        );
        assert_eq!(Manifest::parse_body(text.as_bytes()).unwrap(), m);
        // Quotes in the command line survive the TOML round trip.
        let mut q = with_kernel();
        if let Some(k) = q.kernel.as_mut() {
            k.cmdline = "a=\"b c\" d='e'".into();
        }
        assert_eq!(Manifest::parse_body(q.to_toml().as_bytes()).unwrap(), q);
    }

    #[test]
    fn kernel_table_checks() {
        let text = with_kernel().to_toml();
        let edit = |a: &str, b: &str| {
            assert!(text.contains(a), "{a}");
            Manifest::parse_body(text.replace(a, b).as_bytes())
        };
        for (a, b) in [
            ("[kernel]", "[kernels]"),
            ("cmdline = ", "extra = 1\ncmdline = "),
            ("size = 8000000\n", ""),
            (
                "path = \"/boot/stele/vmlinuz\"",
                "path = \"boot/stele/vmlinuz\"",
            ),
            (
                "path = \"/boot/stele/vmlinuz\"",
                "path = \"/boot/../vmlinuz\"",
            ),
            (
                "initrd_path = \"/boot/stele/initrd\"",
                "initrd_path = \"/boot/stele/vmlinuz\"",
            ),
            ("size = 8000000", "size = 0"),
            ("initrd_size = 3000000", "initrd_size = 2000000000"),
            ("initrd_size = 3000000", "initrd_size = -1"),
            ("sha256 = \"1111", "sha256 = \"11"),
            ("sha256 = \"1111", "sha256 = \"xx11"),
            (
                "cmdline = \"console=ttyS0 quiet\"",
                "cmdline = \"stele.stage2=a\"",
            ),
            ("cmdline = \"console=ttyS0 quiet\"", "cmdline = \"a\\nb\""),
            ("cmdline = \"console=ttyS0 quiet\"", "cmdline = 5"),
        ] {
            assert!(edit(a, b).is_err(), "{a} -> {b}");
        }
        assert!(matches!(
            edit("size = 8000000", "size = 0"),
            Err(Error::Invalid {
                what: "manifest kernel.size",
                ..
            })
        ));
    }

    fn arb_manifest() -> impl Strategy<Value = Manifest> {
        (
            "[A-Za-z0-9._-]{1,64}",
            "[ -~]{1,64}",
            0u64..=i64::MAX as u64,
            0u64..=i64::MAX as u64,
            prop_oneof![
                Just(FsType::Erofs),
                Just(FsType::Squashfs),
                Just(FsType::Ext4)
            ],
            (9u32..=16, 9u32..=16, 1u64..(1 << 30)),
            proptest::collection::vec(any::<u8>(), 0..=256),
            any::<[u8; 32]>(),
            any::<u64>(),
            proptest::option::of((
                "/[a-z]{1,20}",
                "/[A-Z]{1,20}",
                1u64..=MAX_FILE_SIZE,
                1u64..=MAX_FILE_SIZE,
                "[ -~]{0,80}",
            )),
        )
            .prop_filter_map(
                "hash_offset multiple of hash block",
                |(
                    name,
                    version,
                    rollback_index,
                    created,
                    fs_type,
                    (d, h, blocks),
                    salt,
                    root_hash,
                    r,
                    kernel,
                )| {
                    let data_size = blocks << d;
                    if data_size % (1u64 << h) != 0 {
                        return None;
                    }
                    Some(Manifest {
                        name,
                        version,
                        rollback_index,
                        created,
                        filesystem: FilesystemInfo {
                            fs_type,
                            size: r % (data_size + 1),
                        },
                        verity: VerityInfo {
                            data_block_size: 1 << d,
                            hash_block_size: 1 << h,
                            data_blocks: blocks,
                            hash_offset: data_size,
                            salt,
                            root_hash,
                        },
                        kernel: kernel.map(|(k, i, ks, is, c)| KernelInfo {
                            kernel: KernelFile {
                                path: k,
                                size: ks,
                                sha256: root_hash,
                            },
                            initrd: KernelFile {
                                path: i,
                                size: is,
                                sha256: [7; 32],
                            },
                            cmdline: c.replace(STAGE2_OPTION, "x"),
                        }),
                    })
                },
            )
    }

    proptest! {
        #[test]
        fn manifest_round_trip(m in arb_manifest()) {
            let text = m.to_toml();
            prop_assert_eq!(Manifest::parse_body(text.as_bytes()).unwrap(), m);
        }

        #[test]
        fn garbage_bodies_never_panic(text in "[ -~\n]{0,400}") {
            let _ = Manifest::parse_body(text.as_bytes());
        }
    }
}

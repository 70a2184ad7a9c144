//! The JSON documents of `stele image build --json`, `stele verify --json` and
//! `stele inspect --json` (serde; every field name is documented in docs/CLI.md and
//! stable). A failed build or check prints its document too, with the error and its exit
//! class, so CI reads one object whatever happened.

use serde::Serialize;
use stele_verifier::exit::{Exit, Report};
use stele_verifier::footer::Footer;
use stele_verifier::hex;
use stele_verifier::keys::KeyId;
use stele_verifier::manifest::Manifest;

/// The manifest, field for field (the body's TOML keys).
#[derive(Debug, Serialize)]
pub struct ManifestJson {
    pub name: String,
    pub version: String,
    pub rollback_index: u64,
    pub created: u64,
    pub filesystem: FilesystemJson,
    pub verity: VerityJson,
    /// The slot's own kernel (`null` when the slot boots under the stage-1 kernel).
    pub kernel: Option<KernelJson>,
}

#[derive(Debug, Serialize)]
pub struct KernelJson {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub initrd_path: String,
    pub initrd_size: u64,
    pub initrd_sha256: String,
    pub cmdline: String,
}

#[derive(Debug, Serialize)]
pub struct FilesystemJson {
    #[serde(rename = "type")]
    pub fs_type: &'static str,
    pub size: u64,
}

#[derive(Debug, Serialize)]
pub struct VerityJson {
    pub algorithm: &'static str,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub data_blocks: u64,
    pub hash_offset: u64,
    pub salt: String,
    pub root_hash: String,
}

impl From<&Manifest> for ManifestJson {
    fn from(m: &Manifest) -> Self {
        let v = &m.verity;
        ManifestJson {
            name: m.name.clone(),
            version: m.version.clone(),
            rollback_index: m.rollback_index,
            created: m.created,
            filesystem: FilesystemJson {
                fs_type: m.filesystem.fs_type.name(),
                size: m.filesystem.size,
            },
            verity: VerityJson {
                algorithm: "sha256",
                data_block_size: v.data_block_size,
                hash_block_size: v.hash_block_size,
                data_blocks: v.data_blocks,
                hash_offset: v.hash_offset,
                salt: hex::encode(&v.salt),
                root_hash: hex::encode(&v.root_hash),
            },
            kernel: m.kernel.as_ref().map(|k| KernelJson {
                path: k.kernel.path.clone(),
                size: k.kernel.size,
                sha256: hex::encode(&k.kernel.sha256),
                initrd_path: k.initrd.path.clone(),
                initrd_size: k.initrd.size,
                initrd_sha256: hex::encode(&k.initrd.sha256),
                cmdline: k.cmdline.clone(),
            }),
        }
    }
}

/// The sizes of a slot image, in bytes.
#[derive(Debug, Serialize)]
pub struct SizesJson {
    /// The filesystem image.
    pub filesystem: u64,
    /// The dm-verity hash tree.
    pub hash_tree: u64,
    /// The manifest envelope.
    pub manifest: u64,
    /// The image up to the end of its manifest (the footer's `image_len`).
    pub image: u64,
    /// The file or partition, footer included.
    pub file: u64,
}

/// What a built or verified image is: the fields both documents share, all `null` when
/// the command failed.
#[derive(Debug, Default, Serialize)]
pub struct ImageJson {
    pub manifest: Option<ManifestJson>,
    /// The signed root hash (also in `manifest.verity`), for scripts.
    pub root_hash: Option<String>,
    /// Key ids of the signatures that count (build: every --key; verify: the trusted
    /// keys whose signatures verified).
    pub signed_by: Option<Vec<String>>,
    pub sizes: Option<SizesJson>,
}

impl ImageJson {
    /// From the manifest, the signers, the footer and the file (or partition) size.
    pub fn new(m: &Manifest, signed_by: &[KeyId], footer: &Footer, file: u64) -> ImageJson {
        ImageJson {
            manifest: Some(m.into()),
            root_hash: Some(hex::encode(&m.verity.root_hash)),
            signed_by: Some(signed_by.iter().map(ToString::to_string).collect()),
            sizes: Some(SizesJson {
                filesystem: m.filesystem.size,
                hash_tree: m.verity_params().map_or(0, |p| p.hash_tree_size()),
                manifest: footer.manifest_len,
                image: footer.image_len,
                file,
            }),
        }
    }
}

/// One document: the verdict, the error and its class, then the command's own fields
/// (`null` when it failed before knowing them).
#[derive(Debug, Serialize)]
pub struct Outcome<T: Serialize> {
    /// `built` / `verified` on success, else the exit class: `refused`, `usage`,
    /// `environment`.
    pub verdict: &'static str,
    /// The process exit status, and its class: `success`, `refused`, `usage`,
    /// `environment` (docs/CLI.md, "Exit codes").
    pub exit_code: u8,
    pub exit_class: &'static str,
    /// The one-line message of `stele: error:`, or `null`.
    pub error: Option<String>,
    #[serde(flatten)]
    pub fields: T,
}

impl<T: Serialize> Outcome<T> {
    /// The document of `result`: `done` is the verdict of a success.
    pub fn new<E: Report>(done: &'static str, result: Result<(), &E>, fields: T) -> Self {
        let (verdict, exit, error) = match result {
            Ok(()) => (done, Exit::Success, None),
            Err(e) => (e.exit().name(), e.exit(), Some(e.to_string())),
        };
        Outcome {
            verdict,
            exit_code: exit.code(),
            exit_class: exit.name(),
            error: error.map(|e| stele_verifier::exit::error_line(&e)),
            fields,
        }
    }

    /// Prints the document on stdout, one line.
    pub fn print(&self) {
        // Plain strings, numbers and booleans: serializing cannot fail.
        println!("{}", serde_json::to_string(self).unwrap_or_default());
    }
}

//! Slot images: filesystem image + dm-verity hash tree + signed manifest + footer, laid out
//! byte for byte as docs/FORMATS.md says; adding signatures to an existing image; reading one.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use stele_verifier::footer::{Footer, FOOTER_SIZE};
use stele_verifier::keys::{key_id, KeyId, SigningKey, VerifyingKey};
use stele_verifier::manifest::{
    signing_message, Envelope, FilesystemInfo, FsType, KernelInfo, Manifest, VerityInfo,
};
use stele_verifier::progress::{Progress, Step};
use stele_verifier::slot::{locate, SlotLocator};
use stele_verifier::verity::{build_tree, TreeBuilder, VerityParams};

use crate::added::{check_tree, Additions, Present};
use crate::atomic::AtomicFile;
use crate::cleanup::TempPath;
use crate::fs::{write_zeros, FsOptions};
use crate::{Error, Result};

/// Alignment of the manifest and the footer.
pub const ALIGN: u64 = 4096;
/// Default verity block sizes.
pub const DEFAULT_BLOCK_SIZE: u32 = 4096;
/// Length of a generated salt.
pub const DEFAULT_SALT_LEN: usize = 32;

/// Everything the manifest says besides what is computed from the data.
#[derive(Clone, Debug)]
pub struct BuildParams {
    pub name: String,
    pub version: String,
    pub rollback_index: u64,
    /// Seconds since the Unix epoch (SOURCE_DATE_EPOCH).
    pub created: u64,
    pub fs_type: FsType,
    pub salt: Vec<u8>,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    /// The slot's kernel (`--kernel`), as the manifest names it.
    pub kernel: Option<KernelInfo>,
}

impl BuildParams {
    /// Refuses, before anything is built, every parameter the verifier would refuse in the
    /// image (exit 2): name, version, a `--rollback-index` or SOURCE_DATE_EPOCH above the
    /// manifest's integer limit, block sizes no device maps, the salt.
    pub fn check(&self) -> Result<()> {
        use stele_verifier::manifest::check_integer;
        use stele_verifier::slot::check_block_size;
        validate_name(&self.name)?;
        validate_version(&self.version)?;
        check_integer("--rollback-index", self.rollback_index).map_err(Error::Parameter)?;
        check_integer("SOURCE_DATE_EPOCH", self.created).map_err(Error::Parameter)?;
        check_block_size("--data-block-size", self.data_block_size).map_err(Error::Parameter)?;
        check_block_size("--hash-block-size", self.hash_block_size).map_err(Error::Parameter)?;
        VerityParams::new(
            self.data_block_size,
            self.hash_block_size,
            1,
            self.salt.clone(),
        )
        .map_err(Error::Parameter)?;
        Ok(())
    }
}

/// What was built.
#[derive(Clone, Debug)]
pub struct BuildReport {
    pub manifest: Manifest,
    pub footer: Footer,
    pub signed_by: Vec<KeyId>,
}

/// Where the regions of a slot image are, derived from the footer and manifest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub fs_size: u64,
    pub hash_offset: u64,
    pub hash_tree_size: u64,
    pub manifest_offset: u64,
    pub manifest_len: u64,
    pub footer_offset: u64,
    pub file_len: u64,
}

/// Rounds `x` up to a multiple of `align` (a power of two).
pub fn align_up(x: u64, align: u64) -> u64 {
    x.div_ceil(align) * align
}

/// Checks a name: 1..=64 chars of `[A-Za-z0-9._-]`.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "--name",
            format!("{name:?}: use 1 to 64 characters of A-Z a-z 0-9 . _ -"),
        ))
    }
}

/// Checks a version: 1..=64 printable ASCII characters.
pub fn validate_version(version: &str) -> Result<()> {
    let ok =
        (1..=64).contains(&version.len()) && version.bytes().all(|b| (0x20..0x7f).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "--version",
            format!("{version:?}: use 1 to 64 printable ASCII characters"),
        ))
    }
}

/// The verity parameters for `fs_size` bytes of filesystem: enough data blocks to cover
/// it, rounded up so that the hash tree starts on a hash block boundary.
pub fn verity_params_for(fs_size: u64, params: &BuildParams) -> Result<VerityParams> {
    let dbs = u64::from(params.data_block_size);
    let hbs = u64::from(params.hash_block_size);
    let mut blocks = fs_size.div_ceil(dbs.max(1)).max(1);
    if hbs > dbs && dbs > 0 {
        blocks = align_up(blocks, hbs / dbs);
    }
    VerityParams::new(
        params.data_block_size,
        params.hash_block_size,
        blocks,
        params.salt.clone(),
    )
    .map_err(Error::Parameter)
}

/// Writes a whole slot image to `w` from `fs_size` bytes of filesystem read from `fs`,
/// signed by each of `keys`. `w` must be positioned at offset 0.
pub fn assemble_slot<R: Read, W: Write>(
    mut fs: R,
    fs_size: u64,
    params: &BuildParams,
    keys: &[SigningKey],
    w: &mut W,
) -> Result<BuildReport> {
    let vp = check_build(fs_size, params)?;
    let mut builder = TreeBuilder::new(vp.clone());
    let mut buf = vec![0u8; 1 << 20];
    let mut copied = 0u64;
    let wio = |e| Error::io("write", "the slot image", e);
    while copied < fs_size {
        let want = usize::try_from((fs_size - copied).min(buf.len() as u64)).unwrap_or(buf.len());
        let chunk = &mut buf[..want];
        fs.read_exact(chunk)
            .map_err(|e| Error::io("read", "the filesystem image", e))?;
        builder.update(chunk)?;
        w.write_all(chunk).map_err(wio)?;
        copied += want as u64;
    }
    pad_data(&mut builder, w, fs_size, vp.data_size())?;
    write_rest(w, builder.finish()?, &vp, fs_size, params, keys)
}

/// Turns the filesystem image that fills `f` into a slot image in place: pads it with
/// zeros to the data block size, hashes it (each hashing thread reading its own pieces of
/// the file) and appends hash tree, manifest and footer. No copy of the filesystem is made.
pub fn seal_in_place(
    f: &mut File,
    params: &BuildParams,
    keys: &[SigningKey],
    progress: &mut dyn Progress,
) -> Result<BuildReport> {
    let fs_size = f
        .metadata()
        .map_err(|e| Error::io("stat", "the filesystem image", e))?
        .len();
    let vp = check_build(fs_size, params)?;
    // The padding reads back as zeros, as assemble_slot writes it.
    f.set_len(vp.data_size())
        .map_err(|e| Error::io("extend", "the slot image", e))?;
    let tree = {
        let mut step = Step::new(progress, "hashing", Some(vp.data_size()));
        build_tree(&*f, &vp, &mut |n| step.advance(n))?
    };
    f.seek(SeekFrom::Start(vp.data_size()))
        .map_err(|e| Error::io("seek", "the slot image", e))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    let report = write_rest(&mut w, tree, &vp, fs_size, params, keys)?;
    w.flush()
        .map_err(|e| Error::io("write", "the slot image", e))?;
    Ok(report)
}

/// Checks the parameters and the size; the verity parameters for `fs_size` bytes.
fn check_build(fs_size: u64, params: &BuildParams) -> Result<VerityParams> {
    params.check()?;
    if fs_size == 0 {
        return Err(Error::invalid("filesystem image", "it is empty"));
    }
    verity_params_for(fs_size, params)
}

/// Zeros from the end of the filesystem to the end of the last data block.
fn pad_data<W: Write>(
    builder: &mut TreeBuilder,
    w: &mut W,
    fs_size: u64,
    data_size: u64,
) -> Result<()> {
    let zeros = vec![0u8; 1 << 16];
    let mut padded = fs_size;
    while padded < data_size {
        let n =
            usize::try_from((data_size - padded).min(zeros.len() as u64)).unwrap_or(zeros.len());
        builder.update(&zeros[..n])?;
        w.write_all(&zeros[..n])
            .map_err(|e| Error::io("write", "the slot image", e))?;
        padded += n as u64;
    }
    Ok(())
}

/// Hash tree (`tree` and `root`, as built over the data), manifest (signed by `keys`) and
/// footer; `w` is at the end of the data.
fn write_rest<W: Write>(
    w: &mut W,
    (tree, root): (Vec<u8>, [u8; 32]),
    vp: &VerityParams,
    fs_size: u64,
    params: &BuildParams,
    keys: &[SigningKey],
) -> Result<BuildReport> {
    let wio = |e| Error::io("write", "the slot image", e);
    let data_size = vp.data_size();
    w.write_all(&tree).map_err(wio)?;
    let tree_end = data_size + tree.len() as u64;
    let manifest_offset = align_up(tree_end, ALIGN);
    write_zeros(w, manifest_offset - tree_end).map_err(wio)?;
    let manifest = Manifest {
        name: params.name.clone(),
        version: params.version.clone(),
        rollback_index: params.rollback_index,
        created: params.created,
        filesystem: FilesystemInfo {
            fs_type: params.fs_type,
            size: fs_size,
        },
        verity: VerityInfo {
            data_block_size: vp.data_block_size(),
            hash_block_size: vp.hash_block_size(),
            data_blocks: vp.data_blocks(),
            hash_offset: data_size,
            salt: vp.salt().to_vec(),
            root_hash: root,
        },
        kernel: params.kernel.clone(),
    };
    // What the device would refuse is never signed.
    manifest.check()?;
    let mut envelope = Envelope {
        signatures: Vec::new(),
        body: manifest.to_toml().into_bytes(),
    };
    for k in keys {
        envelope.sign(k)?;
    }
    let footer = write_tail(w, &envelope, manifest_offset)?;
    let signed_by = envelope.signatures.iter().map(|s| s.key_id).collect();
    Ok(BuildReport {
        manifest,
        footer,
        signed_by,
    })
}

/// Writes envelope, padding and footer; `w` is at `manifest_offset`.
fn write_tail<W: Write>(w: &mut W, envelope: &Envelope, manifest_offset: u64) -> Result<Footer> {
    let wio = |e| Error::io("write", "the slot image", e);
    let env = envelope.to_bytes();
    let manifest_len = env.len() as u64;
    let image_len = manifest_offset + manifest_len;
    let footer = Footer {
        manifest_offset,
        manifest_len,
        image_len,
    };
    w.write_all(&env).map_err(wio)?;
    write_zeros(w, align_up(image_len, ALIGN) - image_len).map_err(wio)?;
    w.write_all(&footer.to_bytes()).map_err(wio)?;
    Ok(footer)
}

/// Where and how a build writes its slot image.
#[derive(Clone, Copy, Debug)]
pub struct Output<'a> {
    pub path: &'a Path,
    /// Replace an existing file, or write onto a block device ([`AtomicFile::output`]).
    pub force: bool,
}

/// Builds `out` from an existing filesystem image file (atomically: temp file + rename).
pub fn build_from_fs_image(
    fs_image: &Path,
    params: &BuildParams,
    keys: &[SigningKey],
    out: Output<'_>,
    progress: &mut dyn Progress,
) -> Result<BuildReport> {
    let mut fs =
        File::open(fs_image).map_err(|e| Error::io("open filesystem image", fs_image, e))?;
    let fs_size = byte_len(&mut fs).map_err(|e| Error::io("size", fs_image, e))?;
    let mut head = Vec::with_capacity(crate::fs::MAGIC_HEAD);
    (&mut fs)
        .take(crate::fs::MAGIC_HEAD as u64)
        .read_to_end(&mut head)
        .map_err(|e| Error::io("read", fs_image, e))?;
    crate::fs::check_fs_image(fs_image, &head, params.fs_type)?;
    fs.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io("seek", fs_image, e))?;
    let mut tmp = AtomicFile::output(out.path, 0o644, out.force)?.slot_image();
    let report = {
        let mut step = Step::new(progress, "hashing", Some(fs_size));
        assemble_slot(&mut step.reader(&mut fs), fs_size, params, keys, tmp.file())?
    };
    tmp.commit_with(progress)?;
    Ok(report)
}

/// Where the root filesystem of a build comes from.
#[derive(Clone, Copy, Debug)]
pub enum RootSource<'a> {
    /// A directory (`--rootfs`).
    Dir(&'a Path),
    /// A tar archive (`--rootfs-tar`), staged next to the output (see [`crate::stage`]).
    Tar(&'a crate::stage::TarInput),
}

/// Builds the filesystem of `src` (plus the files of `adds`: the slot's kernel, the fetch
/// client) in the output's temporary file (next to `out`), then turns it into the slot
/// image in place, its manifest naming the kernel, and renames it over `out`.
///
/// A directory is never changed: when files have to be added, the filesystem is built
/// from a staging tree next to `out` of new directories and hard links to the
/// directory's files ([`crate::linktree`]), removed afterwards.
pub fn build_from_root(
    src: RootSource<'_>,
    params: &BuildParams,
    all_root: bool,
    adds: &Additions,
    keys: &[SigningKey],
    out: Output<'_>,
    progress: &mut dyn Progress,
) -> Result<BuildReport> {
    params.check()?;
    let params = BuildParams {
        kernel: adds.kernel.as_ref().map(|k| k.info.clone()),
        ..params.clone()
    };
    let opts = FsOptions::new(
        params.fs_type,
        params.created,
        crate::fs::derive_uuid(&params.name, &params.salt),
        all_root,
    );
    let mut tmp = AtomicFile::output(out.path, 0o644, out.force)?.slot_image();
    {
        let tool = crate::fs::tool_for(params.fs_type).name;
        let _step = Step::new(progress, &format!("building the filesystem ({tool})"), None);
        let files = adds.files();
        match src {
            RootSource::Dir(dir) if check_tree(dir, &files)? != Present::All => {
                let stage = TempPath::register(
                    crate::atomic::temp_name(out.path, "stage")
                        .map_err(|e| Error::io("name a staging directory for", out.path, e))?,
                );
                std::fs::create_dir(stage.path())
                    .map_err(|e| Error::io("create staging directory", stage.path(), e))?;
                crate::linktree::mirror(dir, stage.path())?;
                crate::added::place(stage.path(), &files)?;
                crate::fs::build_fs(stage.path(), tmp.tmp_path(), &opts)?;
            }
            RootSource::Dir(dir) => crate::fs::build_fs(dir, tmp.tmp_path(), &opts)?,
            RootSource::Tar(tar) => {
                crate::stage::build_fs_from_tar(tar, adds, out.path, tmp.tmp_path(), &opts)?
            }
        }
    }
    // The tool wrote the file by its path (and may have replaced it): open it again.
    tmp.reopen()?;
    tmp.file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(|e| Error::io("set mode of", out.path, e))?;
    let report = seal_in_place(tmp.file(), &params, keys, progress)?;
    tmp.commit_with(progress)?;
    Ok(report)
}

/// Opens a slot image file (or a partition holding one) and returns it with its length.
pub fn open(path: &Path) -> Result<(File, u64)> {
    let mut f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    if f.metadata().is_ok_and(|m| m.is_dir()) {
        let e = std::io::Error::from(std::io::ErrorKind::IsADirectory);
        return Err(Error::io("open", path, e));
    }
    let len = byte_len(&mut f).map_err(|e| Error::io("size", path, e))?;
    Ok((f, len))
}

/// Length in bytes of a file or a block device (whose metadata says 0): its end offset.
pub fn byte_len(f: &mut File) -> std::io::Result<u64> {
    let len = f.seek(SeekFrom::End(0))?;
    f.seek(SeekFrom::Start(0))?;
    Ok(len)
}

/// Locates footer and envelope (nothing verified).
pub fn read(path: &Path) -> Result<SlotLocator> {
    let (mut f, len) = open(path)?;
    Ok(locate(&mut f, len)?)
}

/// The layout of an image, from its (unverified) manifest and footer.
pub fn layout(loc: &SlotLocator, manifest: &Manifest, file_len: u64) -> Result<Layout> {
    let vp = manifest.verity_params()?;
    Ok(Layout {
        fs_size: manifest.filesystem.size,
        hash_offset: manifest.verity.hash_offset,
        hash_tree_size: vp.hash_tree_size(),
        manifest_offset: loc.footer.manifest_offset,
        manifest_len: loc.footer.manifest_len,
        footer_offset: file_len.saturating_sub(FOOTER_SIZE),
        file_len,
    })
}

/// Rewrites `path` with its envelope changed by `change` (atomically: the image up to the
/// manifest is copied to a temporary file, then the new manifest and footer are written).
pub fn rewrite_envelope(
    path: &Path,
    change: impl FnOnce(&mut Envelope) -> Result<()>,
) -> Result<Envelope> {
    let (mut f, len) = open(path)?;
    // A signer must know what it signs: the body must parse and describe this image
    // (layout, hash tree against its root hash) before a signature is added.
    let (loc, _) = stele_verifier::slot::check_unsigned(&mut f, len)?;
    let mut envelope = loc.envelope;
    change(&mut envelope)?;
    let mode = f
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .permissions()
        .mode()
        & 0o777;
    // A block device holding the image is written back onto (the footer at its end).
    let mut tmp = AtomicFile::output(path, mode, true)?.slot_image();
    f.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io("seek", path, e))?;
    let copied = std::io::copy(&mut (&mut f).take(loc.footer.manifest_offset), tmp.file())
        .map_err(|e| Error::io("copy", path, e))?;
    if copied != loc.footer.manifest_offset {
        return Err(Error::invalid(
            "slot image",
            format!("{} changed while being signed", path.display()),
        ));
    }
    write_tail(tmp.file(), &envelope, loc.footer.manifest_offset)?;
    tmp.commit()?;
    Ok(envelope)
}

/// Adds (or replaces) `key`'s signature in the image at `path`.
pub fn sign(path: &Path, key: &SigningKey) -> Result<KeyId> {
    rewrite_envelope(path, |env| Ok(env.sign(key)?))?;
    Ok(key_id(&key.verifying_key()))
}

/// Runs `cmd` (split on whitespace, no shell) with `message` on stdin; its stdout must be
/// exactly the 64-byte raw ed25519 signature.
pub fn external_sign(cmd: &str, message: &[u8]) -> Result<[u8; 64]> {
    let err = |why: String| Error::Signer {
        cmd: cmd.to_string(),
        why,
    };
    let mut words = cmd.split_whitespace();
    let prog = words
        .next()
        .ok_or_else(|| Error::invalid("--signer-cmd", "the command is empty"))?;
    let mut child = Command::new(prog)
        .args(words)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("cannot start {prog}: {e}")))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| err("no stdin pipe".into()))?;
    let msg = message.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&msg));
    let out = child
        .wait_with_output()
        .map_err(|e| err(format!("waiting for it: {e}")))?;
    let wrote = writer
        .join()
        .map_err(|_| err("stdin writer panicked".into()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(err(format!(
            "{} ({})",
            out.status,
            stderr.trim().lines().last().unwrap_or("no message")
        )));
    }
    // A signer that exits without reading all of stdin gives EPIPE here; what it printed
    // is still judged below (length now, signature check by the caller).
    if let Err(e) = wrote {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(err(format!("writing the message to its stdin: {e}")));
        }
    }
    <[u8; 64]>::try_from(out.stdout.as_slice()).map_err(|_| {
        err(format!(
            "it wrote {} bytes to stdout; a raw ed25519 signature is 64 bytes",
            out.stdout.len()
        ))
    })
}

/// Signs the image at `path` with an external command, checking the signature against
/// `public` before adding it.
pub fn sign_external(path: &Path, cmd: &str, public: &VerifyingKey) -> Result<KeyId> {
    rewrite_envelope(path, |env| {
        let sig = external_sign(cmd, &signing_message(&env.body))?;
        Ok(env.add_signature(public, sig)?)
    })?;
    Ok(key_id(public))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_versions() {
        assert!(validate_name("demo-1.0_x").is_ok());
        for bad in ["", "a b", "ü", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_version("1.0 beta").is_ok());
        assert!(validate_version("1\n").is_err());
        assert!(validate_version("").is_err());
    }

    #[test]
    fn align() {
        assert_eq!(align_up(0, 4096), 0);
        assert_eq!(align_up(1, 4096), 4096);
        assert_eq!(align_up(4096, 4096), 4096);
    }

    #[test]
    fn external_signer_errors_are_clear() {
        let e = external_sign("", b"m").unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }));
        let e = external_sign("/nonexistent/signer", b"m").unwrap_err();
        assert!(e.to_string().contains("cannot start"), "{e}");
        let e = external_sign("true", b"m").unwrap_err();
        assert!(e.to_string().contains("0 bytes"), "{e}");
        let e = external_sign("false", b"m").unwrap_err();
        assert!(matches!(e, Error::Signer { .. }));
        // `head -c 64` echoes 64 bytes of the message back: accepted as 64 raw bytes.
        let msg = [7u8; 100];
        assert_eq!(external_sign("head -c 64", &msg).unwrap(), [7u8; 64]);
    }

    fn params() -> BuildParams {
        BuildParams {
            name: "demo".into(),
            version: "1.0".into(),
            rollback_index: 3,
            created: 1_700_000_000,
            fs_type: FsType::Erofs,
            salt: vec![0xab; 32],
            data_block_size: 4096,
            hash_block_size: 4096,
            kernel: None,
        }
    }

    fn build(fs: &[u8], p: &BuildParams, keys: &[SigningKey]) -> Vec<u8> {
        let mut out = Vec::new();
        assemble_slot(fs, fs.len() as u64, p, keys, &mut out).unwrap();
        out
    }

    #[test]
    fn written_image_verifies_and_has_the_documented_layout() {
        use stele_verifier::keys::Keyring;
        use stele_verifier::slot::{verify, VerifyOptions};
        let key = SigningKey::from_bytes(&[7; 32]);
        let fs: Vec<u8> = (0..600_000u32).map(|i| (i % 253) as u8).collect();
        let img = build(&fs, &params(), std::slice::from_ref(&key));
        assert_eq!(img.len() as u64 % ALIGN, 0);
        assert_eq!(&img[..fs.len()], fs.as_slice());
        let ring = Keyring::new(vec![key.verifying_key()], 1).unwrap();
        let opts = VerifyOptions {
            full: true,
            rollback_floor: Some(3),
            product: None,
        };
        let len = img.len() as u64;
        let (loc, vm) = verify(&mut std::io::Cursor::new(&img), len, &ring, opts).unwrap();
        assert_eq!(vm.manifest.filesystem.size, fs.len() as u64);
        assert_eq!(vm.manifest.verity.data_blocks, 147);
        assert_eq!(vm.manifest.verity.hash_offset, 147 * 4096);
        let l = layout(&loc, &vm.manifest, len).unwrap();
        assert_eq!(
            l.manifest_offset,
            align_up(l.hash_offset + l.hash_tree_size, ALIGN)
        );
        assert_eq!(
            l.footer_offset,
            align_up(l.manifest_offset + l.manifest_len, ALIGN)
        );
        // Same inputs, same bytes.
        assert_eq!(img, build(&fs, &params(), &[key]));
    }

    #[test]
    fn data_blocks_round_up_to_hash_blocks() {
        let mut p = params();
        p.data_block_size = 512;
        p.hash_block_size = 4096;
        let vp = verity_params_for(513, &p).unwrap();
        assert_eq!(vp.data_blocks(), 8);
        p.data_block_size = 4096;
        p.hash_block_size = 512;
        assert_eq!(verity_params_for(4097, &p).unwrap().data_blocks(), 2);
        assert!(assemble_slot(&[][..], 0, &p, &[], &mut Vec::new()).is_err());
        p.data_block_size = 1000;
        assert!(matches!(verity_params_for(1, &p), Err(Error::Parameter(_))));
        // Blocks above the page size: the format allows them, a slot image does not.
        p.data_block_size = 8192;
        let e = assemble_slot(&[1u8; 100][..], 100, &p, &[], &mut Vec::new()).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Parameter(stele_verifier::Error::SlotBlockSize { .. })
            ),
            "{e}"
        );
        assert_eq!(
            stele_verifier::Report::exit(&e),
            stele_verifier::Exit::Usage
        );
        p.data_block_size = 4096;
        p.rollback_index = u64::MAX;
        let e = assemble_slot(&[1u8; 100][..], 100, &p, &[], &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("--rollback-index"), "{e}");
    }

    #[test]
    fn signing_in_place_adds_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.img");
        let (k1, k2) = (
            SigningKey::from_bytes(&[1; 32]),
            SigningKey::from_bytes(&[2; 32]),
        );
        std::fs::write(
            &path,
            build(&[0x11; 5000], &params(), std::slice::from_ref(&k1)),
        )
        .unwrap();
        sign(&path, &k2).unwrap();
        sign(&path, &k2).unwrap();
        let loc = read(&path).unwrap();
        let ids: Vec<KeyId> = loc.envelope.signatures.iter().map(|s| s.key_id).collect();
        assert_eq!(
            ids,
            vec![key_id(&k1.verifying_key()), key_id(&k2.verifying_key())]
        );
        let ring =
            stele_verifier::keys::Keyring::new(vec![k1.verifying_key(), k2.verifying_key()], 2)
                .unwrap();
        assert!(loc.envelope.verify(&ring).is_ok());
        // Only the image is left in the directory (no temporary files).
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Any size and block geometry: the image verifies in full and keeps the layout rules.
        #[test]
        fn any_geometry_round_trips(
            size in 1usize..70_000,
            dbs_log in 9u32..13,
            hbs_log in 9u32..13,
            salt_len in 0usize..40,
            fill in proptest::prelude::any::<u8>(),
        ) {
            use stele_verifier::keys::Keyring;
            use stele_verifier::slot::{verify, VerifyOptions};
            let mut p = params();
            p.data_block_size = 1 << dbs_log;
            p.hash_block_size = 1 << hbs_log;
            p.salt = vec![fill; salt_len];
            let key = SigningKey::from_bytes(&[9; 32]);
            let fs = vec![fill; size];
            let img = build(&fs, &p, std::slice::from_ref(&key));
            let ring = Keyring::new(vec![key.verifying_key()], 1).unwrap();
            let opts = VerifyOptions { full: true, rollback_floor: None, product: None };
            let (loc, vm) = verify(&mut std::io::Cursor::new(&img), img.len() as u64, &ring, opts).unwrap();
            let m = &vm.manifest;
            proptest::prop_assert_eq!(m.verity.hash_offset % u64::from(p.hash_block_size), 0);
            proptest::prop_assert!(m.verity.hash_offset >= size as u64);
            proptest::prop_assert_eq!(loc.footer.manifest_offset % ALIGN, 0);
            proptest::prop_assert_eq!(img.len() as u64 % ALIGN, 0);
        }
    }
}

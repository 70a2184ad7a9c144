//! `stele image build` and `stele sign`: making and signing slot images.

use std::path::{Path, PathBuf};

use clap::ArgGroup;
use stele_image::added::{AddedFile, Additions};
use stele_image::added::{KernelInput, SlotKernel};
use stele_image::fs::parse_fs_type;
use stele_image::slot::{BuildParams, BuildReport, ALIGN, DEFAULT_BLOCK_SIZE};
use stele_image::stage::StageArgs;
use stele_verifier::footer::FOOTER_SIZE;
use stele_verifier::hex;
use stele_verifier::manifest::KernelInfo;

use crate::error::{CliResult, Context, Error, Usage};
use crate::json::{ImageJson, Outcome};
use crate::progress::Bars;
use crate::util::{parse_hex, salt_or_random, source_date_epoch};

#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Build a signed slot image from a root directory, a tar archive or an existing
    /// filesystem image.
    Build(BuildArgs),
    /// The bytes a device running OLD.img would fetch to install NEW.img as a delta.
    Diff(crate::diff::DiffArgs),
    /// Write the published delta of NEW.img for devices running OLD.img (beside NEW.img,
    /// or --out).
    Delta(crate::diff::DeltaArgs),
    /// Internal: the unpacking step of `build --rootfs-tar`, run under fakeroot.
    #[command(name = "fs-from-tar", hide = true)]
    FsFromTar(FsFromTarArgs),
}

#[derive(Debug, clap::Args)]
pub struct FsFromTarArgs {
    #[arg(long)]
    tar: PathBuf,
    #[arg(long)]
    stage: PathBuf,
    #[arg(long)]
    fs_out: PathBuf,
    #[arg(long = "fs")]
    fs_type: String,
    #[arg(long)]
    epoch: u64,
    #[arg(long)]
    uuid: String,
    #[arg(long)]
    all_root: bool,
    #[arg(long)]
    kernel: Option<PathBuf>,
    #[arg(long)]
    kernel_digest: Option<String>,
    #[arg(long)]
    initrd: Option<PathBuf>,
    #[arg(long)]
    initrd_digest: Option<String>,
    #[arg(long, default_value = "")]
    kernel_cmdline: String,
    #[arg(long)]
    fetch_client: Option<PathBuf>,
    #[arg(long)]
    fetch_client_digest: Option<String>,
}

#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("input").required(true).args(["rootfs", "rootfs_tar", "fs_image"])))]
pub struct BuildArgs {
    /// Root directory to pack into a filesystem image (owners, modes and xattrs kept).
    #[arg(long, value_name = "DIR")]
    rootfs: Option<PathBuf>,
    /// Tar archive of the root (`-` for stdin); owners, modes and xattrs come from the
    /// archive, also when not run as root.
    #[arg(long, value_name = "FILE")]
    rootfs_tar: Option<PathBuf>,
    /// Every file owned by uid 0 / gid 0 and no xattrs (modes are kept).
    #[arg(long, conflicts_with = "fs_image")]
    all_root: bool,
    /// Existing filesystem image to wrap (its type is given by --fs).
    #[arg(long, value_name = "FILE")]
    fs_image: Option<PathBuf>,
    /// Private key to sign with (PKCS#8 PEM); repeat for several signatures.
    #[arg(long = "key", value_name = "K.pem", required = true)]
    keys: Vec<PathBuf>,
    /// Image name: 1 to 64 characters of A-Z a-z 0-9 . _ -
    #[arg(long)]
    name: String,
    /// Human-readable version.
    #[arg(long)]
    version: String,
    /// Rollback index (devices refuse images below their rollback floor).
    #[arg(long, value_name = "N")]
    rollback_index: u64,
    /// Filesystem type: erofs, squashfs or ext4.
    #[arg(long = "fs", value_name = "TYPE", default_value = "erofs")]
    fs_type: String,
    /// Verity salt in hex (default: 32 random bytes).
    #[arg(long, value_name = "HEX")]
    salt: Option<String>,
    /// Verity data block size.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BLOCK_SIZE)]
    data_block_size: u32,
    /// Verity hash block size.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_BLOCK_SIZE)]
    hash_block_size: u32,
    /// The slot's own kernel, put into the image at /boot/stele/vmlinuz (0:0, 0644) and
    /// named in the manifest: stage 1 boots it with kexec (needs --initrd).
    #[arg(long, value_name = "VMLINUZ")]
    kernel: Option<PathBuf>,
    /// The slot's stage-2 initramfs (`stele initramfs --stage2`), put at /boot/stele/initrd.
    #[arg(long, value_name = "INITRD")]
    initrd: Option<PathBuf>,
    /// The command line of the slot's kernel (stage 1 adds `stele.stage2=<slot> panic=<n>`).
    #[arg(long, value_name = "ARGS")]
    kernel_cmdline: Option<String>,
    /// Output slot image (written to a temporary file, renamed at the end).
    #[arg(long, value_name = "SLOT.img")]
    out: PathBuf,
    /// Put this fetch client (the static `stele-fetch`) into the image at
    /// /usr/lib/stele/stele-fetch (mode 0755), so the device can update over HTTP; with
    /// --rootfs or --rootfs-tar (DIR is not changed: the file goes into a staging tree).
    #[arg(long, value_name = "PATH")]
    fetch_client: Option<PathBuf>,
    /// Replace an existing --out (or write onto a block device).
    #[arg(long)]
    force: bool,
    /// Do not write the compressed transfer forms beside --out: OUT.zst (independent zstd
    /// frames and a seek table: devices fetch the frames covering the blocks they lack)
    /// and OUT.lzc (chained LZMA2 frames: a fresh install of a Debian image fetched 1.026 ×
    /// its `xz -9` size).
    /// They are never written beside a block device.
    #[arg(long)]
    no_compressed: bool,
    /// Print one JSON object (verdict, error, manifest, root hash, key ids, sizes) instead
    /// of the `built:` line, also when the build fails.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("signer").required(true).args(["keys", "signer_cmd"])))]
pub struct SignArgs {
    /// The slot image to sign (rewritten atomically).
    #[arg(value_name = "SLOT.img")]
    image: PathBuf,
    /// Private key (PKCS#8 PEM); repeat for several signatures.
    #[arg(long = "key", value_name = "K.pem")]
    keys: Vec<PathBuf>,
    /// External signing command (split on whitespace, no shell): gets the message on
    /// stdin, writes the 64-byte raw signature to stdout.
    #[arg(long, value_name = "CMD", requires = "public", conflicts_with = "keys")]
    signer_cmd: Option<String>,
    /// Public key of the external signer; its signature is checked before it is added.
    #[arg(long, value_name = "P.pem", requires = "signer_cmd")]
    public: Option<PathBuf>,
}

pub fn run(c: ImageCommand) -> CliResult {
    match c {
        ImageCommand::Build(a) => build(&a),
        ImageCommand::FsFromTar(a) => fs_from_tar(&a),
        ImageCommand::Diff(a) => crate::diff::diff(&a),
        ImageCommand::Delta(a) => crate::diff::delta(&a, &mut Bars::stderr()),
    }
}

/// Removes the temporary files on SIGINT, SIGTERM and SIGHUP, then exits 128 + the signal
/// (also for `stele uki build` and `stele disk create`).
pub(crate) fn clean_up_on_signals() -> CliResult {
    fn on_signal(sig: i32) -> ! {
        let name = nix::sys::signal::Signal::try_from(sig).map_or("a signal", |s| s.as_str());
        eprintln!("stele: error: interrupted by {name}: the temporary files were removed and no output was written");
        std::process::exit(128 + sig)
    }
    stele_image::cleanup::install(on_signal)
        .map_err(|e| Error::io("set up signal handling for", "the build", e.into()))
}

fn fs_from_tar(a: &FsFromTarArgs) -> CliResult {
    clean_up_on_signals()?;
    let uuid = <[u8; 16]>::try_from(parse_hex("--uuid", &a.uuid)?).map_err(|_| {
        Error::from(stele_image::Error::invalid(
            "--uuid",
            format!("{:?} is not 16 bytes", a.uuid),
        ))
    })?;
    let opts =
        stele_image::fs::FsOptions::new(parse_fs_type(&a.fs_type)?, a.epoch, uuid, a.all_root);
    let digest = |arg: &'static str, v: &String| {
        stele_image::stage::parse_digest(v).ok_or_else(|| {
            Error::from(stele_image::Error::invalid(
                arg,
                format!("{v:?} is not SIZE:SHA256-HEX"),
            ))
        })
    };
    let kernel = match (&a.kernel, &a.kernel_digest, &a.initrd, &a.initrd_digest) {
        (Some(kernel), Some(kd), Some(initrd), Some(id)) => Some(SlotKernel {
            info: KernelInfo::at_default_paths(
                digest("--kernel-digest", kd)?,
                digest("--initrd-digest", id)?,
                a.kernel_cmdline.clone(),
            ),
            input: KernelInput {
                kernel: kernel.clone(),
                initrd: initrd.clone(),
                cmdline: a.kernel_cmdline.clone(),
            },
        }),
        _ => None,
    };
    let fetch_client = match (&a.fetch_client, &a.fetch_client_digest) {
        (Some(src), Some(d)) => {
            let (size, sha256) = digest("--fetch-client-digest", d)?;
            Some(AddedFile {
                size,
                sha256,
                ..AddedFile::fetch_client(src)?
            })
        }
        _ => None,
    };
    stele_image::stage::stage_and_build(&StageArgs {
        tar: stele_image::stage::TarInput::parse(&a.tar),
        adds: Additions {
            kernel,
            fetch_client,
        },
        stage: a.stage.clone(),
        fs_out: a.fs_out.clone(),
        opts,
    })?;
    Ok(())
}

fn build(a: &BuildArgs) -> CliResult {
    let r = build_image(a);
    if a.json {
        let image = r.as_ref().map_or_else(
            |_| ImageJson::default(),
            |(b, _)| {
                let file = stele_image::slot::align_up(b.footer.image_len, ALIGN) + FOOTER_SIZE;
                ImageJson::new(&b.manifest, &b.signed_by, &b.footer, file)
            },
        );
        let doc = BuildJson {
            out: a.out.display().to_string(),
            result: image,
        };
        Outcome::new("built", r.as_ref().map(drop), doc).print();
    } else if let Ok((report, z)) = &r {
        print_report(&a.out, report);
        for z in z {
            print_compressed(z);
        }
    }
    r.map(drop)
}

/// `compressed: OUT.zst N bytes (P % of the image's M) in F frames`.
fn print_compressed(z: &stele_image::zst::ZstReport) {
    #[allow(clippy::cast_precision_loss)]
    let pct = z.len as f64 * 100.0 / z.raw_len.max(1) as f64;
    println!(
        "compressed: {} {} bytes ({pct:.1} % of the image's {}) in {} frames",
        z.path.display(),
        z.len,
        z.raw_len,
        z.frames
    );
}

/// `--kernel`, `--initrd`, `--kernel-cmdline`: both files or neither; a command line only
/// with them; not for `--fs-image` (its files cannot be added to).
fn kernel_input(a: &BuildArgs) -> Result<Option<KernelInput>, Usage> {
    match (&a.kernel, &a.initrd) {
        (None, None) if a.kernel_cmdline.is_some() => Err(Usage::CmdlineNeedsKernel),
        (None, None) => Ok(None),
        (Some(_), Some(_)) if a.fs_image.is_some() => Err(Usage::KernelWithFsImage),
        (Some(kernel), Some(initrd)) => Ok(Some(KernelInput {
            kernel: kernel.clone(),
            initrd: initrd.clone(),
            cmdline: a.kernel_cmdline.clone().unwrap_or_default(),
        })),
        _ => Err(Usage::KernelNeedsInitrd),
    }
}

/// `stele image build --json`: the output and what it is.
#[derive(serde::Serialize)]
struct BuildJson {
    out: String,
    #[serde(flatten)]
    result: ImageJson,
}

fn build_image(a: &BuildArgs) -> CliResult<(BuildReport, Vec<stele_image::zst::ZstReport>)> {
    clean_up_on_signals()?;
    let params = BuildParams {
        name: a.name.clone(),
        version: a.version.clone(),
        rollback_index: a.rollback_index,
        created: source_date_epoch()?,
        fs_type: parse_fs_type(&a.fs_type)?,
        salt: salt_or_random(a.salt.as_deref())?,
        data_block_size: a.data_block_size,
        hash_block_size: a.hash_block_size,
        kernel: None,
    };
    // Everything a device would refuse in the image, and an existing output, are refused
    // before any work.
    params.check()?;
    let target = stele_image::atomic::output_target(&a.out, a.force)?;
    let compressed = !a.no_compressed && target != stele_image::atomic::Target::Device;
    if compressed {
        stele_image::atomic::output_target(&stele_image::zst::path_of(&a.out), a.force)?;
        stele_image::atomic::output_target(&stele_image::lzc::path_of(&a.out), a.force)?;
    }
    let keys = a
        .keys
        .iter()
        .map(|p| stele_image::key_files::load_signing_key(p))
        .collect::<Result<Vec<_>, _>>()?;
    if a.fetch_client.is_some() && a.fs_image.is_some() {
        return Err(Usage::FetchClientWithFsImage.into());
    }
    let adds = Additions {
        kernel: kernel_input(a)?.map(KernelInput::describe).transpose()?,
        fetch_client: a
            .fetch_client
            .as_deref()
            .map(AddedFile::fetch_client)
            .transpose()?,
    };
    if let Some(dir) = &a.rootfs {
        // What PID 1 would refuse to run is refused now, before anything is built (a tar
        // archive is checked once it is unpacked, before its filesystem is built).
        stele_image::rootfs_check::check_dir(dir)?;
    }
    use stele_image::slot::{build_from_root, Output, RootSource};
    let tar = a
        .rootfs_tar
        .as_deref()
        .map(stele_image::stage::TarInput::parse);
    let out = Output {
        path: &a.out,
        force: a.force,
    };
    let bars = &mut Bars::stderr();
    let report = match (&a.rootfs, &tar, &a.fs_image) {
        (Some(dir), None, None) => build_from_root(
            RootSource::Dir(dir),
            &params,
            a.all_root,
            &adds,
            &keys,
            out,
            bars,
        )?,
        (None, Some(tar), None) => build_from_root(
            RootSource::Tar(tar),
            &params,
            a.all_root,
            &adds,
            &keys,
            out,
            bars,
        )?,
        (None, None, Some(img)) => {
            stele_image::slot::build_from_fs_image(img, &params, &keys, out, bars)?
        }
        _ => return Err(Usage::OneInput.into()),
    };
    let z = if compressed {
        vec![
            stele_image::zst::write_beside(&a.out, a.force, bars)?,
            stele_image::lzc::write_beside(&a.out, a.force, bars)?,
        ]
    } else {
        Vec::new()
    };
    Ok((report, z))
}

fn print_report(out: &Path, r: &BuildReport) {
    let m = &r.manifest;
    let ids: Vec<String> = r.signed_by.iter().map(ToString::to_string).collect();
    let kernel = m.kernel.as_ref().map_or_else(String::new, |k| {
        format!(" kernel={}", &hex::encode(&k.kernel.sha256)[..12])
    });
    println!(
        "built: {} {} {} rollback_index={} fs={} fs_size={} signed by {} root_hash={}{kernel}",
        out.display(),
        m.name,
        m.version,
        m.rollback_index,
        m.filesystem.fs_type.name(),
        m.filesystem.size,
        ids.join(","),
        hex::encode(&m.verity.root_hash)
    );
}

pub fn sign(a: &SignArgs) -> CliResult {
    if let Some(cmd) = &a.signer_cmd {
        let public = a.public.as_ref().ok_or(Usage::SignerNeedsPublic)?;
        let key = stele_device::runtime::keyring::load_public_key(public)?;
        let id = stele_image::slot::sign_external(&a.image, cmd, &key).context(&a.image)?;
        println!("signed: {} by {id} (external signer)", a.image.display());
        return Ok(());
    }
    // Every key is loaded before the image is touched, and all signatures go in one
    // rewrite: a bad second key leaves the image as it was.
    let keys = a
        .keys
        .iter()
        .map(|p| stele_image::key_files::load_signing_key(p))
        .collect::<Result<Vec<_>, _>>()?;
    stele_image::slot::rewrite_envelope(&a.image, |env| {
        keys.iter().try_for_each(|k| Ok(env.sign(k)?))
    })
    .context(&a.image)?;
    for k in &keys {
        let id = stele_verifier::keys::key_id(&k.verifying_key());
        println!("signed: {} by {id}", a.image.display());
    }
    Ok(())
}

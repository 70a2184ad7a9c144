//! The error of the `stele` command: every library error as a variant, with the exit class
//! each library gives it ([`Report`], stele_verifier::exit), plus the CLI's own: usage
//! errors, refusals it decides itself, and which file an error is about. `main` prints it with `stele_verifier::exit::print_error`.

use std::io;
use std::path::PathBuf;

use stele_device::runtime::keyring::KeyringError;
use stele_image::cpio::CpioError;
use stele_image::disk::DiskError;
use stele_image::initramfs::InitramfsError;
use stele_image::rootfs_check::RootfsError;
use stele_qemu::QemuError;
use stele_verifier::config::ConfigError;
use stele_verifier::exit::{Exit, Report};
use stele_verifier::plural::count;

/// Result of a subcommand.
pub type CliResult<T = ()> = Result<T, Error>;

/// Everything a `stele` command can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Verifier(#[from] stele_verifier::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Image(#[from] stele_image::Error),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error(transparent)]
    Initramfs(#[from] InitramfsError),
    #[error(transparent)]
    Cpio(#[from] CpioError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error(transparent)]
    Update(#[from] stele_device::Error),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    /// The console was already shown as it came: the message without its tail.
    #[error("{}", .0.summary())]
    Qemu(#[from] QemuError),
    #[error(transparent)]
    Usage(#[from] Usage),
    /// Writing an output file.
    #[error("{what} {}: {source}", path.display())]
    Output {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `stele verify`: the keyring met its threshold with no signature (cannot happen with
    /// a threshold >= 1, checked anyway).
    #[error("{}: no valid signature", image.display())]
    NoValidSignature { image: PathBuf },
    /// `stele verity verify`: the hash file is shorter than the tree.
    #[error("truncated hash file {}: {}, but a tree with {used} needs {need}: give the block sizes and --data-blocks the tree was made with, else HASH was cut short", path.display(), count(*len, "byte", "bytes"))]
    TruncatedHashFile {
        path: PathBuf,
        len: u64,
        need: u64,
        used: String,
    },

    /// `stele verity verify`: the tree's top does not hash to ROOT with the parameters used.
    #[error("the hash tree does not match ROOT {root} (it computes {computed}) with {used}: give the --salt, block sizes and --data-blocks the tree was made with (`verity format` printed them), else HASH, DATA or ROOT was modified")]
    VerityRoot {
        computed: String,
        root: String,
        used: String,
    },
    /// `stele verity verify`: a data block does not match the tree.
    #[error("verity mismatch at data block {block}: DATA was modified, or the tree was made with other parameters than {used}")]
    VerityData { block: u64, used: String },
    /// `stele qemu run` without `--expect`: QEMU exited with a failure.
    #[error("QEMU exited with {status}")]
    QemuExit { status: String },
    /// Which file an error is about.
    #[error("{}: {source}", context.display())]
    Context {
        context: PathBuf,
        #[source]
        source: Box<Error>,
    },
}

/// Arguments (or environment variables) the user got wrong.
#[derive(Debug, thiserror::Error)]
pub enum Usage {
    #[error("invalid {arg} {value:?}: {why}")]
    Hex {
        arg: &'static str,
        value: String,
        #[source]
        why: stele_verifier::hex::HexError,
    },
    #[error("invalid --salt: {len} bytes, at most {max} allowed")]
    SaltTooLong { len: usize, max: usize },
    #[error("invalid SOURCE_DATE_EPOCH {value:?}: expected seconds since the Unix epoch")]
    Epoch { value: String },
    #[error("SOURCE_DATE_EPOCH: {0}")]
    EpochRange(#[source] CpioError),
    #[error("--signer-cmd needs --public P.pem")]
    SignerNeedsPublic,
    #[error("give exactly one of --rootfs, --rootfs-tar and --fs-image")]
    OneInput,
    #[error("{} holds no whole {block}-byte data block", data.display())]
    NoDataBlock { data: PathBuf, block: u64 },
    #[error("{} is {}, too short for {} of {block} bytes", data.display(), count(*len, "byte", "bytes"), count(*blocks, "data block", "data blocks"))]
    DataTooShort {
        data: PathBuf,
        len: u64,
        blocks: u64,
        block: u64,
    },
    /// Verity geometry the verifier refuses.
    #[error("{0}")]
    Geometry(#[source] stele_verifier::Error),
    #[error("DATA and HASH are the same file ({}, {}): `verity format` would overwrite the data with its hash tree; give another HASH file", data.display(), hash.display())]
    HashIsData { data: PathBuf, hash: PathBuf },
    #[error("invalid ROOT {0:?}: expected 64 hex digits")]
    Root(String),
    #[error("hash tree too large")]
    TreeTooLarge,
    #[error("--init {}: {why}", path.display())]
    Init { path: PathBuf, why: String },
    #[error(
        "--key, --keys and --threshold go with --disk; on the device the keys come from /run/stele"
    )]
    KeysWithoutDisk,
    #[error("update install --disk needs the trusted keys: --key P.pem or --keys DIR (there is no /run/stele on a build host)")]
    DiskWithoutKeys,
    #[error("--threshold needs the trusted keys it counts: --key P.pem or --keys DIR")]
    ThresholdWithoutKeys,
    #[error("--bmap maps a disk image file for `bmaptool copy`; with a block device as --out, drop --bmap")]
    BmapOfDevice,
    #[error("--format {0} writes a disk image file for a VM host; for a block device or --bmap, drop --format (raw is the default)")]
    FormatOfRaw(&'static str),
    #[error("--secure-boot and --vars need --firmware uefi")]
    UefiOnly,
    #[error(
        "direct boot needs --kernel and --initrd (or boot the disk with --firmware uefi or --bios)"
    )]
    DirectNeedsKernel,
    #[error("--bios boots the disk: drop --kernel/--initrd (or use --firmware direct)")]
    BiosWithKernel,
    #[error("--append needs --kernel: a UKI's command line is inside it")]
    AppendNeedsKernel,
    #[error("--initrd needs --kernel")]
    InitrdNeedsKernel,
    #[error("--disk-bus given {buses} times for {disks} --disk: give it once (for every disk) or once per --disk, in the same order")]
    DiskBuses { buses: usize, disks: usize },
    #[error("--smp must be at least 1")]
    Smp,
    #[error("invalid --max-rate {0:?}: bytes per second, e.g. 500K or 2M")]
    Rate(String),
    #[error("--timeout must be at least 1 second")]
    Timeout,
    #[error("--max-rate, --deadline, --max-time and --timeout go with an http:// or https:// URL")]
    FetchNeedsUrl,
    #[error("invalid {arg} {value:?}: {why}")]
    Arg {
        arg: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("release {version}: {why}")]
    Release { version: String, why: String },
    #[error("--delta {file}: {why}")]
    Delta { file: String, why: String },
    #[error("{0}")]
    Channel(#[source] stele_verifier::channel::ChannelError),
    #[error("--kernel and --initrd go together: the slot's kernel boots with its stage-2 initramfs (`stele initramfs --stage2`)")]
    KernelNeedsInitrd,
    #[error("--kernel-cmdline needs --kernel and --initrd")]
    CmdlineNeedsKernel,
    #[error("--kernel and --initrd need --rootfs or --rootfs-tar: a --fs-image is wrapped as it is, nothing can be added to it")]
    KernelWithFsImage,
    #[error("--fetch-client needs --rootfs or --rootfs-tar: a --fs-image is wrapped as it is, nothing can be added to it")]
    FetchClientWithFsImage,
    #[error("--kernel is for a stage-1 initramfs: a stage-2 one (--stage2) never kexecs, so it has no use for the running kernel's digest")]
    KernelWithStage2,
}

impl Error {
    /// Says which file this error is about.
    pub fn context(self, context: impl Into<PathBuf>) -> Self {
        Error::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }

    /// I/O on a file the CLI opens itself: the build side's [`stele_image::Error::Io`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        stele_image::Error::io(op, path, source).into()
    }
}

/// `.context(path)` on results.
pub trait Context<T> {
    fn context(self, context: impl Into<PathBuf>) -> CliResult<T>;
}

impl<T, E: Into<Error>> Context<T> for Result<T, E> {
    fn context(self, context: impl Into<PathBuf>) -> CliResult<T> {
        self.map_err(|e| e.into().context(context))
    }
}

impl Report for Error {
    fn exit(&self) -> Exit {
        match self {
            Error::Verifier(e) => e.exit(),
            Error::Config(e) => e.exit(),
            Error::Image(e) => e.exit(),
            Error::Disk(e) => e.exit(),
            Error::Initramfs(e) => e.exit(),
            Error::Cpio(e) => e.exit(),
            Error::Rootfs(e) => e.exit(),
            Error::Update(e) => e.exit(),
            Error::Keyring(e) => e.exit(),
            Error::Qemu(e) => e.exit(),
            Error::Usage(_) => Exit::Usage,
            Error::Output { .. } => Exit::Environment,
            Error::NoValidSignature { .. }
            | Error::TruncatedHashFile { .. }
            | Error::VerityRoot { .. }
            | Error::VerityData { .. }
            | Error::QemuExit { .. } => Exit::Refused,
            Error::Context { source, .. } => source.exit(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_library_error_keeps_its_class() {
        let e: Error = stele_verifier::Error::FooterChecksum.into();
        assert_eq!(e.exit(), Exit::Refused);
        let e: Error = stele_image::Error::ToolMissing {
            tool: "mksquashfs",
            package: "squashfs-tools",
        }
        .into();
        assert_eq!(e.exit(), Exit::Environment);
        let e: Error = stele_image::Error::invalid("--salt", "odd").into();
        assert_eq!(e.exit(), Exit::Usage);
        let key = stele_verifier::Error::Key {
            path: "k".into(),
            problem: stele_verifier::keyfile::KeyProblem::Empty {
                want: stele_verifier::keyfile::Half::Private,
            },
        };
        let e: Error = stele_image::Error::Verifier(key).into();
        assert_eq!(e.exit(), Exit::Usage);
        let e = e.context("a");
        assert_eq!(e.exit(), Exit::Usage);
        assert!(
            e.to_string().starts_with("a: bad key k: the file is empty"),
            "{e}"
        );
        let e: Error = stele_verifier::Error::BadMagic {
            what: "footer",
            found: vec![0; 8],
        }
        .into();
        assert!(e.to_string().contains("truncated"), "{e}");
        let e: Error = QemuError::Timeout {
            pattern: "stele: ready".into(),
            secs: 5,
            tail: "console".into(),
        }
        .into();
        assert_eq!(e.exit(), Exit::Refused);
        let msg = e.to_string();
        assert!(
            msg.contains("stele: ready") && !msg.contains("console"),
            "{msg}"
        );
        let e: Error = QemuError::NotFound("q".into()).into();
        assert_eq!(e.exit(), Exit::Environment);
        let e: Error = DiskError::NotSlot {
            path: "x".into(),
            why: "no footer".into(),
        }
        .into();
        assert_eq!(e.exit(), Exit::Refused);
        let e: Error = Usage::OneInput.into();
        assert_eq!(e.exit(), Exit::Usage);
    }
}

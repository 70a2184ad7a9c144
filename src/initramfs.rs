//! `stele initramfs`: build the initramfs (stele-init, boot.toml, keys, kernel modules).

use std::io::Write;
use std::path::PathBuf;

use stele_image::cpio::Archive;
use stele_image::hardware::Hardware;
use stele_image::initramfs::{build, check_static_elf, InitramfsSpec};

use stele_verifier::plural::count_len;

use crate::error::{CliResult, Error, Usage};
use crate::util::source_date_epoch;

/// Build an initramfs (newc cpio) for stele-init.
#[derive(Debug, clap::Args)]
pub struct InitramfsArgs {
    /// The kernel's modules directory (/lib/modules/<version>, after depmod).
    #[arg(long, value_name = "DIR")]
    pub modules_dir: PathBuf,
    /// A module to include besides the default set, loaded on every boot (repeatable;
    /// dashes = underscores, aliases accepted).
    #[arg(long = "module", value_name = "NAME")]
    pub modules: Vec<String>,
    /// Include only the --module modules, not the default set (dm_verity, erofs, squashfs,
    /// ext4, overlay and the --hardware drivers).
    #[arg(long)]
    pub no_default_modules: bool,
    /// The drivers carried, each loaded only when a device it drives is present: generic
    /// (NVMe, SATA, virtio, eMMC/SD, TPM, watchdogs), qemu (virtio disks), host (what this
    /// machine's devices need).
    #[arg(long, value_name = "PROFILE", value_enum, default_value = "generic")]
    pub hardware: HardwareArg,
    /// A trusted public key (SPKI PEM; repeatable).
    #[arg(long = "key", value_name = "P.pem", required = true)]
    pub keys: Vec<PathBuf>,
    /// Signatures needed: 1 ..= number of keys.
    #[arg(long, default_value_t = 1)]
    pub threshold: usize,
    /// boot.toml settings (must not set `threshold`, `modules` or `name`).
    #[arg(long, value_name = "boot.toml")]
    pub config: Option<PathBuf>,
    /// Bind the device to this product: slots and updates whose manifest `name` differs
    /// are refused at boot and at install (boot.toml `name`). Without it, any image signed
    /// by the keys boots (a warning says so).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// The stele-init binary, installed as /init.
    #[arg(long, value_name = "PATH")]
    pub init: PathBuf,
    /// The kernel this (stage-1) initramfs runs under: a slot whose manifest names a kernel
    /// with the same sha256 boots in place, without kexec (boot.toml `kernel_sha256`).
    #[arg(long, value_name = "VMLINUZ")]
    pub kernel: Option<PathBuf>,
    /// Build a stage-2 initramfs (boot.toml `stage = 2`), the one a slot carries for its own
    /// kernel: it boots only the slot stage 1 names with `stele.stage2=` and never kexecs.
    #[arg(long)]
    pub stage2: bool,
    /// boot.toml `min_rollback_index`: images with a lower rollback_index never boot or
    /// install with this initramfs, whatever the boot state and the TPM say.
    #[arg(long, value_name = "N")]
    pub min_rollback_index: Option<u64>,
    /// boot.toml `boot_disk`: the GPT disk GUID of the disk this machine boots from, used
    /// where the firmware does not say (direct kernel boot, BIOS); `stele disk create`
    /// prints it and `--disk-guid` sets it.
    #[arg(long, value_name = "GUID", value_parser = parse_guid)]
    pub boot_disk: Option<stele_verifier::gpt::Guid>,
    /// Where to write the initramfs.
    #[arg(long, value_name = "INITRD")]
    pub out: PathBuf,
    /// Replace an existing --out.
    #[arg(long)]
    pub force: bool,
}

/// A GPT GUID argument (`--boot-disk`, `disk create --disk-guid`): the textual form, not
/// all zero.
pub fn parse_guid(s: &str) -> Result<stele_verifier::gpt::Guid, String> {
    stele_verifier::gpt::Guid::parse(s)
        .filter(|g| !g.is_zero())
        .ok_or_else(|| {
            format!("{s:?} is not a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, not all zero)")
        })
}

/// `--hardware`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum HardwareArg {
    Generic,
    Qemu,
    Host,
}

impl From<HardwareArg> for Hardware {
    fn from(h: HardwareArg) -> Hardware {
        match h {
            HardwareArg::Generic => Hardware::Generic,
            HardwareArg::Qemu => Hardware::Qemu,
            HardwareArg::Host => Hardware::Host,
        }
    }
}

/// What `stele initramfs` says on stderr when no `--name` binds the device to a product.
pub const UNBOUND_WARNING: &str = "no --name: this initramfs boots and installs any product's image signed by its keys; give --name PRODUCT to bind the device to one";

/// Runs `stele initramfs`.
pub fn run(args: InitramfsArgs) -> CliResult {
    if args.stage2 && args.kernel.is_some() {
        return Err(Usage::KernelWithStage2.into());
    }
    // The kernel runs /init before any library exists: refuse a dynamic binary here, with
    // the fix, rather than let the boot die with "Failed to execute /init (error -2)".
    stele_image::atomic::output_target(&args.out, args.force)?;
    let init = std::fs::read(&args.init).map_err(|e| Error::io("read --init", &args.init, e))?;
    check_static_elf(&init).map_err(|why| Usage::Init {
        path: args.init.clone(),
        why,
    })?;
    let epoch = source_date_epoch()?;
    let mtime = Archive::mtime_from_epoch(epoch).map_err(Usage::EpochRange)?;
    let spec = InitramfsSpec {
        modules_dir: args.modules_dir,
        modules: args.modules,
        default_modules: !args.no_default_modules,
        hardware: args.hardware.into(),
        keys: args.keys,
        threshold: args.threshold,
        config: args.config,
        init: args.init,
        mtime,
        name: args.name,
        stage2: args.stage2,
        kernel: args.kernel,
        min_rollback_index: args.min_rollback_index,
        boot_disk: args.boot_disk,
    };
    let (archive, order) = build(&spec)?;
    let bytes = archive.to_bytes()?;
    let out = args.out;
    stele_image::outfile::write_atomic(&out, args.force, |f, _| {
        f.write_all(&bytes).map_err(|source| Error::Output {
            what: "writing",
            path: out.clone(),
            source,
        })
    })?;
    if spec.name.is_none() {
        stele_verifier::exit::print_warning(&UNBOUND_WARNING);
    }
    println!(
        "wrote {} ({}, {}, threshold {}, product {}, modules: {})",
        out.display(),
        count_len(bytes.len(), "byte", "bytes"),
        count_len(spec.keys.len(), "key", "keys"),
        spec.threshold,
        spec.name.as_deref().unwrap_or("any"),
        order.join(" ")
    );
    Ok(())
}

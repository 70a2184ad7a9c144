//! `stele disk create`: a GPT disk image with the state partition and the root slots.

use std::path::PathBuf;

use stele_image::disk::{create_with_esp, parse_size, DiskSpec, EspSpec};
use stele_image::disk_format::{self, DiskFormat};

use crate::error::{CliResult, Usage};
use crate::progress::Bars;
use crate::util::source_date_epoch;

/// Disk images.
#[derive(Debug, clap::Args)]
pub struct DiskArgs {
    #[command(subcommand)]
    pub cmd: DiskCmd,
}

/// `stele disk` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DiskCmd {
    /// Create a disk: optional stele-esp, stele-state, stele-root-a, stele-root-b, optional
    /// stele-data (ext4).
    Create(CreateArgs),
    /// Request a fresh data partition on a disk image (a factory reset): its next boot
    /// makes a new filesystem on stele-data before mounting it.
    #[command(about = stele_device::cli::spec::DATA_RESET.about)]
    ResetData(ResetDataArgs),
}

/// Arguments of `stele disk reset-data`.
#[derive(Debug, clap::Args)]
pub struct ResetDataArgs {
    /// The disk image (or block device) made by `stele disk create`.
    #[arg(long, value_name = "DISK")]
    pub disk: PathBuf,
}

/// Arguments of `stele disk create`.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Where to write the disk image.
    #[arg(long, value_name = "DISK")]
    pub out: PathBuf,
    /// Size of each root slot partition (64M, 1G, 512K or bytes; rounded up to 1 MiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub slot_size: u64,
    /// Slot image for stele-root-a.
    #[arg(long = "a", value_name = "SLOT.img")]
    pub a: PathBuf,
    /// Slot image for stele-root-b (left empty and unbootable without it).
    #[arg(long = "b", value_name = "SLOT.img")]
    pub b: Option<PathBuf>,
    /// Add an ext4 stele-data partition of this size.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub data_size: Option<u64>,
    /// Add an EFI system partition (first on the disk) holding this UKI as
    /// \EFI\BOOT\BOOTX64.EFI, so UEFI firmware boots the disk by itself.
    #[arg(long, value_name = "UKI.efi")]
    pub uki: Option<PathBuf>,
    /// Size of the EFI system partition (default: its files twice, at least 64M).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, requires = "uki")]
    pub esp_size: Option<u64>,
    /// Also boot from legacy BIOS: SYSLINUX on the ESP loads the UKI's kernel, initrd
    /// and command line.
    #[arg(long, requires = "uki")]
    pub bios: bool,
    /// The GPT disk GUID: the disk's identity, which `stele initramfs --boot-disk` records
    /// for machines whose firmware does not name the boot disk (default: derived from the
    /// content, printed).
    #[arg(long, value_name = "GUID", value_parser = crate::initramfs::parse_guid)]
    pub disk_guid: Option<stele_verifier::gpt::Guid>,
    /// Also write DISK.bmap (bmaptool create) for `bmaptool copy`.
    #[arg(long)]
    pub bmap: bool,
    /// Write the disk as raw (default), qcow2, vmdk or vhdx (through qemu-img, for VM hosts).
    #[arg(long, value_name = "FORMAT", default_value = "raw")]
    pub format: DiskFormat,
    /// Replace an existing --out (and DISK.bmap), or write onto a block device.
    #[arg(long)]
    pub force: bool,
}

/// A disk in a VM format: the raw disk built in a scratch directory beside --out, converted
/// by qemu-img, renamed into place. A block device or --bmap (a map of raw bytes) with it
/// is refused, and a missing qemu-img, before anything is built.
fn converted(
    (out, force, bmap, format): (&std::path::Path, bool, bool, DiskFormat),
    spec: &DiskSpec,
    esp: Option<&EspSpec>,
) -> CliResult<stele_verifier::gpt::Gpt> {
    let target = stele_image::atomic::output_target(out, force)?;
    if target == stele_image::atomic::Target::Device || bmap {
        return Err(Usage::FormatOfRaw(format.name()).into());
    }
    disk_format::QEMU_IMG.path()?;
    let scratch = stele_image::tool::Scratch::beside(out)?;
    let (raw, conv) = (scratch.join("disk.raw"), scratch.join("disk.out"));
    let gpt = create_with_esp(&raw, spec, esp, false, &mut Bars::stderr())?;
    disk_format::convert(&raw, &conv, format)?;
    std::fs::rename(&conv, out).map_err(|e| stele_image::Error::io("rename into place", out, e))?;
    Ok(gpt)
}

/// `stele data ...`: on the device, as its own `stele` runs it.
#[derive(Debug, clap::Subcommand)]
pub enum DataCommand {
    #[command(about = stele_device::cli::spec::DATA_RESET.about)]
    Reset,
}

/// Runs `stele data reset` against the device's /run/stele.
pub fn data(c: DataCommand) -> CliResult {
    match c {
        DataCommand::Reset => {
            let at = stele_device::cli::At::Device(std::path::Path::new(
                stele_device::runtime::run_dir::RUN_DIR,
            ));
            let cmd = stele_device::cli::args::Command::DataReset;
            Ok(stele_device::cli::run(&cmd, at, &mut Bars::stderr())?)
        }
    }
}

/// Runs `stele disk ...`.
pub fn run(args: DiskArgs) -> CliResult {
    match args.cmd {
        DiskCmd::ResetData(r) => {
            let at = stele_device::cli::At::Disk {
                path: &r.disk,
                keyring: None,
                product: None,
                http: None,
            };
            let cmd = stele_device::cli::args::Command::DataReset;
            Ok(stele_device::cli::run(&cmd, at, &mut Bars::stderr())?)
        }
        DiskCmd::Create(c) => {
            crate::image::clean_up_on_signals()?;
            let spec = DiskSpec {
                slot_size: c.slot_size,
                a: c.a,
                b: c.b,
                data_size: c.data_size,
                epoch: source_date_epoch()?,
                disk_guid: c.disk_guid,
            };
            let esp = c.uki.map(|uki| EspSpec {
                uki,
                size: c.esp_size,
                bios: c.bios,
            });
            if c.bmap {
                // Both outputs are checked before either is written.
                let target = stele_image::atomic::output_target(&c.out, c.force)?;
                if target == stele_image::atomic::Target::Device {
                    return Err(Usage::BmapOfDevice.into());
                }
                stele_image::atomic::output_target(&stele_image::bmap::path_for(&c.out), c.force)?;
            }
            let gpt = if c.format == DiskFormat::Raw {
                create_with_esp(&c.out, &spec, esp.as_ref(), c.force, &mut Bars::stderr())?
            } else {
                converted((&c.out, c.force, c.bmap, c.format), &spec, esp.as_ref())?
            };
            println!("wrote {} (disk GUID {})", c.out.display(), gpt.disk_guid);
            for p in &gpt.partitions {
                let (off, len) = p.byte_range();
                println!("  {:<13} offset {off:>12} size {len:>12}", p.name);
            }
            if c.bmap {
                let map = stele_image::bmap::write(&c.out, c.force)?;
                println!("wrote {}", map.display());
            }
            Ok(())
        }
    }
}

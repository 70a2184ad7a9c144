//! `stele uki build`: the stage-1 Unified Kernel Image (systemd EFI stub + kernel +
//! initramfs + command line), optionally signed for Secure Boot.

use std::path::PathBuf;

use stele_image::uki::{self, UkiSpec};
use stele_verifier::hex;

use crate::error::CliResult;
use crate::util::source_date_epoch;

/// Unified Kernel Images.
#[derive(Debug, clap::Subcommand)]
pub enum UkiCommand {
    /// Build a UKI: systemd's EFI stub with .osrel, .cmdline, .initrd and .linux sections.
    Build(BuildArgs),
}

/// Arguments of `stele uki build`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("signing").args(["sign_key", "sign_cert"]).multiple(true).requires_all(["sign_key", "sign_cert"])))]
pub struct BuildArgs {
    /// The kernel (an x86 bzImage, e.g. /boot/vmlinuz-*).
    #[arg(long, value_name = "VMLINUZ")]
    kernel: PathBuf,
    /// The initramfs (from `stele initramfs`).
    #[arg(long, value_name = "INITRD")]
    initrd: PathBuf,
    /// The stage-1 kernel command line embedded in the UKI (under Secure Boot nothing
    /// outside the signed UKI can change it).
    #[arg(long, value_name = "ARGS", default_value = uki::DEFAULT_CMDLINE)]
    cmdline: String,
    /// os-release file for the .osrel section (default: NAME="stele", ID=stele).
    #[arg(long, value_name = "FILE")]
    os_release: Option<PathBuf>,
    /// The systemd EFI stub.
    #[arg(long, value_name = "STUB", default_value = uki::STUB)]
    stub: PathBuf,
    /// Output UKI (temporary file next to it, renamed at the end).
    #[arg(long, value_name = "UKI.efi")]
    out: PathBuf,
    /// Replace an existing --out.
    #[arg(long)]
    force: bool,
    /// Sign for Secure Boot with this PEM private key (sbsign; needs --sign-cert).
    #[arg(long, value_name = "KEY.pem")]
    sign_key: Option<PathBuf>,
    /// The X.509 certificate (PEM) of --sign-key.
    #[arg(long, value_name = "CERT.pem")]
    sign_cert: Option<PathBuf>,
}

/// Runs `stele uki ...`.
pub fn run(cmd: UkiCommand) -> CliResult {
    let UkiCommand::Build(a) = cmd;
    crate::image::clean_up_on_signals()?;
    let spec = UkiSpec {
        stub: a.stub,
        kernel: a.kernel,
        initrd: a.initrd,
        cmdline: a.cmdline,
        os_release: a.os_release,
        epoch: source_date_epoch()?,
        sign: a.sign_key.zip(a.sign_cert),
    };
    let r = uki::build(&a.out, &spec, a.force)?;
    println!(
        "wrote {} ({} bytes, {}, sha256 {})",
        a.out.display(),
        r.len,
        if r.signed { "signed" } else { "unsigned" },
        hex::encode(&r.sha256)
    );
    for (name, vma, len) in &r.sections {
        println!("  {name:<9} vma 0x{vma:08x} size {len:>10}");
    }
    Ok(())
}

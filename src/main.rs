//! The stele command line: argument parsing and dispatch only; each subcommand group
//! lives in its own module.

mod channel;
mod diff;
mod disk;
mod error;
mod image;
mod initramfs;
mod inspect;
mod json;
mod keygen;
mod progress;
mod qemu;
mod remote;
mod uki;
mod update;
mod util;
mod verify;
mod verity;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use stele_verifier::exit::{print_error, Exit};

use error::CliResult;

/// Signed, verity-protected A/B slot images and a verified-boot init.
#[derive(Debug, Parser)]
#[command(name = "stele", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate an ed25519 key pair (PKCS#8 private, SPKI public PEM).
    Keygen(keygen::KeygenArgs),
    /// Build slot images.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Add a signature to an existing slot image.
    Sign(image::SignArgs),
    /// Verify a slot image against trusted keys.
    Verify(verify::VerifyArgs),
    /// Show a slot image's manifest and layout (NOT verified).
    Inspect(inspect::InspectArgs),
    /// dm-verity hash trees, compatible with `veritysetup --no-superblock`.
    #[command(subcommand)]
    Verity(verity::VerityCommand),
    /// Build the initramfs (stele-init, boot.toml, trusted keys, kernel modules).
    Initramfs(initramfs::InitramfsArgs),
    /// GPT disk images with the state, slot and data partitions.
    Disk(disk::DiskArgs),
    /// Boot a VM under QEMU and check its console.
    Qemu(qemu::QemuArgs),
    /// A/B updates: install a signed slot image into the other slot, status, mark-good.
    #[command(subcommand)]
    Update(update::UpdateCommand),
    /// Unified Kernel Images: the stage-1 boot file for UEFI (and Secure Boot).
    #[command(subcommand)]
    Uki(uki::UkiCommand),
    /// Signed update channels: what a fleet is offered, fresh and in rollout waves.
    #[command(subcommand)]
    Channel(channel::ChannelCommand),
    /// The data partition on the device (`stele disk reset-data --disk` offline).
    #[command(subcommand)]
    Data(disk::DataCommand),
}

fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Keygen(a) => keygen::keygen(&a),
        Command::Image(c) => image::run(c),
        Command::Sign(a) => image::sign(&a),
        Command::Verify(a) => verify::verify(&a),
        Command::Inspect(a) => inspect::inspect(&a),
        Command::Verity(c) => verity::run(c),
        Command::Initramfs(a) => initramfs::run(a),
        Command::Disk(a) => disk::run(a),
        Command::Qemu(a) => qemu::run(a),
        Command::Update(c) => update::run(c),
        Command::Uki(c) => uki::run(c),
        Command::Channel(c) => channel::run(c),
        Command::Data(c) => disk::data(c),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage.into()
            } else {
                Exit::Success.into()
            };
        }
    };
    let result = run(cli);
    // An interrupted build ends in the signal thread, with its own one line.
    stele_image::cleanup::settle();
    match result {
        Ok(()) => Exit::Success.into(),
        Err(e) => print_error(&e).into(),
    }
}

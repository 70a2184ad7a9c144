//! The stele command line.

mod boot_exit;
mod disk;
mod initramfs;
mod qemu;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// stele: signed, verity-protected A/B slot images and a verified-boot init.
#[derive(Debug, Parser)]
#[command(name = "stele", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Build the initramfs (stele-init, boot.toml, keys, kernel modules).
    Initramfs(initramfs::InitramfsArgs),
    /// Disk images.
    Disk(disk::DiskArgs),
    /// Run a VM under QEMU.
    Qemu(qemu::QemuArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Initramfs(a) => initramfs::run(a),
        Cmd::Disk(a) => disk::run(a),
        Cmd::Qemu(a) => qemu::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("stele: error: {}", f.message.replace('\n', " "));
            f.exit.into()
        }
    }
}

//! `stele qemu run`: boot a kernel + initramfs + disks under QEMU and watch the console.

use std::path::PathBuf;
use std::time::Duration;

use stele_qemu::{QemuError, Vm, VmConfig};

use crate::error::{CliResult, Error};

/// QEMU.
#[derive(Debug, clap::Args)]
pub struct QemuArgs {
    #[command(subcommand)]
    pub cmd: QemuCmd,
}

/// `stele qemu` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum QemuCmd {
    /// Boot a VM, print its console, and check that texts appear in order.
    Run(RunArgs),
}

/// Arguments of `stele qemu run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[arg(long, value_name = "KERNEL")]
    pub kernel: PathBuf,
    #[arg(long, value_name = "INITRD")]
    pub initrd: PathBuf,
    /// A raw disk image, attached as a virtio disk (repeatable: vda, vdb, ...).
    #[arg(long = "disk", value_name = "DISK")]
    pub disks: Vec<PathBuf>,
    /// Extra kernel command line (after `console=ttyS0 panic=-1`).
    #[arg(long, value_name = "ARGS", default_value = "")]
    pub append: String,
    /// Text that must appear on the console, in this order (repeatable).
    #[arg(long = "expect", value_name = "TEXT")]
    pub expect: Vec<String>,
    /// Seconds before the VM is killed and the run fails.
    #[arg(long, value_name = "S", default_value_t = 300)]
    pub timeout: u64,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MB", default_value_t = 512)]
    pub memory: u32,
    /// Make a guest reboot end QEMU (default: the VM reboots, as hardware would).
    #[arg(long)]
    pub no_reboot: bool,
}

/// Runs `stele qemu ...`.
pub fn run(args: QemuArgs) -> CliResult {
    let QemuCmd::Run(r) = args.cmd;
    let mut cfg = VmConfig::from_env(r.kernel, r.initrd);
    cfg.disks = r.disks.into_iter().map(|d| (d, false)).collect();
    cfg.append = r.append;
    cfg.memory_mb = r.memory;
    cfg.no_reboot = r.no_reboot;
    cfg.timeout = Duration::from_secs(r.timeout);
    cfg.echo = true;
    let mut vm = Vm::start(&cfg)?;
    for text in &r.expect {
        let left = vm.remaining();
        vm.expect(text, left)?;
    }
    let left = vm.remaining();
    match vm.wait_exit(left) {
        Ok(status) if !status.success() && r.expect.is_empty() => Err(Error::QemuExit {
            status: status.to_string(),
        }),
        Ok(_) => Ok(()),
        Err(QemuError::StillRunning { .. }) if !r.expect.is_empty() => {
            vm.kill()?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

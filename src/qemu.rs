//! `stele qemu run`: boot a VM (direct kernel, UEFI/OVMF with or without Secure Boot, or
//! SeaBIOS) with disks, watch the console, and report each expectation (also as JUnit XML).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use stele_qemu::firmware::{self, Firmware};
use stele_qemu::junit::{self, Case, Outcome};
use stele_qemu::{Disk, DiskBus, QemuError, Vm, VmConfig};

use crate::error::{CliResult, Error, Usage};

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

/// How the VM boots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FirmwareArg {
    /// QEMU loads --kernel and --initrd itself.
    Direct,
    /// OVMF boots the disk's EFI system partition.
    Uefi,
    /// SeaBIOS boots the disk (made with `stele disk create --bios`).
    Bios,
}

/// A disk's bus (`--disk-bus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BusArg {
    Virtio,
    Nvme,
    Sata,
    Scsi,
    Usb,
}

impl From<BusArg> for DiskBus {
    fn from(b: BusArg) -> DiskBus {
        match b {
            BusArg::Virtio => DiskBus::Virtio,
            BusArg::Nvme => DiskBus::Nvme,
            BusArg::Sata => DiskBus::Sata,
            BusArg::Scsi => DiskBus::Scsi,
            BusArg::Usb => DiskBus::Usb,
        }
    }
}

/// The disks with their buses: `--disk-bus` once applies to every disk, else there is one
/// per `--disk`. Pure.
fn disks(r: &RunArgs) -> CliResult<Vec<Disk>> {
    let bus = |i: usize| match r.disk_buses.as_slice() {
        [] => Some(DiskBus::Virtio),
        [one] => Some((*one).into()),
        many => many.get(i).map(|b| (*b).into()),
    };
    if r.disk_buses.len() > 1 && r.disk_buses.len() != r.disks.len() {
        return Err(Usage::DiskBuses {
            buses: r.disk_buses.len(),
            disks: r.disks.len(),
        }
        .into());
    }
    Ok(r.disks
        .iter()
        .enumerate()
        .map(|(i, d)| Disk::new(d).on(bus(i).unwrap_or_default()))
        .collect())
}

/// Arguments of `stele qemu run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The kernel (needed for direct boot; with UEFI, an image the firmware loads instead
    /// of the disk's, with --append as its command line).
    #[arg(long, value_name = "KERNEL")]
    pub kernel: Option<PathBuf>,
    /// The initramfs (needed for direct boot).
    #[arg(long, value_name = "INITRD")]
    pub initrd: Option<PathBuf>,
    /// A raw disk image (repeatable), attached on --disk-bus (virtio: vda, vdb, ...).
    #[arg(long = "disk", value_name = "DISK")]
    pub disks: Vec<PathBuf>,
    /// The bus of the disks: virtio (default), nvme, sata (AHCI), scsi (virtio-scsi) or
    /// usb (a removable USB stick on xHCI). Once for every disk, or once per --disk.
    #[arg(long = "disk-bus", value_name = "BUS", value_enum)]
    pub disk_buses: Vec<BusArg>,
    /// Virtual CPUs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub smp: u32,
    /// Extra kernel command line (after `console=ttyS0 panic=-1`; needs --kernel).
    #[arg(long, value_name = "ARGS", default_value = "")]
    pub append: String,
    /// Firmware: direct (default), uefi, bios.
    #[arg(long, value_name = "FW", value_enum)]
    pub firmware: Option<FirmwareArg>,
    /// Boot the disk from legacy BIOS (SeaBIOS): the same as --firmware bios.
    #[arg(long, conflicts_with_all = ["firmware", "secure_boot", "vars"])]
    pub bios: bool,
    /// UEFI with Secure Boot enforcing: a fresh variable store with a generated PK and KEK
    /// and this certificate as the only db entry.
    #[arg(long, value_name = "DB.crt")]
    pub secure_boot: Option<PathBuf>,
    /// Keep the UEFI variable store in FILE (created when missing, else used as it is).
    #[arg(long, value_name = "FILE")]
    pub vars: Option<PathBuf>,
    /// Add an i6300esb watchdog; its expiry resets the VM.
    #[arg(long)]
    pub watchdog: bool,
    /// Add a TPM 2.0 (swtpm), fresh for this run (its state in a temporary directory).
    #[arg(long)]
    pub tpm: bool,
    /// Add a TPM 2.0 (swtpm) whose state is kept in DIR (created if missing), so that
    /// later runs see the same TPM (implies --tpm).
    #[arg(long, value_name = "DIR")]
    pub tpm_state: Option<PathBuf>,
    /// Text that must appear on the console, in this order (repeatable).
    #[arg(long = "expect", value_name = "TEXT")]
    pub expect: Vec<String>,
    /// Write a JUnit XML report: one test case per --expect.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
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

/// The firmware the arguments ask for. Pure.
fn firmware_kind(r: &RunArgs) -> CliResult<FirmwareArg> {
    let uefi_only = r.secure_boot.is_some() || r.vars.is_some();
    let kind = match (r.bios, r.firmware) {
        (true, _) => FirmwareArg::Bios,
        (false, Some(f)) => f,
        (false, None) if uefi_only => FirmwareArg::Uefi,
        (false, None) => FirmwareArg::Direct,
    };
    let has_kernel = r.kernel.is_some();
    let refused = match kind {
        _ if uefi_only && kind != FirmwareArg::Uefi => Usage::UefiOnly,
        FirmwareArg::Direct if !has_kernel || r.initrd.is_none() => Usage::DirectNeedsKernel,
        FirmwareArg::Bios if has_kernel || r.initrd.is_some() => Usage::BiosWithKernel,
        FirmwareArg::Uefi | FirmwareArg::Bios if !has_kernel && !r.append.trim().is_empty() => {
            Usage::AppendNeedsKernel
        }
        FirmwareArg::Uefi if r.initrd.is_some() && !has_kernel => Usage::InitrdNeedsKernel,
        k => return Ok(k),
    };
    Err(refused.into())
}

/// The failure's console tail, when it has one.
fn tail_of(e: &QemuError) -> String {
    match e {
        QemuError::Timeout { tail, .. }
        | QemuError::Exited { tail, .. }
        | QemuError::StillRunning { tail, .. } => tail.clone(),
        _ => String::new(),
    }
}

/// Writes the report, replacing the one of an earlier run (a report, not an artifact).
fn write_junit(path: &Path, xml: &str) -> CliResult {
    stele_image::outfile::write_atomic(path, true, |f, _| {
        use std::io::Write;
        f.write_all(xml.as_bytes()).map_err(|source| Error::Output {
            what: "cannot write the JUnit report",
            path: path.to_path_buf(),
            source,
        })
    })
}

/// Runs `stele qemu ...`.
/// On SIGINT, SIGTERM or SIGHUP: QEMU is stopped, the fresh variable store removed, and
/// the run ends with 128 + the signal.
fn stop_the_vm_on_signals() -> CliResult {
    fn on_signal(sig: i32) -> ! {
        let name = nix::sys::signal::Signal::try_from(sig).map_or("a signal", |s| s.as_str());
        eprintln!("stele: error: interrupted by {name}: the VM was stopped");
        std::process::exit(128 + sig)
    }
    stele_image::cleanup::install(on_signal)
        .map_err(|e| Error::io("set up signal handling for", "the VM", e.into()))
}

pub fn run(args: QemuArgs) -> CliResult {
    let QemuCmd::Run(r) = args.cmd;
    stop_the_vm_on_signals()?;
    let kind = firmware_kind(&r)?;
    let vm_disks = disks(&r)?;
    if r.smp == 0 {
        return Err(Usage::Smp.into());
    }
    let mut _vars_dir = None;
    let fw = match kind {
        FirmwareArg::Direct => Firmware::Direct,
        FirmwareArg::Bios => Firmware::Bios,
        FirmwareArg::Uefi => {
            let (u, dir) = firmware::prepare_uefi(r.secure_boot.as_deref(), r.vars.as_deref())?;
            _vars_dir = dir;
            Firmware::Uefi(u)
        }
    };
    let mut cfg = VmConfig::from_env(r.kernel.unwrap_or_default(), r.initrd.unwrap_or_default());
    cfg.firmware = fw;
    cfg.watchdog = r.watchdog;
    let mut _tpm_dir = None;
    cfg.tpm = match (r.tpm_state, r.tpm) {
        (Some(dir), _) => Some(dir),
        (None, true) => {
            let d = firmware::VarsDir::new("tpm")?;
            let p = d.path().to_path_buf();
            _tpm_dir = Some(d);
            Some(p)
        }
        (None, false) => None,
    };
    cfg.disks = vm_disks;
    cfg.smp = r.smp;
    cfg.append = r.append;
    cfg.memory_mb = r.memory;
    cfg.no_reboot = r.no_reboot;
    cfg.timeout = Duration::from_secs(r.timeout);
    cfg.echo = true;
    firmware::check_inputs(&cfg)?;
    let start = Instant::now();
    let mut vm = Vm::start(&cfg)?;
    let mut cases = Vec::new();
    let mut failed = None;
    for text in &r.expect {
        if failed.is_some() {
            cases.push(case(text, Duration::ZERO, Outcome::Skipped));
            continue;
        }
        let t = Instant::now();
        match vm.expect(text, vm.remaining()) {
            Ok(_) => cases.push(case(text, t.elapsed(), Outcome::Passed)),
            Err(e) => {
                let outcome = Outcome::Failed {
                    message: e.summary(),
                    detail: tail_of(&e),
                };
                cases.push(case(text, t.elapsed(), outcome));
                failed = Some(Error::from(e));
            }
        }
    }
    let result = match failed {
        Some(f) => Err(f),
        None => finish(&mut vm, r.expect.is_empty(), &mut cases, start),
    };
    if result.is_err() {
        let _ = vm.kill();
    }
    if let Some(path) = &r.junit {
        let xml = junit::render("stele qemu run", &cases, &vm.console(), start.elapsed());
        write_junit(path, &xml)?;
    }
    result
}

fn case(name: &str, time: Duration, outcome: Outcome) -> Case {
    Case {
        name: name.to_string(),
        time,
        outcome,
    }
}

/// After the expectations: the VM gets the rest of the timeout to power off. Without
/// expectations that is the test (one case); with them, a VM still running is killed.
fn finish(vm: &mut Vm, no_expect: bool, cases: &mut Vec<Case>, start: Instant) -> CliResult {
    const POWER_OFF: &str = "the VM powers off with status 0";
    let left = vm.remaining();
    let r = match vm.wait_exit(left) {
        Ok(status) if !status.success() && no_expect => Err(Error::QemuExit {
            status: status.to_string(),
        }),
        Ok(_) => Ok(()),
        Err(QemuError::StillRunning { .. }) if !no_expect => vm.kill().map_err(Error::from),
        Err(e) => Err(e.into()),
    };
    if no_expect {
        let outcome = match &r {
            Ok(()) => Outcome::Passed,
            Err(e) => Outcome::Failed {
                message: e.to_string(),
                detail: String::new(),
            },
        };
        cases.push(case(POWER_OFF, start.elapsed(), outcome));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use stele_verifier::exit::{Exit, Report};

    #[derive(Debug, clap::Parser)]
    struct T {
        #[command(flatten)]
        r: RunArgs,
    }

    fn kind(args: &[&str]) -> Result<FirmwareArg, Exit> {
        let t = T::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .map_err(|_| Exit::Usage)?;
        firmware_kind(&t.r).map_err(|e| e.exit())
    }

    #[test]
    fn firmware_choice() {
        assert_eq!(
            kind(&["--kernel", "k", "--initrd", "i"]).unwrap(),
            FirmwareArg::Direct
        );
        assert_eq!(kind(&["--firmware", "uefi"]).unwrap(), FirmwareArg::Uefi);
        assert_eq!(
            kind(&["--secure-boot", "db.crt"]).unwrap(),
            FirmwareArg::Uefi
        );
        assert_eq!(kind(&["--vars", "v.fd"]).unwrap(), FirmwareArg::Uefi);
        assert_eq!(kind(&["--bios"]).unwrap(), FirmwareArg::Bios);
        assert_eq!(kind(&["--firmware", "bios"]).unwrap(), FirmwareArg::Bios);
        let uki = ["--firmware", "uefi", "--kernel", "u.efi", "--append", "x"];
        assert_eq!(kind(&uki).unwrap(), FirmwareArg::Uefi);
        for bad in [
            &[][..],
            &["--kernel", "k"],
            &["--bios", "--kernel", "k"],
            &["--bios", "--secure-boot", "db.crt"],
            &[
                "--firmware",
                "direct",
                "--secure-boot",
                "db.crt",
                "--kernel",
                "k",
                "--initrd",
                "i",
            ],
            &["--firmware", "uefi", "--append", "init=/bin/sh"],
            &["--firmware", "uefi", "--initrd", "i"],
        ] {
            assert_eq!(kind(bad), Err(Exit::Usage), "{bad:?}");
        }
    }

    fn buses(args: &[&str]) -> Result<Vec<DiskBus>, Exit> {
        let t = T::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .map_err(|_| Exit::Usage)?;
        let d = disks(&t.r).map_err(|e| e.exit())?;
        Ok(d.into_iter().map(|d| d.bus).collect())
    }

    #[test]
    fn disk_buses_once_or_per_disk() {
        use DiskBus::*;
        assert_eq!(
            buses(&["--disk", "a", "--disk", "b"]),
            Ok(vec![Virtio, Virtio])
        );
        assert_eq!(
            buses(&["--disk", "a", "--disk", "b", "--disk-bus", "nvme"]),
            Ok(vec![Nvme, Nvme])
        );
        let per = [
            "--disk",
            "a",
            "--disk-bus",
            "sata",
            "--disk",
            "b",
            "--disk-bus",
            "usb",
        ];
        assert_eq!(buses(&per), Ok(vec![Sata, Usb]));
        let three = [
            "--disk",
            "a",
            "--disk-bus",
            "scsi",
            "--disk-bus",
            "usb",
            "--disk-bus",
            "nvme",
        ];
        assert_eq!(buses(&three), Err(Exit::Usage));
        assert_eq!(
            buses(&["--disk", "a", "--disk-bus", "ide"]),
            Err(Exit::Usage)
        );
    }

    #[test]
    fn missing_files_are_the_environment() {
        let m: Error = QemuError::Missing {
            what: "the kernel".into(),
            path: "/k".into(),
            fix: "check the path".into(),
        }
        .into();
        assert_eq!(m.exit(), Exit::Environment);
        assert_eq!(Error::from(Usage::AppendNeedsKernel).exit(), Exit::Usage);
    }
}

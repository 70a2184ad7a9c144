//! `stele update`: A/B updates. On the device it runs stele-init's update module against
//! /run/stele; with `--disk` it works offline on a disk image (factory images, CI), with the
//! trusted keys given on the command line. Same checks, same output, same exit codes.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use stele_image::disk::{find_partition, PartitionIo, SLOT_A_NAME, SLOT_B_NAME, STATE_NAME};
use stele_image::gpt::GptError;
use stele_init::update::{self as dev, BundleArg, Command as DevCommand, Image, Part, Status};
use stele_verifier::keys::Keyring;
use stele_verifier::state::Slot;

use crate::exit::{CliResult, Exit, Failure};

/// `stele update` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum UpdateCommand {
    /// Verify a signed slot image and write it to the slot that is not running; the boot
    /// state then boots it next (3 tries, not yet good).
    Install(InstallArgs),
    /// Show both slots (image, priority, tries, good), the booted slot and the rollback floor.
    Status(StatusArgs),
    /// Mark the booted slot good, raising the rollback floor (on the device only).
    MarkGood,
}

/// Offline mode: a disk image and the keys to trust.
#[derive(Debug, clap::Args)]
pub struct Offline {
    /// Work on this disk image (made by `stele disk create`) instead of the running device.
    #[arg(long, value_name = "DISK.img")]
    disk: Option<PathBuf>,
    /// Trusted public key (SPKI PEM), repeatable; with --disk.
    #[arg(long = "key", value_name = "P.pem")]
    keys: Vec<PathBuf>,
    /// Directory of trusted public keys (every *.pem, sorted), repeatable; with --disk.
    #[arg(long = "keys", value_name = "DIR")]
    keys_dir: Vec<PathBuf>,
    /// How many distinct trusted keys must have signed (default 1); with --disk.
    #[arg(long, value_name = "N")]
    threshold: Option<usize>,
}

/// Arguments of `stele update install`.
#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// The slot image: a file, a block device, or `-` for stdin.
    #[arg(value_name = "BUNDLE|-")]
    bundle: PathBuf,
    #[command(flatten)]
    offline: Offline,
}

/// Arguments of `stele update status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    offline: Offline,
}

fn from_dev(f: dev::Failure) -> Failure {
    let exit = match f.exit {
        dev::Exit::Success => Exit::Success,
        dev::Exit::Refused => Exit::Refused,
        dev::Exit::Usage => Exit::Usage,
        dev::Exit::Environment => Exit::Environment,
    };
    Failure::new(exit, f.message)
}

/// Runs `stele update ...`.
pub fn run(cmd: UpdateCommand) -> CliResult {
    match cmd {
        UpdateCommand::Install(a) => {
            let bundle = if a.bundle.as_os_str() == "-" {
                BundleArg::Stdin
            } else {
                BundleArg::Path(a.bundle)
            };
            match offline_keys(&a.offline)? {
                Some((disk, keyring)) => install_disk(&disk, &bundle, &keyring),
                None => on_device(&DevCommand::Install(bundle)),
            }
        }
        UpdateCommand::Status(a) => match offline_keys(&a.offline)? {
            Some((disk, keyring)) => {
                let st = status_disk(&disk, &keyring)?;
                print!("{}", if a.json { st.json() } else { st.text() });
                Ok(())
            }
            None => on_device(&DevCommand::Status { json: a.json }),
        },
        UpdateCommand::MarkGood => on_device(&DevCommand::MarkGood),
    }
}

fn on_device(cmd: &DevCommand) -> CliResult {
    dev::run(cmd, Path::new(dev::RUN_DIR)).map_err(from_dev)
}

/// `Some((disk, keyring))` with --disk; `None` on the device. Keys go with --disk only.
fn offline_keys(o: &Offline) -> CliResult<Option<(PathBuf, Keyring)>> {
    let has_keys = !o.keys.is_empty() || !o.keys_dir.is_empty();
    match &o.disk {
        None if has_keys || o.threshold.is_some() => Err(Failure::usage(
            "--key, --keys and --threshold go with --disk; on the device the keys come from /run/stele",
        )),
        None => Ok(None),
        Some(_) if !has_keys => Err(Failure::usage(
            "--disk needs the trusted keys: --key P.pem or --keys DIR (there is no /run/stele on a build host)",
        )),
        Some(d) => {
            let ring =
                stele_image::keys::load_keyring(&o.keys, &o.keys_dir, o.threshold.unwrap_or(1))?;
            Ok(Some((d.clone(), ring)))
        }
    }
}

fn open_disk(path: &Path, write: bool) -> CliResult<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .open(path)
        .map_err(|e| Failure::env(format!("open {} failed: {e}", path.display())))
}

fn partition(disk: &mut File, path: &Path, name: &str) -> CliResult<(u64, u64)> {
    find_partition(disk, name).map_err(|e| {
        let exit = match e {
            GptError::Io { .. } => Exit::Environment,
            _ => Exit::Usage,
        };
        Failure::new(
            exit,
            format!(
                "{}: {e} (a disk made by `stele disk create` is expected)",
                path.display()
            ),
        )
    })
}

fn slot_name(s: Slot) -> &'static str {
    match s {
        Slot::A => SLOT_A_NAME,
        Slot::B => SLOT_B_NAME,
    }
}

fn progress(line: &str) {
    eprintln!("stele: {line}");
}

/// Offline install: into the slot the disk's state would not boot next.
fn install_disk(disk: &Path, arg: &BundleArg, keyring: &Keyring) -> CliResult {
    let mut state_file = open_disk(disk, true)?;
    let mut slot_file = open_disk(disk, true)?;
    let (s_off, s_len) = partition(&mut state_file, disk, STATE_NAME)?;
    let mut state = PartitionIo::new(&mut state_file, s_off, s_len);
    let (st, _) = dev::load_state(&mut state).map_err(|f| from_dev(f).context(disk.display()))?;
    let target = dev::plan(&st, None).map_err(from_dev)?;
    let (t_off, t_len) = partition(&mut slot_file, disk, slot_name(target))?;
    let (mut bundle, bundle_md) = dev::open_bundle(arg).map_err(from_dev)?;
    let disk_md = slot_file
        .metadata()
        .map_err(|e| Failure::env(format!("stat {} failed: {e}", disk.display())))?;
    if bundle_md.is_some_and(|m| m.dev() == disk_md.dev() && m.ino() == disk_md.ino()) {
        return Err(Failure::usage(
            "the bundle is the disk image itself: give a slot image built by `stele image build`",
        ));
    }
    let syncer = slot_file
        .try_clone()
        .map_err(|e| Failure::env(format!("{}: {e}", disk.display())))?;
    let mut sync = |_: &mut PartitionIo<'_, File>| syncer.sync_data();
    let mut sync_state = |_: &mut PartitionIo<'_, File>| syncer.sync_data();
    let mut slot = PartitionIo::new(&mut slot_file, t_off, t_len);
    let done = dev::install(
        &mut bundle,
        target,
        Part {
            dev: &mut slot,
            len: t_len,
            sync: &mut sync,
        },
        Part {
            dev: &mut state,
            len: s_len,
            sync: &mut sync_state,
        },
        keyring,
        &mut progress,
    )
    .map_err(from_dev)?;
    println!("{}", dev::installed_line(&done));
    Ok(())
}

/// Offline status: both slots of the disk checked against the keyring.
fn status_disk(disk: &Path, keyring: &Keyring) -> CliResult<Status> {
    let mut f = open_disk(disk, false)?;
    let (s_off, s_len) = partition(&mut f, disk, STATE_NAME)?;
    let (st, _) = dev::load_state(&mut PartitionIo::new(&mut f, s_off, s_len))
        .map_err(|e| from_dev(e).context(disk.display()))?;
    let mut images = [Image::Missing, Image::Missing];
    for (i, s) in [Slot::A, Slot::B].into_iter().enumerate() {
        if let Ok((off, len)) = find_partition(&mut f, slot_name(s)) {
            images[i] = dev::inspect_slot(&mut PartitionIo::new(&mut f, off, len), len, keyring);
        }
    }
    Ok(Status::new(&st, None, images))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offline(disk: bool, keys: bool, threshold: bool) -> Offline {
        Offline {
            disk: disk.then(|| PathBuf::from("d.img")),
            keys: if keys {
                vec!["nope.pem".into()]
            } else {
                vec![]
            },
            keys_dir: vec![],
            threshold: threshold.then_some(1),
        }
    }

    #[test]
    fn keys_go_with_disk() {
        assert!(offline_keys(&offline(false, false, false))
            .unwrap()
            .is_none());
        for o in [
            offline(false, true, false),
            offline(false, false, true),
            offline(true, false, false),
        ] {
            let e = offline_keys(&o).unwrap_err();
            assert_eq!(e.exit, Exit::Usage, "{o:?}");
        }
        // A key file that does not exist is the user's argument: not a usage of --disk.
        assert!(offline_keys(&offline(true, true, false)).is_err());
    }

    #[test]
    fn device_failures_keep_their_class() {
        let f = from_dev(dev::Failure::new(dev::Exit::Refused, "x"));
        assert_eq!((f.exit, f.message.as_str()), (Exit::Refused, "x"));
        assert_eq!(
            from_dev(dev::Failure::new(dev::Exit::Environment, "y")).exit,
            Exit::Environment
        );
    }
}

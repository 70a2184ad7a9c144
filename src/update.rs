//! `stele update`: a front-end of stele-device. On the device it runs the same commands as
//! the device binary against /run/stele; with `--disk` it works offline on a disk image
//! (factory images, CI): the partitions are found by GPT name and handed, as windows of the
//! disk, to the same install and status code, with the trusted keys given on the command
//! line. Same checks, same output, same exit codes.

use std::fs::File;
use std::path::{Path, PathBuf};

use stele_device::cli;
use stele_device::cli::args::Command as DevCommand;
use stele_device::commands::esp;
use stele_device::commands::install::{self, BundleArg, Trust};
use stele_device::commands::status::{inspect_slot, Image, Status};
use stele_device::remote::{is_url, Location};
use stele_device::runtime::run_dir::RUN_DIR;
use stele_device::runtime::state_file::StateFile;
use stele_device::runtime::storage;
use stele_image::disk::find_partition;
use stele_verifier::exit::print_warning;
use stele_verifier::gpt::GptError;
use stele_verifier::keys::Keyring;
use stele_verifier::layout::Role;
use stele_verifier::partition::PartitionIo;
use stele_verifier::state::{BootState, Slot};

use crate::error::{CliResult, Error, Usage};
use crate::progress::Bars;

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
    /// What an install of URL (or a slot image file) would fetch and reuse, as a delta
    /// from the running slot; writes nothing.
    Plan(PlanArgs),
    /// Check the signed update channel: what it offers and whether this device's wave is
    /// due (on the device only); changes nothing.
    Check(ChannelArgs),
    /// Check the channel, then install the release it offers (on the device only).
    Apply(ChannelArgs),
    /// Replace the stage-1 UKI (\EFI\BOOT\BOOTX64.EFI) on the EFI system partition:
    /// written beside the old one, flushed, then switched in one write.
    Stage1(Stage1Args),
}

/// Arguments of `stele update plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// An http:// or https:// URL of a slot image, or a slot image file.
    #[arg(value_name = "URL|FILE")]
    location: String,
    #[command(flatten)]
    offline: Offline,
    /// Cut a request that sends nothing for SECONDS.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,
}

/// Arguments of `stele update check` and `apply`.
#[derive(Debug, clap::Args)]
pub struct ChannelArgs {
    /// The signed channel file: an http:// or https:// URL, or a file.
    #[arg(long, value_name = "URL")]
    channel: String,
    #[command(flatten)]
    fetch: crate::fetch::FetchArgs,
}

/// Arguments of `stele update stage1`.
#[derive(Debug, clap::Args)]
pub struct Stage1Args {
    /// The new UKI (`stele uki build`): a file, or `-` for stdin.
    #[arg(value_name = "UKI.efi|-")]
    uki: PathBuf,
    /// Work on this disk image (made by `stele disk create --uki`) instead of the running
    /// device.
    #[arg(long, value_name = "DISK.img")]
    disk: Option<PathBuf>,
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
    #[arg(value_name = "BUNDLE|-|URL")]
    bundle: PathBuf,
    #[command(flatten)]
    offline: Offline,
    /// The product the disk is bound to (its initramfs's `--name`); with --disk. Default:
    /// the product of the image the disk boots next, when that image verifies.
    #[arg(long, value_name = "NAME", requires = "disk")]
    name: Option<String>,
    /// With an http(s):// URL: a delta install (only the blocks the device lacks).
    #[command(flatten)]
    fetch: crate::fetch::FetchArgs,
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

/// Runs `stele update ...`.
pub fn run(cmd: UpdateCommand) -> CliResult {
    match cmd {
        UpdateCommand::Install(a) if a.bundle.to_str().is_some_and(is_url) => {
            let url = a.bundle.to_string_lossy().into_owned();
            let opts = a.fetch.options()?;
            match offline_keys(&a.offline)? {
                Some((disk, Some(keyring))) => {
                    let loc = Location::parse(&url);
                    crate::fetch::install_disk(&disk, &loc, &keyring, a.name.as_deref(), &opts)
                }
                Some((_, None)) => Err(Usage::DiskWithoutKeys.into()),
                None => on_device(&DevCommand::InstallUrl { url, opts }),
            }
        }
        UpdateCommand::Install(a) if a.fetch.given() => Err(Usage::FetchNeedsUrl.into()),
        UpdateCommand::Install(a) => {
            let bundle = if a.bundle.as_os_str() == "-" {
                BundleArg::Stdin
            } else {
                BundleArg::Path(a.bundle)
            };
            match offline_keys(&a.offline)? {
                Some((disk, Some(keyring))) => {
                    install_disk(&disk, &bundle, &keyring, a.name.as_deref())
                }
                Some((_, None)) => Err(Usage::DiskWithoutKeys.into()),
                None => on_device(&DevCommand::Install(bundle)),
            }
        }
        UpdateCommand::Status(a) => match offline_keys(&a.offline)? {
            // Without keys the slots show as unverified: status is not a trust decision.
            Some((disk, keyring)) => {
                let st = status_disk(&disk, keyring.as_ref())?;
                print!("{}", if a.json { st.json() } else { st.text() });
                Ok(())
            }
            None => on_device(&DevCommand::Status { json: a.json }),
        },
        UpdateCommand::MarkGood => on_device(&DevCommand::MarkGood),
        UpdateCommand::Plan(a) => {
            let opts = crate::fetch::FetchArgs::timeout_only(a.timeout)?;
            let loc = Location::parse(&a.location);
            match offline_keys(&a.offline)? {
                Some((disk, Some(keyring))) => {
                    crate::fetch::plan_disk(&disk, &loc, &keyring, &opts)
                }
                Some((_, None)) => Err(Usage::DiskWithoutKeys.into()),
                None => on_device(&DevCommand::Plan {
                    location: a.location,
                    opts,
                }),
            }
        }
        UpdateCommand::Check(a) => on_device(&DevCommand::Check {
            channel: a.channel,
            opts: a.fetch.options()?,
        }),
        UpdateCommand::Apply(a) => on_device(&DevCommand::Apply {
            channel: a.channel,
            opts: a.fetch.options()?,
        }),
        UpdateCommand::Stage1(a) => {
            let uki = if a.uki.as_os_str() == "-" {
                BundleArg::Stdin
            } else {
                BundleArg::Path(a.uki)
            };
            match a.disk {
                Some(disk) => stage1_disk(&disk, &uki),
                None => on_device(&DevCommand::Stage1(uki)),
            }
        }
    }
}

/// Offline stage-1 update: the disk's `stele-esp` partition, flushed with the disk file.
fn stage1_disk(disk: &Path, uki: &BundleArg) -> CliResult {
    let (mut f, off, len) = open_partition(disk, Role::Esp, true)?;
    let mut esp = PartitionIo::new(&mut f, off, len);
    let name = format!("{} ({})", disk.display(), Role::Esp.name());
    let done = esp::run(&mut esp, len, &name, uki, &mut log)?;
    println!("{}", esp::replaced_line(&done));
    Ok(())
}

/// What the device binary runs for the same command.
fn on_device(cmd: &DevCommand) -> CliResult {
    Ok(cli::run(cmd, Path::new(RUN_DIR), &mut Bars::stderr())?)
}

/// `Some((disk, keyring))` with --disk (no keyring without keys); `None` on the device.
/// Keys go with --disk only.
fn offline_keys(o: &Offline) -> CliResult<Option<(PathBuf, Option<Keyring>)>> {
    let has_keys = !o.keys.is_empty() || !o.keys_dir.is_empty();
    match &o.disk {
        None if has_keys || o.threshold.is_some() => Err(Usage::KeysWithoutDisk.into()),
        None => Ok(None),
        Some(_) if o.threshold.is_some() && !has_keys => Err(Usage::ThresholdWithoutKeys.into()),
        Some(d) if !has_keys => Ok(Some((d.clone(), None))),
        Some(d) => {
            let ring = stele_device::runtime::keyring::load_keyring(
                &o.keys,
                &o.keys_dir,
                o.threshold.unwrap_or(1),
                &mut |s| print_warning(&s),
            )?;
            Ok(Some((d.clone(), Some(ring))))
        }
    }
}

/// The disk image, and the byte range of the partition of `role` in it.
pub(crate) fn open_partition(disk: &Path, role: Role, write: bool) -> CliResult<(File, u64, u64)> {
    let mut f = storage::open(&disk.display().to_string(), write)?;
    let (off, len) = find_partition(&mut f, role.name()).map_err(|source| match source {
        GptError::NotFound(_) if role == Role::Esp => Error::NoEspOnDisk {
            path: disk.to_path_buf(),
            source,
        },
        source => Error::DiskImage {
            path: disk.to_path_buf(),
            source,
        },
    })?;
    Ok((f, off, len))
}

/// The install's progress lines, as the device binary prints them.
pub(crate) fn log(line: &str) {
    eprintln!("stele: {line}");
}

/// Offline install: into the slot the disk's state would not boot next, with the floor
/// and product of the slot it does boot next (when its image verifies), the disk image
/// locked for the whole install.
fn install_disk(disk: &Path, arg: &BundleArg, keyring: &Keyring, name: Option<&str>) -> CliResult {
    let (mut state_disk, s_off, s_len) = open_partition(disk, Role::State, true)?;
    let shown = disk.display().to_string();
    let _lock =
        storage::try_lock(&state_disk, &shown)?.ok_or_else(|| stele_device::Error::SlotBusy {
            path: shown.clone(),
        })?;
    let mut state = StateFile::new(PartitionIo::new(&mut state_disk, s_off, s_len), shown);
    let st = state.load()?;
    let target = install::plan(&st, None)?;
    let (mut slot_disk, t_off, t_len) = open_partition(disk, Role::slot(target), true)?;
    let next = disk_next(&mut slot_disk, &st, keyring);
    let (mut bundle, bundle_md) = install::open_bundle(arg)?;
    let disk_md = slot_disk
        .metadata()
        .map_err(|e| Error::io("stat", disk, e))?;
    if bundle_md.is_some_and(|m| install::same_file(&m, &disk_md)) {
        return Err(stele_device::Error::BundleIsDisk {
            path: disk.display().to_string(),
        }
        .into());
    }
    let trust = disk_trust(keyring, name, next.as_ref());
    let mut slot = PartitionIo::new(&mut slot_disk, t_off, t_len);
    let done = install::install(
        &mut bundle,
        target,
        &mut slot,
        t_len,
        &mut state,
        &trust,
        &mut log,
        &mut Bars::stderr(),
    )?;
    println!("{}", install::installed_line(&done));
    Ok(())
}

/// What a disk boots next (`disk`: the disk image, any partition's file): the slot, its
/// verified rollback index and product, when its image verifies against `keyring`.
pub(crate) fn disk_next(
    disk: &mut File,
    st: &BootState,
    keyring: &Keyring,
) -> Option<(Slot, u64, String)> {
    let s = st.choose()?;
    let (off, len) = find_partition(disk, Role::slot(s).name()).ok()?;
    match inspect_slot(&mut PartitionIo::new(disk, off, len), len, Some(keyring)) {
        Image::Valid {
            name,
            rollback_index,
            ..
        } => Some((s, rollback_index, name)),
        _ => None,
    }
}

/// An offline install's trust: `keyring`; the product `name` (`--name`), else that of
/// the slot the disk boots next; that slot's verified index raising the floor.
pub(crate) fn disk_trust<'a>(
    keyring: &'a Keyring,
    name: Option<&'a str>,
    next: Option<&'a (Slot, u64, String)>,
) -> Trust<'a> {
    Trust {
        keyring,
        product: name.or(next.map(|(_, _, n)| n.as_str())),
        running: next.map(|(s, i, _)| (*s, *i)),
        // A disk image on a build host: no TPM of the device's, no initramfs minimum.
        floors: stele_device::runtime::rollback::Floors::default(),
    }
}

/// Offline status: both slots of the disk checked against the keyring (without one,
/// everything but the signatures).
fn status_disk(disk: &Path, keyring: Option<&Keyring>) -> CliResult<Status> {
    let (mut f, s_off, s_len) = open_partition(disk, Role::State, false)?;
    let st = StateFile::new(
        PartitionIo::new(&mut f, s_off, s_len),
        disk.display().to_string(),
    )
    .load()?;
    let mut images = [Image::Missing, Image::Missing];
    for (i, s) in [Slot::A, Slot::B].into_iter().enumerate() {
        if let Ok((off, len)) = find_partition(&mut f, Role::slot(s).name()) {
            images[i] = inspect_slot(&mut PartitionIo::new(&mut f, off, len), len, keyring);
        }
    }
    Ok(Status::new(&st, None, images))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stele_verifier::exit::{Exit, Report};

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
        // Status without keys: the disk, no keyring.
        assert!(matches!(
            offline_keys(&offline(true, false, false)),
            Ok(Some((_, None)))
        ));
        for o in [
            offline(false, true, false),
            offline(false, false, true),
            offline(true, false, true),
        ] {
            let e = offline_keys(&o).unwrap_err();
            assert_eq!(e.exit(), Exit::Usage, "{o:?}");
        }
        // A key file that does not exist is the environment, not a usage of --disk.
        let e = offline_keys(&offline(true, true, false)).unwrap_err();
        assert_eq!(e.exit(), Exit::Environment);
    }
}

//! `stele update`: a front-end of stele-device. On the device it runs the same commands as
//! the device binary against /run/stele; with `--disk` it works offline on a disk image
//! (factory images, CI): the partitions are found by GPT name and handed, as windows of the
//! disk, to the same install and status code, with the trusted keys given on the command
//! line. Same checks, same output, same exit codes.

use std::path::{Path, PathBuf};

use stele_device::cli::args::Command as DevCommand;
use stele_device::cli::{self, spec, At};
use stele_device::commands::install::BundleArg;
use stele_device::remote::is_url;
use stele_device::remote::DEFAULT_TIMEOUT_SECS;
use stele_device::runtime::run_dir::RUN_DIR;
use stele_verifier::exit::print_warning;
use stele_verifier::keys::Keyring;

use crate::error::{CliResult, Usage};
use crate::progress::Bars;

/// `stele update` subcommands: what each does and its options' help and defaults are the
/// device's description (stele_device::cli::spec), so both front-ends say the same.
#[derive(Debug, clap::Subcommand)]
pub enum UpdateCommand {
    #[command(about = spec::INSTALL.about)]
    Install(InstallArgs),
    #[command(about = spec::STATUS.about)]
    Status(StatusArgs),
    #[command(about = spec::MARK_GOOD.about)]
    MarkGood,
    #[command(about = spec::PLAN.about)]
    Plan(PlanArgs),
    #[command(about = spec::CHECK.about)]
    Check(ChannelArgs),
    #[command(about = spec::APPLY.about)]
    Apply(ChannelArgs),
    #[command(about = spec::STAGE1.about)]
    Stage1(Stage1Args),
    #[command(about = spec::HISTORY.about)]
    History(StatusArgs),
    #[command(about = spec::WHY.about)]
    Why(WhyArgs),
    #[command(about = spec::REPORT.about)]
    Report(ReportArgs),
}

/// Arguments of `stele update report` (on the device only: the backlog is on its data
/// partition).
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    #[arg(long, help = spec::SEND.help)]
    send: bool,
    #[arg(long, help = spec::JSON.help)]
    json: bool,
}

/// Arguments of `stele update why`.
#[derive(Debug, clap::Args)]
pub struct WhyArgs {
    #[command(flatten)]
    offline: Offline,
}

/// Arguments of `stele update plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// An http:// or https:// URL of a slot image, or a slot image file.
    #[arg(value_name = "URL|FILE")]
    location: String,
    #[command(flatten)]
    offline: Offline,
    #[arg(long, value_name = spec::TIMEOUT.value, help = spec::TIMEOUT.help,
          default_value_t = DEFAULT_TIMEOUT_SECS)]
    timeout: u64,
}

/// Arguments of `stele update check` and `apply`.
#[derive(Debug, clap::Args)]
pub struct ChannelArgs {
    #[arg(long, value_name = spec::CHANNEL.value, help = spec::CHANNEL.help)]
    channel: String,
    #[command(flatten)]
    fetch: crate::remote::FetchArgs,
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
#[derive(Debug, Default, clap::Args)]
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
    fetch: crate::remote::FetchArgs,
}

/// Arguments of `stele update status` and `history`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[arg(long, help = spec::JSON.help)]
    json: bool,
    #[command(flatten)]
    offline: Offline,
}

/// Runs `stele update ...`: maps the arguments to the device's command and where it runs
/// (`--disk`: the disk image with the keys given; else the device), then runs it as the
/// device binary does ([`cli::run`]).
pub fn run(cmd: UpdateCommand) -> CliResult {
    let (cmd, offline, product) = match cmd {
        UpdateCommand::Install(a) if a.bundle.to_str().is_some_and(is_url) => {
            let url = a.bundle.to_string_lossy().into_owned();
            let opts = a.fetch.options()?;
            (DevCommand::InstallUrl { url, opts }, a.offline, a.name)
        }
        UpdateCommand::Install(a) if a.fetch.given() => return Err(Usage::FetchNeedsUrl.into()),
        UpdateCommand::Install(a) => (DevCommand::Install(bundle_arg(a.bundle)), a.offline, a.name),
        UpdateCommand::Status(a) => (DevCommand::Status { json: a.json }, a.offline, None),
        UpdateCommand::History(a) => (DevCommand::History { json: a.json }, a.offline, None),
        UpdateCommand::Why(a) => (DevCommand::Why, a.offline, None),
        UpdateCommand::MarkGood => (DevCommand::MarkGood, Offline::default(), None),
        UpdateCommand::Report(a) => (
            DevCommand::Report {
                send: a.send,
                json: a.json,
            },
            Offline::default(),
            None,
        ),
        UpdateCommand::Plan(a) => {
            let opts = crate::remote::FetchArgs::timeout_only(a.timeout)?;
            let cmd = DevCommand::Plan {
                location: a.location,
                opts,
            };
            (cmd, a.offline, None)
        }
        UpdateCommand::Check(a) => (
            DevCommand::Check {
                channel: a.channel,
                opts: a.fetch.options()?,
            },
            Offline::default(),
            None,
        ),
        UpdateCommand::Apply(a) => (
            DevCommand::Apply {
                channel: a.channel,
                opts: a.fetch.options()?,
            },
            Offline::default(),
            None,
        ),
        UpdateCommand::Stage1(a) => {
            let offline = Offline {
                disk: a.disk,
                ..Offline::default()
            };
            (DevCommand::Stage1(bundle_arg(a.uki)), offline, None)
        }
    };
    let writes_with_keys = matches!(
        cmd,
        DevCommand::Install(_) | DevCommand::InstallUrl { .. } | DevCommand::Plan { .. }
    );
    let disk = offline_keys(&offline)?;
    let at = match disk {
        None => At::Device(Path::new(RUN_DIR)),
        Some((_, None)) if writes_with_keys => return Err(Usage::DiskWithoutKeys.into()),
        Some((ref path, keyring)) => At::Disk {
            path,
            keyring,
            product,
            http: Some(crate::remote::http),
        },
    };
    Ok(cli::run(&cmd, at, &mut Bars::stderr())?)
}

/// `-` is standard input.
fn bundle_arg(p: PathBuf) -> BundleArg {
    if p.as_os_str() == "-" {
        BundleArg::Stdin
    } else {
        BundleArg::Path(p)
    }
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

    /// The host's `stele update` says what the device's says: every command's help and
    /// every option's help and default come from stele_device::cli::spec.
    #[test]
    fn clap_help_is_the_device_description() {
        use clap::Subcommand;
        let cmd = UpdateCommand::augment_subcommands(clap::Command::new("update"));
        for c in spec::COMMANDS {
            let sub = cmd
                .find_subcommand(c.name)
                .unwrap_or_else(|| panic!("no `update {}` on the host", c.name));
            assert_eq!(
                sub.get_about().map(ToString::to_string).as_deref(),
                Some(c.about)
            );
            for arg in sub.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if let Some(o) = spec::OPTIONS.iter().find(|o| o.long == long) {
                    let help = arg.get_help().map(ToString::to_string);
                    assert_eq!(help.as_deref(), Some(o.help), "update {} --{long}", c.name);
                }
            }
        }
        let deadline = cmd
            .find_subcommand("install")
            .and_then(|s| s.get_arguments().find(|a| a.get_long() == Some("deadline")))
            .map(|a| {
                a.get_default_values()
                    .iter()
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
            });
        assert_eq!(
            deadline,
            Some(vec![stele_device::remote::DEFAULT_DEADLINE_SECS.to_string()])
        );
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

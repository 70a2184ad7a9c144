//! The device binary's command line, parsed by hand (the init stays lean: no clap), and its
//! help text. Pure.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::commands::install::BundleArg;
use crate::runtime::run_dir::PROGRAM;

/// One-line usage, appended to usage errors.
pub const USAGE_LINE: &str =
    "usage: stele update install BUNDLE|-|URL | stele update plan URL | stele update check|apply --channel URL | stele update status [--json] | stele update mark-good | stele update stage1 UKI.efi|-";

/// `stele update --help`.
pub const HELP: &str = "\
stele update: A/B updates on the device (this `stele` is stele-init, multi-call)

usage:
  stele update install BUNDLE|-   verify a signed slot image and write it to the slot that is
                                  not running, then boot it next (3 tries, not yet good);
                                  BUNDLE is a file or block device, `-` reads stdin
  stele update status [--json]    both slots (image, priority, tries, good), the booted slot
                                  and the rollback floor
  stele update mark-good          mark the booted slot good (raises the rollback floor)
  stele update install URL [--max-rate RATE] [--deadline S] [--timeout S]
                                  fetch a slot image over HTTP(S) as a delta (only the
                                  blocks this device lacks), resuming where a cut left off
  stele update plan URL|FILE      what such an install would fetch and reuse; writes nothing
  stele update check --channel URL
                                  what the signed channel offers and whether this device's
                                  wave is due; changes nothing
  stele update apply --channel URL [--max-rate RATE] [--deadline S] [--timeout S]
                                  check, then install the release the channel offers
  stele update stage1 UKI.efi|-   replace the stage-1 UKI on the EFI system partition
                                  (\\EFI\\BOOT\\BOOTX64.EFI), power-safe: written beside the
                                  old one, then switched; `-` reads stdin

exit codes: 0 ok, 1 refused, 2 usage, 3 environment
";

/// An update command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Install(BundleArg),
    /// `install URL`: a delta install fetched over HTTP(S).
    InstallUrl {
        url: String,
        opts: crate::remote::FetchOptions,
    },
    /// `plan URL|FILE`.
    Plan {
        location: String,
        opts: crate::remote::FetchOptions,
    },
    /// `check --channel URL`.
    Check {
        channel: String,
        opts: crate::remote::FetchOptions,
    },
    /// `apply --channel URL`.
    Apply {
        channel: String,
        opts: crate::remote::FetchOptions,
    },
    Status {
        json: bool,
    },
    MarkGood,
    Stage1(BundleArg),
    Help,
}

/// What is wrong with the arguments (the message gets [`USAGE_LINE`] appended).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("argument {0:?} is not UTF-8")]
    NotUtf8(OsString),
    #[error("missing command")]
    MissingCommand,
    #[error("unknown command {0:?}: on the device only `stele update` is available")]
    UnknownCommand(String),
    #[error("missing update command")]
    MissingUpdateCommand,
    #[error("unknown update command {0:?}")]
    UnknownUpdateCommand(String),
    #[error("--disk, --key and --keys are options of the host `stele` CLI; on the device the slots and keys come from /run/stele")]
    HostOption,
    #[error("unknown option {0}")]
    UnknownOption(String),
    #[error("install needs a BUNDLE (a file, a block device, or - for stdin)")]
    MissingBundle,
    #[error("install takes one BUNDLE")]
    TwoBundles,
    #[error("stage1 needs a UKI.efi (a file, or - for stdin)")]
    MissingUki,
    #[error("unexpected argument {arg} for {command}")]
    Unexpected { command: &'static str, arg: String },
    #[error("{0} needs a value")]
    MissingValue(String),
    #[error("invalid {option} {value:?}")]
    BadValue { option: String, value: String },
    #[error("--max-rate, --deadline and --timeout go with an http:// or https:// URL")]
    FetchOptionsNeedUrl,
    #[error("plan needs a URL or a slot image file")]
    MissingLocation,
    #[error("check and apply need --channel URL")]
    MissingChannel,
}

/// True when this process is `stele` (the update front-end), not the boot: argv[0]'s base
/// name is `stele`, or argv[1] is `update`. The kernel's init (`boot`: PID 1 of the initial
/// PID namespace) is always the boot; PID 1 of another namespace (`unshare -p -f`, a
/// container) is not, and runs the device commands like any other process. Pure.
pub fn is_update_call(boot: bool, argv: &[OsString]) -> bool {
    if boot {
        return false;
    }
    let named = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n == PROGRAM);
    named || argv.get(1).is_some_and(|a| a == "update")
}

fn utf8(a: &OsString) -> Result<&str, ArgsError> {
    a.to_str().ok_or_else(|| ArgsError::NotUtf8(a.clone()))
}

/// Parses the arguments after argv[0]: `update install BUNDLE|-`, `update status [--json]`,
/// `update mark-good`, `update stage1 UKI.efi|-`, `--help`. Pure.
pub fn parse_args(args: &[OsString]) -> Result<Command, ArgsError> {
    let Some(first) = args.first() else {
        return Err(ArgsError::MissingCommand);
    };
    match utf8(first)? {
        "update" => {}
        "-h" | "--help" | "help" => return Ok(Command::Help),
        other => return Err(ArgsError::UnknownCommand(other.into())),
    }
    let rest = &args[1..];
    let Some(sub) = rest.first() else {
        return Err(ArgsError::MissingUpdateCommand);
    };
    let opts = &rest[1..];
    if opts.iter().any(|a| a == "-h" || a == "--help") {
        return Ok(Command::Help);
    }
    if opts
        .iter()
        .any(|a| a == "--disk" || a.to_string_lossy().starts_with("--disk="))
    {
        return Err(ArgsError::HostOption);
    }
    let unexpected = |command, a: &OsString| ArgsError::Unexpected {
        command,
        arg: a.to_string_lossy().into_owned(),
    };
    if let Some(fetch) = crate::cli::remote_args::parse(utf8(sub)?, opts) {
        return fetch;
    }
    match utf8(sub)? {
        "-h" | "--help" | "help" => Ok(Command::Help),
        "install" => match opts {
            [b] if b == "-" => Ok(Command::Install(BundleArg::Stdin)),
            [b] if b.to_string_lossy().starts_with('-') => {
                Err(ArgsError::UnknownOption(b.to_string_lossy().into_owned()))
            }
            [b] => Ok(Command::Install(BundleArg::Path(PathBuf::from(b)))),
            [] => Err(ArgsError::MissingBundle),
            _ => Err(ArgsError::TwoBundles),
        },
        "status" => match opts {
            [] => Ok(Command::Status { json: false }),
            [j] if j == "--json" => Ok(Command::Status { json: true }),
            [a, ..] => Err(unexpected("status", a)),
        },
        "mark-good" => match opts {
            [] => Ok(Command::MarkGood),
            [a, ..] => Err(unexpected("mark-good", a)),
        },
        "stage1" => match opts {
            [u] if u == "-" => Ok(Command::Stage1(BundleArg::Stdin)),
            [u] if u.to_string_lossy().starts_with('-') => {
                Err(ArgsError::UnknownOption(u.to_string_lossy().into_owned()))
            }
            [u] => Ok(Command::Stage1(BundleArg::Path(PathBuf::from(u)))),
            [] => Err(ArgsError::MissingUki),
            [_, a, ..] => Err(unexpected("stage1", a)),
        },
        other => Err(ArgsError::UnknownUpdateCommand(other.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;
    use stele_verifier::exit::{Exit, Report};

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn multicall_is_chosen_by_name_or_update_but_never_as_pid1() {
        assert!(is_update_call(
            false,
            &os(&["/run/stele/bin/stele", "update"])
        ));
        assert!(is_update_call(false, &os(&["stele"])));
        assert!(is_update_call(false, &os(&["/init", "update", "status"])));
        assert!(!is_update_call(false, &os(&["/init"])));
        assert!(!is_update_call(false, &os(&["stele-init", "status"])));
        assert!(!is_update_call(true, &os(&["/init", "update"])));
        assert!(!is_update_call(true, &os(&["stele", "update"])));
        assert!(!is_update_call(false, &[]));
    }

    #[test]
    fn arguments() {
        let p = |v: &[&str]| parse_args(&os(v));
        assert_eq!(
            p(&["update", "install", "/dev/vdb"]).unwrap(),
            Command::Install(BundleArg::Path("/dev/vdb".into()))
        );
        assert_eq!(
            p(&["update", "install", "-"]).unwrap(),
            Command::Install(BundleArg::Stdin)
        );
        assert_eq!(
            p(&["update", "status"]).unwrap(),
            Command::Status { json: false }
        );
        assert_eq!(
            p(&["update", "status", "--json"]).unwrap(),
            Command::Status { json: true }
        );
        assert_eq!(p(&["update", "mark-good"]).unwrap(), Command::MarkGood);
        assert_eq!(
            p(&["update", "stage1", "new.efi"]).unwrap(),
            Command::Stage1(BundleArg::Path("new.efi".into()))
        );
        assert_eq!(
            p(&["update", "stage1", "-"]).unwrap(),
            Command::Stage1(BundleArg::Stdin)
        );
        assert_eq!(p(&["--help"]).unwrap(), Command::Help);
        assert_eq!(p(&["update", "install", "--help"]).unwrap(), Command::Help);
        for (bad, want) in [
            (&[][..], ArgsError::MissingCommand),
            (
                &["image", "build"][..],
                ArgsError::UnknownCommand("image".into()),
            ),
            (&["update"][..], ArgsError::MissingUpdateCommand),
            (&["update", "install"][..], ArgsError::MissingBundle),
            (&["update", "install", "a", "b"][..], ArgsError::TwoBundles),
            (
                &["update", "install", "--force"][..],
                ArgsError::UnknownOption("--force".into()),
            ),
            (
                &["update", "install", "--disk", "d.img", "x"][..],
                ArgsError::HostOption,
            ),
            (
                &["update", "status", "--yaml"][..],
                ArgsError::Unexpected {
                    command: "status",
                    arg: "--yaml".into(),
                },
            ),
            (
                &["update", "mark-good", "a"][..],
                ArgsError::Unexpected {
                    command: "mark-good",
                    arg: "a".into(),
                },
            ),
            (&["update", "stage1"][..], ArgsError::MissingUki),
            (
                &["update", "stage1", "a.efi", "b.efi"][..],
                ArgsError::Unexpected {
                    command: "stage1",
                    arg: "b.efi".into(),
                },
            ),
            (
                &["update", "stage1", "--disk", "d.img", "a.efi"][..],
                ArgsError::HostOption,
            ),
            (
                &["update", "rollback"][..],
                ArgsError::UnknownUpdateCommand("rollback".into()),
            ),
        ] {
            let e = p(bad).unwrap_err();
            assert_eq!(e, want, "{bad:?}");
            let e = Error::from(e);
            assert_eq!(e.exit(), Exit::Usage, "{bad:?}");
            assert!(e.to_string().ends_with(USAGE_LINE), "{bad:?}");
        }
        assert!(Error::from(p(&["image"]).unwrap_err())
            .to_string()
            .contains("only `stele update`"));
    }
}

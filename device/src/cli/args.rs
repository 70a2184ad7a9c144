//! The device binary's command line, parsed by hand (the init stays lean: no clap); the
//! commands, their help and defaults are [`crate::cli::spec`]'s. Pure.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::commands::install::BundleArg;
use crate::remote::{is_url, FetchOptions};
use crate::runtime::run_dir::PROGRAM;

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
    /// `history [--json]`.
    History {
        json: bool,
    },
    /// `why`.
    Why,
    /// `report [--send] [--json]`.
    Report {
        send: bool,
        json: bool,
    },
    /// `stele data reset`.
    DataReset,
    Help,
}

/// What is wrong with the arguments (the message gets [`crate::cli::spec::usage_line`] appended).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error("argument {0:?} is not UTF-8")]
    NotUtf8(OsString),
    #[error("missing command")]
    MissingCommand,
    #[error("unknown command {0:?}: on the device only `stele update` and `stele data reset` are available")]
    UnknownCommand(String),
    #[error("the data group has one command: `stele data reset`")]
    UnknownDataCommand,
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
    #[error("--max-rate, --deadline, --max-time and --timeout go with an http:// or https:// URL")]
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
        "data" => {
            return match args.get(1..).unwrap_or(&[]) {
                [r] if r == "reset" => Ok(Command::DataReset),
                [h, ..] if h == "-h" || h == "--help" => Ok(Command::Help),
                [r, a, ..] if r == "reset" => Err(ArgsError::Unexpected {
                    command: "data reset",
                    arg: a.to_string_lossy().into_owned(),
                }),
                _ => Err(ArgsError::UnknownDataCommand),
            }
        }
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
    if let Some(fetch) = parse_fetch(utf8(sub)?, opts) {
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
        "history" => match opts {
            [] => Ok(Command::History { json: false }),
            [j] if j == "--json" => Ok(Command::History { json: true }),
            [a, ..] => Err(unexpected("history", a)),
        },
        "why" => match opts {
            [] => Ok(Command::Why),
            [a, ..] => Err(unexpected("why", a)),
        },
        "report" => {
            let (mut send, mut json) = (false, false);
            for a in opts {
                match a.to_str() {
                    Some("--send") if !send => send = true,
                    Some("--json") if !json => json = true,
                    _ => return Err(unexpected("report", a)),
                }
            }
            Ok(Command::Report { send, json })
        }
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

/// A rate like `500K`, `2M` or `1000000` (bytes per second; K, M, G are powers of 1024).
/// Pure.
pub fn parse_rate(s: &str) -> Option<u64> {
    let s = s.trim_end_matches("/s");
    let (num, mul) = match s.char_indices().last()? {
        (i, 'K' | 'k') => (&s[..i], 1u64 << 10),
        (i, 'M' | 'm') => (&s[..i], 1 << 20),
        (i, 'G' | 'g') => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mul).filter(|&r| r > 0)
}

fn bad(opt: &str, v: &str) -> ArgsError {
    ArgsError::BadValue {
        option: opt.to_string(),
        value: v.to_string(),
    }
}

/// Parses the fetch commands; `None` when `sub`/`opts` are not one of them (an install
/// of a file or stdin stays with [`crate::cli::args`]).
fn parse_fetch(sub: &str, opts: &[OsString]) -> Option<Result<Command, ArgsError>> {
    let strs: Option<Vec<&str>> = opts.iter().map(|o| o.to_str()).collect();
    let strs = strs?;
    let fetchy = |a: &&str| {
        is_url(a)
            || a.starts_with("--max-rate")
            || a.starts_with("--deadline")
            || a.starts_with("--max-time")
            || a.starts_with("--timeout")
    };
    match sub {
        "install" if strs.iter().any(fetchy) => Some(parse_with(sub, &strs)),
        "plan" | "check" | "apply" => Some(parse_with(sub, &strs)),
        _ => None,
    }
}

fn parse_with(sub: &str, args: &[&str]) -> Result<Command, ArgsError> {
    let mut opts = FetchOptions::default();
    let mut channel = None;
    let mut positional = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i];
        i += 1;
        let (opt, inline) = match a.split_once('=') {
            Some((o, v)) if o.starts_with("--") => (o, Some(v)),
            _ => (a, None),
        };
        let takes_value = matches!(
            opt,
            "--max-rate" | "--deadline" | "--max-time" | "--timeout" | "--channel"
        );
        let v = if takes_value {
            match inline {
                Some(v) => v,
                None => {
                    let v = args
                        .get(i)
                        .ok_or_else(|| ArgsError::MissingValue(opt.to_string()))?;
                    i += 1;
                    v
                }
            }
        } else {
            ""
        };
        let installs = sub == "install" || sub == "apply";
        match opt {
            "--max-rate" if installs => {
                opts.max_rate = Some(parse_rate(v).ok_or_else(|| bad(opt, v))?);
            }
            "--deadline" if installs => {
                opts.deadline = Duration::from_secs(v.parse().map_err(|_| bad(opt, v))?);
            }
            "--max-time" if installs => {
                let secs: u64 = v.parse().map_err(|_| bad(opt, v))?;
                if secs == 0 {
                    return Err(bad(opt, v));
                }
                opts.max_time = Duration::from_secs(secs);
            }
            "--timeout" => {
                let secs: u64 = v.parse().map_err(|_| bad(opt, v))?;
                if secs == 0 {
                    return Err(bad(opt, v));
                }
                opts.timeout = Duration::from_secs(secs);
            }
            "--channel" if sub == "check" || sub == "apply" => channel = Some(v.to_string()),
            o if o.starts_with('-') && o != "-" => {
                return Err(ArgsError::UnknownOption(a.to_string()))
            }
            _ => positional.push(a.to_string()),
        }
    }
    let one = |what: ArgsError| -> Result<String, ArgsError> {
        match positional.as_slice() {
            [p] => Ok(p.clone()),
            [] => Err(what),
            _ => Err(ArgsError::TwoBundles),
        }
    };
    match sub {
        "install" => {
            let url = one(ArgsError::MissingBundle)?;
            if !is_url(&url) {
                return Err(ArgsError::FetchOptionsNeedUrl);
            }
            Ok(Command::InstallUrl { url, opts })
        }
        "plan" => Ok(Command::Plan {
            location: one(ArgsError::MissingLocation)?,
            opts,
        }),
        _ => {
            if let Some(p) = positional.first() {
                return Err(ArgsError::Unexpected {
                    command: if sub == "check" { "check" } else { "apply" },
                    arg: p.clone(),
                });
            }
            let channel = channel.ok_or(ArgsError::MissingChannel)?;
            Ok(if sub == "check" {
                Command::Check { channel, opts }
            } else {
                Command::Apply { channel, opts }
            })
        }
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
            p(&["update", "history", "--json"]).unwrap(),
            Command::History { json: true }
        );
        assert_eq!(p(&["update", "why"]).unwrap(), Command::Why);
        assert!(p(&["update", "why", "x"]).is_err());
        assert_eq!(
            p(&["update", "report"]).unwrap(),
            Command::Report {
                send: false,
                json: false
            }
        );
        assert_eq!(
            p(&["update", "report", "--json", "--send"]).unwrap(),
            Command::Report {
                send: true,
                json: true
            }
        );
        assert!(p(&["update", "report", "--send", "--send"]).is_err());
        assert!(p(&["update", "report", "--url"]).is_err());
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
        assert_eq!(p(&["data", "reset"]).unwrap(), Command::DataReset);
        assert_eq!(p(&["data", "--help"]).unwrap(), Command::Help);
        for (bad, want) in [
            (&["data"][..], ArgsError::UnknownDataCommand),
            (&["data", "wipe"][..], ArgsError::UnknownDataCommand),
            (
                &["data", "reset", "--disk"][..],
                ArgsError::Unexpected {
                    command: "data reset",
                    arg: "--disk".into(),
                },
            ),
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
            assert!(
                e.to_string().ends_with(&crate::cli::spec::usage_line()),
                "{bad:?}"
            );
        }
        assert!(Error::from(p(&["image"]).unwrap_err())
            .to_string()
            .contains("only `stele update`"));
    }
}

#[cfg(test)]
mod fetch_tests {
    use super::*;

    fn p(sub: &str, v: &[&str]) -> Option<Result<Command, ArgsError>> {
        let os: Vec<OsString> = v.iter().map(OsString::from).collect();
        parse_fetch(sub, &os)
    }

    #[test]
    fn fetch_commands() {
        assert_eq!(parse_rate("2M"), Some(2 << 20));
        assert_eq!(parse_rate("500k/s"), Some(500 << 10));
        assert_eq!(parse_rate("1000"), Some(1000));
        assert_eq!(parse_rate("0"), None);
        assert_eq!(parse_rate("fast"), None);
        assert!(
            p("install", &["/dev/vdb"]).is_none(),
            "a file stays with args.rs"
        );
        let Some(Ok(Command::InstallUrl { url, opts })) = p(
            "install",
            &[
                "http://h/v2.img",
                "--max-rate",
                "1M",
                "--deadline=60",
                "--max-time",
                "3600",
            ],
        ) else {
            panic!()
        };
        assert_eq!(opts.max_time, Duration::from_secs(3600));
        assert_eq!(
            FetchOptions::default().max_time,
            Duration::from_secs(6 * 3600)
        );
        assert!(matches!(
            p("install", &["/dev/vdb", "--max-time", "60"]),
            Some(Err(ArgsError::FetchOptionsNeedUrl))
        ));
        assert_eq!(url, "http://h/v2.img");
        assert_eq!(opts.max_rate, Some(1 << 20));
        assert_eq!(opts.deadline, Duration::from_secs(60));
        assert!(matches!(
            p("install", &["/dev/vdb", "--max-rate", "1M"]),
            Some(Err(ArgsError::FetchOptionsNeedUrl))
        ));
        assert!(matches!(
            p("plan", &["v2.img"]),
            Some(Ok(Command::Plan { .. }))
        ));
        assert!(matches!(
            p("check", &["--channel", "http://h/c"]),
            Some(Ok(Command::Check { .. }))
        ));
        assert!(matches!(
            p("apply", &["--channel", "http://h/c", "--max-rate", "64K"]),
            Some(Ok(Command::Apply {
                opts: FetchOptions {
                    max_rate: Some(65536),
                    ..
                },
                ..
            }))
        ));
        for (sub, bad) in [
            ("check", &["--max-rate", "1M", "--channel", "c"][..]),
            ("apply", &[][..]),
            ("apply", &["--channel"][..]),
            ("plan", &[][..]),
            ("install", &["http://h/x", "--max-rate", "soon"][..]),
            ("install", &["http://h/x", "--timeout", "0"][..]),
            ("install", &["http://h/x", "--max-time", "0"][..]),
            ("check", &["--max-time", "60", "--channel", "c"][..]),
            ("check", &["--channel", "c", "extra"][..]),
        ] {
            assert!(matches!(p(sub, bad), Some(Err(_))), "{sub} {bad:?}");
        }
    }
}

//! The device binary's arguments of the fetch commands (`install URL`, `plan`, `check
//! --channel`, `apply --channel`), parsed by hand like the rest of [`crate::cli::args`]. Pure.

use std::ffi::OsString;
use std::time::Duration;

use crate::cli::args::{ArgsError, Command};
use crate::remote::{is_url, FetchOptions};

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
pub fn parse(sub: &str, opts: &[OsString]) -> Option<Result<Command, ArgsError>> {
    let strs: Option<Vec<&str>> = opts.iter().map(|o| o.to_str()).collect();
    let strs = strs?;
    let fetchy = |a: &&str| {
        is_url(a)
            || a.starts_with("--max-rate")
            || a.starts_with("--deadline")
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
        let takes_value = matches!(opt, "--max-rate" | "--deadline" | "--timeout" | "--channel");
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

    fn p(sub: &str, v: &[&str]) -> Option<Result<Command, ArgsError>> {
        let os: Vec<OsString> = v.iter().map(OsString::from).collect();
        parse(sub, &os)
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
            &["http://h/v2.img", "--max-rate", "1M", "--deadline=60"],
        ) else {
            panic!()
        };
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
            ("check", &["--channel", "c", "extra"][..]),
        ] {
            assert!(matches!(p(sub, bad), Some(Err(_))), "{sub} {bad:?}");
        }
    }
}

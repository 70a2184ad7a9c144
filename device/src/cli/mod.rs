//! The device binary's `main`: stele-init run as `stele` (multi-call) parses its arguments
//! ([`crate::cli::args`]), runs the command against `/run/stele` and prints one
//! `stele: error: <cause>` line on failure. The host CLI runs the same [`run`] on the
//! device.

use std::ffi::OsString;
use std::path::Path;

use stele_verifier::exit::{print_error, Exit};

use stele_verifier::progress::Progress;

pub mod args;
pub mod progress;
pub mod spec;

use stele_verifier::exit::Report;
use stele_verifier::keys::Keyring;
use stele_verifier::recorder::Kind;

use crate::commands::{channel, esp, history, install, mark_good, report, reset, status, why};
use crate::remote::{self, Location};
use crate::runtime::run_dir::RUN_DIR;
use crate::target::{HttpOpener, Target};
use crate::Result;
use args::{parse_args, Command};
use progress::Line;

pub use crate::cli::args::is_update_call;

/// The multi-call entry: parses `argv`, runs the command against /run/stele, prints
/// `stele: error: <cause>` on failure and returns the exit class.
pub fn main(argv: &[OsString]) -> Exit {
    let r = parse_args(argv.get(1..).unwrap_or(&[]))
        .map_err(crate::Error::from)
        .and_then(|cmd| run(&cmd, At::Device(Path::new(RUN_DIR)), &mut Line::stderr()));
    match r {
        Ok(()) => Exit::Success,
        Err(e) => print_error(&e),
    }
}

/// Progress lines on stderr.
fn log(line: &str) {
    eprintln!("stele: {line}");
}

/// Where a command runs: the device (the run directory its boot published), or a disk
/// image on a host with the keys and product the command line gave.
#[derive(Debug)]
pub enum At<'a> {
    Device(&'a Path),
    Disk {
        path: &'a Path,
        keyring: Option<Keyring>,
        product: Option<String>,
        http: Option<HttpOpener>,
    },
}

impl At<'_> {
    /// Opens the target, for writing with `write`.
    fn open(self, write: bool) -> Result<Target> {
        match self {
            At::Device(run_dir) => Target::device(run_dir, write),
            At::Disk {
                path,
                keyring,
                product,
                http,
            } => {
                let mut t = Target::disk(path, keyring, product, write)?;
                t.http = http;
                Ok(t)
            }
        }
    }

    /// Opens the target with what an install or plan is checked against.
    fn open_trusted(self, write: bool) -> Result<Target> {
        let mut t = self.open(write)?;
        t.load_trust()?;
        Ok(t)
    }
}

/// Runs an update command at `at`, printing its output (the same lines on both
/// front-ends); an install's copy is reported to `progress`. Each command opens its
/// target and calls one function.
pub fn run(cmd: &Command, at: At<'_>, progress: &mut dyn Progress) -> Result<()> {
    match cmd {
        Command::Help => print!("{}", spec::help()),
        Command::Install(b) => {
            let mut t = at.open_trusted(true)?;
            history::started(&mut t, &b.shown());
            let done = install::run(&mut t, b, &mut log, progress);
            let done = history::outcome(&mut t, done, |d| Some(d))?;
            println!("{}", install::installed_line(&done));
            report::after(&mut t);
        }
        Command::InstallUrl { url, opts } => {
            let mut t = at.open_trusted(true)?;
            history::started(&mut t, url);
            let loc = Location::parse(url);
            let done =
                remote::install(&mut t, &loc, &[], opts, &mut |_| Ok(()), &mut log, progress);
            let done = history::outcome(&mut t, done, |d| Some(&d.installed))?;
            println!("{}", remote::summary_line(&done));
            println!("{}", install::installed_line(&done.installed));
            report::after(&mut t);
        }
        Command::Plan { location, opts } => {
            let mut t = at.open_trusted(false)?;
            print!(
                "{}",
                remote::plan(&mut t, &Location::parse(location), opts)?
            );
        }
        Command::Check { channel: ch, opts } => {
            // Written on the device only: the check is recorded there.
            let on_device = matches!(at, At::Device(_));
            let mut t = at.open(on_device)?;
            let said = channel::check(&t, &Location::parse(ch), opts);
            let mut e = history::event(Kind::ChannelChecked);
            e.text = match &said {
                Ok(text) => format!("{ch}: {}", text.lines().next().unwrap_or("")),
                Err(err) => format!("{ch}: {err}"),
            };
            e.class = said.as_ref().err().map(|err| err.exit());
            history::note(&mut t, e);
            print!("{}", said?);
        }
        Command::Apply { channel: ch, opts } => {
            let mut t = at.open(true)?;
            let applied = channel::apply(&mut t, &Location::parse(ch), opts, &mut log, progress);
            let applied = history::outcome(&mut t, applied, |a| match a {
                channel::Applied::Installed(done) => Some(&done.installed),
                channel::Applied::UpToDate { .. } => None,
            });
            if let Ok(channel::Applied::UpToDate { version }) = &applied {
                let mut e = history::event(Kind::ChannelChecked);
                e.text = format!("{ch}: up to date at {version}");
                history::note(&mut t, e);
            }
            match applied? {
                channel::Applied::UpToDate { version } => {
                    println!(
                        "stele: up to date: {version} is the newest release this device takes"
                    );
                }
                channel::Applied::Installed(done) => {
                    println!("{}", remote::summary_line(&done));
                    println!("{}", install::installed_line(&done.installed));
                    report::after(&mut t);
                }
            }
        }
        Command::Status { json } => {
            let mut t = at.open(false)?;
            let st = status::run(&mut t)?;
            print!("{}", if *json { st.json() } else { st.text() });
        }
        Command::MarkGood => {
            let mut t = at.open(true)?;
            let s = mark_good::run(&mut t)?;
            let mut e = history::event(Kind::MarkedGood);
            e.slot = Some(s);
            history::note(&mut t, e);
            println!("stele: slot={} marked good", s.name());
            report::after(&mut t);
        }
        Command::History { json } => {
            let mut t = at.open(false)?;
            let h = history::run(&mut t)?;
            print!("{}", if *json { h.json() } else { h.text() });
        }
        Command::Why => {
            let mut t = at.open(false)?;
            let st = t.state.load()?;
            match history::run(&mut t)?.ring {
                Some(ring) => println!("{}", why::explain(&ring.events, &st)),
                None => println!("{}", history::NO_RING),
            }
        }
        Command::Report { send, json } => {
            let mut t = at.open(false)?;
            let (shown, unsent) = report::run(&mut t, *send)?;
            print!("{}", if *json { shown.json() } else { shown.text() });
            if let Some(e) = unsent {
                return Err(e);
            }
        }
        Command::DataReset => {
            let mut t = at.open(true)?;
            reset::request(&mut t)?;
            println!("{}", reset::REQUESTED);
        }
        Command::Stage1(u) => {
            let t = at.open(true)?;
            let done = esp::on_target(&t, u, &mut log)?;
            println!("{}", esp::replaced_line(&done));
        }
    }
    Ok(())
}

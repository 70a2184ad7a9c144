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
pub mod remote_args;

use crate::commands::{esp, install, mark_good, status};
use crate::runtime::run_dir::RUN_DIR;
use crate::Result;
use args::{parse_args, Command, HELP};
use progress::Line;

pub use crate::cli::args::is_update_call;

/// The multi-call entry: parses `argv`, runs the command against /run/stele, prints
/// `stele: error: <cause>` on failure and returns the exit class.
pub fn main(argv: &[OsString]) -> Exit {
    let r = parse_args(argv.get(1..).unwrap_or(&[]))
        .map_err(crate::Error::from)
        .and_then(|cmd| run(&cmd, Path::new(RUN_DIR), &mut Line::stderr()));
    match r {
        Ok(()) => Exit::Success,
        Err(e) => print_error(&e),
    }
}

/// Progress lines on stderr.
fn log(line: &str) {
    eprintln!("stele: {line}");
}

/// Runs a device command against the files the boot published in `run_dir`, printing its
/// output; an install's copy is reported to `progress`.
pub fn run(cmd: &Command, run_dir: &Path, progress: &mut dyn Progress) -> Result<()> {
    match cmd {
        Command::Help => {
            print!("{HELP}");
            Ok(())
        }
        Command::Install(b) => {
            let done = install::on_device(run_dir, b, &mut log, progress)?;
            println!("{}", install::installed_line(&done));
            Ok(())
        }
        Command::InstallUrl { url, opts } => {
            let loc = crate::remote::Location::parse(url);
            let done =
                crate::remote::on_device(run_dir, &loc, opts, &mut |_| Ok(()), &mut log, progress)?;
            println!("{}", crate::remote::summary_line(&done));
            println!("{}", install::installed_line(&done.installed));
            Ok(())
        }
        Command::Plan { location, opts } => {
            let loc = crate::remote::Location::parse(location);
            print!("{}", crate::remote::plan_on_device(run_dir, &loc, opts)?);
            Ok(())
        }
        Command::Check { channel, opts } => {
            let loc = crate::remote::Location::parse(channel);
            print!(
                "{}",
                crate::commands::channel::check_on_device(run_dir, &loc, opts)?
            );
            Ok(())
        }
        Command::Apply { channel, opts } => {
            let loc = crate::remote::Location::parse(channel);
            match crate::commands::channel::apply_on_device(
                run_dir, &loc, opts, &mut log, progress,
            )? {
                crate::commands::channel::Applied::UpToDate { version } => {
                    println!(
                        "stele: up to date: {version} is the newest release this device takes"
                    );
                }
                crate::commands::channel::Applied::Installed(done) => {
                    println!("{}", crate::remote::summary_line(&done));
                    println!("{}", install::installed_line(&done.installed));
                }
            }
            Ok(())
        }
        Command::Status { json } => {
            let st = status::on_device(run_dir)?;
            print!("{}", if *json { st.json() } else { st.text() });
            Ok(())
        }
        Command::MarkGood => {
            let s = mark_good::on_device(run_dir)?;
            println!("stele: slot={} marked good", s.name());
            Ok(())
        }
        Command::Stage1(u) => {
            let done = esp::on_device(run_dir, u, &mut log)?;
            println!("{}", esp::replaced_line(&done));
            Ok(())
        }
    }
}

//! What PID 1 records in the flight recorder (docs/BOOT.md "Flight recorder"): each event
//! of a boot, stamped ([`stele_device::runtime::flight`]) and appended through the state
//! file (its own 4 KiB block between the state copies, flushed). At most
//! [`BOOT_BUDGET`] events per kernel started, so a reboot loop cannot wear out the flash;
//! a recorder error is one console line and the boot goes on. The causes are the console's
//! own errors (their `Display` and exit class): no text is written twice.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};

use stele_device::runtime::flight;
use stele_device::runtime::state_file::StateFile;
use stele_verifier::config::Stage;
use stele_verifier::exit::Report;
use stele_verifier::manifest::Manifest;
use stele_verifier::recorder::ring::BOOT_BUDGET;
use stele_verifier::recorder::{tail, Event, Kind, Origin, TEXT_MAX};
use stele_verifier::state::Slot;

use crate::{debug, info, warn};

/// Events this kernel's PID 1 has written (or tried to).
static WRITTEN: AtomicU32 = AtomicU32::new(0);

/// Where the health command's output goes (a tmpfs, read back when it fails).
pub const HEALTH_OUTPUT: &str = "/run/stele/health.out";

/// The origin of the boot's events in `stage`.
pub fn origin(stage: Stage) -> Origin {
    match stage {
        Stage::One => Origin::Stage1,
        Stage::Two => Origin::Stage2,
    }
}

/// True while this boot may write another event; says so once when the budget runs out.
/// `written`: events written before this one. Pure but for the line.
fn within_budget(written: u32) -> bool {
    if written == BOOT_BUDGET {
        info!("flight recorder: {BOOT_BUDGET} events recorded in this boot; later ones are not");
    }
    written < BOOT_BUDGET
}

/// Appends `e`, within this boot's budget; a failure is one console line.
pub fn record(state: &mut StateFile<File>, e: &Event) {
    if !within_budget(WRITTEN.fetch_add(1, Ordering::Relaxed)) {
        debug!("flight recorder: not recorded: {}", e.kind.name());
        return;
    }
    match state.record(e) {
        Ok(Some(seq)) => debug!("flight recorder: #{seq} {}", e.kind.name()),
        Ok(None) => {}
        Err(err) => warn!("flight recorder: {err}; the boot goes on"),
    }
}

/// An event of `kind` about `slot`, stamped now.
pub fn event(origin: Origin, kind: Kind, slot: Slot) -> Event {
    let mut e = flight::event(origin, kind);
    e.slot = Some(slot);
    e
}

/// The slot verified (its release; `count`: its tries left, or its unconfirmed boots).
pub fn verified(origin: Origin, slot: Slot, m: &Manifest, count: u8) -> Event {
    let mut e = event(origin, Kind::Verified, slot);
    e.release = Some(flight::release(m));
    e.count = count;
    e
}

/// A refusal of `kind` with the cause the console line names and its exit class.
pub fn refused(origin: Origin, kind: Kind, slot: Option<Slot>, cause: &dyn Report) -> Event {
    let mut e = flight::event(origin, kind);
    e.slot = slot;
    e.class = Some(cause.exit());
    e.text = cause.to_string();
    e
}

/// The health command `program` failed with `status`: its output's tail. The text is the
/// program, a newline, then the last bytes of its output (docs/FORMATS.md).
pub fn health_failed(slot: Slot, program: &str, status: i32, output: &str) -> Event {
    let mut e = event(Origin::Pid1, Kind::HealthFailed, slot);
    e.status = Some(status);
    let room = TEXT_MAX.saturating_sub(program.len() + 1);
    e.text = format!("{program}\n{}", tail(output, room));
    e
}

/// Stdout and stderr for a run of the health command: [`HEALTH_OUTPUT`], emptied; `None`
/// (the console, as before) when it cannot be created.
pub fn health_output() -> Option<(Stdio, Stdio)> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(HEALTH_OUTPUT)
        .map_err(|e| warn!("health check output {HEALTH_OUTPUT}: {e}; it goes to the console"))
        .ok()?;
    let err = f.try_clone().ok()?;
    Some((Stdio::from(f), Stdio::from(err)))
}

/// The end of the health command's last output (at most [`TEXT_MAX`] bytes, invalid UTF-8
/// replaced); empty when there is none.
pub fn health_output_tail() -> String {
    let Ok(mut f) = File::open(HEALTH_OUTPUT) else {
        return String::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let from = len.saturating_sub(TEXT_MAX as u64);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(from)).is_err() || f.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_health_failure_keeps_the_program_and_the_end_of_its_output() {
        let out = format!("{}\nlast line\n", "x".repeat(1000));
        let e = health_failed(Slot::B, "/usr/bin/check", 1, &out);
        assert!(e.text.starts_with("/usr/bin/check\n"), "{}", e.text);
        assert!(e.text.ends_with("last line\n"));
        assert!(e.text.len() <= TEXT_MAX);
        assert_eq!(e.status, Some(1));
        let err = crate::Error::KernelFile {
            path: "/boot/vmlinuz".into(),
            why: "does not match its manifest".into(),
        };
        let r = refused(Origin::Stage1, Kind::Refused, Some(Slot::A), &err);
        assert_eq!(r.text, err.to_string());
        assert_eq!(r.class, Some(stele_verifier::exit::Exit::Refused));
    }

    #[test]
    fn the_budget_stops_at_its_bound() {
        assert!((0..BOOT_BUDGET).all(within_budget));
        assert!(!within_budget(BOOT_BUDGET));
        assert!(!within_budget(BOOT_BUDGET + 5));
    }
}

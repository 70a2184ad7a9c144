//! PID 1's part in the reports (docs/BOOT.md "Reports"): once the slot is marked good it
//! runs the device command `stele update report --send` as a child (PID 1 links no network
//! code; the child sends through the fetch client), and runs it again every
//! [`RETRY_AFTER`] while reports stay unsent. The child is PID 1's own executable
//! (`/proc/self/exe`), not a file in writable storage. The timing is pure ([`Reporter`]).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stele_device::commands::report::has_backlog;
pub use stele_device::commands::report::RETRY_AFTER;
use stele_device::runtime::run_dir::PROGRAM;

use crate::cmdline::DEFAULT_PATH;
use crate::{sys, warn};

/// The report child and when to run it again.
#[derive(Debug, Default)]
pub struct Reporter {
    /// Set when the booted image names a report URL (system.toml `[report]`).
    pub enabled: bool,
    pub pid: Option<i32>,
    /// When to run it again (reports stayed unsent).
    pub next: Option<Instant>,
}

impl Reporter {
    /// Runs `stele update report --send` now (a child already running is left alone).
    pub fn start(&mut self) {
        if !self.enabled || self.pid.is_some() {
            return;
        }
        self.next = None;
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0(PROGRAM)
            .args(["update", "report", "--send"])
            .env_clear()
            .env("PATH", DEFAULT_PATH)
            .current_dir("/")
            .stdin(Stdio::null());
        match sys::spawn(&mut cmd, None) {
            Ok(pid) => self.pid = Some(pid),
            Err(e) => warn!("report: cannot run {PROGRAM} update report --send: {e}"),
        }
    }

    /// Takes `pid`'s exit if it is the report child: a failure while reports are kept
    /// under `data_mount` schedules another run. Returns whether it was. Pure but for
    /// looking at the backlog directory.
    pub fn reaped(&mut self, pid: i32, status: i32, data_mount: &str, now: Instant) -> bool {
        if self.pid != Some(pid) {
            return false;
        }
        self.pid = None;
        if status != 0 && has_backlog(Path::new(data_mount)) {
            self.next = Some(now + RETRY_AFTER);
        }
        true
    }

    /// Runs the child again when its time has come.
    pub fn start_due(&mut self, now: Instant) {
        if self.next.is_some_and(|at| at <= now) {
            self.start();
        }
    }

    /// How long until [`Reporter::start_due`] has something to do.
    pub fn wake_in(&self, now: Instant) -> Option<Duration> {
        self.next.map(|at| at.saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_report_run_is_retried_only_while_reports_are_kept() {
        let d = tempfile::tempdir().unwrap();
        let mount = d.path().to_str().unwrap();
        let now = Instant::now();
        let mut r = Reporter {
            enabled: true,
            pid: Some(42),
            next: None,
        };
        assert!(!r.reaped(7, 1, mount, now), "not the report child");
        assert!(r.reaped(42, 3, mount, now));
        assert_eq!(r.next, None, "nothing kept: nothing to retry");
        let dir = d.path().join(stele_device::report::backlog::DIR);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(stele_device::report::backlog::file_name(3)), "{}").unwrap();
        r.pid = Some(43);
        assert!(r.reaped(43, 3, mount, now));
        assert_eq!(r.next, Some(now + RETRY_AFTER));
        assert_eq!(r.wake_in(now), Some(RETRY_AFTER));
    }
}

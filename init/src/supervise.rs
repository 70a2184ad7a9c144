//! After switch root (steps 11-12): run the image's system.toml. Either hand PID 1 to the
//! image's own init, or stay PID 1: supervise services, reap every zombie, take signals,
//! mark the slot good once healthy, and shut down in order.
//!
//! Restart, backoff, crash-loop and health decisions are pure functions, tested below.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use stele_device::runtime::verified::Lower;
use stele_verifier::config::{
    Accounts, Action, ConfigError, Credentials, Restart, Service, SystemConfig,
};
use stele_verifier::layout::{GROUP, PASSWD, SYSTEM_TOML};

use stele_verifier::recorder::{Kind, Origin};

use crate::boot::{self, Booted};
use crate::cmdline::DEFAULT_PATH;
use crate::sys;
use crate::{debug, error, flight, info, warn, watchdog};

/// Longest restart delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A run this long resets the consecutive-failure count.
pub const STABLE_RUN: Duration = Duration::from_secs(30);
/// Failures of a service before the slot is good that make PID 1 reboot (boot counting).
pub const TRIAL_FAILURES: u32 = 3;

/// What to do when a service ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Start it again after this delay.
    Restart(Duration),
    /// Leave it stopped.
    Stop,
    /// End the machine (`on_exit`).
    End(Action),
}

/// `restart_delay` doubled per consecutive failure (the first failure waits `restart_delay`),
/// capped at 30 s. Pure.
pub fn backoff(restart_delay: u64, consecutive_failures: u32) -> Duration {
    let shift = consecutive_failures.saturating_sub(1).min(16);
    let secs = restart_delay.saturating_mul(1u64 << shift);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

/// Decides after a service exited with `status` having run `ran`; returns the decision and
/// the new consecutive-failure count. Pure.
pub fn on_exit(spec: &Service, status: i32, ran: Duration, consecutive: u32) -> (Decision, u32) {
    let failed = status != 0;
    let consecutive = match (failed, ran >= STABLE_RUN) {
        (false, _) => 0,
        (true, true) => 1,
        (true, false) => consecutive.saturating_add(1),
    };
    let restart = match spec.restart {
        Restart::Never => false,
        Restart::OnFailure => failed,
        Restart::Always => true,
    };
    let d = if restart {
        Decision::Restart(backoff(spec.restart_delay, consecutive))
    } else if let Some(a) = spec.on_exit {
        Decision::End(a)
    } else {
        Decision::Stop
    };
    (d, consecutive)
}

/// True when a slot on trial must be abandoned: a service failed [`TRIAL_FAILURES`] times
/// before the slot was marked good. Pure.
pub fn trial_failed(on_trial: bool, marked_good: bool, failures: u32) -> bool {
    on_trial && !marked_good && failures >= TRIAL_FAILURES
}

/// True when a slot on trial (`deadline` set) is still not good at `now`, past its
/// `trial_timeout`: a service that never gets healthy, a health command that keeps failing
/// or hangs. PID 1 then reboots so that boot counting falls back. Pure.
pub fn trial_expired(deadline: Option<Instant>, marked_good: bool, now: Instant) -> bool {
    !marked_good && deadline.is_some_and(|d| now >= d)
}

/// True when the services count as healthy: none waiting for a restart or stopped after a
/// failure (`unhealthy`), and `healthy_after` seconds since the last (re)start. Pure.
pub fn healthy_due(now: Instant, last_start: Instant, healthy_after: u64, unhealthy: bool) -> bool {
    !unhealthy && now.duration_since(last_start) >= Duration::from_secs(healthy_after)
}

/// What a signal to PID 1 asks for (busybox conventions): TERM and INT (Ctrl-Alt-Del)
/// reboot, USR2 powers off. Pure.
pub fn signal_action(sig: Signal) -> Option<Action> {
    match sig {
        Signal::SIGTERM | Signal::SIGINT => Some(Action::Reboot),
        Signal::SIGUSR2 => Some(Action::Poweroff),
        _ => None,
    }
}

/// Mount points to unmount at shutdown, deepest (last mounted) first; `/` is remounted
/// read-only instead. Parses /proc/mounts (octal escapes decoded). Pure.
pub fn unmount_order(proc_mounts: &str) -> Vec<String> {
    let mut v: Vec<String> = proc_mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .map(unescape)
        .filter(|t| t != "/")
        .collect();
    v.reverse();
    v
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug)]
struct Svc {
    spec: Service,
    /// Who it runs as (`None`: root, as PID 1).
    creds: Option<Credentials>,
    pid: Option<i32>,
    started: Instant,
    consecutive: u32,
    failures: u32,
    next_start: Option<Instant>,
    /// Ended with a failure and is not restarted: the slot is not healthy.
    failed_stopped: bool,
}

#[derive(Debug)]
struct Supervisor {
    b: Booted,
    cfg: SystemConfig,
    svcs: Vec<Svc>,
    last_start: Instant,
    good: bool,
    health_pid: Option<i32>,
    next_health: Instant,
    /// Set while the slot is on trial: when it must be good by.
    trial_deadline: Option<Instant>,
    /// The health command's last failure recorded (status, output): a repeat of it is
    /// not recorded again.
    last_health: Option<(i32, String)>,
    /// `stele update report --send` after the slot is marked good (crate::report).
    reporter: crate::report::Reporter,
}

/// Step 11-12. Never returns.
pub fn run(b: Booted) -> ! {
    let action = b.config.on_failure;
    let delay = b.config.failure_delay_secs;
    let cfg = load_system(Path::new(crate::mounts::LOWER), &b.config.data_mount);
    let cfg = match cfg {
        Ok(c) => c,
        Err(e) => {
            error!("nothing to run: {e}; {} in {delay}s", action.name());
            watchdog::sleep(Duration::from_secs(delay));
            boot::halt(action)
        }
    };
    let (cfg, creds) = cfg;
    info!("{}", b.phases.line(b.config.stage, b.start.elapsed()));
    if let Some(argv) = &cfg.exec {
        info!("exec {} as PID 1", argv.join(" "));
        // Still running, for the image's init to take over (systemd: RuntimeWatchdogSec).
        watchdog::hand_over();
        info!("ready");
        let e = sys::exec(argv);
        let _ = sys::block_all_signals();
        error!(
            "exec {} failed: {e}; {} in {delay}s",
            argv[0],
            action.name()
        );
        // The watchdog is closed: the machine resets if the delay outlasts it, which is
        // this failure's action too (a slot on trial spends its try either way).
        std::thread::sleep(Duration::from_secs(delay));
        boot::halt(action)
    }
    let now = Instant::now();
    let svcs = cfg
        .services
        .iter()
        .zip(creds)
        .map(|(s, creds)| Svc {
            spec: s.clone(),
            creds,
            pid: None,
            started: now,
            consecutive: 0,
            failures: 0,
            next_start: Some(now),
            failed_stopped: false,
        })
        .collect();
    let mut sup = Supervisor {
        b,
        cfg,
        svcs,
        last_start: now,
        good: false,
        health_pid: None,
        next_health: now,
        trial_deadline: None,
        last_health: None,
        reporter: crate::report::Reporter::default(),
    };
    sup.reporter.enabled = sup.cfg.report.is_some();
    if !sup.b.was_successful {
        sup.trial_deadline = Some(now + Duration::from_secs(sup.cfg.trial_timeout));
    }
    sup.start_due();
    info!("ready");
    sup.run_loop()
}

/// system.toml and the services' credentials, from the verified layer at `lower` itself,
/// not through the overlay, and never through a link out of it
/// (stele_device::runtime::verified): nothing written to the tmpfs upper layer or mounted
/// from the data partition (at `data_mount`) can change what runs. `Err` is the cause
/// PID 1 logs after "nothing to run: ".
fn load_system(
    lower: &Path,
    data_mount: &str,
) -> Result<(SystemConfig, Vec<Option<Credentials>>), String> {
    let lower = Lower::open(lower, data_mount).map_err(|e| e.to_string())?;
    lower.check_all().map_err(|e| e.to_string())?;
    let t = lower
        .read(SYSTEM_TOML)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!("read {SYSTEM_TOML} failed: not found (the image must contain it)")
        })?;
    // As `stele image build` refuses it (image/src/rootfs_check.rs).
    let t = String::from_utf8(t)
        .map_err(|_| ConfigError::file(SYSTEM_TOML, "not UTF-8").to_string())?;
    let c = SystemConfig::parse(&t, SYSTEM_TOML).map_err(|e| e.to_string())?;
    c.check_programs(SYSTEM_TOML, data_mount)
        .map_err(|e| e.to_string())?;
    let creds = c
        .credentials(SYSTEM_TOML, &image_accounts(&lower)?)
        .map_err(|e| e.to_string())?;
    Ok((c, creds))
}

/// The image's users and groups, from the verified layer (never the overlay, which the
/// tmpfs upper layer could change, nor through a link out of the image): empty when it
/// has no such file.
fn image_accounts(lower: &Lower) -> Result<Accounts, String> {
    let read = |f: &str| -> Result<String, String> {
        let bytes = lower.read(f).map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned())
    };
    Ok(Accounts::parse(&read(PASSWD)?, &read(GROUP)?))
}

fn exec_status(e: &std::io::Error) -> i32 {
    if e.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

fn command(
    argv: &[String],
    env: &std::collections::BTreeMap<String, String>,
    dir: &str,
) -> Command {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .envs(env)
        .current_dir(dir)
        .stdin(Stdio::null());
    cmd
}

impl Supervisor {
    fn run_loop(&mut self) -> ! {
        loop {
            // Kept alive for as long as PID 1 runs this loop, good slot or not: a hung PID
            // 1 resets the machine.
            watchdog::ping();
            let timeout = self.next_wake();
            if let Some(sig) = sys::wait_signal(timeout) {
                if let Some(a) = signal_action(sig) {
                    info!("received {sig}");
                    self.shutdown(a);
                }
                if sig != Signal::SIGCHLD {
                    debug!("ignored signal {sig}");
                }
            }
            for (pid, status) in sys::reap_all() {
                self.reaped(pid, status);
            }
            self.start_due();
            self.reporter.start_due(Instant::now());
            self.check_health();
            if trial_expired(self.trial_deadline, self.good, Instant::now()) {
                error!(
                    "slot={} not healthy within trial_timeout = {}s; reboot to let boot counting fall back",
                    self.b.slot.name(),
                    self.cfg.trial_timeout
                );
                let why = format!(
                    "not healthy within trial_timeout = {}s",
                    self.cfg.trial_timeout
                );
                self.end_trial(&why);
            }
        }
    }

    fn next_wake(&self) -> Duration {
        let now = Instant::now();
        let mut t = Duration::from_secs(60);
        for s in &self.svcs {
            if let Some(at) = s.next_start {
                t = t.min(at.saturating_duration_since(now));
            }
        }
        if !self.good && self.health_pid.is_none() {
            let due = (self.last_start + Duration::from_secs(self.cfg.healthy_after))
                .max(self.next_health);
            t = t.min(due.saturating_duration_since(now));
        }
        if let (false, Some(d)) = (self.good, self.trial_deadline) {
            t = t.min(d.saturating_duration_since(now));
        }
        if let Some(d) = self.reporter.wake_in(now) {
            t = t.min(d);
        }
        if let Some(ping) = watchdog::interval() {
            t = t.min(ping);
        }
        t.max(Duration::from_millis(10))
    }

    fn start_due(&mut self) {
        let now = Instant::now();
        let mut ended = Vec::new();
        for i in 0..self.svcs.len() {
            let s = &mut self.svcs[i];
            if s.pid.is_some() || s.next_start.is_none_or(|at| at > now) {
                continue;
            }
            s.next_start = None;
            let mut cmd = command(&s.spec.exec, &s.spec.env, &s.spec.workdir);
            s.started = now;
            self.last_start = now;
            match sys::spawn(&mut cmd, s.creds.as_ref()) {
                Ok(pid) => {
                    s.pid = Some(pid);
                    info!("service {} started pid {pid}", s.spec.name);
                }
                Err(e) => {
                    error!(
                        "service {} exec {} failed: {e}",
                        s.spec.name, s.spec.exec[0]
                    );
                    ended.push((i, exec_status(&e)));
                }
            }
        }
        for (i, status) in ended {
            self.exited(i, status);
        }
    }

    fn reaped(&mut self, pid: i32, status: i32) {
        let mount = &self.b.config.data_mount;
        if self.reporter.reaped(pid, status, mount, Instant::now()) {
            return;
        }
        if self.health_pid == Some(pid) {
            self.health_pid = None;
            if status == 0 {
                self.mark_good();
            } else {
                self.health_failed(status);
                self.next_health =
                    Instant::now() + Duration::from_secs(self.cfg.healthy_after.max(1));
            }
            return;
        }
        match self.svcs.iter().position(|s| s.pid == Some(pid)) {
            Some(i) => {
                self.svcs[i].pid = None;
                self.exited(i, status);
            }
            None => debug!("reaped pid {pid} status {status}"),
        }
    }

    fn exited(&mut self, i: usize, status: i32) {
        let now = Instant::now();
        let s = &mut self.svcs[i];
        info!("service {} exited status {status}", s.spec.name);
        let (d, consecutive) = on_exit(
            &s.spec,
            status,
            now.duration_since(s.started),
            s.consecutive,
        );
        s.consecutive = consecutive;
        if status != 0 {
            s.failures = s.failures.saturating_add(1);
        }
        let name = s.spec.name.clone();
        let failures = s.failures;
        match d {
            Decision::Restart(delay) => {
                s.next_start = Some(now + delay);
                debug!("service {name} restarts in {}s", delay.as_secs());
            }
            Decision::Stop => {
                s.failed_stopped = status != 0;
                if s.failed_stopped && !self.b.was_successful && !self.good {
                    error!(
                        "service {name} failed and is not restarted before slot={} was marked good; reboot to let boot counting fall back",
                        self.b.slot.name()
                    );
                    self.end_trial(&format!("service {name} failed and is not restarted"));
                }
            }
            Decision::End(a) => {
                info!("service {name} ended: on_exit = {}", a.name());
                self.shutdown(a);
            }
        }
        if trial_failed(!self.b.was_successful, self.good, failures) {
            error!(
                "service {name} failed {failures} times before slot={} was marked good; reboot to let boot counting fall back",
                self.b.slot.name()
            );
            self.end_trial(&format!("service {name} failed {failures} times"));
        }
    }

    /// A slot on trial that cannot become good (the console said why): `why` recorded,
    /// then the reboot that lets boot counting fall back.
    fn end_trial(&mut self, why: &str) -> ! {
        let slot = self.b.slot;
        let mut e = flight::event(Origin::Pid1, Kind::TrialFailed, slot);
        e.release = Some(self.b.release.clone());
        e.text = why.to_string();
        flight::record(&mut self.b.state, &e);
        self.shutdown(Action::Reboot)
    }

    /// The health command exited `status` (not 0): its output's end on the console, and
    /// in the flight recorder unless it is what the last failure recorded.
    fn health_failed(&mut self, status: i32) {
        let program = self.cfg.health.as_ref().map_or("", |a| a[0].as_str());
        let output = flight::health_output_tail();
        let last = output
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        warn!("health check {program} exited status {status}: {last}");
        let seen = (status, output);
        if self.last_health.as_ref() != Some(&seen) {
            let mut e = flight::health_failed(self.b.slot, program, status, &seen.1);
            e.release = Some(self.b.release.clone());
            flight::record(&mut self.b.state, &e);
            self.last_health = Some(seen);
        }
    }

    fn check_health(&mut self) {
        if self.good || self.health_pid.is_some() {
            return;
        }
        let now = Instant::now();
        let pending = self
            .svcs
            .iter()
            .any(|s| s.next_start.is_some() || s.failed_stopped);
        if !healthy_due(now, self.last_start, self.cfg.healthy_after, pending)
            || now < self.next_health
        {
            return;
        }
        match &self.cfg.health {
            None => self.mark_good(),
            Some(argv) => {
                let mut cmd = command(argv, &Default::default(), "/");
                if let Some((out, err)) = flight::health_output() {
                    cmd.stdout(out).stderr(err);
                }
                match sys::spawn(&mut cmd, None) {
                    Ok(pid) => self.health_pid = Some(pid),
                    Err(e) => {
                        warn!("health check {} failed to start: {e}", argv[0]);
                        self.next_health = now + Duration::from_secs(self.cfg.healthy_after.max(1));
                    }
                }
            }
        }
    }

    fn mark_good(&mut self) {
        self.good = true;
        for w in crate::devices::recheck(&self.b.config) {
            warn!("{w}");
        }
        let b = &mut self.b;
        // `stele update` may hold the state for a moment; PID 1 never blocks on it: it
        // tries again a second later.
        match b.state.try_lock() {
            Ok(true) => {}
            Ok(false) => {
                info!(
                    "boot state busy (stele update?); marking slot={} good later",
                    b.slot.name()
                );
                self.good = false;
                self.next_health = Instant::now() + Duration::from_secs(1);
                return;
            }
            Err(e) => warn!("{e}; marking good without the state lock"),
        }
        let r = stele_device::runtime::rollback::mark_good(
            &mut b.state,
            b.tpm.counter(),
            b.slot,
            b.rollback_index,
        );
        if r.is_ok() {
            let mut e = flight::event(Origin::Pid1, Kind::MarkedGood, b.slot);
            e.release = Some(b.release.clone());
            flight::record(&mut b.state, &e);
        }
        b.state.unlock();
        match r {
            Ok(done) => {
                info!("slot={} marked good", b.slot.name());
                self.reporter.start();
                if let Some((from, to)) = done.tpm.filter(|(f, t)| f != t) {
                    info!("TPM rollback floor raised from {from} to {to}");
                }
            }
            Err(e) => {
                error!(
                    "marking slot={} good failed: {e}; trying again",
                    b.slot.name()
                );
                // Not good yet: the slot stays on trial and this is retried.
                self.good = false;
                self.next_health =
                    Instant::now() + Duration::from_secs(self.cfg.healthy_after.max(1));
            }
        }
    }

    fn shutdown(&mut self, action: Action) -> ! {
        info!("shutdown: {}", action.name());
        let _ = sys::kill_all(Signal::SIGTERM);
        let _ = sys::kill_all(Signal::SIGCONT);
        let deadline = Instant::now() + Duration::from_secs(self.cfg.shutdown_grace);
        self.drain(deadline);
        if sys::kill_all(Signal::SIGKILL) {
            self.drain(Instant::now() + Duration::from_secs(2));
        }
        sys::sync();
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        for t in unmount_order(&mounts) {
            if sys::umount(&t).is_err() {
                let _ = sys::remount_ro(&t);
            }
        }
        let _ = sys::remount_ro("/");
        boot::final_halt(action)
    }

    /// Reaps until no process is left or `deadline`.
    fn drain(&mut self, deadline: Instant) {
        loop {
            match sys::reap_one() {
                sys::Reaped::Child(pid, status) => {
                    if let Some(s) = self.svcs.iter_mut().find(|s| s.pid == Some(pid)) {
                        s.pid = None;
                        info!("service {} exited status {status}", s.spec.name);
                    }
                }
                sys::Reaped::None => return,
                sys::Reaped::Running => {
                    watchdog::ping();
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return;
                    }
                    let _ = sys::wait_signal(left.min(Duration::from_millis(100)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 18 on the host: the lower layer's system.toml or /etc/passwd behind a link
    /// into the data mount is refused naming the link; a non-UTF-8 system.toml is refused
    /// as the build refuses it; a clean tree loads with the user's uid from the image.
    #[test]
    fn system_toml_and_passwd_are_read_only_from_inside_the_image() {
        use std::os::unix::fs::symlink;
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("etc/stele")).unwrap();
        std::fs::create_dir_all(r.join("bin")).unwrap();
        std::fs::write(r.join("bin/app"), "").unwrap();
        let system = "[[service]]\nname = \"a\"\nexec = [\"/bin/app\"]\nuser = \"svc\"\n";
        std::fs::write(r.join("etc/stele/system.toml"), system).unwrap();
        std::fs::write(r.join("etc/passwd"), "svc:x:1000:1000::/:/bin/false\n").unwrap();
        let (_, creds) = load_system(r, "/data").unwrap();
        assert_eq!(creds[0].as_ref().map(|c| c.uid), Some(1000));
        std::fs::remove_file(r.join("etc/passwd")).unwrap();
        symlink("/data/passwd", r.join("etc/passwd")).unwrap();
        let e = load_system(r, "/data").unwrap_err();
        assert!(
            e.contains("/etc/passwd -> /data/passwd, into /data, which the device writes"),
            "{e}"
        );
        std::fs::remove_file(r.join("etc/passwd")).unwrap();
        std::fs::remove_file(r.join("etc/stele/system.toml")).unwrap();
        symlink("/var/x/system.toml", r.join("etc/stele/system.toml")).unwrap();
        let e = load_system(r, "/data").unwrap_err();
        assert!(
            e.contains("/etc/stele/system.toml -> /var/x/system.toml, into /var"),
            "{e}"
        );
        std::fs::remove_file(r.join("etc/stele/system.toml")).unwrap();
        std::fs::write(r.join("etc/stele/system.toml"), b"exec = [\"\xff\"]\n").unwrap();
        let e = load_system(r, "/data").unwrap_err();
        assert_eq!(e, "invalid /etc/stele/system.toml: not UTF-8");
    }

    fn svc(restart: Restart, delay: u64, on_exit: Option<Action>) -> Service {
        Service {
            name: "t".into(),
            exec: vec!["/bin/t".into()],
            env: Default::default(),
            workdir: "/".into(),
            restart,
            restart_delay: delay,
            on_exit,
            run_as: Default::default(),
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1, 1), Duration::from_secs(1));
        assert_eq!(backoff(1, 2), Duration::from_secs(2));
        assert_eq!(backoff(1, 3), Duration::from_secs(4));
        assert_eq!(backoff(1, 6), Duration::from_secs(30));
        assert_eq!(backoff(2, 0), Duration::from_secs(2));
        assert_eq!(backoff(u64::MAX, 40), MAX_BACKOFF);
    }

    #[test]
    fn restart_policies() {
        let short = Duration::from_secs(1);
        let s = svc(Restart::OnFailure, 1, None);
        assert_eq!(
            on_exit(&s, 1, short, 0),
            (Decision::Restart(Duration::from_secs(1)), 1)
        );
        assert_eq!(
            on_exit(&s, 1, short, 1),
            (Decision::Restart(Duration::from_secs(2)), 2)
        );
        assert_eq!(on_exit(&s, 0, short, 3), (Decision::Stop, 0));
        // A long run resets the count.
        assert_eq!(
            on_exit(&s, 137, STABLE_RUN, 5),
            (Decision::Restart(Duration::from_secs(1)), 1)
        );
        let s = svc(Restart::Always, 1, None);
        assert_eq!(
            on_exit(&s, 0, short, 0),
            (Decision::Restart(Duration::from_secs(1)), 0)
        );
        let s = svc(Restart::Never, 1, None);
        assert_eq!(on_exit(&s, 1, short, 0), (Decision::Stop, 1));
    }

    #[test]
    fn on_exit_ends_the_machine_only_when_not_restarted() {
        let short = Duration::from_secs(1);
        let s = svc(Restart::Never, 1, Some(Action::Poweroff));
        assert_eq!(on_exit(&s, 0, short, 0).0, Decision::End(Action::Poweroff));
        let s = svc(Restart::OnFailure, 1, Some(Action::Reboot));
        assert_eq!(on_exit(&s, 0, short, 0).0, Decision::End(Action::Reboot));
        assert!(matches!(on_exit(&s, 2, short, 0).0, Decision::Restart(_)));
    }

    #[test]
    fn crash_loop_on_trial_reboots() {
        let now = Instant::now();
        assert!(trial_expired(Some(now), false, now));
        assert!(!trial_expired(
            Some(now + Duration::from_secs(1)),
            false,
            now
        ));
        assert!(
            !trial_expired(Some(now), true, now),
            "a good slot is not abandoned"
        );
        assert!(
            !trial_expired(None, false, now),
            "a slot not on trial has no deadline"
        );
        assert!(!trial_failed(true, false, 2));
        assert!(trial_failed(true, false, 3));
        assert!(!trial_failed(true, true, 9), "a good slot is not abandoned");
        assert!(
            !trial_failed(false, false, 9),
            "a slot not on trial is not abandoned"
        );
    }

    #[test]
    fn health_timing() {
        let t0 = Instant::now();
        assert!(!healthy_due(t0 + Duration::from_secs(4), t0, 5, false));
        assert!(healthy_due(t0 + Duration::from_secs(5), t0, 5, false));
        assert!(!healthy_due(t0 + Duration::from_secs(50), t0, 5, true));
        assert!(healthy_due(t0, t0, 0, false));
    }

    #[test]
    fn signals_follow_busybox() {
        assert_eq!(signal_action(Signal::SIGTERM), Some(Action::Reboot));
        assert_eq!(signal_action(Signal::SIGINT), Some(Action::Reboot));
        assert_eq!(signal_action(Signal::SIGUSR2), Some(Action::Poweroff));
        assert_eq!(signal_action(Signal::SIGCHLD), None);
        assert_eq!(signal_action(Signal::SIGHUP), None);
    }

    #[test]
    fn unmounts_deepest_first_and_decodes_escapes() {
        let m = "overlay / overlay rw 0 0\nproc /proc proc rw 0 0\ntmpfs /run tmpfs rw 0 0\n/dev/vda4 /var ext4 rw 0 0\n/dev/vda4 /var/my\\040dir ext4 rw 0 0\n";
        assert_eq!(unmount_order(m), ["/var/my dir", "/var", "/run", "/proc"]);
    }
}

//! stele-qemu: QEMU boot harness.
//!
//! [`qemu_args`] turns a [`VmConfig`] into a QEMU command line (pure, unit-tested).
//! [`Vm`] runs it: the serial console is captured in memory (and optionally to a log file
//! and to stdout), [`Vm::expect`] waits for text on it, [`Vm::kill`] is a power cut, and a
//! watchdog kills the VM at its hard timeout. Dropping a `Vm` kills it. [`firmware`]
//! boots through SeaBIOS or OVMF (UEFI, Secure Boot); [`tpm`] adds a TPM 2.0 (swtpm);
//! [`junit`] reports expectations; [`bus`] puts the disks on virtio, NVMe, SATA, SCSI or USB.

pub mod bus;
pub mod firmware;
pub mod junit;
pub mod tpm;

pub use bus::{Disk, DiskBus};
pub use firmware::{Firmware, Uefi};

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use stele_verifier::exit::{Exit, Report};

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";
/// Printed by the kernel at the start of every boot; [`Vm::boot_count`] counts it.
pub const BOOT_MARKER: &str = "Linux version";
/// Options always on the kernel command line.
pub const BASE_APPEND: &str = "console=ttyS0 panic=-1";

/// Errors of the harness.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    /// QEMU is not installed.
    #[error("`{0}` not found: install the qemu-system-x86 package (run `cargo xtask setup`)")]
    NotFound(String),
    /// Starting QEMU or a harness thread failed.
    #[error("failed to start {what}: {source}")]
    Spawn {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The serial log file could not be created.
    #[error("failed to create the serial log {path}: {source}")]
    Log {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The text did not appear in time.
    #[error("timed out after {secs}s waiting for {pattern:?} on the console; last console lines:\n{tail}")]
    Timeout {
        pattern: String,
        secs: u64,
        tail: String,
    },
    /// The VM stopped before the text appeared.
    #[error("the VM exited ({status}) before {pattern:?} appeared on the console; last console lines:\n{tail}")]
    Exited {
        pattern: String,
        status: String,
        tail: String,
    },
    /// The VM did not power off in time.
    #[error("the VM was still running after {secs}s; last console lines:\n{tail}")]
    StillRunning { secs: u64, tail: String },
    /// A file the VM needs is missing.
    #[error("{what} {} not found: {fix}", path.display())]
    Missing {
        what: String,
        path: PathBuf,
        fix: String,
    },
    /// A helper tool (virt-fw-vars) failed.
    #[error("`{tool}` failed ({status}): {stderr}")]
    Tool {
        tool: String,
        status: String,
        stderr: String,
    },
    /// Waiting for or killing the QEMU process failed.
    #[error("failed to {what} the QEMU process: {source}")]
    Process {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

impl QemuError {
    /// The message without the console tail, for a caller that already showed the console
    /// as it came (`stele qemu run`).
    pub fn summary(&self) -> String {
        match self {
            QemuError::Timeout { pattern, secs, .. } => {
                format!("expected text {pattern:?} did not appear within {secs}s")
            }
            QemuError::Exited {
                pattern, status, ..
            } => format!("the VM exited ({status}) before {pattern:?} appeared"),
            QemuError::StillRunning { secs, .. } => {
                format!("the VM did not power off within {secs}s")
            }
            e => e.to_string(),
        }
    }
}

impl Report for QemuError {
    /// QEMU missing or failing is the environment; a VM that did not show what was
    /// expected is refused.
    fn exit(&self) -> Exit {
        match self {
            QemuError::NotFound(_)
            | QemuError::Spawn { .. }
            | QemuError::Log { .. }
            | QemuError::Missing { .. }
            | QemuError::Tool { .. }
            | QemuError::Process { .. } => Exit::Environment,
            QemuError::Timeout { .. }
            | QemuError::Exited { .. }
            | QemuError::StillRunning { .. } => Exit::Refused,
        }
    }
}

/// Everything about one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmConfig {
    pub qemu: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Raw disk images, attached in order, each on its bus ([`bus::disk_args`]).
    pub disks: Vec<Disk>,
    /// Extra kernel command line, after [`BASE_APPEND`].
    pub append: String,
    pub memory_mb: u32,
    /// Virtual CPUs (`-smp`).
    pub smp: u32,
    /// `tcg` or `kvm`.
    pub accel: String,
    /// Where to copy the console as it comes.
    pub serial_log: Option<PathBuf>,
    /// Extra QEMU arguments, appended last.
    pub extra_args: Vec<String>,
    /// Exit QEMU on a guest reboot instead of rebooting (off by default so that tests can
    /// count boots).
    pub no_reboot: bool,
    /// Hard limit on the VM's life; the watchdog kills it then.
    pub timeout: Duration,
    /// Copy the console to this process's stdout as it comes.
    pub echo: bool,
    /// How the VM boots. Other than [`Firmware::Direct`], `kernel`/`initrd` are passed
    /// (to the firmware, through QEMU's `-kernel`/`-initrd`) only when not empty.
    pub firmware: Firmware,
    /// An i6300esb watchdog whose expiry resets the VM.
    pub watchdog: bool,
    /// A TPM 2.0 (swtpm) with its state in this directory ([`tpm`]).
    pub tpm: Option<PathBuf>,
}

impl VmConfig {
    /// Defaults: TCG, 512 MiB, one CPU, no disks, 300 s hard timeout. Pure.
    pub fn new(kernel: impl Into<PathBuf>, initrd: impl Into<PathBuf>) -> Self {
        VmConfig {
            qemu: QEMU.to_string(),
            kernel: kernel.into(),
            initrd: initrd.into(),
            disks: Vec::new(),
            append: String::new(),
            memory_mb: 512,
            smp: 1,
            accel: String::from("tcg"),
            serial_log: None,
            extra_args: Vec::new(),
            no_reboot: false,
            timeout: Duration::from_secs(300),
            echo: false,
            firmware: Firmware::Direct,
            watchdog: false,
            tpm: None,
        }
    }

    /// A VM booted by `firmware` from its disks, with no `-kernel`. Pure.
    pub fn with_firmware(firmware: Firmware) -> Self {
        let mut c = Self::new(PathBuf::new(), PathBuf::new());
        c.firmware = firmware;
        c
    }

    /// [`VmConfig::new`], then `STELE_QEMU_ACCEL` (e.g. `kvm`) when set.
    pub fn from_env(kernel: impl Into<PathBuf>, initrd: impl Into<PathBuf>) -> Self {
        let mut c = Self::new(kernel, initrd);
        if let Ok(a) = std::env::var("STELE_QEMU_ACCEL") {
            if !a.trim().is_empty() {
                c.accel = a.trim().to_string();
            }
        }
        c
    }
}

/// The QEMU arguments (without the binary) for `cfg`. Pure.
pub fn qemu_args(cfg: &VmConfig) -> Vec<String> {
    let mut a: Vec<String> = [
        "-nodefaults",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "stdio",
        "-accel",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(cfg.accel.clone());
    a.extend([
        "-m".into(),
        cfg.memory_mb.to_string(),
        "-smp".into(),
        cfg.smp.max(1).to_string(),
    ]);
    a.extend(firmware::machine_args(&cfg.firmware));
    if cfg.no_reboot {
        a.push("-no-reboot".into());
    }
    let direct = cfg.firmware.is_direct();
    if direct || !cfg.kernel.as_os_str().is_empty() {
        a.extend(["-kernel".into(), cfg.kernel.display().to_string()]);
        if direct || !cfg.initrd.as_os_str().is_empty() {
            a.extend(["-initrd".into(), cfg.initrd.display().to_string()]);
        }
        let append = if cfg.append.trim().is_empty() {
            BASE_APPEND.to_string()
        } else {
            format!("{BASE_APPEND} {}", cfg.append.trim())
        };
        a.extend(["-append".into(), append]);
    }
    a.extend(bus::disk_args(&cfg.disks));
    if cfg.watchdog {
        a.extend(["-device", "i6300esb", "-action", "watchdog=reset"].map(String::from));
    }
    if let Some(dir) = &cfg.tpm {
        a.extend(tpm::qemu_args(dir));
    }
    a.extend(cfg.extra_args.iter().cloned());
    a
}

#[derive(Debug, Default)]
struct Console {
    bytes: Vec<u8>,
    eof: bool,
}

#[derive(Debug, Default)]
struct Shared {
    console: Mutex<Console>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Console> {
        // A panicking reader thread cannot leave the buffer inconsistent: keep going.
        self.console.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running VM. Dropping it kills QEMU.
#[derive(Debug)]
pub struct Vm {
    child: Arc<Mutex<Child>>,
    shared: Arc<Shared>,
    /// Console byte offset after the previous match.
    pos: usize,
    deadline: Instant,
    timeout: Duration,
    reader: Option<JoinHandle<()>>,
    watchdog: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
    status: Option<ExitStatus>,
    /// The VM's TPM, when it has one.
    swtpm: Option<tpm::Swtpm>,
}

fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Vm {
    /// Starts QEMU for `cfg`.
    pub fn start(cfg: &VmConfig) -> Result<Vm, QemuError> {
        let mut log = match &cfg.serial_log {
            Some(p) => Some(File::create(p).map_err(|source| QemuError::Log {
                path: p.clone(),
                source,
            })?),
            None => None,
        };
        let exe = stele_image::tool::find(&cfg.qemu)
            .ok_or_else(|| QemuError::NotFound(cfg.qemu.clone()))?;
        // swtpm ends by itself when QEMU goes (--terminate), also after a signal.
        let swtpm = cfg.tpm.as_deref().map(tpm::Swtpm::start).transpose()?;
        let mut cmd = Command::new(exe);
        cmd.args(qemu_args(cfg))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // Where the process stops its children on SIGINT/SIGTERM/SIGHUP (`stele qemu run`),
        // QEMU is one of them: a cancelled CI job leaves no VM holding the disk's lock.
        let spawned = if stele_image::cleanup::installed() {
            stele_image::cleanup::spawn(&mut cmd)
        } else {
            cmd.spawn()
        };
        let mut child = spawned.map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => QemuError::NotFound(cfg.qemu.clone()),
            _ => QemuError::Spawn {
                what: cfg.qemu.clone(),
                source: e,
            },
        })?;
        let mut stdout = child.stdout.take().ok_or_else(|| QemuError::Spawn {
            what: String::from("the console pipe"),
            source: io::Error::other("no stdout pipe"),
        })?;
        let child = Arc::new(Mutex::new(child));
        let shared = Arc::new(Shared::default());
        let echo = cfg.echo;
        let s2 = Arc::clone(&shared);
        let reader = std::thread::Builder::new()
            .name("vm-console".into())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    let n = match stdout.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if let Some(f) = log.as_mut() {
                        let _ = f.write_all(&buf[..n]);
                    }
                    if echo {
                        let mut out = io::stdout().lock();
                        let _ = out.write_all(&buf[..n]);
                        let _ = out.flush();
                    }
                    s2.lock().bytes.extend_from_slice(&buf[..n]);
                    s2.changed.notify_all();
                }
                s2.lock().eof = true;
                s2.changed.notify_all();
            })
            .map_err(|source| QemuError::Spawn {
                what: "the console reader thread".into(),
                source,
            });
        let reader = match reader {
            Ok(r) => r,
            Err(e) => {
                let mut c = child.lock().unwrap_or_else(|e| e.into_inner());
                let _ = c.kill();
                let _ = c.wait();
                stele_image::cleanup::forget(c.id());
                return Err(e);
            }
        };
        let (tx, rx) = mpsc::channel::<()>();
        let c2 = Arc::clone(&child);
        let limit = cfg.timeout;
        let watchdog = std::thread::Builder::new()
            .name("vm-watchdog".into())
            .spawn(move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                    let mut c = c2.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = c.kill();
                }
            })
            .ok()
            .map(|h| (tx, h));
        Ok(Vm {
            child,
            shared,
            pos: 0,
            deadline: Instant::now() + cfg.timeout,
            timeout: cfg.timeout,
            reader: Some(reader),
            watchdog,
            status: None,
            swtpm,
        })
    }

    fn child(&self) -> MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `pattern` appears on the console after the previous match, and returns
    /// the console line that holds it (waiting, within the timeout, for its end).
    pub fn expect(&mut self, pattern: &str, timeout: Duration) -> Result<String, QemuError> {
        let start = Instant::now();
        let until = (start + timeout).min(self.deadline);
        let mut con = self.shared.lock();
        loop {
            let hay = &con.bytes[self.pos.min(con.bytes.len())..];
            if let Some(i) = hay
                .windows(pattern.len().max(1))
                .position(|w| w == pattern.as_bytes())
            {
                let at = self.pos + i;
                let line_start = con.bytes[..at]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |p| p + 1);
                let newline = con.bytes[at..].iter().position(|&b| b == b'\n');
                // Wait (within the timeout) for the rest of the line to arrive.
                if newline.is_none() && !con.eof && Instant::now() < until {
                    let left = until.saturating_duration_since(Instant::now());
                    con = self
                        .shared
                        .changed
                        .wait_timeout(con, left.min(Duration::from_millis(200)))
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                    continue;
                }
                let line_end = newline.map_or(con.bytes.len(), |p| at + p);
                let line = String::from_utf8_lossy(&con.bytes[line_start..line_end])
                    .trim_end_matches('\r')
                    .to_string();
                self.pos = at + pattern.len();
                return Ok(line);
            }
            if con.eof {
                let t = tail(&con.bytes, 40);
                drop(con);
                let status = self
                    .wait_exit(Duration::from_secs(5))
                    .map_or_else(|_| String::from("unknown status"), |s| s.to_string());
                return Err(QemuError::Exited {
                    pattern: pattern.to_string(),
                    status,
                    tail: t,
                });
            }
            let now = Instant::now();
            if now >= until {
                return Err(QemuError::Timeout {
                    pattern: pattern.to_string(),
                    secs: (now - start).as_secs(),
                    tail: tail(&con.bytes, 40),
                });
            }
            con = self
                .shared
                .changed
                .wait_timeout(con, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits for QEMU to exit (the guest powered off, or the watchdog fired).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, QemuError> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let until = (Instant::now() + timeout).min(self.deadline + Duration::from_secs(5));
        loop {
            let polled = self
                .child()
                .try_wait()
                .map_err(|source| QemuError::Process {
                    what: "wait for",
                    source,
                })?;
            if let Some(s) = polled {
                stele_image::cleanup::forget(self.child().id());
                self.status = Some(s);
                self.join_reader();
                return Ok(s);
            }
            if Instant::now() >= until {
                return Err(QemuError::StillRunning {
                    secs: timeout.as_secs(),
                    tail: tail(&self.shared.lock().bytes, 40),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Power cut: SIGKILL to QEMU, then reap it.
    pub fn kill(&mut self) -> Result<(), QemuError> {
        if self.status.is_some() {
            return Ok(());
        }
        let status = {
            let mut c = self.child();
            let _ = c.kill();
            c.wait().map_err(|source| QemuError::Process {
                what: "reap",
                source,
            })?
        };
        stele_image::cleanup::forget(self.child().id());
        self.status = Some(status);
        // Its state stays in the directory for the next VM; the process goes with QEMU.
        self.swtpm = None;
        self.join_reader();
        Ok(())
    }

    /// After QEMU exited: lets the reader drain the pipe. If something else still holds
    /// the pipe open (a grandchild), gives up after 2 s and leaves the thread detached.
    fn join_reader(&mut self) {
        let Some(r) = self.reader.take() else { return };
        let until = Instant::now() + Duration::from_secs(2);
        let mut con = self.shared.lock();
        while !con.eof {
            let now = Instant::now();
            if now >= until {
                return;
            }
            con = self
                .shared
                .changed
                .wait_timeout(con, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        drop(con);
        let _ = r.join();
    }

    /// Everything the console printed so far.
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&self.shared.lock().bytes).into_owned()
    }

    /// How many times the kernel started (occurrences of [`BOOT_MARKER`]). The kernel
    /// prints that banner at notice level: `quiet` hides it; then count a line the init
    /// prints every boot with [`Vm::count`] (e.g. `"stele: stele-init "`).
    pub fn boot_count(&self) -> usize {
        self.count(BOOT_MARKER)
    }

    /// Occurrences of `text` on the whole console so far.
    pub fn count(&self, text: &str) -> usize {
        if text.is_empty() {
            return 0;
        }
        self.console().matches(text).count()
    }

    /// Time left before the hard timeout.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The hard timeout this VM was started with.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.kill();
        if let Some((tx, h)) = self.watchdog.take() {
            let _ = tx.send(());
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values following each `flag` in `a` (also used by the firmware tests).
    pub(crate) fn pair(a: &[String], flag: &str) -> Vec<String> {
        a.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].clone())
            .collect()
    }

    #[test]
    fn defaults() {
        let c = VmConfig::new("/k/vmlinuz", "/k/initrd");
        let a = qemu_args(&c);
        assert_eq!(pair(&a, "-accel"), ["tcg"]);
        assert_eq!(pair(&a, "-m"), ["512"]);
        assert_eq!(pair(&a, "-smp"), ["1"]);
        assert_eq!(pair(&a, "-serial"), ["stdio"]);
        assert_eq!(pair(&a, "-display"), ["none"]);
        assert_eq!(pair(&a, "-monitor"), ["none"]);
        assert_eq!(pair(&a, "-kernel"), ["/k/vmlinuz"]);
        assert_eq!(pair(&a, "-initrd"), ["/k/initrd"]);
        assert_eq!(pair(&a, "-append"), [BASE_APPEND]);
        assert!(a.contains(&"-nodefaults".to_string()));
        assert!(!a.contains(&"-no-reboot".to_string()));
        assert!(pair(&a, "-drive").is_empty());
        assert!(pair(&a, "-tpmdev").is_empty());
        let mut t = c.clone();
        t.tpm = Some("/vm/tpm".into());
        assert_eq!(
            pair(&qemu_args(&t), "-tpmdev"),
            ["emulator,id=tpm0,chardev=chrtpm"]
        );
    }

    #[test]
    fn disks_append_and_options() {
        let mut c = VmConfig::new("k", "i");
        c.disks = vec![Disk::new("/d/a,b.img"), Disk::new("/d/ro.img").read_only()];
        c.smp = 2;
        c.append = " stele.debug quiet ".into();
        c.memory_mb = 1024;
        c.accel = "kvm".into();
        c.no_reboot = true;
        c.extra_args = vec!["-cpu".into(), "max".into()];
        let a = qemu_args(&c);
        assert_eq!(
            pair(&a, "-drive"),
            [
                "file=/d/a,,b.img,format=raw,if=virtio",
                "file=/d/ro.img,format=raw,if=virtio,readonly=on"
            ]
        );
        assert_eq!(
            pair(&a, "-append"),
            ["console=ttyS0 panic=-1 stele.debug quiet"]
        );
        assert_eq!(pair(&a, "-m"), ["1024"]);
        assert_eq!(pair(&a, "-smp"), ["2"]);
        assert_eq!(pair(&a, "-accel"), ["kvm"]);
        assert!(a.contains(&"-no-reboot".to_string()));
        assert_eq!(&a[a.len() - 2..], ["-cpu", "max"]);
    }

    /// Writing a script while another test thread forks gives ETXTBSY on exec: tests
    /// that spawn hold this lock from writing the script to spawning.
    static SPAWN: Mutex<()> = Mutex::new(());

    #[test]
    fn missing_qemu_names_the_package() {
        let _g = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
        let mut c = VmConfig::new("k", "i");
        c.qemu = "/nonexistent/qemu-system-x86_64".into();
        let e = Vm::start(&c).unwrap_err();
        assert!(matches!(e, QemuError::NotFound(_)));
        assert!(e.to_string().contains("cargo xtask setup"));
    }

    /// The harness on a fake "VM" (a shell script standing in for QEMU).
    fn fake(script: &str, timeout: Duration) -> Vm {
        let _g = SPAWN.lock().unwrap_or_else(|e| e.into_inner());
        let d = std::env::temp_dir().join(format!("stele-qemu-fake-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let name = format!("q{n}.sh");
        let p = d.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut c = VmConfig::new("k", "i");
        c.qemu = p.display().to_string();
        c.timeout = timeout;
        Vm::start(&c).unwrap()
    }

    #[test]
    fn expect_in_order_and_exit() {
        let mut vm = fake(
            "echo 'Linux version 6'; echo 'a marker one'; echo 'Linux version 6'; echo 'b two'; exit 3",
            Duration::from_secs(30),
        );
        assert_eq!(
            vm.expect("marker", Duration::from_secs(10)).unwrap(),
            "a marker one"
        );
        assert_eq!(vm.expect("two", Duration::from_secs(10)).unwrap(), "b two");
        // "marker" is before the last match: not found again.
        assert!(matches!(
            vm.expect("marker", Duration::from_secs(10)),
            Err(QemuError::Exited { .. })
        ));
        assert_eq!(
            vm.wait_exit(Duration::from_secs(10)).unwrap().code(),
            Some(3)
        );
        assert_eq!(vm.boot_count(), 2);
        assert_eq!(vm.count("two"), 1);
        assert_eq!(vm.count(""), 0);
    }

    #[test]
    fn expect_returns_whole_line() {
        let mut vm = fake(
            "printf 'LOADED:'; sleep 1; echo ' 19'; sleep 30",
            Duration::from_secs(60),
        );
        assert_eq!(
            vm.expect("LOADED:", Duration::from_secs(10)).unwrap(),
            "LOADED: 19"
        );
        vm.kill().unwrap();
    }

    #[test]
    fn timeout_and_kill() {
        let mut vm = fake("echo hello; sleep 30", Duration::from_secs(60));
        let e = vm.expect("never", Duration::from_millis(300)).unwrap_err();
        assert!(matches!(e, QemuError::Timeout { ref tail, .. } if tail.contains("hello")));
        assert!(matches!(
            vm.wait_exit(Duration::from_millis(100)),
            Err(QemuError::StillRunning { .. })
        ));
        let t = Instant::now();
        vm.kill().unwrap();
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn watchdog_enforces_hard_timeout() {
        let mut vm = fake("sleep 30", Duration::from_millis(500));
        let t = Instant::now();
        let s = vm.wait_exit(Duration::from_secs(20)).unwrap();
        assert!(!s.success());
        assert!(t.elapsed() < Duration::from_secs(10));
    }
}

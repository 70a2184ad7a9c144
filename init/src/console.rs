//! Console log: every line goes to /dev/console and to the kernel log (/dev/kmsg).
//!
//! The console line is the stable, machine-readable one (`stele: ...`). The kernel log gets
//! a copy with a priority; when the console is open, that copy uses debug priority so the
//! kernel does not echo it to the console a second time.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Priority of a line (syslog levels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Error = 3,
    Warn = 4,
    Info = 6,
    Debug = 7,
}

#[derive(Debug)]
struct Sinks {
    console: Option<File>,
    kmsg: Option<File>,
}

static SINKS: Mutex<Sinks> = Mutex::new(Sinks {
    console: None,
    kmsg: None,
});
static DEBUG: AtomicBool = AtomicBool::new(false);

/// (Re)opens /dev/console and /dev/kmsg; call after /dev is mounted. Missing ones are skipped.
pub fn open() {
    let console = OpenOptions::new()
        .write(true)
        .custom_flags_noctty()
        .open("/dev/console")
        .ok();
    let kmsg = OpenOptions::new().write(true).open("/dev/kmsg").ok();
    if let Ok(mut s) = SINKS.lock() {
        s.console = console;
        s.kmsg = kmsg;
    }
}

/// Turns debug lines on (`stele.debug`).
pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

trait NoCtty {
    fn custom_flags_noctty(&mut self) -> &mut Self;
}
impl NoCtty for OpenOptions {
    fn custom_flags_noctty(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NOCTTY)
    }
}

/// Formats the kernel-log copy of a line: `<prio>stele: ...`.
pub fn kmsg_record(level: Level, console_ok: bool, msg: &str) -> String {
    let prio = if console_ok { Level::Debug } else { level };
    format!("<{}>stele: {}", prio as u8, msg)
}

/// Writes one line `stele: <msg>`.
pub fn log(level: Level, msg: &str) {
    if level == Level::Debug && !DEBUG.load(Ordering::Relaxed) {
        return;
    }
    let line = format!("stele: {msg}\n");
    // try_lock: a panic inside `log` must not deadlock the panic hook's own line.
    let Ok(mut s) = SINKS.try_lock() else {
        let _ = std::io::stderr().write_all(line.as_bytes());
        return;
    };
    let console_ok = match s.console.as_mut() {
        Some(c) => c.write_all(line.as_bytes()).is_ok(),
        None => {
            // Before /dev is mounted: fd 2 is the console the kernel opened for us.
            std::io::stderr().write_all(line.as_bytes()).is_ok()
        }
    };
    if let Some(k) = s.kmsg.as_mut() {
        let _ = k.write_all(kmsg_record(level, console_ok, msg).as_bytes());
    }
}

/// `stele: ...` at info level.
#[macro_export]
macro_rules! info {
    ($($t:tt)*) => { $crate::console::log($crate::console::Level::Info, &format!($($t)*)) };
}
/// `stele: warning: ...`.
#[macro_export]
macro_rules! warn {
    ($($t:tt)*) => { $crate::console::log($crate::console::Level::Warn, &format!("warning: {}", format!($($t)*))) };
}
/// `stele: ...` at error level.
#[macro_export]
macro_rules! error {
    ($($t:tt)*) => { $crate::console::log($crate::console::Level::Error, &format!($($t)*)) };
}
/// `stele: ...` only with `stele.debug`.
#[macro_export]
macro_rules! debug {
    ($($t:tt)*) => { $crate::console::log($crate::console::Level::Debug, &format!($($t)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmsg_priority_avoids_double_console() {
        assert_eq!(kmsg_record(Level::Error, true, "x"), "<7>stele: x");
        assert_eq!(kmsg_record(Level::Error, false, "x"), "<3>stele: x");
        assert_eq!(kmsg_record(Level::Info, false, "ready"), "<6>stele: ready");
    }
}

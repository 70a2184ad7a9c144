//! The hardware watchdog (boot.toml `watchdog_secs`, docs/BOOT.md "The watchdog"). Each
//! stage arms it right after the modules load; every boot phase, the waits of a failing
//! boot and the supervisor's loop keep it alive (also after the slot is marked good: a
//! hung PID 1 resets the machine). It stays running across kexec (the driver is loaded
//! with `nowayout=1`, which on the i6300esb also sets the hardware lock bit that keeps the
//! next kernel's probe from stopping it) and across an `exec` hand-over (closed without
//! the magic `V`), so a slot whose kernel or init hangs before taking it over costs a try.
//!
//! PID 1 is single-threaded: the one device lives in a static, for every step to ping.

use std::fs::File;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sys::watchdog as wd;
use crate::{debug, info, warn};

/// The device nodes tried, in order.
pub const DEVICES: [&str; 2] = ["/dev/watchdog0", "/dev/watchdog"];

#[derive(Debug)]
struct Dog {
    file: File,
    path: &'static str,
    timeout: u64,
}

static DOG: Mutex<Option<Dog>> = Mutex::new(None);

/// What the armed watchdog's boot status said: 0 not known, 1 no reset, 2 a watchdog reset.
static LAST_RESET: AtomicU8 = AtomicU8::new(0);

/// Whether the previous boot ended in a watchdog reset, as the armed watchdog's driver read
/// it from the hardware (`WDIOF_CARDRESET`); `None` without an armed watchdog or when the
/// driver cannot tell. The i6300esb keeps the flag across a reset and its probe clears it,
/// so only the first kernel after the reset (stage 1) sees it.
pub fn previous_reset() -> Option<bool> {
    match LAST_RESET.load(Ordering::Relaxed) {
        1 => Some(false),
        2 => Some(true),
        _ => None,
    }
}

fn with<T>(f: impl FnOnce(&mut Option<Dog>) -> T) -> T {
    let mut g = DOG.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut g)
}

/// How often to ping with a `timeout`-second watchdog: half of it, at least 1 s. Pure.
pub fn ping_interval(timeout: u64) -> Duration {
    Duration::from_secs((timeout / 2).max(1))
}

/// Opens the first watchdog device, sets `secs` and pings it; logs
/// `watchdog <dev> armed: timeout <n>s`, or a warning and boots on without it (a machine
/// without the device or its driver is the system's fault, not a slot's). 0: nothing.
pub fn arm(secs: u64) {
    if secs == 0 {
        return;
    }
    let mut last = None;
    for path in DEVICES {
        let armed = wd::open(path).and_then(|file| {
            let timeout = wd::set_timeout(&file, path, secs)?;
            wd::keepalive(&file, path)?;
            Ok(Dog {
                file,
                path,
                timeout,
            })
        });
        match armed {
            Ok(dog) => {
                info!("watchdog {path} armed: timeout {}s", dog.timeout);
                match wd::boot_status(&dog.file, path) {
                    Ok(flags) => {
                        let reset = flags & wd::WDIOF_CARDRESET != 0;
                        LAST_RESET.store(if reset { 2 } else { 1 }, Ordering::Relaxed);
                    }
                    Err(e) => debug!("{e}: the watchdog cannot say how the last boot ended"),
                }
                with(|d| *d = Some(dog));
                return;
            }
            Err(e) => last = Some(e),
        }
    }
    if let Some(e) = last {
        warn!(
            "watchdog_secs = {secs} but no watchdog could be armed: {e} (is its driver among the initramfs modules, `stele initramfs --module <driver>`?); booting without it"
        );
    }
}

/// Keeps the watchdog alive (nothing without one).
pub fn ping() {
    with(|d| {
        if let Some(dog) = d {
            if let Err(e) = wd::keepalive(&dog.file, dog.path) {
                warn!("{e}");
            }
        }
    })
}

/// How often [`ping`] must run; `None` without a watchdog.
pub fn interval() -> Option<Duration> {
    with(|d| d.as_ref().map(|dog| ping_interval(dog.timeout)))
}

/// Sleeps `total`, pinging on the way.
pub fn sleep(total: Duration) {
    let end = Instant::now() + total;
    loop {
        ping();
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(interval().unwrap_or(left)));
    }
}

/// For `exec`: pings one last time and closes the device without the magic `V`, so it
/// keeps running and the image's init (systemd's `RuntimeWatchdogSec`) must open it
/// within the timeout. Logs `watchdog <dev> handed over: ...`.
pub fn hand_over() {
    if let Some(dog) = with(Option::take) {
        let _ = wd::keepalive(&dog.file, dog.path);
        info!(
            "watchdog {} handed over running: the image's init must open it within {}s",
            dog.path, dog.timeout
        );
        drop(dog.file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_at_half_the_timeout() {
        assert_eq!(ping_interval(60), Duration::from_secs(30));
        assert_eq!(ping_interval(3), Duration::from_secs(1));
        assert_eq!(ping_interval(1), Duration::from_secs(1));
    }

    #[test]
    fn without_a_watchdog_nothing_happens() {
        arm(0);
        assert_eq!(interval(), None);
        ping();
        let t = Instant::now();
        sleep(Duration::from_millis(20));
        assert!(t.elapsed() >= Duration::from_millis(20));
        hand_over();
    }
}

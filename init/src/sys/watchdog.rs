//! The hardware watchdog device (linux/watchdog.h): open (which starts it), set its
//! timeout, keep it alive, read why the last boot ended. Closing it without the magic `V`
//! leaves it running.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use crate::{Error, Result};

nix::ioctl_read!(wdioc_getbootstatus, b'W', 2, libc::c_int);
nix::ioctl_read!(wdioc_keepalive, b'W', 5, libc::c_int);

/// `WDIOF_CARDRESET` (linux/watchdog.h): the card reset the machine (the previous boot
/// ended in a watchdog reset).
pub const WDIOF_CARDRESET: i32 = 0x0020;
nix::ioctl_readwrite!(wdioc_settimeout, b'W', 6, libc::c_int);

/// Opens the watchdog device at `path` (the kernel starts the timer on open).
pub fn open(path: &str) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io("open", path, e))
}

/// WDIOC_SETTIMEOUT: returns the timeout the driver chose (it may round).
pub fn set_timeout(f: &File, path: &str, secs: u64) -> Result<u64> {
    let mut t = libc::c_int::try_from(secs).unwrap_or(libc::c_int::MAX);
    // SAFETY: WDIOC_SETTIMEOUT reads and writes one int through the pointer, which points
    // to a live local; the fd is the open watchdog device.
    unsafe { wdioc_settimeout(f.as_raw_fd(), &mut t) }
        .map_err(|e| Error::sys("WDIOC_SETTIMEOUT", path, e))?;
    Ok(u64::try_from(t).unwrap_or(0))
}

/// WDIOC_KEEPALIVE: restarts the timer.
pub fn keepalive(f: &File, path: &str) -> Result<()> {
    let mut unused: libc::c_int = 0;
    // SAFETY: WDIOC_KEEPALIVE takes (and ignores) an int pointer, which points to a live
    // local; the fd is the open watchdog device.
    unsafe { wdioc_keepalive(f.as_raw_fd(), &mut unused) }
        .map_err(|e| Error::sys("WDIOC_KEEPALIVE", path, e))?;
    Ok(())
}

/// WDIOC_GETBOOTSTATUS: the driver's `bootstatus` flags (what its probe read from the
/// hardware: [`WDIOF_CARDRESET`] after a watchdog reset, where the hardware keeps it).
pub fn boot_status(f: &File, path: &str) -> Result<i32> {
    let mut flags: libc::c_int = 0;
    // SAFETY: WDIOC_GETBOOTSTATUS writes one int through the pointer, which points to a
    // live local; the fd is the open watchdog device.
    unsafe { wdioc_getbootstatus(f.as_raw_fd(), &mut flags) }
        .map_err(|e| Error::sys("WDIOC_GETBOOTSTATUS", path, e))?;
    Ok(flags)
}

//! Handing over to the slot's own kernel: opening its files inside the verified root,
//! `kexec_file_load(2)` and `reboot(LINUX_REBOOT_CMD_KEXEC)`. No kexec-tools.

use std::ffi::CStr;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};

use crate::{Error, Result};

/// Opens `path` (absolute, as the manifest names it) read-only inside the directory `root`,
/// resolving every symlink as if `root` were `/` (openat2 `RESOLVE_IN_ROOT`): an absolute
/// symlink of the image points into the image, never into the initramfs.
pub fn open_in_root(root: &File, path: &str) -> Result<File> {
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = nix::fcntl::openat2(root.as_raw_fd(), path, how)
        .map_err(|e| Error::sys("openat2 (in the slot's root)", path, e))?;
    // SAFETY: openat2 just returned this descriptor; nothing else owns or closes it, so the
    // File becomes its only owner.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Loads `kernel` with `initrd` and `cmdline` for the next `reboot(KEXEC)`. Under lockdown
/// (Secure Boot) the kernel checks the image's signature against its trusted keys and the
/// firmware's db here. Returns the errno on failure (the caller judges it).
pub fn kexec_file_load(
    kernel: &File,
    initrd: &File,
    cmdline: &CStr,
) -> std::result::Result<(), Errno> {
    let len = cmdline.to_bytes_with_nul().len();
    // SAFETY: both descriptors are open files owned by the caller for the whole call;
    // `cmdline` points to `len` readable bytes ending in its NUL (the kernel wants the
    // length with the NUL); flags 0. The kernel reads these and writes no user memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            kernel.as_raw_fd(),
            initrd.as_raw_fd(),
            len,
            cmdline.as_ptr(),
            0 as libc::c_ulong,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

/// Reboots into the kernel loaded by [`kexec_file_load`]. Returns only on failure.
pub fn reboot_kexec() -> Error {
    match nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_KEXEC) {
        Err(errno) => Error::KexecReboot { errno },
        Ok(never) => match never {},
    }
}

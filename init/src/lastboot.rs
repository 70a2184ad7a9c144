//! Why the previous boot ended (docs/BOOT.md "Why the last boot ended"), where the platform
//! keeps it, recorded by stage 1 before it chooses a slot: the armed watchdog's boot status
//! (a watchdog reset) and the kernel's dumps in pstore (a panic, an oops, a dm-verity
//! corruption restart where the backend keeps restart dumps). pstore is mounted at a
//! private mount point of the initramfs, the dumps are read (their last
//! [`READ_MAX`] bytes each), recorded as one event and removed, so the next boot does not
//! record them again and the backend (RAM, firmware variables) does not fill up. Nothing
//! here can stop a boot: a failure is one console line.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use stele_device::runtime::state_file::StateFile;
use stele_verifier::recorder::pstore::{ending, parse_dump, parse_name, Dump, Name, READ_MAX};
use stele_verifier::recorder::{Kind, Origin};

use crate::{debug, flight, sys, warn, watchdog};

/// Where stele-init mounts pstore (in the initramfs, never seen by the slot).
pub const PSTORE_MOUNT: &str = "/stele-pstore";
/// The pstore filesystem's magic (statfs), to tell it from the directory underneath.
const PSTORE_MAGIC: i64 = 0x6165_676C;

/// Records a watchdog reset and the pstore dumps of the previous boot, each with a console
/// line.
pub fn record(state: &mut StateFile<File>, origin: Origin) {
    if watchdog::previous_reset() == Some(true) {
        warn!("the previous boot ended in a watchdog reset");
        flight::record(
            state,
            &stele_device::runtime::flight::event(origin, Kind::WatchdogReset),
        );
    }
    let dumps = match read_pstore() {
        Ok(d) => d,
        Err(e) => {
            warn!("pstore: {e}; the previous boot's kernel dumps are not recorded");
            return;
        }
    };
    if let Some(end) = ending(&dumps) {
        let first = end.text.lines().next().unwrap_or("");
        // The dump is the previous kernel's text: control characters are escaped.
        let first = stele_verifier::exit::error_line(first);
        warn!("the previous boot {}: {first}", what(end.kind));
        let mut e = stele_device::runtime::flight::event(origin, end.kind);
        e.text = end.text;
        e.count = end.dumps;
        flight::record(state, &e);
    }
}

/// The console's words for `kind` (an oops need not have ended the boot).
fn what(kind: Kind) -> &'static str {
    match kind {
        Kind::Panic => "ended in a kernel panic",
        Kind::Oops => "had a kernel oops",
        _ => "ended in a dm-verity corruption restart",
    }
}

/// The most dump files read in one boot (more are removed unread).
const FILES_MAX: usize = 64;

/// Mounts pstore, reads and removes its dumps, unmounts it.
fn read_pstore() -> crate::Result<Vec<(Name, Dump)>> {
    sys::mkdir_p(PSTORE_MOUNT)?;
    let flags: u64 = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    match sys::mount("pstore", PSTORE_MOUNT, "pstore", flags, "") {
        Ok(()) => {}
        // A kernel without pstore: nothing to read, nothing to say.
        Err(crate::Error::Sys {
            errno: nix::errno::Errno::ENODEV,
            ..
        }) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    }
    let dumps = read_dumps();
    if let Err(e) = sys::umount(PSTORE_MOUNT) {
        debug!("{e}");
    }
    dumps
}

/// Reads and removes the dumps of the mounted pstore. Errors of single files are debug
/// lines (the dump is skipped, and removed all the same).
fn read_dumps() -> crate::Result<Vec<(Name, Dump)>> {
    if sys::fs_magic(PSTORE_MOUNT)? != PSTORE_MAGIC {
        return Err(crate::Error::io(
            "mount pstore",
            PSTORE_MOUNT,
            std::io::Error::other("not a pstore filesystem"),
        ));
    }
    let mut out = Vec::new();
    let mut read = 0;
    let entries =
        std::fs::read_dir(PSTORE_MOUNT).map_err(|e| crate::Error::io("read", PSTORE_MOUNT, e))?;
    for ent in entries.flatten() {
        let file = ent.file_name();
        let Some(name) = file.to_str().and_then(parse_name) else {
            continue;
        };
        if name.kind != "dmesg" {
            continue;
        }
        let path = ent.path();
        read += 1;
        if read > FILES_MAX {
            debug!(
                "pstore: {}: more than {FILES_MAX} dumps: not read",
                path.display()
            );
        } else {
            match read_tail(&path) {
                Ok(bytes) => match parse_dump(&bytes) {
                    Some(d) if !name.compressed => out.push((name, d)),
                    _ => debug!("pstore: {}: not a readable dump", path.display()),
                },
                Err(e) => debug!("pstore: {}: {e}", path.display()),
            }
        }
        // Removing it erases the record in the backend (ramoops' RAM, the EFI variable).
        if let Err(e) = std::fs::remove_file(&path) {
            warn!("pstore: remove {}: {e}", path.display());
        }
    }
    Ok(out)
}

/// `path`, or when it is longer than [`READ_MAX`], its first line (the dump's header) and
/// its last [`READ_MAX`] bytes (the newest lines, the first of them cut).
fn read_tail(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut buf = Vec::new();
    if len > READ_MAX {
        (&mut f).take(HEADER_MAX).read_to_end(&mut buf)?;
        buf.truncate(buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len()));
        buf.push(b'\n');
        f.seek(SeekFrom::Start(len - READ_MAX))?;
    }
    f.take(READ_MAX).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The longest dump header read (`Emergency#<n> Part<m>`).
const HEADER_MAX: u64 = 64;

//! Every system call of stele-init, and the only `unsafe` of the crate.
//!
//! Each wrapper is one line of intent, the call, and an [`Error`] that names the operation
//! and the path. Safe nix calls are wrapped here too so the rest of the crate reads as policy.

pub mod blk;
pub mod dm;
pub mod kexec;
pub mod watchdog;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::stat::{Mode, SFlag};
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::{Gid, Pid, Uid};
use stele_verifier::config::Credentials;

use crate::{Error, Result};

fn opt(s: &str) -> Option<&str> {
    if s.is_empty() {
        None
    } else {
        Some(s)
    }
}

/// mount(2); empty `source`, `fstype` or `data` are passed as NULL.
pub fn mount(source: &str, target: &str, fstype: &str, flags: u64, data: &str) -> Result<()> {
    nix::mount::mount(
        opt(source),
        target,
        opt(fstype),
        MsFlags::from_bits_retain(flags as libc::c_ulong),
        opt(data),
    )
    .map_err(|e| Error::sys("mount", format!("{target} ({fstype})"), e))
}

/// Moves the mount at `from` to `to` (mount --move).
pub fn move_mount(from: &str, to: &str) -> Result<()> {
    nix::mount::mount(Some(from), to, None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| Error::sys("mount --move", format!("{from} -> {to}"), e))
}

/// Unmounts `target`.
pub fn umount(target: &str) -> Result<()> {
    nix::mount::umount2(target, MntFlags::empty()).map_err(|e| Error::sys("umount", target, e))
}

/// Remounts `target` read-only.
pub fn remount_ro(target: &str) -> Result<()> {
    nix::mount::mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|e| Error::sys("remount read-only", target, e))
}

/// mkdir -p with mode 0755.
pub fn mkdir_p(path: &str) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(|e| Error::io("mkdir", path, e))
}

/// `MODULE_INIT_COMPRESSED_FILE` (linux/module.h): the kernel decompresses the file
/// itself (CONFIG_MODULE_DECOMPRESS, checked by `stele initramfs`); nix does not name it.
const MODULE_INIT_COMPRESSED_FILE: u32 = 4;

/// Loads a kernel module from a file with `params` (`name=value ...`, may be empty);
/// `compressed`: the file is compressed and the kernel decompresses it.
/// Ok(false) when it was already loaded (EEXIST).
pub fn finit_module(path: &str, params: &std::ffi::CStr, compressed: bool) -> Result<bool> {
    let f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let flags = if compressed {
        nix::kmod::ModuleInitFlags::from_bits_retain(MODULE_INIT_COMPRESSED_FILE)
    } else {
        nix::kmod::ModuleInitFlags::empty()
    };
    match nix::kmod::finit_module(&f, params, flags) {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST) => Ok(false),
        Err(e) => Err(Error::sys("finit_module", path, e)),
    }
}

nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);

/// Size in bytes of an open block device (BLKGETSIZE64).
pub fn block_size(f: &File, path: &str) -> Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes exactly one u64 through the pointer, which points to a live
    // local; the fd is a valid open file.
    unsafe { blkgetsize64(f.as_raw_fd(), &mut size) }
        .map_err(|e| Error::sys("BLKGETSIZE64", path, e))?;
    Ok(size)
}

/// sync(2).
pub fn sync() {
    nix::unistd::sync();
}

/// Creates a block device node (EEXIST is fine).
pub fn mknod_block(path: &str, major: u32, minor: u32) -> Result<()> {
    let dev = nix::sys::stat::makedev(u64::from(major), u64::from(minor));
    match nix::sys::stat::mknod(path, SFlag::S_IFBLK, Mode::from_bits_truncate(0o600), dev) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(Error::sys("mknod", path, e)),
    }
}

/// The filesystem magic of the filesystem holding `path`.
pub fn fs_magic(path: &str) -> Result<i64> {
    let s = nix::sys::statfs::statfs(path).map_err(|e| Error::sys("statfs", path, e))?;
    #[allow(clippy::unnecessary_cast, clippy::cast_possible_wrap)]
    Ok(s.filesystem_type().0 as i64)
}

/// chdir(2).
pub fn chdir(path: &str) -> Result<()> {
    nix::unistd::chdir(path).map_err(|e| Error::sys("chdir", path, e))
}

/// chroot(2).
pub fn chroot(path: &str) -> Result<()> {
    nix::unistd::chroot(path).map_err(|e| Error::sys("chroot", path, e))
}

/// Ctrl-Alt-Del sends SIGINT to PID 1 instead of rebooting at once.
pub fn cad_to_signal() {
    let _ = nix::sys::reboot::set_cad_enabled(false);
}

/// The kinds of machine end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Halt {
    Reboot,
    Poweroff,
}

/// Ends the machine: reboot(2) from a forked child (busybox style), so PID 1 never exits.
pub fn reboot(how: Halt) -> ! {
    let mode = match how {
        Halt::Reboot => nix::sys::reboot::RebootMode::RB_AUTOBOOT,
        Halt::Poweroff => nix::sys::reboot::RebootMode::RB_POWER_OFF,
    };
    // SAFETY: we are single-threaded; the child only calls reboot(2) and _exit, both
    // async-signal-safe, and touches no locks or allocator state.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            let _ = nix::sys::reboot::reboot(mode);
            // SAFETY: _exit never returns and is async-signal-safe.
            unsafe { libc::_exit(1) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            let _ = nix::sys::wait::waitpid(child, None);
        }
        Err(_) => {
            let _ = nix::sys::reboot::reboot(mode);
        }
    }
    // reboot(2) normally does not return; if it did, keep PID 1 alive.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Blocks every signal in this thread (PID 1 takes them with [`wait_signal`]).
pub fn block_all_signals() -> Result<()> {
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), None)
        .map_err(|e| Error::sys("sigprocmask", "all signals", e))
}

/// Waits up to `timeout` for one blocked signal.
pub fn wait_signal(timeout: Duration) -> Option<Signal> {
    let set = SigSet::all();
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(i32::try_from(timeout.subsec_nanos()).unwrap_or(0)),
    };
    // SAFETY: `set` and `ts` are valid live values; a NULL siginfo pointer is allowed.
    let r = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
    if r <= 0 {
        return None;
    }
    Signal::try_from(r).ok()
}

/// kill(-1, sig): every process but PID 1 and kernel threads.
pub fn kill_all(sig: Signal) -> bool {
    nix::sys::signal::kill(Pid::from_raw(-1), sig).is_ok()
}

/// Result of one non-blocking reap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reaped {
    /// A child ended: pid and status (exit code, or 128+N for signal N).
    Child(i32, i32),
    /// Children exist but none has ended.
    Running,
    /// No children at all.
    None,
}

/// waitpid(-1, WNOHANG) once.
pub fn reap_one() -> Reaped {
    match nix::sys::wait::waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(pid, code)) => Reaped::Child(pid.as_raw(), code),
        Ok(WaitStatus::Signaled(pid, sig, _)) => Reaped::Child(pid.as_raw(), 128 + sig as i32),
        Ok(WaitStatus::StillAlive) => Reaped::Running,
        Ok(_) => Reaped::Running,
        Err(Errno::ECHILD) => Reaped::None,
        Err(_) => Reaped::Running,
    }
}

/// Reaps every ended child (zombie), services or not.
pub fn reap_all() -> Vec<(i32, i32)> {
    let mut out = Vec::new();
    while let Reaped::Child(pid, status) = reap_one() {
        out.push((pid, status));
    }
    out
}

/// Starts a process in its own session with an empty signal mask and default handlers
/// (PID 1 installs no handlers and ignores nothing; it only blocks, so the mask is cleared
/// here explicitly), switched to `creds` when given: exactly its supplementary groups,
/// its group, its user, then no_new_privs. Returns its pid.
pub fn spawn(cmd: &mut Command, creds: Option<&Credentials>) -> std::io::Result<i32> {
    let ids = creds.map(|c| {
        let groups: Vec<Gid> = c.groups.iter().map(|&g| Gid::from_raw(g)).collect();
        (
            groups,
            Gid::from_raw(c.gid),
            Uid::from_raw(c.uid),
            c.no_new_privs,
        )
    });
    // SAFETY: the closure runs in the forked child before exec and only calls setsid(2),
    // sigprocmask(2), setgroups(2), setgid(2), setuid(2) and prctl(2), all
    // async-signal-safe (PID 1 is single-threaded: no other thread's setxid to join); it
    // reads `ids`, built before the fork, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .map_err(std::io::Error::from)?;
            if let Some((groups, gid, uid, no_new_privs)) = &ids {
                nix::unistd::setgroups(groups).map_err(std::io::Error::from)?;
                nix::unistd::setgid(*gid).map_err(std::io::Error::from)?;
                nix::unistd::setuid(*uid).map_err(std::io::Error::from)?;
                if *no_new_privs {
                    nix::sys::prctl::set_no_new_privs().map_err(std::io::Error::from)?;
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    i32::try_from(child.id()).map_err(|_| std::io::Error::other("pid out of range"))
}

/// Removes every environment variable: the kernel gives PID 1 each `key=value` word of its
/// command line it does not know (RUST_MIN_STACK=..., LD_PRELOAD=...), and PID 1 uses
/// none. Call it first, before any thread exists.
pub fn clear_environment() {
    for (key, _) in std::env::vars_os() {
        // SAFETY (single-threaded): called first in main, before any thread is spawned,
        // so nothing reads the environment concurrently.
        std::env::remove_var(key);
    }
}

/// Replaces PID 1 with `argv` (the image's own init). Returns only on failure.
pub fn exec(argv: &[String]) -> std::io::Error {
    let Some((prog, args)) = argv.split_first() else {
        return std::io::Error::other("empty command");
    };
    // The image's init starts as the kernel would start it: nothing blocked.
    if let Err(e) =
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
    {
        return std::io::Error::from(e);
    }
    // A clean environment: the kernel turns unknown `key=value` words of its command line
    // into PID 1's environment (LD_PRELOAD=... would reach a dynamic init).
    Command::new(prog)
        .args(args)
        .env_clear()
        .env("PATH", crate::cmdline::DEFAULT_PATH)
        .exec()
}

/// Deletes everything under `dir` that is on the same filesystem (device) as `dir`,
/// without crossing mount points. Errors are ignored: this frees memory, nothing more.
pub fn delete_same_fs(dir: &Path, dev: u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for ent in rd.flatten() {
        let p = ent.path();
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if md.dev() != dev {
            continue;
        }
        if md.is_dir() {
            delete_same_fs(&p, dev);
            let _ = std::fs::remove_dir(&p);
        } else {
            let _ = std::fs::remove_file(&p);
        }
    }
}

/// Device id of the filesystem holding `path`.
pub fn dev_of(path: &str) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .map(|m| m.dev())
        .map_err(|e| Error::io("stat", path, e))
}

/// Marks this process as a subreaper (host tests only need this; PID 1 is one anyway).
pub fn set_child_subreaper() -> Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| Error::sys("prctl(PR_SET_CHILD_SUBREAPER)", "self", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawned_children_start_clean_in_their_own_session() {
        let dir = std::env::temp_dir().join(format!("stele-init-spawn-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let mut blocked = SigSet::empty();
        blocked.add(Signal::SIGUSR1);
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&blocked), None).unwrap();
        let script = format!(
            "{{ echo $$; cut -d' ' -f6 /proc/self/stat; grep SigBlk /proc/self/status; }} > {0}.tmp && mv {0}.tmp {0}",
            dir.display()
        );
        let pid = spawn(Command::new("/bin/sh").args(["-c", &script]), None).expect("run /bin/sh");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let text = loop {
            if let Ok(t) = std::fs::read_to_string(&dir) {
                break t;
            }
            assert!(std::time::Instant::now() < deadline, "child wrote nothing");
            std::thread::sleep(Duration::from_millis(20));
        };
        let _ = std::fs::remove_file(&dir);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], pid.to_string());
        assert_eq!(lines[1], pid.to_string(), "the child leads its own session");
        assert_eq!(
            lines[2], "SigBlk:\t0000000000000000",
            "the child's mask is empty"
        );
    }

    /// A service with credentials runs with exactly those ids and groups and, asked for,
    /// no_new_privs; a plain one keeps PID 1's.
    #[test]
    fn spawned_children_take_their_credentials() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test switches users: run it as root (as `cargo xtask test` does in CI)"
        );
        let dir = tempfile::tempdir().unwrap();
        let run = |creds: Option<&Credentials>, name: &str| {
            let out = dir.path().join(name);
            let script = format!(
                "{{ id -u; id -g; id -G; grep NoNewPrivs /proc/self/status; }} > {0}.tmp && mv {0}.tmp {0}",
                out.display()
            );
            spawn(Command::new("/bin/sh").args(["-c", &script]), creds).expect("run /bin/sh");
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(t) = std::fs::read_to_string(&out) {
                    break t;
                }
                assert!(std::time::Instant::now() < deadline, "child wrote nothing");
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        // The output file is written as the service's user: let it.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let creds = Credentials {
            uid: 65534,
            gid: 65533,
            groups: vec![4, 27],
            no_new_privs: true,
        };
        let lines: Vec<String> = run(Some(&creds), "as-nobody")
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(lines[0], "65534");
        assert_eq!(lines[1], "65533");
        let mut groups: Vec<&str> = lines[2].split(' ').collect();
        groups.sort_unstable();
        assert_eq!(groups, ["27", "4", "65533"]);
        assert_eq!(lines[3], "NoNewPrivs:\t1");
        let root = run(None, "as-root");
        assert!(root.starts_with("0\n0\n"), "{root}");
        assert!(root.ends_with("NoNewPrivs:\t0\n"), "{root}");
    }

    #[test]
    fn reaps_orphaned_grandchildren_as_subreaper() {
        set_child_subreaper().unwrap();
        // sh starts a background sleep and exits at once: the sleep is orphaned and
        // re-parented to us (the subreaper); only reap_all can collect it.
        let out = Command::new("/bin/sh")
            .args(["-c", "sleep 0.2 & echo $!"])
            .output()
            .expect("run /bin/sh (needed by this test)");
        let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut got = None;
        while got.is_none() && std::time::Instant::now() < deadline {
            got = reap_all().into_iter().find(|&(p, _)| p == pid);
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(got, Some((pid, 0)), "orphan {pid} was not reaped");
        // The reaped orphan no longer exists.
        assert!(nix::sys::signal::kill(Pid::from_raw(pid), None).is_err());
    }
}

//! Temporary files and child processes that must not outlive a failed or interrupted build.
//!
//! Every temporary path is registered here before it is created and forgotten when it is
//! renamed into place or removed. [`install`] blocks SIGINT, SIGTERM and SIGHUP in the
//! calling thread (and so in every thread started after it) and starts one thread that
//! waits for them: on a signal it stops the registered child processes (each runs in its
//! own process group), removes the registered paths and calls the caller's hook, which
//! prints and exits. A SIGKILL or a power cut still leaves the temporary files behind;
//! their names say which process made them (docs/CLI.md, "Temporary files").

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, SigSet, Signal};
use nix::unistd::Pid;

/// How long a stopped child gets to exit before it is killed.
const GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, Default)]
struct State {
    next: u64,
    paths: Vec<(u64, PathBuf)>,
    children: Vec<u32>,
    /// A signal is being handled: nothing new may start, the process is about to exit.
    exiting: bool,
}

fn state() -> MutexGuard<'static, State> {
    static STATE: Mutex<State> = Mutex::new(State {
        next: 0,
        paths: Vec::new(),
        children: Vec::new(),
        exiting: false,
    });
    // A panic while the lock was held leaves consistent data (plain pushes and removals).
    STATE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Blocks forever: the signal thread is removing files and will end the process.
fn park_forever() -> ! {
    loop {
        std::thread::park();
    }
}

/// Holds the lock, or never returns once a signal is being handled.
fn live_state() -> MutexGuard<'static, State> {
    let s = state();
    if s.exiting {
        drop(s);
        park_forever();
    }
    s
}

/// A registered temporary path (a file, or a directory removed with its contents).
#[derive(Debug)]
pub struct TempPath {
    id: u64,
    path: PathBuf,
}

impl TempPath {
    /// Registers `path` (call before creating it).
    pub fn register(path: PathBuf) -> TempPath {
        let mut s = live_state();
        s.next += 1;
        let id = s.next;
        s.paths.push((id, path.clone()));
        TempPath { id, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` (e.g. a rename into place) and forgets the path, atomically with respect
    /// to the signal thread: the path is either still registered or already moved.
    pub fn keep<T>(self, f: impl FnOnce(&Path) -> T) -> T {
        let mut s = live_state();
        let out = f(&self.path);
        s.paths.retain(|(id, _)| *id != self.id);
        drop(s);
        std::mem::forget(self);
        out
    }
}

impl Drop for TempPath {
    /// Removes the path (file or directory tree) and forgets it.
    fn drop(&mut self) {
        let mut s = state();
        remove_path(&self.path);
        s.paths.retain(|(id, _)| *id != self.id);
    }
}

/// Waits forever once a signal is being handled (its clean-up holds the state until the
/// process ends): a loop that creates files under a registered path calls it between
/// files, so that it stops instead of racing the removal of that path.
pub fn checkpoint() {
    drop(live_state());
}

/// [`remove_path`] again until the path is gone (a thread that was creating a file in it
/// when the removal began may add one more entry), for at most a second.
fn remove_until_gone(path: &Path) {
    for _ in 0..100 {
        remove_path(path);
        if path.symlink_metadata().is_err() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Removes a file or a whole directory tree, making directories writable first where a
/// restrictive mode (copied from an archive) stands in the way.
pub fn remove_path(path: &Path) {
    match path.symlink_metadata() {
        Ok(m) if m.is_dir() => {
            if std::fs::remove_dir_all(path).is_err() {
                make_writable(path);
                let _ = std::fs::remove_dir_all(path);
            }
        }
        Ok(_) => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
}

fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                make_writable(&e.path());
            }
        }
    }
}

/// Starts `cmd` in a process group of its own, registered so that a signal stops it
/// before the temporary files are removed (a tool that is still running could create
/// its output file again). Use [`wait`] or [`wait_output`] to collect it.
pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let mut s = live_state();
    let child = cmd.process_group(0).spawn()?;
    s.children.push(child.id());
    Ok(child)
}

/// Whether [`install`] has run in this process (a signal would then stop the children
/// started by [`spawn`] before the process ends).
pub fn installed() -> bool {
    installed_flag().get().is_some()
}

fn installed_flag() -> &'static OnceLock<()> {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    &INSTALLED
}

/// Forgets a child started by [`spawn`] that the caller reaped itself.
pub fn forget(pid: u32) {
    forget_child(pid);
}

fn forget_child(pid: u32) {
    let mut s = state();
    s.children.retain(|p| *p != pid);
    if s.exiting {
        drop(s);
        park_forever();
    }
}

/// Waits for a child started by [`spawn`].
pub fn wait(mut child: Child) -> std::io::Result<ExitStatus> {
    let pid = child.id();
    let res = child.wait();
    forget_child(pid);
    res
}

/// Waits for a child started by [`spawn`], collecting its piped output.
pub fn wait_output(child: Child) -> std::io::Result<std::process::Output> {
    let pid = child.id();
    let res = child.wait_with_output();
    forget_child(pid);
    res
}

/// Never returns while a signal is being handled (the signal thread ends the process);
/// call before printing a final result, so an interrupted run prints exactly one line.
pub fn settle() {
    drop(live_state());
}

/// Is `pid` gone (exited: a zombie or reaped)?
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => true,
    }
}

/// Stops every registered child group (SIGINT, then SIGKILL after [`GRACE`]) and waits
/// until the direct children have exited.
fn stop_children(children: &[u32]) {
    let group = |pid: u32| Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
    for &pid in children {
        let _ = killpg(group(pid), Signal::SIGINT);
    }
    let start = Instant::now();
    let mut killed = false;
    while !children.iter().all(|&p| gone(p)) {
        if !killed && start.elapsed() > GRACE {
            for &pid in children {
                let _ = killpg(group(pid), Signal::SIGKILL);
            }
            killed = true;
        }
        if start.elapsed() > GRACE * 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The signals that end a build with clean-up.
fn signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set
}

/// Installs the signal thread (once per process). `on_signal` gets the signal number after
/// the clean-up and must end the process (it may print one line first). Call it from the
/// main thread before any other thread is started.
pub fn install(on_signal: fn(i32) -> !) -> nix::Result<()> {
    let flag = installed_flag();
    if flag.get().is_some() {
        return Ok(());
    }
    let set = signals();
    set.thread_block()?;
    flag.get_or_init(|| ());
    std::thread::Builder::new()
        .name("stele-signals".into())
        .spawn(move || {
            let sig = loop {
                if let Ok(s) = set.wait() {
                    break s;
                }
            };
            let mut s = state();
            s.exiting = true;
            stop_children(&s.children);
            for (_, p) in &s.paths {
                remove_until_gone(p);
            }
            s.paths.clear();
            // The lock stays held: nothing else starts or prints before the exit.
            on_signal(sig as i32)
        })
        .map(|_| ())
        .map_err(|_| nix::Error::EAGAIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_paths_are_removed_and_kept_paths_stay() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        let t = TempPath::register(f.clone());
        std::fs::write(&f, b"x").unwrap();
        drop(t);
        assert!(!f.exists());
        let d = dir.path().join("d");
        let t = TempPath::register(d.clone());
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/x"), b"x").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join("sub"), std::fs::Permissions::from_mode(0o500)).unwrap();
        drop(t);
        assert!(!d.exists());
        let k = dir.path().join("k");
        let t = TempPath::register(k.clone());
        std::fs::write(&k, b"x").unwrap();
        t.keep(|p| std::fs::rename(p, dir.path().join("kept")))
            .unwrap();
        assert!(dir.path().join("kept").exists());
        assert!(state()
            .paths
            .iter()
            .all(|(_, p)| !p.starts_with(dir.path())));
    }

    #[test]
    fn children_are_tracked_until_waited_for() {
        let child = spawn(Command::new("true").arg("x")).unwrap();
        let pid = child.id();
        assert!(state().children.contains(&pid));
        assert!(wait(child).unwrap().success());
        assert!(!state().children.contains(&pid));
        assert!(gone(pid));
    }
}

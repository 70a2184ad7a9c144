//! SIGINT or SIGTERM in the middle of `stele image build` stops the build tools, removes
//! every temporary file and staging directory, and exits 128 + N with one line; in the
//! middle of `stele qemu run` it stops the VM.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::fixture::env_path;
use crate::fixture::{Fixture, Image};
use crate::util::*;

/// A root tree with 256 MiB of non-zero data, so the build takes a while. No system.toml:
/// the builds are interrupted, nothing is ever run.
fn large_tree(root: &Path) {
    std::fs::create_dir_all(root.join("srv")).unwrap();
    let mut f = std::fs::File::create(root.join("srv/big")).unwrap();
    let block: Vec<u8> = (0..1u32 << 20)
        .map(|i| u8::try_from(i.wrapping_mul(2_654_435_761) >> 24).unwrap_or(1) | 1)
        .collect();
    for _ in 0..256 {
        f.write_all(&block).unwrap();
    }
    std::fs::write(root.join("srv/small"), "x").unwrap();
}

/// The names in `dir`.
fn names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Starts `build` (name big, version 1) into `out_dir/s.img` (optionally as nobody), waits
/// until its temporary files hold data, sends `sig`, and checks the exit, the line and
/// the directory.
fn interrupt(build: Image<'_>, out_dir: &Path, sig: Signal, as_nobody: bool) {
    let img = out_dir.join("s.img").display().to_string();
    let mut cmd = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_stele"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_stele"))
    };
    cmd.args(build.name("big").version("1").argv(&img))
        .env_remove("SOURCE_DATE_EPOCH")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    let start = Instant::now();
    // Temporary data on disk: the build is under way.
    loop {
        let busy = std::fs::read_dir(out_dir).unwrap().any(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            m.is_dir() || m.len() > 1 << 20
        });
        if busy {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the build never started writing: {:?}",
            names(out_dir)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
    kill(pid, sig).unwrap();
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(128 + sig as i32),
        "{sig}: the build was not interrupted (too fast?): {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with(&format!("stele: error: interrupted by {}", sig.as_str())),
        "{stderr}"
    );
    assert!(
        names(out_dir).is_empty(),
        "{sig}: left behind: {:?}",
        names(out_dir)
    );
}

#[test]
fn interrupted_builds_leave_no_temporary_files() {
    need_tool("mkfs.erofs");
    let fx = Fixture::new();
    let (k, _) = fx.keygen("a");
    let root = fx.path("root");
    large_tree(&root);
    let out = fx.path("out");
    std::fs::create_dir(&out).unwrap();
    let root = root.display().to_string();
    interrupt(fx.image(&root, &k), &out, Signal::SIGINT, false);
    interrupt(fx.image(&root, &k).fs("ext4"), &out, Signal::SIGTERM, false);
    // A tar build: the staging directory goes too, also when the unpacking runs under
    // fakeroot for an unprivileged user.
    let tar = fx.p("root.tar");
    let st = Command::new("tar")
        .args(["-C", &root, "-cf", &tar, "."])
        .status()
        .unwrap();
    assert!(st.success());
    interrupt(fx.tar_image(&tar, &k), &out, Signal::SIGINT, false);
    for p in [fx.dir(), out.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o644)).unwrap();
    need_tool("fakeroot");
    interrupt(fx.tar_image(&tar, &k), &out, Signal::SIGTERM, true);
}

/// The processes whose command line mentions `needle` (other than this test's own).
fn processes_with(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

/// SIGTERM to `stele qemu run` (a CI job cancelled) stops QEMU too: no VM is left holding
/// the disk's lock, and the fresh UEFI variable store is removed.
#[test]
fn an_interrupted_qemu_run_leaves_no_vm_behind() {
    let fx = Fixture::new();
    let disk = fx.p("held-by-qemu.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let kernel = env_path("STELE_KERNEL").display().to_string();
    let child = Command::new(env!("CARGO_BIN_EXE_stele"))
        .args(["qemu", "run", "--kernel", &kernel, "--initrd", &disk])
        .args([
            "--disk",
            &disk,
            "--expect",
            "never printed",
            "--timeout",
            "300",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while processes_with("held-by-qemu.img").len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "QEMU never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
    kill(pid, Signal::SIGTERM).unwrap();
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(128 + Signal::SIGTERM as i32),
        "{stderr}"
    );
    assert!(
        stderr.ends_with("stele: error: interrupted by SIGTERM: the VM was stopped\n"),
        "{stderr}"
    );
    let left = processes_with("held-by-qemu.img");
    assert!(left.is_empty(), "QEMU still running: {left:?}");
}

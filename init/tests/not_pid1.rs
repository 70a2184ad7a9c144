//! stele-init when it is not the kernel's init: outside PID 1, or PID 1 of a child PID
//! namespace (`unshare -p -f`), it refuses with one line (exit 2) before touching mounts
//! or rebooting; called as `stele update ...` there it runs the device command.
//!
//! The namespace tests run it under `unshare --pid --fork --mount` (root; util-linux),
//! in a private mount namespace, so that even a stele-init that did boot there could not
//! mount over the host's /proc, /dev or /run.

use std::process::{Command, Output};

fn stele_init() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stele-init"))
}

/// `unshare --pid --fork --mount --propagation private [extra] PROGRAM ARGS`, PROGRAM
/// being stele-init or a link to it.
fn in_child_namespace(extra: &[&str], program: &str, args: &[&str]) -> Output {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test makes PID namespaces: run it as root (as `cargo xtask test` does in CI)"
    );
    Command::new("unshare")
        .args(["--pid", "--fork", "--mount", "--propagation", "private"])
        .args(extra)
        .arg("--")
        .arg(program)
        .args(args)
        .output()
        .expect("unshare (util-linux: run `cargo xtask setup`)")
}

const INIT: &str = env!("CARGO_BIN_EXE_stele-init");

fn one_line(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    err
}

#[test]
fn refuses_to_run_outside_pid1() {
    let out = stele_init().output().expect("run stele-init");
    assert_eq!(out.status.code(), Some(2));
    let err = one_line(&out);
    assert!(
        err.starts_with("stele: error: stele-init must run as PID 1"),
        "{err}"
    );
}

/// PID 1 of a child namespace is not the kernel's init: one line, exit 2, and it did not
/// start booting (no "starting" line, no mounts, no reboot). With the host's /proc or a
/// /proc of the namespace alike.
#[test]
fn pid_1_of_a_child_namespace_refuses_to_boot() {
    for extra in [&[][..], &["--mount-proc"][..]] {
        let out = in_child_namespace(extra, INIT, &[]);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {out:?}");
        let err = one_line(&out);
        assert!(
            err.starts_with(
                "stele: error: stele-init must run as PID 1 of the initial PID namespace"
            ),
            "{extra:?}: {err}"
        );
    }
}

/// There, named `stele` or given `update`, it is the device's command like anywhere else.
#[test]
fn pid_1_of_a_child_namespace_runs_the_device_commands() {
    let out = in_child_namespace(&[], INIT, &["update", "--help"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("stele update install BUNDLE|-"));
    let dir = tempfile::tempdir().unwrap();
    let stele = dir.path().join("stele");
    std::os::unix::fs::symlink(INIT, &stele).unwrap();
    let out = in_child_namespace(&[], stele.to_str().unwrap(), &["update", "status"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = one_line(&out);
    assert!(
        err.starts_with("stele: error: read /run/stele/slot failed"),
        "{err}"
    );
}

//! The stele-init binary as the device's `stele` (multi-call): outside PID 1, named `stele`
//! or given `update`, it runs the update front-end with the CLI's exit codes.

use std::os::unix::process::CommandExt;
use std::process::Command;

fn run(arg0: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stele-init"));
    if let Some(a) = arg0 {
        cmd.arg0(a);
    }
    let out = cmd.args(args).output().expect("run stele-init");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_by_name_or_by_update_argument() {
    for (arg0, args) in [
        (Some("stele"), &["--help"][..]),
        (Some("/run/stele/bin/stele"), &["update", "--help"][..]),
        (None, &["update", "--help"][..]),
    ] {
        let (code, out, err) = run(arg0, args);
        assert_eq!(code, 0, "{arg0:?} {args:?}: {err}");
        assert!(out.contains("stele update install BUNDLE|-"), "{out}");
        assert!(err.is_empty(), "{err}");
    }
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    for args in [&[][..], &["image", "build"][..], &["update", "frob"][..]] {
        let (code, out, err) = run(Some("stele"), args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("stele: error: "), "{err}");
        assert!(err.contains("usage: stele update install"), "{err}");
    }
}

#[test]
fn without_run_stele_it_is_an_environment_error() {
    // The test host was not booted by stele-init: /run/stele/slot does not exist.
    let (code, _, err) = run(Some("stele"), &["update", "status", "--json"]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("stele: error: read /run/stele/slot failed"),
        "{err}"
    );
}

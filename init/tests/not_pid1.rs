//! stele-init outside PID 1: it must refuse (exit 2) before touching mounts or rebooting.

#[test]
fn refuses_to_run_outside_pid1() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stele-init"))
        .output()
        .expect("run stele-init");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must run as PID 1"), "{err}");
    assert!(out.stdout.is_empty());
}

//! House rules as tests (rust-analyzer's tidy): every tracked Rust file starts with a `//!`
//! line saying what it is for, and stays short enough for a reader to hold; PID 1 links no
//! network code.

use std::process::Command;

/// Longest Rust file, in lines (tests included).
pub const MAX_LINES: usize = 800;

/// The tracked `.rs` files of the repository, as `git ls-files` lists them.
pub(crate) fn rust_files() -> Vec<String> {
    let out = Command::new("git")
        .args([
            "ls-files",
            "--cached",
            "--others",
            "--exclude-standard",
            "*.rs",
        ])
        .current_dir(crate::util::root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run git ls-files ({e}): the tidy test needs git"));
    assert!(out.status.success(), "git ls-files failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// The rule broken by one file's text, if any.
fn problem(text: &str) -> Option<String> {
    if !text.starts_with("//!") {
        return Some("does not start with a `//!` line saying what it is for".into());
    }
    let lines = text.lines().count();
    (lines > MAX_LINES)
        .then(|| format!("{lines} lines, more than {MAX_LINES}: split it by concern"))
}

#[test]
fn rules_catch_what_they_should() {
    assert!(problem("//! A file.\nfn f() {}\n").is_none());
    assert!(problem("// not a module doc\n").is_some());
    assert!(problem("\n//! late\n").is_some());
    let long = format!("//! Long.\n{}", "x\n".repeat(MAX_LINES));
    assert!(problem(&long).unwrap().contains("split it"));
}

#[test]
fn every_rust_file_has_its_doc_line_and_fits() {
    let root = crate::util::root();
    let files = rust_files();
    assert!(files.len() > 50, "only {} Rust files found", files.len());
    let bad: Vec<String> = files
        .iter()
        .filter_map(|f| {
            // A file deleted in the work tree but still in the index is not checked.
            let text = std::fs::read_to_string(root.join(f)).ok()?;
            problem(&text).map(|p| format!("{f}: {p}"))
        })
        .collect();
    assert!(bad.is_empty(), "house rules broken:\n{}", bad.join("\n"));
}

/// PID 1 links no network code: no HTTP or TLS crate in stele-init's dependency tree
/// (the fetch client, a separate binary, has them).
#[test]
fn pid1_links_no_network_code() {
    let out = crate::util::output(
        crate::util::cargo().args([
            "tree",
            "--quiet",
            "-p",
            "stele-init",
            "-e",
            "normal,build",
            "--prefix",
            "none",
        ]),
        "cargo tree -p stele-init",
    )
    .expect("cargo tree");
    assert!(out.contains("stele-device"), "unexpected tree: {out}");
    for krate in [
        "ureq",
        "rustls",
        "ring",
        "webpki",
        "http",
        "hyper",
        "stele-fetch",
    ] {
        let found: Vec<&str> = out
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(krate))
            .collect();
        assert!(found.is_empty(), "stele-init depends on {found:?}");
    }
    // The check sees them where they are.
    let fetch = crate::util::output(
        crate::util::cargo().args([
            "tree",
            "--quiet",
            "-p",
            "stele-fetch",
            "-e",
            "normal",
            "--prefix",
            "none",
        ]),
        "cargo tree -p stele-fetch",
    )
    .expect("cargo tree");
    assert!(fetch.lines().any(|l| l.starts_with("ureq ")), "{fetch}");
}

//! Machine-readable and human output: `--json` of image build and verify (parsed by
//! serde_json, also on failure), and progress bars only on a terminal.

use std::process::Command;

use serde_json::Value;

use crate::fixture::{Fixture, SALT};
use crate::util::*;

fn json(out: &Out) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

#[test]
fn build_and_verify_json_carry_root_hash_sizes_key_ids_and_verdict() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("a");
    let (_, other) = fx.keygen("b");
    let root = fx.tree("root", true).build();
    let o = fx
        .image(&root, &k)
        .salt(SALT)
        .args(&["--json"])
        .run("s.img");
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stderr.is_empty(), "{o:?}");
    let b = json(&o);
    let img = fx.p("s.img");
    let bytes = std::fs::read(&img).unwrap();
    let r = regions(&bytes);
    let (key_id, _) = signature(&bytes, 0);
    let body = String::from_utf8(body(&bytes)).unwrap();
    assert_eq!(b["verdict"], "built");
    assert_eq!(b["exit_code"], 0);
    assert_eq!(b["exit_class"], "success");
    assert_eq!(b["error"], Value::Null);
    assert_eq!(b["out"], img.as_str());
    assert_eq!(b["manifest"]["name"], "demo");
    assert_eq!(b["manifest"]["rollback_index"], 1);
    assert_eq!(b["manifest"]["verity"]["salt"], SALT);
    assert_eq!(b["manifest"]["filesystem"]["type"], "erofs");
    assert_eq!(b["root_hash"], body_str(&body, "root_hash").as_str());
    assert_eq!(b["manifest"]["verity"]["root_hash"], b["root_hash"]);
    assert_eq!(b["signed_by"], serde_json::json!([key_id]));
    let sizes = &b["sizes"];
    assert_eq!(sizes["file"], bytes.len() as u64);
    assert_eq!(sizes["manifest"], r.manifest_len as u64);
    assert_eq!(sizes["image"], (r.manifest_offset + r.manifest_len) as u64);
    assert_eq!(sizes["hash_tree"], (r.hash_tree_end - r.hash_offset) as u64);
    assert_eq!(sizes["filesystem"], body_int(&body, "size"));

    let v = json(&stele(&["verify", &img, "--key", &p, "--full", "--json"]));
    assert_eq!(v["verdict"], "verified");
    assert_eq!(v["full"], true);
    assert_eq!(v["image"], img.as_str());
    for field in ["manifest", "root_hash", "signed_by", "sizes"] {
        assert_eq!(v[field], b[field], "{field}");
    }
    // A refusal is a document too, with its exit class; the one error line stays on stderr.
    let o = stele(&["verify", &img, "--key", &other, "--json"]);
    assert_eq!(o.code, 1);
    assert_eq!(o.stderr.lines().count(), 1, "{o:?}");
    let v = json(&o);
    assert_eq!(v["verdict"], "refused");
    assert_eq!(v["exit_code"], 1);
    assert_eq!(v["exit_class"], "refused");
    let err = v["error"].as_str().unwrap();
    assert!(err.contains("threshold not met"), "{err}");
    assert!(o.stderr.contains(err), "{o:?}");
    for field in ["manifest", "root_hash", "signed_by", "sizes"] {
        assert_eq!(v[field], Value::Null, "{field}");
    }
    let o = fx.image(&root, &k).args(&["--json"]).run("s.img");
    let b = json(&o);
    assert_eq!((o.code, b["verdict"].as_str()), (3, Some("environment")));
    assert!(b["error"].as_str().unwrap().contains("already exists"));
    let o = fx
        .image(&root, &k)
        .index(u64::MAX)
        .args(&["--json"])
        .run("t.img");
    assert_eq!((o.code, json(&o)["verdict"].as_str()), (2, Some("usage")));
}

/// Long commands print nothing but their own lines when stderr is not a terminal.
#[test]
fn no_progress_output_without_a_terminal() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("a");
    let root = fx.tree("root", true).build();
    let built = fx.image(&root, &k).run("s.img");
    assert_eq!((built.code, built.stderr.as_str()), (0, ""), "{built:?}");
    let img = fx.p("s.img");
    let quiet = |args: &[&str]| {
        let o = stele(args);
        assert_eq!((o.code, o.stderr.as_str()), (0, ""), "{args:?}: {o:?}");
    };
    quiet(&["verify", &img, "--key", &p, "--full"]);
    let hash = fx.p("hash");
    let f = ok(stele(&["verity", "format", &img, &hash, "--salt", "-"]));
    let root_hash = f
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .unwrap()
        .trim()
        .to_string();
    quiet(&["verity", "verify", &img, &hash, &root_hash]);
    let disk = fx.p("disk.img");
    quiet(&[
        "disk",
        "create",
        "--out",
        &disk,
        "--slot-size",
        "8M",
        "--a",
        &img,
        "--data-size",
        "8M",
    ]);
    let o = stele(&["update", "install", "--disk", &disk, "--key", &p, &img]);
    assert_eq!(o.code, 0, "{o:?}");
    for line in o.stderr.lines() {
        assert!(line.starts_with("stele: update: "), "{o:?}");
    }
}

/// On a terminal (`script` gives one) the build shows a bar with bytes, rate and ETA.
#[test]
fn progress_bar_on_a_terminal() {
    let fx = Fixture::new();
    let (k, _) = fx.keygen("a");
    let root = fx.tree("root", true).build();
    need_tool("script");
    let argv: Vec<String> = fx.image(&root, &k).argv("s.img");
    let mut line = vec![env!("CARGO_BIN_EXE_stele").to_string()];
    line.extend(argv.iter().map(|a| format!("'{a}'")));
    let o = Command::new("script")
        .args(["-q", "-e", "-c", &line.join(" "), "/dev/null"])
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    let tty = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{tty}");
    assert!(tty.contains("hashing") && tty.contains("ETA"), "{tty:?}");
    assert!(tty.contains("built: "), "{tty:?}");
}

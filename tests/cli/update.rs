//! `stele update --disk`: offline install into the slot the state does not boot, status,
//! and every refused bundle leaving the boot state's bytes exactly as they were.

use crate::fixture::{change_state, partition_bytes, Fixture, SALT};
use crate::util::*;

/// Builds a slot image `out` (name demo) from a small tree plus `extra_bytes` of filler.
fn build(
    fx: &Fixture,
    out: &str,
    key: &str,
    version: &str,
    index: u64,
    extra_bytes: usize,
) -> String {
    let mut tree = fx.tree(&format!("{out}.root"), false);
    if extra_bytes > 0 {
        let filler: Vec<u8> = (0..extra_bytes)
            .map(|i| u8::try_from((i * 7919) % 251).unwrap_or(0))
            .collect();
        tree = tree.file("usr/bin/filler", filler, 0o644);
    }
    fx.image(&tree.build(), key)
        .version(version)
        .index(index)
        .salt(SALT)
        .build(out)
}

/// `stele disk create` with slot a = `a`, slot b empty, 4 MiB slots, no data partition.
fn disk(fx: &Fixture, name: &str, a: &str) -> String {
    fx.disk(a).out(name).slot_size("4M").no_data().build()
}

fn status_json(disk: &str, key: &str) -> serde_json::Value {
    let out = ok(stele(&[
        "update", "status", "--disk", disk, "--key", key, "--json",
    ]));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status JSON {out:?}: {e}"))
}

#[test]
fn offline_install_goes_to_the_other_slot_and_boots_it_next() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("k");
    let v1 = build(&fx, "v1.img", &k, "1.0.0", 1, 0);
    let v2 = build(&fx, "v2.img", &k, "2.0.0", 2, 0);
    let d = disk(&fx, "d.img", &v1);

    let before = ok(stele(&["update", "status", "--disk", &d, "--key", &p]));
    assert!(
        before.contains(
            "slot a: next version=1.0.0 rollback_index=1 priority=2 tries_remaining=0 successful=yes"
        ),
        "{before}"
    );
    assert!(before.contains("slot b: empty priority=0"), "{before}");

    let out = stele(&["update", "install", "--disk", &d, "--key", &p, &v2]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        "stele: installed demo 2.0.0 rollback_index=2 into slot b; reboot to boot it\n"
    );
    let order = [
        "stele: update: writing slot b",
        "stele: update: flipping boot state",
        "stele: update: footer written",
    ];
    let at: Vec<usize> = order
        .iter()
        .map(|l| {
            out.stderr
                .find(l)
                .unwrap_or_else(|| panic!("{l:?} not in {}", out.stderr))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{}", out.stderr);

    let s = status_json(&d, &p);
    assert_eq!(s["booted"], serde_json::Value::Null);
    assert_eq!(s["next"], "b");
    // A fresh disk starts at its image's rollback index.
    assert_eq!(s["rollback_floor"], 1);
    let b = &s["slots"]["b"];
    assert_eq!(b["version"], "2.0.0");
    assert_eq!(b["rollback_index"], 2);
    assert_eq!(b["priority"], 2);
    assert_eq!(b["tries_remaining"], 3);
    assert_eq!(b["successful"], false);
    assert_eq!(b["valid"], true);
    assert_eq!(b["error"], serde_json::Value::Null);
    let a = &s["slots"]["a"];
    assert_eq!(a["version"], "1.0.0");
    assert_eq!(a["priority"], 1);
    assert_eq!(a["successful"], true);
    assert_eq!(a["valid"], true);

    // The slot holds a complete, fully verifiable image (footer at the partition's end).
    let part = fx.path("b.part");
    std::fs::write(&part, partition_bytes(&d, "stele-root-b")).expect("write partition copy");
    let part = part.display().to_string();
    ok(stele(&["verify", &part, "--key", &p, "--full"]));

    // b is on trial: a second install would overwrite a, its fallback. Refused, untouched.
    let state_before = partition_bytes(&d, "stele-state");
    fails(
        &stele(&["update", "install", "--disk", &d, "--key", &p, &v2]),
        1,
        &["slot b is on trial", "overwrite slot a"],
    );
    assert_eq!(partition_bytes(&d, "stele-state"), state_before);
}

#[test]
fn refused_bundles_leave_the_boot_state_untouched() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("k");
    let (other, _) = fx.keygen("other");
    let v1 = build(&fx, "v1.img", &k, "1.0.0", 1, 0);
    let v2 = build(&fx, "v2.img", &k, "2.0.0", 2, 0);
    let d = disk(&fx, "d.img", &v1);

    // Raise the floor to 2 as mark-good of a rollback_index 2 image would.
    change_state(&d, |st| st.rollback_floor = 2);
    let state0 = partition_bytes(&d, "stele-state");
    let slot_b0 = partition_bytes(&d, "stele-root-b");

    let bytes = std::fs::read(&v2).expect("read v2");
    let r = regions(&bytes);
    let bad_sig = fx.path("badsig.img");
    write_flipped(&bytes, r.body_offset + r.body_len / 2, &bad_sig);
    let bad_sig = bad_sig.display().to_string();
    let wrong_key = build(&fx, "wrongkey.img", &other, "2.0.1", 3, 0);
    let old = build(&fx, "old.img", &k, "1.5.0", 1, 0);
    let huge = build(&fx, "huge.img", &k, "9.0.0", 9, 5 << 20);
    let cases = [
        (bad_sig.as_str(), "bad signature"),
        (wrong_key.as_str(), "threshold not met"),
        (old.as_str(), "rollback refused"),
        (huge.as_str(), "the slot holds"),
    ];
    for (bundle, why) in cases {
        fails(
            &stele(&["update", "install", "--disk", &d, "--key", &p, bundle]),
            1,
            &[why],
        );
        assert_eq!(
            partition_bytes(&d, "stele-state"),
            state0,
            "{why}: state written"
        );
        // Refused before the slot was touched: a bundle that can be read out of order is
        // checked first.
        assert_eq!(
            partition_bytes(&d, "stele-root-b"),
            slot_b0,
            "{why}: slot written"
        );
    }

    // A truncated stream: refused once the end is reached; the state is untouched and
    // slot b (invalidated first) reads as empty.
    let cut = &bytes[..bytes.len() - 100];
    let out = stele_stdin(&["update", "install", "--disk", &d, "--key", &p, "-"], cut);
    assert_eq!(out.code, 1, "{out:?}");
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("stele: error: "), "{out:?}");
    assert!(last.contains("truncated"), "{last}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert_eq!(partition_bytes(&d, "stele-state"), state0);
    let s = status_json(&d, &p);
    assert_eq!(s["slots"]["b"]["valid"], false);
    assert_eq!(s["slots"]["b"]["error"], "empty");
    assert_eq!(s["slots"]["a"]["valid"], true);
    assert_eq!(s["rollback_floor"], 2);

    // The same image, whole, from stdin: installed.
    let out = stele_stdin(
        &["update", "install", "--disk", &d, "--key", &p, "-"],
        &bytes,
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout,
        "stele: installed demo 2.0.0 rollback_index=2 into slot b; reboot to boot it\n"
    );
    let s = status_json(&d, &p);
    assert_eq!(s["next"], "b");
    assert_eq!(s["slots"]["b"]["version"], "2.0.0");
    assert_eq!(s["slots"]["b"]["tries_remaining"], 3);
}

#[test]
fn usage_and_device_errors() {
    let fx = Fixture::new();
    let (_, p) = fx.keygen("k");
    fails(
        &stele(&["update", "install", "x.img", "--key", &p]),
        2,
        &["go with --disk"],
    );
    fails(
        &stele(&["update", "install", "--disk", "d.img", "x.img"]),
        2,
        &["install --disk needs the trusted keys"],
    );
    fails(
        &stele(&["update", "status", "--disk", "d.img", "--threshold", "2"]),
        2,
        &["--threshold needs the trusted keys"],
    );
    let not_disk = fx.path("not-a-disk.img");
    std::fs::write(&not_disk, vec![0u8; 1 << 20]).expect("write");
    let not_disk = not_disk.display().to_string();
    fails(
        &stele(&["update", "status", "--disk", &not_disk, "--key", &p]),
        2,
        &["stele disk create"],
    );
    // Without --disk, on a build host (not booted by stele-init): nothing published.
    fails(
        &stele(&["update", "status"]),
        3,
        &["/run/stele/slot", "--disk"],
    );
    fails(&stele(&["update", "mark-good"]), 3, &["/run/stele/slot"]);
}

/// Status is not a trust decision: without keys it shows the state, the slots marked
/// unverified (their structure and hash tree checked, not their signatures).
#[test]
fn status_without_keys_shows_unverified_slots() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("k");
    let v1 = build(&fx, "v1.img", &k, "1.0.0", 1, 0);
    let d = disk(&fx, "d.img", &v1);
    let state0 = partition_bytes(&d, "stele-state");
    let text = ok(stele(&["update", "status", "--disk", &d]));
    assert_eq!(
        text,
        "slot a: next unverified version=1.0.0 rollback_index=1 priority=2 tries_remaining=0 successful=yes\n\
         slot b: empty priority=0 tries_remaining=0 successful=no\n\
         rollback_floor=1 next=a\n"
    );
    let out = ok(stele(&["update", "status", "--disk", &d, "--json"]));
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    let a = &s["slots"]["a"];
    assert_eq!(a["verified"], false);
    assert_eq!(a["valid"], true);
    assert_eq!(a["version"], "1.0.0");
    assert_eq!(a["tries_remaining"], 0);
    assert_eq!(s["slots"]["b"]["verified"], false);
    assert_eq!(s["next"], "a");
    // With keys, as before, and now "verified": true.
    assert_eq!(status_json(&d, &p)["slots"]["a"]["verified"], true);
    // A flipped bit in slot a's hash tree is found without keys too.
    let bytes = std::fs::read(&v1).unwrap();
    let r = regions(&bytes);
    let (off, _) = crate::fixture::partition(&d, "stele-root-a");
    let at = off + u64::try_from(r.hash_offset).unwrap() + 7;
    flip_byte(&d, at);
    let text = ok(stele(&["update", "status", "--disk", &d]));
    assert!(
        text.starts_with("slot a: next invalid: root hash mismatch"),
        "{text}"
    );
    assert_eq!(
        partition_bytes(&d, "stele-state"),
        state0,
        "status wrote the state"
    );
}

/// Flips one bit of the file at `offset`.
fn flip_byte(path: &str, offset: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&[b[0] ^ 0x10]).unwrap();
}

/// A stream too large for the slot names its whole size, not how far the copy got.
#[test]
fn a_too_large_stream_reports_its_size() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("k");
    let v1 = build(&fx, "v1.img", &k, "1.0.0", 1, 0);
    let huge = build(&fx, "huge.img", &k, "9.0.0", 9, 5 << 20);
    let d = disk(&fx, "d.img", &v1);
    let state0 = partition_bytes(&d, "stele-state");
    let bytes = std::fs::read(&huge).unwrap();
    let out = stele_stdin(
        &["update", "install", "--disk", &d, "--key", &p, "-"],
        &bytes,
    );
    assert_eq!(out.code, 1, "{out:?}");
    let last = out.stderr.lines().last().unwrap_or_default();
    let needs = format!(
        "the image needs {} bytes but the slot holds 4194304",
        bytes.len()
    );
    assert!(
        last.starts_with("stele: error: ") && last.contains(&needs),
        "{last}"
    );
    assert_eq!(partition_bytes(&d, "stele-state"), state0);
}

/// The shipped systemd unit (dist/systemd) runs the device's `stele` where stele-init
/// publishes it, once systemd's boot assessment reached boot-complete.target.
#[test]
fn shipped_systemd_unit_marks_good_after_boot_complete() {
    let unit = include_str!("../../dist/systemd/stele-mark-good.service");
    let keys: Vec<(&str, &str)> = unit
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let bin = stele_device::runtime::run_dir::BIN_DIR;
    for want in [
        ("Requires", "boot-complete.target"),
        ("After", "boot-complete.target"),
        ("ConditionPathExists", &*format!("{bin}/stele")),
        ("Type", "oneshot"),
        ("ExecStart", &*format!("{bin}/stele update mark-good")),
        ("WantedBy", "multi-user.target"),
    ] {
        assert!(keys.contains(&want), "{want:?} not in the unit:\n{unit}");
    }
    let conf = include_str!("../../dist/systemd/50-stele-watchdog.conf");
    assert!(conf.contains("\n[Manager]\nRuntimeWatchdogSec="), "{conf}");
}

/// Waits (bounded) until a process holds a flock(2) on `path` (/proc/locks lists it by
/// inode), so that what runs next overlaps it.
fn wait_for_flock(path: &str, child: &mut std::process::Child) {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(path).expect("disk").ino();
    let want = format!(":{ino} ");
    for _ in 0..300 {
        let locks = std::fs::read_to_string("/proc/locks").expect("/proc/locks");
        if locks
            .lines()
            .any(|l| l.contains("FLOCK") && format!("{l} ").contains(&want))
        {
            return;
        }
        assert!(
            child.try_wait().expect("child").is_none(),
            "the first install ended before it took the disk"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("no process took the lock of {path} within 15 s");
}

/// Two `stele update install --disk d.img` runs against one disk image: while the first
/// holds the disk (waiting for a bundle that does not come: a URL whose server never
/// answers, or a FIFO nobody writes), a second one, of a file or of a URL, is refused with
/// one line and the disk stays byte for byte as it was. (The URL install once took no
/// lock at all, so two could write one image at once.) Once the first is gone, an install
/// goes through.
#[test]
fn a_second_install_into_a_disk_in_use_is_refused_and_changes_nothing() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("k");
    let v1 = build(&fx, "v1.img", &k, "1.0.0", 1, 0);
    let v2 = build(&fx, "v2.img", &k, "2.0.0", 2, 0);
    let d = disk(&fx, "d.img", &v1);
    let before = std::fs::read(&d).unwrap();
    // Accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v2.img", silent.local_addr().unwrap());
    let fifo = fx.path("bundle.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let fifo = fifo.to_str().unwrap().to_string();
    for first in [&url, &fifo] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_stele"))
            .args(["update", "install", "--disk", &d, "--key", &p, first])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_for_flock(&d, &mut child);
        for second in [&v2, &url] {
            let out = stele(&["update", "install", "--disk", &d, "--key", &p, second]);
            fails(&out, 3, &[&d, "in use by another stele command"]);
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(std::fs::read(&d).unwrap() == before, "the disk changed");
    }
    drop(silent);
    let out = stele(&["update", "install", "--disk", &d, "--key", &p, &v2]);
    assert_eq!(out.code, 0, "{out:?}");
}

/// `history` and `why` read a disk image offline, with or without keys: a fresh disk has
/// an empty recorder (an offline install records nothing), an old 1 MiB state partition
/// has none, and both say so with exit 0.
#[test]
fn history_and_why_on_a_disk_image() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("k");
    let v1 = build(&fx, "v1.img", &k, "1.0.0", 1, 0);
    let v2 = build(&fx, "v2.img", &k, "2.0.0", 2, 0);
    let d = disk(&fx, "d.img", &v1);
    ok(stele(&[
        "update", "install", "--disk", &d, "--key", &p, &v2,
    ]));
    let text = ok(stele(&["update", "history", "--disk", &d]));
    assert_eq!(text, "no events recorded yet\n");
    let json: serde_json::Value =
        serde_json::from_str(&ok(stele(&["update", "history", "--disk", &d, "--json"])))
            .expect("history JSON");
    assert_eq!(json["recorder"], true);
    assert_eq!(json["events"], serde_json::json!([]));
    let why = ok(stele(&["update", "why", "--disk", &d, "--key", &p]));
    assert_eq!(
        why,
        "nothing to explain: the flight recorder holds no fallback or refusal.\n"
    );
    let old = fx.p("old.img");
    crate::fixture::old_layout(&d, &old);
    for cmd in ["history", "why"] {
        let out = ok(stele(&["update", cmd, "--disk", &old]));
        assert!(out.contains("has no flight recorder"), "{cmd}: {out}");
    }
    assert_eq!(stele(&["update", "why", "--disk", &d, "--json"]).code, 2);
}

/// `stele disk reset-data --disk D` writes the request block of the state partition (and
/// nothing of the state copies); a disk without a data partition, and an old 1 MiB state
/// partition without room for a request, are refused with one line and exit 3, unchanged.
#[test]
fn disk_reset_data_writes_the_request_and_refuses_what_cannot_be_reset() {
    use stele_verifier::data_reset::{self, By, Found};
    let fx = Fixture::new();
    let (k, _) = fx.keygen("k");
    let v1 = build(&fx, "v1.img", &k, "1.0.0", 1, 0);
    let d = fx
        .disk(&v1)
        .out("d.img")
        .slot_size("4M")
        .data_size("8M")
        .build();
    let before = partition_bytes(&d, "stele-state");
    let line = ok(stele(&["disk", "reset-data", "--disk", &d]));
    assert!(
        line.starts_with("stele: data reset requested: the next boot"),
        "{line}"
    );
    let after = partition_bytes(&d, "stele-state");
    let at = usize::try_from(data_reset::REQUEST_OFFSET).unwrap();
    match data_reset::decode(&after[at..at + data_reset::BLOCK]) {
        Found::Requested(r) => assert_eq!(r.by, By::Host),
        other => panic!("request block: {other:?}"),
    }
    // Only the request block changed.
    assert_eq!(before[..at], after[..at]);
    assert_eq!(
        before[at + data_reset::BLOCK..],
        after[at + data_reset::BLOCK..]
    );

    let no_data = disk(&fx, "n.img", &v1);
    let was = std::fs::read(&no_data).unwrap();
    let out = stele(&["disk", "reset-data", "--disk", &no_data]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stderr.contains("has no data partition"), "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "{out:?}");
    assert!(std::fs::read(&no_data).unwrap() == was);

    let old = fx.p("old.img");
    crate::fixture::old_layout(&d, &old);
    let was = std::fs::read(&old).unwrap();
    let out = stele(&["disk", "reset-data", "--disk", &old]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains("without room for a reset request"),
        "{out:?}"
    );
    assert!(std::fs::read(&old).unwrap() == was);
}

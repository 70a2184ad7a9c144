//! Fleet updates over HTTP from the build host (`stele update install --disk DISK URL`):
//! against a real nginx on loopback and a fault-injecting server. Every case ends with a
//! verified slot or a clear refusal; a refusal leaves the boot state untouched. Also
//! `update plan`, `image diff` and `channel build`.

use std::fs;

use crate::fixture::{
    partition_bytes, state, xorshift, Fault, FaultServer, Fixture, Slot, TRICKLE_BYTES,
};
use crate::util::{fails, ok, stele, Out};

/// Signing key, v1 (in slot a of `disk.img`) and v2 (a file changed, one added).
pub struct Pair {
    pub public: String,
    pub key: String,
    pub v1: String,
    pub v2: String,
    pub disk: String,
}

/// Pseudo-random bytes (xorshift), so that blocks do not repeat.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    xorshift(seed | 1)
        .take(len)
        .map(|x| x.to_le_bytes()[3])
        .collect()
}

/// A disk with v1 in slot a (4 MiB slots) and v2, which shares most blocks with it.
pub fn pair(fx: &Fixture, new_bytes: usize) -> Pair {
    let (key, public) = fx.keygen("release");
    let ballast = noise(1_500_000, 7);
    let r1 = fx
        .tree("r1", false)
        .file("srv/ballast", &ballast, 0o644)
        .build();
    let r2 = fx
        .tree("r2", false)
        .file("srv/ballast", &ballast, 0o644)
        .file("srv/new", noise(new_bytes, 9), 0o644)
        .build();
    let v1 = fx
        .image(&r1, &key)
        .version("1.0.0")
        .index(1)
        .build("v1.img");
    let v2 = fx
        .image(&r2, &key)
        .version("2.0.0")
        .index(2)
        .build("v2.img");
    let disk = fx.disk(&v1).slot_size("4M").no_data().build();
    Pair {
        public,
        key,
        v1,
        v2,
        disk,
    }
}

/// `stele update install URL` into `p.disk`, which must succeed with v2 in slot b: the
/// output and its one stderr line containing `what` (the reason a way was given up).
pub fn install_saying(p: &Pair, url: &str, what: &str) -> (Out, String) {
    let out = install(p, &p.disk, url, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_v2_in_b(p, &p.disk);
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("{}", out.stderr))
        .to_string();
    (out, line)
}

/// `stele update install --disk DISK --key P URL ARGS`.
pub fn install(p: &Pair, disk: &str, url: &str, args: &[&str]) -> Out {
    let mut a = vec!["update", "install", "--disk", disk, "--key", &p.public, url];
    a.extend(args);
    stele(&a)
}

/// Bytes of v2.img's signed metadata in an install's nginx log (footer, manifest, tree):
/// its answers before the first answer of another file, skipping the 404 of a delta
/// looked for beside it (between the manifest and the tree: a delta that gives the whole
/// image is written without the tree).
pub fn signed_bytes(log: &[String]) -> u64 {
    log.iter()
        .filter(|l| !l.contains(" 404 "))
        .take_while(|l| l.starts_with("GET /v2.img "))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

/// The number before `what` in `update plan`'s fetch line, `plan: fetch N bytes (D of
/// data, T of the other ways' tables, M of footer, ...)`: e.g. `" bytes ("` gives N.
pub fn plan_fetch(plan: &str, what: &str) -> u64 {
    let line = plan
        .lines()
        .find(|l| l.starts_with("plan: fetch "))
        .unwrap_or_else(|| panic!("no fetch line: {plan}"));
    line.split(what)
        .next()
        .and_then(|h| h.rsplit([' ', '(']).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number before {what:?} in {line}"))
}

/// Bytes fetched, from the summary line.
pub fn fetched(out: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix("stele: fetched "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary line in {out}"))
}

/// The bytes of way `way` in `update plan`'s way line, `plan: way W: raw N bytes, zstd M
/// bytes, delta D bytes, lzc L bytes (chosen), no ... way: why` (the ways it prices come
/// first, each `NAME BYTES bytes`).
pub fn way_bytes(plan: &str, way: &str) -> u64 {
    let line = plan
        .lines()
        .find(|l| l.starts_with("plan: way "))
        .unwrap_or_else(|| panic!("no way line: {plan}"));
    line.splitn(3, ": ")
        .nth(2)
        .into_iter()
        .flat_map(|r| r.split(", "))
        .find_map(|w| w.strip_prefix(&format!("{way} ")))
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {way} bytes in {line}"))
}

/// Slot b of `disk` holds v2 (byte for byte up to its manifest's end) and boots next.
pub fn assert_v2_in_b(p: &Pair, disk: &str) {
    let status = ok(stele(&[
        "update", "status", "--disk", disk, "--key", &p.public,
    ]));
    assert!(
        status.contains("slot b: next version=2.0.0 rollback_index=2 priority=2 tries_remaining=3"),
        "{status}"
    );
    let v2 = fs::read(&p.v2).unwrap();
    let b = partition_bytes(disk, "stele-root-b");
    let r = crate::util::regions(&v2);
    let end = r.manifest_offset + r.manifest_len;
    assert!(b[..end] == v2[..end], "slot b differs from v2");
    assert_eq!(state(disk).choose(), Some(Slot::B));
}

#[test]
fn nginx_serves_a_delta_and_its_log_shows_the_ranges() {
    let fx = Fixture::new();
    let p = pair(&fx, 100 * 1024);
    fs::create_dir_all(fx.path("www")).unwrap();
    fs::copy(&p.v2, fx.path("www/v2.img")).unwrap();
    let nginx = fx.nginx("www");
    let url = nginx.url("v2.img");

    let plan = ok(stele(&[
        "update", "plan", "--disk", &p.disk, "--key", &p.public, &url,
    ]));
    assert!(
        plan.contains("plan: demo 2.0.0 rollback_index=2 from "),
        "{plan}"
    );
    assert!(plan.contains("into slot b"), "{plan}");
    let planned = nginx.log().len();
    let out = install(&p, &p.disk, &url, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_v2_in_b(&p, &p.disk);
    let size = fs::metadata(&p.v2).unwrap().len();
    let got = fetched(&out.stdout);
    // 100 KiB of new data (and the blocks around it), the tree and the manifest.
    assert!(got < size / 4, "fetched {got} of {size} bytes");
    assert!(out.stdout.contains("reused "), "{}", out.stdout);
    // The plan is logged; the progress bar is drawn only on a terminal (not here).
    assert!(
        out.stderr.contains("stele: update: plan: fetch ") && !out.stderr.contains('\r'),
        "{}",
        out.stderr
    );

    // The footer first, then the envelope and the tree, then only data ranges.
    // (The compressed form v2.img.zst is not served here: its 404s are not image ranges.)
    let log: Vec<String> = nginx
        .log()
        .split_off(planned)
        .into_iter()
        .filter(|l| l.starts_with("GET /v2.img "))
        .collect();
    assert!(
        log[0].starts_with("GET /v2.img 206 bytes=-4096 4096"),
        "{log:?}"
    );
    let sum: u64 = log
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(sum, got, "the access log and the summary disagree: {log:?}");
    assert!(log.iter().all(|l| l.contains(" 206 bytes=")), "{log:?}");

    // Slot b on trial is the next boot; once a is marked good again (b abandoned), a plan
    // of the same image into b finds everything there: nothing but the metadata to fetch.
    crate::fixture::change_state(&p.disk, |s| {
        s.mark_unbootable(Slot::B);
        s.slot_mut(Slot::B).priority = 1;
        s.slot_mut(Slot::B).successful = true;
        s.slot_mut(Slot::A).priority = 2;
    });
    let again = ok(stele(&[
        "update", "plan", "--disk", &p.disk, "--key", &p.public, &url,
    ]));
    assert!(again.contains(" 0 fetched in 0 ranges"), "{again}");
}

/// A fault case: its name, the faults, extra arguments, and the refusal it ends in
/// (`None`: a verified slot).
type Case<'a> = (&'a str, Vec<Fault>, Vec<&'a str>, Option<&'a [&'a str]>);

/// Every fault ends in a verified slot b (retried) or a clear refusal that leaves the
/// boot state as it was.
#[test]
fn faults_end_verified_or_refused() {
    let fx = Fixture::new();
    let p = pair(&fx, 300 * 1024);
    let v2 = fs::read(&p.v2).unwrap();
    let len = v2.len() as u64;
    let r = crate::util::regions(&v2);
    // A byte inside the new file's data: some block the install must fetch.
    let needle = &noise(300 * 1024, 9)[..64];
    let data_at = v2.windows(64).position(|w| w == needle).unwrap() as u64 + 5000;
    let cases: Vec<Case<'_>> = vec![
        ("cut", vec![Fault::CutAt(data_at)], vec![], None),
        (
            "cut in the tree",
            vec![Fault::CutAt(r.hash_offset as u64 + 100)],
            vec![],
            None,
        ),
        ("200", vec![Fault::IgnoreRanges], vec![], None),
        ("flip", vec![Fault::FlipAt(data_at)], vec![], None),
        (
            "flip in the footer",
            vec![Fault::FlipAt(len - 100)],
            vec![],
            None,
        ),
        (
            "stall",
            vec![Fault::Stall(std::time::Duration::from_secs(6))],
            vec!["--timeout", "2"],
            None,
        ),
        ("503", vec![Fault::Busy(1), Fault::Busy(1)], vec![], None),
        (
            "wrong length",
            vec![Fault::CutAt(data_at), Fault::WrongTotal],
            vec![],
            Some(&["length changed", "run the update again"]),
        ),
        (
            "503 beyond the deadline",
            vec![Fault::Busy(60)],
            vec!["--deadline", "5"],
            Some(&["503", "gave up"]),
        ),
    ];
    for (name, faults, args, refusal) in cases {
        let disk = fx.p(&format!("{}.img", name.replace(' ', "-")));
        fs::copy(&p.disk, &disk).unwrap();
        let before = partition_bytes(&disk, "stele-state");
        let server = FaultServer::start(v2.clone());
        server.faults(&faults);
        let out = install(&p, &disk, &server.url(), &args);
        match refusal {
            None => {
                assert_eq!(out.code, 0, "{name}: {out:?}\n{:?}", server.log());
                assert_v2_in_b(&p, &disk);
            }
            Some(needles) => {
                let last = out.stderr.lines().last().unwrap_or("").to_string();
                let err = Out {
                    code: out.code,
                    stdout: String::new(),
                    stderr: last + "\n",
                };
                fails(&err, 3, needles);
                assert_eq!(
                    partition_bytes(&disk, "stele-state"),
                    before,
                    "{name}: state written"
                );
            }
        }
    }
    let _ = &p.key;
}

/// Regression (issue 18): a server that sends one byte a second, never stalling long
/// enough for `--timeout` or `--deadline`, kept `install` running for ever with the other
/// slot already invalidated. `--max-time` ends it: exit 3, one line, the boot state as it
/// was (the running slot boots), and the next run resumes and completes.
#[test]
fn a_trickling_server_ends_at_max_time_and_the_install_resumes() {
    let fx = Fixture::new();
    let p = pair(&fx, 300 * 1024);
    let v2 = fs::read(&p.v2).unwrap();
    let needle = &noise(300 * 1024, 9)[..64];
    let data_at = v2.windows(64).position(|w| w == needle).unwrap() as u64 + 5000;
    let disk = fx.p("trickle.img");
    fs::copy(&p.disk, &disk).unwrap();
    let before = partition_bytes(&disk, "stele-state");
    let server = FaultServer::start(v2.clone());
    server.faults(&[Fault::Trickle(data_at)]);
    let started = std::time::Instant::now();
    let out = install(
        &p,
        &disk,
        &server.url(),
        &["--max-time", "6", "--timeout", "3"],
    );
    let took = started.elapsed();
    let last = out.stderr.lines().last().unwrap_or("").to_string();
    let err = Out {
        code: out.code,
        stdout: String::new(),
        stderr: last + "\n",
    };
    fails(
        &err,
        3,
        &[
            "did not finish within --max-time 6s",
            "running it again resumes",
        ],
    );
    // It ended at max-time, not when the server gave up trickling.
    assert!(
        took.as_secs() < TRICKLE_BYTES as u64,
        "{took:?}: {:?}",
        server.log()
    );
    assert_eq!(
        partition_bytes(&disk, "stele-state"),
        before,
        "state written"
    );
    assert_eq!(state(&disk).choose(), Some(Slot::A));
    let again = ok(install(&p, &disk, &server.url(), &[]));
    assert_v2_in_b(&p, &disk);
    // It resumed: the blocks that arrived before max-time are not fetched again.
    let fresh_disk = fx.p("fresh.img");
    fs::copy(&p.disk, &fresh_disk).unwrap();
    let fresh = ok(install(&p, &fresh_disk, &server.url(), &[]));
    assert!(fetched(&again) < fetched(&fresh), "{again}\n{fresh}");
}

#[test]
fn image_diff_and_channel_build() {
    const LATER: &str = "2040-01-01T00:00:00Z";
    let fx = Fixture::new();
    let p = pair(&fx, 100 * 1024);
    let diff = ok(stele(&["image", "diff", &p.v1, &p.v2, "--key", &p.public]));
    assert!(diff.contains("fetched in"), "{diff}");
    let data: u64 = diff
        .split(" bytes (")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{diff}"));
    assert!(data < fs::metadata(&p.v2).unwrap().len() / 4, "{diff}");

    let (ckey, _) = fx.keygen("channel");
    fs::create_dir_all(fx.path("www")).unwrap();
    fs::copy(&p.v2, fx.path("www/v2.img")).unwrap();
    let out = fx.p("www/stable.channel");
    let built = ok(stele(&[
        "channel",
        "build",
        "--key",
        &ckey,
        "--name",
        "demo",
        "--channel",
        "stable",
        "--sequence",
        "3",
        "--expires",
        "2040-01-01T00:00:00Z",
        "--release",
        "2.0.0=v2.img",
        "--wave",
        "2.0.0=0:100",
        "--wave",
        "2.0.0=3600:1000",
        "--out",
        &out,
    ]));
    assert!(built.contains("stable sequence=3"), "{built}");
    assert_eq!(&fs::read(&out).unwrap()[..8], b"STELECHN");
    // Another product's image, a version it is not, a bad time: refused, nothing written.
    for (args, needle) in [
        (
            vec!["--name", "other", "--release", "2.0.0=v2.img"],
            "not of --name",
        ),
        (
            vec!["--name", "demo", "--release", "3.0=v2.img"],
            "is version 2.0.0",
        ),
        (
            vec!["--name", "demo", "--release", "2.0.0=missing.img"],
            "missing.img",
        ),
    ] {
        let mut a = vec![
            "channel",
            "build",
            "--key",
            &ckey,
            "--channel",
            "stable",
            "--sequence",
            "4",
        ];
        a.extend(["--expires", "2040-01-01T00:00:00Z", "--out"]);
        let o = fx.p("www/other.channel");
        a.push(&o);
        a.extend(args);
        let r = stele(&a);
        assert_ne!(r.code, 0, "{r:?}");
        assert!(r.stderr.contains(needle), "{needle}: {r:?}");
        assert!(!fx.path("www/other.channel").exists());
    }
    // Sequence 4 of the channel, expiring at `expires`, with `extra` options.
    let again = |expires: &str, extra: &[&str]| {
        let mut a = vec![
            "channel",
            "build",
            "--key",
            &ckey,
            "--name",
            "demo",
            "--channel",
            "stable",
            "--sequence",
            "4",
            "--expires",
            expires,
            "--release",
            "2.0.0=v2.img",
            "--out",
            &out,
        ];
        a.extend_from_slice(extra);
        stele(&a)
    };
    fails(&again("next week", &[]), 2, &["--expires", "RFC 3339"]);
    // The output rule: an existing channel is replaced only with --force.
    let before = fs::read(&out).unwrap();
    fails(&again(LATER, &[]), 3, &["already exists", "--force"]);
    assert_eq!(fs::read(&out).unwrap(), before, "refused, yet written");
    assert!(ok(again(LATER, &["--force"])).contains("stable sequence=4"));
    assert_ne!(fs::read(&out).unwrap(), before);
    let _ = &p.key;
}

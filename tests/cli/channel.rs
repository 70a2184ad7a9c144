//! `stele channel build --delta FILE[=URL]`: the published delta of `stele image delta`
//! listed for the release it leads to (its source release, length and digests read from
//! the file); a file that is not a delta, a delta to a release the channel does not list,
//! or from one it does not list: one line, exit 2, nothing written.

use std::fs;

use sha2::{Digest, Sha256};
use stele_verifier::channel::{Channel, DOMAIN};
use stele_verifier::manifest::Envelope;

use crate::fixture::Fixture;
use crate::util::*;

/// v1, v2 (a file changed) and v3 (another change) of product `demo` in `dir`, and the
/// delta from v1 to v2 beside v2. Returns the delta's path.
fn releases(fx: &Fixture, dir: &str) -> String {
    let (key, public) = fx.keygen("release");
    let text = |seed: u8| -> Vec<u8> {
        (0..200_000u32)
            .map(|i| b"abcdefgh "[((i * 7 + u32::from(seed)) % 9) as usize])
            .collect()
    };
    for (v, i, seed) in [("1.0.0", 1, 1), ("2.0.0", 2, 2), ("3.0.0", 3, 3)] {
        let r = fx
            .tree(&format!("r{i}"), false)
            .file("srv/doc.txt", text(seed), 0o644)
            .build();
        fx.image(&r, &key)
            .version(v)
            .index(i)
            .build(&format!("{dir}/v{i}.img"));
    }
    let v1 = format!("{dir}/v1.img");
    let v2 = format!("{dir}/v2.img");
    let out = ok(stele(&["image", "delta", &v1, &v2, "--key", &public]));
    out.lines()
        .find_map(|l| l.strip_prefix("delta: wrote "))
        .unwrap_or_else(|| panic!("{out}"))
        .to_string()
}

/// `stele channel build` of product demo into `dir/stable.channel` with `extra`.
fn build(fx: &Fixture, dir: &str, extra: &[&str]) -> Out {
    let ckey = fx.p("channel.key");
    if !fx.path("channel.key").exists() {
        fx.keygen("channel");
    }
    let out = format!("{dir}/stable.channel");
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
        "1",
        "--issued",
        "2025-01-01T00:00:00Z",
        "--expires",
        "2099-01-01T00:00:00Z",
        "--out",
        &out,
    ];
    a.extend_from_slice(extra);
    stele(&a)
}

#[test]
fn channel_build_lists_a_delta_and_refuses_one_it_cannot_place() {
    let fx = Fixture::new();
    let dir = fx.p("www");
    fs::create_dir_all(&dir).unwrap();
    let delta = releases(&fx, &dir);
    let name = delta.rsplit('/').next().unwrap().to_string();
    let all = ["--release", "1.0.0=v1.img", "--release", "2.0.0=v2.img"];

    // Listed under its own name (relative to the channel) and under a URL given.
    for (arg, url) in [
        (delta.clone(), name.clone()),
        (
            format!("{delta}=https://cdn.example.com/d/{name}"),
            format!("https://cdn.example.com/d/{name}"),
        ),
    ] {
        let _ = fs::remove_file(format!("{dir}/stable.channel"));
        let mut extra = all.to_vec();
        extra.extend(["--delta", &arg]);
        ok(build(&fx, &dir, &extra));
        let file = fs::read(format!("{dir}/stable.channel")).unwrap();
        let env = Envelope::parse_in(&file, &DOMAIN).unwrap();
        let c = Channel::parse_body(&env.body).unwrap();
        let d = fs::read(&delta).unwrap();
        let v1 = fs::read(format!("{dir}/v1.img")).unwrap();
        let r1 = regions(&v1);
        let v1_env: [u8; 32] =
            Sha256::digest(&v1[r1.manifest_offset..r1.manifest_offset + r1.manifest_len]).into();
        assert!(c.releases[0].deltas.is_empty());
        let listed = &c.releases[1].deltas;
        assert_eq!(listed.len(), 1);
        let l = &listed[0];
        assert_eq!(l.from_version, "1.0.0");
        assert_eq!(l.from_sha256, v1_env);
        assert_eq!(l.from_sha256, c.releases[0].manifest_sha256);
        assert_eq!(l.url, url);
        assert_eq!(l.length, d.len() as u64);
        assert_eq!(l.sha256, <[u8; 32]>::from(Sha256::digest(&d)));
        // The index and trailer: the trailer's frame and copy-run counts say how long.
        let count = |at: usize| {
            u32::from_le_bytes(
                d[d.len() - 96 + at..d.len() - 96 + at + 4]
                    .try_into()
                    .unwrap(),
            ) as usize
        };
        let il = 96 + 32 * count(16) + 24 * count(20);
        assert_eq!(
            l.index_sha256,
            <[u8; 32]>::from(Sha256::digest(&d[d.len() - il..]))
        );
    }

    // Refusals: one line naming the cause, exit 2, no channel written.
    let _ = fs::remove_file(format!("{dir}/stable.channel"));
    let not_delta = format!("{dir}/v3.img");
    for (extra, needle) in [
        (
            vec![
                "--release",
                "1.0.0=v1.img",
                "--release",
                "3.0.0=v3.img",
                "--delta",
                &delta,
            ],
            "which no --release gives: not a delta to a release of this channel",
        ),
        (
            vec!["--release", "2.0.0=v2.img", "--delta", &delta],
            "which no --release gives: list that release too",
        ),
        (
            vec!["--release", "1.0.0=v1.img", "--delta", &not_delta],
            "not a stele delta",
        ),
        (
            vec!["--release", "1.0.0=v1.img", "--delta", "=x"],
            "expected FILE or FILE=URL",
        ),
    ] {
        let r = build(&fx, &dir, &extra);
        assert_eq!(r.code, 2, "{needle}: {r:?}");
        assert!(r.stderr.contains(needle), "{needle}: {r:?}");
        assert_eq!(r.stderr.lines().count(), 1, "{r:?}");
        assert!(!fx.path("www/stable.channel").exists(), "{needle}");
    }
    // A URL the channel's rule refuses: the device's rule, one line.
    let bad = format!("{delta}=../{name}");
    let mut extra = all.to_vec();
    extra.extend(["--delta", &bad]);
    let r = build(&fx, &dir, &extra);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("may not contain .."), "{r:?}");
}

//! Resume: the connection is cut at 100 random byte offsets of the image; each time the
//! install dies there (no retries), and a re-run completes from what the slot holds,
//! fetching again at most the block that was cut (plus the signed metadata).

use std::fs;

use crate::fixture::{xorshift, Fault, FaultServer, Fixture};
use crate::net::http::{assert_v2_in_b, install, pair};

/// Data blocks the plan line of an install says it fetches:
/// `update: plan: fetch N bytes in R ranges, reuse M bytes (K kept, C copied, Z zero blocks)`.
fn plan_counts(stderr: &str) -> (u64, u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("stele: update: plan: "))
        .unwrap_or_else(|| panic!("no plan line: {stderr}"));
    let inner = line.rsplit_once('(').unwrap().1;
    let n: Vec<u64> = inner
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    (n[0], n[1], n[2])
}

#[test]
fn a_cut_anywhere_resumes_fetching_only_what_is_missing() {
    let fx = Fixture::new();
    // 400 KiB of new data: about 100 blocks to fetch, in a 2 MiB image.
    let p = pair(&fx, 400 * 1024);
    let v2 = fs::read(&p.v2).unwrap();
    let regions = crate::util::regions(&v2);
    let blocks = regions.data_blocks as u64;

    // Without faults: which blocks a fresh install fetches.
    let clean = fx.p("clean.img");
    fs::copy(&p.disk, &clean).unwrap();
    let server = FaultServer::start(v2.clone());
    let out = install(&p, &clean, &server.url(), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let (kept, copied, zero) = plan_counts(&out.stderr);
    let to_fetch = blocks - kept - copied - zero;
    assert!(to_fetch > 50, "{out:?}");
    // The file offsets of the fetched data (ranges of the log, before the tree).
    let mut fetched_blocks: Vec<u64> = Vec::new();
    for l in server.log() {
        let Some(r) = l.strip_prefix("bytes=") else {
            continue;
        };
        let (a, rest) = r.split_once('-').unwrap();
        let Ok(a) = a.parse::<u64>() else { continue };
        let b: u64 = rest.split(' ').next().unwrap().parse().unwrap();
        if b < regions.hash_offset as u64 {
            fetched_blocks.extend(a / 4096..=b / 4096);
        }
    }
    assert_eq!(fetched_blocks.len() as u64, to_fetch);

    let disk = fx.p("cut.img");
    for (i, x) in xorshift(0x5eed_f1ee7).take(100).enumerate() {
        let k = x % v2.len() as u64;
        fs::copy(&p.disk, &disk).unwrap();
        let server = FaultServer::start(v2.clone());
        server.faults(&[Fault::CutAt(k)]);
        let first = install(&p, &disk, &server.url(), &["--deadline", "0"]);
        if first.code == 0 {
            // The cut fell on bytes the install never asks for (reused data, padding).
            let meta = [
                (regions.hash_offset, regions.hash_tree_end),
                (
                    regions.manifest_offset,
                    regions.manifest_offset + regions.manifest_len,
                ),
                (regions.footer, v2.len()),
            ];
            assert!(
                !fetched_blocks.contains(&(k / 4096))
                    && !meta.iter().any(|&(a, b)| (a as u64..b as u64).contains(&k)),
                "cut {i} at {k}: {first:?}"
            );
            assert_v2_in_b(&p, &disk);
            continue;
        }
        assert_eq!(first.code, 3, "cut {i} at {k}: {first:?}");
        let again = install(&p, &disk, &server.url(), &[]);
        assert_eq!(again.code, 0, "cut {i} at {k}: {again:?}");
        assert_v2_in_b(&p, &disk);
        let (kept2, copied2, zero2) = plan_counts(&again.stderr);
        let refetched = blocks - kept2 - copied2 - zero2;
        // What the first run had not received when the cut came (all of it when the cut
        // came in the footer, manifest or tree, which are fetched first).
        let missing = if k >= regions.hash_offset as u64 {
            to_fetch
        } else {
            fetched_blocks
                .iter()
                .filter(|&&b| (b + 1) * 4096 > k)
                .count() as u64
        };
        assert!(
            refetched <= missing + 1,
            "cut {i} at {k}: {refetched} blocks fetched again, {missing} were missing"
        );
    }
}

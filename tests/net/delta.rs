//! The published delta `NEW.img.from-<16 hex>.delta` that `stele image delta` writes,
//! served by nginx beside the image and its compressed form: the device running v1 finds
//! it by its name, the planner takes it when it costs the fewest bytes (and says so), the
//! device writes it without fetching v2's hash tree (rebuilt and checked against the
//! signed root hash), the slot equals v2 byte for byte, a cut install resumes with the
//! tree, and a delta that lies (a tampered frame, a bomb) only costs bytes: one line names
//! it and the install completes with the tree.

use std::fs;

use stele_engine::delta::apply::partial_record;
use stele_engine::delta::published::{self, index_len, DeltaIndex, PatchFrame, TRAILER_LEN};

use crate::fixture::{partition, xorshift, Fixture, Nginx};
use crate::net::http::{assert_v2_in_b, fetched, install, install_saying, noise, way_bytes, Pair};
use crate::util::{ok, stele};

/// `v` as an index (the test's files are small).
fn us(v: u64) -> usize {
    usize::try_from(v).unwrap()
}

/// Text: compresses, and a few changed words patch well.
fn text(len: usize, seed: u64) -> Vec<u8> {
    let words = ["alpha", "beta", "gamma", "delta", "kappa", "omega", "sigma"];
    let mut s = String::new();
    for x in xorshift(seed | 1) {
        if s.len() >= len {
            break;
        }
        s.push_str(words[(x % 7) as usize]);
        s.push_str(&format!("{} ", x % 100_000));
    }
    s.into_bytes()[..len].to_vec()
}

/// v1 in slot a of a disk; v2: the same ballast, a text file with words changed in place
/// and 20 KB appended (a security fix); v2's compressed form and the delta from v1,
/// served from `www/`. Returns the pair, nginx and the delta's file name.
pub(crate) fn served(fx: &Fixture) -> (Pair, Nginx, String) {
    let (key, public) = fx.keygen("release");
    let ballast = noise(400_000, 7);
    let doc = text(900_000, 3);
    let mut doc2 = doc.clone();
    for at in (10_000..880_000).step_by(97_000) {
        doc2[at..at + 6].copy_from_slice(b"PATCH!");
    }
    doc2.extend(text(20_000, 5));
    let r1 = fx
        .tree("r1", false)
        .file("srv/ballast", &ballast, 0o644)
        .file("srv/doc.txt", &doc, 0o644)
        .build();
    let r2 = fx
        .tree("r2", false)
        .file("srv/ballast", &ballast, 0o644)
        .file("srv/doc.txt", &doc2, 0o644)
        .build();
    let img = |r: &str, v: &str, i: u64, out: &str| {
        fx.image(r, &key)
            .version(v)
            .index(i)
            .compressed()
            .build(out)
    };
    let v1 = img(&r1, "1.0.0", 1, "v1.img");
    let v2 = img(&r2, "2.0.0", 2, "v2.img");
    let out = ok(stele(&["image", "delta", &v1, &v2, "--key", &public]));
    let path = out
        .lines()
        .find_map(|l| l.strip_prefix("delta: wrote "))
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    let name = path.rsplit('/').next().unwrap().to_string();
    assert!(
        name.starts_with("v2.img.from-") && name.ends_with(".delta") && name.len() == 34,
        "{name}"
    );
    let disk = fx.disk(&v1).slot_size("8M").no_data().build();
    fs::create_dir_all(fx.path("www")).unwrap();
    fs::copy(&v2, fx.path("www/v2.img")).unwrap();
    fs::copy(format!("{v2}.zst"), fx.path("www/v2.img.zst")).unwrap();
    fs::copy(&path, fx.path(&format!("www/{name}"))).unwrap();
    let nginx = fx.nginx("www");
    let p = Pair {
        public,
        key,
        v1,
        v2,
        disk,
    };
    (p, nginx, name)
}

/// Bytes nginx sent in answers with data (200/206), from its log lines.
fn sent(log: &[String]) -> u64 {
    log.iter()
        .filter(|l| l.split(' ').nth(2).is_some_and(|s| s.starts_with('2')))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[test]
fn nginx_serves_a_published_delta_and_the_planner_takes_it() {
    let fx = Fixture::new();
    let (p, nginx, name) = served(&fx);
    let url = nginx.url("v2.img");
    let plan = ok(stele(&[
        "update", "plan", "--disk", &p.disk, "--key", &p.public, &url,
    ]));
    assert!(plan.contains("plan: way delta: delta "), "{plan}");
    assert!(
        plan.contains(
            "; the hash tree is rebuilt from them and checked against the signed root hash"
        ),
        "{plan}"
    );
    let (zstd, delta) = (way_bytes(&plan, "zstd"), way_bytes(&plan, "delta"));
    assert!(
        delta < zstd,
        "delta {delta} bytes, whole zstd {zstd}: {plan}"
    );
    // What the plan says is fetched: the delta, the footer and the manifest, the read of
    // the `.zst`'s table (to price the whole image that way); no tree.
    let v2 = fs::read(&p.v2).unwrap();
    let r = crate::util::regions(&v2);
    let tree = (r.hash_tree_end - r.hash_offset) as u64;
    let planned_fetch: u64 = plan
        .lines()
        .find_map(|l| l.strip_prefix("plan: fetch "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{plan}"));
    assert!(
        planned_fetch <= delta + 4096 + r.manifest_len as u64 + 4096 && tree > 0,
        "{plan}"
    );
    let planned = nginx.log().len();

    let out = install(&p, &p.disk, &url, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_v2_in_b(&p, &p.disk);
    assert!(out.stdout.contains("; way delta ("), "{}", out.stdout);
    assert!(
        out.stderr
            .contains("the hash tree rebuilt from slot b has the signed root hash"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains(" delta frames for "), "{}", out.stdout);
    // Regression: the summary counted only the image's requests ("0 requests" when every
    // block came from the delta); each delta frame fetched is a request too.
    let number_before = |s: &str, key: &str| -> u64 {
        let head = s.split(key).next().unwrap();
        head.rsplit([' ', '(']).next().unwrap().parse().unwrap()
    };
    let requests = number_before(&out.stdout, " requests)");
    let frames = number_before(&out.stdout, " delta frames for ");
    assert!(frames > 0 && requests >= frames, "{}", out.stdout);
    let log = nginx.log().split_off(planned);
    assert!(
        log.iter()
            .any(|l| l.starts_with(&format!("GET /{name} 206 "))),
        "{log:?}"
    );
    // What nginx sent is what the summary says, and what the plan said.
    assert_eq!(sent(&log), fetched(&out.stdout), "{log:?}");
    assert_eq!(fetched(&out.stdout), planned_fetch, "{plan}");
}

/// A power cut while the data are written leaves slot b with a prefix of v2 (the writer
/// goes in order) and, where its footer goes, the record of an unfinished install of v2;
/// a new run fetches the signed tree, keeps what is in place and fetches the rest, from
/// the delta again. Cut at random offsets of the data.
#[test]
fn a_delta_install_cut_at_random_offsets_resumes() {
    let fx = Fixture::new();
    let (p, nginx, _) = served(&fx);
    let url = nginx.url("v2.img");
    let v2 = fs::read(&p.v2).unwrap();
    let data_end = crate::util::regions(&v2).hash_offset as u64;
    let (off, len) = partition(&p.disk, "stele-root-b");
    for x in xorshift(0xc0ff_ee21).take(4) {
        let cut = x % data_end;
        let disk = fx.p(&format!("cut-{cut}.img"));
        fs::copy(&p.disk, &disk).unwrap();
        let mut d = fs::read(&disk).unwrap();
        let at = us(off);
        d[at..at + us(cut)].copy_from_slice(&v2[..us(cut)]);
        let footer = us(off + len) - 4096;
        let envelope =
            stele_verifier::slot::locate(&mut std::io::Cursor::new(&v2), v2.len() as u64)
                .unwrap()
                .envelope;
        d[footer..footer + 4096].copy_from_slice(&partial_record(&envelope));
        fs::write(&disk, d).unwrap();
        // Not bootable, and `status` says so as for a slot never written.
        let status = ok(stele(&[
            "update", "status", "--disk", &disk, "--key", &p.public,
        ]));
        assert!(
            status
                .lines()
                .any(|l| l.starts_with("slot b:") && l.contains(" empty ")),
            "{status}"
        );
        let out = install(&p, &disk, &url, &[]);
        assert_eq!(out.code, 0, "cut at {cut}: {out:?}");
        assert_v2_in_b(&p, &disk);
        let kept = out
            .stdout
            .split("(kept ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{}", out.stdout));
        assert!(kept >= cut / 4096, "cut at {cut}: {}", out.stdout);
        assert!(
            out.stderr
                .contains("the target slot holds part of this release"),
            "{}",
            out.stderr
        );
    }
}

/// The delta file with frame `k`'s bytes replaced by `frame(bytes)` (the index updated).
fn replace_frame(
    fx: &Fixture,
    name: &str,
    k: usize,
    frame: &dyn Fn(&PatchFrame, &[u8]) -> Vec<u8>,
) {
    use stele_engine::delta::published::encode_index;
    let path = fx.path(&format!("www/{name}"));
    let d = fs::read(&path).unwrap();
    let il = us(index_len(&d[d.len() - TRAILER_LEN..]).unwrap());
    let idx = DeltaIndex::parse(&d[d.len() - il..], d.len() as u64).unwrap();
    let mut frames = idx.frames.clone();
    let mut bodies = Vec::new();
    for (i, f) in idx.frames.iter().enumerate() {
        let mut b = d[us(f.offset)..us(f.offset + f.len)].to_vec();
        if i == k {
            b = frame(f, &b);
            frames[i].len = b.len() as u64;
        }
        bodies.push(b);
    }
    let mut out: Vec<u8> = bodies.concat();
    out.extend(encode_index(
        u32::try_from(idx.block_size).unwrap(),
        idx.new_len,
        &idx.old_envelope,
        &idx.new_envelope,
        &frames,
        &idx.runs,
    ));
    fs::write(path, out).unwrap();
}

/// A delta frame whose bytes were changed (valid zstd of other data) is written, but the
/// tree rebuilt from the slot does not have the signed root hash: the delta is given up
/// in one line, nothing is flipped, and the install goes on with the signed tree, which
/// keeps the blocks that match it and fetches the tampered frame's blocks another way.
#[test]
fn a_tampered_delta_frame_is_refused_and_the_install_completes() {
    let fx = Fixture::new();
    let (p, nginx, name) = served(&fx);
    replace_frame(&fx, &name, 0, &|f, _| {
        zstd::bulk::compress(&text(us(f.blocks) * 4096, 11), 3).unwrap()
    });
    let (out, line) = install_saying(&p, &nginx.url("v2.img"), "the delta was given up");
    assert!(
        line.contains("the hash tree rebuilt from the blocks it gave has root "),
        "{line}"
    );
    assert!(line.contains(", not the signed "), "{line}");
    // The blocks the delta gave right were kept, not fetched again.
    let kept = out
        .stdout
        .split("(kept ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{}", out.stdout));
    assert!(kept > 0, "{}", out.stdout);
    // The summary counts every byte nginx sent: the delta given up, the tree, the rest.
    assert_eq!(sent(&nginx.log()), fetched(&out.stdout));
}

/// Regression (decompression bomb): a delta frame that decodes to far more than its index
/// entry says is refused with one line naming it; the install completes.
#[test]
fn a_decompression_bomb_delta_frame_is_refused_with_one_line() {
    let fx = Fixture::new();
    let (p, nginx, name) = served(&fx);
    replace_frame(&fx, &name, 0, &|_, _| {
        zstd::bulk::compress(&vec![0u8; 64 << 20], 19).unwrap()
    });
    let out = install(&p, &p.disk, &nginx.url("v2.img"), &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_v2_in_b(&p, &p.disk);
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("decompresses to more than"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(
        lines[0].contains("delta frame 0 decompresses to more than its "),
        "{}",
        lines[0]
    );
}

/// A published delta larger than the whole compressed image (each frame replaced by a
/// megabyte that does not compress) is not taken: the planner says why in one line and
/// takes the compressed form's frames; nothing of the delta is fetched but its index.
#[test]
fn the_planner_takes_the_compressed_image_when_the_delta_is_larger() {
    let fx = Fixture::new();
    let (p, nginx, name) = served(&fx);
    let d = fs::read(fx.path(&format!("www/{name}"))).unwrap();
    let frames = published::listing(&d).unwrap().0.frames.len();
    for k in 0..frames {
        replace_frame(&fx, &name, k, &|f, _| noise(1 << 20, 9 + f.index));
    }
    let zst = fs::metadata(fx.path("www/v2.img.zst")).unwrap().len();
    assert!(zst < 1 << 20, "the whole .zst is {zst} bytes");
    let (out, line) = install_saying(
        &p,
        &nginx.url("v2.img"),
        "the delta is not written without the hash tree: ",
    );
    assert!(
        line.contains("bytes are not fewer than the whole image's ")
            && line.ends_with(" by the zstd way"),
        "{line}"
    );
    assert!(out.stdout.contains("; way zstd ("), "{}", out.stdout);
    // Only the delta's index was read (its last 4 KiB), no frame.
    let delta_bytes: u64 = nginx
        .log()
        .iter()
        .filter(|l| l.starts_with(&format!("GET /{name} 206 ")))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(
        delta_bytes <= 4096,
        "{delta_bytes} bytes of the delta fetched"
    );
}

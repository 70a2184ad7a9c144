//! The compressed form `IMAGE.img.zst` that `stele image build` writes beside each image,
//! served by nginx next to it: the planner takes its frames when they cost fewer bytes
//! than the raw blocks (and says so, with the bytes of each way), the slot still equals
//! the image byte for byte, and a compressed form that lies (a tampered frame, a
//! decompression bomb) only costs bytes: one line names it and the install completes
//! from the raw image.

#![allow(clippy::cast_possible_truncation)] // test sizes are small

use std::fs;

use stele_engine::delta::zst::{encode_table, table_len, SeekTable};

use crate::fixture::{Fixture, Nginx};
use crate::net::http::{
    assert_v2_in_b, fetched, install, install_saying, noise, signed_bytes, way_bytes, Pair,
};
use crate::util::{ok, stele};

/// Text-like bytes: compress well, and no block repeats another.
fn text(len: usize) -> Vec<u8> {
    let mut s = String::new();
    let mut i = 0u64;
    while s.len() < len {
        s.push_str(&format!(
            "line {i}: the quick brown fox jumps over the lazy dog {}\n",
            i * 7919 % 1000
        ));
        i += 1;
    }
    s.into_bytes()[..len].to_vec()
}

/// v1 in slot a of a disk, v2 = v1 plus 1.5 MB of new text, both with their compressed
/// forms (written by `stele image build` by default), served from `www/`.
fn served(fx: &Fixture) -> (Pair, Nginx) {
    let (key, public) = fx.keygen("release");
    let ballast = noise(600_000, 7);
    let r1 = fx
        .tree("r1", false)
        .file("srv/ballast", &ballast, 0o644)
        .build();
    let r2 = fx
        .tree("r2", false)
        .file("srv/ballast", &ballast, 0o644)
        .file("srv/new.txt", text(1_500_000), 0o644)
        .build();
    let v1 = fx
        .image(&r1, &key)
        .version("1.0.0")
        .index(1)
        .compressed()
        .build("v1.img");
    let v2 = fx
        .image(&r2, &key)
        .version("2.0.0")
        .index(2)
        .compressed()
        .build("v2.img");
    assert!(
        fs::metadata(format!("{v2}.zst")).is_ok(),
        "no {v2}.zst beside the image"
    );
    let disk = fx.disk(&v1).slot_size("8M").no_data().build();
    fs::create_dir_all(fx.path("www")).unwrap();
    fs::copy(&v2, fx.path("www/v2.img")).unwrap();
    fs::copy(format!("{v2}.zst"), fx.path("www/v2.img.zst")).unwrap();
    let nginx = fx.nginx("www");
    (
        Pair {
            public,
            key,
            v1,
            v2,
            disk,
        },
        nginx,
    )
}

#[test]
fn nginx_serves_the_compressed_form_and_the_planner_takes_it() {
    let fx = Fixture::new();
    let (p, nginx) = served(&fx);
    let url = nginx.url("v2.img");
    let plan = ok(stele(&[
        "update", "plan", "--disk", &p.disk, "--key", &p.public, &url,
    ]));
    assert!(plan.contains("plan: way zstd: raw "), "{plan}");
    assert!(plan.contains(" bytes (chosen)"), "{plan}");
    let (raw, zstd) = (way_bytes(&plan, "raw"), way_bytes(&plan, "zstd"));
    assert!(zstd * 3 < raw, "zstd {zstd} bytes, raw {raw}: {plan}");
    let planned = nginx.log().len();

    let out = install(&p, &p.disk, &url, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_v2_in_b(&p, &p.disk);
    assert!(out.stdout.contains("; way zstd ("), "{}", out.stdout);
    assert!(
        out.stderr.contains("stele: update: way zstd: raw "),
        "{}",
        out.stderr
    );
    // What nginx sent is what the summary says; the data part is what the plan said.
    let log = nginx.log().split_off(planned);
    // Answers with data (the 404 of the delta looked for beside the image is not one).
    let sent: u64 = log
        .iter()
        .filter(|l| l.split(' ').nth(2).is_some_and(|s| s.starts_with('2')))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    let got = fetched(&out.stdout);
    assert_eq!(sent, got, "{log:?}");
    // Signed first (footer, manifest, tree of v2.img), then the ways: the rest is the
    // zstd way's table, frames and raw blocks, exactly as planned.
    let meta = signed_bytes(&log);
    assert_eq!(
        got - meta,
        zstd,
        "the zstd way fetched other than it planned: {log:?}"
    );
    assert!(
        log.iter().any(|l| l.starts_with("GET /v2.img.zst 206 ")),
        "{log:?}"
    );
}

/// `stele image diff` prices the ways as the device's planner does: with `v2.img.zst`
/// beside `v2.img` its way line is `update plan`'s (the same raw and zstd bytes, zstd
/// chosen) and its fetch line counts the chosen way; without it, raw and why.
#[test]
fn image_diff_prices_the_compressed_form_beside_the_image_as_the_plan_does() {
    let fx = Fixture::new();
    let (p, nginx) = served(&fx);
    let plan = ok(stele(&[
        "update",
        "plan",
        "--disk",
        &p.disk,
        "--key",
        &p.public,
        &nginx.url("v2.img"),
    ]));
    let (raw, zstd) = (way_bytes(&plan, "raw"), way_bytes(&plan, "zstd"));
    let diff = ok(stele(&["image", "diff", &p.v1, &p.v2, "--key", &p.public]));
    assert!(
        diff.contains(&format!(
            "diff: way zstd: raw {raw} bytes, zstd {zstd} bytes (chosen)"
        )),
        "{diff}\n{plan}"
    );
    assert!(
        diff.contains(" fetches ") && diff.contains(&format!(" ({zstd} of data, way zstd, ")),
        "{diff}"
    );
    // Without it (and without the chained form, priced the same way: tests/net/lzc.rs).
    fs::remove_file(format!("{}.zst", p.v2)).unwrap();
    fs::remove_file(format!("{}.lzc", p.v2)).unwrap();
    let diff = ok(stele(&["image", "diff", &p.v1, &p.v2, "--key", &p.public]));
    assert!(
        diff.contains(&format!(
            "diff: way raw: raw {raw} bytes (chosen), no zstd way: "
        )),
        "{diff}"
    );
    assert!(
        diff.contains(&format!(" ({raw} of data, way raw, ")),
        "{diff}"
    );
}

/// The compressed file of `p.v2` with frame `k` replaced by `frame`, served as
/// `www/v2.img.zst`.
fn replace_frame(fx: &Fixture, p: &Pair, k: u64, frame: &dyn Fn(&[u8]) -> Vec<u8>) {
    let z = fs::read(format!("{}.zst", p.v2)).unwrap();
    let img_len = fs::metadata(&p.v2).unwrap().len();
    let len = z.len() as u64;
    let tl = table_len(&z[z.len() - 9..], len).unwrap();
    let t = SeekTable::parse(&z[(len - tl) as usize..], len, img_len, 4096).unwrap();
    let mut out = Vec::new();
    let mut entries = Vec::new();
    for i in 0..t.frames() {
        let f = t.frame(i).unwrap();
        let mut bytes = z[f.offset as usize..(f.offset + f.len) as usize].to_vec();
        if i == k {
            bytes = frame(&bytes);
        }
        entries.push((bytes.len() as u32, f.raw_len as u32));
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(&encode_table(&entries));
    fs::write(fx.path("www/v2.img.zst"), out).unwrap();
}

/// The first frame that holds the new file's text (a frame the install takes).
fn text_frame(p: &Pair) -> u64 {
    let v2 = fs::read(&p.v2).unwrap();
    let needle = &text(1_500_000)[..64];
    let at = v2.windows(64).position(|w| w == needle).unwrap() as u64;
    at / stele_engine::delta::zst::FRAME_RAW + 1
}

/// A frame whose bytes were changed (still valid zstd, other data) is refused block by
/// block against the signed tree; the install completes from the raw image.
#[test]
fn a_tampered_frame_is_refused_and_the_install_completes_raw() {
    let fx = Fixture::new();
    let (p, nginx) = served(&fx);
    let k = text_frame(&p);
    replace_frame(&fx, &p, k, &|_| {
        zstd::bulk::compress(&text(262_144)[..], 3).unwrap()
    });
    let (_, line) = install_saying(&p, &nginx.url("v2.img"), "the zstd way was given up");
    assert!(
        line.contains(&format!("frame {k} gave data block")),
        "{line}"
    );
    assert!(
        line.contains("does not match the signed hash tree"),
        "{line}"
    );
}

/// Regression (decompression bomb): a frame that decodes to far more than the table says
/// is refused with one line naming it, and the install completes from the raw image.
#[test]
fn a_decompression_bomb_frame_is_refused_with_one_line() {
    let fx = Fixture::new();
    let (p, nginx) = served(&fx);
    let k = text_frame(&p);
    replace_frame(&fx, &p, k, &|_| {
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
        lines[0].contains(&format!(
            "frame {k} decompresses to more than its 262144 bytes: refused"
        )),
        "{}",
        lines[0]
    );
}

/// `--no-compressed` writes no `.zst`; without the compressed form the install is raw and
/// says why.
#[test]
fn without_a_compressed_form_the_install_is_raw() {
    let fx = Fixture::new();
    let (p, nginx) = served(&fx);
    fs::remove_file(fx.path("www/v2.img.zst")).unwrap();
    let plan = ok(stele(&[
        "update",
        "plan",
        "--disk",
        &p.disk,
        "--key",
        &p.public,
        &nginx.url("v2.img"),
    ]));
    assert!(plan.contains("plan: way raw: raw "), "{plan}");
    assert!(
        plan.contains("no zstd way: ") && plan.contains("404"),
        "{plan}"
    );
    let r = fx.tree("r3", false).file("a", b"a", 0o644).build();
    // The fixture passes --no-compressed unless asked.
    let v3 = fx.image(&r, &p.key).build("v3.img");
    assert!(fs::metadata(&v3).is_ok());
    assert!(
        fs::metadata(format!("{v3}.zst")).is_err(),
        "--no-compressed wrote {v3}.zst"
    );
    // By default the build says what it wrote beside the image.
    let out = ok(fx.image(&r, &p.key).compressed().run("v4.img"));
    let v4 = fx.p("v4.img");
    let zlen = fs::metadata(format!("{v4}.zst")).unwrap().len();
    assert!(
        out.contains(&format!("compressed: {v4}.zst {zlen} bytes (")),
        "{out}"
    );
}

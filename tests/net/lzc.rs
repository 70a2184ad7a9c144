//! The chained form `IMAGE.img.lzc` that `stele image build` writes beside each image,
//! served by nginx next to it and the `.zst`: for an install that reuses nothing (a fresh
//! install) the planner takes it, since it costs fewer bytes than the independent zstd
//! frames (and says so); the fetch client decodes its frames in one run; the slot equals
//! the image byte for byte; a tampered chained frame only costs bytes.

#![allow(clippy::cast_possible_truncation)] // test sizes are small

use std::fs;

use stele_engine::delta::lzc::{parse_table, LZC};
use stele_engine::delta::zst::{encode_table_of, table_len_of};

use crate::fixture::{Fixture, Nginx};
use crate::net::http::{
    assert_v2_in_b, fetched, install, install_saying, noise, plan_fetch, signed_bytes, way_bytes,
    Pair,
};
use crate::util::{ok, stele};

/// Text whose lines repeat far apart (as a filesystem repeats a library's pages): a
/// window of a few MiB finds them, independent 256 KiB frames do not.
fn text(len: usize) -> Vec<u8> {
    let para: Vec<String> = (0..3000u64)
        .map(|i| {
            format!(
                "entry {i}: {:x} {}\n",
                i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                i * 7919 % 1000
            )
        })
        .collect();
    let mut s = String::new();
    let mut k = 0;
    while s.len() < len {
        s.push_str(&para[k % para.len()]);
        k += 1;
    }
    s.into_bytes()[..len].to_vec()
}

/// v1 (other bytes: nothing of v2 to reuse) in slot a of a disk; v2 with its `.zst` and
/// `.lzc`, served from `www/`.
fn served(fx: &Fixture) -> (Pair, Nginx) {
    let (key, public) = fx.keygen("release");
    let r1 = fx
        .tree("r1", false)
        .file("srv/other", noise(300_000, 3), 0o644)
        .build();
    let r2 = fx
        .tree("r2", false)
        .file("srv/doc.txt", text(9 << 20), 0o644)
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
    let disk = fx.disk(&v1).slot_size("16M").no_data().build();
    fs::create_dir_all(fx.path("www")).unwrap();
    for ext in ["", ".zst", ".lzc"] {
        fs::copy(format!("{v2}{ext}"), fx.path(&format!("www/v2.img{ext}"))).unwrap();
    }
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
fn a_fresh_install_takes_the_chained_form_and_fetches_what_it_planned() {
    let fx = Fixture::new();
    let (p, nginx) = served(&fx);
    let url = nginx.url("v2.img");
    let plan = ok(stele(&[
        "update", "plan", "--disk", &p.disk, "--key", &p.public, &url,
    ]));
    assert!(plan.contains("plan: way lzc: raw "), "{plan}");
    let (zstd, lzc) = (way_bytes(&plan, "zstd"), way_bytes(&plan, "lzc"));
    assert!(lzc < zstd, "lzc {lzc} bytes, zstd {zstd}: {plan}");
    let lzc_file = fs::metadata(format!("{}.lzc", p.v2)).unwrap().len();
    // The whole file at most, and the read of its table (the file's last 4 KiB).
    assert!(
        lzc <= lzc_file + 4096,
        "the way costs more than the whole file ({lzc_file} bytes): {plan}"
    );
    let planned = nginx.log().len();

    let out = install(&p, &p.disk, &url, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_v2_in_b(&p, &p.disk);
    assert!(out.stdout.contains("; way lzc ("), "{}", out.stdout);
    let log = nginx.log().split_off(planned);
    let meta = signed_bytes(&log);
    // Every byte: the signed metadata, the way, the `.zst`'s table read to price it; all
    // as the plan said.
    let other = plan_fetch(&plan, " of the other ways' tables");
    assert_eq!(fetched(&out.stdout) - meta, lzc + other, "{log:?}");
    assert_eq!(
        fetched(&out.stdout),
        plan_fetch(&plan, " bytes ("),
        "{plan}"
    );
    // Every frame came from the chained form: nothing raw, nothing from the .zst but its
    // table's read for the plan.
    assert!(
        !log.iter()
            .filter(|l| !l.contains(" 404 "))
            .skip_while(|l| l.starts_with("GET /v2.img "))
            .any(|l| l.starts_with("GET /v2.img 206 ")),
        "raw ranges fetched: {log:?}"
    );
    assert!(
        log.iter().any(|l| l.starts_with("GET /v2.img.lzc 206 ")),
        "{log:?}"
    );
}

/// A chained frame whose bytes were changed is refused (it does not decode, or its blocks
/// do not match the signed tree): one line names the way and the frame, and the install
/// completes from the raw image.
#[test]
fn a_tampered_chained_frame_is_refused_and_the_install_completes() {
    let fx = Fixture::new();
    let (p, nginx) = served(&fx);
    let l = fs::read(format!("{}.lzc", p.v2)).unwrap();
    let img_len = fs::metadata(&p.v2).unwrap().len();
    let len = l.len() as u64;
    let tl = table_len_of(&LZC, &l[l.len() - 9..], len).unwrap();
    let t = parse_table(&l[(len - tl) as usize..], len, img_len, 4096).unwrap();
    assert!(t.frames() >= 2, "{} frames", t.frames());
    let mut out = Vec::new();
    let mut entries = Vec::new();
    for i in 0..t.frames() {
        let f = t.frame(i).unwrap();
        let mut bytes = l[f.offset as usize..(f.offset + f.len) as usize].to_vec();
        if i == 1 {
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x5A;
        }
        entries.push((bytes.len() as u32, f.raw_len as u32));
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(&encode_table_of(&LZC, &entries));
    fs::write(fx.path("www/v2.img.lzc"), out).unwrap();
    let (_, line) = install_saying(&p, &nginx.url("v2.img"), "the lzc way was given up");
    assert!(line.contains("frame 1"), "{line}");
}

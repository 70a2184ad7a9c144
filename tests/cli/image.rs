//! Building, verifying and inspecting slot images; layout per FORMATS.md; atomic output.

use crate::fixture::{Fixture, SALT};
use crate::util::*;

#[test]
fn build_verify_inspect_round_trip() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("a");
    let img = fx.build("s.img", &k);
    let bytes = std::fs::read(&img).unwrap();
    let r = regions(&bytes);
    assert_eq!(r.sig_count, 1);
    assert!(
        r.data_blocks > 128,
        "the fixture should need two tree levels"
    );
    let body = String::from_utf8(body(&bytes)).unwrap();
    for line in [
        "format_version = 1",
        "name = \"demo\"",
        "version = \"1.0.0\"",
        "rollback_index = 7",
        "created = 0",
        "type = \"erofs\"",
        "algorithm = \"sha256\"",
    ] {
        assert!(body.contains(line), "{line:?} not in\n{body}");
    }
    assert!(body.contains(SALT), "{body}");
    let s = ok(stele(&["verify", &img, "--key", &p]));
    let (id, _) = signature(&bytes, 0);
    assert!(
        s.starts_with(&format!(
            "verified: demo 1.0.0 rollback_index=7 signed by {id} root_hash="
        )),
        "{s}"
    );
    ok(stele(&["verify", &img, "--key", &p, "--full"]));
    let s = ok(stele(&["inspect", &img]));
    assert!(s.contains("NOT VERIFIED"), "{s}");
    assert!(s.contains(&id), "{s}");
    let j: serde_json::Value =
        serde_json::from_str(&ok(stele(&["inspect", &img, "--json"]))).unwrap();
    assert_eq!(j["verified"], false);
    assert_eq!(j["signatures"][0], id.as_str());
    assert_eq!(j["manifest"]["rollback_index"], 7);
    assert_eq!(j["layout"]["manifest"]["offset"], r.manifest_offset as u64);
    assert_eq!(j["layout"]["hash_tree"]["offset"], r.hash_offset as u64);
    // Rollback floor.
    let out = stele(&["verify", &img, "--key", &p, "--rollback-floor", "8"]);
    fails(&out, 1, &["rollback"]);
    ok(stele(&[
        "verify",
        &img,
        "--key",
        &p,
        "--rollback-floor",
        "7",
    ]));
}

/// The footer is in the last 4 KiB of a partition larger than the image.
#[test]
fn verifies_inside_a_larger_partition() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("a");
    let img = fx.build("s.img", &k);
    let bytes = std::fs::read(&img).unwrap();
    let r = regions(&bytes);
    let mut part = bytes[..r.footer].to_vec();
    part.resize(r.footer + (1 << 20), 0xee);
    part.extend_from_slice(&bytes[r.footer..]);
    let path = fx.path("part.img");
    std::fs::write(&path, &part).unwrap();
    let path = path.display().to_string();
    let s = ok(stele(&["verify", &path, "--key", &p, "--full"]));
    assert!(s.starts_with("verified: demo 1.0.0"), "{s}");
    // The footer that counts is the one at the very end.
    let n = part.len();
    write_flipped(&part, n - 100, &fx.path("part2.img"));
    fails(
        &stele(&["verify", &fx.p("part2.img"), "--key", &p]),
        1,
        &["footer"],
    );
}

#[test]
fn created_follows_source_date_epoch() {
    let fx = Fixture::new();
    let (k, _) = fx.keygen("a");
    let root = fx.tree("root", false).build();
    let build = fx.image(&root, &k).version("2").fs("squashfs");
    let img = build.clone().epoch("1700000000").build("s.img");
    let body = String::from_utf8(body(&std::fs::read(&img).unwrap())).unwrap();
    assert!(body.contains("created = 1700000000"), "{body}");
    assert!(body.contains("type = \"squashfs\""), "{body}");
    let out = build.epoch("soon").run("s.img");
    fails(&out, 2, &["SOURCE_DATE_EPOCH"]);
}

#[test]
fn hash_tree_is_accepted_by_veritysetup() {
    let fx = Fixture::new();
    let (k, _) = fx.keygen("a");
    let img = fx.build("s.img", &k);
    let bytes = std::fs::read(&img).unwrap();
    let r = regions(&bytes);
    let b = String::from_utf8(body(&bytes)).unwrap();
    let root = b
        .lines()
        .find_map(|l| l.strip_prefix("root_hash = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap()
        .to_string();
    let o = host(
        "veritysetup",
        &[
            "verify",
            "--no-superblock",
            &format!("--hash-offset={}", r.hash_offset),
            &format!("--data-blocks={}", r.data_blocks),
            &format!("--salt={SALT}"),
            &img,
            &img,
            &root,
        ],
    );
    assert_eq!(o.code, 0, "veritysetup refused stele's tree: {o:?}");
}

#[test]
fn wraps_an_existing_filesystem_image() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("a");
    let root = fx.tree("root", false).build();
    let fsimg = fx.p("root.erofs");
    let o = host("mkfs.erofs", &[&fsimg, &root]);
    assert_eq!(o.code, 0, "{o:?}");
    let img = fx
        .fs_image(&fsimg, &k)
        .name("wrapped")
        .version("3")
        .index(3)
        .args(&["--data-block-size", "1024", "--hash-block-size", "4096"])
        .build("s.img");
    let bytes = std::fs::read(&img).unwrap();
    let fs = std::fs::read(&fsimg).unwrap();
    assert_eq!(&bytes[..fs.len()], fs.as_slice());
    let s = ok(stele(&["verify", &img, "--key", &p, "--full"]));
    assert!(s.starts_with("verified: wrapped 3 rollback_index=3"), "{s}");
    let j: serde_json::Value =
        serde_json::from_str(&ok(stele(&["inspect", &img, "--json"]))).unwrap();
    assert_eq!(j["manifest"]["filesystem"]["size"], fs.len() as u64);
    assert_eq!(j["manifest"]["verity"]["data_block_size"], 1024);
    assert_eq!(
        j["layout"]["hash_tree"]["offset"].as_u64().unwrap() % 4096,
        0
    );
}

#[test]
fn failed_build_leaves_nothing_behind() {
    let fx = Fixture::new();
    let (k, _) = fx.keygen("a");
    let out_dir = fx.path("out");
    std::fs::create_dir(&out_dir).unwrap();
    let missing = fx.p("no-such-dir");
    let out = fx.image(&missing, &k).version("1").run("out/s.img");
    fails(&out, 3, &["no-such-dir"]);
    // A name under the rootfs that the ext4 build cannot take (a backslash) fails
    // after the temporary output file was created.
    let root = fx.tree("root", false).build();
    std::fs::write(format!("{root}/back\\slash"), "x").unwrap();
    let out = fx.image(&root, &k).version("1").fs("ext4").run("out/s.img");
    fails(&out, 2, &["backslashes"]);
    assert_eq!(
        std::fs::read_dir(&out_dir).unwrap().count(),
        0,
        "leftovers in the output dir"
    );
}

#[test]
fn bad_arguments_are_usage_errors() {
    let fx = Fixture::new();
    let (k, _) = fx.keygen("a");
    let root = fx.tree("root", false).build();
    let x = || fx.image(&root, &k).name("x").version("1");
    fails(&x().name("bad name").run("s.img"), 2, &["--name"]);
    fails(&x().fs("vfat").run("s.img"), 2, &["vfat"]);
    fails(&x().salt("xyz").run("s.img"), 2, &["--salt"]);
    let dbs = x().args(&["--data-block-size", "1000"]).run("s.img");
    fails(&dbs, 2, &["--data-block-size"]);
    assert_eq!(stele(&["image", "build"]).code, 2);
    assert!(!fx.path("s.img").exists());
    // A malformed private key is the user's input: usage error naming the file.
    std::fs::write(fx.path("bad.key"), "not a key").unwrap();
    let out = fx
        .image(&root, &fx.p("bad.key"))
        .name("x")
        .version("1")
        .run("s.img");
    fails(&out, 2, &["bad.key"]);
}

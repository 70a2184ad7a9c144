//! `stele verity` produces exactly what `veritysetup format --no-superblock` produces.

use crate::fixture::{Fixture, SALT};
use crate::util::*;

fn root_line(s: &str) -> String {
    s.lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .map(|r| r.trim().to_string())
        .unwrap_or_else(|| panic!("no Root hash line in:\n{s}"))
}

#[test]
fn format_matches_veritysetup_and_verify_finds_the_bad_block() {
    need_tool("veritysetup");
    let fx = Fixture::new();
    let data: Vec<u8> = (0..1_000_000u32)
        .map(|i| u8::try_from(i % 251).unwrap_or(0))
        .collect();
    std::fs::write(fx.path("data"), &data).unwrap();
    let d = fx.p("data");
    let cases = [
        ("00ff11", "4096", "4096"),
        ("-", "512", "1024"),
        (SALT, "1024", "4096"),
    ];
    for (i, (salt, dbs, hbs)) in cases.into_iter().enumerate() {
        // Fresh files: veritysetup does not truncate an existing hash file.
        let (mine, theirs) = (
            fx.p(&format!("mine{i}.hash")),
            fx.p(&format!("theirs{i}.hash")),
        );
        let s = ok(stele(&[
            "verity",
            "format",
            &d,
            &mine,
            "--salt",
            salt,
            "--data-block-size",
            dbs,
            "--hash-block-size",
            hbs,
        ]));
        let o = host(
            "veritysetup",
            &[
                "format",
                "--no-superblock",
                &d,
                &theirs,
                &format!("--salt={salt}"),
                &format!("--data-block-size={dbs}"),
                &format!("--hash-block-size={hbs}"),
            ],
        );
        assert_eq!(o.code, 0, "{o:?}");
        assert_eq!(
            root_line(&s),
            root_line(&o.stdout),
            "root hash, salt {salt} {dbs}/{hbs}"
        );
        assert!(
            std::fs::read(&mine).unwrap() == std::fs::read(&theirs).unwrap(),
            "hash area differs from veritysetup's, salt {salt} {dbs}/{hbs}"
        );
        let root = root_line(&s);
        let mut args = vec![
            "verity",
            "verify",
            &d,
            &mine,
            &root,
            "--salt",
            salt,
            "--data-block-size",
            dbs,
            "--hash-block-size",
            hbs,
        ];
        ok(stele(&args));
        // One flipped byte in data block 9 is found and named.
        write_flipped(
            &data,
            9 * dbs.parse::<usize>().unwrap() + 17,
            &fx.path("bad"),
        );
        let bad = fx.p("bad");
        args[2] = &bad;
        fails(&stele(&args), 1, &["data block 9"]);
    }
    // Default salt: 32 random bytes, printed.
    let s = ok(stele(&["verity", "format", &d, &fx.p("h")]));
    let salt = s
        .lines()
        .find_map(|l| l.strip_prefix("Salt:"))
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(salt.len(), 64, "{s}");
    let s2 = ok(stele(&["verity", "format", &d, &fx.p("h2")]));
    assert_ne!(
        root_line(&s),
        root_line(&s2),
        "two random salts gave the same root"
    );
    // Usage errors.
    fails(
        &stele(&["verity", "format", &d, &fx.p("h3"), "--salt", "zz"]),
        2,
        &["--salt"],
    );
    fails(
        &stele(&["verity", "format", &d, &fx.p("h3"), "--data-blocks", "1000"]),
        2,
        &["too short"],
    );
}

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

/// A tree checked with other parameters than it was made with: the message names the
/// salt, block sizes and data block count used, and whether each was given or defaulted.
#[test]
fn verify_with_wrong_parameters_names_them() {
    let fx = Fixture::new();
    let data: Vec<u8> = (0..1_000_000u32)
        .map(|i| u8::try_from(i % 241).unwrap_or(0))
        .collect();
    std::fs::write(fx.path("data"), &data).unwrap();
    let (d, h) = (fx.p("data"), fx.p("hash"));
    let s = ok(stele(&["verity", "format", &d, &h, "--salt", "00ff"]));
    let root = root_line(&s);
    let hash = std::fs::read(&h).unwrap();
    let verify = |extra: &[&str]| {
        let mut a = vec!["verity", "verify", &d, &h, &root];
        a.extend_from_slice(extra);
        stele(&a)
    };
    ok(verify(&["--salt", "00ff"]));
    fails(
        &verify(&[]),
        1,
        &[
            "does not match ROOT",
            "salt - (default)",
            "data block size 4096 (default)",
            "244 data blocks (default: every whole block of DATA)",
            "give the --salt, block sizes and --data-blocks",
        ],
    );
    // With fewer data blocks the top block still matches; the first data block cannot.
    fails(
        &verify(&["--salt", "00ff", "--data-blocks", "100"]),
        1,
        &[
            "mismatch at data block 0",
            "other parameters",
            "salt 00ff,",
            "100 data blocks",
        ],
    );
    fails(
        &verify(&["--salt", "00ff", "--hash-block-size", "1024"]),
        1,
        &["hash block size 1024,", "does not match ROOT"],
    );
    fails(
        &verify(&["--salt", "00ff", "--data-block-size", "512"]),
        1,
        &[
            "truncated hash file",
            "data block size 512,",
            "1953 data blocks",
        ],
    );
    // Hex arguments say what is wrong with them.
    for (salt, why) in [
        ("0X00", "the 0X prefix is not hex"),
        ("zz", "z (character 1) is not a hex digit"),
        ("0f0", "3 digits is an odd number"),
    ] {
        fails(&verify(&["--salt", salt]), 2, &["invalid --salt", why]);
    }
    let o = stele(&["verity", "verify", &d, &h, "0x12"]);
    fails(&o, 2, &["invalid ROOT", "0x prefix is not hex"]);
    assert!(std::fs::read(&h).unwrap() == hash && std::fs::read(&d).unwrap() == data);
}

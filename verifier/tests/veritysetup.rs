//! Cross-check of stele's hash trees against `veritysetup format/verify --no-superblock`.
//!
//! Covers every data size (1, 2, 127, 128, 129, 16384, 16385 blocks and one pseudo-random
//! size), every salt length (0, 1, 32, 256 bytes) and every block size (512, 1024, 4096)
//! at least once, plus mixed combinations, without the full (slow) cartesian product.

use std::path::Path;
use std::process::Command;

use stele_verifier::hex;
use stele_verifier::verity::{build_tree, verify_data, VerityParams};

fn veritysetup() -> &'static str {
    let ok = Command::new("veritysetup")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "veritysetup is not installed or does not run: run `cargo xtask setup` (installs cryptsetup-bin)"
    );
    "veritysetup"
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
fn data_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn salt_arg(salt: &[u8]) -> String {
    if salt.is_empty() {
        "-".to_string()
    } else {
        hex::encode(salt)
    }
}

fn run(args: &[&str]) -> String {
    let out = Command::new(veritysetup())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run veritysetup: {e}; run `cargo xtask setup`"));
    assert!(
        out.status.success(),
        "veritysetup {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn vs_format(data: &Path, hash: &Path, (dbs, hbs): (u32, u32), salt: &[u8]) -> [u8; 32] {
    std::fs::write(hash, b"").unwrap();
    let (dbs, hbs) = (dbs.to_string(), hbs.to_string());
    let salt = salt_arg(salt);
    let out = run(&[
        "format",
        "--no-superblock",
        "--hash",
        "sha256",
        "--salt",
        &salt,
        "--data-block-size",
        &dbs,
        "--hash-block-size",
        &hbs,
        data.to_str().unwrap(),
        hash.to_str().unwrap(),
    ]);
    let line = out
        .lines()
        .find(|l| l.starts_with("Root hash:"))
        .unwrap_or_else(|| panic!("no 'Root hash:' line in veritysetup output:\n{out}"));
    let hex_root = line["Root hash:".len()..].trim();
    hex::decode(hex_root)
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .unwrap_or_else(|| panic!("bad root hash {hex_root:?}"))
}

fn vs_verify(
    data: &Path,
    hash: &Path,
    (dbs, hbs): (u32, u32),
    salt: &[u8],
    root: &[u8; 32],
) -> bool {
    let (dbs, hbs) = (dbs.to_string(), hbs.to_string());
    let salt = salt_arg(salt);
    Command::new(veritysetup())
        .args([
            "verify",
            "--no-superblock",
            "--hash",
            "sha256",
            "--salt",
            &salt,
            "--data-block-size",
            &dbs,
            "--hash-block-size",
            &hbs,
            data.to_str().unwrap(),
            hash.to_str().unwrap(),
            &hex::encode(root),
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn check(blocks: u64, (dbs, hbs): (u32, u32), salt_len: usize) {
    let sizes = (dbs, hbs);
    let dir = tempfile::tempdir().unwrap();
    let data_path = dir.path().join("data");
    let hash_path = dir.path().join("hash");
    let ours_path = dir.path().join("ours");
    let salt = data_bytes(salt_len, 0x5a17 + salt_len as u64);
    let data = data_bytes(
        usize::try_from(blocks).unwrap() * dbs as usize,
        blocks * 7 + 1,
    );
    std::fs::write(&data_path, &data).unwrap();

    let params = VerityParams::new(dbs, hbs, blocks, salt.clone()).unwrap();
    let (area, root) = build_tree(&data[..], &params, &mut |_| {}).unwrap();
    let their_root = vs_format(&data_path, &hash_path, sizes, &salt);
    let their_area = std::fs::read(&hash_path).unwrap();
    let what = format!("{blocks} blocks of {dbs}, hash blocks of {hbs}, salt {salt_len} bytes");
    assert_eq!(
        hex::encode(&root),
        hex::encode(&their_root),
        "root hash, {what}"
    );
    assert!(area == their_area, "hash area differs, {what}");
    if blocks <= 1000 {
        verify_data(&data[..], &their_area, &params, &their_root).unwrap();
    }

    // veritysetup accepts our tree, and (checked on the smaller sizes, to keep the test
    // fast) rejects it once the data is changed.
    std::fs::write(&ours_path, &area).unwrap();
    assert!(
        vs_verify(&data_path, &ours_path, sizes, &salt, &root),
        "veritysetup verify, {what}"
    );
    if blocks > 1000 {
        return;
    }
    let mut bad = data;
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(&data_path, &bad).unwrap();
    assert!(
        !vs_verify(&data_path, &ours_path, sizes, &salt, &root),
        "tamper not seen, {what}"
    );
}

#[test]
fn identical_to_veritysetup() {
    // One pseudo-random size, fixed so that failures reproduce.
    let random_blocks = 1 + (0x9e37_79b9_7f4a_7c15u64 % 5000);
    let cases: &[(u64, (u32, u32), usize)] = &[
        (1, (4096, 4096), 0),
        (1, (512, 512), 256),
        (2, (1024, 1024), 1),
        (2, (4096, 4096), 32),
        (127, (512, 512), 0),
        (127, (4096, 4096), 256),
        (128, (4096, 4096), 1),
        (128, (512, 512), 32),
        (129, (1024, 1024), 32),
        (129, (4096, 4096), 0),
        (16384, (4096, 4096), 32),
        (16384, (512, 512), 1),
        (16385, (512, 512), 0),
        (16385, (1024, 1024), 256),
        (16385, (4096, 4096), 1),
        (random_blocks, (4096, 4096), 32),
        (random_blocks, (512, 512), 256),
        // Different data and hash block sizes.
        (16385, (4096, 512), 32),
        (129, (512, 1024), 1),
    ];
    for &(blocks, sizes, salt) in cases {
        check(blocks, sizes, salt);
    }
}

//! Running `stele` and host tools, the one-line error assertion, and an independent
//! reading of the slot image layout straight from docs/FORMATS.md (no stele code involved:
//! the cross-check of the library's own reader). Builders live in `fixture`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

/// The result of one command.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<&Output> for Out {
    fn from(o: &Output) -> Out {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Runs `stele` with `args`, SOURCE_DATE_EPOCH removed.
pub fn stele(args: &[&str]) -> Out {
    stele_env(args, &[])
}

/// Runs `stele` with `args` and extra environment variables.
pub fn stele_env(args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = command(args);
    cmd.envs(env.iter().copied());
    checked(args, &cmd.output().expect("running the stele binary"))
}

/// Runs `stele` with `args` and `input` on its stdin.
pub fn stele_stdin(args: &[&str], input: &[u8]) -> Out {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the stele binary");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    // A writer thread, so a child that stops reading early cannot deadlock the test.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let o = child.wait_with_output().expect("waiting for stele");
    writer.join().expect("stdin writer");
    checked(args, &o)
}

/// `stele ARGS` without SOURCE_DATE_EPOCH (builds are then stamped `created = 0`).
fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stele"));
    cmd.args(args).env_remove("SOURCE_DATE_EPOCH");
    cmd
}

/// The result of one `stele` run, asserting it did not panic.
fn checked(args: &[&str], o: &Output) -> Out {
    let out = Out::from(o);
    assert!(
        !out.stderr.contains("panicked"),
        "stele panicked on {args:?}: {}",
        out.stderr
    );
    out
}

/// Asserts success and returns stdout.
pub fn ok(out: Out) -> String {
    assert_eq!(out.code, 0, "expected success: {out:?}");
    out.stdout
}

/// Asserts exit `code` with exactly one stderr line `stele: error: ...` containing every needle.
pub fn fails(out: &Out, code: i32, needles: &[&str]) {
    assert_eq!(out.code, code, "expected exit {code}: {out:?}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line: {out:?}");
    assert!(lines[0].starts_with("stele: error: "), "{out:?}");
    for n in needles {
        assert!(
            lines[0].to_lowercase().contains(&n.to_lowercase()),
            "stderr should mention {n:?}: {}",
            lines[0]
        );
    }
}

/// Fails with a message naming the setup command when a host tool is missing.
pub fn need_tool(tool: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/sbin", "/sbin"].iter().map(PathBuf::from))
        .any(|d| d.join(tool).is_file());
    assert!(
        found,
        "{tool} not found: run `cargo xtask setup` to install the host tools"
    );
}

/// Runs a host tool (failing with the setup command when it is missing); the caller
/// checks the result.
pub fn host(tool: &str, args: &[&str]) -> Out {
    need_tool(tool);
    Out::from(
        &Command::new(tool)
            .args(args)
            .output()
            .expect("running a host tool"),
    )
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// The regions of a slot image file, read per docs/FORMATS.md (no stele code involved).
#[derive(Debug, Clone, Copy)]
pub struct Regions {
    pub footer: usize,
    pub manifest_offset: usize,
    pub manifest_len: usize,
    pub sig_count: usize,
    pub body_offset: usize,
    pub body_len: usize,
    pub hash_offset: usize,
    pub data_blocks: usize,
    pub hash_tree_end: usize,
}

/// Reads a TOML integer field `key = N` from a body.
pub fn body_int(body: &str, key: &str) -> u64 {
    body.lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("{key} not in body:\n{body}"))
}

/// Reads a TOML string field `key = "..."` from a body.
pub fn body_str(body: &str, key: &str) -> String {
    body.lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| panic!("{key} not in body:\n{body}"))
}

pub fn regions(img: &[u8]) -> Regions {
    assert!(
        img.len().rem_euclid(4096) == 0 && img.len() >= 8192,
        "image length {}",
        img.len()
    );
    let footer = img.len() - 4096;
    let f = &img[footer..];
    assert_eq!(&f[0..8], b"STELEFTR");
    assert_eq!(u32_at(f, 8), 1);
    let checksum = Sha256::digest(&f[..4064]);
    assert_eq!(&f[4064..], checksum.as_slice(), "footer checksum");
    let manifest_offset = usize::try_from(u64_at(f, 16)).expect("offset");
    let manifest_len = usize::try_from(u64_at(f, 24)).expect("len");
    assert_eq!(u64_at(f, 32), (manifest_offset + manifest_len) as u64);
    assert_eq!(manifest_offset % 4096, 0);
    assert_eq!(
        footer,
        (manifest_offset + manifest_len).div_ceil(4096) * 4096
    );
    let m = &img[manifest_offset..manifest_offset + manifest_len];
    assert_eq!(&m[0..8], b"STELEMAN");
    assert_eq!(u32_at(m, 8), 1);
    let body_len = u32_at(m, 12) as usize;
    let sig_count = u32_at(m, 16) as usize;
    assert_eq!(u32_at(m, 20), 0);
    let body_offset = manifest_offset + 24 + 72 * sig_count;
    assert_eq!(24 + 72 * sig_count + body_len, manifest_len);
    let body = std::str::from_utf8(&img[body_offset..body_offset + body_len]).expect("utf-8 body");
    let hash_offset = usize::try_from(body_int(body, "hash_offset")).expect("hash_offset");
    let data_blocks = usize::try_from(body_int(body, "data_blocks")).expect("data_blocks");
    let dbs = usize::try_from(body_int(body, "data_block_size")).expect("dbs");
    assert_eq!(hash_offset, data_blocks * dbs);
    // Hash tree size per FORMATS.md with 4096-byte hash blocks (128 entries each).
    let mut tree_blocks = 0usize;
    let mut n = data_blocks;
    while n > 1 {
        n = n.div_ceil(128);
        tree_blocks += n;
    }
    let hash_tree_end = hash_offset + tree_blocks * 4096;
    assert_eq!(manifest_offset, hash_tree_end.div_ceil(4096) * 4096);
    Regions {
        footer,
        manifest_offset,
        manifest_len,
        sig_count,
        body_offset,
        body_len,
        hash_offset,
        data_blocks,
        hash_tree_end,
    }
}

/// The body bytes of an image.
pub fn body(img: &[u8]) -> Vec<u8> {
    let r = regions(img);
    img[r.body_offset..r.body_offset + r.body_len].to_vec()
}

/// Signature `i` of an image: (key id hex, 64 signature bytes).
pub fn signature(img: &[u8], i: usize) -> (String, Vec<u8>) {
    let r = regions(img);
    let off = r.manifest_offset + 24 + 72 * i;
    let id: String = img[off..off + 8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (id, img[off + 8..off + 72].to_vec())
}

/// A footer for `manifest_offset`/`manifest_len`/`image_len`, checksummed.
pub fn footer_bytes(manifest_offset: u64, manifest_len: u64, image_len: u64) -> Vec<u8> {
    let mut f = vec![0u8; 4096];
    f[0..8].copy_from_slice(b"STELEFTR");
    f[8..12].copy_from_slice(&1u32.to_le_bytes());
    f[16..24].copy_from_slice(&manifest_offset.to_le_bytes());
    f[24..32].copy_from_slice(&manifest_len.to_le_bytes());
    f[32..40].copy_from_slice(&image_len.to_le_bytes());
    let sum = Sha256::digest(&f[..4064]);
    f[4064..].copy_from_slice(&sum);
    f
}

/// An envelope with no signatures around `body`.
pub fn unsigned_envelope(body: &[u8]) -> Vec<u8> {
    let mut e = Vec::new();
    e.extend_from_slice(b"STELEMAN");
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&u32::try_from(body.len()).expect("body len").to_le_bytes());
    e.extend_from_slice(&0u32.to_le_bytes());
    e.extend_from_slice(&0u32.to_le_bytes());
    e.extend_from_slice(body);
    e
}

/// The image with its manifest envelope replaced by `envelope` (new footer, same data).
pub fn with_envelope(img: &[u8], envelope: &[u8]) -> Vec<u8> {
    let r = regions(img);
    let mut out = img[..r.manifest_offset].to_vec();
    out.extend_from_slice(envelope);
    let end = out.len();
    out.resize(end.div_ceil(4096) * 4096, 0);
    out.extend_from_slice(&footer_bytes(
        r.manifest_offset as u64,
        envelope.len() as u64,
        end as u64,
    ));
    out
}

/// Writes `bytes` with one bit flipped at `offset` to `dest`.
pub fn write_flipped(bytes: &[u8], offset: usize, dest: &Path) {
    let mut b = bytes.to_vec();
    b[offset] ^= 0x10;
    std::fs::write(dest, b).expect("write tampered copy");
}

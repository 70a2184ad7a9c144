//! Builds the dm-verity hash tree of a file, like `veritysetup format --no-superblock`.
//!
//! Usage: `cargo run --release -p stele-verifier --example verity_tree -- DATA HASH [BLOCK_SIZE] [SALT_HEX|-]`
//! Writes the hash area to HASH and prints the root hash; used to compare speed with veritysetup.

use std::fs::File;
use std::io::{BufReader, Write};
use std::process::ExitCode;

use stele_verifier::verity::{build_tree, VerityParams};

fn run() -> Result<String, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [data, hash, rest @ ..] = args.as_slice() else {
        return Err("usage: verity_tree DATA HASH [BLOCK_SIZE] [SALT_HEX|-]".into());
    };
    let bs: u32 = match rest.first() {
        Some(s) => s
            .parse()
            .map_err(|e| format!("bad block size {s:?}: {e}"))?,
        None => 4096,
    };
    let salt = match rest.get(1) {
        Some(s) => stele_verifier::hex::decode(s).ok_or(format!("bad salt hex {s:?}"))?,
        None => Vec::new(),
    };
    let f = File::open(data).map_err(|e| format!("cannot open {data}: {e}"))?;
    let len = f
        .metadata()
        .map_err(|e| format!("cannot stat {data}: {e}"))?
        .len();
    let params = VerityParams::new(bs, bs, len / u64::from(bs), salt).map_err(|e| e.to_string())?;
    let (area, root) =
        build_tree(BufReader::with_capacity(1 << 20, f), &params).map_err(|e| e.to_string())?;
    File::create(hash)
        .and_then(|mut h| h.write_all(&area))
        .map_err(|e| format!("cannot write {hash}: {e}"))?;
    Ok(stele_verifier::hex::encode(&root))
}

fn main() -> ExitCode {
    match run() {
        Ok(root) => {
            println!("Root hash: {root}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("verity_tree: {e}");
            ExitCode::FAILURE
        }
    }
}

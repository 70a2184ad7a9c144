//! `stele verity format|verify`: standalone dm-verity hash trees, byte-identical to
//! `veritysetup format --no-superblock` (the hash file holds the tree at offset 0).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use stele_verifier::exit::print_warning;
use stele_verifier::hex;
use stele_verifier::partition::same_file;
use stele_verifier::plural::count;
use stele_verifier::progress::Step;
use stele_verifier::slot::{check_block_size, MAX_SLOT_BLOCK_SIZE};
use stele_verifier::verity::{build_tree, verify_data_at, VerityParams, DIGEST_LEN};
use stele_verifier::Error as VError;

use crate::error::{CliResult, Error, Usage};
use crate::progress::Bars;
use crate::util::{parse_hex, salt_or_random};

#[derive(Debug, clap::Subcommand)]
pub enum VerityCommand {
    /// Compute the hash tree of DATA into HASH and print the root hash.
    Format(FormatArgs),
    /// Check DATA against HASH and ROOT; names the first bad block.
    Verify(VerifyArgs),
}

/// Block size of both kinds when not given (veritysetup's default).
const DEFAULT_BLOCK_SIZE: u32 = 4096;

#[derive(Debug, clap::Args)]
pub struct Geometry {
    /// Data block size [default: 4096].
    #[arg(long, value_name = "N")]
    data_block_size: Option<u32>,
    /// Hash block size [default: 4096].
    #[arg(long, value_name = "N")]
    hash_block_size: Option<u32>,
    /// Number of data blocks (default: the whole blocks in DATA).
    #[arg(long, value_name = "N")]
    data_blocks: Option<u64>,
}

impl Geometry {
    fn data_block_size(&self) -> u32 {
        self.data_block_size.unwrap_or(DEFAULT_BLOCK_SIZE)
    }
    fn hash_block_size(&self) -> u32 {
        self.hash_block_size.unwrap_or(DEFAULT_BLOCK_SIZE)
    }
}

#[derive(Debug, clap::Args)]
pub struct FormatArgs {
    /// The data (file or block device) to hash.
    #[arg(value_name = "DATA")]
    data: PathBuf,
    /// Where to write the hash tree (created or truncated; the tree starts at offset 0).
    #[arg(value_name = "HASH")]
    hash: PathBuf,
    /// Salt in hex, `-` for none (default: 32 random bytes).
    #[arg(long, value_name = "HEX")]
    salt: Option<String>,
    #[command(flatten)]
    geometry: Geometry,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The data to check.
    #[arg(value_name = "DATA")]
    data: PathBuf,
    /// The hash tree (at offset 0), as written by `stele verity format`.
    #[arg(value_name = "HASH")]
    hash: PathBuf,
    /// Root hash in hex.
    #[arg(value_name = "ROOT")]
    root: String,
    /// Salt in hex, `-` for none [default: -].
    #[arg(long, value_name = "HEX")]
    salt: Option<String>,
    #[command(flatten)]
    geometry: Geometry,
}

pub fn run(c: VerityCommand) -> CliResult {
    match c {
        VerityCommand::Format(a) => format(&a),
        VerityCommand::Verify(a) => verify(&a),
    }
}

fn open(path: &Path) -> CliResult<(File, u64)> {
    let mut f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let len = stele_image::slot::byte_len(&mut f).map_err(|e| Error::io("size", path, e))?;
    Ok((f, len))
}

fn params(g: &Geometry, data: &Path, data_len: u64, salt: Vec<u8>) -> CliResult<VerityParams> {
    let dbs = u64::from(g.data_block_size().max(1));
    let blocks = g.data_blocks.unwrap_or(data_len / dbs);
    if blocks == 0 {
        return Err(Usage::NoDataBlock {
            data: data.to_path_buf(),
            block: dbs,
        }
        .into());
    }
    let p = VerityParams::new(g.data_block_size(), g.hash_block_size(), blocks, salt)
        .map_err(Usage::Geometry)?;
    if p.data_size() > data_len {
        return Err(Usage::DataTooShort {
            data: data.to_path_buf(),
            len: data_len,
            blocks,
            block: dbs,
        }
        .into());
    }
    // The format allows blocks up to 64 KiB; a slot image does not (as veritysetup warns).
    for (what, size) in [
        ("--data-block-size", p.data_block_size()),
        ("--hash-block-size", p.hash_block_size()),
    ] {
        if check_block_size(what, size).is_err() {
            print_warning(&format!(
                "{what} {size} is above {MAX_SLOT_BLOCK_SIZE}, the x86-64 page size: the \
                 kernel's dm-verity cannot map such a tree there, and slot images refuse it"
            ));
        }
    }
    Ok(p)
}

/// What the verification used, for the message of a tree that does not match ROOT:
/// each parameter and whether it was given or defaulted.
fn used(a: &VerifyArgs, p: &VerityParams) -> String {
    let given = |yes: bool| if yes { "" } else { " (default)" };
    let g = &a.geometry;
    format!(
        "salt {}{}, data block size {}{}, hash block size {}{}, {}{}",
        a.salt.as_deref().unwrap_or("-"),
        given(a.salt.is_some()),
        p.data_block_size(),
        given(g.data_block_size.is_some()),
        p.hash_block_size(),
        given(g.hash_block_size.is_some()),
        count(p.data_blocks(), "data block", "data blocks"),
        if g.data_blocks.is_some() {
            ""
        } else {
            " (default: every whole block of DATA)"
        },
    )
}

fn format(a: &FormatArgs) -> CliResult {
    let salt = salt_or_random(a.salt.as_deref())?;
    let (f, len) = open(&a.data)?;
    // HASH is truncated and written: the same file as DATA would lose the data.
    if let Ok(hash) = std::fs::metadata(&a.hash) {
        let data = f.metadata().map_err(|e| Error::io("stat", &a.data, e))?;
        if same_file(&data, &hash) {
            return Err(Usage::HashIsData {
                data: a.data.clone(),
                hash: a.hash.clone(),
            }
            .into());
        }
    }
    let p = params(&a.geometry, &a.data, len, salt)?;
    let (tree, root) = {
        let mut bars = Bars::stderr();
        let mut step = Step::new(&mut bars, "hashing", Some(p.data_size()));
        build_tree(&f, &p, &mut |n| step.advance(n))?
    };
    let mut out = File::create(&a.hash).map_err(|e| Error::io("create", &a.hash, e))?;
    out.write_all(&tree)
        .and_then(|()| out.sync_all())
        .map_err(|e| Error::io("write", &a.hash, e))?;
    let salt_hex = if p.salt().is_empty() {
        "-".to_string()
    } else {
        hex::encode(p.salt())
    };
    println!("VERITY header information for {}", a.hash.display());
    println!("UUID:            \t");
    println!("Hash type:       \t1");
    println!("Data blocks:     \t{}", p.data_blocks());
    println!("Data block size: \t{}", p.data_block_size());
    println!(
        "Hash blocks:     \t{}",
        tree.len() as u64 / u64::from(p.hash_block_size())
    );
    println!("Hash block size: \t{}", p.hash_block_size());
    println!("Hash algorithm:  \tsha256");
    println!("Salt:            \t{salt_hex}");
    println!("Root hash:      \t{}", hex::encode(&root));
    println!("Hash device size: \t{} [bytes]", tree.len());
    Ok(())
}

fn verify(a: &VerifyArgs) -> CliResult {
    let salt = parse_hex("--salt", a.salt.as_deref().unwrap_or("-"))?;
    let root: [u8; DIGEST_LEN] = parse_hex("ROOT", &a.root)?
        .try_into()
        .map_err(|_| Usage::Root(a.root.clone()))?;
    let (f, len) = open(&a.data)?;
    let p = params(&a.geometry, &a.data, len, salt)?;
    let (mut h, hlen) = open(&a.hash)?;
    let need = p.hash_tree_size();
    if hlen < need {
        return Err(Error::TruncatedHashFile {
            path: a.hash.clone(),
            len: hlen,
            need,
            used: used(a, &p),
        });
    }
    let mut area = vec![0u8; usize::try_from(need).map_err(|_| Usage::TreeTooLarge)?];
    h.read_exact(&mut area)
        .map_err(|e| Error::io("read", &a.hash, e))?;
    let mut bars = Bars::stderr();
    let mut step = Step::new(&mut bars, "verifying", Some(p.data_size()));
    verify_data_at(&f, &area, &p, &root, &mut |n| step.advance(n)).map_err(|e| match e {
        // The top hash block (or, with one data block, the block itself) does not hash to
        // ROOT: most likely other parameters than the tree was made with.
        VError::RootHashMismatch { computed, .. } => Error::VerityRoot {
            computed,
            root: a.root.clone(),
            used: used(a, &p),
        },
        VError::DataBlockMismatch { block: 0 } if p.levels() == 0 => Error::VerityRoot {
            computed: "the hash of the only data block".into(),
            root: a.root.clone(),
            used: used(a, &p),
        },
        // The tree's top matched: DATA changed, or its layout is another block count's.
        VError::DataBlockMismatch { block } => Error::VerityData {
            block,
            used: used(a, &p),
        },
        e => e.into(),
    })?;
    drop(step);
    println!(
        "verified: {} match root hash {}",
        count(p.data_blocks(), "data block", "data blocks"),
        hex::encode(&root)
    );
    Ok(())
}

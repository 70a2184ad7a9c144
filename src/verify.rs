//! `stele verify`: signatures against a keyring (threshold), layout, hash tree, and with
//! `--full` every data block.

use std::path::PathBuf;

use clap::ArgGroup;
use stele_verifier::hex;
use stele_verifier::slot::VerifyOptions;

use crate::error::{CliResult, Context, Error};

#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("trusted").required(true).multiple(true).args(["keys", "keys_dir"])))]
pub struct VerifyArgs {
    /// The slot image (or a partition holding one).
    #[arg(value_name = "SLOT.img")]
    image: PathBuf,
    /// Trusted public key (SPKI PEM); repeat for several.
    #[arg(long = "key", value_name = "P.pem")]
    keys: Vec<PathBuf>,
    /// Directory of trusted public keys: every *.pem in it, sorted.
    #[arg(long = "keys", value_name = "DIR")]
    keys_dir: Vec<PathBuf>,
    /// How many distinct trusted keys must have signed.
    #[arg(long, value_name = "N", default_value_t = 1)]
    threshold: usize,
    /// Also check every data block against the hash tree.
    #[arg(long)]
    full: bool,
    /// Refuse images whose rollback_index is below N.
    #[arg(long, value_name = "N")]
    rollback_floor: Option<u64>,
}

pub fn verify(a: &VerifyArgs) -> CliResult {
    let keyring = stele_update::keys::load_keyring(&a.keys, &a.keys_dir, a.threshold)?;
    let (mut f, len) = stele_image::slot::open(&a.image)?;
    let opts = VerifyOptions {
        full: a.full,
        rollback_floor: a.rollback_floor,
        product: None,
    };
    let (_, verified) =
        stele_verifier::slot::verify(&mut f, len, &keyring, opts).context(&a.image)?;
    let m = &verified.manifest;
    let ids: Vec<String> = verified.signed_by.iter().map(ToString::to_string).collect();
    if ids.is_empty() {
        return Err(Error::NoValidSignature {
            image: a.image.clone(),
        });
    }
    println!(
        "verified: {} {} rollback_index={} signed by {} root_hash={}",
        m.name,
        m.version,
        m.rollback_index,
        ids.join(","),
        hex::encode(&m.verity.root_hash),
    );
    Ok(())
}

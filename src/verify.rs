//! `stele verify`: signatures against a keyring (threshold), layout, hash tree, and with
//! `--full` every data block.

use std::path::PathBuf;

use clap::ArgGroup;
use stele_verifier::exit::print_warning;
use stele_verifier::hex;
use stele_verifier::slot::VerifyOptions;

use stele_verifier::progress::Step;

use serde::Serialize;

use crate::error::{CliResult, Context, Error};
use crate::json::{ImageJson, Outcome};
use crate::progress::Bars;

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
    /// Print one JSON object (verdict, error, manifest, root hash, key ids, sizes), also
    /// when the check fails.
    #[arg(long)]
    json: bool,
}

pub fn verify(a: &VerifyArgs) -> CliResult {
    let r = check(a);
    if a.json {
        let image = r
            .as_ref()
            .map_or_else(|_| ImageJson::default(), |(i, _)| i.json());
        let doc = VerifyJson {
            image: a.image.display().to_string(),
            full: a.full,
            result: image,
        };
        Outcome::new("verified", r.as_ref().map(drop), doc).print();
    } else if let Ok((_, line)) = &r {
        println!("{line}");
    }
    r.map(drop)
}

/// `stele verify --json`: the image checked, how, and what it is.
#[derive(Serialize)]
struct VerifyJson {
    image: String,
    full: bool,
    #[serde(flatten)]
    result: ImageJson,
}

/// The checks; the image's JSON fields and the text line of a success.
fn check(a: &VerifyArgs) -> CliResult<(Checked, String)> {
    let keyring = stele_device::runtime::keyring::load_keyring(
        &a.keys,
        &a.keys_dir,
        a.threshold,
        &mut |s| print_warning(&s),
    )?;
    let (mut f, len) = stele_image::slot::open(&a.image)?;
    let opts = VerifyOptions {
        full: a.full,
        rollback_floor: a.rollback_floor,
        product: None,
    };
    let (loc, verified) = if a.full {
        // The data pass reads the whole image: a bar on a terminal.
        let mut bars = Bars::stderr();
        let mut step = Step::new(&mut bars, "verifying", Some(len));
        stele_verifier::slot::verify(&mut step.reader(&mut f), len, &keyring, opts)
    } else {
        stele_verifier::slot::verify(&mut f, len, &keyring, opts)
    }
    .context(&a.image)?;
    let m = &verified.manifest;
    let ids: Vec<String> = verified.signed_by.iter().map(ToString::to_string).collect();
    if ids.is_empty() {
        return Err(Error::NoValidSignature {
            image: a.image.clone(),
        });
    }
    let line = format!(
        "verified: {} {} rollback_index={} signed by {} root_hash={}",
        m.name,
        m.version,
        m.rollback_index,
        ids.join(","),
        hex::encode(&m.verity.root_hash),
    );
    let checked = Checked {
        footer: loc.footer,
        verified,
        len,
    };
    Ok((checked, line))
}

/// What a successful check found.
struct Checked {
    footer: stele_verifier::footer::Footer,
    verified: stele_verifier::manifest::VerifiedManifest,
    len: u64,
}

impl Checked {
    fn json(&self) -> ImageJson {
        let v = &self.verified;
        ImageJson::new(&v.manifest, &v.signed_by, &self.footer, self.len)
    }
}

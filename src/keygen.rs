//! `stele keygen`: a new ed25519 key pair, private key mode 0600, never overwritten silently.

use std::path::PathBuf;

use stele_verifier::keys::key_id;

use crate::error::CliResult;

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the private key (PKCS#8 PEM, mode 0600).
    #[arg(long, value_name = "K.pem")]
    private: PathBuf,
    /// Where to write the public key (SubjectPublicKeyInfo PEM).
    #[arg(long, value_name = "P.pem")]
    public: PathBuf,
    /// Replace existing files.
    #[arg(long)]
    force: bool,
}

pub fn keygen(a: &KeygenArgs) -> CliResult {
    let key = stele_image::key_files::generate()?;
    stele_image::key_files::write_keypair(&key, &a.private, &a.public, a.force)?;
    println!(
        "key {} written: private {}, public {}",
        key_id(&key.verifying_key()),
        a.private.display(),
        a.public.display()
    );
    Ok(())
}

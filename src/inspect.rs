//! `stele inspect`: the manifest and layout of a slot image, read WITHOUT checking any
//! signature (for people and scripts; never a basis for trust).

use std::path::PathBuf;

use serde_json::json;
use stele_image::slot::Layout;
use stele_verifier::hex;
use stele_verifier::manifest::Manifest;

use crate::error::{CliResult, Context};
use crate::json::ManifestJson;

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// The slot image (or a partition holding one).
    #[arg(value_name = "SLOT.img")]
    image: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

pub fn inspect(a: &InspectArgs) -> CliResult {
    // The I/O error names the file itself.
    let (mut f, len) = stele_image::slot::open(&a.image)?;
    let loc = stele_verifier::slot::locate(&mut f, len).context(&a.image)?;
    let sigs: Vec<String> = loc
        .envelope
        .signatures
        .iter()
        .map(|s| s.key_id.to_string())
        .collect();
    let manifest = loc.envelope.unverified_manifest().context(&a.image)?;
    let layout = stele_image::slot::layout(&loc, &manifest, len).context(&a.image)?;
    if a.json {
        let v = json!({
            "verified": false,
            "note": "NOT VERIFIED: signatures were not checked; use `stele verify`",
            "manifest": ManifestJson::from(&manifest),
            "layout": layout_json(&layout),
            "signatures": sigs,
        });
        println!("{v:#}");
    } else {
        print_text(&manifest, &layout, &sigs);
    }
    Ok(())
}

fn layout_json(l: &Layout) -> serde_json::Value {
    json!({
        "filesystem": { "offset": 0, "size": l.fs_size },
        "hash_tree": { "offset": l.hash_offset, "size": l.hash_tree_size },
        "manifest": { "offset": l.manifest_offset, "size": l.manifest_len },
        "footer": { "offset": l.footer_offset, "size": stele_verifier::footer::FOOTER_SIZE },
        "file_size": l.file_len,
    })
}

fn print_text(m: &Manifest, l: &Layout, sigs: &[String]) {
    println!("NOT VERIFIED: signatures were not checked (use `stele verify`)");
    println!("name:            {}", m.name);
    println!("version:         {}", m.version);
    println!("rollback_index:  {}", m.rollback_index);
    println!("created:         {}", m.created);
    println!(
        "filesystem:      {} ({} bytes)",
        m.filesystem.fs_type.name(),
        m.filesystem.size
    );
    println!(
        "verity:          sha256, data blocks {} x {} bytes, hash block size {}",
        m.verity.data_blocks, m.verity.data_block_size, m.verity.hash_block_size
    );
    println!("salt:            {}", hex::encode(&m.verity.salt));
    println!("root hash:       {}", hex::encode(&m.verity.root_hash));
    match &m.kernel {
        None => println!("kernel:          none (boots under the stage-1 kernel)"),
        Some(k) => {
            for (name, f) in [("kernel:", &k.kernel), ("initrd:", &k.initrd)] {
                println!(
                    "{name:<17}{} ({} bytes, sha256 {})",
                    f.path,
                    f.size,
                    hex::encode(&f.sha256)
                );
            }
            println!("kernel cmdline:  {}", k.cmdline);
        }
    }
    println!("layout:          region     offset        size");
    let row =
        |name: &str, off: u64, size: u64| println!("                 {name:<10} {off:<13} {size}");
    row("filesystem", 0, l.fs_size);
    row("hash tree", l.hash_offset, l.hash_tree_size);
    row("manifest", l.manifest_offset, l.manifest_len);
    row(
        "footer",
        l.footer_offset,
        stele_verifier::footer::FOOTER_SIZE,
    );
    println!("file size:       {}", l.file_len);
    println!("signatures:      {}", sigs.len());
    for s in sigs {
        println!("  key id {s}");
    }
}

//! `stele image diff OLD.img NEW.img`: the bytes a device running OLD would fetch to install
//! NEW as a delta (the planner of `stele update install URL`, with OLD as the running slot
//! and nothing useful in the target slot), without a network: every way the planner
//! prices (the raw blocks; the compressed form `NEW.img.zst` when it is beside NEW) and
//! the one it takes.

use std::path::PathBuf;

use stele_device::remote::{FetchOptions, Location, SystemClock};
use stele_engine::delta::plan::{plan, BaseUse};
use stele_engine::delta::ways::{fetch_table, FramePlan, Ways};
use stele_engine::delta::zst::SUFFIX;
use stele_engine::delta::{fetch_meta, Fetcher, KnownHashBlocks, Trust, DEFAULT_MAX_RANGE};

use crate::error::CliResult;

/// Arguments of `stele image diff`.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The image the device runs.
    #[arg(value_name = "OLD.img")]
    old: PathBuf,
    /// The image it would install.
    #[arg(value_name = "NEW.img")]
    new: PathBuf,
    /// Check both images' signatures against these public keys (default: not checked,
    /// the result is an estimate either way).
    #[arg(long = "key", value_name = "P.pem")]
    keys: Vec<PathBuf>,
}

pub fn diff(a: &DiffArgs) -> CliResult {
    let keyring = if a.keys.is_empty() {
        None
    } else {
        Some(stele_device::runtime::keyring::load_keyring(
            &a.keys,
            &[],
            1,
            &mut |_| {},
        )?)
    };
    let trust = keyring.as_ref().map_or(Trust::Unsigned, Trust::Keyring);
    let new = Location::File(a.new.clone());
    let opts = FetchOptions::default();
    let mut src = crate::remote::host_source(&new, &opts)?;
    let mut clock = SystemClock::default();
    let mut f = Fetcher::new(&mut *src, &mut clock, opts.policy(), None);
    let err = |source| stele_device::Error::Fetch {
        url: new.show(),
        source,
    };
    let old_name = a.old.display().to_string();
    let mut old = stele_device::runtime::open::open(&old_name, false)?;
    let old_len = stele_device::runtime::open::size(&mut old, &old_name)?;
    let known = KnownHashBlocks::from_slot(&mut old, old_len, trust).map_err(err)?;
    let meta = fetch_meta(&mut f, trust, None, None, known.as_ref()).map_err(err)?;
    let p = plan::<std::fs::File, _>(
        &meta,
        None,
        Some((&mut old, old_len)),
        trust,
        DEFAULT_MAX_RANGE,
    )
    .map_err(err)?;
    let base = match &p.base {
        BaseUse::OwnTree => "its own hash tree (same salt)".to_string(),
        BaseUse::Hashed => "its data hashed with the new salt".to_string(),
        BaseUse::Unusable(why) => format!("not usable: {why}"),
        BaseUse::None => "none".to_string(),
    };
    println!(
        "diff: {} -> {}: {} data blocks of {} bytes: {} copied from the old image, {} zero, {} fetched in {} ranges (old image: {base})",
        old_name,
        new.show(),
        p.actions.len(),
        p.block_size,
        p.counts.copy,
        p.counts.zero,
        p.counts.fetch,
        p.ranges.len()
    );
    // The compressed form beside NEW, priced as a device fetching NEW's URL would.
    let mut zpath = a.new.clone().into_os_string();
    zpath.push(SUFFIX);
    let zloc = Location::File(zpath.into());
    let frames = match crate::remote::host_source(&zloc, &opts) {
        Ok(mut zsrc) => {
            let mut zclock = SystemClock::default();
            let mut zf = Fetcher::new(&mut *zsrc, &mut zclock, opts.policy(), None);
            let max_blocks = (DEFAULT_MAX_RANGE / p.block_size.max(1)).max(1);
            fetch_table(&mut zf, &meta)
                .map(|(t, n)| FramePlan::new(&p, t, n, max_blocks))
                .map_err(|why| format!("{}: {why}", zloc.show()))
        }
        Err(e) => Err(e.to_string()),
    };
    let ways = Ways::choose(&p, frames);
    println!(
        "diff: a device on {} fetches {} bytes ({} of data, way {}, {} of footer, manifest and hash tree) of the {} bytes of {}",
        old_name,
        meta.fetched + ways.bytes(),
        ways.bytes(),
        ways.chosen.name(),
        meta.fetched,
        meta.len,
        new.show()
    );
    println!("diff: way {}: {}", ways.chosen.name(), ways.describe());
    if meta.signed_by.is_none() {
        println!("diff: signatures not checked (give --key P.pem to check them)");
    }
    Ok(())
}

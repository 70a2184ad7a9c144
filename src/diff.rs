//! `stele image diff OLD.img NEW.img`: the bytes a device running OLD would fetch to install
//! NEW as a delta (the planner of `stele update install URL`, with OLD as the running slot
//! and nothing useful in the target slot), without a network: every way the planner
//! prices (the raw blocks; the compressed form `NEW.img.zst` and the chained form
//! `NEW.img.lzc` when they are beside NEW) and the one it takes.

use std::path::{Path, PathBuf};

use stele_device::remote::{Beside, FetchOptions, Fetchers, Location, SystemClock};
use stele_engine::delta::lzc::SUFFIX as LZC_SUFFIX;
use stele_engine::delta::plan::{plan, BaseUse};
use stele_engine::delta::zst::SUFFIX as ZST_SUFFIX;
use stele_engine::delta::{
    fetch_meta, Fetcher, KnownHashBlocks, RangeSource, Trust, DEFAULT_MAX_RANGE,
};

use crate::error::{CliResult, Context};

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

/// What a device running OLD would do to install NEW: the signed-first metadata of NEW
/// (signatures checked only with a keyring) and its block plan with OLD as the running
/// slot and nothing useful in the target. The one computation `image diff` prints and
/// `image delta` builds on.
struct OldPlan {
    meta: stele_engine::delta::Meta,
    plan: stele_engine::delta::plan::Plan,
    old: std::fs::File,
    old_len: u64,
}

fn load_keyring(keys: &[PathBuf]) -> CliResult<Option<stele_verifier::keys::Keyring>> {
    if keys.is_empty() {
        return Ok(None);
    }
    Ok(Some(stele_device::runtime::keyring::load_keyring(
        keys,
        &[],
        1,
        &mut |_| {},
    )?))
}

fn old_plan(old: &Path, new: &Path, trust: Trust<'_>) -> CliResult<OldPlan> {
    let loc = Location::File(new.to_path_buf());
    let opts = FetchOptions::default();
    let mut src = crate::remote::host_source(&loc, &opts)?;
    let mut clock = SystemClock::default();
    let mut f = Fetcher::new(&mut *src, &mut clock, opts.policy(), None);
    let err = |source| stele_device::Error::Fetch {
        url: loc.show(),
        source,
    };
    let old_name = old.display().to_string();
    let mut old = stele_device::runtime::open::open(&old_name, false)?;
    let old_len = stele_device::runtime::open::size(&mut old, &old_name)?;
    let known = KnownHashBlocks::from_slot(&mut old, old_len, trust).map_err(err)?;
    let meta = fetch_meta(&mut f, trust, None, None, known.as_ref()).map_err(err)?;
    let plan = plan::<std::fs::File, _>(
        &meta,
        None,
        Some((&mut old, old_len)),
        trust,
        DEFAULT_MAX_RANGE,
    )
    .map_err(err)?;
    Ok(OldPlan {
        meta,
        plan,
        old,
        old_len,
    })
}

pub fn diff(a: &DiffArgs) -> CliResult {
    let keyring = load_keyring(&a.keys)?;
    let trust = keyring.as_ref().map_or(Trust::Unsigned, Trust::Keyring);
    let new = Location::File(a.new.clone());
    let old_name = a.old.display().to_string();
    let OldPlan { meta, plan: p, .. } = old_plan(&a.old, &a.new, trust)?;
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
    // The compressed and chained forms beside NEW, priced as a device fetching NEW's URL
    // would.
    let opts = FetchOptions::default();
    let open = |suffix: &str| {
        let mut path = a.new.clone().into_os_string();
        path.push(suffix);
        let path = PathBuf::from(path);
        path.exists()
            .then(|| crate::remote::host_source(&Location::File(path), &opts).ok())
            .flatten()
    };
    let (mut zsrc, mut lsrc) = (open(ZST_SUFFIX), open(LZC_SUFFIX));
    let beside = Beside {
        zst: zsrc.as_deref_mut().map(|z| z as &mut dyn RangeSource),
        lzc: lsrc.as_deref_mut().map(|l| l as &mut dyn RangeSource),
        delta: None,
    };
    let mut clocks = Default::default();
    let ways = Fetchers::new(beside, &mut clocks, &opts).choose(&meta, &p);
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

/// Arguments of `stele image delta`.
#[derive(Debug, clap::Args)]
pub struct DeltaArgs {
    /// The image the devices run (the release the delta starts from).
    #[arg(value_name = "OLD.img")]
    old: PathBuf,
    /// The image they are to install.
    #[arg(value_name = "NEW.img")]
    new: PathBuf,
    /// Where to write the delta (default: beside NEW.img, named
    /// NEW.img.from-<first 16 hex digits of sha256 of OLD's manifest envelope>.delta).
    #[arg(long, value_name = "P")]
    out: Option<PathBuf>,
    /// Replace an existing output file.
    #[arg(long)]
    force: bool,
    /// Check both images' signatures against these public keys.
    #[arg(long = "key", value_name = "P.pem")]
    keys: Vec<PathBuf>,
    /// The frames' zstd level: lower builds faster, the delta a little larger.
    #[arg(long, value_name = "N", default_value_t = stele_image::delta::LEVEL,
          value_parser = clap::value_parser!(i32).range(1..=22))]
    level: i32,
}

/// `stele image delta OLD.img NEW.img [--out P]`: the published delta of NEW for devices
/// running OLD, and what it saves against the block delta.
pub fn delta(a: &DeltaArgs, bars: &mut crate::progress::Bars) -> CliResult {
    use stele_engine::delta::published::{digest, envelope_digest};
    let keyring = load_keyring(&a.keys)?;
    let trust = keyring.as_ref().map_or(Trust::Unsigned, Trust::Keyring);
    let OldPlan {
        meta,
        plan: p,
        mut old,
        old_len,
    } = old_plan(&a.old, &a.new, trust)?;
    let old_name = a.old.display().to_string();
    let old_envelope = envelope_digest(&mut old, old_len).context(&a.old)?;
    let (_, old_manifest) =
        stele_verifier::slot::check_unsigned(&mut old, old_len).context(&a.old)?;
    let old_blocks = old_manifest
        .verity_params()
        .map(|v| v.data_blocks())
        .unwrap_or(0);
    let path = a
        .out
        .clone()
        .unwrap_or_else(|| stele_image::delta::path_of(&a.new, &old_envelope));
    let new_name = a.new.display().to_string();
    let mut new = stele_device::runtime::open::open(&new_name, false)?;
    let report = stele_image::delta::write(
        &p,
        stele_image::delta::Pair {
            old: &mut old,
            old_blocks,
            new: &mut new,
            new_len: meta.len,
            old_envelope,
            new_envelope: digest(&meta.envelope),
        },
        a.level,
        &path,
        a.force,
        bars,
    )?;
    println!(
        "delta: {} -> {}: {} bytes in {} frames giving {} blocks ({} fetched by the block delta, the rest gaps between them); the block delta fetches {} bytes of data ({:.2} % of the image's {} bytes as a delta)",
        old_name,
        new_name,
        report.len,
        report.frames,
        report.blocks,
        p.counts.fetch,
        p.fetch_bytes(),
        percent(report.len, meta.len),
        meta.len
    );
    if report.whole {
        // What the device fetches: the new image's footer (its last 4096 bytes), its
        // envelope, and the delta; it rebuilds the hash tree from what it writes.
        let head = stele_verifier::footer::FOOTER_SIZE + meta.footer.manifest_len;
        println!(
            "delta: a device running {} fetches {} bytes with it ({} of delta, {} of footer and manifest; the hash tree is rebuilt on the device): {:.2} % of the image",
            old_name,
            report.len + head,
            report.len,
            head,
            percent(report.len + head, meta.len)
        );
    } else {
        println!(
            "delta: its frames and copy runs do not give every block of {new_name} (the plan kept blocks in place): a device fetches the hash tree first"
        );
    }
    println!("delta: wrote {}", report.path.display());
    Ok(())
}

/// `part` as a percentage of `whole`. Pure.
fn percent(part: u64, whole: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let r = part as f64 * 100.0 / whole.max(1) as f64;
    r
}

//! Installing from a source read through byte ranges, on either side (the device's fetch
//! client, the host's HTTP client, a file): signed first (footer and envelope), then
//! either the whole published delta written without the new hash tree
//! (`stele_engine::delta::rebuilt`) or the signed tree, the plan, the ways and the writes
//! (`stele_engine::delta::apply`); the state flipped last. Also the plan's and the
//! summary's text.

use std::io::{Read, Seek};

use stele_engine::delta::apply::{apply_with, holds_part_of, Stats};
use stele_engine::delta::patched::Patched;
use stele_engine::delta::plan::{plan as plan_delta, BaseUse, Plan};
use stele_engine::delta::rebuilt::{apply_rebuilt, Rebuilt};
use stele_engine::delta::ways::{Framed, WayKind, Ways};
use stele_engine::delta::{
    fetch_head, fetch_tree_into, Clock, DeltaError, Fetcher, KnownHashBlocks, Meta, RangeSource,
    Trust, DEFAULT_MAX_RANGE,
};
use stele_verifier::keys::Keyring;
use stele_verifier::progress::Progress;
use stele_verifier::state::Slot;

use super::compressed::{self, Beside, Fetchers, Rebuildable};
use super::FetchOptions;
use crate::commands::install::Installed;
use crate::runtime::open::Storage;
use crate::runtime::rollback;
use crate::runtime::state_file::StateFile;
use crate::{Error, Result};

/// The slots of a delta install: the target (written) and the running slot (the base).
#[derive(Debug)]
pub struct Slots<'a, D, B> {
    pub target: Slot,
    pub slot: &'a mut D,
    pub slot_len: u64,
    /// The running slot and its length, when it can be read.
    pub base: Option<(&'a mut B, u64)>,
}

/// What a delta install did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeltaInstalled {
    pub installed: Installed,
    pub stats: Stats,
    pub block_size: u64,
    /// The way the data came (raw blocks, the compressed form's frames).
    pub way: WayKind,
}

/// The stable summary line of a delta install (stdout, before the installed line). Pure.
pub fn summary_line(d: &DeltaInstalled) -> String {
    let s = &d.stats;
    format!(
        "stele: fetched {} bytes, reused {} bytes (kept {}, copied {}, zero {} blocks of {}; {} requests); way {}{}",
        s.fetched,
        s.reused_bytes(d.block_size),
        s.kept,
        s.copied,
        s.zeroed,
        d.block_size,
        s.requests,
        d.way.name(),
        match (s.patches, s.frames) {
            (0, 0) => String::new(),
            (0, f) => format!(" ({f} frames for {} blocks)", s.frame_blocks),
            (p, 0) => format!(" ({p} delta frames for {} blocks)", s.patch_blocks),
            (p, f) => format!(
                " ({p} delta frames for {} blocks, {f} frames for {} blocks)",
                s.patch_blocks, s.frame_blocks
            ),
        }
    )
}

/// What a plan prints. Pure.
pub fn plan_text(
    from: &str,
    meta: &Meta,
    p: &Plan,
    ways: &Ways,
    priced: Priced,
    target: Slot,
    base: Option<Slot>,
) -> String {
    let m = &meta.manifest;
    let base_line = match (&p.base, base) {
        (BaseUse::OwnTree, Some(b)) => format!("slot {} (its own hash tree: same salt)", b.name()),
        (BaseUse::Hashed, Some(b)) => format!("slot {} (hashed with the new salt)", b.name()),
        (BaseUse::Unusable(why), Some(b)) => format!("none (slot {}: {why})", b.name()),
        _ => "none".to_string(),
    };
    format!(
        "plan: {} {} rollback_index={} from {from} into slot {}\n\
         plan: base: {base_line}\n\
         plan: {} data blocks of {} bytes: {} kept in slot {}, {} copied, {} zero, {} fetched in {} ranges\n\
         plan: fetch {} bytes ({} of data, {} of the other ways' tables, {} of footer, manifest and hash tree), reuse {} bytes; the image is {} bytes\n\
         plan: way {}: {}\n",
        m.name,
        m.version,
        m.rollback_index,
        target.name(),
        p.actions.len(),
        p.block_size,
        p.counts.keep,
        target.name(),
        p.counts.copy,
        p.counts.zero,
        p.counts.fetch,
        p.ranges.len(),
        meta.fetched + ways.bytes() + priced.0,
        ways.bytes(),
        priced.0,
        meta.fetched,
        p.reused_bytes(),
        meta.len,
        ways.chosen.name(),
        ways.describe()
    )
}

/// What a plan prints when the published delta is written without the tree. Pure.
pub fn rebuilt_text(
    from: &str,
    meta: &Meta,
    r: &Rebuildable,
    target: Slot,
    base: Option<Slot>,
) -> String {
    use stele_engine::delta::published::Piece;
    let m = &meta.manifest;
    let (mut copy, mut zero, mut frames) = (0u64, 0u64, 0u64);
    for piece in &r.pieces {
        match piece {
            Piece::Run(run) if run.from.is_some() => copy += run.blocks,
            Piece::Run(run) => zero += run.blocks,
            Piece::Frame(k) => frames += r.index.frames.get(*k).map_or(0, |f| f.blocks),
        }
    }
    let bs = u64::from(meta.params.data_block_size());
    format!(
        "plan: {} {} rollback_index={} from {from} into slot {}\n\
         plan: base: slot {} (the release the delta starts from)\n\
         plan: {} data blocks of {bs} bytes: {copy} copied, {zero} zero, {frames} from {} delta frames; the hash tree is rebuilt from them and checked against the signed root hash\n\
         plan: fetch {} bytes ({} of delta, {} of the other ways' tables, {} of footer and manifest), reuse {} bytes; the image is {} bytes\n\
         plan: way delta: {}\n",
        m.name,
        m.version,
        m.rollback_index,
        target.name(),
        base.map_or("none", Slot::name),
        meta.params.data_blocks(),
        r.index.frames.len(),
        meta.fetched + r.bytes + r.priced,
        r.bytes,
        r.priced,
        meta.fetched,
        (copy + zero) * bs,
        meta.len,
        r.describe()
    )
}

/// Signed first ([`fetch_head`]): footer and envelope of `src`, checked against
/// `keyring`, the rollback `floor` and `slot_len`. Returns the fetcher to go on with.
fn signed_head<'a>(
    src: &'a mut dyn RangeSource,
    clock: &'a mut dyn Clock,
    keyring: &Keyring,
    opts: &FetchOptions,
    floor: u64,
    slot_len: Option<u64>,
) -> std::result::Result<(Fetcher<'a>, Meta), DeltaError> {
    let mut f = Fetcher::new(src, clock, opts.policy(), opts.max_rate);
    let meta = fetch_head(&mut f, Trust::Keyring(keyring), Some(floor), slot_len)?;
    Ok((f, meta))
}

/// The signed tree of `meta` ([`fetch_tree_into`]), the running slot `base`'s verified
/// tree serving as known hash blocks.
fn signed_tree<B: Read + Seek>(
    f: &mut Fetcher<'_>,
    meta: &mut Meta,
    base: Option<(&mut B, u64)>,
    keyring: &Keyring,
) -> std::result::Result<(), DeltaError> {
    let known = match base {
        Some((b, l)) => KnownHashBlocks::from_slot(b, l, Trust::Keyring(keyring))?,
        None => None,
    };
    fetch_tree_into(f, meta, known.as_ref())
}

/// Whether the published delta is written without the new tree: when it gives the whole
/// image for fewer bytes than any other way ([`Fetchers::rebuildable`]), there is a
/// running slot to copy from, and the target slot does not hold part of this release (a
/// resume goes with the tree: it keeps what matches). Why not, for the log, when there
/// is a delta to say it of.
fn rebuild_choice<T: Read + Seek>(
    fx: &mut Fetchers<'_>,
    meta: &Meta,
    target: (&mut T, u64),
    has_base: bool,
) -> std::result::Result<std::result::Result<Rebuildable, Option<String>>, DeltaError> {
    if fx.delta.is_none() {
        return Ok(Err(None));
    }
    if !has_base {
        return Ok(Err(Some("no running slot to copy from".to_string())));
    }
    if holds_part_of(target.0, target.1, &meta.envelope)? {
        return Ok(Err(Some(
            "the target slot holds part of this release (an install was cut): resuming with the signed hash tree".to_string(),
        )));
    }
    Ok(fx.rebuildable(meta))
}

/// Bytes read to price the ways that were not chosen (their tables and indexes): fetched
/// too, and counted by the summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Priced(pub u64);

/// What `update plan` found: the ways with the signed tree, or the published delta
/// written without it.
#[derive(Debug)]
pub enum Planned {
    /// The tree fetched, the plan, the ways.
    Tree(Meta, Plan, Box<Ways>, Priced),
    /// The delta, the tree rebuilt on the device.
    Rebuilt(Meta, Rebuildable),
}

/// Signed first, then the plan: what an install of `src` into `target` would do, and
/// the ways to fetch it (from `beside`'s files). Reads the target and base slots; writes
/// nothing.
#[allow(clippy::too_many_arguments)]
pub fn plan_from<T: Read + Seek, B: Read + Seek>(
    src: &mut dyn RangeSource,
    beside: Beside<'_>,
    clock: &mut dyn Clock,
    target: Option<(&mut T, u64)>,
    base: Option<(&mut B, u64)>,
    floor: u64,
    keyring: &Keyring,
    opts: &FetchOptions,
) -> Result<Planned> {
    let name = src.name();
    let err = |source| Error::Fetch {
        url: name.clone(),
        source,
    };
    let slot_len = target.as_ref().map(|t| t.1);
    let mut base = base;
    let mut target = target;
    let (mut f, mut meta) = signed_head(src, clock, keyring, opts, floor, slot_len).map_err(err)?;
    let mut clocks = Default::default();
    let mut fx = Fetchers::new(beside, &mut clocks, opts);
    if let Some((t, l)) = target.as_mut() {
        if let Ok(r) =
            rebuild_choice(&mut fx, &meta, (&mut **t, *l), base.is_some()).map_err(err)?
        {
            return Ok(Planned::Rebuilt(meta, r));
        }
    }
    let base_ref = base.as_mut().map(|(b, l)| (&mut **b, *l));
    signed_tree(&mut f, &mut meta, base_ref, keyring).map_err(err)?;
    let p = plan_delta(
        &meta,
        target,
        base,
        Trust::Keyring(keyring),
        DEFAULT_MAX_RANGE,
    )
    .map_err(err)?;
    let ways = fx.choose(&meta, &p);
    let priced = Priced(fx.received().saturating_sub(ways.own_tables()));
    Ok(Planned::Tree(meta, p, Box::new(ways), priced))
}

/// Installs the image of `src` into `slots.target` as a delta and flips the boot state:
/// signed first (checked against `trust`'s keyring and the install's rollback floors,
/// [`crate::commands::install::Trust::floors`]: the state's or the good running slot's, the TPM's,
/// the initramfs minimum; then its product, then `check`, the caller's own
/// refusals: a channel's manifest digest; every refusal there comes before the slot is
/// touched), then plan and write in the install write order. Progress lines go to `log`
/// (without `stele: `), the bytes fetched to `progress` (a bar or a line on a terminal).
#[allow(clippy::too_many_arguments)]
pub fn install_from<D: Storage, B: Read + Seek, S: Storage>(
    src: &mut dyn RangeSource,
    beside: Beside<'_>,
    clock: &mut dyn Clock,
    slots: Slots<'_, D, B>,
    state: &mut StateFile<S>,
    trust: &crate::commands::install::Trust<'_>,
    opts: &FetchOptions,
    check: &mut dyn FnMut(&Meta) -> Result<()>,
    log: &mut dyn FnMut(&str),
    progress: &mut dyn Progress,
) -> Result<DeltaInstalled> {
    let keyring = trust.keyring;
    // The state is locked only to read the floor here and to read it again and flip it
    // at the end (as a bundle install): a fetch that stalls never keeps PID 1 from
    // marking its slot good.
    let floors = trust.floors(&state.locked(StateFile::load)?);
    let floor = floors.effective();
    let name = src.name();
    let err = |source| Error::Fetch {
        url: name.clone(),
        source,
    };
    let Slots {
        target,
        slot,
        slot_len,
        mut base,
    } = slots;
    let (mut f, mut meta) = signed_head(src, clock, keyring, opts, floor, Some(slot_len))
        .map_err(err)
        .map_err(|e| rollback::name_floors(e, floors))?;
    let m = &meta.manifest;
    stele_verifier::slot::check_product(m, trust.product)
        .map_err(|e| err(DeltaError::Verify(e)))?;
    log(&format!(
        "update: {name}: {} {} rollback_index={} verified (signatures, product, rollback floor {floor})",
        m.name, m.version, m.rollback_index
    ));
    check(&meta)?;
    let mut clocks = Default::default();
    let mut fx = Fetchers::new(beside, &mut clocks, opts);
    match rebuild_choice(&mut fx, &meta, (&mut *slot, slot_len), base.is_some()).map_err(err)? {
        Ok(r) => {
            if let Some((df, _, l)) = fx.delta.as_ref() {
                log(&compressed::delta_line(&df.name(), *l));
            }
            log(&format!("update: way delta: {}", r.describe()));
            log(&format!(
                "update: writing slot {} (the hash tree is rebuilt from what is written and checked against the signed root hash before the flip)",
                target.name()
            ));
            let written = match (fx.delta.as_mut(), base.as_mut()) {
                (Some((df, _, _)), Some((b, _))) => apply_rebuilt(
                    &meta,
                    &r.index,
                    &r.pieces,
                    r.index_fetched,
                    df,
                    &mut *slot,
                    slot_len,
                    &mut **b,
                    progress,
                ),
                _ => Err(Rebuilt::GivenUp("no delta or running slot".to_string())),
            };
            match written {
                Ok((written, mut stats)) => {
                    stats.fetched = f.received + fx.received();
                    log(&format!(
                        "update: the hash tree rebuilt from slot {} has the signed root hash",
                        target.name()
                    ));
                    let done = (written, stats, WayKind::Delta);
                    let refused = |e| err(DeltaError::Verify(e));
                    return flipped(state, trust, done, (slot, slot_len, target), refused, log);
                }
                Err(Rebuilt::Failed(e)) => return Err(err(e)),
                Err(Rebuilt::GivenUp(why)) => {
                    log(&format!(
                        "update: the delta was given up ({why}): going on with the signed hash tree, keeping the blocks written that match it"
                    ));
                    if let Some((df, _, _)) = fx.delta.as_ref() {
                        fx.dropped += df.received;
                    }
                    fx.delta = None;
                    fx.given_up = Some(why);
                }
            }
        }
        Err(Some(why)) => log(&format!(
            "update: the delta is not written without the hash tree: {why}"
        )),
        Err(None) => {}
    }
    let base_ref = base.as_mut().map(|(b, l)| (&mut **b, *l));
    signed_tree(&mut f, &mut meta, base_ref, keyring).map_err(err)?;
    log(&format!(
        "update: {name}: the hash tree verified against the signed root hash"
    ));
    let p = plan_delta(
        &meta,
        Some((&mut *slot, slot_len)),
        base.as_mut().map(|(b, l)| (&mut **b, *l)),
        Trust::Keyring(keyring),
        DEFAULT_MAX_RANGE,
    )
    .map_err(err)?;
    let ways = fx.choose(&meta, &p);
    log(&format!(
        "update: plan: fetch {} bytes in {} ranges, reuse {} bytes ({} kept, {} copied, {} zero blocks)",
        // The signed metadata, the way's bytes, the other ways' tables read to price them
        // (and a delta given up before).
        meta.fetched + ways.bytes() + fx.received().saturating_sub(ways.own_tables()),
        p.ranges.len(),
        p.reused_bytes(),
        p.counts.keep,
        p.counts.copy,
        p.counts.zero
    ));
    if let Some((df, _, l)) = fx.delta.as_ref() {
        log(&compressed::delta_line(&df.name(), *l));
    }
    log(&compressed::way_line(&ways));
    log(&format!("update: writing slot {}", target.name()));
    let framed_plan = ways.framed_plan();
    let framed_from = match framed_plan {
        Some((_, true)) => fx.lzc.as_mut(),
        Some((_, false)) => fx.zst.as_mut(),
        None => None,
    };
    let mut framed = match (framed_plan, framed_from) {
        (Some((fp, chained)), Some(f)) => Some(Framed::new(f, fp, chained)),
        _ => None,
    };
    let mut patched = match (ways.delta_plan(), fx.delta.as_mut()) {
        (Some(dp), Some((df, _, _))) => Some(Patched::new(df, dp)),
        _ => None,
    };
    let applied = apply_with(
        &meta,
        &p,
        &mut f,
        framed.as_mut(),
        patched.as_mut(),
        slot,
        slot_len,
        base.map(|(b, _)| b),
        progress,
    );
    if let Some(f) = framed {
        if let Some(why) = &f.refused {
            log(&format!(
                "update: the {} way was given up ({why}): its remaining blocks were fetched raw",
                f.way().name()
            ));
        }
    }
    if let Some(why) = patched.and_then(|p| p.refused) {
        log(&format!(
            "update: the delta way was given up ({why}): its remaining blocks were fetched raw"
        ));
    }
    let (written, mut stats) = applied.map_err(|source| Error::Fetch {
        url: name.clone(),
        source,
    })?;
    // Every byte received: the image's (footer, manifest, tree, raw blocks) and the
    // files' beside it (every table and index read to price the ways, frames).
    stats.fetched = f.received + fx.received();
    let done = (written, stats, ways.chosen);
    let refused = |e| err(DeltaError::Verify(e));
    flipped(state, trust, done, (slot, slot_len, target), refused, log)
}

/// The end of either writer: the state flipped to the target slot and its footer
/// written ([`crate::commands::install::flip`], `refused` its error); `done` is what was
/// written, its counts and the way.
fn flipped<D: Storage, S: Storage>(
    state: &mut StateFile<S>,
    trust: &crate::commands::install::Trust<'_>,
    done: (stele_engine::Written, Stats, WayKind),
    slot: (&mut D, u64, Slot),
    refused: impl FnOnce(stele_verifier::Error) -> Error,
    log: &mut dyn FnMut(&str),
) -> Result<DeltaInstalled> {
    let (written, stats, way) = done;
    let block_size = u64::from(written.verified.manifest.verity.data_block_size);
    let installed = crate::commands::install::flip(state, trust, written, slot, refused, log)?;
    Ok(DeltaInstalled {
        installed,
        stats,
        block_size,
        way,
    })
}

//! The files beside an image in an install: the compressed form (`IMAGE.img.zst`, the
//! engine's `delta::zst`) and the published delta from the running release
//! (`IMAGE.img.from-<16 hex>.delta`, the engine's `delta::published`): where they are,
//! their seek table and index read and the way with the fewest bytes chosen ([`choose`]),
//! and the text that says which way.
//!
//! On the device the fetch client fetches and decodes their frames (`FRAME` and `PATCH`
//! requests of [`super::protocol`]): `stele` (PID 1's multi-call binary) links no decoder.
//! A missing or refused file only leaves the other ways.

use stele_engine::delta::patched::{fetch_index, DeltaPlan};
use stele_engine::delta::plan::Plan;
use stele_engine::delta::published::suffix;
use stele_engine::delta::ways::{fetch_table, FramePlan, Ways};
use stele_engine::delta::zst::SUFFIX;
use stele_engine::delta::{Fetcher, Meta, DEFAULT_MAX_RANGE};

use stele_verifier::channel::ReleaseDelta;

use super::Location;

/// Where the compressed form of the image at `loc` is: beside it, named
/// `IMAGE.img.zst`; only over HTTP (a local file is read raw, at no cost on the link).
/// Pure.
pub fn compressed_of(loc: &Location) -> Option<Location> {
    match loc {
        Location::Http(u) if !u.contains(['?', '#']) => {
            Some(Location::Http(format!("{u}{SUFFIX}")))
        }
        _ => None,
    }
}

/// Where the published delta for a device running the release whose envelope digest is
/// `old` is: beside the image at `loc`, named `IMAGE.img.from-<16 hex>.delta`; only over
/// HTTP, as the compressed form. Pure.
pub fn delta_of(loc: &Location, old: &[u8; 32]) -> Option<Location> {
    match loc {
        Location::Http(u) if !u.contains(['?', '#']) => {
            Some(Location::Http(format!("{u}{}", suffix(old))))
        }
        _ => None,
    }
}

/// Every way to fetch what `plan` lacks: the compressed form's table read through `zf`
/// and the published delta's index through `df` (with the running release's envelope
/// digest, and the signed channel's entry when the channel listed it: its length and
/// index digest are checked first), when there are such files; the way with the fewest
/// bytes chosen. Without a delta source (not over HTTP, no running release) no `delta`
/// way is listed.
pub fn choose(
    zf: Option<&mut Fetcher<'_>>,
    df: Option<(&mut Fetcher<'_>, [u8; 32], Option<&ReleaseDelta>)>,
    meta: &Meta,
    plan: &Plan,
) -> Ways {
    let max_blocks = (DEFAULT_MAX_RANGE / plan.block_size.max(1)).max(1);
    let table = match zf {
        Some(zf) => {
            let name = zf.name();
            fetch_table(zf, meta).map_err(|why| format!("{name}: {why}"))
        }
        None => Err("no compressed form (not an http(s) image)".to_string()),
    };
    let frames = table
        .clone()
        .map(|(t, n)| FramePlan::new(plan, t, n, max_blocks));
    let Some((df, old, listed)) = df else {
        return Ways::choose(plan, frames);
    };
    let name = df.name();
    let delta = fetch_index(df, meta, &old, listed)
        .map(|(index, n)| DeltaPlan::new(plan, index, n, table.ok(), max_blocks))
        .map_err(|why| format!("{name}: {why}"));
    Ways::choose_with_delta(plan, frames, delta)
}

/// `update: delta URL (listed in the channel: N bytes)` or `update: delta URL (its name
/// beside the image)`: where the delta looked at came from. Pure.
pub fn delta_line(name: &str, listed: Option<&ReleaseDelta>) -> String {
    match listed {
        Some(l) => format!(
            "update: delta {name} (listed in the channel: {} bytes, from {})",
            l.length, l.from_version
        ),
        None => format!("update: delta {name} (its name beside the image)"),
    }
}

/// `update: way zstd: raw 123 bytes, zstd 45 bytes (chosen), delta 67 bytes`: the log line after the
/// plan's, in the words of `update plan`'s `plan: way` line. Pure.
pub fn way_line(ways: &Ways) -> String {
    format!("update: way {}: {}", ways.chosen.name(), ways.describe())
}

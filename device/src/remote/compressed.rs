//! The compressed form beside an image (`IMAGE.img.zst`, the engine's
//! `update::delta::zst`) in an install: where it is, its seek table read and the way
//! with the fewest bytes chosen ([`choose`]), and the text that says which way.
//!
//! On the device the fetch client fetches and decodes its frames (`FRAME` requests of
//! [`super::protocol`]): `stele` (PID 1's multi-call binary) links no decoder. A missing
//! or refused compressed form only leaves the raw way.

use stele_engine::delta::plan::Plan;
use stele_engine::delta::ways::{fetch_table, FramePlan, Ways};
use stele_engine::delta::zst::SUFFIX;
use stele_engine::delta::{Fetcher, Meta, DEFAULT_MAX_RANGE};

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

/// Every way to fetch what `plan` lacks, the compressed form's table read through `zf`
/// (when there is one), and the way with the fewest bytes chosen.
pub fn choose(zf: Option<&mut Fetcher<'_>>, meta: &Meta, plan: &Plan) -> Ways {
    let max_blocks = (DEFAULT_MAX_RANGE / plan.block_size.max(1)).max(1);
    let frames = match zf {
        Some(zf) => {
            let name = zf.name();
            fetch_table(zf, meta)
                .map(|(t, n)| FramePlan::new(plan, t, n, max_blocks))
                .map_err(|why| format!("{name}: {why}"))
        }
        None => Err("no compressed form (not an http(s) image)".to_string()),
    };
    Ways::choose(plan, frames)
}

/// `update: way zstd: raw 123 bytes, zstd 45 bytes (chosen)`: the log line after the
/// plan's, in the words of `update plan`'s `plan: way` line. Pure.
pub fn way_line(ways: &Ways) -> String {
    format!("update: way {}: {}", ways.chosen.name(), ways.describe())
}

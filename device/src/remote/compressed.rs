//! The files beside an image in an install: the compressed form (`IMAGE.img.zst`, the
//! engine's `delta::zst`), the chained form (`IMAGE.img.lzc`, `delta::lzc`) and the
//! published delta from the running release (`IMAGE.img.from-<16 hex>.delta`, the
//! engine's `delta::published`): where they are ([`Beside`]), their seek tables and index
//! read and the way with the fewest bytes chosen ([`Fetchers::choose`]), and the text that
//! says which way.
//!
//! On the device the fetch client fetches and decodes their frames (`FRAME`, `CHAIN` and
//! `PATCH` requests of [`super::protocol`]): `stele` (PID 1's multi-call binary) links no
//! decoder. A missing or refused file only leaves the other ways.

use stele_engine::delta::patched::{fetch_index, DeltaPlan};
use stele_engine::delta::plan::Plan;
use stele_engine::delta::published::suffix;
use stele_engine::delta::ways::{fetch_chained_table, fetch_table, FramePlan, Ways};
use stele_engine::delta::{Fetcher, Meta, RangeSource, DEFAULT_MAX_RANGE};

use stele_verifier::channel::ReleaseDelta;

use super::{FetchOptions, Location, SystemClock};

/// Where the file named `IMAGE.img<suffix>` beside the image at `loc` is (the compressed
/// form `.zst`, the chained form `.lzc`); only over HTTP (a local file is read raw, at no
/// cost on the link). Pure.
pub fn beside_of(loc: &Location, suffix: &str) -> Option<Location> {
    match loc {
        Location::Http(u) if !u.contains(['?', '#']) => {
            Some(Location::Http(format!("{u}{suffix}")))
        }
        _ => None,
    }
}

/// The files beside the image an install may take its data from, each when there is one:
/// the compressed form, the chained form, and a published delta with the envelope digest
/// of the release it starts from (the running one) and the signed channel's entry for it.
#[derive(Default)]
pub struct Beside<'s> {
    pub zst: Option<&'s mut dyn RangeSource>,
    pub lzc: Option<&'s mut dyn RangeSource>,
    pub delta: Option<(&'s mut dyn RangeSource, [u8; 32], Option<&'s ReleaseDelta>)>,
}

impl std::fmt::Debug for Beside<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Beside")
            .field("zst", &self.zst.as_ref().map(|s| s.name()))
            .field("lzc", &self.lzc.as_ref().map(|s| s.name()))
            .field("delta", &self.delta.as_ref().map(|d| d.0.name()))
            .finish()
    }
}

/// The fetchers of [`Beside`]'s files (each with its own clock, of `clocks`).
#[derive(Debug)]
pub struct Fetchers<'a> {
    pub zst: Option<Fetcher<'a>>,
    pub lzc: Option<Fetcher<'a>>,
    pub delta: Option<(Fetcher<'a>, [u8; 32], Option<&'a ReleaseDelta>)>,
}

impl<'a> Fetchers<'a> {
    /// Fetchers of `beside`'s files with `opts`' retry policy and rate.
    pub fn new<'s: 'a>(
        beside: Beside<'s>,
        clocks: &'a mut [SystemClock; 3],
        opts: &FetchOptions,
    ) -> Self {
        let [zc, lc, dc] = clocks;
        let fetcher = |s: &'a mut dyn RangeSource, c: &'a mut SystemClock| {
            Fetcher::new(s, c, opts.policy(), opts.max_rate)
        };
        Fetchers {
            zst: beside.zst.map(|s| fetcher(s, zc)),
            lzc: beside.lzc.map(|s| fetcher(s, lc)),
            delta: beside.delta.map(|(s, old, l)| (fetcher(s, dc), old, l)),
        }
    }

    /// Every way to fetch what `plan` lacks: the compressed and chained forms' tables and
    /// the published delta's index read (the signed channel's entry, when the channel
    /// listed it: its length and index digest are checked first), when there are such
    /// files; the way with the fewest bytes chosen. Without a delta source (not over
    /// HTTP, no running release) no `delta` way is listed.
    pub fn choose(&mut self, meta: &Meta, plan: &Plan) -> Ways {
        let max_blocks = (DEFAULT_MAX_RANGE / plan.block_size.max(1)).max(1);
        let table = match self.zst.as_mut() {
            Some(zf) => {
                let name = zf.name();
                fetch_table(zf, meta).map_err(|why| format!("{name}: {why}"))
            }
            None => Err("no compressed form beside the image (or not over http(s))".to_string()),
        };
        let chained = match self.lzc.as_mut() {
            Some(lf) => {
                let name = lf.name();
                fetch_chained_table(lf, meta)
                    .map(|(t, n)| FramePlan::new(plan, t, n, max_blocks))
                    .map_err(|why| format!("{name}: {why}"))
            }
            None => Err("no chained form beside the image (or not over http(s))".to_string()),
        };
        let frames = table
            .clone()
            .map(|(t, n)| FramePlan::new(plan, t, n, max_blocks));
        let ways = match self.delta.as_mut() {
            None => Ways::choose(plan, frames),
            Some((df, old, listed)) => {
                let name = df.name();
                let delta = fetch_index(df, meta, old, *listed)
                    .map(|(index, n)| DeltaPlan::new(plan, index, n, table.ok(), max_blocks))
                    .map_err(|why| format!("{name}: {why}"));
                Ways::choose_with_delta(plan, frames, delta)
            }
        };
        ways.with_chained(chained)
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

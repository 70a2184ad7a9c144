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
use stele_engine::delta::published::{suffix, DeltaIndex, Piece};
use stele_engine::delta::ways::{fetch_chained_table, fetch_table, FramePlan, WayKind, Ways};
use stele_engine::delta::zst::SeekTable;
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
    /// Bytes received for a delta given up before the plan (its fetcher then dropped).
    pub dropped: u64,
    /// Why the delta was given up before the plan (it is then not a way).
    pub given_up: Option<String>,
    /// The delta's index once read (or why it is not used), read once for both ways.
    index: Option<Result<(DeltaIndex, u64), String>>,
    /// The compressed and chained forms' tables once read (or why there is none), read
    /// once for the whole delta's price and the ways.
    tables: [Option<Result<(SeekTable, u64), String>>; 2],
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
            dropped: 0,
            given_up: None,
            index: None,
            tables: [None, None],
        }
    }

    /// Every way to fetch what `plan` lacks: the compressed and chained forms' tables and
    /// the published delta's index read (the signed channel's entry, when the channel
    /// listed it: its length and index digest are checked first), when there are such
    /// files; the way with the fewest bytes chosen. Without a delta source (not over
    /// HTTP, no running release) no `delta` way is listed.
    pub fn choose(&mut self, meta: &Meta, plan: &Plan) -> Ways {
        let max_blocks = (DEFAULT_MAX_RANGE / plan.block_size.max(1)).max(1);
        let table = self.table(WayKind::Zstd, meta);
        let chained = self
            .table(WayKind::Lzc, meta)
            .map(|(t, n)| FramePlan::new(plan, t, n, max_blocks));
        let frames = table
            .clone()
            .map(|(t, n)| FramePlan::new(plan, t, n, max_blocks));
        let ways = match self.delta.as_mut() {
            None => {
                let mut w = Ways::choose(plan, frames);
                w.no_delta = self
                    .given_up
                    .as_ref()
                    .map(|_| "given up before the plan (the line above)".to_string());
                w
            }
            Some(_) => {
                let delta = self
                    .delta_index(meta)
                    .unwrap_or_else(|| Err("no delta".to_string()))
                    .map(|(index, n)| DeltaPlan::new(plan, index, n, table.ok(), max_blocks));
                Ways::choose_with_delta(plan, frames, delta)
            }
        };
        ways.with_chained(chained)
    }
}

/// A published delta from the running release whose frames and copy runs give the whole
/// new image: written without the new hash tree (`stele_engine::delta::rebuilt`).
#[derive(Debug)]
pub struct Rebuildable {
    pub index: DeltaIndex,
    /// Bytes read for its index and trailer.
    pub index_fetched: u64,
    pub pieces: Vec<Piece>,
    /// The bytes of the way: the index's read and every frame.
    pub bytes: u64,
    /// What the whole image costs each other way (the data blocks raw, the compressed
    /// and chained forms whole, their tables' reads included).
    pub whole: Vec<(WayKind, u64)>,
    /// Bytes read to price the other ways (their tables): fetched too.
    pub priced: u64,
}

impl Rebuildable {
    /// `delta 123 bytes (chosen; the hash tree is rebuilt here), raw 456 bytes (the whole
    /// image), zstd ...`: the way line's list, in the words of [`Ways::describe`]. Pure.
    pub fn describe(&self) -> String {
        let mut s = vec![format!(
            "delta {} bytes (chosen; the hash tree is rebuilt here)",
            self.bytes
        )];
        for (k, b) in &self.whole {
            s.push(format!("{} {b} bytes (the whole image)", k.name()));
        }
        s.join(", ")
    }
}

impl Fetchers<'_> {
    /// Every byte these files' fetchers received (tables and indexes read to price the
    /// ways, frames, a delta given up): with the image's, what the summary counts.
    pub fn received(&self) -> u64 {
        self.zst.as_ref().map_or(0, |f| f.received)
            + self.lzc.as_ref().map_or(0, |f| f.received)
            + self.delta.as_ref().map_or(0, |d| d.0.received)
            + self.dropped
    }

    /// The table of the compressed form (`kind` [`WayKind::Zstd`]) or of the chained
    /// form ([`WayKind::Lzc`]) and the bytes read for it, or why there is none (read once,
    /// as [`fetch_table`] and [`fetch_chained_table`] read them).
    fn table(&mut self, kind: WayKind, meta: &Meta) -> Result<(SeekTable, u64), String> {
        let (at, fetcher, none) = match kind {
            WayKind::Lzc => (1, &mut self.lzc, "no chained form"),
            _ => (0, &mut self.zst, "no compressed form"),
        };
        let read = self.tables[at].get_or_insert_with(|| match fetcher.as_mut() {
            Some(f) => {
                let name = f.name();
                match kind {
                    WayKind::Lzc => fetch_chained_table(f, meta),
                    _ => fetch_table(f, meta),
                }
                .map_err(|why| format!("{name}: {why}"))
            }
            None => Err(format!("{none} beside the image (or not over http(s))")),
        });
        read.clone()
    }

    /// The published delta's index and the bytes read for it, or why it is not used
    /// (read once, as [`fetch_index`] reads it); `None` without a delta source.
    fn delta_index(&mut self, meta: &Meta) -> Option<Result<(DeltaIndex, u64), String>> {
        let (df, old, listed) = self.delta.as_mut()?;
        if self.index.is_none() {
            let name = df.name();
            self.index =
                Some(fetch_index(df, meta, old, *listed).map_err(|why| format!("{name}: {why}")));
        }
        self.index.clone()
    }

    /// The published delta from the running release when a device can write it without
    /// the new hash tree ([`Rebuildable`]): its index read (as the `delta` way reads it:
    /// the channel's length and index digest checked first), its frames and copy runs
    /// giving every data block of `meta`'s image, and fewer bytes than the whole image
    /// by any other way (the compressed and chained forms' tables are read for that).
    /// Otherwise why not (`None`: there is no usable delta, which the `delta` way's
    /// absence says).
    pub fn rebuildable(&mut self, meta: &Meta) -> Result<Rebuildable, Option<String>> {
        let Some(Ok((index, index_fetched))) = self.delta_index(meta) else {
            return Err(None);
        };
        let name = self.delta.as_ref().map(|d| d.0.name()).unwrap_or_default();
        let pieces = index
            .pieces(meta.params.data_blocks())
            .map_err(|why| Some(format!("{name}: it does not give the whole image ({why})")))?;
        let bytes = index_fetched + index.frames.iter().map(|f| f.len).sum::<u64>();
        let data = meta.params.data_blocks() * u64::from(meta.params.data_block_size());
        let mut whole = vec![(WayKind::Raw, data)];
        let before = self.received();
        for kind in [WayKind::Zstd, WayKind::Lzc] {
            if let Ok((t, n)) = self.table(kind, meta) {
                whole.push((kind, n + t.file_len() - t.table_len));
            }
        }
        let least = whole.iter().min_by_key(|w| w.1).copied();
        if let Some((k, b)) = least.filter(|w| w.1 <= bytes) {
            return Err(Some(format!(
                "{name}: its {bytes} bytes are not fewer than the whole image's {b} by the {} way",
                k.name()
            )));
        }
        Ok(Rebuildable {
            index,
            index_fetched,
            pieces,
            bytes,
            whole,
            priced: self.received() - before,
        })
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

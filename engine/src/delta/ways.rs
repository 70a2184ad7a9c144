//! The ways to fetch what a [`Plan`] lacks, each with its exact byte count known before
//! the first data byte, and the choice of the fewest bytes. Four ways: `raw` (the
//! image's own blocks, in ranges), `zstd` (the frames of the compressed form
//! `IMAGE.img.zst` where a frame costs fewer bytes than the raw blocks it replaces, raw
//! ranges for the rest, plus its seek table), `lzc` (the same rule on the frames of the
//! chained form `IMAGE.img.lzc`, [`super::lzc`]) and `delta` (a published delta from the
//! running release, [`super::patched`]). With nothing to reuse, the `zstd` and `lzc` ways
//! are the whole compressed image.
//!
//! [`Framed`] carries the `zstd` or `lzc` way out during [`super::apply::apply_with`]: it
//! fetches a frame (decoded by the source: on the device, the fetch client) when its
//! first block is written; a chained frame's decoder is primed with the image's bytes
//! before it, read back from the target slot (written in block order and checked). Each
//! decoded block is still checked against the signed tree by the writer; a frame that
//! fails (refused by its decoder, a bad block, retries given up) ends the way, and its
//! blocks and every later one are fetched raw.

pub use super::frame_plan::FramePlan;
use super::plan::{Action, Plan};
use super::zst::{Form, Frame, SeekTable, ZstError};
use super::{DeltaError, FetchError, Fetcher};
use std::io::{Read, Seek, SeekFrom};
use stele_verifier::footer::FOOTER_SIZE;

/// Which way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WayKind {
    /// The image's blocks, uncompressed, by Range requests.
    Raw,
    /// The compressed form's frames (and raw blocks where a frame costs more).
    Zstd,
    /// A published delta's frames from the running release (and the `zstd` way, or raw
    /// blocks, for the rest).
    Delta,
    /// The chained form's frames (and raw blocks where a frame costs more).
    Lzc,
}

impl WayKind {
    /// The name printed in plans and summaries.
    pub fn name(self) -> &'static str {
        match self {
            WayKind::Raw => "raw",
            WayKind::Zstd => "zstd",
            WayKind::Delta => "delta",
            WayKind::Lzc => "lzc",
        }
    }
}

/// One way and the bytes it fetches for the data (the signed footer, manifest and tree
/// are fetched before planning and not counted here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Way {
    pub kind: WayKind,
    pub bytes: u64,
}

/// The ways to carry out `plan` and the one with the fewest bytes (raw on a tie).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ways {
    pub ways: Vec<Way>,
    pub chosen: WayKind,
    /// The `zstd` way's detail, when there is a compressed form (chosen or not).
    pub frames: Option<FramePlan>,
    /// Why there is no `zstd` way (no compressed form, a refused table).
    pub no_zstd: Option<String>,
    /// The `delta` way's detail, when there is a published delta (chosen or not).
    pub delta: Option<super::patched::DeltaPlan>,
    /// Why there is no `delta` way (none published for the running release, refused).
    pub no_delta: Option<String>,
    /// The `lzc` way's detail, when there is a chained form (chosen or not).
    pub chained: Option<FramePlan>,
    /// Why there is no `lzc` way (no chained form, a refused table).
    pub no_lzc: Option<String>,
}

impl Ways {
    /// Every way of `plan` (the `zstd` way when `frames` is given, else `no_zstd` says
    /// why not); chooses the fewest bytes. Pure.
    pub fn choose(plan: &Plan, frames: Result<FramePlan, String>) -> Ways {
        let mut ways = vec![Way {
            kind: WayKind::Raw,
            bytes: plan.fetch_bytes(),
        }];
        let (frames, no_zstd) = match frames {
            Ok(f) => {
                ways.push(Way {
                    kind: WayKind::Zstd,
                    bytes: f.bytes(),
                });
                (Some(f), None)
            }
            Err(why) => (None, Some(why)),
        };
        let chosen = ways
            .iter()
            .min_by_key(|w| w.bytes)
            .map_or(WayKind::Raw, |w| w.kind);
        Ways {
            frames,
            ways,
            chosen,
            no_zstd,
            delta: None,
            no_delta: None,
            chained: None,
            no_lzc: None,
        }
    }

    /// These ways and the `lzc` way when `chained` is given (else `no_lzc` says why
    /// not); it is chosen when it costs fewer bytes than the way chosen so far. Pure.
    #[must_use]
    pub fn with_chained(mut self, chained: Result<FramePlan, String>) -> Ways {
        match chained {
            Ok(c) => {
                self.offer(WayKind::Lzc, c.bytes());
                self.chained = Some(c);
            }
            Err(why) => self.no_lzc = Some(why),
        }
        self
    }

    /// Lists the way `kind` at `bytes` and chooses it when it costs fewer bytes than the
    /// way chosen so far (so the ways offered first win a tie).
    fn offer(&mut self, kind: WayKind, bytes: u64) {
        self.ways.push(Way { kind, bytes });
        if bytes < self.bytes() {
            self.chosen = kind;
        }
    }

    /// The frames [`Framed`] carries out for the chosen way, and whether they are the
    /// chained form's: the `zstd` way's, the `lzc` way's, or the `delta` way's rest (by
    /// the `zstd` rule). Pure.
    pub fn framed_plan(&self) -> Option<(&FramePlan, bool)> {
        match self.chosen {
            WayKind::Zstd => self.frames.as_ref().map(|f| (f, false)),
            WayKind::Lzc => self.chained.as_ref().map(|f| (f, true)),
            WayKind::Delta => self
                .delta
                .as_ref()
                .and_then(|d| d.rest.as_ref())
                .map(|f| (f, false)),
            WayKind::Raw => None,
        }
    }

    /// The `delta` way's plan when it is the chosen way. Pure.
    pub fn delta_plan(&self) -> Option<&super::patched::DeltaPlan> {
        self.delta
            .as_ref()
            .filter(|_| self.chosen == WayKind::Delta)
    }

    /// [`Ways::choose`], plus the `delta` way when `delta` is given (else `no_delta` says
    /// why not); the fewest bytes win, raw before zstd before delta on a tie. Pure.
    pub fn choose_with_delta(
        plan: &Plan,
        frames: Result<FramePlan, String>,
        delta: Result<super::patched::DeltaPlan, String>,
    ) -> Ways {
        let mut w = Ways::choose(plan, frames);
        match delta {
            Ok(d) => {
                w.offer(WayKind::Delta, d.bytes());
                w.delta = Some(d);
            }
            Err(why) => w.no_delta = Some(why),
        }
        w
    }

    /// Bytes the chosen way's bytes count for reading its own table or index (the
    /// compressed or chained form's table, the delta's index and its rest's table). Pure.
    pub fn own_tables(&self) -> u64 {
        match self.chosen {
            WayKind::Raw => 0,
            WayKind::Zstd => self.frames.as_ref().map_or(0, |f| f.table_fetched),
            WayKind::Lzc => self.chained.as_ref().map_or(0, |f| f.table_fetched),
            WayKind::Delta => self.delta.as_ref().map_or(0, |d| {
                d.index_fetched + d.rest.as_ref().map_or(0, |r| r.table_fetched)
            }),
        }
    }

    /// The chosen way's bytes.
    pub fn bytes(&self) -> u64 {
        self.ways
            .iter()
            .find(|w| w.kind == self.chosen)
            .map_or(0, |w| w.bytes)
    }

    /// `raw 1234 bytes, zstd 567 bytes (chosen)`: every way and its bytes. Pure.
    pub fn describe(&self) -> String {
        let mut s: Vec<String> = self
            .ways
            .iter()
            .map(|w| {
                let mark = if w.kind == self.chosen {
                    " (chosen)"
                } else {
                    ""
                };
                format!("{} {} bytes{mark}", w.kind.name(), w.bytes)
            })
            .collect();
        if let Some(why) = &self.no_zstd {
            s.push(format!("no zstd way: {why}"));
        }
        if let Some(why) = &self.no_delta {
            s.push(format!("no delta way: {why}"));
        }
        if let Some(why) = &self.no_lzc {
            s.push(format!("no lzc way: {why}"));
        }
        s.join(", ")
    }
}

/// The `zstd` or `lzc` way being carried out: the fetcher of the compressed form and its
/// plan.
pub struct Framed<'f, 'a> {
    pub fetcher: &'f mut Fetcher<'a>,
    pub plan: &'f FramePlan,
    /// Why the way was given up (its remaining blocks were fetched raw).
    pub refused: Option<String>,
    /// Frames fetched and decoded.
    pub frames_fetched: u64,
    current: Option<(Frame, Vec<u8>)>,
    /// The chained form's frames: `Some`, with where the source's decoder is believed to
    /// end (the end of the last frame it decoded; `None` after a failure or before the
    /// first frame: it is primed from the start).
    chain: Option<Option<u64>>,
}

impl std::fmt::Debug for Framed<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Framed")
            .field("frames", &self.plan.frames.len())
            .field("refused", &self.refused)
            .finish()
    }
}

impl<'f, 'a> Framed<'f, 'a> {
    /// The `zstd` way (`chained` false) or the `lzc` way (`chained` true) of `plan`.
    pub fn new(fetcher: &'f mut Fetcher<'a>, plan: &'f FramePlan, chained: bool) -> Self {
        Framed {
            fetcher,
            plan,
            refused: None,
            frames_fetched: 0,
            current: None,
            chain: chained.then_some(None),
        }
    }

    /// The way's name: `zstd` or `lzc`.
    pub fn way(&self) -> WayKind {
        if self.chain.is_some() {
            WayKind::Lzc
        } else {
            WayKind::Zstd
        }
    }

    /// True when block `i` is to come from a frame and the way still stands.
    pub fn serves(&self, i: u64) -> bool {
        self.refused.is_none() && self.plan.covers(i)
    }

    /// Gives the way up: later blocks are fetched raw.
    pub fn refuse(&mut self, why: String) {
        self.current = None;
        self.refused.get_or_insert(why);
    }

    /// The bytes of data block `i` (`bs` bytes) from its frame, fetching the frame when
    /// it is not the current one (a chained frame primed with the image's bytes before it
    /// from `target`, where every block before `i` is written unless `late` says it is
    /// still to be fetched). `None` when the way was given up (now or before).
    pub fn block<T: Read + Seek>(
        &mut self,
        i: u64,
        bs: u64,
        target: &mut T,
        late: &[Action],
    ) -> Option<&[u8]> {
        if !self.serves(i) {
            return None;
        }
        let off = i.checked_mul(bs)?;
        let Some(frame) = self.plan.table.frame_at(off) else {
            self.refuse(format!("no frame holds block {i}"));
            return None;
        };
        if self
            .current
            .as_ref()
            .is_none_or(|c| c.0.index != frame.index)
        {
            match self.fetch(&frame, bs, target, late) {
                Ok(bytes) => {
                    self.frames_fetched += 1;
                    self.current = Some((frame, bytes));
                }
                Err(why) => {
                    self.refuse(why);
                    return None;
                }
            }
        }
        let (fr, bytes) = self.current.as_ref()?;
        let a = usize::try_from(off - fr.raw_offset).ok()?;
        let b = a.checked_add(usize::try_from(bs).ok()?)?;
        bytes.get(a..b)
    }

    /// One frame, decoded by the source, retried like any answer; the reason as text when
    /// it fails. A chained frame's decoder first gets the priming it lacks, read from
    /// `target` (after a failed attempt it is primed again from the start).
    fn fetch<T: Read + Seek>(
        &mut self,
        frame: &Frame,
        bs: u64,
        target: &mut T,
        late: &[Action],
    ) -> Result<Vec<u8>, String> {
        let name = self.fetcher.name();
        loop {
            let mut out = Vec::with_capacity(usize::try_from(frame.raw_len).unwrap_or(0));
            let mut sink = |c: &[u8]| {
                if (out.len() + c.len()) as u64 > frame.raw_len {
                    return Err(super::Abort);
                }
                out.extend_from_slice(c);
                Ok(())
            };
            let r = match self.chain {
                None => self.fetcher.attempt_frame(frame, &mut sink),
                Some(at) => {
                    let (off, len) = super::lzc::prime_for(frame, at);
                    let first = off / bs.max(1);
                    let end = (off + len).div_ceil(bs.max(1));
                    let pending = (first..end).find(|&b| {
                        usize::try_from(b)
                            .ok()
                            .and_then(|b| late.get(b))
                            .is_some_and(|a| *a == Action::Fetch)
                    });
                    if let Some(b) = pending {
                        return Err(format!(
                            "frame {} needs block {b} before it, which is not written yet",
                            frame.index
                        ));
                    }
                    target
                        .seek(SeekFrom::Start(off))
                        .map_err(|e| format!("reading the target slot: {e}"))?;
                    let mut bytes = (&mut *target).take(len);
                    let prime = super::lzc::Prime {
                        off,
                        len,
                        bytes: &mut bytes,
                    };
                    self.fetcher.attempt_chain(frame, prime, &mut sink)
                }
            };
            let e = match r {
                Ok(()) if out.len() as u64 == frame.raw_len => {
                    if let Some(at) = &mut self.chain {
                        *at = Some(frame.raw_offset + frame.raw_len);
                    }
                    return Ok(out);
                }
                Ok(()) | Err(FetchError::Aborted) => FetchError::Permanent {
                    why: format!(
                        "frame {} gave {} bytes, not its {}",
                        frame.index,
                        out.len(),
                        frame.raw_len
                    ),
                },
                Err(e) => e,
            };
            if let Some(at) = &mut self.chain {
                *at = None;
            }
            if let Err(d) = self.fetcher.failed("a frame", e) {
                return Err(match d {
                    DeltaError::Fetch { error, .. } => format!("{name}: {error}"),
                    other => other.to_string(),
                });
            }
        }
    }
}

/// Finds and reads the seek table of the compressed form served by `f`, checked against
/// the signed image `meta`: the table and the bytes read for it, or why there is no
/// `zstd` way (no such file, not this image's, malformed). Reads the file's last
/// [`FOOTER_SIZE`] bytes (an HTTP source already has them from its first request), and
/// the rest of the table only when it is longer. Retries like any read.
pub fn fetch_table(f: &mut Fetcher<'_>, meta: &super::Meta) -> Result<(SeekTable, u64), String> {
    fetch_table_of(f, meta, &super::zst::ZST, SeekTable::parse)
}

/// [`fetch_table`] of the chained form `IMAGE.img.lzc` ([`super::lzc::parse_table`]).
pub fn fetch_chained_table(
    f: &mut Fetcher<'_>,
    meta: &super::Meta,
) -> Result<(SeekTable, u64), String> {
    fetch_table_of(f, meta, &super::lzc::LZC, super::lzc::parse_table)
}

/// The parser of a form's table: the table's bytes, the file's length, the image's length
/// and its block size.
type ParseTable = fn(&[u8], u64, u64, u64) -> Result<SeekTable, ZstError>;

/// [`fetch_table`] of the form `form`, its table parsed by `parse`.
fn fetch_table_of(
    f: &mut Fetcher<'_>,
    meta: &super::Meta,
    form: &Form,
    parse: ParseTable,
) -> Result<(SeekTable, u64), String> {
    use super::zst::{table_len_of, TABLE_FOOTER_LEN};
    let start = f.received;
    let why = |e: DeltaError| match e {
        DeltaError::Fetch { error, .. } => error.to_string(),
        other => other.to_string(),
    };
    let len = f.file_len().map_err(why)?;
    if len < TABLE_FOOTER_LEN {
        return Err(format!("it is {len} bytes long"));
    }
    let t0 = FOOTER_SIZE.min(len);
    let tail = f.read_vec("the seek table", len - t0, t0).map_err(why)?;
    let footer_at = tail.len() - 9;
    let tl = table_len_of(form, &tail[footer_at..], len).map_err(|e| e.to_string())?;
    let table = match usize::try_from(t0.saturating_sub(tl)) {
        Ok(skip) if tl <= t0 => tail[skip..].to_vec(),
        _ => {
            let mut head = f
                .read_vec("the seek table", len - tl, tl - t0)
                .map_err(why)?;
            head.extend_from_slice(&tail);
            head
        }
    };
    let bs = u64::from(meta.params.data_block_size());
    let t = parse(&table, len, meta.len, bs).map_err(|e| e.to_string())?;
    Ok((t, f.received - start))
}

//! `stele update install URL` and `stele update plan URL`: a delta install of an image
//! read through byte ranges ([`stele_engine::delta`]) into the slot that is not
//! running, with the running slot as the base, the progress line and the summary. The same
//! [`install_from`] and [`plan_from`] serve the device (the fetch client over a pipe,
//! [`pipe`]) and the host CLI's `--disk` (HTTP in-process).
//!
//! On the device, `stele` links no network code: an `http(s)://` location is fetched by
//! the fetch client at `/usr/lib/stele/stele-fetch` (verifier::layout::FETCH_CLIENT) inside
//! the verified root, run from the dm-verity
//! lower layer (`/run/stele/lower/usr/lib/stele/stele-fetch`), opened inside it
//! (crate::runtime::verified) and executed from that descriptor, never from the overlay or the data
//! partition. Any other location is a local file.

pub mod compressed;
pub mod install_from;
pub mod pipe;
pub mod protocol;

pub use compressed::{Beside, Fetchers, Rebuildable};
pub use install_from::{
    install_from, plan_from, plan_text, rebuilt_text, summary_line, DeltaInstalled, Planned, Slots,
};

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use stele_engine::delta::lzc::SUFFIX as LZC_SUFFIX;
use stele_engine::delta::zst::SUFFIX as ZST_SUFFIX;
use stele_engine::delta::{Clock, Meta, RangeSource, ReaderSource, RetryPolicy};
use stele_verifier::channel::ReleaseDelta;
use stele_verifier::progress::Progress;

use crate::runtime::open;
use crate::runtime::run_dir::RunDir;
use crate::runtime::verified::Lower;
use crate::target::{Place, Target};
use crate::{Error, Result};

/// Where an image or channel is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// `http://` or `https://`.
    Http(String),
    /// A local file (or block device).
    File(PathBuf),
}

impl Location {
    /// An `http(s)://` URL, else a path. Pure.
    pub fn parse(s: &str) -> Location {
        if is_url(s) {
            Location::Http(s.to_string())
        } else {
            Location::File(PathBuf::from(s))
        }
    }

    /// `reference` (a channel's release url) resolved against this location: an absolute
    /// URL as it is, a relative one against this location's directory. Pure.
    pub fn resolve(&self, reference: &str) -> Location {
        if is_url(reference) {
            return Location::Http(reference.to_string());
        }
        match self {
            Location::Http(u) => {
                // Scheme and authority stay; the path's last segment (and any query) goes.
                let path_start = u.find("://").map_or(0, |i| i + 3);
                let path_start = u[path_start..]
                    .find('/')
                    .map_or(u.len(), |i| path_start + i);
                let dir_end = u[path_start..]
                    .split(['?', '#'])
                    .next()
                    .and_then(|p| p.rfind('/'))
                    .map_or(path_start, |i| path_start + i);
                Location::Http(format!("{}/{reference}", &u[..dir_end]))
            }
            Location::File(p) => {
                Location::File(p.parent().unwrap_or(Path::new("")).join(reference))
            }
        }
    }

    /// The location as given.
    pub fn show(&self) -> String {
        match self {
            Location::Http(u) => u.clone(),
            Location::File(p) => p.display().to_string(),
        }
    }
}

/// True for `http://` and `https://` locations. Pure.
pub fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// The knobs of a fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchOptions {
    /// `--max-rate`: bytes per second on average.
    pub max_rate: Option<u64>,
    /// `--deadline`: give up retrying after this long without a byte.
    pub deadline: Duration,
    /// `--timeout`: one request that sends nothing for this long is cut (fetch client).
    pub timeout: Duration,
    /// `--max-time`: the whole fetch ends after this long, progress or not.
    pub max_time: Duration,
}

/// `--deadline`'s default, in seconds: both front-ends take it from here.
pub const DEFAULT_DEADLINE_SECS: u64 = 300;
/// `--timeout`'s default, in seconds: both front-ends take it from here.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// `--max-time`'s default, in seconds (stele_engine::delta::DEFAULT_MAX_TIME): both
/// front-ends take it from here.
pub const DEFAULT_MAX_TIME_SECS: u64 = stele_engine::delta::DEFAULT_MAX_TIME.as_secs();

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            max_rate: None,
            deadline: Duration::from_secs(DEFAULT_DEADLINE_SECS),
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            max_time: Duration::from_secs(DEFAULT_MAX_TIME_SECS),
        }
    }
}

impl FetchOptions {
    /// The retry policy these options give.
    pub fn policy(&self) -> RetryPolicy {
        RetryPolicy {
            deadline: self.deadline,
            max_time: self.max_time,
            ..RetryPolicy::default()
        }
    }
}

/// The real clock, and jitter from a xorshift seeded by the time and the pid.
#[derive(Debug)]
pub struct SystemClock {
    start: Instant,
    rng: u64,
}

impl Default for SystemClock {
    fn default() -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::from(d.subsec_nanos()) ^ d.as_secs());
        SystemClock {
            start: Instant::now(),
            rng: (t ^ u64::from(std::process::id()).rotate_left(32)) | 1,
        }
    }
}

impl Clock for SystemClock {
    fn now(&mut self) -> Duration {
        self.start.elapsed()
    }
    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }
    fn random(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        #[allow(clippy::cast_precision_loss)]
        let r = (self.rng >> 11) as f64 / (1u64 << 53) as f64;
        r
    }
}

/// The source of `loc` on the device: the fetch client from the verified root for a URL
/// (with `--timeout`), the file itself otherwise.
pub fn device_source(
    dev: &RunDir,
    loc: &Location,
    opts: &FetchOptions,
) -> Result<Box<dyn RangeSource>> {
    match loc {
        Location::Http(url) => {
            // Opened inside the verified image and run from that descriptor (pipe::Program).
            let lower = Lower::open(&dev.lower(), &dev.config.data_mount)?;
            let path = lower.show(stele_verifier::layout::FETCH_CLIENT);
            let Some(file) = lower.open_file(stele_verifier::layout::FETCH_CLIENT)? else {
                return Err(Error::NoFetchClient { path });
            };
            let program = pipe::Program { file, path };
            let args = vec![
                "--timeout".to_string(),
                opts.timeout.as_secs().max(1).to_string(),
            ];
            Ok(Box::new(pipe::PipeSource::new(program, args, url)))
        }
        Location::File(p) => file_source(p),
    }
}

/// The source of the image at `loc` for target `t`: on the device the fetch client from
/// the verified root for a URL; on a host the HTTP client the front-end gave
/// ([`Target::http`]); a file as it is.
pub fn source(t: &Target, loc: &Location, opts: &FetchOptions) -> Result<Box<dyn RangeSource>> {
    match &t.place {
        Place::Device(dev) => device_source(dev, loc, opts),
        Place::Disk(_) => host_source(loc, opts, t.http),
    }
}

/// The source of `loc` on a host: `http` for a URL (the host's in-process client; none:
/// [`Error::NoHttp`]), the file otherwise.
pub fn host_source(
    loc: &Location,
    opts: &FetchOptions,
    http: Option<crate::target::HttpOpener>,
) -> Result<Box<dyn RangeSource>> {
    match loc {
        Location::Http(url) => match http {
            Some(open) => Ok(open(url, opts.timeout)),
            None => Err(Error::NoHttp { url: url.clone() }),
        },
        Location::File(p) => file_source(p),
    }
}

/// A local image file (or block device) read through byte ranges, on either side.
fn file_source(p: &Path) -> Result<Box<dyn RangeSource>> {
    let name = p.display().to_string();
    Ok(Box::new(ReaderSource::new(open::open(&name, false)?, name)))
}

/// The source of the file named `IMAGE.img<suffix>` beside `loc` (the compressed form
/// `URL.zst`, the chained form `URL.lzc`) for target `t`, when `loc` is a URL: decoded by
/// the fetch client on the device, in-process on a host.
pub fn beside_source(
    t: &Target,
    loc: &Location,
    suffix: &str,
    opts: &FetchOptions,
) -> Result<Option<Box<dyn RangeSource>>> {
    compressed::beside_of(loc, suffix)
        .map(|z| source(t, &z, opts))
        .transpose()
}

/// A published delta's source, the envelope digest of the release it starts from, and
/// the signed channel's entry for it when the channel listed it.
pub type DeltaSource = (Box<dyn RangeSource>, [u8; 32], Option<ReleaseDelta>);

/// A published delta the signed channel lists for the release being installed: its
/// entry and where it is (its `url` resolved against the channel's location).
#[derive(Clone, Debug)]
pub struct ListedDelta {
    pub at: Location,
    pub entry: ReleaseDelta,
}

/// The source of the published delta for a device running the slot image `base`, with
/// that image's envelope digest, when `base` holds a slot image (its footer and envelope
/// read; trust is not needed here: every block the delta gives is checked against the new
/// image's signed tree): the one `listed` by the signed channel from that release when
/// there is one (over HTTP), otherwise the one beside `loc` (`URL.from-<16 hex>.delta`)
/// when `loc` is a URL.
pub fn dsource<B: Read + Seek>(
    t: &Target,
    loc: &Location,
    listed: &[ListedDelta],
    opts: &FetchOptions,
    base: Option<&mut B>,
) -> Result<Option<DeltaSource>> {
    let Some(b) = base else {
        return Ok(None);
    };
    let Ok(len) = b.seek(std::io::SeekFrom::End(0)) else {
        return Ok(None);
    };
    let Ok(old) = stele_engine::delta::published::envelope_digest(b, len) else {
        return Ok(None);
    };
    if let Some(l) = listed
        .iter()
        .find(|l| l.entry.from_sha256 == old && matches!(l.at, Location::Http(_)))
    {
        return Ok(Some((source(t, &l.at, opts)?, old, Some(l.entry.clone()))));
    }
    compressed::delta_of(loc, &old)
        .map(|d| source(t, &d, opts).map(|s| (s, old, None)))
        .transpose()
}

/// The [`Beside`] of the opened files beside an image.
fn beside<'s>(
    zst: &'s mut Option<Box<dyn RangeSource>>,
    lzc: &'s mut Option<Box<dyn RangeSource>>,
    delta: &'s mut Option<DeltaSource>,
) -> Beside<'s> {
    Beside {
        zst: zst.as_deref_mut().map(|z| z as &mut dyn RangeSource),
        lzc: lzc.as_deref_mut().map(|l| l as &mut dyn RangeSource),
        delta: delta
            .as_mut()
            .map(|(d, old, l)| (&mut **d as &mut dyn RangeSource, *old, l.as_ref())),
    }
}

/// `stele update install URL|FILE` (as a delta) on an opened target
/// ([`Target::load_trust`] read): into [`Target::install_slot`] (locked throughout), with
/// [`Target::base`] (the booted slot, or the slot a disk image boots next) as the base; the
/// state locked only for its reads and the flip. `check` is the caller's own refusal of
/// the verified metadata (a channel's digest), before the slot is touched; `listed`: the
/// published deltas the signed channel lists for this image (none without a channel).
pub fn install(
    t: &mut Target,
    loc: &Location,
    listed: &[ListedDelta],
    opts: &FetchOptions,
    check: &mut dyn FnMut(&Meta) -> Result<()>,
    log: &mut dyn FnMut(&str),
    progress: &mut dyn Progress,
) -> Result<DeltaInstalled> {
    let mut src = source(t, loc, opts)?;
    let mut zsrc = beside_source(t, loc, ZST_SUFFIX, opts)?;
    let mut lsrc = beside_source(t, loc, LZC_SUFFIX, opts)?;
    let mut target = t.install_slot()?;
    let mut base = t.base(&target.state)?;
    let mut dsrc = dsource(t, loc, listed, opts, base.as_mut().map(|(_, b)| b))?;
    let trust = t.trusted.trust()?;
    let slot_len = target.part.len();
    let done = install_from(
        &mut *src,
        beside(&mut zsrc, &mut lsrc, &mut dsrc),
        &mut SystemClock::default(),
        Slots {
            target: target.slot,
            slot: &mut target.part,
            slot_len,
            base: base.as_mut().map(|(_, b)| {
                let len = b.len();
                (b, len)
            }),
        },
        &mut t.state,
        &trust,
        opts,
        check,
        log,
        progress,
    );
    target.named(done, t.on_device())
}

/// `stele update plan URL|FILE` on an opened target ([`Target::load_trust`] read): what
/// [`install`] would fetch and reuse, against the floors it would meet; writes nothing.
pub fn plan(t: &mut Target, loc: &Location, opts: &FetchOptions) -> Result<String> {
    let mut src = source(t, loc, opts)?;
    let mut zsrc = beside_source(t, loc, ZST_SUFFIX, opts)?;
    let mut lsrc = beside_source(t, loc, LZC_SUFFIX, opts)?;
    let st = t.state.load()?;
    let target = crate::commands::install::plan(&st, t.booted())?;
    let trust = t.trusted.trust()?;
    let floors = trust.floors(&st);
    let mut slot = t.slot(target, false)?;
    let slot_len = slot.len();
    let mut base = t.base(&st)?;
    let base_slot = base.as_ref().map(|(s, _)| *s);
    let mut dsrc = dsource(t, loc, &[], opts, base.as_mut().map(|(_, b)| b))?;
    let planned = plan_from(
        &mut *src,
        beside(&mut zsrc, &mut lsrc, &mut dsrc),
        &mut SystemClock::default(),
        Some((&mut slot, slot_len)),
        base.as_mut().map(|(_, b)| {
            let len = b.len();
            (b, len)
        }),
        floors.effective(),
        trust.keyring,
        opts,
    )?;
    Ok(match planned {
        Planned::Tree(meta, p, ways, priced) => {
            plan_text(&loc.show(), &meta, &p, &ways, priced, target, base_slot)
        }
        Planned::Rebuilt(meta, r) => rebuilt_text(&loc.show(), &meta, &r, target, base_slot),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::rollback::Floors;
    use crate::runtime::state_file::StateFile;
    use std::io::Cursor;
    use stele_verifier::exit::{Exit, Report};
    use stele_verifier::progress::Silent;
    use stele_verifier::state::Slot;
    use stele_verifier::state::{self, BootState};
    use stele_verifier::testutil::{image_signed_by, trusted};

    /// A URL install applies the same floors as a file install: the TPM's and the
    /// initramfs minimum count when the state's is lower, and the refusal names them,
    /// before the slot or the state is touched.
    #[test]
    fn a_url_install_is_refused_below_the_tpm_or_initramfs_floor() {
        for floors in [
            Floors {
                tpm: Some(7),
                ..Floors::default()
            },
            Floors {
                initramfs: 7,
                ..Floors::default()
            },
        ] {
            let img = image_signed_by(8, 6, 1, 1).0;
            let keyring = trusted();
            let mut c = Cursor::new(vec![0u8; 8192]);
            state::initialize(&mut c, &BootState::initial(false)).unwrap();
            let mut st = StateFile::new(c, "state");
            let state_before = st.get_ref().get_ref().clone();
            let mut slot = Cursor::new(vec![0xAAu8; 1 << 20]);
            let mut src = ReaderSource::new(Cursor::new(img), "v6.img".to_string());
            let e = install_from(
                &mut src,
                Beside::default(),
                &mut SystemClock::default(),
                Slots::<_, Cursor<Vec<u8>>> {
                    target: Slot::A,
                    slot: &mut slot,
                    slot_len: 1 << 20,
                    base: None,
                },
                &mut st,
                &crate::commands::install::Trust {
                    keyring,
                    product: None,
                    running: None,
                    floors,
                },
                &FetchOptions::default(),
                &mut |_| Ok(()),
                &mut |_| {},
                &mut Silent,
            )
            .unwrap_err();
            assert_eq!(e.exit(), Exit::Refused, "{e}");
            assert!(matches!(e, Error::Floors { .. }), "{e}");
            assert!(e.to_string().contains("rollback"), "{e}");
            assert!(e.to_string().contains(&floors.sources()), "{e}");
            assert!(slot.get_ref().iter().all(|&b| b == 0xAA), "slot written");
            assert_eq!(st.get_ref().get_ref(), &state_before, "state written");
        }
    }

    #[test]
    fn relative_references_resolve_against_the_channel() {
        let ch = Location::parse("https://cdn.example.com/fleet/stable.channel?x=1");
        assert_eq!(
            ch.resolve("demo-2.img"),
            Location::Http("https://cdn.example.com/fleet/demo-2.img".into())
        );
        assert_eq!(
            ch.resolve("img/demo-2.img"),
            Location::Http("https://cdn.example.com/fleet/img/demo-2.img".into())
        );
        assert_eq!(
            Location::parse("http://10.0.2.100/channel").resolve("v2.img"),
            Location::Http("http://10.0.2.100/v2.img".into())
        );
        assert_eq!(
            Location::parse("http://10.0.2.100").resolve("v2.img"),
            Location::Http("http://10.0.2.100/v2.img".into())
        );
        assert_eq!(
            ch.resolve("http://other/x.img"),
            Location::Http("http://other/x.img".into())
        );
        assert_eq!(
            Location::parse("/media/usb/stable.channel").resolve("v2.img"),
            Location::File("/media/usb/v2.img".into())
        );
    }
}

//! `stele update check --channel URL` and `stele update apply --channel URL` on the
//! device: the signed channel (verifier::channel) read through the fetch client or from a
//! file, checked against the image's channel keys, the booted image and the device's
//! channel state; then, for `apply`, the delta install of the release it offers, whose
//! manifest envelope must be the one the channel names.
//!
//! - channel keys: `/etc/stele/channel-keys/*.pem` of the booted image, read from the
//!   verified lower layer (`/run/stele/lower/etc/stele/channel-keys`), threshold 1;
//! - followed channels: `/etc/stele/channels` of the booted image, from the lower layer:
//!   a channel file of another name is refused;
//! - channel state: `<data_mount>/lib/stele/channel.toml` on the data partition, written
//!   atomically (temporary file, fsync, rename, fsync of the directory).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use stele_engine::delta::{DeltaError, Fetcher};
use stele_verifier::channel::{
    self, decide, due_at, format_rfc3339, ChannelError, ChannelState, DeviceView, Offer,
    VerifiedChannel, SEED_RANGE,
};
use stele_verifier::exit::print_warning;
use stele_verifier::hex;
use stele_verifier::keys::Keyring;
use stele_verifier::manifest::Manifest;

use crate::remote::{
    self, device_source, DeltaInstalled, FetchOptions, ListedDelta, Location, SystemClock,
};
use crate::runtime::data_file;
use crate::runtime::run_dir::{RunDir, MANIFEST};
use crate::runtime::verified::Lower;
use crate::target::Target;
use crate::{Error, Result};

/// The channel keys inside the image, relative to its root
/// (verifier::layout::CHANNEL_KEYS_DIR).
pub fn channel_keys_in(root: &Path) -> PathBuf {
    root.join(stele_verifier::layout::CHANNEL_KEYS_DIR.trim_start_matches('/'))
}
/// The followed-channels file inside the image, relative to its root
/// (verifier::layout::CHANNELS_FILE).
pub fn channels_file_in(root: &Path) -> PathBuf {
    root.join(stele_verifier::layout::CHANNELS_FILE.trim_start_matches('/'))
}

/// The channels the verified image follows (its `/etc/stele/channels`, read inside the
/// lower layer like the channel keys); a missing or malformed file is an error naming it.
pub fn followed_in(lower: &Lower) -> Result<Vec<String>> {
    let file = stele_verifier::layout::CHANNELS_FILE;
    let path = lower.show(file);
    let err = |why: String| Error::FollowedChannels {
        path: path.clone(),
        why,
    };
    let bytes = lower
        .read(file)?
        .ok_or_else(|| err("no such file".to_string()))?;
    let text = String::from_utf8(bytes).map_err(|_| err("not UTF-8".to_string()))?;
    channel::parse_followed(&text).map_err(err)
}

/// The channel state under the data partition's mount point.
pub const STATE_FILE: &str = "lib/stele/channel.toml";
/// Largest channel file read.
const MAX_CHANNEL_LEN: u64 = 1 << 20;

/// What the device knows for a channel decision, read from `/run/stele`.
#[derive(Debug)]
pub struct ChannelEnv {
    pub dev: RunDir,
    pub keyring: Keyring,
    /// The booted image's manifest (the verified body the boot published).
    pub booted: Manifest,
    /// The channels the booted image follows.
    pub follows: Vec<String>,
    pub state_path: PathBuf,
    pub state: ChannelState,
}

/// Where the channel state lives on this device: `<data_mount>/lib/stele/channel.toml`,
/// only with a data partition.
pub fn state_path(dev: &RunDir) -> Result<PathBuf> {
    if dev
        .devices
        .get(stele_verifier::layout::Role::Data)
        .is_none()
    {
        return Err(Error::NoDataPartition);
    }
    Ok(Path::new(&dev.config.data_mount).join(STATE_FILE))
}

/// Reads the channel state; a missing file is a new state with a fresh random seed,
/// written at once (the seed is the device's for good).
/// Opened as data (crate::runtime::data_file): no link followed, a FIFO or device refused.
pub fn load_state(path: &Path) -> Result<ChannelState> {
    match data_file::read(path).map_err(Error::DataFile)? {
        Some(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            ChannelState::parse(&text).map_err(|why| Error::ChannelState {
                path: path.to_path_buf(),
                why,
            })
        }
        None => {
            let st = ChannelState::new(random_seed(path)?);
            save_state(path, &st)?;
            Ok(st)
        }
    }
}

fn random_seed(path: &Path) -> Result<u64> {
    let mut b = [0u8; 8];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .map_err(|e| Error::ChannelState {
            path: path.to_path_buf(),
            why: format!("drawing the rollout seed from /dev/urandom: {e}"),
        })?;
    Ok(u64::from_le_bytes(b) % SEED_RANGE)
}

/// Writes the channel state atomically: a new temporary file next to it (never through a
/// link planted there), fsync, rename, fsync of the directory (crate::runtime::data_file).
pub fn save_state(path: &Path, st: &ChannelState) -> Result<()> {
    data_file::write_atomic(path, st.to_toml().as_bytes()).map_err(Error::DataFile)
}

/// Reads `/run/stele` and everything a channel decision needs.
pub fn env(run_dir: &Path) -> Result<ChannelEnv> {
    let dev = RunDir::read(run_dir)?;
    // Inside the verified image, never through a link out of it (crate::runtime::verified).
    let lower = Lower::open(&dev.lower(), &dev.config.data_mount)?;
    let keyring = lower.keyring(stele_verifier::layout::CHANNEL_KEYS_DIR, 1, &mut |s| {
        print_warning(&s)
    })?;
    let follows = followed_in(&lower)?;
    let mpath = run_dir.join(MANIFEST);
    let body = fs::read(&mpath).map_err(|source| Error::NotPublished {
        path: mpath.clone(),
        source,
    })?;
    let booted = Manifest::parse_body(&body).map_err(|source| Error::PublishedManifest {
        path: mpath,
        source,
    })?;
    let state_path = state_path(&dev)?;
    let state = load_state(&state_path)?;
    Ok(ChannelEnv {
        dev,
        keyring,
        booted,
        follows,
        state_path,
        state,
    })
}

/// Reads and verifies the channel file at `loc`.
pub fn read_channel(
    e: &ChannelEnv,
    loc: &Location,
    opts: &FetchOptions,
) -> Result<VerifiedChannel> {
    let mut src = device_source(&e.dev, loc, opts)?;
    let mut clock = SystemClock::default();
    let mut f = Fetcher::new(&mut *src, &mut clock, opts.policy(), None);
    let fetch_err = |source| Error::Fetch {
        url: loc.show(),
        source,
    };
    let len = f.file_len().map_err(fetch_err)?;
    if len > MAX_CHANNEL_LEN {
        return Err(fetch_err(DeltaError::Verify(
            stele_verifier::Error::invalid("channel", format!("{len} bytes: not a channel file")),
        )));
    }
    let bytes = f.read_vec("the channel", 0, len).map_err(fetch_err)?;
    channel::verify(&bytes, &e.keyring).map_err(|source| Error::Channel {
        location: loc.show(),
        source,
    })
}

fn clock_now() -> Option<u64> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

fn view<'a>(e: &'a ChannelEnv, follows: &'a [&'a str]) -> DeviceView<'a> {
    DeviceView {
        name: &e.booted.name,
        version: &e.booted.version,
        rollback_index: e.booted.rollback_index,
        created: e.booted.created,
        clock: clock_now(),
        follows,
    }
}

/// The lines `check` prints for a verified channel. Pure.
pub fn describe(
    v: &VerifiedChannel,
    e: &ChannelEnv,
    decision: &std::result::Result<Offer<'_>, &ChannelError>,
) -> String {
    let c = &v.channel;
    let mut out = format!(
        "stele: channel {} sequence={} issued={} expires={} product={}\n\
         stele: booted {} {} rollback_index={}; rollout seed {} of {SEED_RANGE}\n",
        c.channel,
        c.sequence,
        format_rfc3339(c.issued),
        format_rfc3339(c.expires),
        c.name,
        e.booted.name,
        e.booted.version,
        e.booted.rollback_index,
        e.state.seed
    );
    for r in &c.releases {
        let when = match due_at(r, e.state.seed) {
            Some(t) => format!("due for this device from {}", format_rfc3339(t)),
            None => "no wave includes this device".into(),
        };
        out.push_str(&format!(
            "stele: release {} rollback_index={} {} ({when})\n",
            r.version, r.rollback_index, r.url
        ));
        for d in &r.deltas {
            out.push_str(&format!(
                "stele: release {}: delta from {} {} ({} bytes)\n",
                r.version, d.from_version, d.url, d.length
            ));
        }
    }
    out.push_str(&match decision {
        Ok(Offer::UpToDate) => {
            "stele: up to date: nothing newer than the booted image\n".to_string()
        }
        Ok(Offer::Install(r)) => format!(
            "stele: offered: {} rollback_index={}, due now\n",
            r.version, r.rollback_index
        ),
        Err(err) => format!("stele: not offered: {err}\n"),
    });
    out
}

/// `check --channel`: verifies the channel and prints what it offers; writes nothing
/// (except a new device's rollout seed). A refused channel (signature, product,
/// sequence, expiry) is an error; a wave not yet due is shown, not an error.
pub fn check(t: &Target, loc: &Location, opts: &FetchOptions) -> Result<String> {
    let e = env(device_dir(t, "check")?)?;
    let v = read_channel(&e, loc, opts)?;
    let refuse = |source| Error::Channel {
        location: loc.show(),
        source,
    };
    let follows: Vec<&str> = e.follows.iter().map(String::as_str).collect();
    match decide(&v, &view(&e, &follows), &e.state) {
        Ok(d) => Ok(describe(&v, &e, &Ok(d.offer))),
        Err(err @ ChannelError::WaveNotDue { .. }) => Ok(describe(&v, &e, &Err(&err))),
        Err(err) => Err(refuse(err)),
    }
}

/// The run directory of a target on the device; the channel commands have no meaning on
/// a disk image.
fn device_dir<'a>(t: &'a Target, command: &'static str) -> Result<&'a Path> {
    t.run_dir()
        .map(|d| d.dir.as_path())
        .ok_or(Error::DeviceOnly { command })
}

/// What `apply` did.
#[derive(Debug)]
pub enum Applied {
    UpToDate { version: String },
    Installed(Box<DeltaInstalled>),
}

/// `apply --channel`: [`check`]'s checks, then the delta install of the offered
/// release. Its image must have the channel's length and manifest digest (and so its
/// version and rollback index) before anything is written; the channel state is
/// recorded then (or when the device is up to date). Every refusal writes nothing.
pub fn apply(
    t: &mut Target,
    loc: &Location,
    opts: &FetchOptions,
    log: &mut dyn FnMut(&str),
    progress: &mut dyn stele_verifier::progress::Progress,
) -> Result<Applied> {
    let e = env(device_dir(t, "apply")?)?;
    let v = read_channel(&e, loc, opts)?;
    let refuse = |source| Error::Channel {
        location: loc.show(),
        source,
    };
    let follows: Vec<&str> = e.follows.iter().map(String::as_str).collect();
    let d = decide(&v, &view(&e, &follows), &e.state).map_err(refuse)?;
    let mut state = e.state.clone();
    state.channels.insert(v.channel.channel.clone(), d.record);
    let release = match d.offer {
        Offer::UpToDate => {
            save_state(&e.state_path, &state)?;
            return Ok(Applied::UpToDate {
                version: e.booted.version.clone(),
            });
        }
        Offer::Install(r) => r.clone(),
    };
    let image = loc.resolve(&release.url);
    log(&format!(
        "update: channel {} sequence={} offers {} rollback_index={}: {}",
        v.channel.channel,
        v.channel.sequence,
        release.version,
        release.rollback_index,
        image.show()
    ));
    let product = v.channel.name.clone();
    let mut check = |meta: &stele_engine::delta::Meta| -> Result<()> {
        let mismatch = |why: String| Error::Channel {
            location: image.show(),
            source: ChannelError::ReleaseMismatch {
                version: release.version.clone(),
                why,
            },
        };
        if meta.len != release.length {
            return Err(mismatch(format!(
                "the image is {} bytes, the channel says {}",
                meta.len, release.length
            )));
        }
        let digest: [u8; 32] = Sha256::digest(&meta.envelope_bytes).into();
        if digest != release.manifest_sha256 {
            return Err(Error::Channel {
                location: image.show(),
                source: ChannelError::ManifestMismatch {
                    version: release.version.clone(),
                    found: hex::encode(&digest),
                    expected: hex::encode(&release.manifest_sha256),
                },
            });
        }
        let m = &meta.manifest;
        if m.version != release.version
            || m.rollback_index != release.rollback_index
            || m.name != product
        {
            return Err(mismatch(format!(
                "the image is {} {} rollback_index={}, the channel says {product} {} rollback_index={}",
                m.name, m.version, m.rollback_index, release.version, release.rollback_index
            )));
        }
        // The channel is acted on: remember it before the slot is touched.
        save_state(&e.state_path, &state)
    };
    // The published deltas the channel lists for the release, found by their listed URL
    // (relative ones against the channel's location), not by their name beside the image.
    let listed: Vec<ListedDelta> = release
        .deltas
        .iter()
        .map(|d| ListedDelta {
            at: loc.resolve(&d.url),
            entry: d.clone(),
        })
        .collect();
    t.load_trust()?;
    let done = remote::install(t, &image, &listed, opts, &mut check, log, progress)?;
    Ok(Applied::Installed(Box::new(done)))
}

//! `stele channel build`: the signed update channel (docs/FORMATS.md "Update channel"). Each
//! release's footer and manifest envelope are read from its URL (or, for a URL relative to
//! the channel, from the file next to `--out`) for its length, rollback index and manifest
//! digest; the body is checked by the rules the device applies, then signed in the
//! channel's domain and written atomically.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use stele_device::remote::{is_url, FetchOptions, Location, SystemClock};
use stele_engine::delta::{fetch_meta, Fetcher, Trust};
use stele_verifier::channel::{
    self, format_rfc3339, parse_rfc3339, Channel, Release, ReleaseDelta, Wave,
};
use stele_verifier::keys::key_id;

use crate::error::{CliResult, Error, Usage};

/// `stele channel` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ChannelCommand {
    /// Build and sign an update channel file.
    Build(BuildArgs),
}

/// Arguments of `stele channel build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Channel signing key (PKCS#8 PEM), repeatable.
    #[arg(long = "key", value_name = "K.pem", required = true)]
    keys: Vec<PathBuf>,
    /// The product: the manifest name of the images (devices refuse another product's channel).
    #[arg(long, value_name = "PRODUCT")]
    name: String,
    /// The channel's name (stable, beta, ...).
    #[arg(long, value_name = "NAME")]
    channel: String,
    /// Sequence number: higher than every channel file of this name before it.
    #[arg(long, value_name = "N")]
    sequence: u64,
    /// When devices stop accepting this file (RFC 3339, e.g. 2025-07-01T00:00:00Z).
    #[arg(long, value_name = "RFC3339")]
    expires: String,
    /// When it was issued (RFC 3339; default SOURCE_DATE_EPOCH, else now).
    #[arg(long, value_name = "RFC3339")]
    issued: Option<String>,
    /// A release, oldest first: its version and where devices fetch it (an http(s)://
    /// URL, or a path relative to the channel's own URL, read here next to --out).
    #[arg(long = "release", value_name = "VERSION=URL", required = true)]
    releases: Vec<String>,
    /// When a release's rollout starts (RFC 3339; default: --issued).
    #[arg(long = "start", value_name = "VERSION=RFC3339")]
    starts: Vec<String>,
    /// A rollout wave of a release: from AFTER seconds after its start, devices whose seed
    /// (0..1000) is below BELOW take it. Repeatable, in order; none: every device at start.
    #[arg(long = "wave", value_name = "VERSION=AFTER:BELOW")]
    waves: Vec<String>,
    /// A published delta (`stele image delta`) listed for the release it leads to, read
    /// here for the releases it starts from and leads to, its length and digests; URL:
    /// where devices fetch it (default: FILE's name, relative to the channel). Repeatable.
    #[arg(long = "delta", value_name = "FILE[=URL]")]
    deltas: Vec<String>,
    /// The channel file to write (written to a temporary file, renamed at the end).
    #[arg(long, value_name = "CHANNEL")]
    out: PathBuf,
    /// Replace an existing --out (a new sequence of the channel).
    #[arg(long)]
    force: bool,
}

pub fn run(c: ChannelCommand) -> CliResult {
    match c {
        ChannelCommand::Build(a) => build(&a),
    }
}

fn arg_err(arg: &'static str, value: &str, why: &'static str) -> Error {
    Usage::Arg {
        arg,
        value: value.to_string(),
        why,
    }
    .into()
}

fn time(arg: &'static str, v: &str) -> CliResult<u64> {
    parse_rfc3339(v).ok_or_else(|| {
        arg_err(
            arg,
            v,
            "expected an RFC 3339 time such as 2025-07-01T00:00:00Z",
        )
    })
}

fn split<'a>(arg: &'static str, v: &'a str) -> CliResult<(&'a str, &'a str)> {
    v.split_once('=')
        .filter(|(a, b)| !a.is_empty() && !b.is_empty())
        .ok_or_else(|| arg_err(arg, v, "expected VERSION=VALUE"))
}

/// Reads the footer and envelope of the image at `url` (a relative one next to `out`).
fn read_release(
    product: &str,
    version: &str,
    url: &str,
    out: &Path,
    start: u64,
    waves: Vec<Wave>,
) -> CliResult<Release> {
    let loc = if is_url(url) {
        Location::Http(url.to_string())
    } else {
        Location::File(out.parent().unwrap_or(Path::new("")).join(url))
    };
    let opts = FetchOptions::default();
    let mut src = crate::remote::host_source(&loc, &opts)?;
    let mut clock = SystemClock::default();
    let mut f = Fetcher::new(&mut *src, &mut clock, opts.policy(), None);
    // The signatures are the devices' business (their keyring); the image must still
    // be a well-formed slot image whose tree matches its root hash.
    let meta = fetch_meta(&mut f, Trust::Unsigned, None, None, None).map_err(|source| {
        stele_device::Error::Fetch {
            url: loc.show(),
            source,
        }
    })?;
    let m = &meta.manifest;
    let why = if m.name != product {
        Some(format!(
            "{} is an image of {:?}, not of --name {product:?}",
            loc.show(),
            m.name
        ))
    } else if m.version != version {
        Some(format!("{} is version {}", loc.show(), m.version))
    } else {
        None
    };
    if let Some(why) = why {
        return Err(Usage::Release {
            version: version.into(),
            why,
        }
        .into());
    }
    Ok(Release {
        version: version.into(),
        rollback_index: m.rollback_index,
        url: url.into(),
        length: meta.len,
        manifest_sha256: Sha256::digest(&meta.envelope_bytes).into(),
        start,
        waves,
        deltas: Vec::new(),
    })
}

/// Lists the delta of `--delta FILE[=URL]` for the release it leads to: that release and
/// the one it starts from must be listed (`--release`), and the delta's new length must be
/// the release's.
fn add_delta(releases: &mut [Release], arg: &str) -> CliResult {
    let (file, url) = match arg.split_once('=') {
        Some((f, u)) if !f.is_empty() && !u.is_empty() => (PathBuf::from(f), u.to_string()),
        Some(_) => return Err(arg_err("--delta", arg, "expected FILE or FILE=URL")),
        None => {
            let f = PathBuf::from(arg);
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| arg_err("--delta", arg, "expected FILE or FILE=URL"))?;
            (f, name)
        }
    };
    let refuse = |why: String| -> Error {
        Usage::Delta {
            file: file.display().to_string(),
            why,
        }
        .into()
    };
    let bytes = std::fs::read(&file).map_err(|e| Error::io("read", &file, e))?;
    let (index, sha256, index_sha256) =
        stele_engine::delta::published::listing(&bytes).map_err(|e| {
            refuse(format!(
                "not a stele delta ({e}): give a file of `stele image delta`"
            ))
        })?;
    let from = releases
        .iter()
        .find(|r| r.manifest_sha256 == index.old_envelope)
        .map(|r| r.version.clone())
        .ok_or_else(|| {
            refuse(format!(
                "it starts from the release whose manifest envelope has sha256 {}, which no --release gives: list that release too",
                stele_verifier::hex::encode(&index.old_envelope)
            ))
        })?;
    let to = releases
        .iter_mut()
        .find(|r| r.manifest_sha256 == index.new_envelope)
        .ok_or_else(|| {
            refuse(format!(
                "it leads to the release whose manifest envelope has sha256 {}, which no --release gives: not a delta to a release of this channel",
                stele_verifier::hex::encode(&index.new_envelope)
            ))
        })?;
    if index.new_len != to.length {
        return Err(refuse(format!(
            "it leads to an image of {} bytes, release {} is {} bytes",
            index.new_len, to.version, to.length
        )));
    }
    to.deltas.push(ReleaseDelta {
        from_sha256: index.old_envelope,
        from_version: from,
        url,
        length: bytes.len() as u64,
        sha256,
        index_sha256,
    });
    Ok(())
}

fn build(a: &BuildArgs) -> CliResult {
    let keys = a
        .keys
        .iter()
        .map(|p| stele_image::key_files::load_signing_key(p))
        .collect::<Result<Vec<_>, _>>()?;
    let issued = match &a.issued {
        Some(v) => time("--issued", v)?,
        None => match crate::util::source_date_epoch()? {
            0 => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            e => e,
        },
    };
    let expires = time("--expires", &a.expires)?;
    // The output rule of every --out (docs/CLI.md "Outputs"), before any release is read.
    stele_image::atomic::output_target(&a.out, a.force)?;
    let mut releases = Vec::new();
    for r in &a.releases {
        let (version, url) = split("--release", r)?;
        let mut start = issued;
        for s in &a.starts {
            let (v, t) = split("--start", s)?;
            if v == version {
                start = time("--start", t)?;
            }
        }
        let mut waves = Vec::new();
        for w in &a.waves {
            let (v, spec) = split("--wave", w)?;
            if v != version {
                continue;
            }
            let (after, below) = spec
                .split_once(':')
                .and_then(|(x, y)| Some((x.parse().ok()?, y.parse().ok()?)))
                .ok_or_else(|| arg_err("--wave", w, "expected VERSION=AFTER_SECONDS:BELOW"))?;
            waves.push(Wave { after, below });
        }
        releases.push(read_release(&a.name, version, url, &a.out, start, waves)?);
    }
    for (flag, list) in [("--start", &a.starts), ("--wave", &a.waves)] {
        for s in list {
            let (v, _) = split(flag, s)?;
            if !releases.iter().any(|r| r.version == v) {
                return Err(Usage::Release {
                    version: v.into(),
                    why: format!("{flag} names a version that no --release gives"),
                }
                .into());
            }
        }
    }
    for d in &a.deltas {
        add_delta(&mut releases, d)?;
    }
    let c = Channel {
        channel: a.channel.clone(),
        name: a.name.clone(),
        sequence: a.sequence,
        issued,
        expires,
        releases,
    };
    c.check().map_err(Usage::Channel)?;
    let file = channel::sign(&c, &keys)?;
    let mut out = stele_image::atomic::AtomicFile::output(&a.out, 0o644, a.force)?;
    std::io::Write::write_all(out.file(), &file).map_err(|e| Error::io("write", &a.out, e))?;
    out.commit()?;
    let signers: Vec<String> = keys
        .iter()
        .map(|k| key_id(&k.verifying_key()).to_string())
        .collect();
    let versions: Vec<&str> = c.releases.iter().map(|r| r.version.as_str()).collect();
    println!(
        "channel: {} {} sequence={} issued={} expires={} product={} releases={} signed by {}",
        a.out.display(),
        c.channel,
        c.sequence,
        format_rfc3339(c.issued),
        format_rfc3339(c.expires),
        c.name,
        versions.join(","),
        signers.join(",")
    );
    Ok(())
}

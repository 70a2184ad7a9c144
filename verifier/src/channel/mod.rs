//! The signed update channel: what a vendor offers a fleet (releases, where to fetch them,
//! the rollout waves), with freshness (sequence, issued, expires) so that nobody can
//! freeze a device on an old offer or roll the offer back.
//!
//! The file is an envelope (the manifest's format) with its own [`DOMAIN`]: magic
//! `STELECHN` and signing context `"stele-channel-v1\0"`, so that a manifest signature
//! never verifies as a channel and a channel signature never as a manifest. Channel keys
//! are a keyring of their own. `body.rs`: the TOML body; `policy.rs`: the device's
//! decision (pure); `follow.rs`: the channels an image follows; `state.rs`: what the device remembers between checks; `time.rs`:
//! RFC 3339 times.

mod body;
mod follow;
mod policy;
mod state;
mod time;

pub use follow::{parse_followed, MAX_FOLLOWED};
pub use policy::{decide, due_at, Decision, DeviceView, Offer};
pub use state::{ChannelRecord, ChannelState, STATE_FORMAT_VERSION};
pub use time::{format_rfc3339, parse_rfc3339};

use crate::keys::Keyring;
use crate::manifest::{Domain, Envelope};
use crate::verity::DIGEST_LEN;

/// Envelope magic of a channel file.
pub const CHANNEL_MAGIC: &[u8; 8] = b"STELECHN";
/// Domain separator of channel signatures.
pub const CHANNEL_CONTEXT: &[u8] = b"stele-channel-v1\0";
/// Channel body `format_version` written and understood.
pub const CHANNEL_FORMAT_VERSION: u64 = 1;
/// Device seeds are drawn from `0..SEED_RANGE`; a wave's `below` is at most this.
pub const SEED_RANGE: u64 = 1000;
/// Most releases in one channel.
pub const MAX_RELEASES: usize = 64;
/// Most waves of one release.
pub const MAX_WAVES: usize = 32;
/// Longest release URL.
pub const MAX_URL_LEN: usize = 2048;
/// Most published deltas listed for one release.
pub const MAX_DELTAS: usize = 16;

/// The channel file's envelope domain.
pub const DOMAIN: Domain = Domain {
    magic: CHANNEL_MAGIC,
    context: CHANNEL_CONTEXT,
    name: "channel",
    envelope: "channel envelope",
    body_len: "channel body_len",
    sig_count: "channel sig_count",
    signatures: "channel signatures",
};

/// One rollout wave: from `start + after` seconds on, devices whose seed is below
/// `below` take the release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wave {
    pub after: u64,
    pub below: u64,
}

/// One release offered by the channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    pub version: String,
    pub rollback_index: u64,
    /// Where the slot image is: an `http://` or `https://` URL, or a reference relative to
    /// the channel's own location.
    pub url: String,
    /// Bytes of the slot image file.
    pub length: u64,
    /// sha256 of the image's manifest envelope, byte for byte.
    pub manifest_sha256: [u8; DIGEST_LEN],
    /// When the rollout starts (seconds since the Unix epoch).
    pub start: u64,
    /// The waves, in order; none: every device from `start` on.
    pub waves: Vec<Wave>,
    /// The published deltas that lead to this release (docs/FORMATS.md "The published
    /// delta"), at most [`MAX_DELTAS`], each from another release.
    pub deltas: Vec<ReleaseDelta>,
}

/// A published delta listed for a release: from which release it starts, where it is,
/// and what the device checks before it trusts the delta's index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReleaseDelta {
    /// sha256 of the manifest envelope of the release it starts from (the digest whose
    /// first 16 hex digits name the file, and which its trailer holds).
    pub from_sha256: [u8; DIGEST_LEN],
    /// That release's version.
    pub from_version: String,
    /// Where the delta file is: as a release's `url`.
    pub url: String,
    /// Bytes of the delta file.
    pub length: u64,
    /// sha256 of the whole delta file.
    pub sha256: [u8; DIGEST_LEN],
    /// sha256 of its index and trailer (its last `96 + 32 × N` bytes): what a device,
    /// which reads only ranges, checks before it uses the index.
    pub index_sha256: [u8; DIGEST_LEN],
}

/// The channel body. See docs/FORMATS.md "Update channel".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Channel {
    /// The channel's name (`stable`, `beta`, ...).
    pub channel: String,
    /// The product: the manifest `name` of the images it offers.
    pub name: String,
    /// Increases with every new channel file.
    pub sequence: u64,
    pub issued: u64,
    pub expires: u64,
    /// In increasing `rollback_index` order; the last is the newest.
    pub releases: Vec<Release>,
}

/// A channel whose signatures met the channel keyring's threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedChannel {
    pub channel: Channel,
    /// sha256 of the whole channel file (what the device remembers with the sequence).
    pub sha256: [u8; DIGEST_LEN],
}

/// Why a channel file or its offer is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The envelope, its signatures or the body's shape.
    #[error("channel: {0}")]
    Verify(#[source] crate::Error),
    /// The body is malformed (after its signatures were checked).
    #[error("malformed channel body: {0}")]
    Body(String),
    /// Another product's channel.
    #[error("the channel is for product {found:?} but this device runs {expected:?}: use the channel of this product")]
    WrongProduct { found: String, expected: String },
    /// A channel this image does not follow (another channel's file at the followed URL).
    #[error("the channel file is channel {found:?} but this image follows {}: refused (moving a device to another channel means installing an image that follows it: docs/BOOT.md \"Moving a device to another channel\")", quoted(follows))]
    NotFollowed { found: String, follows: Vec<String> },
    /// An older channel file than one seen before (a replay, or a server frozen on old data).
    #[error("channel {channel:?} has sequence {found}, lower than {seen} seen before: a replayed or stale channel file is refused")]
    OldSequence {
        channel: String,
        found: u64,
        seen: u64,
    },
    /// The same sequence as before with other content: not one signed file.
    #[error("channel {channel:?} sequence {sequence} differs from the file seen before with that sequence: refused (sign every new channel with a higher --sequence)")]
    SequenceReused { channel: String, sequence: u64 },
    /// Past its expiry.
    #[error("the channel expired at {} (now {}): the server is serving an old channel file, or this device's clock is wrong", format_rfc3339(*expires), format_rfc3339(*now))]
    Expired { expires: u64, now: u64 },
    /// The newest release this device could take is not yet due for its seed.
    #[error("release {version} is not yet due for this device (seed {seed}): {}", due_text(*due))]
    WaveNotDue {
        version: String,
        seed: u64,
        /// When it becomes due; `None`: no wave includes this seed.
        due: Option<u64>,
    },
    /// The fetched image's envelope is not the one the channel names.
    #[error("release {version}: the image's manifest envelope has sha256 {found}, the channel says {expected}: refused (the image on the server is not the release the channel was signed for)")]
    ManifestMismatch {
        version: String,
        found: String,
        expected: String,
    },
    /// The fetched image's length or manifest fields differ from the channel's entry.
    #[error("release {version}: {why}")]
    ReleaseMismatch { version: String, why: String },
}

/// A channel or product name: 1..=64 of `A-Z a-z 0-9 . _ -` (the manifest's name rule).
pub(crate) fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= crate::manifest::MAX_NAME_LEN
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn due_text(due: Option<u64>) -> String {
    match due {
        Some(t) => format!("due at {}", format_rfc3339(t)),
        None => "no wave of this release includes this seed".into(),
    }
}

impl crate::exit::Report for ChannelError {
    /// A signature or envelope I/O keeps the verifier's class; every other refusal is one.
    fn exit(&self) -> crate::exit::Exit {
        match self {
            ChannelError::Verify(e) => e.exit(),
            _ => crate::exit::Exit::Refused,
        }
    }
}

/// Checks a channel file: envelope structure (magic `STELECHN`), signatures against the
/// channel `keyring` (threshold), and only then the body.
pub fn verify(file: &[u8], keyring: &Keyring) -> Result<VerifiedChannel, ChannelError> {
    use sha2::{Digest, Sha256};
    let env = Envelope::parse_in(file, &DOMAIN).map_err(ChannelError::Verify)?;
    env.verify_signatures_in(keyring, &DOMAIN)
        .map_err(ChannelError::Verify)?;
    let channel = Channel::parse_body(&env.body)?;
    Ok(VerifiedChannel {
        channel,
        sha256: Sha256::digest(file).into(),
    })
}

/// A signed channel file: the body of `channel` signed by each key.
pub fn sign(channel: &Channel, keys: &[crate::keys::SigningKey]) -> crate::Result<Vec<u8>> {
    channel
        .check()
        .map_err(|e| crate::Error::invalid("channel", e.to_string()))?;
    let mut env = Envelope::new(channel.to_toml().into_bytes());
    for k in keys {
        env.sign_in(k, &DOMAIN)?;
    }
    Ok(env.to_bytes_in(&DOMAIN))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testutil::key;

    pub(crate) fn sample() -> Channel {
        Channel {
            channel: "stable".into(),
            name: "demo".into(),
            sequence: 7,
            issued: 1_700_000_000,
            expires: 1_700_600_000,
            releases: vec![
                Release {
                    version: "1.0.0".into(),
                    rollback_index: 1,
                    url: "demo-1.0.0.img".into(),
                    length: 1 << 20,
                    manifest_sha256: [0x11; 32],
                    start: 1_690_000_000,
                    waves: vec![],
                    deltas: vec![],
                },
                Release {
                    version: "2.0.0".into(),
                    rollback_index: 2,
                    url: "https://cdn.example.com/demo-2.0.0.img".into(),
                    length: 2 << 20,
                    manifest_sha256: [0x22; 32],
                    start: 1_700_000_000,
                    waves: vec![
                        Wave {
                            after: 0,
                            below: 10,
                        },
                        Wave {
                            after: 3600,
                            below: 1000,
                        },
                    ],
                    deltas: vec![ReleaseDelta {
                        from_sha256: [0x11; 32],
                        from_version: "1.0.0".into(),
                        url: "demo-2.0.0.img.from-1111111111111111.delta".into(),
                        length: 5000,
                        sha256: [0x33; 32],
                        index_sha256: [0x44; 32],
                    }],
                },
            ],
        }
    }

    pub(crate) fn ring() -> Keyring {
        Keyring::new(vec![key(7).verifying_key()], 1).unwrap()
    }

    #[test]
    fn signed_channels_verify_and_nothing_else_does() {
        let file = sign(&sample(), &[key(7)]).unwrap();
        assert_eq!(&file[..8], b"STELECHN");
        let v = verify(&file, &ring()).unwrap();
        assert_eq!(v.channel, sample());
        // Another key: threshold not met.
        let other = sign(&sample(), &[key(8)]).unwrap();
        assert!(matches!(
            verify(&other, &ring()),
            Err(ChannelError::Verify(crate::Error::ThresholdNotMet { .. }))
        ));
        // A flipped body bit: bad signature, body never parsed.
        let mut bad = file.clone();
        let n = bad.len();
        bad[n - 3] ^= 1;
        assert!(matches!(
            verify(&bad, &ring()),
            Err(ChannelError::Verify(crate::Error::BadSignature {
                what: "channel",
                ..
            }))
        ));
    }

    /// A manifest signature never verifies as a channel, nor a channel's as a manifest,
    /// even with the same key and the same body bytes.
    #[test]
    fn domains_are_separate() {
        let body = sample().to_toml().into_bytes();
        let mut as_manifest = Envelope::new(body.clone());
        as_manifest.sign(&key(7)).unwrap();
        // Same signatures, channel magic: the signature is over the manifest context.
        let relabelled = as_manifest.to_bytes_in(&DOMAIN);
        assert!(matches!(
            verify(&relabelled, &ring()),
            Err(ChannelError::Verify(crate::Error::BadSignature { .. }))
        ));
        // A manifest file is not a channel file at all.
        assert!(matches!(
            verify(&as_manifest.to_bytes(), &ring()),
            Err(ChannelError::Verify(crate::Error::BadMagic { .. }))
        ));
        // A channel signature relabelled as a manifest envelope does not verify either.
        let mut as_channel = Envelope::new(body);
        as_channel.sign_in(&key(7), &DOMAIN).unwrap();
        let env = Envelope::parse(&as_channel.to_bytes()).unwrap();
        assert!(matches!(
            env.verify(&ring()),
            Err(crate::Error::BadSignature {
                what: "manifest",
                ..
            })
        ));
    }
}

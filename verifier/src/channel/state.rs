//! What a device remembers about channels between checks (`channel.toml` on its data
//! partition): its rollout seed, and per channel the last sequence, `issued` and file
//! digest it accepted. Pure format; the update crate reads and writes the file atomically.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{name_ok, SEED_RANGE};
use crate::hex;
use crate::verity::DIGEST_LEN;

/// `format_version` of the state file.
pub const STATE_FORMAT_VERSION: u64 = 1;

/// The last accepted file of one channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelRecord {
    pub sequence: u64,
    pub issued: u64,
    pub sha256: [u8; DIGEST_LEN],
}

/// The device's channel state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelState {
    /// In `0..SEED_RANGE`, drawn once at random: decides the device's wave.
    pub seed: u64,
    /// By channel name.
    pub channels: BTreeMap<String, ChannelRecord>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    format_version: u64,
    seed: u64,
    #[serde(default)]
    channel: BTreeMap<String, RawRecord>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecord {
    sequence: u64,
    issued: u64,
    sha256: String,
}

impl ChannelState {
    /// A new state with `seed` (taken modulo [`SEED_RANGE`]) and no channel seen yet.
    pub fn new(seed: u64) -> Self {
        ChannelState {
            seed: seed % SEED_RANGE,
            channels: BTreeMap::new(),
        }
    }

    /// The latest `issued` of any channel seen: a lower bound of the current time.
    pub fn latest_issued(&self) -> u64 {
        self.channels.values().map(|r| r.issued).max().unwrap_or(0)
    }

    /// Parses the state file; an error names what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: RawState = toml::from_str(text).map_err(|e| e.to_string().trim().to_string())?;
        if raw.format_version != STATE_FORMAT_VERSION {
            return Err(format!(
                "format_version {} is not {STATE_FORMAT_VERSION}",
                raw.format_version
            ));
        }
        if raw.seed >= SEED_RANGE {
            return Err(format!("seed {} is not below {SEED_RANGE}", raw.seed));
        }
        let mut channels = BTreeMap::new();
        for (name, r) in raw.channel {
            if !name_ok(&name) {
                return Err(format!("channel name {name:?} is not valid"));
            }
            let d = hex::decode(&r.sha256)
                .filter(|d| d.len() == DIGEST_LEN)
                .ok_or_else(|| format!("channel {name:?}: sha256 is not 64 hex digits"))?;
            let mut sha256 = [0u8; DIGEST_LEN];
            sha256.copy_from_slice(&d);
            channels.insert(
                name,
                ChannelRecord {
                    sequence: r.sequence,
                    issued: r.issued,
                    sha256,
                },
            );
        }
        Ok(ChannelState {
            seed: raw.seed,
            channels,
        })
    }

    /// Encodes the state (channels sorted by name).
    pub fn to_toml(&self) -> String {
        let mut out = format!(
            "format_version = {STATE_FORMAT_VERSION}\nseed = {}\n",
            self.seed
        );
        for (name, r) in &self.channels {
            out.push_str(&format!(
                "\n[channel.{name}]\nsequence = {}\nissued = {}\nsha256 = \"{}\"\n",
                r.sequence,
                r.issued,
                hex::encode(&r.sha256)
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_refuses_nonsense() {
        let mut s = ChannelState::new(1417);
        assert_eq!(s.seed, 417);
        assert_eq!(s.latest_issued(), 0);
        s.channels.insert(
            "stable".into(),
            ChannelRecord {
                sequence: 3,
                issued: 100,
                sha256: [0xab; 32],
            },
        );
        s.channels.insert(
            "beta".into(),
            ChannelRecord {
                sequence: 9,
                issued: 250,
                sha256: [0x01; 32],
            },
        );
        let text = s.to_toml();
        assert!(text.starts_with("format_version = 1\nseed = 417\n\n[channel.beta]\n"));
        assert_eq!(ChannelState::parse(&text).unwrap(), s);
        assert_eq!(s.latest_issued(), 250);
        for bad in [
            "format_version = 2\nseed = 1\n",
            "format_version = 1\nseed = 1000\n",
            "format_version = 1\n",
            "format_version = 1\nseed = 1\n[channel.a]\nsequence = 1\nissued = 1\nsha256 = \"ab\"\n",
            "format_version = 1\nseed = 1\nother = 2\n",
        ] {
            assert!(ChannelState::parse(bad).is_err(), "{bad}");
        }
    }
}

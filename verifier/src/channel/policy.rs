//! The device's decision about a verified channel, pure: is it this product's, fresh (not
//! older than what was seen, not expired against the best time the device knows), and
//! which release, if any, this device takes now (its wave, by its seed).

use super::*;

/// What the device knows about itself for the decision.
#[derive(Clone, Copy, Debug)]
pub struct DeviceView<'a> {
    /// The booted image's manifest `name` (the product).
    pub name: &'a str,
    pub version: &'a str,
    pub rollback_index: u64,
    /// The booted image's manifest `created`.
    pub created: u64,
    /// The system clock, when the device has one it believes (seconds since the epoch).
    pub clock: Option<u64>,
    /// The channel names the booted image follows (its `/etc/stele/channels`).
    pub follows: &'a [&'a str],
}

/// What the channel offers this device now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer<'c> {
    /// No release newer than the booted one.
    UpToDate,
    /// This release is newer and due for this device.
    Install(&'c Release),
}

/// The outcome of [`decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision<'c> {
    /// The time the checks used: the latest of the clock, the last `issued` seen and the
    /// booted image's `created`.
    pub now: u64,
    /// What the device remembers of this channel once it accepts it.
    pub record: ChannelRecord,
    pub offer: Offer<'c>,
}

/// When `release` becomes due for a device with `seed`: `start` plus the `after` of the
/// first wave whose `below` is above the seed (`start` without waves); `None` when no
/// wave includes the seed.
pub fn due_at(release: &Release, seed: u64) -> Option<u64> {
    if release.waves.is_empty() {
        return Some(release.start);
    }
    release
        .waves
        .iter()
        .find(|w| seed < w.below)
        .map(|w| release.start.saturating_add(w.after))
}

/// Checks a verified channel for this device, in this order: product name, channel name
/// (one the booted image follows), sequence
/// (not below the last seen; the same sequence only for the same file), expiry (against
/// the best time known); then the offer: the newest release above the booted
/// `rollback_index` whose wave is due. Nothing is written: the caller stores `record`.
pub fn decide<'c>(
    v: &'c VerifiedChannel,
    device: &DeviceView<'_>,
    state: &ChannelState,
) -> Result<Decision<'c>, ChannelError> {
    let c = &v.channel;
    if c.name != device.name {
        return Err(ChannelError::WrongProduct {
            found: c.name.clone(),
            expected: device.name.to_string(),
        });
    }
    if !device.follows.contains(&c.channel.as_str()) {
        return Err(ChannelError::NotFollowed {
            found: c.channel.clone(),
            follows: device.follows.iter().map(|s| s.to_string()).collect(),
        });
    }
    if let Some(seen) = state.channels.get(&c.channel) {
        if c.sequence < seen.sequence {
            return Err(ChannelError::OldSequence {
                channel: c.channel.clone(),
                found: c.sequence,
                seen: seen.sequence,
            });
        }
        if c.sequence == seen.sequence && v.sha256 != seen.sha256 {
            return Err(ChannelError::SequenceReused {
                channel: c.channel.clone(),
                sequence: c.sequence,
            });
        }
    }
    let now = device
        .clock
        .unwrap_or(0)
        .max(state.latest_issued())
        .max(device.created);
    if now >= c.expires {
        return Err(ChannelError::Expired {
            expires: c.expires,
            now,
        });
    }
    let record = ChannelRecord {
        sequence: c.sequence,
        issued: c.issued,
        sha256: v.sha256,
    };
    let newer: Vec<&Release> = c
        .releases
        .iter()
        .rev()
        .filter(|r| r.rollback_index > device.rollback_index)
        .collect();
    let Some(newest) = newer.first() else {
        return Ok(Decision {
            now,
            record,
            offer: Offer::UpToDate,
        });
    };
    match newer
        .iter()
        .find(|r| due_at(r, state.seed).is_some_and(|t| t <= now))
    {
        Some(r) => Ok(Decision {
            now,
            record,
            offer: Offer::Install(r),
        }),
        None => Err(ChannelError::WaveNotDue {
            version: newest.version.clone(),
            seed: state.seed,
            due: due_at(newest, state.seed),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::*;

    fn verified(c: Channel) -> VerifiedChannel {
        VerifiedChannel {
            channel: c,
            sha256: [0x5a; 32],
        }
    }

    fn device(clock: Option<u64>) -> DeviceView<'static> {
        DeviceView {
            name: "demo",
            version: "1.0.0",
            rollback_index: 1,
            created: 1_600_000_000,
            clock,
            follows: &["stable"],
        }
    }

    const START: u64 = 1_700_000_000;

    #[test]
    fn waves_decide_by_seed_and_time() {
        let v = verified(sample());
        let r2 = &v.channel.releases[1];
        assert_eq!(due_at(r2, 3), Some(START));
        assert_eq!(due_at(r2, 10), Some(START + 3600));
        assert_eq!(due_at(r2, 999), Some(START + 3600));
        // Seed 3 is in the first wave: due at the start.
        let d = decide(&v, &device(Some(START)), &ChannelState::new(3)).unwrap();
        assert_eq!(d.offer, Offer::Install(r2));
        assert_eq!(d.record.sequence, 7);
        // Seed 500 waits for the second wave, and takes nothing older meanwhile (1.0.0
        // is not newer than the booted 1.0.0).
        let e = decide(&v, &device(Some(START + 10)), &ChannelState::new(500)).unwrap_err();
        assert!(
            matches!(e, ChannelError::WaveNotDue { due: Some(t), seed: 500, .. } if t == START + 3600),
            "{e}"
        );
        let d = decide(&v, &device(Some(START + 3600)), &ChannelState::new(500)).unwrap();
        assert_eq!(d.offer, Offer::Install(r2));
        // A device two releases behind takes the older, fully rolled-out release first.
        let mut old = device(Some(START + 10));
        old.rollback_index = 0;
        let d = decide(&v, &old, &ChannelState::new(500)).unwrap();
        assert_eq!(d.offer, Offer::Install(&v.channel.releases[0]));
        // Nothing newer than the booted image.
        let mut new = device(Some(START));
        new.rollback_index = 2;
        let d = decide(&v, &new, &ChannelState::new(500)).unwrap();
        assert_eq!(d.offer, Offer::UpToDate);
        // A partial rollout: no wave for seed 999.
        let mut c = sample();
        c.releases[1].waves.pop();
        let v = verified(c);
        let e = decide(&v, &device(Some(START + 99_999)), &ChannelState::new(999)).unwrap_err();
        assert!(
            matches!(e, ChannelError::WaveNotDue { due: None, .. }),
            "{e}"
        );
    }

    #[test]
    fn freshness_and_product() {
        let v = verified(sample());
        let mut st = ChannelState::new(3);
        // Another product.
        let mut other = device(Some(START));
        other.name = "other";
        assert!(matches!(
            decide(&v, &other, &st),
            Err(ChannelError::WrongProduct { .. })
        ));
        // An older sequence than seen, or the same with another file.
        let seen = |sequence, sha256| ChannelRecord {
            sequence,
            issued: START,
            sha256,
        };
        st.channels.insert("stable".into(), seen(8, [0; 32]));
        assert!(matches!(
            decide(&v, &device(Some(START)), &st),
            Err(ChannelError::OldSequence {
                found: 7,
                seen: 8,
                ..
            })
        ));
        st.channels.insert("stable".into(), seen(7, [0; 32]));
        assert!(matches!(
            decide(&v, &device(Some(START)), &st),
            Err(ChannelError::SequenceReused { .. })
        ));
        st.channels.insert("stable".into(), seen(7, [0x5a; 32]));
        decide(&v, &device(Some(START)), &st).unwrap();
        // A sequence seen on another channel does not count for this one.
        let mut st = ChannelState::new(3);
        st.channels.insert("beta".into(), seen(100, [0; 32]));
        decide(&v, &device(Some(START)), &st).unwrap();
    }

    /// Regression (issue 18): freshness is kept per channel name, and nothing said which
    /// channel a device follows, so another channel's unexpired file (beta's, a retired
    /// channel's) at the followed URL re-offered a withdrawn release and moved the device.
    #[test]
    fn another_channels_file_is_refused() {
        let mut beta = sample();
        beta.channel = "beta".into();
        let v = verified(beta);
        let e = decide(&v, &device(Some(START)), &ChannelState::new(3)).unwrap_err();
        assert!(
            matches!(&e, ChannelError::NotFollowed { found, follows } if found == "beta" && follows == &["stable"]),
            "{e}"
        );
        assert!(
            e.to_string().contains("this image follows \"stable\""),
            "{e}"
        );
        let mut both = device(Some(START));
        both.follows = &["stable", "beta"];
        decide(&v, &both, &ChannelState::new(3)).unwrap();
    }

    /// What a device without a clock gets (docs/BOOT.md "Threat model"): the best time it
    /// knows never goes back (the booted image's `created`, the latest `issued` it
    /// accepted, both remembered or signed), so a file that expired before that is
    /// refused even with the clock at 1970; but the same last accepted file, replayed, is
    /// accepted until a newer time is known (a newer file, or a newer image).
    #[test]
    fn a_clockless_device_refuses_what_expired_before_the_newest_time_it_knows() {
        let v = verified(sample());
        let (issued, expires) = (v.channel.issued, v.channel.expires);
        let mut st = ChannelState::new(3);
        st.channels.insert(
            "stable".into(),
            ChannelRecord {
                sequence: 7,
                issued,
                sha256: v.sha256,
            },
        );
        // The replay of the last accepted file: accepted (the documented limit).
        let d = decide(&v, &device(None), &st).unwrap();
        assert_eq!(d.now, issued);
        // A clock set back (a dead RTC battery) does not move the best time back.
        assert_eq!(decide(&v, &device(Some(0)), &st).unwrap().now, issued);
        // Once the device runs an image built after the file expired: refused.
        let mut updated = device(None);
        updated.created = expires;
        assert!(matches!(
            decide(&v, &updated, &st),
            Err(ChannelError::Expired { now, .. }) if now == expires
        ));
        // Once it accepted a file issued after that expiry (on a followed channel): refused.
        st.channels.insert(
            "beta".into(),
            ChannelRecord {
                sequence: 1,
                issued: expires + 1,
                sha256: [0; 32],
            },
        );
        assert!(matches!(
            decide(&v, &device(None), &st),
            Err(ChannelError::Expired { .. })
        ));
    }

    /// Expiry against the best time known: the clock, or when the clock is unknown or
    /// behind, the last `issued` seen, or the booted image's creation.
    #[test]
    fn expiry_uses_the_best_time_known() {
        let v = verified(sample());
        let expires = v.channel.expires;
        let st = ChannelState::new(3);
        assert!(matches!(
            decide(&v, &device(Some(expires)), &st),
            Err(ChannelError::Expired { now, .. }) if now == expires
        ));
        // No clock (a device without RTC at 1970): the last issued seen.
        let mut seen = ChannelState::new(3);
        seen.channels.insert(
            "beta".into(),
            ChannelRecord {
                sequence: 1,
                issued: expires + 5,
                sha256: [0; 32],
            },
        );
        assert!(matches!(
            decide(&v, &device(None), &seen),
            Err(ChannelError::Expired { now, .. }) if now == expires + 5
        ));
        assert!(matches!(
            decide(&v, &device(Some(0)), &seen),
            Err(ChannelError::Expired { .. })
        ));
        // Nothing seen, no clock: the booted image's creation.
        let mut young = device(None);
        young.created = expires + 1;
        assert!(matches!(
            decide(&v, &young, &st),
            Err(ChannelError::Expired { .. })
        ));
        let e = decide(&v, &young, &st).unwrap_err().to_string();
        assert!(e.contains("expired at 2023-11-21T"), "{e}");
    }
}

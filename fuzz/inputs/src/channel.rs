//! Target `channel_verify`: bytes as a signed update channel file (structure, signatures
//! against the channel keyring, body), then the device's decision for a fixed device and
//! state: never a panic, and what is accepted re-encodes to the same body.

use stele_verifier::channel::{
    decide, sign, verify, Channel, ChannelError, ChannelState, DeviceView, Release, ReleaseDelta,
    Wave,
};

use crate::{key, ring, Seed};

pub const STAGES: &[&str] = &["structure", "signatures", "body", "decision"];

/// The device the decisions are made for.
const DEVICE: DeviceView<'static> = DeviceView {
    name: "demo",
    version: "1.0.0",
    rollback_index: 1,
    created: 1_700_000_000,
    clock: Some(1_700_000_100),
    follows: &["stable"],
};

pub fn run(data: &[u8]) {
    if let Ok(v) = verify(data, ring(1)) {
        let text = v.channel.to_toml();
        assert_eq!(
            Channel::parse_body(text.as_bytes()).ok().as_ref(),
            Some(&v.channel),
            "an accepted channel re-encodes to itself"
        );
        let _ = decide(&v, &DEVICE, &ChannelState::new(417));
    }
}

pub fn depth(data: &[u8]) -> usize {
    match verify(data, ring(1)) {
        Ok(v) => 3 + usize::from(decide(&v, &DEVICE, &ChannelState::new(417)).is_ok()),
        Err(ChannelError::Verify(stele_verifier::Error::BadSignature { .. }))
        | Err(ChannelError::Verify(stele_verifier::Error::ThresholdNotMet { .. })) => 1,
        Err(ChannelError::Verify(_)) => 0,
        Err(_) => 2,
    }
}

fn sample() -> Channel {
    Channel {
        channel: "stable".into(),
        name: "demo".into(),
        sequence: 3,
        issued: 1_700_000_000,
        expires: 1_800_000_000,
        releases: vec![Release {
            version: "2.0.0".into(),
            rollback_index: 2,
            url: "demo-2.img".into(),
            length: 1 << 20,
            manifest_sha256: [0x42; 32],
            start: 1_700_000_000,
            waves: vec![Wave {
                after: 0,
                below: 1000,
            }],
            // A published delta listed for the release (docs/FORMATS.md "Update channel").
            deltas: vec![ReleaseDelta {
                from_sha256: [0x41; 32],
                from_version: "1.0.0".into(),
                url: "demo-2.img.from-4141414141414141.delta".into(),
                length: 40_000,
                sha256: [0x43; 32],
                index_sha256: [0x44; 32],
            }],
        }],
    }
}

pub fn seeds() -> Vec<Seed> {
    let good = sign(&sample(), &[key(0).clone()]).unwrap_or_default();
    let untrusted = sign(&sample(), &[key(2).clone()]).unwrap_or_default();
    let mut other = sample();
    other.name = "toaster".into();
    let other = sign(&other, &[key(0).clone()]).unwrap_or_default();
    // A validly signed body that is not a channel.
    let mut env = stele_verifier::manifest::Envelope::new(b"format_version = 1\n".to_vec());
    let _ = env.sign_in(key(0), &stele_verifier::channel::DOMAIN);
    let bad_body = env.to_bytes_in(&stele_verifier::channel::DOMAIN);
    vec![
        Seed::new("good", good.clone()),
        Seed::new("truncated", good[..good.len() / 2].to_vec()),
        Seed::new("untrusted", untrusted),
        Seed::new("bad-body", bad_body),
        Seed::new("other-product", other),
    ]
}

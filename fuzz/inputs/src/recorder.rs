//! Target `recorder_ring`: bytes as the flight recorder's ring, 512 bytes per block in ring
//! order (at most `CAPACITY` blocks). What reads is sorted and re-encodes to itself; an
//! append planned on it lands in its own block and reads back as the newest event, with
//! every other event kept.

use stele_verifier::exit::Exit;
use stele_verifier::recorder::ring::{Ring, CAPACITY};
use stele_verifier::recorder::{decode, encode, Event, Kind, Origin, Release, EVENT_LEN};
use stele_verifier::state::Slot;

use crate::Seed;

pub const STAGES: &[&str] = &["one valid event", "two valid events"];

/// The input's blocks, padded with blank ones to the ring's capacity.
fn blocks(data: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = data
        .chunks(EVENT_LEN)
        .take(usize::try_from(CAPACITY).unwrap_or(128))
        .map(<[u8]>::to_vec)
        .collect();
    out.resize(
        usize::try_from(CAPACITY).unwrap_or(128),
        vec![0u8; EVENT_LEN],
    );
    out
}

pub fn run(data: &[u8]) {
    let mut blocks = blocks(data);
    let ring = Ring::from_blocks(blocks.iter().map(Vec::as_slice));
    assert!(ring
        .events
        .windows(2)
        .all(|w| w[0].sequence <= w[1].sequence));
    for e in &ring.events {
        assert_eq!(decode(&encode(e)).as_ref(), Ok(e));
    }
    let _ = ring.since(data.len() as u64);
    let new = Event {
        text: "appended".into(),
        ..Event::new(Origin::Update, Kind::InstallStarted)
    };
    let (at, block, sequence) = ring.plan(&new);
    let i = usize::try_from((sequence) % CAPACITY).unwrap_or(0);
    assert_eq!(
        at,
        stele_verifier::recorder::ring::RING_OFFSET + (sequence % CAPACITY) * 4096
    );
    let replaced = decode(&blocks[i]).ok();
    blocks[i] = block[..EVENT_LEN].to_vec();
    let after = Ring::from_blocks(blocks.iter().map(Vec::as_slice));
    let kept = ring.events.len() - usize::from(replaced.is_some());
    assert_eq!(after.events.len(), kept + 1);
    assert!(after.events.contains(&Event { sequence, ..new }));
    if ring.events.last().is_none_or(|e| e.sequence < u64::MAX) {
        assert_eq!(after.events.last().map(|e| e.sequence), Some(sequence));
    }
}

pub fn depth(data: &[u8]) -> usize {
    let ring = Ring::from_blocks(blocks(data).iter().map(Vec::as_slice));
    ring.events.len().min(2)
}

fn event(sequence: u64, kind: Kind) -> Vec<u8> {
    encode(&Event {
        sequence,
        boot_id: [3; 16],
        monotonic_ms: Some(900),
        wall_secs: Some(1_790_000_000),
        slot: Some(Slot::B),
        release: Some(Release {
            version: "2.0.0".into(),
            rollback_index: 2,
            digest: [0xab; 8],
        }),
        class: Some(Exit::Refused),
        count: 1,
        status: Some(1),
        text: "check failed".into(),
        ..Event::new(Origin::Pid1, kind)
    })
    .to_vec()
}

pub fn seeds() -> Vec<Seed> {
    let one = event(0, Kind::Verified);
    let two = [one.clone(), event(1, Kind::HealthFailed)].concat();
    let mut torn = two.clone();
    torn.extend_from_slice(&event(2, Kind::FellBack)[..200]);
    let wrapped = [event(200, Kind::MarkedGood), event(73, Kind::Refused)].concat();
    vec![
        Seed::new("blank", vec![0u8; EVENT_LEN * 2]),
        Seed::new("one", one),
        Seed::new("two", two),
        Seed::new("torn-third", torn),
        Seed::new("wrapped", wrapped),
        Seed::new("at-the-end", event(u64::MAX, Kind::Kexec)),
    ]
}

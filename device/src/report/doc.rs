//! The report document (docs/FORMATS.md "Report document"): one JSON object with the
//! device id, the report's number, the running release, both slots' states and the flight
//! recorder's events since the last report. Which events go in ([`select`]) and the
//! document itself ([`document`]) are pure.

use serde::Serialize;
use stele_verifier::channel::format_rfc3339;
use stele_verifier::hex;
use stele_verifier::recorder::ring::Ring;
use stele_verifier::recorder::Event;

use crate::commands::history::event_json;
use crate::commands::status::Status;

/// The document's `schema`.
pub const SCHEMA: &str = "stele-report";
/// The document's `version`: raised when a field changes meaning or goes away (added
/// fields do not raise it).
pub const VERSION: u32 = 1;

/// The events a report takes from `ring` for a backlog whose next unreported sequence is
/// `next_event`: `(since, events, missed)`. A ring whose sequences are all below
/// `next_event` was reset (a new state partition): every event it holds goes in, from 0.
/// `missed`: sequences from `since` that the ring no longer holds (overwritten before a
/// report took them). Pure.
pub fn select(ring: &Ring, next_event: u64) -> (u64, &[Event], u64) {
    let since = if next_event > ring.next_sequence() {
        0
    } else {
        next_event
    };
    let events = ring.since(since);
    let first = events.first().map_or(ring.next_sequence(), |e| e.sequence);
    (since, events, first.saturating_sub(since))
}

/// The running release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Running {
    pub name: String,
    pub version: String,
    pub rollback_index: u64,
    pub slot: &'static str,
}

/// What a report says.
#[derive(Debug)]
pub struct Input<'a> {
    /// The device id (32 hex digits).
    pub device: &'a str,
    /// The report's number on this device.
    pub seq: u64,
    /// When it was made (seconds since the epoch), where the clock is set.
    pub made: Option<u64>,
    pub boot_id: [u8; 16],
    pub running: Running,
    pub status: &'a Status,
    pub since: u64,
    pub events: &'a [Event],
    pub missed: u64,
    /// Damaged blocks of the ring (skipped).
    pub damaged: usize,
    /// Reports dropped unsent (the backlog's bound) before this one was made.
    pub dropped_reports: u64,
}

#[derive(Serialize)]
struct Doc<'a> {
    schema: &'static str,
    version: u32,
    device: &'a str,
    seq: u64,
    made: Option<String>,
    boot_id: String,
    running: &'a Running,
    status: serde_json::Value,
    events_since: u64,
    next_event: u64,
    events_missed: u64,
    damaged_events: usize,
    dropped_reports: u64,
    events: Vec<serde_json::Value>,
}

/// The first sequence the next report takes after `i`. Pure.
pub fn next_event(i: &Input<'_>) -> u64 {
    i.events.last().map_or(i.since, |e| e.sequence + 1)
}

/// The document, one line of JSON and a newline. Pure.
pub fn document(i: &Input<'_>) -> String {
    let d = Doc {
        schema: SCHEMA,
        version: VERSION,
        device: i.device,
        seq: i.seq,
        made: i.made.map(format_rfc3339),
        boot_id: hex::encode(&i.boot_id),
        running: &i.running,
        status: i.status.json_value(),
        events_since: i.since,
        next_event: next_event(i),
        events_missed: i.missed,
        damaged_events: i.damaged,
        dropped_reports: i.dropped_reports,
        events: i.events.iter().map(event_json).collect(),
    };
    // Strings, integers and JSON values: serializing cannot fail.
    let mut s = serde_json::to_string(&d).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::Image;
    use stele_verifier::recorder::{Kind, Origin};
    use stele_verifier::state::{BootState, Slot};

    fn ring(seqs: &[u64]) -> Ring {
        Ring {
            events: seqs
                .iter()
                .map(|&s| Event {
                    sequence: s,
                    ..Event::new(Origin::Pid1, Kind::MarkedGood)
                })
                .collect(),
            damaged: 0,
        }
    }

    #[test]
    fn events_since_the_last_report_and_what_the_ring_lost() {
        let r = ring(&[10, 11, 12, 13]);
        let (since, ev, missed) = select(&r, 12);
        assert_eq!((since, ev.len(), missed), (12, 2, 0));
        // Overwritten before a report took them: 5..10 are gone.
        let (since, ev, missed) = select(&r, 5);
        assert_eq!((since, ev.len(), missed), (5, 4, 5));
        // Nothing new.
        assert_eq!(select(&r, 14).1.len(), 0);
        assert_eq!(select(&r, 14).2, 0);
        // A reset ring (a new state partition): all of it, from 0.
        let reset = ring(&[0, 1]);
        let (since, ev, missed) = select(&reset, 40);
        assert_eq!((since, ev.len(), missed), (0, 2, 0));
        assert_eq!(select(&Ring::default(), 0), (0, &[][..], 0));
    }

    /// The largest report there can be: the whole ring, every event with every field set
    /// and its version and text at their limits in characters JSON escapes (6 bytes each).
    /// The backlog's bound holds at least two.
    #[test]
    fn the_largest_report_fits_twice_in_the_backlog() {
        use stele_verifier::exit::Exit;
        use stele_verifier::recorder::ring::CAPACITY;
        use stele_verifier::recorder::{Release, TEXT_MAX, VERSION_MAX};
        let st = BootState::initial(true);
        let status = Status::new(
            &st,
            Some(Slot::A),
            [Image::Invalid("x".repeat(300)), Image::Empty],
        );
        let events: Vec<Event> = (0..CAPACITY)
            .map(|s| Event {
                sequence: u64::MAX - s,
                boot_id: [0xff; 16],
                monotonic_ms: Some(u64::MAX),
                wall_secs: Some(4_000_000_000),
                origin: Origin::Other(200),
                kind: Kind::InstallRefused,
                slot: Some(Slot::B),
                release: Some(Release {
                    version: "\u{1}".repeat(VERSION_MAX),
                    rollback_index: u64::MAX,
                    digest: [0xff; 8],
                }),
                class: Some(Exit::Environment),
                count: 255,
                status: Some(i32::MIN),
                text: "\u{1}".repeat(TEXT_MAX),
            })
            .collect();
        let i = Input {
            device: "0123456789abcdef0123456789abcdef",
            seq: u64::MAX,
            made: Some(4_000_000_000),
            boot_id: [0xff; 16],
            running: Running {
                name: "\u{1}".repeat(64),
                version: "\u{1}".repeat(64),
                rollback_index: u64::MAX,
                slot: "b",
            },
            status: &status,
            since: 0,
            events: &events,
            missed: u64::MAX,
            damaged: usize::MAX,
            dropped_reports: u64::MAX,
        };
        let len = document(&i).len() as u64;
        assert!(len * 2 <= crate::report::backlog::MAX_BYTES, "{len} bytes");
        println!("largest report: {len} bytes");
    }

    #[test]
    fn the_document_has_its_schema_device_slots_and_events() {
        let st = BootState::initial(true);
        let image = |v: &str| Image::Valid {
            name: "test".into(),
            version: v.into(),
            rollback_index: 1,
        };
        let status = Status::new(&st, Some(Slot::A), [image("1.0.0"), Image::Empty]);
        let r = ring(&[3, 4]);
        let i = Input {
            device: "0123456789abcdef0123456789abcdef",
            seq: 9,
            made: Some(1_796_000_000),
            boot_id: [0xab; 16],
            running: Running {
                name: "test".into(),
                version: "1.0.0".into(),
                rollback_index: 1,
                slot: "a",
            },
            status: &status,
            since: 3,
            events: &r.events,
            missed: 0,
            damaged: 1,
            dropped_reports: 2,
        };
        let text = document(&i);
        assert!(text.ends_with("}\n") && text.lines().count() == 1, "{text}");
        let j: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(j["schema"], SCHEMA);
        assert_eq!(j["version"], VERSION);
        assert_eq!(j["device"], i.device);
        assert_eq!(j["seq"], 9);
        assert_eq!(j["made"], "2026-11-30T00:53:20Z");
        assert_eq!(j["running"]["version"], "1.0.0");
        assert_eq!(j["status"]["slots"]["a"]["version"], "1.0.0");
        assert_eq!(j["status"]["booted"], "a");
        assert_eq!(j["events_since"], 3);
        assert_eq!(j["next_event"], 5);
        assert_eq!(j["dropped_reports"], 2);
        assert_eq!(j["damaged_events"], 1);
        assert_eq!(j["events"][1]["sequence"], 4);
        assert_eq!(j["events"][1]["kind"], "marked-good");
    }
}

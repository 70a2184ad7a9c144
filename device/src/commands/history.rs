//! `stele update history` (the flight recorder's events, one line each, or JSON) and what
//! the update commands record in it ([`note`], [`outcome`]). The explanation of the last
//! fallback or refusal is [`super::why`]. Listing is pure over the events read.

use serde::Serialize;
use stele_verifier::channel::format_rfc3339;
use stele_verifier::exit::{print_warning, Report};
use stele_verifier::hex;
use stele_verifier::recorder::ring::Ring;
use stele_verifier::recorder::{Event, Kind, Origin};
use stele_verifier::state::Slot;

use crate::commands::install::Installed;
use crate::runtime::flight;
use crate::target::Target;
use crate::Result;

/// What `history` and `why` read: the events, or none when the state partition has no
/// ring (an old 1 MiB one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History {
    pub ring: Option<Ring>,
}

/// The line `history` prints for a state partition without a ring.
pub const NO_RING: &str = "this disk's state partition has no flight recorder (1 MiB, made by an older `stele disk create`): nothing is recorded";

/// Reads the flight recorder of an opened target.
pub fn run(t: &mut Target) -> Result<History> {
    Ok(History {
        ring: t.state.events()?,
    })
}

/// An event's wall time as RFC 3339, or the time since its boot began. Pure.
pub fn when(e: &Event) -> String {
    match (e.wall_secs, e.monotonic_ms) {
        (Some(w), _) => format_rfc3339(w),
        (None, Some(ms)) => format!("{}.{:03}s after boot", ms / 1000, ms % 1000),
        (None, None) => "an unknown time".into(),
    }
}

/// `slot b (2.0.0)`, or `slot b` when the event names no release. Pure.
pub fn slot_words(slot: Slot, version: Option<&str>) -> String {
    match version {
        Some(v) => format!("slot {} ({v})", slot.name()),
        None => format!("slot {}", slot.name()),
    }
}

/// How the previous boot ended, in words, for the events that say so (the watchdog's boot
/// status, a pstore dump: docs/BOOT.md "Why the last boot ended"), with the dump's first
/// line; `None` for other kinds. Pure.
pub fn ended(e: &Event) -> Option<String> {
    let first = stele_verifier::exit::error_line(e.text.lines().next().unwrap_or("").trim());
    let with = |what: &str| {
        if first.is_empty() {
            what.to_owned()
        } else {
            format!("{what} ({first})")
        }
    };
    Some(match e.kind {
        Kind::WatchdogReset => "a watchdog reset".to_owned(),
        Kind::Panic => with("a kernel panic"),
        Kind::Oops => with("a kernel oops"),
        Kind::VerityRestart => "a dm-verity corruption restart".to_owned(),
        _ => return None,
    })
}

/// One event in plain words, after its sequence, time and origin. Pure.
pub fn line(e: &Event) -> String {
    let mut s = format!(
        "#{} {} {}: {}",
        e.sequence,
        when(e),
        e.origin.name(),
        e.kind.name()
    );
    if let Some(slot) = e.slot {
        s.push_str(&format!(
            " {}",
            slot_words(slot, e.release.as_ref().map(|r| r.version.as_str()))
        ));
    }
    if let Some(r) = &e.release {
        s.push_str(&format!(
            " rollback_index={} root={}",
            r.rollback_index,
            hex::encode(&r.digest)
        ));
    }
    if e.count > 0 {
        s.push_str(&format!(" count={}", e.count));
    }
    if let Some(st) = e.status {
        s.push_str(&format!(" status={st}"));
    }
    if let Some(c) = e.class {
        s.push_str(&format!(" class={}", c.name()));
    }
    if let Some(words) = ended(e) {
        // An oops need not have ended the boot.
        let verb = if e.kind == Kind::Oops {
            "had"
        } else {
            "ended in"
        };
        s.push_str(&format!(": the previous boot {verb} {words}"));
    } else if !e.text.is_empty() {
        let text = stele_verifier::exit::error_line(e.text.trim_end());
        s.push_str(&format!(": {text}"));
    }
    s
}

#[derive(Serialize)]
struct JsonEvent<'a> {
    sequence: u64,
    boot_id: String,
    monotonic_ms: Option<u64>,
    wall_time: Option<String>,
    origin: &'a str,
    kind: &'a str,
    kind_code: u8,
    slot: Option<&'a str>,
    version: Option<&'a str>,
    rollback_index: Option<u64>,
    root_hash_prefix: Option<String>,
    class: Option<&'a str>,
    count: u8,
    status: Option<i32>,
    text: &'a str,
}

impl<'a> JsonEvent<'a> {
    fn of(e: &'a Event) -> Self {
        JsonEvent {
            sequence: e.sequence,
            boot_id: hex::encode(&e.boot_id),
            monotonic_ms: e.monotonic_ms,
            wall_time: e.wall_secs.map(format_rfc3339),
            origin: e.origin.name(),
            kind: e.kind.name(),
            kind_code: e.kind.code(),
            slot: e.slot.map(Slot::name),
            version: e.release.as_ref().map(|r| r.version.as_str()),
            rollback_index: e.release.as_ref().map(|r| r.rollback_index),
            root_hash_prefix: e.release.as_ref().map(|r| hex::encode(&r.digest)),
            class: e.class.map(|c| c.name()),
            count: e.count,
            status: e.status,
            text: &e.text,
        }
    }
}

/// One event as `history --json` shows it (also in a report's `events`). Pure.
pub fn event_json(e: &Event) -> serde_json::Value {
    // Plain strings, integers and options: serializing cannot fail.
    serde_json::to_value(JsonEvent::of(e)).unwrap_or_default()
}

#[derive(Serialize)]
struct Json<'a> {
    recorder: bool,
    damaged: usize,
    events: Vec<JsonEvent<'a>>,
}

impl History {
    /// One line per event, oldest first; damaged blocks counted at the end. Pure.
    pub fn text(&self) -> String {
        let Some(ring) = &self.ring else {
            return format!("{NO_RING}\n");
        };
        let mut out = String::new();
        for e in &ring.events {
            out.push_str(&line(e));
            out.push('\n');
        }
        if ring.events.is_empty() {
            out.push_str("no events recorded yet\n");
        }
        if ring.damaged > 0 {
            out.push_str(&format!(
                "{} damaged event(s) skipped (torn by a power cut or corrupt)\n",
                ring.damaged
            ));
        }
        out
    }

    /// One JSON object: `recorder` (false without a ring), `damaged`, `events`. Pure.
    pub fn json(&self) -> String {
        let events = self.ring.as_ref().map_or(&[][..], |r| &r.events[..]);
        let j = Json {
            recorder: self.ring.is_some(),
            damaged: self.ring.as_ref().map_or(0, |r| r.damaged),
            events: events.iter().map(JsonEvent::of).collect(),
        };
        // Plain strings, integers and options: serializing cannot fail.
        let mut s = serde_json::to_string(&j).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// Records `e` on the device; a failure is one warning line, the command goes on: the
/// recorder never stops an update. On a disk image (`--disk`) nothing is recorded: the
/// recorder is the device's own history, and a refused offline install leaves the state
/// partition byte for byte as it was.
pub fn note(t: &mut Target, e: Event) {
    if !t.on_device() {
        return;
    }
    if let Err(err) = t.state.record(&e) {
        print_warning(&format!("not recorded in the flight recorder: {err}"));
    }
}

/// An event of `kind` by an update command, stamped now.
pub fn event(kind: Kind) -> Event {
    flight::event(Origin::Update, kind)
}

/// Records an install's start (`what`: the bundle or URL).
pub fn started(t: &mut Target, what: &str) {
    let mut e = event(Kind::InstallStarted);
    e.text = what.to_string();
    note(t, e);
}

/// Records how an install ended (finished, with the release and slot; or refused, with
/// the cause its error line names and its exit class) and passes the result on. A result
/// that `installed` finds no install in (a channel already up to date) records nothing.
pub fn outcome<T>(
    t: &mut Target,
    r: Result<T>,
    installed: impl Fn(&T) -> Option<&Installed>,
) -> Result<T> {
    let e = match &r {
        Ok(done) => {
            let Some(i) = installed(done) else {
                return r;
            };
            let mut e = event(Kind::InstallFinished);
            e.slot = Some(i.slot);
            e.release = Some(i.release.clone());
            e.count = i.state.slot(i.slot).tries_remaining;
            e
        }
        Err(err) => {
            let mut e = event(Kind::InstallRefused);
            e.class = Some(err.exit());
            e.text = err.to_string();
            e
        }
    };
    note(t, e);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use stele_verifier::exit::Exit;
    use stele_verifier::recorder::Release;

    fn ev(seq: u64, kind: Kind) -> Event {
        Event {
            sequence: seq,
            wall_secs: Some(1_796_000_000),
            ..Event::new(Origin::Stage1, kind)
        }
    }

    #[test]
    fn one_line_per_event_in_plain_words() {
        let mut e = ev(4, Kind::HealthFailed);
        e.origin = Origin::Pid1;
        e.slot = Some(Slot::B);
        e.release = Some(Release {
            version: "2.0.0".into(),
            rollback_index: 2,
            digest: [0xab; 8],
        });
        e.status = Some(1);
        e.text = "/usr/bin/check\ndisk full\n\u{1b}[31m".into();
        assert_eq!(
            line(&e),
            "#4 2026-11-30T00:53:20Z pid1: health-failed slot b (2.0.0) rollback_index=2 root=abababababababab status=1: /usr/bin/check disk full \\u{1b}[31m"
        );
        let mut r = ev(5, Kind::InstallRefused);
        r.wall_secs = None;
        r.monotonic_ms = Some(61_005);
        r.class = Some(Exit::Refused);
        r.text = "rollback".into();
        assert_eq!(
            line(&r),
            "#5 61.005s after boot stage1: install-refused class=refused: rollback"
        );
        let mut p = ev(6, Kind::Panic);
        p.count = 1;
        p.text =
            "Kernel panic - not syncing: sysrq triggered crash\nCall Trace:\n---[ end ]---".into();
        assert_eq!(
            line(&p),
            "#6 2026-11-30T00:53:20Z stage1: panic count=1: the previous boot ended in a kernel panic (Kernel panic - not syncing: sysrq triggered crash)"
        );
        let mut o = ev(8, Kind::Oops);
        o.text = "BUG: kernel NULL pointer dereference\nRIP: x".into();
        assert!(
            line(&o).ends_with(
                "oops: the previous boot had a kernel oops (BUG: kernel NULL pointer dereference)"
            ),
            "{}",
            line(&o)
        );
        assert_eq!(
            line(&ev(7, Kind::WatchdogReset)),
            "#7 2026-11-30T00:53:20Z stage1: watchdog-reset: the previous boot ended in a watchdog reset"
        );
        let h = History {
            ring: Some(Ring {
                events: vec![e, r],
                damaged: 1,
            }),
        };
        let t = h.text();
        assert_eq!(t.lines().count(), 3, "{t}");
        assert!(t.ends_with("1 damaged event(s) skipped (torn by a power cut or corrupt)\n"));
        let j: serde_json::Value = serde_json::from_str(&h.json()).unwrap();
        assert_eq!(j["recorder"], true);
        assert_eq!(j["events"][0]["kind"], "health-failed");
        assert_eq!(j["events"][0]["version"], "2.0.0");
        assert_eq!(j["events"][1]["class"], "refused");
        assert_eq!(History { ring: None }.text(), format!("{NO_RING}\n"));
        let none: serde_json::Value = serde_json::from_str(&History { ring: None }.json()).unwrap();
        assert_eq!(none["recorder"], false);
    }
}

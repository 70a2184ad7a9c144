//! `stele update report [--send] [--json]` (on the device only): show the report backlog,
//! or make a report of what the flight recorder holds since the last one and send the
//! backlog (docs/CLI.md). PID 1 runs `stele update report --send` after marking a slot
//! good; an install or `mark-good` on the device does the same after it ([`after`]).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use stele_verifier::config::ReportConfig;
use stele_verifier::exit::print_warning;
use stele_verifier::manifest::Manifest;
use stele_verifier::recorder::ring::Ring;

use crate::commands::status;
use crate::report::backlog::{self, Backlog, Cursor};
use crate::report::doc::{self, Input, Running};
use crate::report::send::{self, FetchClient, Round};
use crate::report::{self as rep, ReportingError};
use crate::runtime::flight;
use crate::runtime::run_dir::MANIFEST;
use crate::target::Target;
use crate::{Error, Result};

/// A report made and kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Made {
    pub seq: u64,
    pub events: usize,
    pub bytes: usize,
    /// Older reports dropped to make room (the bound).
    pub dropped: u64,
}

/// What `report` found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Shown {
    /// The device id (none before the first report).
    pub device: Option<String>,
    /// The method and the URL template, without its query.
    pub method: Option<&'static str>,
    pub url: Option<String>,
    pub made: Option<Made>,
    /// Reports sent (their numbers).
    pub sent: Vec<u64>,
    /// The fetch client's line for each report sent.
    #[serde(skip)]
    pub sent_lines: Vec<String>,
    /// Why sending stopped with reports kept.
    pub failure: Option<String>,
    pub next_report: u64,
    pub next_event: u64,
    pub dropped: u64,
    /// Kept reports: (seq, bytes).
    pub kept: Vec<(u64, u64)>,
    pub max_reports: usize,
    pub max_bytes: u64,
}

/// Makes a report of the events since the last one, with both slots' states, and keeps it;
/// `None` when there is nothing new (no new event, no drop to tell).
pub fn make(t: &mut Target, b: &Backlog, device: &str) -> Result<Option<Made>> {
    let dev = t.run_dir().ok_or(Error::DeviceOnly { command: "report" })?;
    let (run_dir, booted) = (dev.dir.clone(), dev.booted);
    let cursor = b.cursor()?;
    let ring = t.state.events()?;
    let has_ring = ring.is_some();
    let ring = ring.unwrap_or_else(Ring::default);
    let (since, events, missed) = doc::select(&ring, cursor.next_event);
    if has_ring && events.is_empty() && cursor.dropped == 0 && missed == 0 {
        return Ok(None);
    }
    let mpath = run_dir.join(MANIFEST);
    let body = std::fs::read(&mpath).map_err(|source| Error::NotPublished {
        path: mpath.clone(),
        source,
    })?;
    let m = Manifest::parse_body(&body).map_err(|source| Error::PublishedManifest {
        path: mpath,
        source,
    })?;
    let running = Running {
        name: m.name,
        version: m.version,
        rollback_index: m.rollback_index,
        slot: booted.name(),
    };
    let st = status::run(t)?;
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let input = Input {
        device,
        seq: cursor.next_report,
        made: flight::wall_if_set(wall),
        boot_id: flight::parse_boot_id(
            &std::fs::read_to_string(flight::BOOT_ID).unwrap_or_default(),
        ),
        running,
        status: &st,
        since,
        events,
        missed,
        damaged: ring.damaged,
        dropped_reports: cursor.dropped,
    };
    let text = doc::document(&input);
    let dropped = b.keep(&cursor, text.as_bytes(), doc::next_event(&input))?;
    Ok(Some(Made {
        seq: cursor.next_report,
        events: events.len(),
        bytes: text.len(),
        dropped,
    }))
}

/// `report` on an opened target: with `send`, make a report and send the backlog.
/// Returns what to show and, when reports stay unsent, the error to exit with.
pub fn run(t: &mut Target, send_now: bool) -> Result<(Shown, Option<Error>)> {
    let dev = t.run_dir().ok_or(Error::DeviceOnly { command: "report" })?;
    let mount = rep::data_mount(dev)?;
    let (cfg, program) = rep::from_image(dev)?;
    // Checked after the report is made: it is kept even when it cannot be sent.
    let program = rep::fetch_client(dev, program);
    let b = Backlog::open(&mount)?;
    let mut shown = Shown {
        method: cfg.as_ref().map(|c| c.method.name()),
        url: cfg
            .as_ref()
            .map(|c| ReportConfig::shown(&c.url).to_string()),
        max_reports: backlog::MAX_FILES,
        max_bytes: backlog::MAX_BYTES,
        ..Shown::default()
    };
    let mut unsent = None;
    if send_now {
        let cfg = cfg.ok_or(ReportingError::NoUrl)?;
        let device = rep::device_id(&mount, true)?.unwrap_or_default();
        shown.made = make(t, &b, &device)?;
        let mut client = FetchClient {
            program: program?,
            method: cfg.method.name(),
        };
        let round = send::round(&b, &cfg, &device, &mut client, &mut std::thread::sleep)?;
        shown.device = Some(device);
        note_round(&mut shown, round);
    } else {
        shown.device = rep::device_id(&mount, false)?;
    }
    let c: Cursor = b.cursor()?;
    shown.next_report = c.next_report;
    shown.next_event = c.next_event;
    shown.dropped = c.dropped;
    shown.kept = b.kept()?;
    if let Some(why) = &shown.failure {
        unsent = Some(Error::from(ReportingError::NotSent {
            kept: shown.kept.len(),
            why: why.clone(),
        }));
    }
    Ok((shown, unsent))
}

fn note_round(shown: &mut Shown, round: Round) {
    for (seq, line) in round.sent {
        shown.sent.push(seq);
        shown.sent_lines.push(line);
    }
    shown.failure = round.failure;
}

/// After an install or `mark-good` on the device: a report and a round of sending, when
/// the booted image names a report URL and the device has a data partition. Never fails
/// the command: a problem is one warning line (the report waits in the backlog).
pub fn after(t: &mut Target) {
    let Some(dev) = t.run_dir() else {
        return;
    };
    let configured =
        rep::data_mount(dev).is_ok() && matches!(rep::from_image(dev), Ok((Some(_), _)));
    if !configured {
        return;
    }
    match run(t, true) {
        Ok((shown, unsent)) => {
            print!("{}", shown.text());
            if let Some(e) = unsent {
                print_warning(&e.to_string());
            }
        }
        Err(e) => print_warning(&format!("no report sent: {e}")),
    }
}

impl Shown {
    /// What happened, then where the backlog stands. Pure.
    pub fn text(&self) -> String {
        let mut out = String::new();
        if let Some(m) = &self.made {
            out.push_str(&format!(
                "stele: report {} made: {} event(s), {} bytes\n",
                m.seq, m.events, m.bytes
            ));
            if m.dropped > 0 {
                out.push_str(&format!(
                    "stele: the backlog was full: {} oldest report(s) dropped unsent (the next report counts them)\n",
                    m.dropped
                ));
            }
        }
        for (seq, line) in self.sent.iter().zip(&self.sent_lines) {
            out.push_str(&format!("stele: report {seq} sent: {line}\n"));
        }
        let id = self
            .device
            .as_deref()
            .unwrap_or("none yet (made with the first report)");
        out.push_str(&format!("device id: {id}\n"));
        match (&self.method, &self.url) {
            (Some(m), Some(u)) => out.push_str(&format!("report URL: {} {u}\n", m.to_uppercase())),
            _ => out.push_str(
                "report URL: none (the booted image has no [report] in /etc/stele/system.toml)\n",
            ),
        }
        out.push_str(&format!(
            "next report: {}, with the events from #{}; {} dropped unsent since the last one\n",
            self.next_report, self.next_event, self.dropped
        ));
        let bytes: u64 = self.kept.iter().map(|(_, n)| n).sum();
        out.push_str(&format!(
            "kept: {} report(s), {bytes} bytes (at most {} reports, {} bytes; the oldest are dropped first)\n",
            self.kept.len(),
            self.max_reports,
            self.max_bytes
        ));
        for (seq, n) in &self.kept {
            out.push_str(&format!("  report {seq}: {n} bytes\n"));
        }
        out
    }

    /// One JSON object (docs/CLI.md). Pure.
    pub fn json(&self) -> String {
        // Strings, integers and options: serializing cannot fail.
        let mut s = serde_json::to_string(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// How long PID 1 waits before it runs `report --send` again when reports stayed unsent.
pub const RETRY_AFTER: Duration = Duration::from_secs(600);

/// Whether a data mount has a backlog with reports kept (PID 1 asks before it retries).
pub fn has_backlog(data_mount: &Path) -> bool {
    std::fs::read_dir(data_mount.join(backlog::DIR)).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.file_name().to_str().and_then(backlog::seq_of).is_some())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backlog_is_shown_in_words_and_json() {
        let s = Shown {
            device: Some("00ff".into()),
            method: Some("put"),
            url: Some("https://s3.example/r/{device}/{seq}.json".into()),
            made: Some(Made {
                seq: 4,
                events: 3,
                bytes: 900,
                dropped: 1,
            }),
            sent: vec![3],
            sent_lines: vec![
                "PUT https://s3.example/r/00ff/3.json: HTTP 200, 800 bytes sent".into(),
            ],
            failure: Some("HTTP 503 Service Unavailable".into()),
            next_report: 5,
            next_event: 12,
            dropped: 1,
            kept: vec![(4, 900)],
            max_reports: backlog::MAX_FILES,
            max_bytes: backlog::MAX_BYTES,
        };
        let t = s.text();
        assert!(
            t.starts_with("stele: report 4 made: 3 event(s), 900 bytes\n"),
            "{t}"
        );
        assert!(t.contains("1 oldest report(s) dropped unsent"), "{t}");
        assert!(
            t.contains("stele: report 3 sent: PUT https://s3.example/r/00ff/3.json: HTTP 200"),
            "{t}"
        );
        assert!(
            t.contains("report URL: PUT https://s3.example/r/{device}/{seq}.json\n"),
            "{t}"
        );
        assert!(t.contains("kept: 1 report(s), 900 bytes"), "{t}");
        let j: serde_json::Value = serde_json::from_str(&s.json()).unwrap();
        assert_eq!(j["made"]["seq"], 4);
        assert_eq!(j["sent"][0], 3);
        assert_eq!(j["kept"][0][1], 900);
        assert_eq!(j["failure"], "HTTP 503 Service Unavailable");
        let none = Shown::default().text();
        assert!(none.contains("device id: none yet"), "{none}");
        assert!(none.contains("report URL: none"), "{none}");
    }
}

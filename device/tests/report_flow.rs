//! Reports on the host: a device published as the boot does (its state partition with a
//! flight recorder, a data partition at `<tmp>/var`) makes reports of the events since the
//! last one; past the backlog's bound the oldest are dropped and the next report counts
//! them; without a fetch client a report is still kept; without a data partition or a
//! `[report]` there is one error line.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use stele_device::commands::report;
use stele_device::report::backlog::{self, Backlog};
use stele_device::runtime::state_file::StateFile;
use stele_device::target::Target;
use stele_verifier::exit::{Exit, Report};
use stele_verifier::recorder::{Event, Kind, Origin};
use stele_verifier::state::{self, BootState};
use stele_verifier::testutil::image_signed_by;

mod common;

const SYSTEM: &str = "[[service]]\nname = \"app\"\nexec = [\"/bin/app\"]\n\n[report]\nurl = \"http://127.0.0.1:9/r/{device}/{seq}.json\"\nmethod = \"put\"\n";

struct Device {
    base: tempfile::TempDir,
    run: PathBuf,
}

impl Device {
    fn var(&self) -> PathBuf {
        self.base.path().join("var")
    }

    /// Appends `n` events to the flight recorder, as the boot and the commands do.
    fn record(&self, n: usize) {
        let path = self.base.path().join("state").display().to_string();
        let mut f = StateFile::open(&path, true).unwrap();
        for _ in 0..n {
            f.record(&Event::new(Origin::Pid1, Kind::MarkedGood))
                .unwrap();
        }
    }

    fn make(&self) -> Option<report::Made> {
        let mut t = Target::device(&self.run, false).unwrap();
        let b = Backlog::open(&self.var()).unwrap();
        report::make(&mut t, &b, "00112233445566778899aabbccddeeff").unwrap()
    }

    fn doc(&self, seq: u64) -> serde_json::Value {
        let p = self.var().join(backlog::DIR).join(backlog::file_name(seq));
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    }
}

/// Slot a holds v1; the state partition has the spread layout (with a recorder); a data
/// partition at `<tmp>/var` when `data`; the image names a collector.
fn device(data: bool) -> Device {
    let base = tempfile::tempdir().unwrap();
    let part = |n: &str| base.path().join(n);
    std::fs::write(part("data"), b"").unwrap();
    let boot_toml = format!(
        "threshold = 1\ndata_mount = \"{}\"\n",
        part("var").display()
    );
    let data = data.then(|| part("data").display().to_string());
    let a = image_signed_by(8, 1, 1, 1).0;
    let run = common::publish_device(base.path(), &a, &boot_toml, data);
    let mut st = Cursor::new(vec![0u8; usize::try_from(state::PARTITION_SIZE).unwrap()]);
    state::initialize(&mut st, &BootState::initial(false)).unwrap();
    std::fs::write(part("state"), st.into_inner()).unwrap();
    let etc = run.join("lower/etc/stele");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("system.toml"), SYSTEM).unwrap();
    Device { base, run }
}

fn kept(var: &Path) -> Vec<u64> {
    Backlog::open(var)
        .unwrap()
        .kept()
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect()
}

#[test]
fn reports_take_the_events_since_the_last_and_count_what_the_bound_dropped() {
    let d = device(true);
    d.record(2);
    let m = d.make().expect("a report of 2 events");
    assert_eq!((m.seq, m.events, m.dropped), (0, 2, 0));
    assert_eq!(d.make(), None, "nothing new: no report");
    let first = d.doc(0);
    assert_eq!(first["events_since"], 0);
    assert_eq!(first["next_event"], 2);
    assert_eq!(first["running"]["slot"], "a");
    assert_eq!(first["status"]["slots"]["a"]["valid"], true);

    // The collector is down: reports pile up past the bound.
    let total = backlog::MAX_FILES as u64 + 3;
    for seq in 1..total {
        d.record(1);
        let m = d.make().expect("a report");
        assert_eq!(m.seq, seq);
        assert_eq!(
            m.dropped,
            u64::from(seq >= backlog::MAX_FILES as u64),
            "{seq}"
        );
    }
    let k = kept(&d.var());
    assert_eq!(k.len(), backlog::MAX_FILES);
    assert_eq!(k[0], 3, "the 3 oldest were dropped: {k:?}");
    // Each report after a drop counts it; the events follow each other without a gap.
    for seq in k {
        let doc = d.doc(seq);
        assert_eq!(doc["seq"], seq);
        let want = u64::from(seq > backlog::MAX_FILES as u64);
        assert_eq!(doc["dropped_reports"], want, "report {seq}");
        assert_eq!(doc["events_since"], seq + 1, "report {seq}");
        assert_eq!(doc["events"].as_array().unwrap().len(), 1);
    }
    // What `report` shows, without sending.
    let mut t = Target::device(&d.run, false).unwrap();
    let (shown, unsent) = report::run(&mut t, false).unwrap();
    assert!(unsent.is_none());
    assert_eq!(shown.next_report, total);
    assert_eq!(
        shown.dropped, 1,
        "the last report dropped one, the next counts it"
    );
    assert_eq!(shown.kept.len(), backlog::MAX_FILES);
}

#[test]
fn without_a_fetch_client_the_report_is_kept_and_the_cause_is_one_line() {
    let d = device(true);
    d.record(1);
    let mut t = Target::device(&d.run, false).unwrap();
    let e = report::run(&mut t, true).unwrap_err();
    assert_eq!(e.exit(), Exit::Environment);
    assert!(
        e.to_string().contains("this image cannot send reports"),
        "{e}"
    );
    assert_eq!(kept(&d.var()), [0], "made and kept before the send");
    let id = std::fs::read_to_string(d.var().join("lib/stele/device-id")).unwrap();
    assert_eq!(id.trim().len(), 32, "{id}");
}

#[test]
fn no_data_partition_or_no_report_url_is_one_error() {
    let d = device(false);
    let e = report::run(&mut Target::device(&d.run, false).unwrap(), true).unwrap_err();
    assert_eq!(e.exit(), Exit::Environment);
    assert!(
        e.to_string().contains("this device has no data partition"),
        "{e}"
    );
    let d = device(true);
    std::fs::write(
        d.run.join("lower/etc/stele/system.toml"),
        "[[service]]\nname = \"app\"\nexec = [\"/bin/app\"]\n",
    )
    .unwrap();
    let e = report::run(&mut Target::device(&d.run, false).unwrap(), true).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("the booted image names no report URL"),
        "{e}"
    );
    assert_eq!(e.exit(), Exit::Environment);
    let (shown, _) = report::run(&mut Target::device(&d.run, false).unwrap(), false).unwrap();
    assert!(
        shown.text().contains("report URL: none"),
        "{}",
        shown.text()
    );
}

//! The reports not yet sent, kept on the data partition (docs/FORMATS.md "Report backlog"):
//! `<data_mount>/lib/stele/reports/` holds `cursor` (the next report's number, the first
//! event not yet reported, reports dropped since the last report made) and one
//! `<seq, 20 digits>.json` per report. Bounded: at most [`MAX_FILES`] reports and
//! [`MAX_BYTES`] bytes; the oldest are dropped first to make room, and the drop is counted
//! in the next report. The bound ([`to_drop`]) and the cursor's text are pure; the files
//! are opened as data (crate::runtime::data_file: no link followed). One process at a time
//! (an exclusive lock on the directory).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use stele_verifier::exit::print_warning;

use super::ReportingError;
use crate::runtime::data_file;

/// The backlog's directory under the data partition's mount point.
pub const DIR: &str = "lib/stele/reports";
/// The cursor file in it.
pub const CURSOR: &str = "cursor";
/// At most this many reports are kept.
pub const MAX_FILES: usize = 32;
/// At most this many bytes of reports are kept (a report of the whole ring is tens of
/// KiB; the largest possible, under 350 KiB, fits twice: doc.rs tests it).
pub const MAX_BYTES: u64 = 1 << 20;

/// Where the backlog stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    /// The number the next report gets (`{seq}`).
    pub next_report: u64,
    /// The first flight recorder sequence no report holds yet ("events since N").
    pub next_event: u64,
    /// Reports dropped unsent (the bound) since the last report made.
    pub dropped: u64,
}

impl Cursor {
    /// `key = value` lines. Pure.
    pub fn to_text(&self) -> String {
        format!(
            "next_report = {}\nnext_event = {}\ndropped = {}\n",
            self.next_report, self.next_event, self.dropped
        )
    }

    /// The cursor of [`Cursor::to_text`]; `None` for anything else. Pure.
    pub fn parse(text: &str) -> Option<Cursor> {
        let mut c = Cursor::default();
        let mut seen = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (k, v) = line.split_once('=')?;
            let v: u64 = v.trim().parse().ok()?;
            match k.trim() {
                "next_report" => c.next_report = v,
                "next_event" => c.next_event = v,
                "dropped" => c.dropped = v,
                _ => return None,
            }
            seen += 1;
        }
        (seen == 3).then_some(c)
    }
}

/// The file name of report `seq`. Pure.
pub fn file_name(seq: u64) -> String {
    format!("{seq:020}.json")
}

/// The report number of a backlog file name; `None` for any other name. Pure.
pub fn seq_of(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The reports to drop, oldest first, so that one more of `new_len` bytes fits within
/// [`MAX_FILES`] and [`MAX_BYTES`]. `kept`: (seq, bytes) of each kept report, any order.
/// Pure.
pub fn to_drop(kept: &[(u64, u64)], new_len: u64) -> Vec<u64> {
    let mut kept = kept.to_vec();
    kept.sort_unstable();
    let mut files = kept.len();
    let mut bytes: u64 = kept.iter().map(|(_, n)| n).sum();
    let mut drop = Vec::new();
    for (seq, n) in kept {
        if files < MAX_FILES && bytes.saturating_add(new_len) <= MAX_BYTES {
            break;
        }
        drop.push(seq);
        files -= 1;
        bytes -= n;
    }
    drop
}

/// The backlog directory, locked for this process.
#[derive(Debug)]
pub struct Backlog {
    pub dir: PathBuf,
    _lock: OwnedFd,
}

impl Backlog {
    /// Opens (creating) and locks the backlog under `data_mount`; waits for another
    /// process that holds it.
    pub fn open(data_mount: &Path) -> Result<Backlog, ReportingError> {
        let dir = data_mount.join(DIR);
        let lock = data_file::lock_dir(&dir).map_err(ReportingError::Data)?;
        Ok(Backlog { dir, _lock: lock })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The cursor (a new one when there is none; one that is not ours is refused).
    pub fn cursor(&self) -> Result<Cursor, ReportingError> {
        let path = self.path(CURSOR);
        match data_file::read(&path).map_err(ReportingError::Data)? {
            None => Ok(Cursor::default()),
            Some(b) => {
                Cursor::parse(&String::from_utf8_lossy(&b)).ok_or(ReportingError::BadFile { path })
            }
        }
    }

    /// Writes the cursor (atomically).
    pub fn set_cursor(&self, c: &Cursor) -> Result<(), ReportingError> {
        data_file::write_atomic(&self.path(CURSOR), c.to_text().as_bytes())
            .map_err(ReportingError::Data)
    }

    /// The kept reports: (seq, bytes), oldest first. Entries of other names are ignored.
    pub fn kept(&self) -> Result<Vec<(u64, u64)>, ReportingError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| ReportingError::Io {
            op: "list",
            path: self.dir.clone(),
            source,
        })?;
        let mut out = Vec::new();
        for e in entries.flatten() {
            let Some(seq) = e.file_name().to_str().and_then(seq_of) else {
                continue;
            };
            // Not followed: a link's own length (reading it is refused later).
            let len = std::fs::symlink_metadata(e.path()).map_or(0, |m| m.len());
            out.push((seq, len));
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Report `seq`'s bytes; `None` (and removed, with a warning) when what is there is
    /// not a regular file stele wrote.
    pub fn read(&self, seq: u64) -> Option<Vec<u8>> {
        let path = self.path(&file_name(seq));
        match data_file::read(&path) {
            Ok(b) => b,
            Err(e) => {
                print_warning(&format!("{e}; removed"));
                self.remove(seq);
                None
            }
        }
    }

    /// Removes report `seq` (sent or dropped); unlinking never follows a link.
    pub fn remove(&self, seq: u64) {
        let _ = std::fs::remove_file(self.path(&file_name(seq)));
    }

    /// Keeps `doc` as report `cursor.next_report`, dropping the oldest reports first to
    /// stay within the bound (counted in `cursor.dropped`, which the caller put in `doc`
    /// already for the earlier drops), then writes the cursor: the next report's number,
    /// `next_event`, and the drops of this call. Returns how many were dropped now.
    pub fn keep(
        &self,
        cursor: &Cursor,
        doc: &[u8],
        next_event: u64,
    ) -> Result<u64, ReportingError> {
        let drop = to_drop(&self.kept()?, doc.len() as u64);
        for seq in &drop {
            self.remove(*seq);
        }
        data_file::write_atomic(&self.path(&file_name(cursor.next_report)), doc)
            .map_err(ReportingError::Data)?;
        let dropped = drop.len() as u64;
        self.set_cursor(&Cursor {
            next_report: cursor.next_report + 1,
            next_event,
            dropped,
        })?;
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_round_trips_and_a_foreign_one_is_refused() {
        let c = Cursor {
            next_report: 7,
            next_event: 40,
            dropped: 2,
        };
        assert_eq!(Cursor::parse(&c.to_text()), Some(c));
        assert_eq!(Cursor::parse("next_report = 1\n"), None);
        assert_eq!(
            Cursor::parse("next_report = x\nnext_event = 1\ndropped = 0"),
            None
        );
        assert_eq!(Cursor::parse("a = 1\nnext_event = 1\ndropped = 0"), None);
        assert_eq!(seq_of(&file_name(42)), Some(42));
        assert_eq!(seq_of("42.json"), None);
        assert_eq!(seq_of("cursor"), None);
    }

    #[test]
    fn the_bound_drops_the_oldest_first_by_files_and_by_bytes() {
        let full: Vec<(u64, u64)> = (0..MAX_FILES as u64).rev().map(|s| (s, 100)).collect();
        assert_eq!(to_drop(&full, 100), vec![0]);
        assert_eq!(to_drop(&full[1..], 100), Vec::<u64>::new());
        let big = [(5, MAX_BYTES / 2), (3, MAX_BYTES / 4), (9, MAX_BYTES / 4)];
        assert_eq!(to_drop(&big, 1), vec![3]);
        assert_eq!(to_drop(&big, MAX_BYTES / 2), vec![3, 5]);
        // A report larger than the bound itself empties the backlog, and is still kept.
        assert_eq!(to_drop(&big, MAX_BYTES + 1), vec![3, 5, 9]);
    }

    #[test]
    fn filling_past_the_bound_keeps_the_newest_and_counts_the_dropped() {
        let d = tempfile::tempdir().unwrap();
        let b = Backlog::open(d.path()).unwrap();
        let mut dropped_total = 0;
        for i in 0..(MAX_FILES as u64 + 5) {
            let c = b.cursor().unwrap();
            assert_eq!(c.next_report, i);
            dropped_total += b.keep(&c, format!("report {i}").as_bytes(), i * 2).unwrap();
            let after = b.cursor().unwrap();
            assert_eq!(after.dropped, u64::from(i >= MAX_FILES as u64), "{i}");
        }
        assert_eq!(dropped_total, 5);
        let kept: Vec<u64> = b.kept().unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(kept, (5..MAX_FILES as u64 + 5).collect::<Vec<_>>());
        assert_eq!(b.read(5).unwrap(), b"report 5");
        assert_eq!(b.cursor().unwrap().next_event, (MAX_FILES as u64 + 4) * 2);
    }

    /// A symlink planted as a report is not read through: it is removed with a warning.
    #[test]
    fn a_planted_link_in_the_backlog_is_removed_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let b = Backlog::open(d.path()).unwrap();
        let secret = d.path().join("secret");
        std::fs::write(&secret, "root:x").unwrap();
        std::os::unix::fs::symlink(&secret, b.dir.join(file_name(0))).unwrap();
        assert_eq!(b.kept().unwrap().len(), 1);
        assert_eq!(b.read(0), None);
        assert!(b.kept().unwrap().is_empty());
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root:x");
    }
}

//! The device binary's progress: one plain line on stderr, redrawn with `\r` (percent,
//! rate and ETA, or MiB for a stream), only when stderr is a terminal; no bar library in
//! the static stele-init. The host CLI draws the same [`Progress`] with indicatif.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use stele_verifier::progress::Progress;

const MIB: u64 = 1 << 20;

/// A `\r` progress line on stderr.
#[derive(Debug, Default)]
pub struct Line {
    enabled: bool,
    what: String,
    total: Option<u64>,
    done: u64,
    /// What the line last showed (a percent, or whole MiB), to redraw only on change.
    shown: Option<u64>,
    /// When the step started.
    started: Option<Instant>,
}

impl Line {
    /// A line when stderr is a terminal, else nothing.
    pub fn stderr() -> Line {
        Line {
            enabled: std::io::stderr().is_terminal(),
            ..Line::default()
        }
    }

    /// The text of the line, `elapsed` into the step. Pure.
    fn text(&self, elapsed: Duration) -> (u64, String) {
        match self.total {
            Some(t) if t > 0 => {
                let pct = self.done.min(t).saturating_mul(100) / t;
                let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
                let rate = self.done.saturating_mul(1000) / ms.max(1);
                let eta = match t.saturating_sub(self.done) {
                    _ if self.done == 0 || ms == 0 => "?".to_string(),
                    left => format!("{} s", left / rate.max(1)),
                };
                let text = format!(
                    "stele: {}: {pct}% ({}/{} MiB, {} KiB/s, ETA {eta})",
                    self.what,
                    self.done / MIB,
                    t.div_ceil(MIB),
                    rate / 1024
                );
                (pct, text)
            }
            _ => (
                self.done / MIB,
                format!("stele: {}: {} MiB", self.what, self.done / MIB),
            ),
        }
    }

    fn draw(&mut self) {
        let elapsed = self.started.map_or(Duration::ZERO, |s| s.elapsed());
        let (key, text) = self.text(elapsed);
        if self.shown == Some(key) {
            return;
        }
        self.shown = Some(key);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{text}\x1b[K");
        let _ = err.flush();
    }
}

impl Progress for Line {
    fn start(&mut self, what: &str, total: Option<u64>) {
        self.finish();
        self.what = what.to_string();
        self.total = total;
        self.done = 0;
        self.started = Some(Instant::now());
        if self.enabled {
            self.draw();
        }
    }

    fn advance(&mut self, bytes: u64) {
        self.done = self.done.saturating_add(bytes);
        if self.enabled {
            self.draw();
        }
    }

    fn finish(&mut self) {
        if self.enabled && self.shown.take().is_some() {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
        }
        self.shown = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_percent_or_mib() {
        let mut l = Line::default();
        l.start("writing", Some(4 * MIB));
        assert_eq!(
            l.text(Duration::ZERO),
            (
                0,
                "stele: writing: 0% (0/4 MiB, 0 KiB/s, ETA ?)".to_string()
            )
        );
        l.advance(MIB);
        assert_eq!(
            l.text(Duration::from_secs(2)),
            (
                25,
                "stele: writing: 25% (1/4 MiB, 512 KiB/s, ETA 6 s)".to_string()
            )
        );
        l.start("writing", None);
        l.advance(3 * MIB + 5);
        assert_eq!(
            l.text(Duration::from_secs(1)),
            (3, "stele: writing: 3 MiB".to_string())
        );
        // Disabled (not a terminal): nothing is remembered as shown.
        assert_eq!(l.shown, None);
    }
}

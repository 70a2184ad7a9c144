//! Progress of long operations. The libraries report the bytes done through [`Progress`];
//! each front-end draws it: the host CLI a bar with rate and ETA when stderr is a
//! terminal, the device binary a plain `\r` line when stderr is a terminal, and nothing
//! otherwise ([`Silent`]). Pure: no output here.

use std::io::{self, Read, Seek, SeekFrom, Write};

/// Where a long operation reports how far it got.
pub trait Progress {
    /// A step begins: `what` it is (`hashing`, `writing slot b`), its size in bytes when
    /// known (a stream's is not).
    fn start(&mut self, what: &str, total: Option<u64>);
    /// `bytes` more of the step are done.
    fn advance(&mut self, bytes: u64);
    /// The step ended, done or failed: whatever was drawn for it goes.
    fn finish(&mut self);
}

/// No progress output (tests, scripts, anything without a terminal).
#[derive(Clone, Copy, Debug, Default)]
pub struct Silent;

impl Progress for Silent {
    fn start(&mut self, _: &str, _: Option<u64>) {}
    fn advance(&mut self, _: u64) {}
    fn finish(&mut self) {}
}

/// One step of a [`Progress`], finished when dropped (also on an early error return, so a
/// bar never stays on the screen above the error line).
pub struct Step<'a> {
    progress: &'a mut dyn Progress,
}

impl<'a> Step<'a> {
    /// Starts the step `what` of `total` bytes.
    pub fn new(progress: &'a mut dyn Progress, what: &str, total: Option<u64>) -> Step<'a> {
        progress.start(what, total);
        Step { progress }
    }

    /// `bytes` more done.
    pub fn advance(&mut self, bytes: u64) {
        self.progress.advance(bytes);
    }

    /// `inner`, counting the bytes read through it as done.
    pub fn reader<R>(&mut self, inner: R) -> Reading<'_, R> {
        Reading {
            inner,
            progress: &mut *self.progress,
        }
    }
}

impl std::fmt::Debug for Step<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Step")
    }
}

impl Drop for Step<'_> {
    fn drop(&mut self) {
        self.progress.finish();
    }
}

/// A reader (seeker, writer) that reports every byte read as done; writes and seeks pass
/// through uncounted.
pub struct Reading<'a, R> {
    inner: R,
    progress: &'a mut dyn Progress,
}

impl<R> std::fmt::Debug for Reading<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reading")
    }
}

impl<R: Read> Read for Reading<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

impl<R: Seek> Seek for Reading<'_, R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

impl<R: Write> Write for Reading<'_, R> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what it was told.
    #[derive(Default)]
    struct Log(Vec<String>);

    impl Progress for Log {
        fn start(&mut self, what: &str, total: Option<u64>) {
            self.0.push(format!("start {what} {total:?}"));
        }
        fn advance(&mut self, bytes: u64) {
            self.0.push(format!("+{bytes}"));
        }
        fn finish(&mut self) {
            self.0.push("finish".into());
        }
    }

    #[test]
    fn a_step_counts_what_is_read_and_finishes_when_dropped() {
        let mut log = Log::default();
        {
            let mut step = Step::new(&mut log, "hashing", Some(10));
            let mut r = step.reader(&b"0123456789"[..]);
            let mut buf = [0u8; 6];
            r.read_exact(&mut buf).unwrap();
            let mut rest = Vec::new();
            r.read_to_end(&mut rest).unwrap();
            step.advance(0);
        }
        assert_eq!(
            log.0,
            ["start hashing Some(10)", "+6", "+4", "+0", "+0", "finish"]
        );
    }
}

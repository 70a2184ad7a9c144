//! Sending the backlog: each kept report, oldest first, by the fetch client
//! (`stele-fetch --send put|post URL`, the report on its stdin; `stele` links no network
//! code), a few attempts with a pause between them when a retry may help; the first report
//! that cannot be sent stops the round (the collector is down: the rest wait with it).

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use stele_verifier::config::ReportConfig;

use super::backlog::Backlog;
use crate::remote::pipe::Program;

/// Attempts per report in one round.
pub const ATTEMPTS: usize = 3;
/// The pauses between them.
pub const PAUSES: [Duration; ATTEMPTS - 1] = [Duration::from_secs(2), Duration::from_secs(6)];
/// The fetch client's `--timeout` for one request.
pub const TIMEOUT_SECS: u64 = 10;

/// What one request came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Sent; the fetch client's line.
    Sent(String),
    /// Not sent; a retry may help (no answer, 5xx, 408, 429).
    Retry(String),
    /// The collector refused it (4xx): not retried in this round.
    Refused(String),
}

/// Sends one report.
pub trait Transport {
    fn send(&mut self, url: &str, body: &[u8]) -> Outcome;
}

/// The fetch client from the verified image.
#[derive(Debug)]
pub struct FetchClient {
    pub program: Program,
    pub method: &'static str,
}

impl Transport for FetchClient {
    fn send(&mut self, url: &str, body: &[u8]) -> Outcome {
        let exe = Path::new("/proc/self/fd").join(self.program.file.as_raw_fd().to_string());
        let child = Command::new(exe)
            .arg0(&self.program.path)
            .args([
                "--timeout",
                &TIMEOUT_SECS.to_string(),
                "--send",
                self.method,
                url,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => {
                return Outcome::Refused(format!(
                    "cannot run the fetch client {}: {e}",
                    self.program.path.display()
                ))
            }
        };
        // A client that exits early closes its stdin: its status says why.
        if let Some(mut to) = child.stdin.take() {
            let _ = to.write_all(body);
        }
        let out = match child.wait_with_output() {
            Ok(o) => o,
            Err(e) => return Outcome::Retry(format!("the fetch client stopped: {e}")),
        };
        let last = |b: &[u8]| {
            String::from_utf8_lossy(b)
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim_start_matches("stele-fetch: error: ")
                .trim_start_matches("stele-fetch: ")
                .to_string()
        };
        match out.status.code() {
            Some(0) => Outcome::Sent(last(&out.stdout)),
            Some(1) => Outcome::Refused(last(&out.stderr)),
            _ => {
                let why = last(&out.stderr);
                Outcome::Retry(if why.is_empty() {
                    format!("the fetch client ended: {}", out.status)
                } else {
                    why
                })
            }
        }
    }
}

/// What a round did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// Reports sent: (seq, the fetch client's line).
    pub sent: Vec<(u64, String)>,
    /// Why the round stopped before the backlog was empty.
    pub failure: Option<String>,
}

/// Sends the kept reports of `backlog`, oldest first, to `cfg`'s URL for `device`,
/// removing each one sent; `pause` waits between attempts.
pub fn round(
    backlog: &Backlog,
    cfg: &ReportConfig,
    device: &str,
    transport: &mut dyn Transport,
    pause: &mut dyn FnMut(Duration),
) -> Result<Round, super::ReportingError> {
    let mut r = Round::default();
    for (seq, _) in backlog.kept()? {
        let Some(body) = backlog.read(seq) else {
            continue;
        };
        let url = cfg.expand(device, seq);
        let mut attempt = 0;
        loop {
            match transport.send(&url, &body) {
                Outcome::Sent(line) => {
                    backlog.remove(seq);
                    r.sent.push((seq, line));
                    break;
                }
                Outcome::Retry(_) if attempt + 1 < ATTEMPTS => {
                    pause(PAUSES[attempt]);
                    attempt += 1;
                }
                Outcome::Retry(why) | Outcome::Refused(why) => {
                    r.failure = Some(why);
                    return Ok(r);
                }
            }
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stele_verifier::config::Method;

    /// A collector that is down for its first `down` requests.
    struct Collector {
        down: usize,
        got: Vec<(String, Vec<u8>)>,
    }

    impl Transport for Collector {
        fn send(&mut self, url: &str, body: &[u8]) -> Outcome {
            if self.down > 0 {
                self.down -= 1;
                return Outcome::Retry("connection refused".into());
            }
            self.got.push((url.to_string(), body.to_vec()));
            Outcome::Sent("HTTP 200".into())
        }
    }

    #[test]
    fn a_collector_that_is_down_keeps_the_backlog_which_goes_out_later_in_order() {
        let d = tempfile::tempdir().unwrap();
        let b = Backlog::open(d.path()).unwrap();
        for i in 0..3u64 {
            let c = b.cursor().unwrap();
            b.keep(&c, format!("r{i}").as_bytes(), i).unwrap();
        }
        let cfg = ReportConfig {
            url: "http://127.0.0.1:1/{device}/{seq}".into(),
            method: Method::Put,
        };
        let mut pauses = Vec::new();
        let mut down = Collector {
            down: 100,
            got: Vec::new(),
        };
        let r = round(&b, &cfg, "dev", &mut down, &mut |p| pauses.push(p)).unwrap();
        assert!(r.sent.is_empty());
        assert_eq!(r.failure.as_deref(), Some("connection refused"));
        assert_eq!(pauses, PAUSES.to_vec(), "one report tried {ATTEMPTS} times");
        assert_eq!(b.kept().unwrap().len(), 3, "all kept");
        // Back after one more failure: the retry gets it, then the rest, oldest first.
        let mut back = Collector {
            down: 1,
            got: Vec::new(),
        };
        let r = round(&b, &cfg, "dev", &mut back, &mut |_| {}).unwrap();
        assert_eq!(r.failure, None);
        assert_eq!(r.sent.len(), 3);
        let urls: Vec<&str> = back.got.iter().map(|(u, _)| u.as_str()).collect();
        assert_eq!(
            urls,
            [
                "http://127.0.0.1:1/dev/0",
                "http://127.0.0.1:1/dev/1",
                "http://127.0.0.1:1/dev/2"
            ]
        );
        assert_eq!(back.got[2].1, b"r2");
        assert!(b.kept().unwrap().is_empty());
    }
}

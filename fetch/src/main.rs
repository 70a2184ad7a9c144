//! `stele-fetch`: the device's fetch client. `stele-fetch [--timeout S] URL` serves byte
//! ranges of URL on stdin/stdout to the device's `stele` (stele_device::remote::protocol);
//! `stele-fetch [--timeout S] --output FILE URL` downloads URL to FILE with the same range
//! requests (diagnostics, benchmarks); `stele-fetch [--timeout S] --send put|post URL` sends
//! the report on stdin (stele_device::report). Errors: one `stele-fetch: error:` line, exit
//! 3 (or 1: a report the collector refused, which a retry would not change).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use stele_device::remote::protocol::serve;
use stele_engine::delta::RangeSource;
use stele_fetch::HttpSource;
use stele_verifier::config::{Method, ReportConfig};

const USAGE: &str = "usage: stele-fetch [--timeout SECONDS] [--output FILE | --send put|post] URL";

fn fail(why: &str, code: u8) -> ExitCode {
    eprintln!("stele-fetch: error: {why}");
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let mut timeout = Duration::from_secs(30);
    let mut output = None;
    let mut send = None;
    let mut url = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--timeout" => match args.next().and_then(|v| v.parse::<u64>().ok()) {
                Some(s) if s > 0 => timeout = Duration::from_secs(s),
                _ => return fail(&format!("--timeout needs a number of seconds; {USAGE}"), 2),
            },
            "--output" => match args.next() {
                Some(o) => output = Some(o),
                None => return fail(&format!("--output needs a file; {USAGE}"), 2),
            },
            "--send" => match args.next().as_deref() {
                Some("put") => send = Some(Method::Put),
                Some("post") => send = Some(Method::Post),
                _ => return fail(&format!("--send needs put or post; {USAGE}"), 2),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            u if url.is_none() && !u.starts_with('-') => url = Some(u.to_string()),
            other => return fail(&format!("unexpected argument {other:?}; {USAGE}"), 2),
        }
    }
    let Some(url) = url else {
        return fail(USAGE, 2);
    };
    if let Some(method) = send {
        return send_report(&url, method, timeout);
    }
    let mut src = HttpSource::new(&url, timeout);
    match output {
        None => {
            let stdin = std::io::stdin();
            let stdout = std::io::stdout();
            match serve(&mut src, &mut stdin.lock(), &mut stdout.lock()) {
                Ok(()) => ExitCode::SUCCESS,
                // The device went away: nothing to tell it.
                Err(e) => fail(&format!("the pipe to stele broke: {e}"), 3),
            }
        }
        Some(out) => match download(&mut src, &out) {
            Ok(n) => {
                println!("stele-fetch: {url}: {n} bytes written to {out}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&format!("{url}: {e}"), 3),
        },
    }
}

/// Sends stdin (at most [`stele_fetch::MAX_SEND`] bytes) to `url`: exit 0 on a 2xx answer,
/// 3 when a retry may help, 1 when the collector refused it. The URL is shown without its
/// query (a presigned URL's signature stays off the console).
fn send_report(url: &str, method: Method, timeout: Duration) -> ExitCode {
    use std::io::Read;
    let shown = ReportConfig::shown(url);
    let mut body = Vec::new();
    let limit = stele_fetch::MAX_SEND as u64 + 1;
    if let Err(e) = std::io::stdin().lock().take(limit).read_to_end(&mut body) {
        return fail(&format!("reading the report on stdin: {e}"), 3);
    }
    if body.len() > stele_fetch::MAX_SEND {
        return fail(
            &format!("the report is larger than {} bytes", stele_fetch::MAX_SEND),
            1,
        );
    }
    match stele_fetch::send(url, method, &body, timeout) {
        Ok(status) => {
            println!(
                "stele-fetch: {} {shown}: HTTP {status}, {} bytes sent",
                method.name().to_uppercase(),
                body.len()
            );
            ExitCode::SUCCESS
        }
        Err(e @ stele_engine::delta::FetchError::Permanent { .. }) => {
            fail(&format!("{shown}: {e}"), 1)
        }
        Err(e) => fail(&format!("{shown}: {e}"), 3),
    }
}

/// The whole file in 4 MiB ranges (one stream when the server ignores Range).
fn download(src: &mut HttpSource, out: &str) -> Result<u64, String> {
    let mut f = std::fs::File::create(out).map_err(|e| format!("{out}: {e}"))?;
    let len = src.len().map_err(|e| e.to_string())?;
    let mut write = |c: &[u8]| f.write_all(c).map_err(|_| stele_engine::delta::Abort);
    let mut off = 0u64;
    while off < len {
        let n = (len - off).min(4 << 20);
        match src.read_range(off, n, &mut write) {
            Ok(()) => off += n,
            Err(stele_engine::delta::FetchError::RangesIgnored) => {
                src.start_stream().map_err(|e| e.to_string())?;
                let mut buf = vec![0u8; 256 << 10];
                let mut done = 0u64;
                loop {
                    let k = src.read_stream(&mut buf).map_err(|e| e.to_string())?;
                    if k == 0 {
                        break;
                    }
                    write(&buf[..k]).map_err(|_| format!("writing {out} failed"))?;
                    done += k as u64;
                }
                return Ok(done);
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(len)
}

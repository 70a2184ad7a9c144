//! stele-fetch: HTTP(S) for stele, kept out of PID 1. [`HttpSource`] reads byte ranges of
//! a slot image with single `Range` requests over one kept-alive connection (ureq, rustls
//! with the Mozilla roots); the `stele-fetch` binary serves it to the device's `stele`
//! over a pipe (stele_device::remote::protocol), and the host CLI uses it in-process.
//! [`send`] PUTs or POSTs one report (stele_device::report).

use std::io::Read;
use std::time::Duration;

use stele_engine::delta::lzc::{Chain, Prime};
use stele_engine::delta::published::{PatchDecoder, PatchFrame};
use stele_engine::delta::zst::Frame;
use stele_engine::delta::{read_frame_by_range, read_patch_with, FetchError, RangeSource, Sink};
use stele_verifier::config::Method;
use ureq::http::{header, StatusCode};
use ureq::Agent;

/// Bytes read from a body at once.
const READ_CHUNK: usize = 64 << 10;

/// A slot image on an HTTP(S) server.
pub struct HttpSource {
    agent: Agent,
    url: String,
    len: Option<u64>,
    ignores_ranges: bool,
    /// The last 4 KiB, from the first request (`Range: bytes=-4096`): (offset, bytes).
    tail: Option<(u64, Vec<u8>)>,
    stream: Option<ureq::BodyReader<'static>>,
    /// The chained form's decoder, kept from one frame to the next.
    chain: Chain,
    /// The published delta's decoder, its buffers kept from one frame to the next.
    patch: PatchDecoder,
}

impl std::fmt::Debug for HttpSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HttpSource({})", self.url)
    }
}

/// What a status means for a retry.
fn status_error(status: StatusCode, retry_after: Option<Duration>) -> FetchError {
    let why = format!(
        "HTTP {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .trim_end()
    .to_string();
    if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        FetchError::Transient { why, retry_after }
    } else {
        FetchError::Permanent { why }
    }
}

fn ureq_error(e: ureq::Error) -> FetchError {
    use ureq::Error as E;
    match e {
        E::BadUri(_) | E::InvalidProxyUrl | E::Tls(_) | E::Pem(_) | E::Rustls(_) => {
            FetchError::Permanent { why: e.to_string() }
        }
        other => FetchError::transient(other.to_string()),
    }
}

/// `Retry-After` in seconds (an HTTP date is not used: the backoff decides then).
fn retry_after(h: &ureq::http::HeaderMap) -> Option<Duration> {
    h.get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
        .map(Duration::from_secs)
}

/// `Content-Range: bytes a-b/total` as (a, b, total). Pure.
pub fn content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?, total.parse().ok()?))
}

impl HttpSource {
    /// A source for `url`; a request that sends nothing for `timeout` (connecting,
    /// waiting for the answer, or between two reads of its body) is cut.
    pub fn new(url: &str, timeout: Duration) -> Self {
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(timeout))
            .timeout_recv_response(Some(timeout))
            .timeout_per_read(Some(timeout))
            .user_agent(concat!("stele-fetch/", env!("CARGO_PKG_VERSION")))
            .build();
        HttpSource {
            agent: config.into(),
            url: url.to_string(),
            len: None,
            ignores_ranges: false,
            tail: None,
            stream: None,
            chain: Chain::default(),
            patch: PatchDecoder::default(),
        }
    }

    fn get(&self, range: Option<&str>) -> Result<ureq::http::Response<ureq::Body>, FetchError> {
        let mut req = self.agent.get(&self.url);
        if let Some(r) = range {
            req = req.header(header::RANGE, r);
        }
        req.call().map_err(ureq_error)
    }

    /// The total length an answer states, checked against what was seen before.
    fn learn_len(&mut self, total: u64) -> Result<(), FetchError> {
        match self.len {
            Some(was) if was != total => Err(FetchError::Changed { was, now: total }),
            _ => {
                self.len = Some(total);
                Ok(())
            }
        }
    }

    /// A 206 answer for `off..off + len`: its Content-Range must say exactly that.
    fn check_partial(
        &mut self,
        resp: &ureq::http::Response<ureq::Body>,
        off: Option<u64>,
        len: u64,
    ) -> Result<u64, FetchError> {
        let cr = resp
            .headers()
            .get(header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(content_range)
            .ok_or_else(|| FetchError::transient("a 206 answer without a valid Content-Range"))?;
        let (a, b, total) = cr;
        self.learn_len(total)?;
        let want_a = off.unwrap_or(total.saturating_sub(len));
        let want_b = (want_a + len).min(total).saturating_sub(1);
        if a != want_a || b != want_b {
            return Err(FetchError::transient(format!(
                "asked for bytes {want_a}-{want_b}, the server sent {a}-{b}"
            )));
        }
        Ok(a)
    }
}

/// Reads exactly `len` bytes of `body` into `sink`.
fn pour(body: &mut dyn Read, len: u64, sink: Sink<'_>) -> Result<(), FetchError> {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left.min(READ_CHUNK as u64)).unwrap_or(READ_CHUNK);
        match body.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(FetchError::transient(format!(
                    "the answer ended {left} bytes early"
                )))
            }
            Ok(n) => {
                sink(&buf[..n]).map_err(|_| FetchError::Aborted)?;
                left -= n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FetchError::transient(format!("reading the answer: {e}"))),
        }
    }
    Ok(())
}

impl RangeSource for HttpSource {
    fn name(&self) -> String {
        self.url.clone()
    }

    /// The first request: `Range: bytes=-4096` (the footer), which also tells the length.
    fn len(&mut self) -> Result<u64, FetchError> {
        if let Some(l) = self.len {
            return Ok(l);
        }
        let resp = self.get(Some("bytes=-4096"))?;
        let status = resp.status();
        if status == StatusCode::PARTIAL_CONTENT {
            let a = self.check_partial(&resp, None, 4096)?;
            let total = self.len.unwrap_or(0);
            let mut bytes = Vec::new();
            let mut body = resp.into_body().into_reader();
            pour(&mut body, total - a, &mut |c| {
                bytes.extend_from_slice(c);
                Ok(())
            })?;
            self.tail = Some((a, bytes));
            return Ok(total);
        }
        if status == StatusCode::OK {
            self.ignores_ranges = true;
            let total = resp
                .body()
                .content_length()
                .ok_or_else(|| FetchError::Permanent {
                    why: "the server ignores Range and sends no Content-Length".into(),
                })?;
            self.learn_len(total)?;
            return Ok(total);
        }
        Err(status_error(status, retry_after(resp.headers())))
    }

    fn read_range(&mut self, off: u64, len: u64, sink: Sink<'_>) -> Result<(), FetchError> {
        // The answer to the first request serves the first read of those bytes, once: a
        // read again (its check failed) goes to the server.
        if let Some((t_off, bytes)) = self.tail.take() {
            let end = t_off + bytes.len() as u64;
            if off >= t_off && off + len <= end {
                let a = usize::try_from(off - t_off).unwrap_or(0);
                let b = a + usize::try_from(len).unwrap_or(0);
                return sink(&bytes[a..b]).map_err(|_| FetchError::Aborted);
            }
        }
        if self.ignores_ranges {
            return Err(FetchError::RangesIgnored);
        }
        if len == 0 {
            return Ok(());
        }
        let range = format!("bytes={off}-{}", off + len - 1);
        let resp = self.get(Some(&range))?;
        let status = resp.status();
        if status == StatusCode::OK {
            self.ignores_ranges = true;
            return Err(FetchError::RangesIgnored);
        }
        if status == StatusCode::RANGE_NOT_SATISFIABLE {
            // `Content-Range: bytes */<total>`: the file is shorter than it was.
            let now = resp
                .headers()
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().strip_prefix("bytes */")?.parse().ok())
                .unwrap_or(0);
            return Err(FetchError::Changed {
                was: self.len.unwrap_or(0),
                now,
            });
        }
        if status != StatusCode::PARTIAL_CONTENT {
            return Err(status_error(status, retry_after(resp.headers())));
        }
        self.check_partial(&resp, Some(off), len)?;
        let mut body = resp.into_body().into_reader();
        pour(&mut body, len, sink)
    }

    fn start_stream(&mut self) -> Result<(), FetchError> {
        self.stream = None;
        let resp = self.get(None)?;
        let status = resp.status();
        if status != StatusCode::OK {
            return Err(status_error(status, retry_after(resp.headers())));
        }
        if let Some(total) = resp.body().content_length() {
            self.learn_len(total)?;
        }
        self.stream = Some(resp.into_body().into_reader());
        Ok(())
    }

    fn read_stream(&mut self, buf: &mut [u8]) -> Result<usize, FetchError> {
        let Some(s) = &mut self.stream else {
            return Err(FetchError::transient("no stream is open"));
        };
        loop {
            match s.read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.stream = None;
                    return Err(FetchError::transient(format!("reading the stream: {e}")));
                }
            }
        }
    }

    /// The frame by one Range request, decoded here (bounded: a bomb is refused).
    fn read_frame(&mut self, frame: &Frame, sink: Sink<'_>) -> Result<(), FetchError> {
        read_frame_by_range(self, frame, sink)
    }

    /// The chained frame by one Range request, decoded here by the kept decoder after the
    /// priming (bounded: a bomb is refused).
    fn read_chain(
        &mut self,
        frame: &Frame,
        prime: Prime<'_>,
        sink: Sink<'_>,
    ) -> Result<(), FetchError> {
        let mut chain = std::mem::take(&mut self.chain);
        let r = chain.read(self, frame, prime, sink);
        self.chain = chain;
        r
    }

    /// The delta frame by one Range request, decoded here against the reference the
    /// device sent (bounded: a bomb is refused).
    fn read_patch(
        &mut self,
        frame: &PatchFrame,
        block_size: u64,
        reference: &[u8],
        sink: Sink<'_>,
    ) -> Result<(), FetchError> {
        let mut patch = std::mem::take(&mut self.patch);
        let r = read_patch_with(self, &mut patch, frame, block_size, reference, sink);
        self.patch = patch;
        r
    }
}

/// The largest report body [`send`] takes (a report is at most a few tens of KiB:
/// docs/FORMATS.md "Report document").
pub const MAX_SEND: usize = 1 << 20;

/// Sends `body` (JSON) to `url` by `method` (PUT or POST) in one request; a 2xx answer is
/// success (its status returned), anything else an error that says whether a retry may
/// help ([`FetchError::Transient`]: no answer, 5xx, 408, 429) or not.
pub fn send(url: &str, method: Method, body: &[u8], timeout: Duration) -> Result<u16, FetchError> {
    let agent: Agent = Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(timeout))
        .timeout_send_body(Some(timeout))
        .timeout_recv_response(Some(timeout))
        .user_agent(concat!("stele-fetch/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let req = match method {
        Method::Put => agent.put(url),
        Method::Post => agent.post(url),
    };
    let resp = req
        .header(header::CONTENT_TYPE, "application/json")
        .send(body)
        .map_err(ureq_error)?;
    let status = resp.status();
    if status.is_success() {
        Ok(status.as_u16())
    } else {
        Err(status_error(status, retry_after(resp.headers())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-request collector on 127.0.0.1 answering `status`; returns its URL and what
    /// it got (the request head and body).
    fn collector(status: &'static str) -> (String, std::thread::JoinHandle<(String, Vec<u8>)>) {
        use std::io::{BufRead, BufReader, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = std::thread::spawn(move || {
            let (conn, _) = l.accept().unwrap();
            let mut out = conn.try_clone().unwrap();
            let mut r = BufReader::new(conn);
            let (mut head, mut len) = (String::new(), 0usize);
            loop {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                head.push_str(&line);
            }
            let mut body = vec![0u8; len];
            r.read_exact(&mut body).unwrap();
            write!(
                out,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            (head, body)
        });
        (format!("http://127.0.0.1:{port}/r/dev/1.json"), h)
    }

    #[test]
    fn a_report_is_put_or_posted_and_the_answer_says_whether_to_retry() {
        let t = Duration::from_secs(5);
        let (url, h) = collector("201 Created");
        assert_eq!(send(&url, Method::Put, b"{\"seq\":1}", t).unwrap(), 201);
        let (head, body) = h.join().unwrap();
        assert!(head.starts_with("PUT /r/dev/1.json HTTP/1.1"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{head}"
        );
        assert_eq!(body, b"{\"seq\":1}");
        let (url, h) = collector("503 Service Unavailable");
        let e = send(&url, Method::Post, b"{}", t).unwrap_err();
        assert!(matches!(e, FetchError::Transient { .. }), "{e}");
        assert!(h.join().unwrap().0.starts_with("POST "));
        let (url, h) = collector("403 Forbidden");
        let e = send(&url, Method::Put, b"{}", t).unwrap_err();
        assert!(
            matches!(e, FetchError::Permanent { ref why } if why == "HTTP 403 Forbidden"),
            "{e}"
        );
        h.join().unwrap();
        // Nobody listening: a retry may help.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = send(
            &format!("http://127.0.0.1:{port}/x"),
            Method::Post,
            b"{}",
            t,
        )
        .unwrap_err();
        assert!(matches!(e, FetchError::Transient { .. }), "{e}");
    }

    #[test]
    fn content_ranges() {
        assert_eq!(content_range("bytes 0-4095/8192"), Some((0, 4095, 8192)));
        assert_eq!(
            content_range(" bytes 4096-8191/8192 "),
            Some((4096, 8191, 8192))
        );
        assert_eq!(content_range("bytes */8192"), None);
        assert_eq!(content_range("items 0-1/2"), None);
        let e = status_error(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(Duration::from_secs(2)),
        );
        assert!(matches!(
            e,
            FetchError::Transient {
                retry_after: Some(_),
                ..
            }
        ));
        assert!(matches!(
            status_error(StatusCode::NOT_FOUND, None),
            FetchError::Permanent { ref why } if why == "HTTP 404 Not Found"
        ));
    }
}

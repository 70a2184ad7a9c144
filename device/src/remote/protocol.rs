//! THE protocol between the device's `stele` (which links no network code) and the fetch
//! client `stele-fetch` it runs from the verified root: a [`RangeSource`] served over the
//! client's stdin/stdout. [`serve`] is the client's side, [`PipeClient`](super::pipe) the
//! device's. Text request lines, binary data in framed chunks:
//!
//! ```text
//! -> LEN                      <- OK <len>
//! -> RANGE <off> <len>        <- OK <len>, then DATA <n>\n<n bytes> ..., then END
//! -> STREAM                   <- OK <len>            (the whole file from byte 0)
//! -> NEXT <max>               <- DATA <n>\n<n bytes> | END
//! any reply may instead be    <- ERR transient <retry-after ms|-> <why>
//!                                ERR permanent <why> | ERR ranges-ignored
//!                                ERR changed <was> <now>
//! ```

use std::io::{self, BufRead, Write};
use std::time::Duration;

use stele_engine::delta::{Abort, FetchError, RangeSource};

/// Largest data chunk on the wire.
pub const MAX_CHUNK: usize = 256 << 10;

/// A request of the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Len,
    Range { off: u64, len: u64 },
    Stream,
    Next { max: u64 },
}

impl Request {
    /// The request line (with its newline).
    pub fn line(&self) -> String {
        match self {
            Request::Len => "LEN\n".into(),
            Request::Range { off, len } => format!("RANGE {off} {len}\n"),
            Request::Stream => "STREAM\n".into(),
            Request::Next { max } => format!("NEXT {max}\n"),
        }
    }

    /// Parses a request line. Pure.
    pub fn parse(line: &str) -> Option<Request> {
        let mut w = line.split_ascii_whitespace();
        let num = |s: Option<&str>| s.and_then(|v| v.parse::<u64>().ok());
        let r = match w.next()? {
            "LEN" => Request::Len,
            "RANGE" => Request::Range {
                off: num(w.next())?,
                len: num(w.next())?,
            },
            "STREAM" => Request::Stream,
            "NEXT" => Request::Next {
                max: num(w.next())?,
            },
            _ => return None,
        };
        w.next().is_none().then_some(r)
    }
}

/// The `ERR ...` line of an error (one line: newlines in the cause become spaces).
pub fn error_line(e: &FetchError) -> String {
    let clean = |s: &str| s.replace(['\n', '\r'], " ");
    match e {
        FetchError::Transient { why, retry_after } => format!(
            "ERR transient {} {}\n",
            retry_after.map_or("-".to_string(), |d| d.as_millis().to_string()),
            clean(why)
        ),
        FetchError::Permanent { why } => format!("ERR permanent {}\n", clean(why)),
        FetchError::RangesIgnored => "ERR ranges-ignored\n".into(),
        FetchError::Changed { was, now } => format!("ERR changed {was} {now}\n"),
        FetchError::Aborted => "ERR permanent the reader stopped\n".into(),
    }
}

/// A reply header line from the fetch client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    Ok(u64),
    Data(usize),
    End,
    Err(FetchError),
}

/// Parses a reply line. Pure.
pub fn parse_reply(line: &str) -> Option<Reply> {
    let line = line.trim_end_matches(['\n', '\r']);
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    match word {
        "OK" => rest.parse().ok().map(Reply::Ok),
        "DATA" => rest
            .parse()
            .ok()
            .filter(|&n| n <= MAX_CHUNK)
            .map(Reply::Data),
        "END" if rest.is_empty() => Some(Reply::End),
        "ERR" => {
            let (kind, rest) = rest.split_once(' ').unwrap_or((rest, ""));
            let e = match kind {
                "transient" => {
                    let (ms, why) = rest.split_once(' ').unwrap_or((rest, ""));
                    FetchError::Transient {
                        why: why.to_string(),
                        retry_after: ms.parse().ok().map(Duration::from_millis),
                    }
                }
                "permanent" => FetchError::Permanent {
                    why: rest.to_string(),
                },
                "ranges-ignored" => FetchError::RangesIgnored,
                "changed" => {
                    let mut n = rest.split(' ').map(|v| v.parse().ok());
                    FetchError::Changed {
                        was: n.next().flatten()?,
                        now: n.next().flatten()?,
                    }
                }
                _ => return None,
            };
            Some(Reply::Err(e))
        }
        _ => None,
    }
}

/// Serves `src` on `input`/`output` until `input` ends: the fetch client's main loop.
/// Errors of the source go to the device as `ERR` lines; an error of the pipe itself
/// (the device went away) ends the loop.
pub fn serve(
    src: &mut dyn RangeSource,
    input: &mut dyn BufRead,
    output: &mut dyn Write,
) -> io::Result<()> {
    let mut line = String::new();
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let Some(req) = Request::parse(&line) else {
            output.write_all(b"ERR permanent malformed request\n")?;
            output.flush()?;
            continue;
        };
        match req {
            Request::Len => match src.len() {
                Ok(l) => writeln!(output, "OK {l}")?,
                Err(e) => output.write_all(error_line(&e).as_bytes())?,
            },
            Request::Range { off, len } => {
                writeln!(output, "OK {len}")?;
                let mut pipe_error = None;
                let r = src.read_range(off, len, &mut |chunk: &[u8]| {
                    for c in chunk.chunks(MAX_CHUNK) {
                        let w =
                            writeln!(output, "DATA {}", c.len()).and_then(|()| output.write_all(c));
                        if let Err(e) = w {
                            pipe_error = Some(e);
                            return Err(Abort);
                        }
                    }
                    Ok(())
                });
                if let Some(e) = pipe_error {
                    return Err(e);
                }
                match r {
                    Ok(()) => output.write_all(b"END\n")?,
                    Err(e) => output.write_all(error_line(&e).as_bytes())?,
                }
            }
            Request::Stream => match src.start_stream().and_then(|()| src.len()) {
                Ok(l) => writeln!(output, "OK {l}")?,
                Err(e) => output.write_all(error_line(&e).as_bytes())?,
            },
            Request::Next { max } => {
                let mut buf = vec![
                    0u8;
                    usize::try_from(max)
                        .unwrap_or(MAX_CHUNK)
                        .clamp(1, MAX_CHUNK)
                ];
                match src.read_stream(&mut buf) {
                    Ok(0) => output.write_all(b"END\n")?,
                    Ok(n) => {
                        writeln!(output, "DATA {n}")?;
                        output.write_all(&buf[..n])?;
                    }
                    Err(e) => output.write_all(error_line(&e).as_bytes())?,
                }
            }
        }
        output.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        for r in [
            Request::Len,
            Request::Range { off: 7, len: 4096 },
            Request::Stream,
            Request::Next { max: 65536 },
        ] {
            assert_eq!(Request::parse(&r.line()), Some(r));
        }
        assert_eq!(Request::parse("RANGE 1\n"), None);
        assert_eq!(Request::parse("RANGE 1 2 3\n"), None);
        assert_eq!(Request::parse("GET /\n"), None);
        for e in [
            FetchError::Transient {
                why: "503 Service Unavailable".into(),
                retry_after: Some(Duration::from_millis(1500)),
            },
            FetchError::transient("connection reset by peer"),
            FetchError::Permanent {
                why: "404 Not Found".into(),
            },
            FetchError::RangesIgnored,
            FetchError::Changed { was: 10, now: 11 },
        ] {
            assert_eq!(parse_reply(&error_line(&e)), Some(Reply::Err(e)));
        }
        assert_eq!(parse_reply("OK 12\n"), Some(Reply::Ok(12)));
        assert_eq!(parse_reply("DATA 99999999\n"), None, "chunks are bounded");
        assert_eq!(parse_reply("END\n"), Some(Reply::End));
        assert_eq!(parse_reply("HELLO\n"), None);
    }
}

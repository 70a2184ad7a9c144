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
//! -> FRAME <i> <off> <len> <raw>  <- OK <raw>, then DATA ..., then END: frame i of a
//!                                compressed form (IMAGE.img.zst), `len` bytes at `off`,
//!                                decoded by the client to exactly `raw` bytes
//! -> PATCH <i> <off> <len> <first> <blocks> <ref_first> <ref_blocks> <bs>, then the
//!    reference (ref_blocks * bs bytes)  <- OK <blocks * bs>, then DATA ..., then END:
//!                                frame i of a published delta, decoded by the client
//!                                against the reference the device read from its
//!                                running slot
//! -> CHAIN <i> <off> <len> <raw> <prime_off> <prime_len>, then the priming (prime_len
//!    bytes, at most 16 MiB)  <- OK <raw>, then DATA ..., then END: frame i of the
//!                                chained form (IMAGE.img.lzc), decoded by the client's
//!                                decoder (kept from the frame before) after the image's
//!                                bytes from prime_off to the frame, which the device
//!                                read from the target slot
//! any reply may instead be    <- ERR transient <retry-after ms|-> <why>
//!                                ERR permanent <why> | ERR ranges-ignored
//!                                ERR changed <was> <now>
//! ```

use std::io::{self, BufRead, Read, Write};
use std::time::Duration;

use stele_engine::delta::lzc::{Prime, DICT};
use stele_engine::delta::published::{PatchFrame, MAX_REF};
use stele_engine::delta::zst::Frame;
use stele_engine::delta::{Abort, FetchError, RangeSource};

/// Largest data chunk on the wire.
pub const MAX_CHUNK: usize = 256 << 10;

/// A request of the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Len,
    Range {
        off: u64,
        len: u64,
    },
    Stream,
    Next {
        max: u64,
    },
    Frame(Frame),
    /// A delta frame; `block_size` bytes a block. The reference follows the line.
    Patch {
        frame: PatchFrame,
        block_size: u64,
    },
    /// A chained frame; the priming (`prime_len` bytes of the image from `prime_off`)
    /// follows the line.
    Chain {
        frame: Frame,
        prime_off: u64,
        prime_len: u64,
    },
}

impl Request {
    /// The request line (with its newline).
    pub fn line(&self) -> String {
        match self {
            Request::Len => "LEN\n".into(),
            Request::Range { off, len } => format!("RANGE {off} {len}\n"),
            Request::Stream => "STREAM\n".into(),
            Request::Next { max } => format!("NEXT {max}\n"),
            Request::Frame(f) => {
                format!("FRAME {} {} {} {}\n", f.index, f.offset, f.len, f.raw_len)
            }
            Request::Patch {
                frame: f,
                block_size,
            } => format!(
                "PATCH {} {} {} {} {} {} {} {block_size}\n",
                f.index, f.offset, f.len, f.first, f.blocks, f.ref_first, f.ref_blocks
            ),
            Request::Chain {
                frame: f,
                prime_off,
                prime_len,
            } => format!(
                "CHAIN {} {} {} {} {prime_off} {prime_len}\n",
                f.index, f.offset, f.len, f.raw_len
            ),
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
            "FRAME" => {
                let index = num(w.next())?;
                let offset = num(w.next())?;
                let len = num(w.next())?;
                let raw_len = num(w.next())?;
                Request::Frame(Frame {
                    index,
                    offset,
                    len,
                    raw_offset: index.checked_mul(stele_engine::delta::zst::FRAME_RAW)?,
                    raw_len,
                })
            }
            "CHAIN" => {
                let mut n = [0u64; 6];
                for v in &mut n {
                    *v = num(w.next())?;
                }
                let [index, offset, len, raw_len, prime_off, prime_len] = n;
                Request::Chain {
                    frame: Frame {
                        index,
                        offset,
                        len,
                        raw_offset: index.checked_mul(stele_engine::delta::lzc::FRAME_RAW)?,
                        raw_len,
                    },
                    prime_off,
                    prime_len,
                }
            }
            "PATCH" => {
                let mut n = [0u64; 8];
                for v in &mut n {
                    *v = num(w.next())?;
                }
                let [index, offset, len, first, blocks, ref_first, ref_blocks, block_size] = n;
                Request::Patch {
                    frame: PatchFrame {
                        index,
                        offset,
                        len,
                        first,
                        blocks,
                        ref_first,
                        ref_blocks,
                    },
                    block_size,
                }
            }
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
    // A delta frame's reference, its buffer kept from one request to the next.
    let mut reference = Vec::new();
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
            Request::Range { .. }
            | Request::Frame(_)
            | Request::Patch { .. }
            | Request::Chain { .. } => {
                reference.clear();
                if let Request::Chain { prime_len, .. } = req {
                    if prime_len > DICT {
                        // The priming cannot be skipped safely: end the client.
                        output.write_all(b"ERR permanent a priming above 16 MiB\n")?;
                        output.flush()?;
                        return Err(io::Error::other("a priming above 16 MiB"));
                    }
                }
                if let Request::Patch { frame, block_size } = req {
                    let n = frame
                        .ref_blocks
                        .checked_mul(block_size)
                        .filter(|&n| n <= MAX_REF);
                    let Some(n) = n else {
                        // The reference's bytes cannot be skipped safely: end the client
                        // (the device starts another one).
                        output.write_all(b"ERR permanent a delta reference above 8 MiB\n")?;
                        output.flush()?;
                        return Err(io::Error::other("a delta reference above 8 MiB"));
                    };
                    reference.resize(usize::try_from(n).unwrap_or(0), 0);
                    input.read_exact(&mut reference)?;
                }
                let announced = match req {
                    Request::Frame(f) | Request::Chain { frame: f, .. } => f.raw_len,
                    Request::Range { len, .. } => len,
                    Request::Patch { frame, block_size } => frame.blocks.saturating_mul(block_size),
                    _ => 0,
                };
                writeln!(output, "OK {announced}")?;
                let mut pipe_error = None;
                let mut sink = |chunk: &[u8]| {
                    for c in chunk.chunks(MAX_CHUNK) {
                        let w =
                            writeln!(output, "DATA {}", c.len()).and_then(|()| output.write_all(c));
                        if let Err(e) = w {
                            pipe_error = Some(e);
                            return Err(Abort);
                        }
                    }
                    Ok(())
                };
                let mut prime = Read::take(&mut *input, 0);
                let r = match req {
                    Request::Frame(f) => src.read_frame(&f, &mut sink),
                    Request::Chain {
                        frame,
                        prime_off,
                        prime_len,
                    } => {
                        prime.set_limit(prime_len);
                        let p = Prime {
                            off: prime_off,
                            len: prime_len,
                            bytes: &mut prime,
                        };
                        src.read_chain(&frame, p, &mut sink)
                    }
                    Request::Patch { frame, block_size } => {
                        src.read_patch(&frame, block_size, &reference, &mut sink)
                    }
                    Request::Range { off, len } => src.read_range(off, len, &mut sink),
                    _ => Ok(()),
                };
                // What the source did not read of the priming is still in the pipe.
                io::copy(&mut prime, &mut io::sink())?;
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
    use stele_engine::delta::zst::{encode_table, FRAME_RAW};
    use stele_engine::delta::{read_frame_by_range, ReaderSource, Sink};

    /// A local file that decodes frames, as the fetch client's HTTP source does.
    struct Decoding(ReaderSource<std::io::Cursor<Vec<u8>>>);

    impl RangeSource for Decoding {
        fn name(&self) -> String {
            self.0.name()
        }
        fn len(&mut self) -> Result<u64, FetchError> {
            self.0.len()
        }
        fn read_range(&mut self, off: u64, len: u64, sink: Sink<'_>) -> Result<(), FetchError> {
            self.0.read_range(off, len, sink)
        }
        fn start_stream(&mut self) -> Result<(), FetchError> {
            self.0.start_stream()
        }
        fn read_stream(&mut self, buf: &mut [u8]) -> Result<usize, FetchError> {
            self.0.read_stream(buf)
        }
        fn read_frame(&mut self, frame: &Frame, sink: Sink<'_>) -> Result<(), FetchError> {
            read_frame_by_range(self, frame, sink)
        }
    }

    /// The reply of `serve` to one request, split into its header, data and last line.
    fn ask(src: &mut dyn RangeSource, req: &Request) -> (String, Vec<u8>, String) {
        let mut out = Vec::new();
        serve(src, &mut req.line().as_bytes(), &mut out).unwrap();
        let mut r = &out[..];
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        let head = line.clone();
        let mut data = Vec::new();
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap() == 0 {
                break;
            }
            match parse_reply(&line) {
                Some(Reply::Data(n)) => {
                    data.extend_from_slice(&r[..n]);
                    r = &r[n..];
                }
                _ => break,
            }
        }
        (head, data, line)
    }

    /// A CHAIN request's priming is taken off the pipe whatever the source does with it
    /// (the next request is still understood); a priming above the window ends the client.
    #[test]
    fn a_chain_request_keeps_the_pipe_in_step() {
        let file = vec![7u8; 10_000];
        let mut src = ReaderSource::new(std::io::Cursor::new(file), "f");
        let mut input: &[u8] = b"CHAIN 1 0 10 4096 0 5\nHELLOLEN\n";
        let mut out = Vec::new();
        serve(&mut src, &mut input, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(
            out,
            "OK 4096\nERR permanent this source does not decode chained frames\nOK 10000\n"
        );
        let mut input: &[u8] = b"CHAIN 1 0 10 4096 0 99999999\nLEN\n";
        let mut out = Vec::new();
        assert!(serve(&mut src, &mut input, &mut out).is_err());
        assert_eq!(out, b"ERR permanent a priming above 16 MiB\n");
    }

    /// The fetch client answers FRAME with the frame decoded; a frame that decodes to
    /// more than asked (a bomb) is one permanent error line naming it.
    #[test]
    #[allow(clippy::cast_possible_truncation)] // test sizes are small
    fn frames_are_decoded_by_the_client_and_a_bomb_is_one_error_line() {
        let raw: Vec<u8> = (0..FRAME_RAW as u32).map(|i| (i / 97) as u8).collect();
        let good = zstd::bulk::compress(&raw, 3).unwrap();
        let bomb = zstd::bulk::compress(&vec![0u8; 16 << 20], 3).unwrap();
        let mut file = good.clone();
        file.extend_from_slice(&bomb);
        file.extend_from_slice(&encode_table(&[
            (good.len() as u32, FRAME_RAW as u32),
            (bomb.len() as u32, FRAME_RAW as u32),
        ]));
        let mut src = Decoding(ReaderSource::new(std::io::Cursor::new(file), "x.img.zst"));
        let frame = |index, offset, len| Frame {
            index,
            offset,
            len,
            raw_offset: index * FRAME_RAW,
            raw_len: FRAME_RAW,
        };
        let (head, data, end) = ask(&mut src, &Request::Frame(frame(0, 0, good.len() as u64)));
        assert_eq!(head, format!("OK {FRAME_RAW}\n"));
        assert!(data == raw, "the frame decoded to other bytes");
        assert_eq!(end, "END\n");
        let (_, data, end) = ask(
            &mut src,
            &Request::Frame(frame(1, good.len() as u64, bomb.len() as u64)),
        );
        assert!(data.is_empty());
        assert_eq!(
            end,
            "ERR permanent frame 1 decompresses to more than its 262144 bytes: refused\n"
        );
    }

    #[test]
    fn lines_round_trip() {
        for r in [
            Request::Len,
            Request::Range { off: 7, len: 4096 },
            Request::Stream,
            Request::Next { max: 65536 },
            Request::Frame(Frame {
                index: 3,
                offset: 9000,
                len: 4000,
                raw_offset: 3 * stele_engine::delta::zst::FRAME_RAW,
                raw_len: 262_144,
            }),
            Request::Chain {
                frame: Frame {
                    index: 2,
                    offset: 70_000,
                    len: 60_000,
                    raw_offset: 2 * stele_engine::delta::lzc::FRAME_RAW,
                    raw_len: stele_engine::delta::lzc::FRAME_RAW,
                },
                prime_off: stele_engine::delta::lzc::FRAME_RAW,
                prime_len: stele_engine::delta::lzc::FRAME_RAW,
            },
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

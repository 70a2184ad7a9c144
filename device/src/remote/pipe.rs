//! The device's side of the fetch protocol: a [`RangeSource`] that runs the fetch client
//! (`stele-fetch URL`, from the verified root) and talks to it over its stdin/stdout. A
//! client that dies is started again on the next request (a transient error meanwhile).
//!
//! The client is run from a descriptor opened inside the verified image
//! (crate::runtime::verified::Lower::open_file), as `/proc/self/fd/N`: the kernel execs the very
//! file that descriptor holds, so nothing changed on the overlay or the data partition
//! after the open can take its place. (std's Command has no fexecve; a magic link of the
//! parent's own descriptor is what glibc's fexecve falls back to. The descriptor is
//! close-on-exec: the kernel opens an ELF binary before it closes those, so the client
//! starts and does not inherit it.)

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use stele_engine::delta::lzc::Prime;
use stele_engine::delta::published::PatchFrame;
use stele_engine::delta::zst::Frame;
use stele_engine::delta::{FetchError, RangeSource, Sink};

use super::protocol::{parse_reply, Reply, Request, MAX_CHUNK};

/// A running fetch client.
struct Running {
    child: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // Closing its stdin ends a client waiting for a request; one in the middle of a
        // transfer is killed.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The fetch client: its open executable and the path it was opened as (its `argv[0]`
/// and its name in messages).
#[derive(Debug)]
pub struct Program {
    pub file: File,
    pub path: PathBuf,
}

/// The fetch client `program` serving `url`.
pub struct PipeSource {
    program: Program,
    args: Vec<String>,
    url: String,
    running: Option<Running>,
    len: Option<u64>,
}

impl std::fmt::Debug for PipeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PipeSource({} {})",
            self.program.path.display(),
            self.url
        )
    }
}

fn broken(why: impl std::fmt::Display) -> FetchError {
    FetchError::transient(format!("the fetch client stopped: {why}"))
}

impl PipeSource {
    /// A source that runs `program ARGS... URL` when first asked.
    pub fn new(program: Program, args: Vec<String>, url: &str) -> Self {
        PipeSource {
            program,
            args,
            url: url.to_string(),
            running: None,
            len: None,
        }
    }

    fn client(&mut self) -> Result<&mut Running, FetchError> {
        if self.running.is_none() {
            let exe = Path::new("/proc/self/fd").join(self.program.file.as_raw_fd().to_string());
            let mut child = Command::new(exe)
                .arg0(&self.program.path)
                .args(&self.args)
                .arg(&self.url)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| FetchError::Permanent {
                    why: format!(
                        "cannot run the fetch client {}: {e}",
                        self.program.path.display()
                    ),
                })?;
            let (Some(to), Some(from)) = (child.stdin.take(), child.stdout.take()) else {
                return Err(broken("no pipes"));
            };
            self.running = Some(Running {
                child,
                to,
                from: BufReader::with_capacity(MAX_CHUNK + 64, from),
            });
        }
        self.running.as_mut().ok_or_else(|| broken("not running"))
    }

    /// Sends `req`; reads one reply line. Any pipe failure drops the client.
    fn ask(&mut self, req: Request) -> Result<Reply, FetchError> {
        self.ask_with(req, &mut std::io::empty(), 0)
    }

    /// Sends `req` and `len` bytes of `payload` after its line; reads one reply line. A
    /// payload that cannot be read whole ends the client (it would wait for the rest).
    fn ask_with(
        &mut self,
        req: Request,
        payload: &mut dyn Read,
        len: u64,
    ) -> Result<Reply, FetchError> {
        // A request sent in part (its payload could not be read whole): the client waits
        // for the rest, out of step.
        let mut out_of_step = false;
        let r = (|| {
            let c = self.client()?;
            c.to.write_all(req.line().as_bytes()).map_err(broken)?;
            match std::io::copy(&mut payload.take(len), &mut c.to) {
                Ok(n) if n == len => {}
                Ok(n) => {
                    out_of_step = true;
                    return Err(FetchError::Permanent {
                        why: format!("only {n} of the {len} bytes to send could be read"),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Err(broken(e)),
                Err(e) => {
                    out_of_step = true;
                    return Err(FetchError::Permanent {
                        why: format!("reading the bytes to send: {e}"),
                    });
                }
            }
            c.to.flush().map_err(broken)?;
            read_reply(&mut c.from)
        })();
        if out_of_step {
            self.running = None;
        }
        if matches!(r, Err(FetchError::Transient { .. })) && self.is_broken() {
            self.running = None;
        }
        r
    }

    fn is_broken(&mut self) -> bool {
        match &mut self.running {
            Some(r) => !matches!(r.child.try_wait(), Ok(None)),
            None => true,
        }
    }

    fn data(&mut self, n: usize, buf: &mut [u8]) -> Result<(), FetchError> {
        let r = match &mut self.running {
            Some(c) => c.from.read_exact(&mut buf[..n]).map_err(broken),
            None => Err(broken("not running")),
        };
        if r.is_err() {
            self.running = None;
        }
        r
    }
}

fn read_reply(from: &mut BufReader<ChildStdout>) -> Result<Reply, FetchError> {
    let mut line = String::new();
    match from.read_line(&mut line) {
        Ok(0) => Err(broken("it exited")),
        Ok(_) => parse_reply(&line).ok_or_else(|| FetchError::Permanent {
            why: format!(
                "the fetch client sent a malformed line {:?}",
                line.trim_end()
            ),
        }),
        Err(e) => Err(broken(e)),
    }
}

impl RangeSource for PipeSource {
    fn name(&self) -> String {
        self.url.clone()
    }

    fn len(&mut self) -> Result<u64, FetchError> {
        if let Some(l) = self.len {
            return Ok(l);
        }
        match self.ask(Request::Len)? {
            Reply::Ok(l) => {
                self.len = Some(l);
                Ok(l)
            }
            Reply::Err(e) => Err(e),
            other => Err(broken(format!("unexpected reply {other:?}"))),
        }
    }

    fn read_range(&mut self, off: u64, len: u64, sink: Sink<'_>) -> Result<(), FetchError> {
        self.answer(Request::Range { off, len }, sink)
    }

    /// The fetch client fetches the frame and decodes it (`stele` links no decoder).
    fn read_frame(&mut self, frame: &Frame, sink: Sink<'_>) -> Result<(), FetchError> {
        self.answer(Request::Frame(*frame), sink)
    }

    /// The fetch client fetches the delta frame and decodes it against the reference read
    /// here from the running slot (`stele` links no decoder).
    fn read_patch(
        &mut self,
        frame: &PatchFrame,
        block_size: u64,
        reference: &[u8],
        sink: Sink<'_>,
    ) -> Result<(), FetchError> {
        let req = Request::Patch {
            frame: *frame,
            block_size,
        };
        self.answer_with(req, &mut &reference[..], reference.len() as u64, sink)
    }

    /// The fetch client fetches the chained frame and decodes it after the priming read
    /// here from the target slot (`stele` links no decoder); it keeps its decoder from one
    /// frame to the next.
    fn read_chain(
        &mut self,
        frame: &Frame,
        prime: Prime<'_>,
        sink: Sink<'_>,
    ) -> Result<(), FetchError> {
        let req = Request::Chain {
            frame: *frame,
            prime_off: prime.off,
            prime_len: prime.len,
        };
        self.answer_with(req, prime.bytes, prime.len, sink)
    }

    fn start_stream(&mut self) -> Result<(), FetchError> {
        match self.ask(Request::Stream)? {
            Reply::Ok(l) => {
                self.len = Some(l);
                Ok(())
            }
            Reply::Err(e) => Err(e),
            other => Err(broken(format!("unexpected reply {other:?}"))),
        }
    }

    fn read_stream(&mut self, buf: &mut [u8]) -> Result<usize, FetchError> {
        let max = buf.len().min(MAX_CHUNK) as u64;
        match self.ask(Request::Next { max })? {
            Reply::Data(n) if n <= buf.len() => {
                self.data(n, buf)?;
                Ok(n)
            }
            Reply::End => Ok(0),
            Reply::Err(e) => Err(e),
            other => {
                self.running = None;
                Err(broken(format!("unexpected reply {other:?}")))
            }
        }
    }
}

impl PipeSource {
    /// Sends `req` and hands its `DATA` chunks to `sink` until `END`.
    fn answer(&mut self, req: Request, sink: Sink<'_>) -> Result<(), FetchError> {
        self.answer_with(req, &mut std::io::empty(), 0, sink)
    }

    /// [`PipeSource::answer`] with `payload` sent after the request line.
    fn answer_with(
        &mut self,
        req: Request,
        payload: &mut dyn Read,
        len: u64,
        sink: Sink<'_>,
    ) -> Result<(), FetchError> {
        match self.ask_with(req, payload, len)? {
            Reply::Ok(_) => {}
            Reply::Err(e) => return Err(e),
            other => return Err(broken(format!("unexpected reply {other:?}"))),
        }
        let mut buf = vec![0u8; MAX_CHUNK];
        loop {
            let reply = match &mut self.running {
                Some(c) => read_reply(&mut c.from),
                None => Err(broken("not running")),
            };
            match reply {
                Ok(Reply::Data(n)) => {
                    self.data(n, &mut buf)?;
                    if sink(&buf[..n]).is_err() {
                        // The rest of the answer is still on its way: start afresh.
                        self.running = None;
                        return Err(FetchError::Aborted);
                    }
                }
                Ok(Reply::End) => return Ok(()),
                Ok(Reply::Err(e)) => return Err(e),
                Ok(other) => {
                    self.running = None;
                    return Err(broken(format!("unexpected reply {other:?}")));
                }
                Err(e) => {
                    self.running = None;
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::verified::Lower;
    use stele_engine::delta::lzc::Prime;
    use stele_verifier::layout::FETCH_CLIENT;

    /// A priming that cannot be read whole is never sent in part: the client, which would
    /// wait for the rest, is ended, and the next request starts another one.
    #[test]
    fn a_payload_read_short_ends_the_client() {
        let d = tempfile::tempdir().unwrap();
        let at = d.path().join(FETCH_CLIENT.trim_start_matches('/'));
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::copy("/bin/sh", &at).unwrap();
        let lower = Lower::open(d.path(), "/var").unwrap();
        let program = Program {
            file: lower.open_file(FETCH_CLIENT).unwrap().unwrap(),
            path: at,
        };
        // Answers every line with its own pid: a new client answers with another.
        let script = "while read -r l; do echo \"OK $$\"; done".to_string();
        let mut src = PipeSource::new(program, vec!["-c".into(), script], "http://x/i.img");
        let first = src.len().unwrap();
        src.len = None;
        assert_eq!(src.len().unwrap(), first, "the same client");
        let frame = Frame {
            index: 1,
            offset: 0,
            len: 10,
            raw_offset: stele_engine::delta::lzc::FRAME_RAW,
            raw_len: 4096,
        };
        let mut short: &[u8] = &[1, 2, 3];
        let prime = Prime {
            off: 0,
            len: 100,
            bytes: &mut short,
        };
        let e = src.read_chain(&frame, prime, &mut |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("only 3 of the 100 bytes"), "{e}");
        src.len = None;
        assert_ne!(src.len().unwrap(), first, "the client out of step was kept");
    }

    /// The client runs from the descriptor opened inside the verified layer: a file put in
    /// its place afterwards is not what runs.
    #[test]
    fn the_fetch_client_runs_from_the_descriptor_opened_in_the_image() {
        let d = tempfile::tempdir().unwrap();
        let at = d.path().join(FETCH_CLIENT.trim_start_matches('/'));
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::fs::copy("/bin/sh", &at).unwrap();
        let lower = Lower::open(d.path(), "/var").unwrap();
        let file = lower.open_file(FETCH_CLIENT).unwrap().unwrap();
        let swapped = d.path().join("swapped");
        std::fs::copy("/bin/false", &swapped).unwrap();
        std::fs::rename(&swapped, &at).unwrap();
        let program = Program {
            file,
            path: at.clone(),
        };
        let script = "read -r request; echo \"ran $0: $request\"".to_string();
        let mut src = PipeSource::new(program, vec!["-c".into(), script], "http://x/i.img");
        let e = src.len().unwrap_err();
        assert_eq!(
            e.to_string(),
            FetchError::Permanent {
                why: "the fetch client sent a malformed line \"ran http://x/i.img: LEN\"".into()
            }
            .to_string()
        );
    }
}

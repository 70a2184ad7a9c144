//! How command bytes reach a TPM: [`Transport`] sends one command and returns its
//! response. [`Channel`] does it over anything readable and writable: the kernel's TPM
//! device (one write, one read: the kernel hands the whole response to one read) or
//! swtpm's command socket (a byte stream: the header's size says where it ends).

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::Path;

use crate::command::{announced_size, MAX_MESSAGE};
use crate::{Error, Result};

/// The kernel's TPM devices, in order of preference: the resource manager (it may be
/// shared with other programs), then the raw device.
pub const DEVICES: [&str; 2] = ["/dev/tpmrm0", "/dev/tpm0"];

/// Sends one command and returns the TPM's response.
pub trait Transport {
    /// One command, one response.
    fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>>;
}

/// A TPM reached through `S` (a [`File`] for the kernel's device, a `UnixStream` for
/// swtpm); `name` is what errors call it.
#[derive(Debug)]
pub struct Channel<S> {
    io: S,
    name: String,
}

impl<S: Read + Write> Channel<S> {
    /// A channel over `io`, called `name` in errors.
    pub fn new(io: S, name: impl Into<String>) -> Self {
        Channel {
            io,
            name: name.into(),
        }
    }
}

impl<S: Read + Write> Transport for Channel<S> {
    fn transact(&mut self, command: &[u8]) -> Result<Vec<u8>> {
        self.io
            .write_all(command)
            .map_err(|e| Error::io("write", &self.name, e))?;
        let mut resp = vec![0u8; MAX_MESSAGE];
        let mut have = 0;
        loop {
            let want = announced_size(&resp[..have]).unwrap_or(10).min(MAX_MESSAGE);
            if have >= want {
                break;
            }
            match self.io.read(&mut resp[have..]) {
                Ok(0) => {
                    let e = std::io::Error::new(
                        ErrorKind::UnexpectedEof,
                        format!("the TPM closed the channel after {have} of {want} bytes"),
                    );
                    return Err(Error::io("read", &self.name, e));
                }
                Ok(n) => have += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("read", &self.name, e)),
            }
        }
        resp.truncate(have);
        Ok(resp)
    }
}

/// Opens the first of [`DEVICES`] that exists (read-write); `None` when neither does.
pub fn open_device() -> Result<Option<Channel<File>>> {
    for d in DEVICES {
        if !Path::new(d).exists() {
            continue;
        }
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(d)
            .map_err(|e| Error::io("open", d, e))?;
        return Ok(Some(Channel::new(f, d)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A stream that returns a response in small pieces, as a socket may.
    struct Trickle {
        out: Vec<u8>,
        input: Cursor<Vec<u8>>,
    }
    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(3);
            self.input.read(&mut buf[..n])
        }
    }
    impl Write for Trickle {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.out.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn reads_exactly_the_announced_response() {
        // Two responses back to back: the first read stops at its announced size.
        let one = [0x80, 0x01, 0, 0, 0, 12, 0, 0, 0, 0, 0xaa, 0xbb];
        let two = [0x80, 0x01, 0, 0, 0, 10, 0, 0, 0x01, 0x8b];
        let mut input = one.to_vec();
        input.extend_from_slice(&two);
        let mut ch = Channel::new(
            Trickle {
                out: Vec::new(),
                input: Cursor::new(input),
            },
            "test",
        );
        assert_eq!(ch.transact(b"cmd1").unwrap(), one);
        assert_eq!(ch.transact(b"cmd2").unwrap(), two);
        assert_eq!(ch.io.out, b"cmd1cmd2");
        // A channel that ends early names where.
        let e = ch.transact(b"cmd3").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("read test failed: the TPM closed the channel after 0 of 10 bytes"),
            "{e}"
        );
    }
}

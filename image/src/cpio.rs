//! A deterministic newc ("070701") cpio writer for initramfs archives.
//!
//! Entries are kept sorted by path, so the same set of entries always gives the same
//! bytes: mtime fixed by the caller, uid/gid 0, inode numbers 1, 2, 3, ... in path order,
//! parent directories created (mode 0755) when missing. The archive ends with `TRAILER!!!`.

use std::collections::BTreeMap;
use std::io::{self, Write};
use stele_verifier::exit::{Exit, Report};

/// What went wrong while building or writing an archive.
#[derive(Debug, thiserror::Error)]
pub enum CpioError {
    /// A path that cannot be stored (empty, `.`/`..` components, NUL bytes).
    #[error("invalid cpio path {path:?}: {why}")]
    BadPath { path: String, why: &'static str },
    /// A value does not fit the 32-bit fields of the newc format.
    #[error("cpio entry {path:?}: {what} {value} does not fit the 32-bit newc field")]
    TooLarge {
        path: String,
        what: &'static str,
        value: u64,
    },
    /// Two different kinds of entry at one path, or an entry below a non-directory.
    #[error("cpio path {path:?}: {why}")]
    Conflict { path: String, why: String },
    /// Writing the archive failed.
    #[error("failed to write the cpio archive: {0}")]
    Io(#[from] io::Error),
}

impl Report for CpioError {
    /// A failed write is the environment; a path or size the format cannot hold is the
    /// input.
    fn exit(&self) -> Exit {
        match self {
            CpioError::Io(_) => Exit::Environment,
            _ => Exit::Usage,
        }
    }
}

/// The kind and payload of one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file and its content.
    File(Vec<u8>),
    /// A directory.
    Dir,
    /// A symbolic link and its target.
    Symlink(String),
    /// A character device node.
    CharDev { major: u32, minor: u32 },
}

/// One entry: permission bits (the low 12 bits of the mode) and its kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub perm: u32,
    pub kind: EntryKind,
}

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

impl Entry {
    /// The full st_mode (file type bits | permission bits).
    pub fn mode(&self) -> u32 {
        let ty = match self.kind {
            EntryKind::File(_) => S_IFREG,
            EntryKind::Dir => S_IFDIR,
            EntryKind::Symlink(_) => S_IFLNK,
            EntryKind::CharDev { .. } => S_IFCHR,
        };
        ty | (self.perm & 0o7777)
    }
}

/// An archive being built. Paths are relative (`etc/stele/boot.toml`); a leading `/` is
/// accepted and removed.
#[derive(Clone, Debug, Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
    mtime: u32,
}

fn normalize(path: &str) -> Result<String, CpioError> {
    let bad = |why| CpioError::BadPath {
        path: path.to_string(),
        why,
    };
    let p = path.trim_start_matches('/');
    if p.is_empty() {
        return Err(bad("empty path"));
    }
    if p.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    for c in p.split('/') {
        match c {
            "" => return Err(bad("empty path component")),
            "." | ".." => return Err(bad("`.` and `..` components are not allowed")),
            _ => {}
        }
    }
    Ok(p.to_string())
}

impl Archive {
    /// An empty archive whose entries all get modification time `mtime` (seconds).
    pub fn new(mtime: u32) -> Self {
        Archive {
            entries: BTreeMap::new(),
            mtime,
        }
    }

    /// Converts a SOURCE_DATE_EPOCH-style value to a newc mtime.
    pub fn mtime_from_epoch(epoch: u64) -> Result<u32, CpioError> {
        u32::try_from(epoch).map_err(|_| CpioError::TooLarge {
            path: String::from("(archive)"),
            what: "mtime",
            value: epoch,
        })
    }

    /// Adds (or replaces) an entry, creating missing parent directories with mode 0755.
    pub fn add(&mut self, path: &str, entry: Entry) -> Result<(), CpioError> {
        let p = normalize(path)?;
        if let EntryKind::File(data) = &entry.kind {
            let len = data.len() as u64;
            if u32::try_from(len).is_err() {
                return Err(CpioError::TooLarge {
                    path: p,
                    what: "file size",
                    value: len,
                });
            }
        }
        // Parents: must be directories (created if missing).
        let mut parent = String::new();
        let comps: Vec<&str> = p.split('/').collect();
        for c in &comps[..comps.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(c);
            match self.entries.get(&parent) {
                None => {
                    self.entries.insert(
                        parent.clone(),
                        Entry {
                            perm: 0o755,
                            kind: EntryKind::Dir,
                        },
                    );
                }
                Some(e) if e.kind == EntryKind::Dir => {}
                Some(_) => {
                    return Err(CpioError::Conflict {
                        path: p,
                        why: format!("parent {parent:?} is not a directory"),
                    })
                }
            }
        }
        if let Some(old) = self.entries.get(&p) {
            let was_dir = old.kind == EntryKind::Dir;
            let is_dir = entry.kind == EntryKind::Dir;
            if was_dir != is_dir {
                return Err(CpioError::Conflict {
                    path: p,
                    why: String::from("added both as a directory and as a non-directory"),
                });
            }
        }
        self.entries.insert(p, entry);
        Ok(())
    }

    /// Adds a regular file.
    pub fn add_file(&mut self, path: &str, perm: u32, data: Vec<u8>) -> Result<(), CpioError> {
        self.add(
            path,
            Entry {
                perm,
                kind: EntryKind::File(data),
            },
        )
    }

    /// Adds a directory (sets its mode if it already exists).
    pub fn add_dir(&mut self, path: &str, perm: u32) -> Result<(), CpioError> {
        self.add(
            path,
            Entry {
                perm,
                kind: EntryKind::Dir,
            },
        )
    }

    /// Adds a symbolic link (mode 0777).
    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<(), CpioError> {
        self.add(
            path,
            Entry {
                perm: 0o777,
                kind: EntryKind::Symlink(target.to_string()),
            },
        )
    }

    /// Adds a character device node.
    pub fn add_char_dev(
        &mut self,
        path: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        self.add(
            path,
            Entry {
                perm,
                kind: EntryKind::CharDev { major, minor },
            },
        )
    }

    /// The entries, in archive order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Writes the archive (entries in path order, then the trailer).
    pub fn write<W: Write>(&self, w: &mut W) -> Result<(), CpioError> {
        let mut pos: u64 = 0;
        for (ino, (path, e)) in (1u32..).zip(self.entries.iter()) {
            let (data, nlink, rdev): (&[u8], u32, (u32, u32)) = match &e.kind {
                EntryKind::File(d) => (d.as_slice(), 1, (0, 0)),
                EntryKind::Dir => (&[], 2, (0, 0)),
                EntryKind::Symlink(t) => (t.as_bytes(), 1, (0, 0)),
                EntryKind::CharDev { major, minor } => (&[], 1, (*major, *minor)),
            };
            let fields = Header {
                ino,
                mode: e.mode(),
                nlink,
                mtime: self.mtime,
                rdev,
            };
            write_entry(w, &mut pos, path, &fields, data)?;
        }
        let trailer = Header {
            ino: 0,
            mode: 0,
            nlink: 1,
            mtime: 0,
            rdev: (0, 0),
        };
        write_entry(w, &mut pos, "TRAILER!!!", &trailer, &[])?;
        Ok(())
    }

    /// The archive as bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CpioError> {
        let mut v = Vec::new();
        self.write(&mut v)?;
        Ok(v)
    }
}

struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    rdev: (u32, u32),
}

fn pad4<W: Write>(w: &mut W, pos: &mut u64) -> io::Result<()> {
    let n = (4 - (*pos % 4)) % 4;
    if n > 0 {
        w.write_all(&[0u8; 3][..n as usize])?;
        *pos += n;
    }
    Ok(())
}

fn write_entry<W: Write>(
    w: &mut W,
    pos: &mut u64,
    name: &str,
    h: &Header,
    data: &[u8],
) -> Result<(), CpioError> {
    let too_large = |value: u64| CpioError::TooLarge {
        path: name.to_string(),
        what: "size",
        value,
    };
    let filesize = u32::try_from(data.len()).map_err(|_| too_large(data.len() as u64))?;
    let namesize = u32::try_from(name.len() + 1).map_err(|_| too_large(name.len() as u64))?;
    let header = format!(
        "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
        h.ino, h.mode, 0, 0, h.nlink, h.mtime, filesize, 0, 0, h.rdev.0, h.rdev.1, namesize, 0
    );
    w.write_all(header.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    *pos += header.len() as u64 + u64::from(namesize);
    pad4(w, pos)?;
    w.write_all(data)?;
    *pos += data.len() as u64;
    pad4(w, pos)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn field(hdr: &[u8], i: usize) -> u32 {
        let s = std::str::from_utf8(&hdr[6 + 8 * i..14 + 8 * i]).unwrap();
        u32::from_str_radix(s, 16).unwrap()
    }

    /// (name, mode, ino, mtime, rdevmajor, rdevminor, data)
    type Parsed = (String, u32, u32, u32, u32, u32, Vec<u8>);

    /// Minimal newc reader for the tests.
    fn parse(bytes: &[u8]) -> Vec<Parsed> {
        let mut out = Vec::new();
        let mut p = 0usize;
        loop {
            let h = &bytes[p..p + 110];
            assert_eq!(&h[..6], b"070701");
            let namesize = field(h, 11) as usize;
            let filesize = field(h, 6) as usize;
            let name = String::from_utf8(bytes[p + 110..p + 110 + namesize - 1].to_vec()).unwrap();
            assert_eq!(bytes[p + 110 + namesize - 1], 0);
            p += 110 + namesize;
            p = p.next_multiple_of(4);
            let data = bytes[p..p + filesize].to_vec();
            p += filesize;
            p = p.next_multiple_of(4);
            if name == "TRAILER!!!" {
                assert_eq!(p, bytes.len());
                return out;
            }
            out.push((
                name,
                field(h, 1),
                field(h, 0),
                field(h, 5),
                field(h, 9),
                field(h, 10),
                data,
            ));
        }
    }

    fn sample() -> Archive {
        let mut a = Archive::new(1234);
        a.add_file("/init", 0o755, b"#!/bin/sh\necho hi\n".to_vec())
            .unwrap();
        a.add_file("etc/stele/keys/k.pem", 0o644, b"x".to_vec())
            .unwrap();
        a.add_dir("dev", 0o755).unwrap();
        a.add_char_dev("dev/console", 0o600, 5, 1).unwrap();
        a.add_symlink("bin/sh", "busybox").unwrap();
        a.add_file("bin/busybox", 0o755, vec![7u8; 5]).unwrap();
        a
    }

    #[test]
    fn layout_sorted_sequential_padded() {
        let bytes = sample().to_bytes().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let entries = parse(&bytes);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/busybox",
                "bin/sh",
                "dev",
                "dev/console",
                "etc",
                "etc/stele",
                "etc/stele/keys",
                "etc/stele/keys/k.pem",
                "init"
            ]
        );
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.2 as usize, i + 1, "inode of {}", e.0);
            assert_eq!(e.3, 1234);
        }
        let console = &entries[4];
        assert_eq!(console.1, 0o020_600);
        assert_eq!((console.4, console.5), (5, 1));
        let sh = &entries[2];
        assert_eq!(sh.1, 0o120_777);
        assert_eq!(sh.6, b"busybox");
        assert_eq!(entries[0].1, 0o040_755);
        assert_eq!(entries[9].6, b"#!/bin/sh\necho hi\n");
    }

    #[test]
    fn deterministic_regardless_of_insertion_order() {
        let a = sample().to_bytes().unwrap();
        let mut b = Archive::new(1234);
        b.add_file("bin/busybox", 0o755, vec![7u8; 5]).unwrap();
        b.add_symlink("bin/sh", "busybox").unwrap();
        b.add_char_dev("dev/console", 0o600, 5, 1).unwrap();
        b.add_file("etc/stele/keys/k.pem", 0o644, b"x".to_vec())
            .unwrap();
        b.add_file("init", 0o755, b"#!/bin/sh\necho hi\n".to_vec())
            .unwrap();
        assert_eq!(a, b.to_bytes().unwrap());
    }

    #[test]
    fn rejects_bad_paths_and_conflicts() {
        let mut a = Archive::new(0);
        for p in ["", "/", "a/../b", "a//b", "./a", "a\0b"] {
            assert!(
                matches!(a.add_dir(p, 0o755), Err(CpioError::BadPath { .. })),
                "{p:?}"
            );
        }
        a.add_file("f", 0o644, vec![]).unwrap();
        assert!(matches!(
            a.add_file("f/g", 0o644, vec![]),
            Err(CpioError::Conflict { .. })
        ));
        assert!(matches!(
            a.add_dir("f", 0o755),
            Err(CpioError::Conflict { .. })
        ));
        assert!(Archive::mtime_from_epoch(1 << 33).is_err());
    }

    #[test]
    fn trailer_only_archive() {
        let bytes = Archive::new(0).to_bytes().unwrap();
        assert!(parse(&bytes).is_empty());
        assert_eq!(&bytes[110..121], b"TRAILER!!!\0");
    }

    fn cpio_tool() -> &'static str {
        if Command::new("cpio").arg("--version").output().is_err() {
            panic!("the `cpio` tool is missing: run `cargo xtask setup`");
        }
        "cpio"
    }

    #[test]
    fn round_trip_through_cpio_tool() {
        let tool = cpio_tool();
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.cpio");
        let mut a = sample();
        a.add_file(
            "data/big",
            0o640,
            (0..10_001u32).map(|i| (i % 251) as u8).collect(),
        )
        .unwrap();
        std::fs::write(&archive, a.to_bytes().unwrap()).unwrap();

        let list = Command::new(tool)
            .args(["-t", "--quiet", "-F"])
            .arg(&archive)
            .output()
            .unwrap();
        assert!(list.status.success(), "{list:?}");
        let listed = String::from_utf8(list.stdout).unwrap();
        let expected: Vec<&str> = a.entries().map(|(p, _)| p).collect();
        assert_eq!(listed.lines().collect::<Vec<_>>(), expected);

        // Extract (without device nodes: creating them needs root) and compare.
        let out = dir.path().join("x");
        std::fs::create_dir(&out).unwrap();
        let ex = Command::new(tool)
            .current_dir(&out)
            .args(["-i", "-d", "--quiet", "--no-absolute-filenames", "-F"])
            .arg(&archive)
            .arg("--nonmatching")
            .arg("dev/console")
            .output()
            .unwrap();
        assert!(ex.status.success(), "{ex:?}");
        use std::os::unix::fs::PermissionsExt;
        for (path, e) in a.entries() {
            let p = out.join(path);
            match &e.kind {
                EntryKind::File(d) => {
                    assert_eq!(&std::fs::read(&p).unwrap(), d, "{path}");
                    let m = std::fs::metadata(&p).unwrap();
                    assert_eq!(m.permissions().mode() & 0o777, e.perm, "{path}");
                }
                EntryKind::Dir => assert!(p.is_dir(), "{path}"),
                EntryKind::Symlink(t) => {
                    assert_eq!(std::fs::read_link(&p).unwrap().to_str().unwrap(), t)
                }
                EntryKind::CharDev { .. } => {}
            }
        }
    }
}

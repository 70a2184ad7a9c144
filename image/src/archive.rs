//! Reading a root filesystem from a tar archive (`--rootfs-tar`): every member checked and
//! normalised before anyone writes it anywhere.
//!
//! Paths are made relative (a leading `/` or `./` is dropped); a member whose path or hard
//! link target has a `..` component, or that lies below a symlink or a file of the
//! archive, is refused, as are member types no filesystem image holds (PAX sparse files,
//! GNU volume headers, ...). Owners are the numeric uid/gid (PAX `uid`/`gid` records win
//! over the header), xattrs the PAX `SCHILY.xattr.*` records, sorted by name. A later
//! member with the same path replaces the earlier one, as `tar -x` does.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::{Error, Result};

/// The longest file name (one path component) the filesystems take.
pub const NAME_MAX: usize = 255;

/// What a member is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    File {
        size: u64,
    },
    Dir,
    Symlink(PathBuf),
    /// A hard link to an earlier member (relative path).
    HardLink(PathBuf),
    Char {
        major: u32,
        minor: u32,
    },
    Block {
        major: u32,
        minor: u32,
    },
    Fifo,
}

/// One checked member of the archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Relative and normalised; empty for the root directory itself (`./`).
    pub path: PathBuf,
    pub kind: Kind,
    /// Permission bits with setuid, setgid and sticky (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// `(name, value)`, sorted by name.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

fn bad(why: String) -> Error {
    Error::invalid("--rootfs-tar", why)
}

/// An I/O error from the archive: a damaged or non-tar input is the user's, the rest the
/// environment's.
fn read_error(e: std::io::Error) -> Error {
    use std::io::ErrorKind::{InvalidData, InvalidInput, Other, UnexpectedEof};
    match e.kind() {
        InvalidData | InvalidInput | UnexpectedEof | Other => bad(format!(
            "the archive is damaged, truncated or not an (uncompressed) tar archive: {e}"
        )),
        _ => Error::io("read", "the tar archive", e),
    }
}

/// A member path made relative; refused when it leaves the root or has an overlong name.
pub fn normalise(raw: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                return Err(bad(format!(
                    "member {} leaves the root (it has a `..` component); rebuild the archive with paths inside the root",
                    raw.display()
                )))
            }
            Component::Normal(n) => {
                if n.len() > NAME_MAX {
                    return Err(bad(format!(
                        "member {}: a name is longer than {NAME_MAX} bytes, which no filesystem image holds",
                        raw.display()
                    )));
                }
                out.push(n);
            }
        }
    }
    Ok(out)
}

/// What earlier members were, to judge later ones.
#[derive(Debug, Default)]
struct Seen {
    kinds: HashMap<PathBuf, Tag>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tag {
    Dir,
    Symlink,
    Other,
}

impl Seen {
    fn check(&mut self, m: &Member) -> Result<()> {
        for parent in m.path.ancestors().skip(1) {
            match self.kinds.get(parent) {
                Some(Tag::Symlink) => {
                    return Err(bad(format!(
                        "member {} lies below {}, which is a symlink in the archive; stele does not follow links while unpacking",
                        m.path.display(),
                        parent.display()
                    )))
                }
                Some(Tag::Other) => {
                    return Err(bad(format!(
                        "member {} lies below {}, which is not a directory",
                        m.path.display(),
                        parent.display()
                    )))
                }
                _ => {}
            }
        }
        if let Kind::HardLink(target) = &m.kind {
            if self.kinds.get(target) != Some(&Tag::Other) {
                return Err(bad(format!(
                    "hard link {} points to {}, which is not an earlier file of the archive",
                    m.path.display(),
                    target.display()
                )));
            }
        }
        let tag = match m.kind {
            Kind::Dir => Tag::Dir,
            Kind::Symlink(_) => Tag::Symlink,
            _ => Tag::Other,
        };
        if m.path.as_os_str().is_empty() && tag != Tag::Dir {
            return Err(bad("the archive's root member is not a directory".into()));
        }
        match self.kinds.insert(m.path.clone(), tag) {
            Some(Tag::Dir) if tag != Tag::Dir => Err(bad(format!(
                "member {} appears twice, first as a directory, then as something else",
                m.path.display()
            ))),
            _ => Ok(()),
        }
    }
}

/// Reads the archive from `r` and calls `f` with each checked member and a reader of its
/// data (empty except for files), in archive order. PAX global headers are skipped.
pub fn for_each<R: Read>(
    r: R,
    mut f: impl FnMut(&Member, &mut dyn Read) -> Result<()>,
) -> Result<()> {
    let mut archive = tar::Archive::new(r);
    let mut seen = Seen::default();
    for entry in archive.entries().map_err(read_error)? {
        let mut entry = entry.map_err(read_error)?;
        let Some(member) = member(&mut entry)? else {
            continue;
        };
        seen.check(&member)?;
        f(&member, &mut entry)?;
    }
    Ok(())
}

/// The member of a raw entry; `None` for entries that carry no file (global headers).
fn member<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Option<Member>> {
    use tar::EntryType as T;
    let raw = entry.path().map_err(read_error)?.into_owned();
    let path = normalise(&raw)?;
    let header = entry.header();
    let ty = header.entry_type();
    let num = |v: std::io::Result<u64>, what: &str| -> Result<u32> {
        let v = v.map_err(read_error)?;
        u32::try_from(v).map_err(|_| {
            bad(format!(
                "member {}: {what} {v} does not fit in 32 bits",
                raw.display()
            ))
        })
    };
    let mode = num(header.mode().map(u64::from), "mode")? & 0o7777;
    let uid = num(header.uid(), "uid")?;
    let gid = num(header.gid(), "gid")?;
    let dev = |h: &tar::Header| -> Result<(u32, u32)> {
        let major = h.device_major().map_err(read_error)?.unwrap_or(0);
        let minor = h.device_minor().map_err(read_error)?.unwrap_or(0);
        Ok((major, minor))
    };
    let link = |entry: &tar::Entry<'_, R>| -> Result<PathBuf> {
        match entry.link_name().map_err(read_error)? {
            Some(l) => Ok(l.into_owned()),
            None => Err(bad(format!("link {} has no target", raw.display()))),
        }
    };
    let kind = match ty {
        T::Regular | T::Continuous | T::GNUSparse => Kind::File { size: entry.size() },
        T::Directory => Kind::Dir,
        T::Symlink => Kind::Symlink(link(entry)?),
        T::Link => Kind::HardLink(normalise(&link(entry)?)?),
        T::Char => {
            let (major, minor) = dev(header)?;
            Kind::Char { major, minor }
        }
        T::Block => {
            let (major, minor) = dev(header)?;
            Kind::Block { major, minor }
        }
        T::Fifo => Kind::Fifo,
        T::XGlobalHeader => return Ok(None),
        other => {
            return Err(bad(format!(
                "member {} has tar type {:?} ({:?}), which no filesystem image holds",
                raw.display(),
                other,
                char::from(other.as_byte())
            )))
        }
    };
    let mut xattrs = Vec::new();
    if let Some(pax) = entry.pax_extensions().map_err(read_error)? {
        for ext in pax {
            let ext = ext.map_err(read_error)?;
            let key = ext.key().map_err(|_| {
                bad(format!(
                    "member {}: a PAX record name is not UTF-8",
                    raw.display()
                ))
            })?;
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
            } else if key.starts_with("GNU.sparse.") {
                return Err(bad(format!(
                    "member {} is stored in the PAX sparse format, which stele does not read; create the archive without --sparse",
                    raw.display()
                )));
            }
        }
    }
    xattrs.sort();
    xattrs.dedup_by(|a, b| a.0 == b.0);
    Ok(Some(Member {
        path,
        kind,
        mode,
        uid,
        gid,
        xattrs,
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `(path, type, data or link target)` of a test archive member.
    pub type Raw<'a> = (&'a str, tar::EntryType, &'a [u8]);

    /// A tar archive built with the tar crate.
    pub fn archive(members: &[Raw<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, ty, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*ty);
            h.set_mode(0o4755);
            h.set_uid(1000);
            h.set_gid(1001);
            // Raw names: the builder's own path checks would refuse what is tested here.
            let name = path.as_bytes();
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            match ty {
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    h.set_size(0);
                    let l = data;
                    h.as_old_mut().linkname[..l.len()].copy_from_slice(l);
                    h.set_cksum();
                    b.append(&h, &[][..]).unwrap();
                }
                _ => {
                    h.set_size(data.len() as u64);
                    h.set_cksum();
                    b.append(&h, *data).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn members(bytes: &[u8]) -> Result<Vec<Member>> {
        let mut out = Vec::new();
        for_each(bytes, |m, _| {
            out.push(m.clone());
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn paths_are_made_relative() {
        use tar::EntryType as T;
        let a = archive(&[
            ("./", T::Directory, b""),
            ("/etc/", T::Directory, b""),
            ("./etc/passwd", T::Regular, b"root:x:0:0::/root:/bin/sh\n"),
            ("etc/link", T::Symlink, b"/etc/passwd"),
            ("etc/hard", T::Link, b"/etc/passwd"),
        ]);
        let m = members(&a).unwrap();
        let paths: Vec<&Path> = m.iter().map(|m| m.path.as_path()).collect();
        let want: Vec<&Path> = ["", "etc", "etc/passwd", "etc/link", "etc/hard"]
            .iter()
            .map(Path::new)
            .collect();
        assert_eq!(paths, want);
        assert_eq!(m[2].kind, Kind::File { size: 26 });
        assert_eq!((m[2].uid, m[2].gid, m[2].mode), (1000, 1001, 0o4755));
        assert_eq!(m[3].kind, Kind::Symlink("/etc/passwd".into()));
        assert_eq!(m[4].kind, Kind::HardLink("etc/passwd".into()));
    }

    #[test]
    fn escapes_and_odd_members_are_refused() {
        use tar::EntryType as T;
        let cases: [(&[Raw<'_>], &str); 6] = [
            (&[("../evil", T::Regular, b"x")], "leaves the root"),
            (&[("a/../../evil", T::Regular, b"x")], "leaves the root"),
            (
                &[("l", T::Symlink, b"/etc"), ("l/passwd", T::Regular, b"x")],
                "symlink",
            ),
            (&[("h", T::Link, b"../etc/shadow")], "leaves the root"),
            (&[("h", T::Link, b"nothing")], "not an earlier file"),
            (&[("v", T::new(b'V'), b"")], "no filesystem image holds"),
        ];
        for (members_, needle) in cases {
            let e = members(&archive(members_)).unwrap_err();
            assert!(matches!(e, Error::Invalid { .. }), "{e}");
            assert!(e.to_string().contains(needle), "{needle}: {e}");
        }
        let e = members(
            b"this is not a tar archive, but it is long enough to look at. "
                .repeat(10)
                .as_slice(),
        )
        .unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }), "{e}");
    }

    /// A one-file archive whose member has the PAX records `pax`.
    pub fn pax_archive(pax: &[(&str, &[u8])], path: &str, data: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions(pax.iter().copied()).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mode(0o755);
        h.set_path(path).unwrap();
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn pax_xattrs_are_read_and_sorted() {
        let a = pax_archive(
            &[
                ("SCHILY.xattr.user.z", b"1"),
                ("SCHILY.xattr.security.capability", &[1u8, 0, 0, 2]),
                ("uid", b"3000000"),
            ],
            "bin/ping",
            b"x",
        );
        let m = members(&a).unwrap();
        assert_eq!(m[0].uid, 3_000_000);
        let names: Vec<&str> = m[0].xattrs.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(names, ["security.capability", "user.z"]);
    }
}

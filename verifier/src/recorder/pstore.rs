//! What the previous kernel left in pstore (docs/BOOT.md "Why the last boot ended"): the
//! names of the files of a mounted pstore filesystem and the dumps in them, turned into
//! one flight recorder event. The bytes were written by the previous kernel (and the
//! firmware keeps them): they are untrusted, so every function here is pure, bounded and
//! never panics.

use super::{head, tail, Kind, TEXT_MAX};

/// The most bytes of one pstore file read (its end: the newest lines). A ramoops record or
/// an EFI variable is a few KiB; the kernel's whole dump buffer is 10 KiB by default.
pub const READ_MAX: u64 = 64 * 1024;

/// A pstore file's name: `<type>-<backend>-<id>`, with `.enc.z` when the kernel could not
/// decompress it (fs/pstore/inode.c).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Name {
    /// `dmesg`, `console`, `pmsg`, `mce`, ...
    pub kind: String,
    /// `ramoops`, `efi`, ...
    pub backend: String,
    pub id: u64,
    /// Still compressed: the text is not readable.
    pub compressed: bool,
}

/// The longest file name taken (pstore's own are well under it).
const NAME_MAX: usize = 128;

/// Parses a pstore file name; `None` for anything else. Pure.
pub fn parse_name(name: &str) -> Option<Name> {
    if name.len() > NAME_MAX {
        return None;
    }
    let (stem, compressed) = match name.strip_suffix(".enc.z") {
        Some(s) => (s, true),
        None => (name, false),
    };
    let (rest, id) = stem.rsplit_once('-')?;
    let id = id.parse().ok()?;
    // The type names have no '-' but "powerpc-ofw"/"powerpc-common"; backends have none.
    let (kind, backend) = rest.rsplit_once('-')?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if !ok(kind) || !ok(backend) {
        return None;
    }
    Some(Name {
        kind: kind.to_owned(),
        backend: backend.to_owned(),
        id,
        compressed,
    })
}

/// Why the kernel wrote a dump: the first word of its header (`kmsg_dump_reason_str`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// A restart or power-off (only where the backend keeps them: ramoops `max_reason=4`).
    Shutdown,
    Emergency,
    Oops,
    Panic,
}

/// One dump: its header's reason and part, the headline and the last lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dump {
    pub reason: Reason,
    /// `#<n>`: the dump's number in its boot; the parts of one dump share it.
    pub count: u32,
    /// `Part<n>`: 1 holds the newest lines. A backend with small records (efi-pstore:
    /// 1 KiB) splits a dump, and the panic's line may be in part 2 or later.
    pub part: u32,
    /// The line that says what happened (prefix removed), where one is found: the panic's,
    /// the oops', or for a dm-verity restart the last `data block <n> is corrupted`.
    pub headline: Option<String>,
    /// Every line after the header, prefixes removed, in order.
    pub lines: Vec<String>,
}

/// The line a dm-verity corruption restart ends with (kernel/reboot.c `kernel_restart`
/// with dm-verity's command).
pub const VERITY_RESTART: &str = "Restarting system with command 'dm-verity device corrupted'";

/// The starts of the lines that name an oops (after the `<level>[time] ` prefix).
const OOPS_STARTS: [&str; 7] = [
    "BUG:",
    "Oops",
    "kernel BUG at",
    "general protection fault",
    "Unable to handle",
    "WARNING:",
    "watchdog: BUG:",
];

/// `line` without the syslog prefix `<level>` and the timestamp `[    1.234567] `. Pure.
pub fn strip_prefix(line: &str) -> &str {
    let mut s = line;
    if let Some(rest) = s.strip_prefix('<') {
        if let Some((level, after)) = rest.split_once('>') {
            if !level.is_empty() && level.len() <= 4 && level.bytes().all(|b| b.is_ascii_digit()) {
                s = after;
            }
        }
    }
    if let Some(rest) = s.strip_prefix('[') {
        if let Some((time, after)) = rest.split_once(']') {
            if time.len() <= 24
                && time
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b'.' || b == b' ' || b == b'T')
            {
                s = after.strip_prefix(' ').unwrap_or(after);
            }
        }
    }
    s.trim_end_matches('\r')
}

/// Parses a dump (`<Reason>#<n> Part<m>` then the kernel's log lines); `None` when the
/// header is not one. Invalid UTF-8 is replaced. Pure.
pub fn parse_dump(bytes: &[u8]) -> Option<Dump> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.lines();
    let header = lines.next()?;
    let (why, rest) = header.split_once('#')?;
    let reason = match why {
        "Panic" => Reason::Panic,
        "Oops" => Reason::Oops,
        "Emergency" => Reason::Emergency,
        "Shutdown" => Reason::Shutdown,
        _ => return None,
    };
    let (count, part) = rest.split_once(" Part")?;
    let count = count.parse::<u32>().ok()?;
    let part = part.trim_end().parse().ok()?;
    let lines: Vec<String> = lines
        .map(strip_prefix)
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    let find = |pred: &dyn Fn(&str) -> bool| lines.iter().find(|l| pred(l)).cloned();
    let oops = |l: &str| OOPS_STARTS.iter().any(|s| l.starts_with(s));
    let headline = match reason {
        Reason::Panic => find(&|l| l.starts_with("Kernel panic - ")).or_else(|| find(&oops)),
        Reason::Oops | Reason::Emergency => find(&oops),
        // A restart by dm-verity: its own line naming the block says the most.
        Reason::Shutdown if lines.iter().any(|l| l.contains(VERITY_RESTART)) => lines
            .iter()
            .rev()
            .find(|l| l.contains(" is corrupted"))
            .or_else(|| lines.iter().find(|l| l.contains(VERITY_RESTART)))
            .cloned(),
        Reason::Shutdown => None,
    };
    Some(Dump {
        reason,
        count,
        part,
        headline,
        lines,
    })
}

/// What the dumps found say about how the previous boot ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ending {
    pub kind: Kind,
    /// The headline, a newline, then the dump's last lines but the headline that fit (at
    /// most [`TEXT_MAX`]).
    pub text: String,
    /// The dumps found (files of kind `dmesg`, at most 255).
    pub dumps: u8,
}

/// The event kind of a dump: a panic, an oops (or emergency), a dm-verity corruption
/// restart; `None` for an orderly restart or power-off. Pure.
fn kind_of(d: &Dump) -> Option<Kind> {
    match d.reason {
        Reason::Panic => Some(Kind::Panic),
        Reason::Oops | Reason::Emergency => Some(Kind::Oops),
        Reason::Shutdown => d.headline.as_ref().map(|_| Kind::VerityRestart),
    }
}

/// The one ending to record from the dumps of a pstore (each with its file name): the
/// most severe (a panic before an oops before a dm-verity restart), its newest part 1,
/// with the headline of another part of the same dump when part 1 has none; `None` when
/// nothing says the boot ended abnormally. Pure.
pub fn ending(dumps: &[(Name, Dump)]) -> Option<Ending> {
    let rank = |k: Kind| match k {
        Kind::Panic => 3,
        Kind::VerityRestart => 2,
        _ => 1,
    };
    let (name, dump, kind) = dumps
        .iter()
        .filter_map(|(n, d)| kind_of(d).map(|k| (n, d, k)))
        .max_by_key(|(n, d, k)| (rank(*k), d.part == 1, n.id))?;
    let same_dump = |n: &Name, d: &Dump| {
        n.backend == name.backend && d.reason == dump.reason && d.count == dump.count
    };
    let headline = dump.headline.clone().or_else(|| {
        dumps
            .iter()
            .filter(|(n, d)| same_dump(n, d) && d.headline.is_some())
            .min_by_key(|(_, d)| d.part)
            .and_then(|(_, d)| d.headline.clone())
    });
    let headline = headline.unwrap_or_else(|| match dump.reason {
        Reason::Panic => "kernel panic".to_owned(),
        _ => "kernel oops".to_owned(),
    });
    let headline = head(&headline, TEXT_MAX).to_owned();
    let mut text = headline.clone();
    let room = TEXT_MAX.saturating_sub(text.len() + 1);
    // The last whole lines that fit, newest last.
    let mut last: Vec<&str> = Vec::new();
    let mut used = 0;
    for l in dump.lines.iter().rev() {
        if *l == headline {
            continue;
        }
        if used + l.len() + 1 > room {
            if last.is_empty() {
                last.push(tail(l, room.saturating_sub(1)));
            }
            break;
        }
        used += l.len() + 1;
        last.push(l);
    }
    if !last.is_empty() && room > 0 {
        last.reverse();
        text.push('\n');
        text.push_str(&last.join("\n"));
    }
    let text = head(&text, TEXT_MAX).to_owned();
    let found = dumps.iter().filter(|(n, _)| n.kind == "dmesg").count();
    Some(Ending {
        kind,
        text,
        dumps: u8::try_from(found).unwrap_or(u8::MAX),
    })
}

#[cfg(test)]
#[path = "pstore_tests.rs"]
mod tests;

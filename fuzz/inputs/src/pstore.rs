//! Target `pstore_dump`: bytes as the files of a pstore filesystem, the previous kernel's
//! dumps (untrusted): parts separated by NUL bytes, each a file name, a newline, then
//! the file's content. Whatever they hold, the ending fits one flight recorder event and
//! round-trips through it.

use stele_verifier::recorder::pstore::{ending, parse_dump, parse_name, Dump, Name};
use stele_verifier::recorder::{decode, encode, Event, Origin, TEXT_MAX};

use crate::Seed;

pub const STAGES: &[&str] = &["a pstore file name", "a dump", "an ending to record"];

/// The parts of `data`: (name, content).
fn parts(data: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    data.split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .take(64)
        .map(|p| match p.iter().position(|&b| b == b'\n') {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => (p, &p[..0]),
        })
}

/// The named dumps of `data`, and how far the first part got.
fn dumps(data: &[u8]) -> (Vec<(Name, Dump)>, usize) {
    let mut out = Vec::new();
    let mut depth = 0;
    for (name, content) in parts(data) {
        let Some(n) = std::str::from_utf8(name).ok().and_then(parse_name) else {
            continue;
        };
        depth = depth.max(1);
        if let Some(d) = parse_dump(content) {
            depth = depth.max(2);
            out.push((n, d));
        }
    }
    (out, depth)
}

pub fn run(data: &[u8]) {
    let (dumps, _) = dumps(data);
    for (_, d) in &dumps {
        if let Some(h) = &d.headline {
            assert!(d.lines.contains(h));
        }
    }
    if let Some(end) = ending(&dumps) {
        assert!(end.text.len() <= TEXT_MAX, "{}", end.text.len());
        let e = Event {
            text: end.text.clone(),
            count: end.dumps,
            ..Event::new(Origin::Stage1, end.kind)
        };
        assert_eq!(decode(&encode(&e)), Ok(e));
    }
}

pub fn depth(data: &[u8]) -> usize {
    let (d, depth) = dumps(data);
    if ending(&d).is_some() {
        3
    } else {
        depth
    }
}

pub fn seeds() -> Vec<Seed> {
    let panic = b"dmesg-ramoops-0\nPanic#1 Part1\n<6>[    9.8] sysrq: Trigger a crash\n<0>[    9.8] Kernel panic - not syncing: sysrq triggered crash\n<4>[    9.8] Call Trace:\n<0>[    9.9] ---[ end Kernel panic - not syncing: sysrq triggered crash ]---\n".to_vec();
    let oops = b"dmesg-efi-168870312800001\nOops#1 Part1\n<1>[ 3.1] BUG: kernel NULL pointer dereference, address: 0000000000000000\n".to_vec();
    let verity = b"dmesg-ramoops-1\nShutdown#1 Part1\n<0>[ 7.6] reboot: Restarting system with command 'dm-verity device corrupted'\n".to_vec();
    vec![
        Seed::new("panic", panic.clone()),
        Seed::new("oops-and-panic", [oops.clone(), vec![0, 0], panic].concat()),
        Seed::new("oops", oops),
        Seed::new("verity-restart", verity),
        Seed::new("compressed", b"dmesg-efi-1.enc.z\nx\x9c\x01\x02".to_vec()),
        Seed::new("console", b"console-ramoops-0\nhello\n".to_vec()),
        Seed::new("not-a-name", b"hello world\nPanic#1 Part1\n".to_vec()),
        Seed::new(
            "plain-restart",
            b"dmesg-ramoops-2\nShutdown#1 Part1\n<0>[ 7.6] reboot: Restarting system\n".to_vec(),
        ),
    ]
}

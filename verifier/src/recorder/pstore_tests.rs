//! Tests of pstore names and dumps: the shapes Debian 6.1's ramoops and efi-pstore write.

use super::*;

/// A dump as ramoops keeps it after `echo c > /proc/sysrq-trigger` (Debian 6.1, shortened).
const SYSRQ_PANIC: &str = "Panic#1 Part1\n\
<6>[    9.812345] sysrq: Trigger a crash\n\
<0>[    9.812402] Kernel panic - not syncing: sysrq triggered crash\n\
<4>[    9.812470] CPU: 0 PID: 131 Comm: app Not tainted 6.1.0-57-amd64 #1  Debian 6.1.158-1\n\
<4>[    9.812533] Hardware name: QEMU Standard PC (i440FX + PIIX, 1996)\n\
<4>[    9.812600] Call Trace:\n\
<4>[    9.812650]  <TASK>\n\
<4>[    9.812700]  dump_stack_lvl+0x44/0x5c\n\
<4>[    9.812750]  panic+0x118/0x2ed\n\
<4>[    9.812800]  sysrq_handle_crash+0x16/0x20\n\
<0>[    9.813000] Kernel Offset: 0x2000000 from 0xffffffff81000000\n\
<0>[    9.813100] ---[ end Kernel panic - not syncing: sysrq triggered crash ]---\n";

fn dump(text: &str) -> Dump {
    parse_dump(text.as_bytes()).expect("a dump")
}

fn dmesg(id: u64) -> Name {
    parse_name(&format!("dmesg-ramoops-{id}")).unwrap()
}

#[test]
fn pstore_file_names_of_ramoops_and_efi() {
    assert_eq!(
        parse_name("dmesg-ramoops-0"),
        Some(Name {
            kind: "dmesg".into(),
            backend: "ramoops".into(),
            id: 0,
            compressed: false
        })
    );
    let efi = parse_name("dmesg-efi-168870312800001.enc.z").unwrap();
    assert_eq!((efi.backend.as_str(), efi.compressed), ("efi", true));
    assert_eq!(efi.id, 168_870_312_800_001);
    assert_eq!(parse_name("console-ramoops-0").unwrap().kind, "console");
    assert_eq!(
        parse_name("powerpc-ofw-nvram-3").unwrap().kind,
        "powerpc-ofw"
    );
    for bad in [
        "",
        "dmesg",
        "dmesg-ramoops",
        "dmesg-ramoops-x",
        "-ramoops-1",
        "a/b-c-1",
    ] {
        assert_eq!(parse_name(bad), None, "{bad:?}");
    }
    assert_eq!(parse_name(&format!("dmesg-{}-1", "x".repeat(200))), None);
}

#[test]
fn a_panic_dump_gives_the_panic_line_and_the_last_lines() {
    let d = dump(SYSRQ_PANIC);
    assert_eq!((d.reason, d.part), (Reason::Panic, 1));
    assert_eq!(
        d.headline.as_deref(),
        Some("Kernel panic - not syncing: sysrq triggered crash")
    );
    let e = ending(&[(dmesg(0), d)]).unwrap();
    assert_eq!(e.kind, Kind::Panic);
    assert_eq!(e.dumps, 1);
    let mut lines = e.text.lines();
    assert_eq!(
        lines.next(),
        Some("Kernel panic - not syncing: sysrq triggered crash")
    );
    assert!(e.text.len() <= TEXT_MAX);
    assert!(
        e.text
            .ends_with("---[ end Kernel panic - not syncing: sysrq triggered crash ]---"),
        "{}",
        e.text
    );
    // Whole lines only, and no prefixes.
    assert!(lines.all(|l| !l.starts_with('<') && SYSRQ_PANIC.contains(l)));
}

/// efi-pstore keeps 1 KiB per variable: part 1 holds the end of the call trace, the
/// panic's line in an older part (part 1 had none under OVMF).
#[test]
fn a_panic_split_in_parts_takes_its_line_from_an_older_part() {
    let part1 =
        dump("Panic#1 Part1\n<4>[ 7.9]  sysrq_handle_crash+0x16/0x20\n<4>[ 7.9]  </TASK>\n");
    let part2 = dump(&SYSRQ_PANIC.replace("Part1", "Part2"));
    let other = dump("Panic#2 Part2\n<0>[ 1.0] Kernel panic - not syncing: another one\n");
    let efi = |id| parse_name(&format!("dmesg-efi-{id}")).unwrap();
    let e = ending(&[
        (efi(2001), part2),
        (efi(1001), part1.clone()),
        (efi(3002), other),
    ])
    .unwrap();
    assert_eq!(e.kind, Kind::Panic);
    assert!(
        e.text
            .starts_with("Kernel panic - not syncing: sysrq triggered crash\n"),
        "{}",
        e.text
    );
    assert!(e.text.ends_with("</TASK>"), "{}", e.text);
    // Alone, part 1 says only that it was a panic.
    let alone = ending(&[(efi(1001), part1)]).unwrap();
    assert!(alone.text.starts_with("kernel panic\n"), "{}", alone.text);
}

#[test]
fn an_oops_and_a_panic_record_the_panic() {
    let oops = dump(
        "Oops#1 Part1\n<1>[ 3.1] BUG: kernel NULL pointer dereference, address: 0000000000000000\n<4>[ 3.2] RIP: 0010:foo+0x1/0x2\n",
    );
    assert_eq!(
        oops.headline.as_deref(),
        Some("BUG: kernel NULL pointer dereference, address: 0000000000000000")
    );
    let only = ending(&[(dmesg(0), oops.clone())]).unwrap();
    assert_eq!(only.kind, Kind::Oops);
    let both = ending(&[(dmesg(0), oops), (dmesg(1), dump(SYSRQ_PANIC))]).unwrap();
    assert_eq!(both.kind, Kind::Panic);
    assert_eq!(both.dumps, 2);
}

#[test]
fn restarts_are_told_apart_from_a_dm_verity_corruption_restart() {
    let verity = dump(
        "Shutdown#1 Part1\n<3>[ 7.5] device-mapper: verity: 254:0: data block 18 is corrupted\n<0>[ 7.6] reboot: Restarting system with command 'dm-verity device corrupted'\n",
    );
    let e = ending(&[(dmesg(0), verity)]).unwrap();
    assert_eq!(e.kind, Kind::VerityRestart);
    assert_eq!(
        e.text,
        "device-mapper: verity: 254:0: data block 18 is corrupted\nreboot: Restarting system with command 'dm-verity device corrupted'"
    );
    let plain = dump("Shutdown#1 Part1\n<0>[ 7.6] reboot: Restarting system\n");
    assert_eq!(ending(&[(dmesg(0), plain)]), None);
    assert_eq!(ending(&[]), None);
}

#[test]
fn what_is_not_a_dump_is_refused() {
    for bad in [
        &b""[..],
        b"hello\n",
        b"Panic#x Part1\n",
        b"Panic#1 Partx\n",
        b"Reboot#1 Part1\n",
        b"Panic#1\n",
    ] {
        assert_eq!(parse_dump(bad), None, "{:?}", String::from_utf8_lossy(bad));
    }
    // Invalid UTF-8 and no panic line: still a panic, said plainly.
    let d = parse_dump(b"Panic#2 Part3\n\xff\xfe garbage\n").unwrap();
    assert_eq!(d.headline, None);
    let e = ending(&[(dmesg(4), d)]).unwrap();
    assert!(e.text.starts_with("kernel panic\n"), "{}", e.text);
}

#[test]
fn long_lines_are_cut_to_the_events_room() {
    let long = format!(
        "Panic#1 Part1\n<0>[ 1.0] Kernel panic - not syncing: {}\n<4>[ 1.1] {}\n",
        "é".repeat(300),
        "z".repeat(1000)
    );
    let e = ending(&[(dmesg(0), dump(&long))]).unwrap();
    assert!(e.text.len() <= TEXT_MAX);
    assert!(e.text.starts_with("Kernel panic - not syncing: é"));
    let tailed = format!(
        "Panic#1 Part1\n<0>[ 1.0] Kernel panic - x\n<4>[ 1.1] {}\n",
        "z".repeat(1000)
    );
    let e = ending(&[(dmesg(0), dump(&tailed))]).unwrap();
    assert!(
        e.text.ends_with("zzz") && e.text.len() <= TEXT_MAX,
        "{}",
        e.text
    );
    assert_eq!(strip_prefix("<12>[12345.000001] x"), "x");
    assert_eq!(strip_prefix("[ 1.0] x"), "x");
    assert_eq!(strip_prefix("<x>[y] z"), "<x>[y] z");
}

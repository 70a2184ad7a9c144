//! Unified Kernel Images as files: the PE32+ headers and section table, the sections a
//! stele stage 1 must have (`.linux`, `.initrd`, `.cmdline`), and the rule for the embedded
//! command line. One reader for `stele uki build`, `stele disk create --uki` and
//! `stele update stage1`. Pure; never panics on arbitrary bytes. Layout in docs/FORMATS.md,
//! "UKI".

/// The longest command line the x86 kernel accepts (COMMAND_LINE_SIZE 2048, with the NUL).
pub const MAX_CMDLINE: usize = 2047;

/// Why bytes are not a stele stage-1 UKI.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UkiError {
    #[error("not a PE/EFI image (no MZ signature)")]
    NoMz,
    #[error("not a PE/EFI image (no PE signature)")]
    NoPe,
    #[error("not a 64-bit (PE32+) image")]
    NotPe32Plus,
    #[error("truncated PE header")]
    Truncated,
    #[error("the UKI has no {0} section")]
    MissingSection(&'static str),
    #[error("the {0} section lies outside the file")]
    SectionOutside(&'static str),
    #[error("the UKI has more than one {0} section (systemd-stub would take the last one, stele the first); build it with exactly one")]
    DuplicateSection(&'static str),
    #[error("the {0} section is empty (VirtualSize 0: systemd-stub would read nothing there); build it with content")]
    EmptySection(&'static str),
    #[error("the {0} section's VirtualSize is larger than its data in the file (systemd-stub would read zero padding); rebuild the UKI with objcopy or `stele uki build`")]
    SectionPadded(&'static str),
    #[error("the .cmdline section is not text")]
    CmdlineNotText,
    #[error("its .cmdline: {0}")]
    Cmdline(#[source] CmdlineError),
}

/// Why a stage-1 command line is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    #[error("the command line must not be empty (the stub would accept one from the boot loader instead)")]
    Empty,
    #[error("{0:?} is not printable ASCII")]
    NotPrintable(char),
    #[error("{0} bytes, at most {MAX_CMDLINE} allowed")]
    TooLong(usize),
}

/// One section of a PE image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    /// Relative virtual address.
    pub rva: u32,
    pub virtual_size: u32,
    pub raw_offset: u32,
    pub raw_size: u32,
}

/// The parts of a PE/COFF (PE32+) header that stele uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeInfo {
    pub image_base: u64,
    pub section_alignment: u32,
    /// File offsets of the COFF TimeDateStamp and the optional header's CheckSum.
    pub timestamp_offset: usize,
    pub checksum_offset: usize,
    /// Data directory 4, the certificate table (Authenticode signatures): file offset and
    /// size, `(0, 0)` when the image is not signed.
    pub cert_table: (u32, u32),
    pub sections: Vec<Section>,
}

impl PeInfo {
    /// True when the image carries an Authenticode signature (sbsign's), whether or not
    /// any firmware would accept it.
    pub fn is_signed(&self) -> bool {
        self.cert_table.1 > 0
    }
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(o..o.checked_add(2)?)?.try_into().ok()?,
    ))
}

/// The little-endian u32 at `o`, if the bytes are there.
pub fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(o..o.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(o..o.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Parses the headers and section table of a PE32+ image. Never panics on arbitrary bytes.
pub fn parse_pe(b: &[u8]) -> Result<PeInfo, UkiError> {
    let short = || UkiError::Truncated;
    if b.get(0..2) != Some(b"MZ") {
        return Err(UkiError::NoMz);
    }
    let pe = u32_at(b, 0x3c).ok_or_else(short)? as usize;
    if b.get(pe..pe.saturating_add(4)) != Some(b"PE\0\0") {
        return Err(UkiError::NoPe);
    }
    let coff = pe + 4;
    let nsections = usize::from(u16_at(b, coff + 2).ok_or_else(short)?);
    let opt_size = usize::from(u16_at(b, coff + 16).ok_or_else(short)?);
    let opt = coff + 20;
    if u16_at(b, opt).ok_or_else(short)? != 0x20b {
        return Err(UkiError::NotPe32Plus);
    }
    let image_base = u64_at(b, opt + 24).ok_or_else(short)?;
    let section_alignment = u32_at(b, opt + 32).ok_or_else(short)?;
    if opt_size < 68 {
        return Err(short());
    }
    // Data directory 4 (certificate table) is there when the header is long enough and
    // NumberOfRvaAndSizes counts it.
    let dirs = u32_at(b, opt + 108).unwrap_or(0);
    let cert_table = if opt_size >= 152 && dirs > 4 {
        (
            u32_at(b, opt + 144).ok_or_else(short)?,
            u32_at(b, opt + 148).ok_or_else(short)?,
        )
    } else {
        (0, 0)
    };
    let table = opt + opt_size;
    let mut sections = Vec::with_capacity(nsections.min(96));
    for i in 0..nsections {
        let s = table + 40 * i;
        let raw = b.get(s..s + 40).ok_or_else(short)?;
        let name_len = raw[..8].iter().position(|&c| c == 0).unwrap_or(8);
        sections.push(Section {
            name: String::from_utf8_lossy(&raw[..name_len]).into_owned(),
            virtual_size: u32_at(raw, 8).ok_or_else(short)?,
            rva: u32_at(raw, 12).ok_or_else(short)?,
            raw_size: u32_at(raw, 16).ok_or_else(short)?,
            raw_offset: u32_at(raw, 20).ok_or_else(short)?,
        });
    }
    Ok(PeInfo {
        image_base,
        section_alignment,
        timestamp_offset: coff + 4,
        checksum_offset: opt + 64,
        cert_table,
        sections,
    })
}

/// The content of a section as systemd-stub reads it: `VirtualSize` bytes from its start
/// (objcopy pads the raw data to the file alignment, so `SizeOfRawData` is larger). `None`
/// when they lie outside `b` or outside the section's raw data.
pub fn section_data<'a>(b: &'a [u8], s: &Section) -> Option<&'a [u8]> {
    if s.virtual_size > s.raw_size {
        return None;
    }
    let start = s.raw_offset as usize;
    b.get(start..start.checked_add(s.virtual_size as usize)?)
}

/// The sections systemd-stub reads and stele checks: each at most once, never empty.
pub const STUB_SECTIONS: [&str; 4] = [".cmdline", ".linux", ".initrd", ".osrel"];

/// True when systemd-stub would take section `s` for `name`: the same name, or (as the
/// stub of systemd 252, Debian 12, compares only `name`'s length) a longer one that
/// starts with it.
pub fn stub_takes(s: &Section, name: &str) -> bool {
    s.name.starts_with(name)
}

/// The one section systemd-stub would read as `name`, its content as the stub reads it
/// (`VirtualSize` bytes). Refuses a second section of that name (the stub takes the last,
/// a reader of the first would check other bytes than the stub runs), an empty one (an
/// empty `.cmdline` lets the loader's command line through), and one whose `VirtualSize`
/// exceeds its raw data. `Ok(None)` when there is none. Never panics.
pub fn stub_section<'a>(
    b: &'a [u8],
    pe: &PeInfo,
    name: &'static str,
) -> Result<Option<&'a [u8]>, UkiError> {
    let mut found = pe.sections.iter().filter(|s| stub_takes(s, name));
    let Some(s) = found.next() else {
        return Ok(None);
    };
    if found.next().is_some() {
        return Err(UkiError::DuplicateSection(name));
    }
    if s.virtual_size == 0 {
        return Err(UkiError::EmptySection(name));
    }
    if s.virtual_size > s.raw_size {
        return Err(UkiError::SectionPadded(name));
    }
    section_data(b, s)
        .map(Some)
        .ok_or(UkiError::SectionOutside(name))
}

/// Checks a stage-1 command line: not empty (an empty `.cmdline` would let systemd-stub take
/// the loader's command line even under Secure Boot), printable ASCII, at most
/// [`MAX_CMDLINE`] bytes. Pure.
pub fn check_cmdline(c: &str) -> Result<(), CmdlineError> {
    if c.trim().is_empty() {
        return Err(CmdlineError::Empty);
    }
    if let Some(ch) = c.chars().find(|ch| !(' '..='~').contains(ch)) {
        return Err(CmdlineError::NotPrintable(ch));
    }
    if c.len() > MAX_CMDLINE {
        return Err(CmdlineError::TooLong(c.len()));
    }
    Ok(())
}

/// The stage-1 sections of a UKI, borrowed from its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uki<'a> {
    pub pe: PeInfo,
    pub linux: &'a [u8],
    pub initrd: &'a [u8],
    /// The embedded command line (trailing NULs and newlines cut), checked by
    /// [`check_cmdline`].
    pub cmdline: &'a str,
}

/// Reads a UKI (signed or not) as systemd-stub reads it: a PE32+ image with exactly one
/// `.linux`, `.initrd` and `.cmdline` section (and at most one `.osrel`), each non-empty,
/// read by its `VirtualSize`, inside the file, and an acceptable command line. Never
/// panics on arbitrary bytes.
pub fn parse(b: &[u8]) -> Result<Uki<'_>, UkiError> {
    let pe = parse_pe(b)?;
    let mut found: [&[u8]; 4] = [&[]; 4];
    for (slot, name) in found.iter_mut().zip(STUB_SECTIONS) {
        match stub_section(b, &pe, name)? {
            Some(data) => *slot = data,
            // `.osrel` is optional; the others are what a stage 1 boots.
            None if name == ".osrel" => {}
            None => return Err(UkiError::MissingSection(name)),
        }
    }
    let [cmdline, linux, initrd, _osrel] = found;
    let cmdline = std::str::from_utf8(cmdline)
        .map_err(|_| UkiError::CmdlineNotText)?
        .trim_end_matches(['\0', '\n']);
    check_cmdline(cmdline).map_err(UkiError::Cmdline)?;
    Ok(Uki {
        pe,
        linux,
        initrd,
        cmdline,
    })
}

/// A synthetic PE32+ file for tests: `sections` are `(name, rva, vsize, raw_off, raw_size)`,
/// `cert_table` data directory 4.
#[cfg(any(test, feature = "test-util"))]
pub fn fake_pe(
    sections: &[(&str, u32, u32, u32, u32)],
    len: usize,
    cert_table: (u32, u32),
) -> Vec<u8> {
    let mut b = vec![0u8; len];
    b[0..2].copy_from_slice(b"MZ");
    b[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
    b[0x80..0x84].copy_from_slice(b"PE\0\0");
    b[0x84..0x86].copy_from_slice(&0x8664u16.to_le_bytes());
    let n = u16::try_from(sections.len()).unwrap_or(u16::MAX);
    b[0x86..0x88].copy_from_slice(&n.to_le_bytes());
    b[0x94..0x96].copy_from_slice(&240u16.to_le_bytes());
    let opt = 0x98;
    b[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
    b[opt + 32..opt + 36].copy_from_slice(&0x200u32.to_le_bytes());
    b[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes());
    b[opt + 144..opt + 148].copy_from_slice(&cert_table.0.to_le_bytes());
    b[opt + 148..opt + 152].copy_from_slice(&cert_table.1.to_le_bytes());
    for (i, (name, rva, vs, ro, rs)) in sections.iter().enumerate() {
        let s = opt + 240 + 40 * i;
        b[s..s + name.len()].copy_from_slice(name.as_bytes());
        b[s + 8..s + 12].copy_from_slice(&vs.to_le_bytes());
        b[s + 12..s + 16].copy_from_slice(&rva.to_le_bytes());
        b[s + 16..s + 20].copy_from_slice(&rs.to_le_bytes());
        b[s + 20..s + 24].copy_from_slice(&ro.to_le_bytes());
    }
    b
}

/// A small UKI for tests: `.cmdline` = `cmdline`, then `.initrd` and `.linux` filled with
/// `fill` (`len` bytes in all, at least 0x1000; signed when `signed`: a certificate table
/// entry, no real signature).
#[cfg(any(test, feature = "test-util"))]
pub fn fake_uki(cmdline: &str, len: usize, fill: u8, signed: bool) -> Vec<u8> {
    let len = len.max(0x1000);
    let body = u32::try_from(len - 0xa00).unwrap_or(u32::MAX);
    let cl = u32::try_from(cmdline.len()).unwrap_or(u32::MAX);
    let cert = if signed { (0x800, 0x200) } else { (0, 0) };
    let mut b = fake_pe(
        &[
            (".cmdline", 0x1000, cl, 0x400, 0x200),
            (".initrd", 0x2000, 0x100, 0x600, 0x200),
            (".linux", 0x3000, body, 0xa00, body),
        ],
        len,
        cert,
    );
    b[0x400..0x400 + cmdline.len()].copy_from_slice(cmdline.as_bytes());
    b[0x600..0x800].fill(fill);
    for (i, x) in b[0xa00..].iter_mut().enumerate() {
        // Position-dependent, so that a sector of one file is never a sector of another.
        *x = fill ^ u8::try_from(i % 251).unwrap_or(0);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_and_the_certificate_table() {
        let b = fake_pe(
            &[
                (".text", 0x1000, 0x2345, 0x400, 0x2400),
                (".sbat", 0x4000, 0xe2, 0x2800, 0x200),
            ],
            0x3000,
            (0x2a00, 0x600),
        );
        let pe = parse_pe(&b).unwrap();
        assert_eq!(pe.sections.len(), 2);
        assert_eq!(pe.sections[1].name, ".sbat");
        assert_eq!(pe.timestamp_offset, 0x88);
        assert_eq!(pe.checksum_offset, 0x98 + 64);
        assert_eq!(pe.cert_table, (0x2a00, 0x600));
        assert!(pe.is_signed());
        let unsigned = fake_pe(&[(".text", 0x1000, 1, 0x400, 0x200)], 0x800, (0, 0));
        assert!(!parse_pe(&unsigned).unwrap().is_signed());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let good = fake_pe(&[(".cmdline", 0x1000, 3, 0x600, 0x200)], 0x800, (0, 0));
        for cut in 0..good.len() {
            let _ = parse_pe(&good[..cut]);
            let _ = parse(&good[..cut]);
        }
        let mut b = good.clone();
        b[0x86] = 0xff; // 255 sections, table past the end
        assert_eq!(parse_pe(&b), Err(UkiError::Truncated));
        let huge = fake_pe(
            &[(".linux", 0x1000, u32::MAX, u32::MAX, u32::MAX)],
            0x800,
            (0, 0),
        );
        assert!(parse(&huge).is_err());
        assert_eq!(parse_pe(b"MZ"), Err(UkiError::Truncated));
        assert_eq!(parse_pe(b""), Err(UkiError::NoMz));
        assert_eq!(parse_pe(b"MZxx").unwrap_err(), UkiError::Truncated);
    }

    proptest::proptest! {
        /// Any byte flipped anywhere in a valid header, and any section table values:
        /// an error or parts that lie inside the file, never a panic.
        #[test]
        fn mutated_headers_never_panic(at in 0usize..0xa00, byte in proptest::prelude::any::<u8>(),
                                       vs in proptest::prelude::any::<u32>(), ro in proptest::prelude::any::<u32>()) {
            let mut b = fake_pe(
                &[(".cmdline", 0x1000, 8, 0x400, 0x200), (".initrd", 0x2000, vs, ro, 0x200), (".linux", 0x3000, 5, 0x800, 0x200)],
                0xa00,
                (0, 0),
            );
            b[0x400..0x408].copy_from_slice(b"panic=-1");
            b[at] ^= byte;
            if let Ok(p) = parse(&b) {
                proptest::prop_assert!(p.initrd.len() + p.linux.len() <= b.len());
            }
        }
    }

    #[test]
    fn reads_sections_cut_to_virtual_size() {
        let mut b = fake_pe(
            &[
                (".cmdline", 0x1000, 9, 0x400, 0x200),
                (".initrd", 0x2000, 3, 0x600, 0x200),
                (".linux", 0x3000, 5, 0x800, 0x200),
            ],
            0xa00,
            (0, 0),
        );
        b[0x400..0x409].copy_from_slice(b"panic=-1\0");
        b[0x600..0x603].copy_from_slice(b"ird");
        b[0x800..0x805].copy_from_slice(b"linux");
        let p = parse(&b).unwrap();
        assert_eq!(p.cmdline, "panic=-1");
        assert_eq!(p.initrd, b"ird");
        assert_eq!(p.linux, b"linux");
        let mut no_linux = fake_pe(&[(".cmdline", 0x1000, 1, 0x400, 0x200)], 0x600, (0, 0));
        no_linux[0x400] = b'x';
        assert_eq!(parse(&no_linux), Err(UkiError::MissingSection(".linux")));
        let no_cmdline = fake_pe(&[(".linux", 0x1000, 1, 0x400, 0x200)], 0x600, (0, 0));
        assert_eq!(
            parse(&no_cmdline),
            Err(UkiError::MissingSection(".cmdline"))
        );
        b[0x400] = 0xff;
        assert_eq!(parse(&b), Err(UkiError::CmdlineNotText));
        b[0x400..0x409].fill(b' ');
        assert_eq!(parse(&b), Err(UkiError::Cmdline(CmdlineError::Empty)));
        let u = fake_uki("console=ttyS0", 0x3000, 7, true);
        let p = parse(&u).unwrap();
        assert_eq!(p.cmdline, "console=ttyS0");
        assert!(p.pe.is_signed());
        assert_eq!(p.linux.len(), 0x3000 - 0xa00);
    }

    /// Regression (issue 18): a `.cmdline` with VirtualSize 0 was read by its raw size
    /// (and accepted), while systemd-stub reads it as empty and takes the loader's command
    /// line; a second `.cmdline` was ignored by stele, taken by the stub.
    #[test]
    fn sections_the_stub_reads_otherwise_are_refused() {
        let secs = |cmdline_vs: u32, extra: &[(&'static str, u32, u32, u32, u32)]| {
            let mut s = vec![
                (".cmdline", 0x1000, cmdline_vs, 0x400, 0x200),
                (".initrd", 0x2000, 3, 0x600, 0x200),
                (".linux", 0x3000, 5, 0x800, 0x200),
            ];
            s.extend_from_slice(extra);
            let mut b = fake_pe(&s, 0xc00, (0, 0));
            b[0x400..0x408].copy_from_slice(b"panic=-1");
            b[0xa00..0xa0c].copy_from_slice(b"init=/bin/sh");
            b
        };
        assert_eq!(parse(&secs(8, &[])).unwrap().cmdline, "panic=-1");
        assert_eq!(
            parse(&secs(0, &[])),
            Err(UkiError::EmptySection(".cmdline"))
        );
        let second = (".cmdline", 0x4000, 12, 0xa00, 0x200);
        assert_eq!(
            parse(&secs(8, &[second])),
            Err(UkiError::DuplicateSection(".cmdline"))
        );
        for name in [".linux", ".initrd", ".osrel", ".linuxAB"] {
            let want = if name == ".linuxAB" { ".linux" } else { name };
            let two = [
                (name, 0x4000, 4, 0xa00, 0x200),
                (want, 0x5000, 4, 0xa00, 0x200),
            ];
            assert_eq!(
                parse(&secs(8, &two)),
                Err(UkiError::DuplicateSection(want)),
                "{name}"
            );
        }
        assert!(parse(&secs(8, &[(".osrel", 0x4000, 4, 0xa00, 0x200)])).is_ok());
        assert_eq!(
            parse(&secs(8, &[(".osrel", 0x4000, 0, 0xa00, 0x200)])),
            Err(UkiError::EmptySection(".osrel"))
        );
        assert_eq!(
            parse(&secs(0x201, &[])),
            Err(UkiError::SectionPadded(".cmdline"))
        );
    }

    #[test]
    fn cmdline_rules() {
        check_cmdline("console=ttyS0 panic=-1").unwrap();
        for (bad, want) in [
            ("", CmdlineError::Empty),
            ("   ", CmdlineError::Empty),
            ("a\nb", CmdlineError::NotPrintable('\n')),
            ("caf\u{e9}", CmdlineError::NotPrintable('\u{e9}')),
            ("x\0", CmdlineError::NotPrintable('\0')),
        ] {
            assert_eq!(check_cmdline(bad), Err(want), "{bad:?}");
        }
        assert!(check_cmdline(&"a".repeat(MAX_CMDLINE)).is_ok());
        assert_eq!(
            check_cmdline(&"a".repeat(MAX_CMDLINE + 1)),
            Err(CmdlineError::TooLong(MAX_CMDLINE + 1))
        );
    }
}

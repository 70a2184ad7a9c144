//! Unified Kernel Images (`stele uki build`): systemd's EFI stub plus `.osrel`, `.cmdline`,
//! `.initrd` and `.linux` sections added with objcopy, timestamp and checksum fixed for
//! reproducible bytes, optionally signed with sbsign. Also reads the sections back out of a
//! UKI (for the BIOS boot path of `stele disk create --bios`). Layout in docs/FORMATS.md, "UKI".

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::tool::{Scratch, OBJCOPY, SBSIGN};
use crate::{Error, Result};

/// Debian's systemd EFI stub (package `systemd-boot-efi`).
pub const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
/// The package that ships [`STUB`].
pub const STUB_PACKAGE: &str = "systemd-boot-efi";
/// The stage-1 command line when none is given: a kernel panic reboots after 10 s, so an
/// unattended machine never stops at a panic.
pub const DEFAULT_CMDLINE: &str = "panic=10";
/// The `.osrel` content when no `--os-release` is given.
pub const DEFAULT_OS_RELEASE: &str = "NAME=\"stele\"\nID=stele\nPRETTY_NAME=\"stele stage 1\"\n";
/// The longest command line the x86 kernel accepts (COMMAND_LINE_SIZE 2048, with the NUL).
pub const MAX_CMDLINE: usize = 2047;
/// New sections start on this boundary (as systemd's ukify places them).
pub const SECTION_ALIGN: u64 = 4096;

/// What goes into a UKI.
#[derive(Clone, Debug)]
pub struct UkiSpec {
    pub stub: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The stage-1 kernel command line (checked by [`check_cmdline`]).
    pub cmdline: String,
    /// `.osrel` content from this file; [`DEFAULT_OS_RELEASE`] when `None`.
    pub os_release: Option<PathBuf>,
    /// PE timestamp (SOURCE_DATE_EPOCH; clamped to 32 bits).
    pub epoch: u64,
    /// Sign with sbsign: (PEM private key, PEM X.509 certificate).
    pub sign: Option<(PathBuf, PathBuf)>,
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
    pub sections: Vec<Section>,
}

fn bad(what: &'static str, why: impl Into<String>) -> Error {
    Error::invalid(what, why)
}

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

/// Parses the headers and section table of a PE32+ image. `what` names the input in errors.
/// Never panics on arbitrary bytes.
pub fn parse_pe(b: &[u8], what: &'static str) -> Result<PeInfo> {
    let short = || bad(what, "truncated PE header");
    if b.get(0..2) != Some(b"MZ") {
        return Err(bad(what, "not a PE/EFI image (no MZ signature)"));
    }
    let pe = u32_at(b, 0x3c).ok_or_else(short)? as usize;
    if b.get(pe..pe.saturating_add(4)) != Some(b"PE\0\0") {
        return Err(bad(what, "not a PE/EFI image (no PE signature)"));
    }
    let coff = pe + 4;
    let nsections = usize::from(u16_at(b, coff + 2).ok_or_else(short)?);
    let opt_size = usize::from(u16_at(b, coff + 16).ok_or_else(short)?);
    let opt = coff + 20;
    if u16_at(b, opt).ok_or_else(short)? != 0x20b {
        return Err(bad(what, "not a 64-bit (PE32+) image"));
    }
    let image_base = u64_at(b, opt + 24).ok_or_else(short)?;
    let section_alignment = u32_at(b, opt + 32).ok_or_else(short)?;
    if opt_size < 68 {
        return Err(short());
    }
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
        sections,
    })
}

/// The PE checksum (as the Windows loader and objcopy compute it): 16-bit one's-complement
/// style sum of the file with the CheckSum field taken as zero, plus the file length.
pub fn pe_checksum(b: &[u8], checksum_offset: usize) -> u32 {
    let mut sum: u64 = 0;
    for (i, c) in b.chunks(2).enumerate() {
        let o = 2 * i;
        let word = if o >= checksum_offset && o < checksum_offset + 4 {
            0
        } else {
            u64::from(c[0]) | (u64::from(*c.get(1).unwrap_or(&0)) << 8)
        };
        sum += word;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    let total = sum + b.len() as u64;
    u32::try_from(total & 0xffff_ffff).unwrap_or(0)
}

/// Sets the COFF timestamp to `epoch` (clamped to 32 bits) and recomputes the checksum.
pub fn set_timestamp(b: &mut [u8], pe: &PeInfo, epoch: u64) -> Result<()> {
    let t = u32::try_from(epoch).unwrap_or(u32::MAX).to_le_bytes();
    let (ts, cs) = (pe.timestamp_offset, pe.checksum_offset);
    if b.len() < ts + 4 || b.len() < cs + 4 {
        return Err(bad("UKI", "truncated PE header"));
    }
    b[ts..ts + 4].copy_from_slice(&t);
    let sum = pe_checksum(b, cs).to_le_bytes();
    b[cs..cs + 4].copy_from_slice(&sum);
    Ok(())
}

/// Where each new section goes: `(name, VMA)` in order, the first on the first
/// [`SECTION_ALIGN`] boundary after the stub's last section, each next one after the
/// previous, aligned. VMAs include the image base (objcopy's `--change-section-vma`). Pure.
pub fn section_plan(stub: &PeInfo, sizes: &[(&str, u64)]) -> Result<Vec<(String, u64)>> {
    let align = SECTION_ALIGN.max(u64::from(stub.section_alignment));
    let end = stub
        .sections
        .iter()
        .map(|s| u64::from(s.rva) + u64::from(s.virtual_size.max(s.raw_size)))
        .max()
        .ok_or_else(|| bad("EFI stub", "the stub has no sections"))?;
    let mut next = end.next_multiple_of(align);
    let mut plan = Vec::new();
    for (name, size) in sizes {
        if stub.sections.iter().any(|s| s.name == *name) {
            return Err(bad(
                "EFI stub",
                format!("the stub already has a {name} section"),
            ));
        }
        plan.push((name.to_string(), stub.image_base + next));
        next = next
            .checked_add(*size)
            .map(|n| n.next_multiple_of(align))
            .filter(|&n| n <= u64::from(u32::MAX))
            .ok_or_else(|| bad("UKI", "the sections do not fit a PE image (4 GiB)"))?;
    }
    Ok(plan)
}

/// Checks a stage-1 command line: not empty (an empty `.cmdline` would let systemd-stub take
/// the loader's command line even under Secure Boot), printable ASCII, at most
/// [`MAX_CMDLINE`] bytes.
pub fn check_cmdline(c: &str) -> Result<()> {
    let what = "--cmdline";
    if c.trim().is_empty() {
        return Err(bad(what, "the command line must not be empty (the stub would accept one from the boot loader instead)"));
    }
    if let Some(ch) = c.chars().find(|ch| !(' '..='~').contains(ch)) {
        return Err(bad(what, format!("{ch:?} is not printable ASCII")));
    }
    if c.len() > MAX_CMDLINE {
        return Err(bad(
            what,
            format!("{} bytes, at most {MAX_CMDLINE} allowed", c.len()),
        ));
    }
    Ok(())
}

fn read_input(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io("read", path, e))
}

/// Checks that `b` is an x86 Linux bzImage (the boot protocol header `HdrS` at 0x202).
fn check_kernel(b: &[u8], path: &Path) -> Result<()> {
    if b.get(0x202..0x206) != Some(b"HdrS") {
        return Err(bad(
            "--kernel",
            format!(
                "{} is not an x86 Linux kernel (no bzImage \"HdrS\" header)",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// What [`build`] wrote.
#[derive(Clone, Debug)]
pub struct UkiReport {
    pub len: u64,
    pub sha256: [u8; 32],
    pub signed: bool,
    /// `(name, VMA, size)` of the added sections.
    pub sections: Vec<(String, u64, u64)>,
}

/// Builds the UKI at `out` (temporary file next to it, renamed into place). An existing
/// `out` is refused unless `force`.
pub fn build(out: &Path, spec: &UkiSpec, force: bool) -> Result<UkiReport> {
    crate::atomic::output_target(out, force)?;
    check_cmdline(&spec.cmdline)?;
    let stub = std::fs::read(&spec.stub).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound if spec.stub == Path::new(STUB) => Error::ToolMissing {
            tool: STUB,
            package: STUB_PACKAGE,
        },
        _ => Error::io(
            "read the EFI stub (Debian package systemd-boot-efi; `cargo xtask setup`)",
            &spec.stub,
            e,
        ),
    })?;
    let stub_pe = parse_pe(&stub, "EFI stub")?;
    let kernel = read_input(&spec.kernel)?;
    check_kernel(&kernel, &spec.kernel)?;
    let initrd_len = std::fs::metadata(&spec.initrd)
        .map_err(|e| Error::io("read", &spec.initrd, e))?
        .len();
    let osrel = match &spec.os_release {
        Some(p) => read_input(p)?,
        None => DEFAULT_OS_RELEASE.as_bytes().to_vec(),
    };
    if let Some((key, cert)) = &spec.sign {
        for p in [key, cert] {
            std::fs::File::open(p).map_err(|e| Error::io("read", p, e))?;
        }
    }
    let cmdline = spec.cmdline.trim().as_bytes().to_vec();
    let work = Scratch::beside(out)?;
    let osrel_p = work.write("osrel", &osrel)?;
    let cmdline_p = work.write("cmdline", &cmdline)?;
    let files: [(&str, &Path, u64); 4] = [
        (".osrel", &osrel_p, osrel.len() as u64),
        (".cmdline", &cmdline_p, cmdline.len() as u64),
        (".initrd", &spec.initrd, initrd_len),
        (".linux", &spec.kernel, kernel.len() as u64),
    ];
    let sizes: Vec<(&str, u64)> = files.iter().map(|(n, _, l)| (*n, *l)).collect();
    let plan = section_plan(&stub_pe, &sizes)?;
    let unsigned = work.join("unsigned.efi");
    let mut cmd = OBJCOPY.command()?;
    for ((name, path, _), (_, vma)) in files.iter().zip(&plan) {
        cmd.arg("--add-section")
            .arg(format!("{name}={}", path.display()))
            .arg("--change-section-vma")
            .arg(format!("{name}=0x{vma:x}"));
    }
    cmd.arg(&spec.stub).arg(&unsigned);
    OBJCOPY.run(&mut cmd)?;
    let mut bytes = read_input(&unsigned)?;
    let pe = parse_pe(&bytes, "UKI")?;
    set_timestamp(&mut bytes, &pe, spec.epoch)?;
    if let Some((key, cert)) = &spec.sign {
        std::fs::write(&unsigned, &bytes).map_err(|e| Error::io("write", &unsigned, e))?;
        let signed = work.join("signed.efi");
        let mut cmd = SBSIGN.command()?;
        cmd.arg("--key")
            .arg(key)
            .arg("--cert")
            .arg(cert)
            .arg("--output")
            .arg(&signed)
            .arg(&unsigned);
        SBSIGN.run(&mut cmd)?;
        bytes = read_input(&signed)?;
    }
    crate::outfile::write_atomic(out, force, |f, _| {
        use std::io::Write;
        f.write_all(&bytes).map_err(|e| Error::io("write", out, e))
    })?;
    Ok(UkiReport {
        len: bytes.len() as u64,
        sha256: Sha256::digest(&bytes).into(),
        signed: spec.sign.is_some(),
        sections: plan
            .into_iter()
            .zip(sizes)
            .map(|((n, vma), (_, len))| (n, vma, len))
            .collect(),
    })
}

/// The stage-1 pieces of a UKI, read back from its sections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UkiParts {
    pub linux: Vec<u8>,
    pub initrd: Vec<u8>,
    pub cmdline: String,
}

/// The content of a section: its raw data, cut to the virtual size (objcopy pads the raw
/// data to the file alignment).
fn section_data<'a>(b: &'a [u8], s: &Section) -> Option<&'a [u8]> {
    let len = if s.virtual_size == 0 {
        s.raw_size
    } else {
        s.virtual_size.min(s.raw_size)
    };
    let start = s.raw_offset as usize;
    b.get(start..start.checked_add(len as usize)?)
}

/// Reads `.linux`, `.initrd` and `.cmdline` out of a UKI (signed or not). Never panics
/// on arbitrary bytes.
pub fn read_parts(b: &[u8]) -> Result<UkiParts> {
    let pe = parse_pe(b, "--uki")?;
    let get = |name: &str| -> Result<&[u8]> {
        let s = pe
            .sections
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| bad("--uki", format!("the UKI has no {name} section")))?;
        section_data(b, s)
            .ok_or_else(|| bad("--uki", format!("the {name} section lies outside the file")))
    };
    let cmdline = std::str::from_utf8(get(".cmdline")?)
        .map_err(|_| bad("--uki", "the .cmdline section is not text"))?
        .trim_end_matches(['\0', '\n'])
        .to_string();
    check_cmdline(&cmdline).map_err(|e| bad("--uki", format!("its .cmdline: {e}")))?;
    Ok(UkiParts {
        linux: get(".linux")?.to_vec(),
        initrd: get(".initrd")?.to_vec(),
        cmdline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic PE32+ header with the given sections `(name, rva, vsize, raw_off, raw_size)`.
    fn fake_pe(sections: &[(&str, u32, u32, u32, u32)], len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        b[0..2].copy_from_slice(b"MZ");
        b[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        b[0x80..0x84].copy_from_slice(b"PE\0\0");
        b[0x84..0x86].copy_from_slice(&0x8664u16.to_le_bytes());
        let n = u16::try_from(sections.len()).unwrap();
        b[0x86..0x88].copy_from_slice(&n.to_le_bytes());
        b[0x94..0x96].copy_from_slice(&240u16.to_le_bytes());
        let opt = 0x98;
        b[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
        b[opt + 32..opt + 36].copy_from_slice(&0x200u32.to_le_bytes());
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

    #[test]
    fn parses_sections_and_plans_after_the_last() {
        let b = fake_pe(
            &[
                (".text", 0x1000, 0x2345, 0x400, 0x2400),
                (".sbat", 0x4000, 0xe2, 0x2800, 0x200),
            ],
            0x3000,
        );
        let pe = parse_pe(&b, "x").unwrap();
        assert_eq!(pe.sections.len(), 2);
        assert_eq!(pe.sections[1].name, ".sbat");
        assert_eq!(pe.timestamp_offset, 0x88);
        assert_eq!(pe.checksum_offset, 0x98 + 64);
        let plan = section_plan(&pe, &[(".osrel", 10), (".cmdline", 4096), (".linux", 1)]).unwrap();
        assert_eq!(
            plan,
            [
                (".osrel".to_string(), 0x5000),
                (".cmdline".to_string(), 0x6000),
                (".linux".to_string(), 0x7000)
            ]
        );
        assert!(section_plan(&pe, &[(".sbat", 1)]).is_err());
        assert!(section_plan(&pe, &[(".linux", u64::from(u32::MAX))]).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let good = fake_pe(&[(".cmdline", 0x1000, 3, 0x600, 0x200)], 0x800);
        for cut in 0..good.len() {
            let _ = parse_pe(&good[..cut], "x");
            let _ = read_parts(&good[..cut]);
        }
        let mut b = good.clone();
        b[0x86] = 0xff; // 255 sections, table past the end
        assert!(parse_pe(&b, "x").is_err());
        let huge = fake_pe(&[(".linux", 0x1000, u32::MAX, u32::MAX, u32::MAX)], 0x800);
        assert!(read_parts(&huge).is_err());
        assert!(parse_pe(b"MZ", "x").is_err());
        assert!(parse_pe(b"", "x").is_err());
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
            );
            b[0x400..0x408].copy_from_slice(b"panic=-1");
            b[at] ^= byte;
            if let Ok(p) = read_parts(&b) {
                proptest::prop_assert!(p.initrd.len() + p.linux.len() <= b.len());
            }
        }
    }

    #[test]
    fn reads_parts_cut_to_virtual_size() {
        let mut b = fake_pe(
            &[
                (".cmdline", 0x1000, 9, 0x400, 0x200),
                (".initrd", 0x2000, 3, 0x600, 0x200),
                (".linux", 0x3000, 5, 0x800, 0x200),
            ],
            0xa00,
        );
        b[0x400..0x409].copy_from_slice(b"panic=-1\0");
        b[0x600..0x603].copy_from_slice(b"ird");
        b[0x800..0x805].copy_from_slice(b"linux");
        let p = read_parts(&b).unwrap();
        assert_eq!(p.cmdline, "panic=-1");
        assert_eq!(p.initrd, b"ird");
        assert_eq!(p.linux, b"linux");
        let no_linux = fake_pe(&[(".cmdline", 0x1000, 1, 0x400, 0x200)], 0x600);
        assert!(matches!(read_parts(&no_linux), Err(Error::Invalid { .. })));
    }

    #[test]
    fn checksum_matches_the_stub_when_installed() {
        // The stub's own CheckSum was computed by its linker; ours must agree.
        let Ok(stub) = std::fs::read(STUB) else {
            panic!("{STUB} missing: install systemd-boot-efi (run `cargo xtask setup`)");
        };
        let pe = parse_pe(&stub, "stub").unwrap();
        let stored = u32_at(&stub, pe.checksum_offset).unwrap();
        assert_eq!(pe_checksum(&stub, pe.checksum_offset), stored);
        let mut copy = stub.clone();
        set_timestamp(&mut copy, &pe, 1_700_000_000).unwrap();
        assert_eq!(u32_at(&copy, pe.timestamp_offset), Some(1_700_000_000));
        assert_ne!(copy, stub);
    }

    #[test]
    fn cmdline_rules() {
        check_cmdline("console=ttyS0 panic=-1").unwrap();
        check_cmdline(DEFAULT_CMDLINE).unwrap();
        for bad in ["", "   ", "a\nb", "caf\u{e9}", "x\0"] {
            assert!(
                matches!(check_cmdline(bad), Err(Error::Invalid { .. })),
                "{bad:?}"
            );
        }
        assert!(check_cmdline(&"a".repeat(MAX_CMDLINE)).is_ok());
        assert!(check_cmdline(&"a".repeat(MAX_CMDLINE + 1)).is_err());
    }
}

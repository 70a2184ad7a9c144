//! Unified Kernel Images (`stele uki build`): systemd's EFI stub plus `.osrel`, `.cmdline`,
//! `.initrd` and `.linux` sections added with objcopy, timestamp and checksum fixed for
//! reproducible bytes, optionally signed with sbsign. The PE reader is the verifier's
//! (`stele_verifier::uki`, shared with `stele update stage1`); [`read_parts`] copies the
//! sections out for the BIOS boot path of `stele disk create --bios`. Layout in
//! docs/FORMATS.md, "UKI".

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
pub use stele_verifier::uki::MAX_CMDLINE;
use stele_verifier::uki::{parse_pe, PeInfo};

use crate::tool::{Scratch, OBJCOPY, SBSIGN};
use crate::{Error, Result};

/// [`parse_pe`], its error naming `what`.
fn pe(b: &[u8], what: &'static str) -> Result<PeInfo> {
    parse_pe(b).map_err(|source| Error::Uki { what, source })
}

/// Debian's systemd EFI stub (package `systemd-boot-efi`).
pub const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
/// The package that ships [`STUB`].
pub const STUB_PACKAGE: &str = "systemd-boot-efi";
/// The stage-1 command line when none is given: a kernel panic reboots after 10 s, so an
/// unattended machine never stops at a panic.
pub const DEFAULT_CMDLINE: &str = "panic=10";
/// The `.osrel` content when no `--os-release` is given.
pub const DEFAULT_OS_RELEASE: &str = "NAME=\"stele\"\nID=stele\nPRETTY_NAME=\"stele stage 1\"\n";
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

fn bad(what: &'static str, why: impl Into<String>) -> Error {
    Error::invalid(what, why)
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
        if stub
            .sections
            .iter()
            .any(|s| stele_verifier::uki::stub_takes(s, name))
        {
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

/// Checks a stage-1 command line ([`stele_verifier::uki::check_cmdline`], the rule
/// `stele update stage1` applies too).
pub fn check_cmdline(c: &str) -> Result<()> {
    stele_verifier::uki::check_cmdline(c).map_err(|source| Error::Cmdline { source })
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
    let stub_pe = pe(&stub, "EFI stub")?;
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
    let info = pe(&bytes, "UKI")?;
    set_timestamp(&mut bytes, &info, spec.epoch)?;
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
    // The build refuses what `stele update stage1` and the disk builder would refuse (an
    // input objcopy left out, such as an empty initrd).
    stele_verifier::uki::parse(&bytes).map_err(|source| Error::Uki {
        what: "UKI built",
        source,
    })?;
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

/// Reads `.linux`, `.initrd` and `.cmdline` out of a UKI (signed or not)
/// ([`stele_verifier::uki::parse`]). Never panics on arbitrary bytes.
pub fn read_parts(b: &[u8]) -> Result<UkiParts> {
    let u = stele_verifier::uki::parse(b).map_err(|source| Error::Uki {
        what: "--uki",
        source,
    })?;
    Ok(UkiParts {
        linux: u.linux.to_vec(),
        initrd: u.initrd.to_vec(),
        cmdline: u.cmdline.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use stele_verifier::uki::{fake_pe, u32_at, CmdlineError};

    #[test]
    fn parses_sections_and_plans_after_the_last() {
        let b = fake_pe(
            &[
                (".text", 0x1000, 0x2345, 0x400, 0x2400),
                (".sbat", 0x4000, 0xe2, 0x2800, 0x200),
            ],
            0x3000,
            (0, 0),
        );
        let pe = parse_pe(&b).unwrap();
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
    fn reads_parts_and_names_the_input_in_errors() {
        let u = stele_verifier::uki::fake_uki("panic=-1", 0x2000, 3, false);
        let p = read_parts(&u).unwrap();
        assert_eq!(p.cmdline, "panic=-1");
        assert_eq!(p.initrd, vec![3u8; 0x100]);
        let e = read_parts(&u[..0x100]).unwrap_err();
        assert!(matches!(e, Error::Uki { what: "--uki", .. }), "{e}");
        assert_eq!(e.to_string(), "invalid --uki: truncated PE header");
    }

    #[test]
    fn checksum_matches_the_stub_when_installed() {
        // The stub's own CheckSum was computed by its linker; ours must agree.
        let Ok(stub) = std::fs::read(STUB) else {
            panic!("{STUB} missing: install systemd-boot-efi (run `cargo xtask setup`)");
        };
        let pe = parse_pe(&stub).unwrap();
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
        let e = check_cmdline(" ").unwrap_err();
        assert!(
            matches!(
                e,
                Error::Cmdline {
                    source: CmdlineError::Empty
                }
            ),
            "{e}"
        );
        assert!(e.to_string().starts_with("invalid --cmdline: "), "{e}");
    }
}

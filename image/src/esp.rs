//! The EFI system partition of `stele disk create --uki`: FAT32 (mkfs.vfat), the UKI as
//! `\EFI\BOOT\BOOTX64.EFI` (mtools), and with `--bios` SYSLINUX loading the UKI's own
//! kernel, initrd and command line, plus gptmbr.bin in the disk's boot code. Reproducible:
//! fixed volume id and label, timestamps from SOURCE_DATE_EPOCH. Layout in docs/FORMATS.md.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::tool::{Scratch, MCOPY, MKFS_VFAT, MMD, SYSLINUX};
use crate::uki::{read_parts, UkiParts};
use crate::{Error, Result};

/// One mebibyte.
const MIB: u64 = 1 << 20;
/// The FAT volume label.
pub const LABEL: &str = "STELE-ESP";
/// Where the firmware finds the UKI (the removable-media default boot path for x86-64).
pub const UKI_PATH: &str = "::/EFI/BOOT/BOOTX64.EFI";
/// The SYSLINUX directory and the files stele puts there.
pub const SYSLINUX_DIR: &str = "/SYSLINUX";
pub const BIOS_KERNEL: &str = "/SYSLINUX/VMLINUZ";
pub const BIOS_INITRD: &str = "/SYSLINUX/INITRD.IMG";
pub const BIOS_CONFIG: &str = "/SYSLINUX/SYSLINUX.CFG";
/// The smallest ESP: FAT32 with 512-byte clusters needs 65525 clusters (about 33 MiB).
pub const MIN_SIZE: u64 = 33 * MIB;
/// The smallest default ESP.
pub const DEFAULT_SIZE: u64 = 64 * MIB;
/// SYSLINUX's GPT boot code (package syslinux-common), written into LBA 0 with `--bios`.
pub const GPTMBR: &str = "/usr/lib/syslinux/mbr/gptmbr.bin";
/// Bytes of boot code in LBA 0 (before the disk signature and the partition entries).
pub const MBR_CODE_LEN: usize = 440;
/// FAT timestamps cannot go before 1980-01-01T00:00:00Z.
pub const FAT_EPOCH: u64 = 315_532_800;

/// The EFI system partition of a disk (`stele disk create --uki`).
#[derive(Clone, Debug)]
pub struct EspSpec {
    /// The stage-1 UKI, copied to `\EFI\BOOT\BOOTX64.EFI`.
    pub uki: PathBuf,
    /// The partition size (default: [`size`]).
    pub size: Option<u64>,
    /// Also boot from legacy BIOS (SYSLINUX, gptmbr.bin, the legacy-bootable attribute).
    pub bios: bool,
}

/// The FAT volume id of a disk: the first 4 bytes of `sha256(seed || "esp-volume-id")`.
pub fn volume_id(seed: &[u8]) -> u32 {
    let id = Sha256::digest([seed, b"esp-volume-id"].concat());
    u32::from_le_bytes([id[0], id[1], id[2], id[3]])
}

/// What goes on the ESP, read and checked before anything is written.
#[derive(Clone, Debug)]
pub struct EspContent {
    pub uki: PathBuf,
    pub uki_len: u64,
    /// The UKI's sections; SYSLINUX boots these when `bios`.
    pub parts: UkiParts,
    pub bios: bool,
}

impl EspContent {
    /// Reads `uki` and checks that it is a UKI with `.linux`, `.initrd` and `.cmdline`.
    /// Returns the content and the UKI's bytes (for the disk seed).
    pub fn load(uki: &Path, bios: bool) -> Result<(EspContent, Vec<u8>)> {
        let bytes = std::fs::read(uki).map_err(|e| Error::io("read", uki, e))?;
        let parts = read_parts(&bytes)?;
        Ok((
            EspContent {
                uki: uki.to_path_buf(),
                uki_len: bytes.len() as u64,
                parts,
                bios,
            },
            bytes,
        ))
    }

    /// Adds the ESP to the disk seed: `"esp" || size u64le || bios u8 || UKI bytes`.
    pub fn seed(&self, h: &mut Sha256, size: u64, uki_bytes: &[u8]) {
        h.update(b"esp");
        h.update(size.to_le_bytes());
        h.update([u8::from(self.bios)]);
        h.update(uki_bytes);
    }

    /// Bytes of files stele puts on the ESP.
    pub fn files_len(&self) -> u64 {
        let bios = if self.bios {
            (self.parts.linux.len() + self.parts.initrd.len()) as u64 + 256 * 1024
        } else {
            0
        };
        self.uki_len + bios
    }
}

/// The ESP size: room for the content twice (so `stele update stage1` can write a new UKI
/// beside the old one before switching to it) plus the FAT's own overhead, at least
/// [`MIN_SIZE`]; by default at least [`DEFAULT_SIZE`]. Whole MiB. Pure.
pub fn size(requested: Option<u64>, content_len: u64) -> Result<u64> {
    // Two FATs of 4 bytes per 512-byte cluster: 1/64 of the volume, plus directories.
    let twice = content_len.saturating_mul(2);
    let need = twice
        .saturating_add(twice / 60)
        .saturating_add(2 * MIB)
        .max(MIN_SIZE)
        .next_multiple_of(MIB);
    match requested {
        None => Ok(need.max(DEFAULT_SIZE)),
        Some(r) if r < need => Err(Error::invalid(
            "--esp-size",
            format!(
                "{r} bytes is too small: this ESP needs at least {} MiB (its files twice, for \
                 stage-1 updates, and FAT32's minimum of {} MiB)",
                need / MIB,
                MIN_SIZE / MIB
            ),
        )),
        Some(r) => Ok(r.next_multiple_of(MIB)),
    }
}

/// The SYSLINUX configuration: boot the one entry at once, no prompt, no way to edit the
/// command line at the console. Pure.
pub fn syslinux_cfg(cmdline: &str) -> String {
    format!(
        "# Written by stele disk create --bios: the UKI's kernel, initrd and command line.\n\
         DEFAULT stele\nPROMPT 0\nTIMEOUT 0\nNOESCAPE 1\nALLOWOPTIONS 0\n\
         LABEL stele\n  LINUX {BIOS_KERNEL}\n  INITRD {BIOS_INITRD}\n  APPEND {cmdline}\n"
    )
}

/// Where the partition is and how to stamp it.
#[derive(Clone, Copy, Debug)]
pub struct EspPlace {
    /// Byte offset and length of the partition on the disk.
    pub offset: u64,
    pub len: u64,
    /// The FAT volume id (derived from the disk seed).
    pub volume_id: u32,
    /// SOURCE_DATE_EPOCH.
    pub epoch: u64,
}

/// Formats the ESP and fills it, in a file of its own beside `disk_path`, then copies it
/// into the disk (open as `disk`) at `at.offset`.
///
/// Not in place (mtools' `-i DISK@@OFFSET`): mtools 4.0.32 (Debian 12) loses track of a
/// FAT inside an image file larger than about 256 MiB (`mmd ::/EFI ::/EFI/BOOT` then says
/// `File "::/EFI/BOOT" not found`), so any disk with real slots would fail.
pub fn write(disk_path: &Path, disk: &mut File, at: &EspPlace, c: &EspContent) -> Result<()> {
    let work = Scratch::beside(disk_path)?;
    let esp = work.join("esp.img");
    File::create(&esp)
        .and_then(|f| f.set_len(at.len))
        .map_err(|e| Error::io("create", &esp, e))?;
    let mut mkfs = MKFS_VFAT.command()?;
    mkfs.args(["-F", "32", "-S", "512", "--invariant"])
        .arg("-i")
        .arg(format!("{:08x}", at.volume_id))
        .args(["-n", LABEL])
        // The hidden sectors of the boot sector: where the partition starts on the disk.
        .arg("-h")
        .arg((at.offset / 512).to_string())
        .arg(&esp)
        .arg((at.len / 1024).to_string());
    MKFS_VFAT.run(&mut mkfs)?;
    let fat_epoch = at.epoch.max(FAT_EPOCH).to_string();
    let mtools = |t: &crate::tool::Tool| -> Result<std::process::Command> {
        let mut c = t.command()?;
        c.env("SOURCE_DATE_EPOCH", &fat_epoch)
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(&esp);
        Ok(c)
    };
    let mut dirs = vec!["::/EFI", "::/EFI/BOOT"];
    if c.bios {
        dirs.push("::/SYSLINUX");
    }
    MMD.run(mtools(&MMD)?.args(&dirs))?;
    MCOPY.run(mtools(&MCOPY)?.arg(&c.uki).arg(UKI_PATH))?;
    if c.bios {
        for (name, dest, bytes) in [
            ("vmlinuz", BIOS_KERNEL, c.parts.linux.as_slice()),
            ("initrd", BIOS_INITRD, c.parts.initrd.as_slice()),
            (
                "cfg",
                BIOS_CONFIG,
                syslinux_cfg(&c.parts.cmdline).as_bytes(),
            ),
        ] {
            let src = work.write(name, bytes)?;
            MCOPY.run(mtools(&MCOPY)?.arg(src).arg(format!("::{dest}")))?;
        }
        let mut sl = SYSLINUX.command()?;
        sl.env("SOURCE_DATE_EPOCH", &fat_epoch)
            .args(["--directory", SYSLINUX_DIR, "--install"])
            .arg(&esp);
        SYSLINUX.run(&mut sl)?;
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&esp)
            .map_err(|e| Error::io("open", &esp, e))?;
        copy_boot_sector_to_backup(&mut f, 0).map_err(|e| Error::io("update", &esp, e))?;
    }
    let mut f = File::open(&esp).map_err(|e| Error::io("open", &esp, e))?;
    let block_device = {
        use std::os::unix::fs::FileTypeExt;
        disk.metadata()
            .is_ok_and(|m| m.file_type().is_block_device())
    };
    copy_into(&mut f, at.len, disk, at.offset, !block_device)
        .map_err(|e| Error::io("write the ESP into", disk_path, e))?;
    if c.bios {
        write_mbr_boot_code(disk)
            .map_err(|e| Error::io("update the boot code of", disk_path, e))?;
    }
    Ok(())
}

/// Copies the `len` bytes of `src` into `disk` at `offset`. Into a regular file (a new
/// disk image, all holes) blocks of zeros are skipped, so the image stays sparse and its
/// block map small; onto a block device everything is written.
fn copy_into<R: Read, D: Write + Seek>(
    src: &mut R,
    len: u64,
    disk: &mut D,
    offset: u64,
    skip_zeros: bool,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < len {
        let n = usize::try_from(len - done).map_or(buf.len(), |r| r.min(buf.len()));
        src.read_exact(&mut buf[..n])?;
        for (i, block) in buf[..n].chunks(4096).enumerate() {
            if !(skip_zeros && block.iter().all(|&b| b == 0)) {
                disk.seek(SeekFrom::Start(offset + done + i as u64 * 4096))?;
                disk.write_all(block)?;
            }
        }
        done += n as u64;
    }
    Ok(())
}

/// SYSLINUX rewrites the FAT32 boot sector only: copy it to the backup boot sector (BPB
/// `BPB_BkBootSec`, offset 50) so that the two agree, as fsck.vfat expects.
fn copy_boot_sector_to_backup<D: Read + Write + Seek>(
    disk: &mut D,
    offset: u64,
) -> std::io::Result<()> {
    let mut bs = [0u8; 512];
    disk.seek(SeekFrom::Start(offset))?;
    disk.read_exact(&mut bs)?;
    let backup = u64::from(u16::from_le_bytes([bs[50], bs[51]]));
    if backup == 0 || backup == 0xffff {
        return Ok(());
    }
    disk.seek(SeekFrom::Start(offset + backup * 512))?;
    disk.write_all(&bs)
}

/// Puts gptmbr.bin's 440 bytes of boot code in front of the protective MBR's partition
/// table (which stays as the GPT writer made it).
fn write_mbr_boot_code<D: Write + Seek>(disk: &mut D) -> std::io::Result<()> {
    let code = std::fs::read(GPTMBR).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("{GPTMBR}: {e} (install the Debian package syslinux-common, or run `cargo xtask setup`)"),
        )
    })?;
    if code.len() < MBR_CODE_LEN {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{GPTMBR} is {} bytes, expected {MBR_CODE_LEN}", code.len()),
        ));
    }
    disk.seek(SeekFrom::Start(0))?;
    disk.write_all(&code[..MBR_CODE_LEN])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn copy_into_skips_zero_blocks_only_when_asked() {
        let mut src = vec![0u8; 3 * 4096];
        src[4096 + 5] = 7;
        for skip in [true, false] {
            let mut disk = Cursor::new(vec![0xAAu8; 5 * 4096]);
            copy_into(&mut Cursor::new(&src), 3 * 4096, &mut disk, 4096, skip).unwrap();
            let d = disk.into_inner();
            assert_eq!(d[..4096], [0xAA; 4096], "before the offset");
            assert_eq!(d[2 * 4096 + 5], 7);
            let zeros_kept = d[4096..2 * 4096].iter().all(|&b| b == 0xAA);
            assert_eq!(zeros_kept, skip, "skip={skip}");
            assert_eq!(d[4 * 4096..], [0xAA; 4096], "after the ESP");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(size(None, MIB).unwrap(), DEFAULT_SIZE);
        let big = size(None, 40 * MIB).unwrap();
        assert!(
            big >= 80 * MIB + 2 * MIB && big.is_multiple_of(MIB),
            "{big}"
        );
        assert_eq!(size(Some(100 * MIB + 1), MIB).unwrap(), 101 * MIB);
        assert!(matches!(
            size(Some(32 * MIB), MIB),
            Err(Error::Invalid { .. })
        ));
        let e = size(Some(64 * MIB), 40 * MIB).unwrap_err().to_string();
        assert!(e.contains("needs at least"), "{e}");
        assert_eq!(size(Some(MIN_SIZE), MIB).unwrap(), MIN_SIZE);
    }

    #[test]
    fn syslinux_config_boots_at_once_and_locks_the_command_line() {
        let c = syslinux_cfg("console=ttyS0 panic=-1");
        for line in [
            "PROMPT 0",
            "TIMEOUT 0",
            "NOESCAPE 1",
            "ALLOWOPTIONS 0",
            "APPEND console=ttyS0 panic=-1",
        ] {
            assert!(c.lines().any(|l| l.trim() == line), "{line} missing:\n{c}");
        }
        assert!(c.contains(BIOS_KERNEL) && c.contains(BIOS_INITRD));
    }

    #[test]
    fn backup_boot_sector_follows_the_primary() {
        let mut d = vec![0u8; 4096 + 8 * 512];
        d[4096..4096 + 512].fill(0xAB);
        d[4096 + 50..4096 + 52].copy_from_slice(&6u16.to_le_bytes());
        let mut c = Cursor::new(d);
        copy_boot_sector_to_backup(&mut c, 4096).unwrap();
        let d = c.into_inner();
        assert_eq!(&d[4096 + 6 * 512..4096 + 7 * 512], &d[4096..4096 + 512]);
        assert!(d[..4096].iter().all(|&b| b == 0));
    }
}

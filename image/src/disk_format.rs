//! `stele disk create --format`: the raw GPT disk converted for VM hosts with `qemu-img`
//! (qcow2, vmdk, vhdx), reproducibly: qemu-img writes a random VMDK content id (`CID=`)
//! and random VHDX GUIDs and sequence numbers, which are replaced by values derived from
//! the disk's GPT GUID (docs/FORMATS.md "Disk formats"; the VHDX part in vhdx.rs).

use std::path::Path;

use crate::tool::Tool;
use crate::{Error, Result};

/// qemu-img, from Debian's qemu-utils.
pub const QEMU_IMG: Tool = Tool {
    name: "qemu-img",
    package: "qemu-utils",
};

/// The formats `stele disk create` writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DiskFormat {
    /// The GPT disk as it is (for `dd`, `bmaptool`, QEMU `format=raw`).
    #[default]
    Raw,
    /// QEMU's copy-on-write format (libvirt, Proxmox, OpenStack).
    Qcow2,
    /// VMware's monolithic sparse disk (also VirtualBox).
    Vmdk,
    /// Hyper-V's dynamic disk (also Azure Stack HCI).
    Vhdx,
}

impl DiskFormat {
    /// qemu-img's name of the format.
    pub fn name(self) -> &'static str {
        match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Vmdk => "vmdk",
            DiskFormat::Vhdx => "vhdx",
        }
    }
}

impl std::str::FromStr for DiskFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "raw" => Ok(DiskFormat::Raw),
            "qcow2" => Ok(DiskFormat::Qcow2),
            "vmdk" => Ok(DiskFormat::Vmdk),
            "vhdx" => Ok(DiskFormat::Vhdx),
            _ => Err(format!(
                "unknown disk format {s:?}: expected raw, qcow2, vmdk or vhdx"
            )),
        }
    }
}

/// Converts the raw disk `raw` into `out` (a scratch path; the caller renames it into
/// place) as `format` with `qemu-img convert`, then makes the result reproducible.
pub fn convert(raw: &Path, out: &Path, format: DiskFormat) -> Result<()> {
    let mut cmd = QEMU_IMG.command()?;
    cmd.args(["convert", "-f", "raw", "-O", format.name()])
        .arg(raw)
        .arg(out);
    QEMU_IMG.run(&mut cmd)?;
    let mut gpt = [0u8; 1024];
    let mut f = std::fs::File::open(raw).map_err(|e| Error::io("open", raw, e))?;
    std::io::Read::read_exact(&mut f, &mut gpt).map_err(|e| Error::io("read", raw, e))?;
    let mut disk_guid = [0u8; 16];
    disk_guid.copy_from_slice(&gpt[512 + 56..512 + 72]);
    if format == DiskFormat::Vhdx {
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(out)
            .map_err(|e| Error::io("open", out, e))?;
        crate::vhdx::set_ids(&mut f, &disk_guid)
            .map_err(|e| Error::io("rewrite the ids of", out, e))?;
        f.sync_all().map_err(|e| Error::io("sync", out, e))?;
    }
    if format == DiskFormat::Vmdk {
        let cid = cid_of(&disk_guid);
        let mut bytes = std::fs::read(out).map_err(|e| Error::io("read", out, e))?;
        set_vmdk_cid(&mut bytes, cid)
            .ok_or_else(|| Error::invalid("qemu-img's vmdk", "no CID= in its descriptor"))?;
        std::fs::write(out, bytes).map_err(|e| Error::io("write", out, e))?;
    }
    Ok(())
}

/// The VMDK content id for a disk whose GPT disk GUID is `guid`: its first four bytes,
/// little-endian, never `ffffffff` (which means "no parent"). Pure.
pub fn cid_of(guid: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    for (d, s) in b.iter_mut().zip(guid) {
        *d = *s;
    }
    match u32::from_le_bytes(b) {
        u32::MAX => u32::MAX - 1,
        c => c,
    }
}

/// Rewrites the `CID=` line of a monolithic sparse VMDK's embedded descriptor (header:
/// magic `KDMV`, descriptor offset and size in sectors at bytes 28 and 36) to `cid` as 8
/// hex digits, the rest of the descriptor moved up or down and zero-padded to its size.
/// `None` when `vmdk` has no such descriptor or line. Pure.
pub fn set_vmdk_cid(vmdk: &mut [u8], cid: u32) -> Option<()> {
    let u64_at = |o: usize| -> Option<u64> {
        Some(u64::from_le_bytes(vmdk.get(o..o + 8)?.try_into().ok()?))
    };
    if vmdk.get(..4)? != b"KDMV" {
        return None;
    }
    let start = usize::try_from(u64_at(28)?.checked_mul(512)?).ok()?;
    let len = usize::try_from(u64_at(36)?.checked_mul(512)?).ok()?;
    let area = vmdk.get_mut(start..start.checked_add(len)?)?;
    let end = area.iter().position(|&b| b == 0).unwrap_or(area.len());
    let text = std::str::from_utf8(&area[..end]).ok()?;
    let mut found = false;
    let mut new = String::with_capacity(text.len() + 8);
    for line in text.split_inclusive('\n') {
        if line.starts_with("CID=") {
            found = true;
            new.push_str(&format!("CID={cid:08x}\n"));
        } else {
            new.push_str(line);
        }
    }
    if !found || new.len() > area.len() {
        return None;
    }
    area.fill(0);
    area[..new.len()].copy_from_slice(new.as_bytes());
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vmdk(descriptor: &str) -> Vec<u8> {
        let mut v = vec![0u8; 4 * 512];
        v[..4].copy_from_slice(b"KDMV");
        v[28..36].copy_from_slice(&1u64.to_le_bytes());
        v[36..44].copy_from_slice(&2u64.to_le_bytes());
        v[512..512 + descriptor.len()].copy_from_slice(descriptor.as_bytes());
        v
    }

    #[test]
    fn the_vmdk_content_id_is_set_and_the_rest_kept() {
        let mut v = vmdk("# Disk DescriptorFile\nversion=1\nCID=e4123f8\nparentCID=ffffffff\n");
        set_vmdk_cid(&mut v, 0x0102_0304).unwrap();
        let want = "# Disk DescriptorFile\nversion=1\nCID=01020304\nparentCID=ffffffff\n";
        assert_eq!(&v[512..512 + want.len()], want.as_bytes());
        assert!(v[512 + want.len()..].iter().all(|&b| b == 0));
        assert_eq!(set_vmdk_cid(&mut vmdk("version=1\n"), 1), None);
        assert_eq!(set_vmdk_cid(&mut [0u8; 16], 1), None);
        let mut bad = vmdk("CID=1\n");
        bad[36..44].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(set_vmdk_cid(&mut bad, 1), None);
    }

    #[test]
    fn content_ids_come_from_the_disk_guid() {
        assert_eq!(cid_of(&[4, 3, 2, 1, 9, 9]), 0x0102_0304);
        assert_eq!(cid_of(&[0xff; 16]), 0xffff_fffe);
    }
}

//! Device-mapper through /dev/mapper/control: payloads built as bytes (pure, tested), one
//! `do_ioctl` entry point, and activation as create → table load → resume (remove on failure).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;

use crate::{Error, Result};

/// Size of `struct dm_ioctl` (linux/dm-ioctl.h).
pub const DM_IOCTL_SIZE: usize = DM_IOCTL_SIZE_U32 as usize;
const DM_IOCTL_SIZE_U32: u32 = 312;
/// Size of `struct dm_target_spec`.
pub const DM_TARGET_SPEC_SIZE: usize = 40;
/// `DM_NAME_LEN`.
pub const DM_NAME_LEN: usize = 128;
/// Interface version we speak (major 4).
pub const DM_VERSION: [u32; 3] = [4, 0, 0];
/// `DM_READONLY_FLAG`.
pub const DM_READONLY_FLAG: u32 = 1 << 0;
/// Size of reply buffers.
const REPLY_SIZE: usize = 16384;

/// The dm ioctl commands we use (`_IOWR(0xfd, nr, struct dm_ioctl)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    Version = 0,
    DevCreate = 3,
    DevRemove = 4,
    DevSuspend = 6,
    TableLoad = 9,
}

impl Cmd {
    /// The ioctl request number.
    pub fn request(self) -> u32 {
        // _IOWR: dir=3 (read|write) << 30, size << 16, type << 8, nr.
        (3u32 << 30) | (DM_IOCTL_SIZE_U32 << 16) | (0xfd << 8) | self as u32
    }
    fn name(self) -> &'static str {
        match self {
            Cmd::Version => "DM_VERSION",
            Cmd::DevCreate => "DM_DEV_CREATE",
            Cmd::DevRemove => "DM_DEV_REMOVE",
            Cmd::DevSuspend => "DM_DEV_SUSPEND",
            Cmd::TableLoad => "DM_TABLE_LOAD",
        }
    }
}

fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() >= DM_NAME_LEN || name.bytes().any(|b| b == 0 || b == b'/') {
        return Err(Error::DeviceMapper(format!("bad device name {name:?}")));
    }
    Ok(())
}

/// The `struct dm_ioctl` header: version, sizes, flags and the device name.
/// `total` is `data_size` (header plus payload).
pub fn header(name: &str, flags: u32, target_count: u32, total: usize) -> Result<Vec<u8>> {
    check_name(name)?;
    let size = u32::try_from(total)
        .map_err(|_| Error::DeviceMapper("payload larger than 4 GiB".into()))?;
    let mut b = vec![0u8; total.max(DM_IOCTL_SIZE)];
    put_u32(&mut b, 0, DM_VERSION[0]);
    put_u32(&mut b, 4, DM_VERSION[1]);
    put_u32(&mut b, 8, DM_VERSION[2]);
    put_u32(&mut b, 12, size);
    put_u32(&mut b, 16, DM_IOCTL_SIZE_U32); // data_start
    put_u32(&mut b, 20, target_count);
    put_u32(&mut b, 28, flags);
    b[48..48 + name.len()].copy_from_slice(name.as_bytes());
    Ok(b)
}

/// A header-only request (create, resume, remove, status, version) with room for a reply.
pub fn simple(name: &str, flags: u32) -> Result<Vec<u8>> {
    header(name, flags, 0, REPLY_SIZE)
}

/// DM_TABLE_LOAD payload: header, one `dm_target_spec`, the NUL-terminated params padded
/// to 8 bytes.
pub fn table_load(
    name: &str,
    readonly: bool,
    target: &str,
    start_sector: u64,
    length_sectors: u64,
    params: &str,
) -> Result<Vec<u8>> {
    if target.is_empty() || target.len() >= 16 || params.contains('\0') {
        return Err(Error::DeviceMapper(format!(
            "bad target {target:?} or params"
        )));
    }
    let params_len = (params.len() + 1).div_ceil(8) * 8;
    let spec_len = DM_TARGET_SPEC_SIZE + params_len;
    let total = DM_IOCTL_SIZE + spec_len;
    let flags = if readonly { DM_READONLY_FLAG } else { 0 };
    let mut b = header(name, flags, 1, total)?;
    let s = DM_IOCTL_SIZE;
    put_u64(&mut b, s, start_sector);
    put_u64(&mut b, s + 8, length_sectors);
    // status (s+16) stays 0; next = offset of the following spec from this one.
    put_u32(
        &mut b,
        s + 20,
        u32::try_from(spec_len).map_err(|_| Error::DeviceMapper("params too long".into()))?,
    );
    b[s + 24..s + 24 + target.len()].copy_from_slice(target.as_bytes());
    let p = s + DM_TARGET_SPEC_SIZE;
    b[p..p + params.len()].copy_from_slice(params.as_bytes());
    Ok(b)
}

/// The device number in a reply (`dev`, huge_encode_dev) as (major, minor).
pub fn reply_dev(reply: &[u8]) -> Result<(u32, u32)> {
    let raw = reply
        .get(40..48)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .ok_or_else(|| Error::DeviceMapper("short reply".into()))?;
    let dev = u64::from_le_bytes(raw);
    let major = u32::try_from((dev & 0xfff00) >> 8).unwrap_or(0);
    let minor = u32::try_from((dev & 0xff) | ((dev >> 12) & 0xfff00)).unwrap_or(0);
    Ok((major, minor))
}

/// The interface version in a reply.
pub fn reply_version(reply: &[u8]) -> Option<[u32; 3]> {
    let g = |o: usize| {
        reply
            .get(o..o + 4)
            .and_then(|s| <[u8; 4]>::try_from(s).ok())
            .map(u32::from_le_bytes)
    };
    Some([g(0)?, g(4)?, g(8)?])
}

/// Runs one dm ioctl on the control device; `buf` is the request and receives the reply.
pub fn do_ioctl(ctl: &File, cmd: Cmd, buf: &mut [u8], name: &str) -> Result<()> {
    if buf.len() < DM_IOCTL_SIZE {
        return Err(Error::DeviceMapper("request buffer too small".into()));
    }
    // The kernel trusts the header's data_size (offset 12) as the buffer's length.
    let data_size = buf
        .get(12..16)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .and_then(|n| usize::try_from(n).ok());
    if !matches!(data_size, Some(n) if (DM_IOCTL_SIZE..=buf.len()).contains(&n)) {
        return Err(Error::DeviceMapper(format!(
            "request header data_size {data_size:?} does not fit the {}-byte buffer",
            buf.len()
        )));
    }
    // SAFETY: `buf` is a live, exclusively borrowed buffer of at least DM_IOCTL_SIZE bytes
    // and its header's data_size, checked just above, does not exceed buf.len(); the kernel
    // reads and writes at most data_size bytes of it. The fd is a valid open control device.
    let r = unsafe {
        libc::ioctl(
            ctl.as_raw_fd(),
            cmd.request() as libc::Ioctl,
            buf.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(Error::sys(
            cmd.name(),
            name.to_string(),
            nix::errno::Errno::last(),
        ));
    }
    Ok(())
}

/// Opens /dev/mapper/control and checks the interface major version.
pub fn open_control() -> Result<File> {
    let path = "/dev/mapper/control";
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("open", path, e))?;
    let mut b = simple("stele-version", 0)?;
    do_ioctl(&ctl, Cmd::Version, &mut b, path)?;
    match reply_version(&b) {
        Some([4, ..]) => Ok(ctl),
        v => Err(Error::DeviceMapper(format!(
            "unsupported device-mapper interface version {v:?} (need 4.x)"
        ))),
    }
}

/// Creates `name` with one read-only target and resumes it. Returns (major, minor).
pub fn activate(name: &str, target: &str, length_sectors: u64, params: &str) -> Result<(u32, u32)> {
    let ctl = open_control()?;
    let mut b = simple(name, 0)?;
    do_ioctl(&ctl, Cmd::DevCreate, &mut b, name)?;
    let mut t = table_load(name, true, target, 0, length_sectors, params)?;
    let loaded = do_ioctl(&ctl, Cmd::TableLoad, &mut t, name).and_then(|()| {
        let mut r = simple(name, 0)?;
        do_ioctl(&ctl, Cmd::DevSuspend, &mut r, name)?;
        reply_dev(&r)
    });
    if loaded.is_err() {
        let mut r = simple(name, 0)?;
        let _ = do_ioctl(&ctl, Cmd::DevRemove, &mut r, name);
    }
    loaded
}

/// Removes `name` (best effort cleanup after a refused slot).
pub fn remove(name: &str) -> Result<()> {
    let ctl = open_control()?;
    let mut b = simple(name, 0)?;
    do_ioctl(&ctl, Cmd::DevRemove, &mut b, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_numbers_match_the_kernel_header() {
        assert_eq!(Cmd::Version.request(), 0xc138_fd00);
        assert_eq!(Cmd::DevCreate.request(), 0xc138_fd03);
        assert_eq!(Cmd::DevSuspend.request(), 0xc138_fd06);
        assert_eq!(Cmd::TableLoad.request(), 0xc138_fd09);
    }

    #[test]
    fn header_bytes() {
        let b = header("stele-root-a", DM_READONLY_FLAG, 0, DM_IOCTL_SIZE).unwrap();
        assert_eq!(b.len(), 312);
        assert_eq!(&b[0..12], &[4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[12..16], &312u32.to_le_bytes());
        assert_eq!(&b[16..20], &312u32.to_le_bytes());
        assert_eq!(&b[28..32], &1u32.to_le_bytes());
        assert_eq!(&b[48..60], b"stele-root-a");
        assert!(b[60..].iter().all(|&x| x == 0));
    }

    #[test]
    fn table_load_exact_bytes() {
        let b = table_load("v", true, "verity", 0, 16, "1 2 3").unwrap();
        // params "1 2 3" + NUL = 6 bytes, padded to 8.
        assert_eq!(b.len(), 312 + 40 + 8);
        assert_eq!(&b[12..16], &360u32.to_le_bytes()); // data_size
        assert_eq!(&b[20..24], &1u32.to_le_bytes()); // target_count
        assert_eq!(&b[28..32], &DM_READONLY_FLAG.to_le_bytes());
        let s = &b[312..];
        assert_eq!(&s[0..8], &0u64.to_le_bytes()); // sector_start
        assert_eq!(&s[8..16], &16u64.to_le_bytes()); // length
        assert_eq!(&s[16..20], &[0; 4]); // status
        assert_eq!(&s[20..24], &48u32.to_le_bytes()); // next
        assert_eq!(&s[24..30], b"verity");
        assert!(s[30..40].iter().all(|&x| x == 0));
        assert_eq!(&s[40..48], b"1 2 3\0\0\0");
        // Exactly 8 bytes of params with the NUL: padded to 16.
        let b = table_load("v", false, "verity", 0, 8, "12345678").unwrap();
        assert_eq!(b.len(), 312 + 40 + 16);
        assert_eq!(&b[28..32], &[0; 4]);
        assert_eq!(b[312 + 40 + 8], 0);
    }

    #[test]
    fn rejects_bad_names() {
        assert!(header("", 0, 0, 312).is_err());
        assert!(header(&"x".repeat(128), 0, 0, 312).is_err());
        assert!(header("a/b", 0, 0, 312).is_err());
        assert!(table_load("v", true, "a-very-long-target-name", 0, 1, "").is_err());
    }

    #[test]
    fn decodes_reply_dev() {
        let mut b = vec![0u8; 312];
        // major 253, minor 0x123: (0x23) | (253 << 8) | (0x100 << 12)
        let dev: u64 = 0x23 | (253 << 8) | (0x100 << 12);
        b[40..48].copy_from_slice(&dev.to_le_bytes());
        assert_eq!(reply_dev(&b).unwrap(), (253, 0x123));
        assert!(reply_dev(&b[..20]).is_err());
    }

    /// A header whose data_size exceeds the buffer never reaches the kernel.
    #[test]
    fn oversized_data_size_is_refused_before_the_ioctl() {
        let ctl = File::open("/dev/null").unwrap();
        let mut b = vec![0u8; DM_IOCTL_SIZE];
        put_u32(&mut b, 12, 4096);
        let e = do_ioctl(&ctl, Cmd::Version, &mut b, "test").unwrap_err();
        assert!(e.to_string().contains("does not fit"), "{e}");
    }
}

//! Growing the data partition in place: telling the kernel a partition's new size
//! (BLKPG_RESIZE_PARTITION, linux/blkpg.h) and growing a mounted ext4
//! (EXT4_IOC_RESIZE_FS, fs/ext4/ext4.h). Errors are the kernel's errno, as
//! `std::io::Error`: the caller ([`crate::grow`]) names the step.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// `BLKPG_RESIZE_PARTITION`: the op of a BLKPG call that changes a partition's length.
const BLKPG_RESIZE_PARTITION: libc::c_int = 3;
/// `BLKPG_DEVNAMELTH`, `BLKPG_VOLNAMELTH`.
const NAME_LEN: usize = 64;

/// `struct blkpg_partition`.
#[repr(C)]
struct BlkpgPartition {
    start: libc::c_longlong,
    length: libc::c_longlong,
    pno: libc::c_int,
    devname: [libc::c_char; NAME_LEN],
    volname: [libc::c_char; NAME_LEN],
}

/// `struct blkpg_ioctl_arg`.
#[repr(C)]
struct BlkpgIoctlArg {
    op: libc::c_int,
    flags: libc::c_int,
    datalen: libc::c_int,
    data: *mut libc::c_void,
}

nix::ioctl_write_ptr_bad!(blkpg, nix::request_code_none!(0x12, 105), BlkpgIoctlArg);
nix::ioctl_write_ptr!(ext4_ioc_resize_fs, b'f', 16, u64);

fn signed(x: u64) -> io::Result<libc::c_longlong> {
    libc::c_longlong::try_from(x).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Tells the kernel that partition `pno` of the whole disk `disk` now spans `len` bytes
/// from byte `start` (its start unchanged). Nothing is written to the disk.
pub fn resize_partition(disk: &File, pno: u32, start: u64, len: u64) -> io::Result<()> {
    let mut part = BlkpgPartition {
        start: signed(start)?,
        length: signed(len)?,
        pno: libc::c_int::try_from(pno)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?,
        devname: [0; NAME_LEN],
        volname: [0; NAME_LEN],
    };
    let arg = BlkpgIoctlArg {
        op: BLKPG_RESIZE_PARTITION,
        flags: 0,
        // The struct is 152 bytes: always fits.
        datalen: libc::c_int::try_from(std::mem::size_of::<BlkpgPartition>()).unwrap_or(0),
        data: std::ptr::addr_of_mut!(part).cast(),
    };
    // SAFETY: BLKPG reads one blkpg_ioctl_arg through the pointer, and through its `data`
    // one blkpg_partition of `datalen` bytes; both are live locals of the C layout
    // (#[repr(C)]) for the whole call; the fd is an open whole-disk block device.
    unsafe { blkpg(disk.as_raw_fd(), &arg) }?;
    Ok(())
}

/// Grows the ext4 filesystem mounted where `dir` (a directory of it, open) is to `blocks`
/// blocks; the kernel journals the change.
pub fn resize_ext4(dir: &File, blocks: u64) -> io::Result<()> {
    // SAFETY: EXT4_IOC_RESIZE_FS reads one u64 through the pointer, which points to a live
    // local; the fd is an open directory (any file of the filesystem will do).
    unsafe { ext4_ioc_resize_fs(dir.as_raw_fd(), &blocks) }?;
    Ok(())
}

//! The data partition fills the disk (docs/BOOT.md "The data partition fills the disk"):
//! PID 1's side of [`stele_verifier::data_grow`]. Before the data partition is mounted,
//! [`Grow::table`] grows it in the GPT of its disk and tells the kernel; once it is
//! mounted, [`Grow::finish`] grows its ext4 and logs one line. Never stops a boot: a
//! failure is one warning and the data partition keeps its size.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;

use stele_verifier::data_grow::{self, Machine, SUPERBLOCK};
use stele_verifier::gpt::SECTOR;

use crate::devices::BlockDev;
use crate::sys::{self, blk};
use crate::{debug, info, warn};

/// The data partition's disk and the kernel, as [`data_grow`] uses them.
#[derive(Debug)]
struct Device {
    disk: File,
    part: File,
    /// The partition's number on its disk (sysfs `partition`).
    pno: u32,
    /// Where the partition is (to be) mounted.
    mountpoint: String,
}

fn sysfs(dev: &str, file: &str) -> io::Result<String> {
    let p = format!("/sys/class/block/{dev}/{file}");
    Ok(std::fs::read_to_string(p)?.trim().to_owned())
}

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

impl Device {
    fn open(data: &BlockDev, mountpoint: &str) -> io::Result<Device> {
        let disk = data
            .disk
            .as_deref()
            .ok_or_else(|| invalid("its disk is not known in sysfs".into()))?;
        let sector = sysfs(disk, "queue/logical_block_size")?;
        if sector != SECTOR.to_string() {
            return Err(invalid(format!(
                "/dev/{disk} has {sector}-byte sectors; stele's GPT has {SECTOR}-byte ones"
            )));
        }
        let pno = sysfs(&data.devname, "partition")?
            .parse()
            .map_err(|_| invalid("no partition number in sysfs".into()))?;
        let rw = |p: &str| OpenOptions::new().read(true).write(true).open(p);
        Ok(Device {
            disk: rw(&format!("/dev/{disk}"))?,
            part: File::open(data.path())?,
            pno,
            mountpoint: mountpoint.to_owned(),
        })
    }
}

fn size(f: &File) -> io::Result<u64> {
    sys::block_size(f, "").map_err(|e| io::Error::other(e.to_string()))
}

impl Machine for Device {
    type Disk = File;
    fn disk(&mut self) -> io::Result<(&mut File, u64)> {
        let len = size(&self.disk)?;
        Ok((&mut self.disk, len))
    }
    fn flush(disk: &mut File) -> io::Result<()> {
        disk.sync_data()
    }
    fn resize_partition(&mut self, start: u64, len: u64) -> io::Result<()> {
        blk::resize_partition(&self.disk, self.pno, start, len)
    }
    fn partition_len(&mut self) -> io::Result<u64> {
        size(&self.part)
    }
    fn superblock(&mut self) -> io::Result<Vec<u8>> {
        // Buffered: the mounted filesystem's superblock lives in the same page cache.
        let mut sb = vec![0u8; SUPERBLOCK.1];
        self.part.read_exact_at(&mut sb, SUPERBLOCK.0)?;
        Ok(sb)
    }
    fn resize_fs(&mut self, blocks: u64) -> io::Result<()> {
        blk::resize_ext4(&File::open(&self.mountpoint)?, blocks)
    }
}

/// A grow under way: the device and what the table step did.
#[derive(Debug)]
pub struct Grow {
    path: String,
    device: Device,
    table: Option<(u64, u64)>,
}

impl Grow {
    /// Step 1, before `data` (GPT name `name`) is mounted at `mountpoint`: the GPT and the
    /// kernel's idea of the partition. `None` (after a warning) when the grow cannot go on.
    pub fn table(data: &BlockDev, name: &str, mountpoint: &str) -> Option<Grow> {
        let path = data.path();
        let mut device = match Device::open(data, mountpoint) {
            Ok(d) => d,
            Err(e) => {
                warn!("{}", not_grown(&path, &e.to_string()));
                return None;
            }
        };
        let table = match data_grow::table(&mut device, name) {
            Ok(t) => t,
            Err(e) => {
                warn!("{}", not_grown(&path, &e.to_string()));
                None
            }
        };
        if let Some((a, b)) = table {
            debug!("data partition {path}: table grown ({a} -> {b} bytes), mounting it to grow its filesystem");
        }
        Some(Grow {
            path,
            device,
            table,
        })
    }

    /// Step 2, once the partition is mounted (`mounted`): the filesystem; then the one line.
    pub fn finish(mut self, mounted: bool) {
        let fs = if mounted {
            match data_grow::filesystem(&mut self.device) {
                Ok(f) => f,
                Err(e) => {
                    warn!("{}", not_grown(&self.path, &e.to_string()));
                    None
                }
            }
        } else {
            None
        };
        match grown_line(&self.path, self.table, fs) {
            Some(line) => info!("{line}"),
            None => debug!("data partition {}: nothing to grow", self.path),
        }
    }
}

/// The warning of a grow that failed. Pure.
pub fn not_grown(path: &str, why: &str) -> String {
    format!("data partition {path} not grown: {why}; it keeps its size (boot.toml grow_data = false turns the grow off)")
}

fn mib(b: u64) -> String {
    const MIB: u64 = 1 << 20;
    if b.is_multiple_of(MIB) {
        format!("{} MiB", b / MIB)
    } else {
        // Display only.
        #[allow(clippy::cast_precision_loss)]
        let m = b as f64 / MIB as f64;
        format!("{m:.1} MiB")
    }
}

/// The one console line of a grow: the partition's and the filesystem's sizes before and
/// after, each when it changed; `None` when nothing did. Pure.
pub fn grown_line(path: &str, table: Option<(u64, u64)>, fs: Option<(u64, u64)>) -> Option<String> {
    let parts: Vec<String> = [("partition", table), ("filesystem", fs)]
        .into_iter()
        .filter_map(|(what, v)| {
            v.filter(|(a, b)| a != b)
                .map(|(a, b)| format!("{what} {} -> {}", mib(a), mib(b)))
        })
        .collect();
    (!parts.is_empty()).then(|| format!("data partition {path} grown: {}", parts.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_names_what_grew() {
        const M: u64 = 1 << 20;
        assert_eq!(
            grown_line("/dev/vda4", Some((200 * M, 968 * M + M / 2)), Some((200 * M, 968 * M))),
            Some("data partition /dev/vda4 grown: partition 200 MiB -> 968.5 MiB, filesystem 200 MiB -> 968 MiB".into())
        );
        // A boot that finishes a cut grow: only the filesystem.
        assert_eq!(
            grown_line(
                "/dev/vda4",
                Some((968 * M, 968 * M)),
                Some((400 * M, 968 * M))
            ),
            Some("data partition /dev/vda4 grown: filesystem 400 MiB -> 968 MiB".into())
        );
        assert_eq!(grown_line("/dev/vda4", None, None), None);
        assert!(not_grown("/dev/vda4", "x").contains("grow_data = false"));
    }
}

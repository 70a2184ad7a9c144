//! ext4 images with `mkfs.ext4 -d`, straight from the root directory (no staging copy):
//! e2fsprogs keeps owners, modes, xattrs, hard links and holes; a debugfs pass then sets
//! every timestamp to the epoch (mke2fs copies each file's ctime, which userspace cannot
//! set), gives the root directory the source's owner and mode, and with `--all-root`
//! sets every owner to 0:0 and removes every xattr.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use crate::tool::{DEBUGFS, MKFS_EXT4};
use crate::{Error, Result};

/// Block size of ext4 images built here.
const BLOCK: u64 = 4096;
/// Bytes of xattr entries (names and values) that fit inside a 256-byte inode.
const IN_INODE_XATTR: u64 = 80;

/// One path of the tree, as debugfs names it.
#[derive(Debug)]
struct Item {
    /// `/a/b` inside the image.
    path: String,
    /// Its xattr names (removed with `--all-root`).
    xattrs: Vec<String>,
}

/// What the tree needs, to size the image, and the paths the debugfs pass rewrites.
#[derive(Debug, Default)]
struct Scan {
    blocks: u64,
    entries: u64,
    /// Upper bound of the directory entry bytes.
    dirent_bytes: u64,
    items: Vec<Item>,
    /// (device, inode) of regular files with more than one link, counted once.
    linked: HashSet<(u64, u64)>,
}

impl Scan {
    fn image_size(&self) -> u64 {
        // Inode tables, data and directory blocks, plus 1/8 for bitmaps, group descriptors,
        // extent blocks and half-full directory blocks, plus 4 MiB.
        let inode_bytes = (self.entries + 64) * 256;
        let data = self.blocks * BLOCK + self.dirent_bytes * 2;
        let raw = data + data / 8 + inode_bytes + 4 * 1024 * 1024;
        raw.div_ceil(1024 * 1024) * 1024 * 1024
    }
}

/// Builds the ext4 image of `rootfs` at `out` with `cmd` (mkfs.ext4).
/// What [`build`] takes of the build's filesystem options (crate::fs::FsOptions).
#[derive(Clone, Debug)]
pub(crate) struct Ext4Options {
    /// The filesystem UUID, formatted.
    pub uuid: String,
    /// SOURCE_DATE_EPOCH: every timestamp.
    pub epoch: u64,
    /// Every file owned by 0:0.
    pub all_root: bool,
}

pub(crate) fn build(mut cmd: Command, rootfs: &Path, out: &Path, opts: &Ext4Options) -> Result<()> {
    let mut scan = Scan::default();
    scan_dir(rootfs, "", &mut scan)?;
    let root = rootfs
        .metadata()
        .map_err(|e| Error::io("stat", rootfs, e))?;
    let (uid, gid) = if opts.all_root {
        (0, 0)
    } else {
        (root.uid(), root.gid())
    };
    let uuid = &opts.uuid;
    let f = File::options()
        .write(true)
        .open(out)
        .map_err(|e| Error::io("open", out, e))?;
    f.set_len(scan.image_size())
        .map_err(|e| Error::io("size", out, e))?;
    drop(f);
    cmd.env("E2FSPROGS_FAKE_TIME", fake_time(opts.epoch))
        .env("MKE2FS_DEVICE_SECTSIZE", "512")
        .args([
            "-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0", "-I", "256",
        ])
        .arg("-N")
        .arg((scan.entries + 64).to_string())
        .args(["-O", "^has_journal,^resize_inode"])
        .arg("-U")
        .arg(uuid)
        .arg("-E")
        .arg(format!(
            "hash_seed={uuid},root_owner={uid}:{gid},lazy_itable_init=0,lazy_journal_init=0,nodiscard"
        ))
        .arg("-d")
        .arg(rootfs)
        .arg(out);
    MKFS_EXT4.run(&mut cmd)?;
    let mut script = String::new();
    // The superblock times and the inodes mke2fs makes itself (bad-blocks inode 1, the
    // root, lost+found) carry the fake time: set them to the epoch as well. (debugfs
    // rewrites s_wtime with the fake time when it closes the filesystem.)
    let epoch = opts.epoch;
    for field in ["mkfs_time", "lastcheck"] {
        script.push_str(&format!("ssv {field} @{epoch}\n"));
    }
    for field in ["atime", "mtime", "ctime"] {
        script.push_str(&format!("sif <1> {field} @{epoch}\n"));
    }
    script.push_str(&format!("sif / mode 0{:o}\n", root.mode() & 0o17_7777));
    let own = [Item {
        path: "/".into(),
        xattrs: Vec::new(),
    }];
    let mut found = false;
    for item in own.iter().chain(&scan.items) {
        found |= item.path == "/lost+found";
        script_item(&mut script, item, opts);
    }
    if !found {
        let lf = Item {
            path: "/lost+found".into(),
            xattrs: Vec::new(),
        };
        script_item(&mut script, &lf, opts);
    }
    debugfs(out, &script, epoch)
}

fn script_item(script: &mut String, item: &Item, opts: &Ext4Options) {
    let p = &item.path;
    for field in ["atime", "mtime", "ctime", "crtime"] {
        script.push_str(&format!("sif \"{p}\" {field} @{}\n", opts.epoch));
    }
    if opts.all_root {
        for field in ["uid", "gid"] {
            script.push_str(&format!("sif \"{p}\" {field} 0\n"));
        }
        for name in &item.xattrs {
            script.push_str(&format!("ea_rm \"{p}\" \"{name}\"\n"));
        }
    }
}

/// Runs a debugfs script on `image`, read-write.
fn debugfs(image: &Path, script: &str, epoch: u64) -> Result<()> {
    let mut cmd = DEBUGFS.command()?;
    let dir = crate::atomic::temp_name(image, "debugfs")
        .map_err(|e| Error::io("name a temporary file for", image, e))?;
    let cmds = crate::cleanup::TempPath::register(dir);
    std::fs::write(cmds.path(), script).map_err(|e| Error::io("write", cmds.path(), e))?;
    cmd.env("E2FSPROGS_FAKE_TIME", fake_time(epoch))
        .arg("-w")
        .arg("-f")
        .arg(cmds.path())
        .arg(image);
    let output = DEBUGFS.run(&mut cmd)?;
    // debugfs exits 0 even when a request fails; failures are the stderr lines other than
    // its version banner.
    let stderr = String::from_utf8_lossy(&output.stderr);
    match stderr
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with("debugfs "))
    {
        None => Ok(()),
        Some(bad) => Err(Error::ToolFailed {
            tool: "debugfs",
            status: output.status.to_string(),
            stderr: bad.to_string(),
        }),
    }
}

/// E2FSPROGS_FAKE_TIME for `epoch`: e2fsprogs treats 0 as "unset" (and then uses the
/// current time), so epoch 0 is faked as 1 second; everything the debugfs pass can set is
/// then set to the epoch itself, leaving only the superblock's last-write time at 1.
fn fake_time(epoch: u64) -> String {
    epoch.max(1).to_string()
}

/// A file name as debugfs can take it in a double-quoted argument.
fn debugfs_name(name: &OsStr, full: &Path) -> Result<String> {
    match name.to_str() {
        Some(n) if !n.chars().any(|c| c == '"' || c == '\\' || c.is_control()) => Ok(n.to_string()),
        _ => Err(Error::invalid(
            "root directory",
            format!(
                "{}: ext4 images are built only from names without quotes, backslashes or control characters (use erofs or squashfs)",
                full.display()
            ),
        )),
    }
}

/// Bytes of data a file holds outside its holes (what mke2fs writes).
fn data_bytes(path: &Path, m: &std::fs::Metadata) -> Result<u64> {
    if m.blocks() * 512 >= m.len() {
        return Ok(m.len());
    }
    // Fewer blocks than bytes: sparse (or compressed); count the data segments.
    use nix::unistd::{lseek, Whence};
    use std::os::fd::AsRawFd;
    let f = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let (mut pos, mut total) = (0i64, 0u64);
    let len = i64::try_from(m.len()).unwrap_or(i64::MAX);
    while pos < len {
        let Ok(start) = lseek(f.as_raw_fd(), pos, Whence::SeekData) else {
            break; // ENXIO: only a hole is left
        };
        let end = lseek(f.as_raw_fd(), start, Whence::SeekHole).unwrap_or(len);
        total += u64::try_from(end - start).unwrap_or(0);
        pos = end;
    }
    Ok(total)
}

fn scan_dir(src: &Path, prefix: &str, scan: &mut Scan) -> Result<()> {
    let mut names = std::fs::read_dir(src)
        .map_err(|e| Error::io("read directory", src, e))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| Error::io("read directory", src, e))?;
    names.sort();
    for name in names {
        let s = src.join(&name);
        let m = s.symlink_metadata().map_err(|e| Error::io("stat", &s, e))?;
        let ft = m.file_type();
        let path = format!("{prefix}/{}", debugfs_name(&name, &s)?);
        let xattrs = xattr_names(&s, &mut scan.blocks)?;
        scan.entries += 1;
        scan.dirent_bytes += 12 + path.len() as u64;
        if ft.is_dir() {
            scan.blocks += 1;
            scan.items.push(Item { path, xattrs });
            let inner = scan
                .items
                .last()
                .map(|i| i.path.clone())
                .unwrap_or_default();
            scan_dir(&s, &inner, scan)?;
            continue;
        }
        if ft.is_file() && (m.nlink() < 2 || scan.linked.insert((m.dev(), m.ino()))) {
            scan.blocks += data_bytes(&s, &m)?.div_ceil(BLOCK);
        } else if ft.is_symlink() {
            // Targets under 60 bytes live in the inode.
            scan.blocks += u64::from(m.len() >= 60);
        }
        scan.items.push(Item { path, xattrs });
    }
    Ok(())
}

/// The xattr names of `path`; adds a block when they do not fit inside the inode.
fn xattr_names(path: &Path, blocks: &mut u64) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let mut bytes = 0u64;
    let list = xattr::list(path).map_err(|e| Error::io("list the xattrs of", path, e))?;
    for name in list {
        let value = xattr::get(path, &name)
            .map_err(|e| Error::io("read the xattrs of", path, e))?
            .unwrap_or_default();
        bytes += 16 + name.len() as u64 + value.len() as u64;
        match name.to_str() {
            Some(n) if !n.contains(['"', '\\']) => names.push(n.to_string()),
            _ => {
                return Err(Error::invalid(
                    "root directory",
                    format!(
                    "{}: xattr name {name:?} cannot be handled for ext4 (use erofs or squashfs)",
                    path.display()
                ),
                ))
            }
        }
    }
    if bytes > IN_INODE_XATTR {
        *blocks += bytes.div_ceil(BLOCK);
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_grows_with_content() {
        let small = Scan {
            blocks: 1,
            entries: 1,
            ..Scan::default()
        }
        .image_size();
        let big = Scan {
            blocks: 10_000,
            entries: 100,
            ..Scan::default()
        }
        .image_size();
        assert!(small >= 4 * 1024 * 1024 && big > 10_000 * 4096);
        assert_eq!(big % (1024 * 1024), 0);
    }

    #[test]
    fn sparse_files_and_hard_links_are_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::create(dir.path().join("sparse")).unwrap();
        f.set_len(64 << 20).unwrap();
        std::fs::write(dir.path().join("data"), vec![1u8; 3 * 4096]).unwrap();
        std::fs::hard_link(dir.path().join("data"), dir.path().join("link")).unwrap();
        let mut scan = Scan::default();
        scan_dir(dir.path(), "", &mut scan).unwrap();
        assert_eq!(scan.entries, 3);
        assert_eq!(scan.blocks, 3, "{scan:?}");
        let paths: Vec<&str> = scan.items.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(paths, ["/data", "/link", "/sparse"]);
    }

    #[test]
    fn names_debugfs_cannot_quote_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a\"b"), "x").unwrap();
        let e = scan_dir(dir.path(), "", &mut Scan::default()).unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }), "{e}");
    }
}

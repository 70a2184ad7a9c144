//! `stele disk create --bmap`: a block map (`bmaptool create`) beside the disk image, so
//! `bmaptool copy` writes only the blocks the image uses.

use std::path::{Path, PathBuf};

use crate::tool::{Scratch, BMAPTOOL};
use crate::{Error, Result};

/// The block map's path for `disk`: `DISK.bmap` (where `bmaptool copy` looks first).
pub fn path_for(disk: &Path) -> PathBuf {
    let mut s = disk.as_os_str().to_os_string();
    s.push(".bmap");
    PathBuf::from(s)
}

/// Writes the block map of `disk` to [`path_for`]`(disk)`, atomically. The map lists the
/// ranges the file has allocated (holes are what `stele disk create` never wrote) with
/// their sha256.
pub fn write(disk: &Path, force: bool) -> Result<PathBuf> {
    let out = path_for(disk);
    let work = Scratch::beside(&out)?;
    let tmp = work.join("disk.bmap");
    let mut cmd = BMAPTOOL.command()?;
    cmd.arg("create").arg("-o").arg(&tmp).arg(disk);
    BMAPTOOL.run(&mut cmd)?;
    let bytes = std::fs::read(&tmp).map_err(|e| Error::io("read", &tmp, e))?;
    crate::outfile::write_atomic(&out, force, |f, _| {
        use std::io::Write;
        f.write_all(&bytes).map_err(|e| Error::io("write", &out, e))
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_lists_only_written_blocks() {
        let d = tempfile::tempdir().unwrap();
        let disk = d.path().join("disk.img");
        let f = std::fs::File::create(&disk).unwrap();
        f.set_len(8 << 20).unwrap();
        drop(f);
        {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
            f.seek(SeekFrom::Start(4 << 20)).unwrap();
            f.write_all(&[7u8; 4096]).unwrap();
        }
        let map = write(&disk, false).unwrap();
        assert_eq!(map, d.path().join("disk.img.bmap"));
        let xml = std::fs::read_to_string(&map).unwrap();
        let field = |name: &str| -> u64 {
            let open = format!("<{name}>");
            // The element follows a comment that names it too.
            let start = xml
                .rfind(&open)
                .unwrap_or_else(|| panic!("{name} in {xml}"))
                + open.len();
            let end = start + xml[start..].find('<').unwrap();
            xml[start..end].trim().parse().unwrap()
        };
        assert_eq!(field("BlocksCount"), 2048);
        assert_eq!(field("MappedBlocksCount"), 1);
        assert!(xml.contains("<Range chksum="), "{xml}");
        // Nothing but the disk and its map is left.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 2);
    }
}

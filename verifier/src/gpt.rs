//! A GUID Partition Table writer and reader (UEFI spec, 512-byte sectors).
//!
//! Writes the protective MBR, the primary header and entry array (128 entries of 128
//! bytes), and the backup entry array and header at the end of the disk, with their CRC32s.
//! Generic over `Read/Write + Seek`, so tests run on `Cursor<Vec<u8>>`.

use crate::exit::{Exit, Report};
use std::io::{self, Read, Seek, SeekFrom, Write};

use sha2::{Digest, Sha256};

/// Sector size.
pub const SECTOR: u64 = 512;
/// Entries in the partition entry array.
pub const NUM_ENTRIES: u32 = 128;
/// Size of one entry.
pub const ENTRY_SIZE: u32 = 128;
/// Sectors taken by the entry array (128 * 128 / 512).
pub const ENTRY_SECTORS: u64 = 32;
/// Size of the header fields covered by the header CRC.
const HEADER_SIZE: u32 = 92;
/// UTF-16 code units in a partition name.
const NAME_UNITS: usize = 36;

/// What went wrong with a GPT.
#[derive(Debug, thiserror::Error)]
pub enum GptError {
    #[error("I/O error on the disk image while {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// The table cannot be written as asked.
    #[error("invalid partition table: {0}")]
    Layout(String),
    /// The disk does not hold a valid GPT.
    #[error("no valid GPT on the disk image: {0}")]
    Corrupt(String),
    /// No partition has this name.
    #[error("no partition named {0:?} on the disk image")]
    NotFound(String),
}

impl Report for GptError {
    /// I/O is the environment; a table that is not what `stele disk create` writes is the
    /// input.
    fn exit(&self) -> Exit {
        match self {
            GptError::Io { .. } => Exit::Environment,
            _ => Exit::Usage,
        }
    }
}

fn io(what: &'static str) -> impl FnOnce(io::Error) -> GptError {
    move |source| GptError::Io { what, source }
}

/// A GUID, as its 16 on-disk bytes (first three fields little-endian).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Parses the textual form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub fn parse(s: &str) -> Option<Guid> {
        let parts: Vec<&str> = s.split('-').collect();
        let lens = [8, 4, 4, 4, 12];
        if parts.len() != 5 || parts.iter().zip(lens).any(|(p, l)| p.len() != l) {
            return None;
        }
        let hex: String = parts.concat();
        let mut be = [0u8; 16];
        for (i, b) in be.iter_mut().enumerate() {
            *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Guid::from_be(be))
    }

    /// From the big-endian (textual order) bytes.
    fn from_be(be: [u8; 16]) -> Guid {
        let mut b = be;
        b[0..4].reverse();
        b[4..6].reverse();
        b[6..8].reverse();
        Guid(b)
    }

    fn to_be(self) -> [u8; 16] {
        let mut b = self.0;
        b[0..4].reverse();
        b[4..6].reverse();
        b[6..8].reverse();
        b
    }

    /// A version-4 style (random-looking) GUID derived from `seed`: sha256, then the
    /// version and variant bits set.
    pub fn derive(seed: &[u8]) -> Guid {
        let h = Sha256::digest(seed);
        let mut be = [0u8; 16];
        be.copy_from_slice(&h[..16]);
        be[6] = (be[6] & 0x0f) | 0x40;
        be[8] = (be[8] & 0x3f) | 0x80;
        Guid::from_be(be)
    }

    /// True for the all-zero GUID (an unused entry).
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = self.to_be();
        for (i, x) in b.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{x:02x}")?;
        }
        Ok(())
    }
}

/// One partition. LBAs are inclusive, in 512-byte sectors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    pub name: String,
    pub type_guid: Guid,
    pub guid: Guid,
    pub first_lba: u64,
    pub last_lba: u64,
    /// Entry attribute bits (bit 2: legacy BIOS bootable).
    pub attributes: u64,
}

impl Partition {
    /// Byte offset and length on the disk.
    pub fn byte_range(&self) -> (u64, u64) {
        (
            self.first_lba * SECTOR,
            (self.last_lba + 1 - self.first_lba) * SECTOR,
        )
    }
}

/// A whole partition table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gpt {
    pub disk_guid: Guid,
    /// Disk size in sectors.
    pub total_sectors: u64,
    pub partitions: Vec<Partition>,
}

/// CRC-32 (IEEE 802.3, reflected, as zlib and the UEFI spec use).
pub fn crc32(data: &[u8]) -> u32 {
    const fn table() -> [u32; 256] {
        let mut t = [0u32; 256];
        let mut i: u32 = 0;
        while i < 256 {
            let mut c = i;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i as usize] = c;
            i += 1;
        }
        t
    }
    const TABLE: [u32; 256] = table();
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c = TABLE[usize::from(c.to_le_bytes()[0] ^ b)] ^ (c >> 8);
    }
    c ^ 0xFFFF_FFFF
}

fn first_usable() -> u64 {
    2 + ENTRY_SECTORS
}

impl Gpt {
    fn last_lba(&self) -> u64 {
        self.total_sectors - 1
    }

    pub(crate) fn last_usable(&self) -> u64 {
        self.last_lba() - 1 - ENTRY_SECTORS
    }

    /// Checks partitions: inside the usable area, not overlapping, names fit.
    pub fn check(&self) -> Result<(), GptError> {
        let bad = |s: String| Err(GptError::Layout(s));
        if self.total_sectors < first_usable() + ENTRY_SECTORS + 2 {
            return bad(format!(
                "disk of {} sectors is too small",
                self.total_sectors
            ));
        }
        if self.partitions.len() > NUM_ENTRIES as usize {
            return bad(format!(
                "{} partitions (max {NUM_ENTRIES})",
                self.partitions.len()
            ));
        }
        for (i, p) in self.partitions.iter().enumerate() {
            if p.first_lba < first_usable() || p.last_lba > self.last_usable() {
                return bad(format!("partition {:?} is outside the usable area", p.name));
            }
            if p.first_lba > p.last_lba {
                return bad(format!("partition {:?} ends before it starts", p.name));
            }
            if p.name.encode_utf16().count() > NAME_UNITS {
                return bad(format!(
                    "partition name {:?} is longer than 36 UTF-16 units",
                    p.name
                ));
            }
            if p.type_guid.is_zero() {
                return bad(format!("partition {:?} has a zero type GUID", p.name));
            }
            for q in &self.partitions[..i] {
                if p.first_lba <= q.last_lba && q.first_lba <= p.last_lba {
                    return bad(format!("partitions {:?} and {:?} overlap", q.name, p.name));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn entries_bytes(&self) -> Vec<u8> {
        let mut v = vec![0u8; (NUM_ENTRIES * ENTRY_SIZE) as usize];
        for (p, e) in self
            .partitions
            .iter()
            .zip(v.chunks_mut(ENTRY_SIZE as usize))
        {
            e[0..16].copy_from_slice(&p.type_guid.0);
            e[16..32].copy_from_slice(&p.guid.0);
            e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
            e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
            e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
            for (i, u) in p.name.encode_utf16().take(NAME_UNITS).enumerate() {
                e[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
            }
        }
        v
    }

    pub(crate) fn header_bytes(
        &self,
        my_lba: u64,
        alt_lba: u64,
        entries_lba: u64,
        entries_crc: u32,
    ) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alt_lba.to_le_bytes());
        h[40..48].copy_from_slice(&first_usable().to_le_bytes());
        h[48..56].copy_from_slice(&self.last_usable().to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.0);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&NUM_ENTRIES.to_le_bytes());
        h[84..88].copy_from_slice(&ENTRY_SIZE.to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32(&h[..HEADER_SIZE as usize]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    pub(crate) fn protective_mbr(&self) -> [u8; 512] {
        let mut m = [0u8; 512];
        let e = &mut m[446..462];
        e[0] = 0; // not bootable
        e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
        e[4] = 0xEE;
        e[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
        e[8..12].copy_from_slice(&1u32.to_le_bytes());
        let size = u32::try_from(self.total_sectors - 1).unwrap_or(u32::MAX);
        e[12..16].copy_from_slice(&size.to_le_bytes());
        m[510] = 0x55;
        m[511] = 0xAA;
        m
    }

    /// Writes the MBR, both headers and both entry arrays. The partitions' contents and
    /// the rest of the disk are not touched.
    pub fn write<W: Write + Seek>(&self, w: &mut W) -> Result<(), GptError> {
        self.check()?;
        let entries = self.entries_bytes();
        let ecrc = crc32(&entries);
        let last = self.last_lba();
        let backup_entries = last - ENTRY_SECTORS;
        let writes: [(u64, Vec<u8>); 5] = [
            (0, self.protective_mbr().to_vec()),
            (1, self.header_bytes(1, last, 2, ecrc).to_vec()),
            (2, entries.clone()),
            (backup_entries, entries),
            (
                last,
                self.header_bytes(last, 1, backup_entries, ecrc).to_vec(),
            ),
        ];
        for (lba, bytes) in writes {
            w.seek(SeekFrom::Start(lba * SECTOR))
                .map_err(io("seeking to a GPT structure"))?;
            w.write_all(&bytes).map_err(io("writing the GPT"))?;
        }
        Ok(())
    }

    /// Reads and checks the primary GPT of a disk image (`len` bytes long).
    pub fn read<R: Read + Seek>(r: &mut R, len: u64) -> Result<Gpt, GptError> {
        let bad = |s: String| GptError::Corrupt(s);
        let total_sectors = len / SECTOR;
        if total_sectors < 3 {
            return Err(bad(format!("image of {len} bytes is too small")));
        }
        let mut h = [0u8; 512];
        r.seek(SeekFrom::Start(SECTOR))
            .map_err(io("seeking to the GPT header"))?;
        r.read_exact(&mut h).map_err(io("reading the GPT header"))?;
        if &h[0..8] != b"EFI PART" {
            return Err(bad("missing \"EFI PART\" signature at LBA 1".into()));
        }
        let u32_at = |b: &[u8], o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |b: &[u8], o: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(x)
        };
        let hsize = u32_at(&h, 12) as usize;
        if !(92..=512).contains(&hsize) {
            return Err(bad(format!("header size {hsize}")));
        }
        let stored = u32_at(&h, 16);
        let mut hc = h;
        hc[16..20].fill(0);
        if crc32(&hc[..hsize]) != stored {
            return Err(bad("header CRC32 mismatch".into()));
        }
        let entries_lba = u64_at(&h, 72);
        let n = u32_at(&h, 80);
        let esize = u32_at(&h, 84);
        if n > 4096 || !(128..=4096).contains(&esize) || esize % 8 != 0 {
            return Err(bad(format!("{n} entries of {esize} bytes")));
        }
        let total = u64::from(n) * u64::from(esize);
        let end = entries_lba
            .checked_mul(SECTOR)
            .and_then(|o| o.checked_add(total))
            .filter(|&e| e <= len)
            .ok_or_else(|| bad("entry array outside the image".into()))?;
        let mut entries =
            vec![0u8; usize::try_from(total).map_err(|_| bad("entry array too big".into()))?];
        r.seek(SeekFrom::Start(end - total))
            .map_err(io("seeking to the GPT entries"))?;
        r.read_exact(&mut entries)
            .map_err(io("reading the GPT entries"))?;
        if crc32(&entries) != u32_at(&h, 88) {
            return Err(bad("entry array CRC32 mismatch".into()));
        }
        let mut disk_guid = [0u8; 16];
        disk_guid.copy_from_slice(&h[56..72]);
        let mut partitions = Vec::new();
        for e in entries.chunks(esize as usize) {
            let mut t = [0u8; 16];
            t.copy_from_slice(&e[0..16]);
            if t == [0; 16] {
                continue;
            }
            let mut g = [0u8; 16];
            g.copy_from_slice(&e[16..32]);
            let units: Vec<u16> = e[56..56 + 2 * NAME_UNITS]
                .chunks(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&u| u != 0)
                .collect();
            let (first_lba, last_lba) = (u64_at(e, 32), u64_at(e, 40));
            if first_lba > last_lba || last_lba >= total_sectors {
                return Err(bad(format!(
                    "partition entry with LBAs {first_lba}..{last_lba}"
                )));
            }
            partitions.push(Partition {
                name: String::from_utf16_lossy(&units),
                type_guid: Guid(t),
                guid: Guid(g),
                first_lba,
                last_lba,
                attributes: u64_at(e, 48),
            });
        }
        Ok(Gpt {
            disk_guid: Guid(disk_guid),
            total_sectors,
            partitions,
        })
    }
}

/// Finds the partition called `name` on a disk image: its byte offset and length.
pub fn find_partition<D: Read + Seek>(disk: &mut D, name: &str) -> Result<(u64, u64), GptError> {
    let len = disk
        .seek(SeekFrom::End(0))
        .map_err(io("finding the disk image size"))?;
    let gpt = Gpt::read(disk, len)?;
    gpt.partitions
        .iter()
        .find(|p| p.name == name)
        .map(Partition::byte_range)
        .ok_or_else(|| GptError::NotFound(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn sample() -> Gpt {
        let t = Guid::parse("5ee1e000-57a7-4e5e-9b5f-000000000002").unwrap();
        Gpt {
            disk_guid: Guid::derive(b"disk"),
            total_sectors: 8192,
            partitions: vec![
                Partition {
                    name: "stele-state".into(),
                    type_guid: t,
                    guid: Guid::derive(b"1"),
                    first_lba: 2048,
                    last_lba: 4095,
                    attributes: 0,
                },
                Partition {
                    name: "stele-root-a".into(),
                    type_guid: t,
                    guid: Guid::derive(b"2"),
                    first_lba: 4096,
                    last_lba: 6143,
                    // Legacy BIOS bootable: round-trips through write and read.
                    attributes: 1 << 2,
                },
            ],
        }
    }

    #[test]
    fn crc32_known_values() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
    }

    #[test]
    fn guid_text_and_bytes() {
        let g = Guid::parse("0fc63daf-8483-4772-8e79-3d69d8477de4").unwrap();
        assert_eq!(&g.0[..4], &[0xaf, 0x3d, 0xc6, 0x0f]);
        assert_eq!(&g.0[8..], &[0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4]);
        assert_eq!(g.to_string(), "0fc63daf-8483-4772-8e79-3d69d8477de4");
        assert!(Guid::parse("0fc63daf-8483-4772-8e79-3d69d8477de").is_none());
        assert!(Guid::parse("0fc63daf-8483-4772-8e79-3d69d8477dez").is_none());
        let d = Guid::derive(b"x").to_string();
        assert_eq!(&d[14..15], "4");
        assert!(matches!(&d[19..20], "8" | "9" | "a" | "b"));
        assert_eq!(Guid::derive(b"x"), Guid::derive(b"x"));
        assert_ne!(Guid::derive(b"x"), Guid::derive(b"y"));
    }

    #[test]
    fn write_then_read_round_trip() {
        let g = sample();
        let mut c = Cursor::new(vec![0u8; 8192 * 512]);
        g.write(&mut c).unwrap();
        let bytes = c.get_ref();
        assert_eq!(&bytes[510..512], &[0x55, 0xAA]);
        assert_eq!(bytes[446 + 4], 0xEE);
        assert_eq!(&bytes[512..520], b"EFI PART");
        assert_eq!(&bytes[8191 * 512..8191 * 512 + 8], b"EFI PART");
        // Backup entries equal the primary ones.
        assert_eq!(
            &bytes[1024..1024 + 16384],
            &bytes[(8191 - 32) * 512..(8191 - 32) * 512 + 16384]
        );
        let back = Gpt::read(&mut c, 8192 * 512).unwrap();
        assert_eq!(back, g);
        assert_eq!(
            find_partition(&mut c, "stele-root-a").unwrap(),
            (4096 * 512, 2048 * 512)
        );
        assert!(matches!(
            find_partition(&mut c, "stele-root-b"),
            Err(GptError::NotFound(_))
        ));
    }

    #[test]
    fn read_detects_corruption() {
        let g = sample();
        let mut c = Cursor::new(vec![0u8; 8192 * 512]);
        g.write(&mut c).unwrap();
        let good = c.get_ref().clone();
        for (off, what) in [
            (512 + 40, "header"),
            (1024 + 60, "entries"),
            (512, "signature"),
        ] {
            let mut b = good.clone();
            b[off] ^= 1;
            let r = Gpt::read(&mut Cursor::new(b), 8192 * 512);
            assert!(matches!(r, Err(GptError::Corrupt(_))), "{what}");
        }
        assert!(Gpt::read(&mut Cursor::new(vec![0u8; 100]), 100).is_err());
        assert!(Gpt::read(&mut Cursor::new(good), 512 * 10).is_err());
    }

    #[test]
    fn check_rejects_bad_layouts() {
        let mut g = sample();
        g.partitions[1].first_lba = 4000;
        assert!(matches!(g.check(), Err(GptError::Layout(m)) if m.contains("overlap")));
        let mut g = sample();
        g.partitions[1].last_lba = 8191;
        assert!(g.check().is_err());
        let mut g = sample();
        g.partitions[0].name = "x".repeat(37);
        assert!(g.check().is_err());
    }

    #[test]
    fn arbitrary_bytes_do_not_panic() {
        let g = sample();
        let mut c = Cursor::new(vec![0u8; 8192 * 512]);
        g.write(&mut c).unwrap();
        let good = c.into_inner();
        // Header fields set to extreme values, with a recomputed CRC so they get parsed.
        for (off, val) in [(72usize, u64::MAX), (80, 0xFFFF_FFFF), (84, 0x0000_0008)] {
            let mut b = good.clone();
            b[512 + off..512 + off + 8].copy_from_slice(&val.to_le_bytes());
            b[512 + 16..512 + 20].fill(0);
            let crc = crc32(&b[512..512 + 92]);
            b[512 + 16..512 + 20].copy_from_slice(&crc.to_le_bytes());
            assert!(Gpt::read(&mut Cursor::new(b), 8192 * 512).is_err());
        }
    }
}

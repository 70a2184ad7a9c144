//! The random parts of a VHDX that `qemu-img convert -O vhdx` writes, made reproducible
//! (docs/FORMATS.md "Disk formats"): both headers' sequence numbers and write GUIDs, the
//! log entries' GUID, and the disk's page-83 id in the metadata, each from the disk's GPT
//! GUID, with the header and log entry CRC-32Cs recomputed. Layout from Microsoft's
//! [MS-VHDX] specification; every offset and length is checked before use.

use std::io::{self, Read, Seek, SeekFrom, Write};

use stele_verifier::gpt::Guid;

/// The two headers (4 KiB each are checksummed).
const HEADERS: [u64; 2] = [64 << 10, 128 << 10];
const HEADER_LEN: usize = 4096;
/// The region table (its copy at 256 KiB describes the same regions).
const REGION_TABLE: u64 = 192 << 10;
/// The metadata region's GUID (8B7CA206-4790-4B9A-B8FE-575F050F886E), as stored.
const METADATA_REGION: [u8; 16] = [
    0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b, 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e,
];
/// The page-83 data item (BECA12AB-B2E6-4523-93EF-C309E000C746): the disk's id.
const PAGE83: [u8; 16] = [
    0xab, 0x12, 0xca, 0xbe, 0xe6, 0xb2, 0x23, 0x45, 0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46,
];

fn bad(why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("not the VHDX qemu-img writes: {why}"),
    )
}

fn le(b: &[u8], at: usize, n: usize) -> u64 {
    b[at..at + n]
        .iter()
        .rev()
        .fold(0, |acc, &x| (acc << 8) | u64::from(x))
}

fn read_at<F: Read + Seek>(f: &mut F, at: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut b = vec![0u8; len];
    f.seek(SeekFrom::Start(at))?;
    f.read_exact(&mut b)?;
    Ok(b)
}

fn write_at<F: Write + Seek>(f: &mut F, at: u64, b: &[u8]) -> io::Result<()> {
    f.seek(SeekFrom::Start(at))?;
    f.write_all(b)
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as VHDX checksums use it. Pure.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0x82f6_3b78 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// Sets the checksum at bytes 4..8 of `b` (computed with that field zero). Pure.
fn checksum(b: &mut [u8]) {
    b[4..8].fill(0);
    let c = crc32c(b);
    b[4..8].copy_from_slice(&c.to_le_bytes());
}

fn valid(b: &[u8]) -> bool {
    let mut z = b.to_vec();
    z[4..8].fill(0);
    crc32c(&z).to_le_bytes() == b[4..8]
}

/// Rewrites the random ids of the VHDX `f` from `disk_guid` (the GPT disk GUID): header
/// sequence numbers become 1 and up in their order, FileWriteGuid, DataWriteGuid and a
/// non-zero LogGuid (also in each log entry) are derived from it, the page-83 id is it.
pub fn set_ids<F: Read + Write + Seek>(f: &mut F, disk_guid: &[u8; 16]) -> io::Result<()> {
    if read_at(f, 0, 8)? != b"vhdxfile" {
        return Err(bad("no vhdxfile identifier"));
    }
    let derive = |what: &str| Guid::derive(&[&disk_guid[..], b"vhdx:", what.as_bytes()].concat()).0;
    let log_guid = derive("LogGuid");
    let mut headers = Vec::new();
    for at in HEADERS {
        let h = read_at(f, at, HEADER_LEN)?;
        if &h[..4] != b"head" || !valid(&h) {
            return Err(bad("a header without its signature or checksum"));
        }
        headers.push(h);
    }
    let base = headers.iter().map(|h| le(h, 8, 8)).min().unwrap_or(0);
    let mut log = None;
    for (h, at) in headers.iter_mut().zip(HEADERS) {
        let seq = le(h, 8, 8) - base + 1;
        h[8..16].copy_from_slice(&seq.to_le_bytes());
        h[16..32].copy_from_slice(&derive("FileWriteGuid"));
        h[32..48].copy_from_slice(&derive("DataWriteGuid"));
        if h[48..64].iter().any(|&b| b != 0) {
            h[48..64].copy_from_slice(&log_guid);
        }
        log = Some((le(h, 72, 8), le(h, 68, 4)));
        checksum(h);
        write_at(f, at, h)?;
    }
    if let Some((offset, len)) = log {
        log_entries(f, offset, len, &log_guid)?;
    }
    page83(f, disk_guid)
}

/// Each log entry (signature `loge`, its length at byte 8, its LogGuid at 32) from the
/// log's start: a non-zero LogGuid becomes `guid`, the entry's checksum is recomputed.
fn log_entries<F: Read + Write + Seek>(
    f: &mut F,
    offset: u64,
    len: u64,
    guid: &[u8; 16],
) -> io::Result<()> {
    let mut at = 0u64;
    while at + 64 <= len {
        let head = read_at(f, offset + at, 64)?;
        if &head[..4] != b"loge" {
            break;
        }
        let n = le(&head, 8, 4);
        if n < 64 || !n.is_multiple_of(4096) || at + n > len {
            return Err(bad("a log entry of a wrong length"));
        }
        let mut e = read_at(f, offset + at, usize::try_from(n).map_err(|_| bad("log"))?)?;
        if !valid(&e) {
            return Err(bad("a log entry without its checksum"));
        }
        if e[32..48].iter().any(|&b| b != 0) {
            e[32..48].copy_from_slice(guid);
        }
        checksum(&mut e);
        write_at(f, offset + at, &e)?;
        at += n;
    }
    Ok(())
}

/// The page-83 data item of the metadata region (found through the region table) set to
/// `id`.
fn page83<F: Read + Write + Seek>(f: &mut F, id: &[u8; 16]) -> io::Result<()> {
    let rt = read_at(f, REGION_TABLE, 64 << 10)?;
    if &rt[..4] != b"regi" {
        return Err(bad("no region table"));
    }
    let count = usize::try_from(le(&rt, 8, 4))
        .unwrap_or(usize::MAX)
        .min(2047);
    let meta = (0..count)
        .map(|i| &rt[16 + 32 * i..16 + 32 * (i + 1)])
        .find(|e| e[..16] == METADATA_REGION)
        .map(|e| (le(e, 16, 8), le(e, 24, 4)))
        .ok_or_else(|| bad("no metadata region"))?;
    let table = read_at(f, meta.0, 64 << 10)?;
    if &table[..8] != b"metadata" {
        return Err(bad("no metadata table"));
    }
    let count = usize::try_from(le(&table, 10, 2)).unwrap_or(0).min(2047);
    let item = (0..count)
        .map(|i| &table[32 + 32 * i..32 + 32 * (i + 1)])
        .find(|e| e[..16] == PAGE83)
        .map(|e| (le(e, 16, 4), le(e, 20, 4)))
        .ok_or_else(|| bad("no page-83 data item"))?;
    if item.1 != 16 || item.0 + 16 > meta.1 {
        return Err(bad("a page-83 data item of a wrong size"));
    }
    write_at(f, meta.0 + item.0, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_is_castagnoli() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn what_is_not_a_vhdx_is_refused_without_change() {
        let mut c = io::Cursor::new(vec![0u8; 512 << 10]);
        assert_eq!(
            set_ids(&mut c, &[1; 16]).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        c.get_mut()[..8].copy_from_slice(b"vhdxfile");
        let before = c.get_ref().clone();
        assert!(set_ids(&mut c, &[1; 16]).is_err());
        assert!(c.get_ref() == &before);
        let mut short = io::Cursor::new(b"vhdxfile".to_vec());
        assert!(set_ids(&mut short, &[1; 16]).is_err());
    }
}

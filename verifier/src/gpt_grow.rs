//! Growing the last partition (the data partition) of a GPT disk to the end of a larger
//! disk, power-cut safe (docs/FORMATS.md "Growing the data partition"): a plan of
//! single-purpose writes such that a cut after any of them, or inside one, leaves a
//! primary GPT the kernel accepts describing either the old or the new layout, and
//! planning again on that disk finishes the job. Pure: `Read + Write + Seek` only.
//!
//! Linux reads the primary header (LBA 1) and its entry array and falls back to the backup
//! only through the primary's own `alternate_lba`, so the primary must never be invalid,
//! not even for a moment. A header is one sector (written whole); its entry array is 32
//! sectors, protected by the CRC in the header. So the new entries are first written to a
//! scratch place in the gap before the first partition and a new primary header pointing
//! there is written; only then are the entries written to LBA 2 and the header pointed
//! back at them.

use std::io::{Read, Seek, SeekFrom, Write};

use crate::gpt::{Gpt, GptError, ENTRY_SECTORS, SECTOR};

/// Where the new entry array waits while the primary one is rewritten: the first LBA
/// after the standard array.
pub const SCRATCH_LBA: u64 = 2 + ENTRY_SECTORS;

/// Less than this to gain (1 MiB) is not worth a grow.
pub const MIN_GAIN_SECTORS: u64 = 2048;

/// What a grow does, and the writes that do it, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The data partition's first LBA (it does not move).
    pub first_lba: u64,
    /// The data partition's last LBA now and after (equal when only finishing a grow).
    pub last_lba: (u64, u64),
    /// (LBA, bytes), in the order they must reach the disk, each flushed before the next.
    pub writes: Vec<(u64, Vec<u8>)>,
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> GptError {
    move |source| GptError::Io { what, source }
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(x)
}

/// The plan to grow partition `name` of the `len`-byte disk `disk` to the disk's end, or
/// `None` when there is nothing to do: it is not the last partition, it already ends at
/// the end (and the table is complete), or less than [`MIN_GAIN_SECTORS`] would be
/// gained. A disk whose grow was cut gets the rest of it. Refused (`Layout`) when the gap
/// before the first partition cannot hold the scratch entry array.
pub fn plan<D: Read + Seek>(disk: &mut D, len: u64, name: &str) -> Result<Option<Plan>, GptError> {
    let now = Gpt::read(disk, len)?;
    let mut h = [0u8; 512];
    disk.seek(SeekFrom::Start(SECTOR))
        .map_err(io("seeking to the GPT header"))?;
    disk.read_exact(&mut h)
        .map_err(io("reading the GPT header"))?;
    let (entries_lba, alt_lba) = (u64_at(&h, 72), u64_at(&h, 32));
    let Some(data) = now.partitions.iter().find(|p| p.name == name) else {
        return Ok(None);
    };
    if now.partitions.iter().any(|p| p.last_lba > data.last_lba) {
        return Ok(None);
    }
    let mut new = now.clone();
    let end = new.last_usable();
    let first = now
        .partitions
        .iter()
        .map(|p| p.first_lba)
        .min()
        .unwrap_or(u64::MAX);
    let grow = end >= data.last_lba + MIN_GAIN_SECTORS;
    // The protective MBR's size, keeping the boot code (SYSLINUX's gptmbr.bin with
    // `--bios`) and disk signature before it.
    let mut mbr = [0u8; 512];
    disk.seek(SeekFrom::Start(0))
        .map_err(io("seeking to the MBR"))?;
    disk.read_exact(&mut mbr).map_err(io("reading the MBR"))?;
    let on_disk = mbr;
    mbr[446..].copy_from_slice(&now.protective_mbr()[446..]);
    let unfinished = entries_lba != 2 || alt_lba != now.total_sectors - 1 || mbr != on_disk;
    if !grow && !unfinished {
        return Ok(None);
    }
    if grow && first < SCRATCH_LBA + ENTRY_SECTORS {
        return Err(GptError::Layout(format!(
            "the first partition starts at LBA {first}: no room before it for the entry array while the table is rewritten"
        )));
    }
    let after = if grow { end } else { data.last_lba };
    if let Some(p) = new.partitions.iter_mut().find(|p| p.name == name) {
        p.last_lba = after;
    }
    new.check()?;
    let entries = new.entries_bytes();
    let ecrc = crate::gpt::crc32(&entries);
    let last = new.total_sectors - 1;
    let backup = last - ENTRY_SECTORS;
    let mut writes = vec![
        (backup, entries.clone()),
        (last, new.header_bytes(last, 1, backup, ecrc).to_vec()),
    ];
    if grow {
        writes.push((SCRATCH_LBA, entries.clone()));
        writes.push((1, new.header_bytes(1, last, SCRATCH_LBA, ecrc).to_vec()));
    }
    writes.push((2, entries));
    writes.push((1, new.header_bytes(1, last, 2, ecrc).to_vec()));
    writes.push((0, mbr.to_vec()));
    Ok(Some(Plan {
        first_lba: data.first_lba,
        last_lba: (data.last_lba, after),
        writes,
    }))
}

/// Performs `plan` on `disk` in order, calling `flush` after each write (fdatasync on a
/// device) so that no later write reaches the disk before an earlier one.
pub fn apply<D: Write + Seek>(
    disk: &mut D,
    plan: &Plan,
    flush: &mut dyn FnMut(&mut D) -> std::io::Result<()>,
) -> Result<(), GptError> {
    for (lba, bytes) in &plan.writes {
        disk.seek(SeekFrom::Start(lba * SECTOR))
            .map_err(io("seeking to a GPT structure"))?;
        disk.write_all(bytes).map_err(io("writing the GPT"))?;
        flush(disk).map_err(io("flushing the GPT"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpt::{Guid, Partition};
    use std::io::Cursor;

    const MIB: u64 = 2048;

    fn us(x: u64) -> usize {
        usize::try_from(x).unwrap()
    }

    fn part(name: &str, first: u64, last: u64) -> Partition {
        Partition {
            name: name.into(),
            type_guid: Guid::derive(name.as_bytes()),
            guid: Guid::derive(format!("g-{name}").as_bytes()),
            first_lba: first,
            last_lba: last,
            attributes: 0,
        }
    }

    /// A 16 MiB image like `stele disk create` writes (data last, the same alignment),
    /// placed at the start of a `disk_mib` disk.
    fn disk(disk_mib: u64) -> (Vec<u8>, Gpt) {
        let image = Gpt {
            disk_guid: Guid::derive(b"disk"),
            total_sectors: 16 * MIB,
            partitions: vec![
                part("stele-state", MIB, 3 * MIB - 1),
                part("stele-root-a", 3 * MIB, 6 * MIB - 1),
                part("stele-root-b", 6 * MIB, 9 * MIB - 1),
                part("stele-data", 9 * MIB, 15 * MIB - 1),
            ],
        };
        for (i, p) in image.partitions.iter().enumerate() {
            assert!(p.first_lba >= SCRATCH_LBA + ENTRY_SECTORS, "{i}");
        }
        let mut c = Cursor::new(vec![0u8; us(16 * MIB * SECTOR)]);
        image.write(&mut c).unwrap();
        let mut v = c.into_inner();
        v.resize(us(disk_mib * MIB * SECTOR), 0);
        (v, image)
    }

    fn table(v: &[u8]) -> Gpt {
        Gpt::read(&mut Cursor::new(v), u64::try_from(v.len()).unwrap()).unwrap()
    }

    fn grow(v: &mut Vec<u8>) -> Option<Plan> {
        let len = u64::try_from(v.len()).unwrap();
        let p = plan(&mut Cursor::new(&v[..]), len, "stele-data").unwrap()?;
        let mut c = Cursor::new(std::mem::take(v));
        apply(&mut c, &p, &mut |_| Ok(())).unwrap();
        *v = c.into_inner();
        Some(p)
    }

    #[test]
    fn the_data_partition_grows_to_the_end_with_the_backup_moved_there() {
        let (mut v, image) = disk(64);
        let p = grow(&mut v).unwrap();
        let end = 64 * MIB - 1 - 1 - ENTRY_SECTORS;
        assert_eq!(p.last_lba, (15 * MIB - 1, end));
        let t = table(&v);
        assert_eq!(t.partitions[3].last_lba, end);
        assert_eq!(t.partitions[..3], image.partitions[..3]);
        // The whole table is what `Gpt::write` writes for the new layout, byte for byte
        // (MBR, both headers, both arrays, the backup at the disk's last LBA).
        let mut want = Cursor::new(vec![0u8; v.len()]);
        t.write(&mut want).unwrap();
        let want = want.into_inner();
        for lba in [0, 1, 2, 64 * MIB - 1 - ENTRY_SECTORS, 64 * MIB - 1] {
            let r = us(lba * SECTOR)..us((lba + 1) * SECTOR);
            assert_eq!(v[r.clone()], want[r], "LBA {lba}");
        }
        // Boot code before the partition record is kept.
        let (mut b, _) = disk(64);
        b[..440].fill(0x5a);
        grow(&mut b);
        assert!(b[..440].iter().all(|&x| x == 0x5a) && b[510..512] == [0x55, 0xaa]);
        // Done: nothing more to do.
        assert_eq!(grow(&mut v), None);
        // A disk of the image's own size has nothing to gain.
        assert_eq!(grow(&mut disk(16).0), None);
    }

    /// A power cut after every prefix of the writes, and inside each write at every
    /// sector: the primary table always reads (as the kernel reads it) with the old or the
    /// new layout, no partition's bytes are touched, and planning again finishes the grow
    /// with the same bytes as an uncut one.
    #[test]
    fn a_cut_at_any_write_leaves_a_table_that_reads_and_a_grow_that_finishes() {
        let (start, image) = disk(32);
        let mut done = start.clone();
        let p = grow(&mut done).unwrap();
        let new_last = p.last_lba.1;
        let mut cuts = 0;
        for (i, (lba, bytes)) in p.writes.iter().enumerate() {
            for sectors in 0..=(u64::try_from(bytes.len()).unwrap() / SECTOR) {
                let mut v = start.clone();
                let mut c = Cursor::new(&mut v[..]);
                let before = Plan {
                    writes: p.writes[..i].to_vec(),
                    ..p.clone()
                };
                apply(&mut c, &before, &mut |_| Ok(())).unwrap();
                let at = us(lba * SECTOR);
                let n = us(sectors * SECTOR);
                v[at..at + n].copy_from_slice(&bytes[..n]);
                let t = table(&v);
                assert_eq!(
                    t.partitions[..3],
                    image.partitions[..3],
                    "cut {i}/{sectors}"
                );
                let last = t.partitions[3].last_lba;
                assert!(
                    last == 15 * MIB - 1 || last == new_last,
                    "cut {i}/{sectors}: data ends at {last}"
                );
                assert_eq!(
                    v[us(MIB * SECTOR)..us(15 * MIB * SECTOR)],
                    start[us(MIB * SECTOR)..us(15 * MIB * SECTOR)],
                    "cut {i}/{sectors}: partition bytes changed"
                );
                grow(&mut v);
                assert!(v == done, "cut {i}/{sectors}: the resumed grow differs");
                cuts += 1;
            }
        }
        assert!(cuts > 7 * 2, "{cuts}");
    }

    #[test]
    fn only_the_last_partition_grows_and_only_with_room_for_the_scratch_array() {
        let (v, _) = disk(64);
        let len = u64::try_from(v.len()).unwrap();
        assert_eq!(
            plan(&mut Cursor::new(&v), len, "stele-root-a").unwrap(),
            None
        );
        assert_eq!(plan(&mut Cursor::new(&v), len, "nope").unwrap(), None);
        let tight = Gpt {
            disk_guid: Guid::derive(b"t"),
            total_sectors: 8 * MIB,
            partitions: vec![part("stele-data", 40, 4 * MIB)],
        };
        let mut c = Cursor::new(vec![0u8; us(8 * MIB * SECTOR)]);
        tight.write(&mut c).unwrap();
        let mut v = c.into_inner();
        v.resize(us(64 * MIB * SECTOR), 0);
        let len = u64::try_from(v.len()).unwrap();
        assert!(matches!(
            plan(&mut Cursor::new(&v), len, "stele-data"),
            Err(GptError::Layout(_))
        ));
    }
}

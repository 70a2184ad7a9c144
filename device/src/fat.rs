//! A small FAT12/16/32 reader and writer for the EFI system partition: the boot sector's
//! geometry, one FAT in memory, directories, files, and which clusters the directory tree
//! reaches. Only what `stele update stage1` needs, with every write explicit: the caller
//! decides the order (crate::commands::esp). Pure over `Read`/`Write`/`Seek`; never panics on
//! arbitrary bytes. Layout: Microsoft's FAT specification, docs/FORMATS.md "EFI system
//! partition".

use std::io::{self, Read, Seek, SeekFrom, Write};

/// Bytes of a directory entry.
pub const ENTRY: usize = 32;
/// The first name byte of a deleted entry.
pub const DELETED: u8 = 0xE5;
const ATTR_VOLUME: u8 = 0x08;
const ATTR_DIR: u8 = 0x10;
const ATTR_LFN: u8 = 0x0F;

/// What is wrong with the filesystem, or reading or writing it.
#[derive(Debug, thiserror::Error)]
pub enum FatError {
    #[error("I/O error while {op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("not a FAT filesystem: {0}")]
    NotFat(&'static str),
    #[error("the FAT filesystem is damaged ({0}): check it with `fsck.vfat -n`")]
    Corrupt(String),
}

fn io(op: &'static str) -> impl FnOnce(io::Error) -> FatError {
    move |source| FatError::Io { op, source }
}

fn corrupt(why: impl Into<String>) -> FatError {
    FatError::Corrupt(why.into())
}

/// The three FAT variants (by cluster count, as the specification decides).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Fat12,
    Fat16,
    Fat32,
}

/// Where a directory's entries are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// The FAT12/16 root directory: a fixed region (byte offset, length).
    Fixed(u64, u64),
    /// A directory in clusters, from its first cluster.
    Chain(u32),
}

/// The geometry from the boot sector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    pub kind: Kind,
    pub sector: u64,
    pub cluster: u64,
    /// Byte offset and length of each FAT copy.
    pub fat_offset: u64,
    pub fat_len: u64,
    /// The FAT copies that are written: all of them when mirrored, else the active one.
    pub written_fats: Vec<u64>,
    /// The FAT copy that is read.
    pub active_fat: u64,
    pub root: Dir,
    pub data_offset: u64,
    /// Number of data clusters: valid cluster numbers are 2 ..= clusters + 1.
    pub clusters: u32,
    /// Byte offset of the FAT32 FSInfo sector, if it has a valid one (checked by the caller).
    pub fsinfo: Option<u64>,
}

fn le16(b: &[u8], o: usize) -> u64 {
    u64::from(u16::from_le_bytes([b[o], b[o + 1]]))
}

fn u32le(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn le32(b: &[u8], o: usize) -> u64 {
    u64::from(u32le(b, o))
}

impl Volume {
    /// Reads the geometry out of a boot sector (its first 512 bytes). Pure.
    pub fn parse(bs: &[u8]) -> Result<Volume, FatError> {
        if bs.len() < 512 || bs[510..512] != [0x55, 0xAA] {
            return Err(FatError::NotFat("no boot sector signature 55 AA"));
        }
        let sector = le16(bs, 11);
        let per_cluster = u64::from(bs[13]);
        let reserved = le16(bs, 14);
        let fats = u64::from(bs[16]);
        let root_entries = le16(bs, 17);
        let total = match le16(bs, 19) {
            0 => le32(bs, 32),
            n => n,
        };
        let fat_sectors = match le16(bs, 22) {
            0 => le32(bs, 36),
            n => n,
        };
        if ![512, 1024, 2048, 4096].contains(&sector) {
            return Err(FatError::NotFat(
                "bytes per sector is not 512, 1024, 2048 or 4096",
            ));
        }
        if !per_cluster.is_power_of_two() || per_cluster > 128 {
            return Err(FatError::NotFat(
                "sectors per cluster is not a power of two up to 128",
            ));
        }
        if reserved == 0 || fats == 0 || fat_sectors == 0 || total == 0 {
            return Err(FatError::NotFat(
                "zero reserved sectors, FATs, FAT size or volume size",
            ));
        }
        let root_sectors = (root_entries * ENTRY as u64).div_ceil(sector);
        let meta = reserved + fats * fat_sectors + root_sectors;
        let clusters = total.checked_sub(meta).ok_or(FatError::NotFat(
            "the FATs and root directory exceed the volume",
        ))? / per_cluster;
        let kind = match clusters {
            0..4085 => Kind::Fat12,
            4085..65525 => Kind::Fat16,
            _ => Kind::Fat32,
        };
        let clusters = u32::try_from(clusters.min(0x0FFF_FFF5))
            .map_err(|_| FatError::NotFat("too many clusters"))?;
        let fat_offset = reserved * sector;
        let fat_len = fat_sectors * sector;
        let entries_fit = fat_len * 8 / Self::bits(kind);
        if entries_fit < u64::from(clusters) + 2 {
            return Err(FatError::NotFat("the FAT is too small for the volume"));
        }
        let (root, fsinfo, active, mirrored) = if kind == Kind::Fat32 {
            let flags = le16(bs, 40);
            let fsinfo = match le16(bs, 48) {
                0 | 0xFFFF => None,
                s if s < reserved => Some(s * sector),
                _ => None,
            };
            (
                Dir::Chain(u32le(bs, 44)),
                fsinfo,
                flags & 0xF,
                flags & 0x80 == 0,
            )
        } else {
            let off = fat_offset + fats * fat_len;
            (Dir::Fixed(off, root_entries * ENTRY as u64), None, 0, true)
        };
        if active >= fats {
            return Err(FatError::NotFat("the active FAT does not exist"));
        }
        let fat_at = |i: u64| fat_offset + i * fat_len;
        Ok(Volume {
            kind,
            sector,
            cluster: per_cluster * sector,
            fat_offset,
            fat_len,
            written_fats: if mirrored {
                (0..fats).map(fat_at).collect()
            } else {
                vec![fat_at(active)]
            },
            active_fat: fat_at(active),
            root,
            data_offset: meta * sector,
            clusters,
            fsinfo,
        })
    }

    fn bits(kind: Kind) -> u64 {
        match kind {
            Kind::Fat12 => 12,
            Kind::Fat16 => 16,
            Kind::Fat32 => 32,
        }
    }

    /// Byte offset of cluster `c` (2 ..= clusters + 1).
    pub fn cluster_offset(&self, c: u32) -> u64 {
        self.data_offset + u64::from(c.saturating_sub(2)) * self.cluster
    }

    /// Is `c` a data cluster of this volume?
    pub fn valid(&self, c: u32) -> bool {
        (2..=self.clusters.saturating_add(1)).contains(&c)
    }
}

/// One FAT copy in memory (the active one), with the bytes changed since it was read.
#[derive(Clone, Debug)]
pub struct Table {
    kind: Kind,
    bytes: Vec<u8>,
    dirty: Vec<bool>,
    sector: usize,
}

/// What a FAT entry says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Free,
    Next(u32),
    End,
    /// Bad cluster, reserved values, or a number outside the volume.
    Other(u32),
}

impl Table {
    /// Reads the active FAT of `vol`.
    pub fn read<D: Read + Seek>(dev: &mut D, vol: &Volume) -> Result<Table, FatError> {
        let len = usize::try_from(vol.fat_len).map_err(|_| FatError::NotFat("FAT too large"))?;
        let mut bytes = vec![0u8; len];
        dev.seek(SeekFrom::Start(vol.active_fat))
            .and_then(|_| dev.read_exact(&mut bytes))
            .map_err(io("reading the FAT"))?;
        let sector = usize::try_from(vol.sector).unwrap_or(512);
        Ok(Table {
            kind: vol.kind,
            dirty: vec![false; len.div_ceil(sector)],
            bytes,
            sector,
        })
    }

    /// The raw value of entry `n` (0 when outside the table).
    pub fn raw(&self, n: u32) -> u32 {
        let n = n as usize;
        let get = |o: usize| u32::from(*self.bytes.get(o).unwrap_or(&0));
        match self.kind {
            Kind::Fat12 => {
                let o = n + n / 2;
                let v = get(o) | (get(o + 1) << 8);
                if n.is_multiple_of(2) {
                    v & 0xFFF
                } else {
                    v >> 4
                }
            }
            Kind::Fat16 => get(2 * n) | (get(2 * n + 1) << 8),
            Kind::Fat32 => {
                let o = 4 * n;
                (get(o) | (get(o + 1) << 8) | (get(o + 2) << 16) | (get(o + 3) << 24)) & 0x0FFF_FFFF
            }
        }
    }

    /// Entry `n`, interpreted for a volume of `vol.clusters` clusters.
    pub fn link(&self, vol: &Volume, n: u32) -> Link {
        let v = self.raw(n);
        let end = match self.kind {
            Kind::Fat12 => 0xFF8,
            Kind::Fat16 => 0xFFF8,
            Kind::Fat32 => 0x0FFF_FFF8,
        };
        match v {
            0 => Link::Free,
            v if v >= end => Link::End,
            v if vol.valid(v) => Link::Next(v),
            v => Link::Other(v),
        }
    }

    /// Is cluster `n` marked bad?
    pub fn is_bad(&self, n: u32) -> bool {
        let bad = match self.kind {
            Kind::Fat12 => 0xFF7,
            Kind::Fat16 => 0xFFF7,
            Kind::Fat32 => 0x0FFF_FFF7,
        };
        self.raw(n) == bad
    }

    /// Sets entry `n` to `link` (Free, Next or End) in memory, marking the sectors it
    /// touches. Entries outside the table are ignored.
    pub fn set(&mut self, n: u32, link: Link) {
        let v = match (link, self.kind) {
            (Link::Free, _) => 0,
            (Link::Next(c) | Link::Other(c), _) => c,
            (Link::End, Kind::Fat12) => 0xFFF,
            (Link::End, Kind::Fat16) => 0xFFFF,
            (Link::End, Kind::Fat32) => 0x0FFF_FFFF,
        };
        let n = n as usize;
        let (o, put): (usize, Vec<u8>) = match self.kind {
            Kind::Fat12 => {
                let o = n + n / 2;
                if o + 1 >= self.bytes.len() {
                    return;
                }
                let old = u32::from(self.bytes[o]) | (u32::from(self.bytes[o + 1]) << 8);
                let new = if n.is_multiple_of(2) {
                    (old & 0xF000) | (v & 0xFFF)
                } else {
                    (old & 0x000F) | ((v & 0xFFF) << 4)
                };
                (o, new.to_le_bytes()[..2].to_vec())
            }
            Kind::Fat16 => (2 * n, (v & 0xFFFF).to_le_bytes()[..2].to_vec()),
            Kind::Fat32 => {
                // The top 4 bits are reserved: keep them.
                let o = 4 * n;
                let Some(old) = self.bytes.get(o..o + 4) else {
                    return;
                };
                let top = u32::from(old[3] & 0xF0) << 24;
                (o, (top | (v & 0x0FFF_FFFF)).to_le_bytes().to_vec())
            }
        };
        if o + put.len() > self.bytes.len() {
            return;
        }
        for (i, b) in put.into_iter().enumerate() {
            if self.bytes[o + i] != b {
                self.bytes[o + i] = b;
                self.dirty[(o + i) / self.sector] = true;
            }
        }
    }

    /// The cluster chain from `first`: every cluster in order, checked (inside the volume,
    /// no loop, ends with an end mark).
    pub fn chain(&self, vol: &Volume, first: u32) -> Result<Vec<u32>, FatError> {
        let mut out = Vec::new();
        let mut c = first;
        loop {
            if !vol.valid(c) {
                return Err(corrupt(format!("cluster chain reaches cluster {c}")));
            }
            if out.len() > vol.clusters as usize {
                return Err(corrupt(format!("the cluster chain from {first} loops")));
            }
            out.push(c);
            match self.link(vol, c) {
                Link::End => return Ok(out),
                Link::Next(n) => c = n,
                Link::Free | Link::Other(_) => {
                    return Err(corrupt(format!(
                        "the cluster chain from {first} breaks at cluster {c}"
                    )))
                }
            }
        }
    }

    /// Writes the changed sectors to every written FAT copy (first copy first) and forgets
    /// the changes. Nothing is written when nothing changed.
    pub fn flush<D: Write + Seek>(&mut self, dev: &mut D, vol: &Volume) -> Result<(), FatError> {
        for &fat in &vol.written_fats {
            for (i, _) in self.dirty.iter().enumerate().filter(|(_, d)| **d) {
                let start = i * self.sector;
                let end = (start + self.sector).min(self.bytes.len());
                write_at(
                    dev,
                    fat + start as u64,
                    &self.bytes[start..end],
                    "writing the FAT",
                )?;
            }
        }
        self.dirty.fill(false);
        Ok(())
    }

    /// Clusters marked free.
    pub fn free_count(&self, vol: &Volume) -> u32 {
        let free = (2..=vol.clusters.saturating_add(1))
            .filter(|&c| self.raw(c) == 0)
            .count();
        u32::try_from(free).unwrap_or(u32::MAX)
    }
}

/// Writes `bytes` at byte offset `off`.
pub fn write_at<D: Write + Seek>(
    dev: &mut D,
    off: u64,
    bytes: &[u8],
    op: &'static str,
) -> Result<(), FatError> {
    dev.seek(SeekFrom::Start(off))
        .and_then(|_| dev.write_all(bytes))
        .map_err(io(op))
}

fn read_at<D: Read + Seek>(dev: &mut D, off: u64, buf: &mut [u8]) -> Result<(), FatError> {
    dev.seek(SeekFrom::Start(off))
        .and_then(|_| dev.read_exact(buf))
        .map_err(io("reading the ESP"))
}

/// A directory entry and where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Byte offset of the entry in the volume.
    pub at: u64,
    pub raw: [u8; ENTRY],
}

impl Entry {
    /// A slot that has never been used: it and every slot after it are free.
    pub fn is_end(&self) -> bool {
        self.raw[0] == 0
    }
    pub fn is_deleted(&self) -> bool {
        self.raw[0] == DELETED
    }
    pub fn is_free(&self) -> bool {
        self.is_end() || self.is_deleted()
    }
    pub fn is_lfn(&self) -> bool {
        self.raw[11] & 0x3F == ATTR_LFN
    }
    /// A live short entry of a file or directory (not free, not a long-name part, not the
    /// volume label).
    pub fn is_live(&self) -> bool {
        !self.is_free() && !self.is_lfn() && self.raw[11] & ATTR_VOLUME == 0
    }
    pub fn is_dir(&self) -> bool {
        self.raw[11] & ATTR_DIR != 0
    }
    /// `.` or `..`.
    pub fn is_dot(&self) -> bool {
        self.raw[0] == b'.'
    }
    /// The 8.3 name, space padded.
    pub fn name(&self) -> [u8; 11] {
        let mut n = [0u8; 11];
        n.copy_from_slice(&self.raw[..11]);
        n
    }
    pub fn first_cluster(&self) -> u32 {
        u32::from(u16::from_le_bytes([self.raw[26], self.raw[27]]))
            | (u32::from(u16::from_le_bytes([self.raw[20], self.raw[21]])) << 16)
    }
    pub fn set_first_cluster(&mut self, c: u32) {
        let b = c.to_le_bytes();
        self.raw[20..22].copy_from_slice(&b[2..4]);
        self.raw[26..28].copy_from_slice(&b[0..2]);
    }
    pub fn size(&self) -> u32 {
        u32::from_le_bytes([self.raw[28], self.raw[29], self.raw[30], self.raw[31]])
    }
    pub fn set_size(&mut self, n: u32) {
        self.raw[28..32].copy_from_slice(&n.to_le_bytes());
    }
    /// The long-name checksum of the short name (what its LFN parts carry at byte 13).
    pub fn lfn_checksum(&self) -> u8 {
        self.raw[..11]
            .iter()
            .fold(0u8, |s, &c| s.rotate_right(1).wrapping_add(c))
    }
}

/// `NAME.EXT` as a space-padded upper-case 8.3 name; `None` when it is not one. Pure.
pub fn short_name(s: &str) -> Option<[u8; 11]> {
    let (base, ext) = s.split_once('.').unwrap_or((s, ""));
    let ok = |p: &str, max| {
        !p.is_empty() && p.len() <= max && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    if !ok(base, 8) || !(ext.is_empty() || ok(ext, 3)) {
        return None;
    }
    let mut n = [b' '; 11];
    n[..base.len()].copy_from_slice(base.to_ascii_uppercase().as_bytes());
    n[8..8 + ext.len()].copy_from_slice(ext.to_ascii_uppercase().as_bytes());
    Some(n)
}

/// A FAT volume opened for reading: geometry and the active FAT.
#[derive(Clone, Debug)]
pub struct Fs {
    pub vol: Volume,
    pub table: Table,
}

impl Fs {
    /// Reads the boot sector and the active FAT.
    pub fn open<D: Read + Seek>(dev: &mut D) -> Result<Fs, FatError> {
        let mut bs = [0u8; 512];
        read_at(dev, 0, &mut bs).map_err(|e| match e {
            FatError::Io { source, .. } if source.kind() == io::ErrorKind::UnexpectedEof => {
                FatError::NotFat("shorter than a boot sector")
            }
            e => e,
        })?;
        let vol = Volume::parse(&bs)?;
        let table = Table::read(dev, &vol)?;
        Ok(Fs { vol, table })
    }

    /// The byte ranges of a directory: the fixed root, or its clusters.
    fn dir_ranges(&self, dir: Dir) -> Result<Vec<(u64, u64)>, FatError> {
        match dir {
            Dir::Fixed(off, len) => Ok(vec![(off, len)]),
            Dir::Chain(first) => Ok(self
                .table
                .chain(&self.vol, first)?
                .into_iter()
                .map(|c| (self.vol.cluster_offset(c), self.vol.cluster))
                .collect()),
        }
    }

    /// Every slot of a directory, in order, up to and including the first never-used one
    /// (readers stop there; slots after it are free).
    pub fn entries<D: Read + Seek>(&self, dev: &mut D, dir: Dir) -> Result<Vec<Entry>, FatError> {
        let mut out = Vec::new();
        for (off, len) in self.dir_ranges(dir)? {
            let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
            read_at(dev, off, &mut buf)?;
            for (i, raw) in buf.chunks_exact(ENTRY).enumerate() {
                let mut e = Entry {
                    at: off + (i * ENTRY) as u64,
                    raw: [0; ENTRY],
                };
                e.raw.copy_from_slice(raw);
                out.push(e);
                if e.is_end() {
                    return Ok(out);
                }
            }
        }
        Ok(out)
    }

    /// The directory an entry opens (its first cluster; 0 in `..` means the root).
    pub fn dir_of(&self, e: &Entry) -> Dir {
        match e.first_cluster() {
            0 => self.vol.root,
            c => Dir::Chain(c),
        }
    }

    /// The live entries named `name` (8.3, any case) in `dir`, in directory order.
    pub fn find<D: Read + Seek>(
        &self,
        dev: &mut D,
        dir: Dir,
        name: &[u8; 11],
    ) -> Result<Vec<Entry>, FatError> {
        Ok(self
            .entries(dev, dir)?
            .into_iter()
            .filter(|e| e.is_live() && e.name().eq_ignore_ascii_case(name))
            .collect())
    }

    /// The directory at `path` (8.3 names from the root), as the firmware finds it: the
    /// first live directory entry of each name. `None` when a part is missing.
    pub fn find_dir<D: Read + Seek>(
        &self,
        dev: &mut D,
        path: &[[u8; 11]],
    ) -> Result<Option<Dir>, FatError> {
        let mut dir = self.vol.root;
        for name in path {
            match self.find(dev, dir, name)?.into_iter().find(Entry::is_dir) {
                Some(e) => dir = self.dir_of(&e),
                None => return Ok(None),
            }
        }
        Ok(Some(dir))
    }

    /// The first `max` bytes (at most) of the file of entry `e`.
    pub fn read_file<D: Read + Seek>(
        &self,
        dev: &mut D,
        e: &Entry,
        max: u64,
    ) -> Result<Vec<u8>, FatError> {
        let size = u64::from(e.size()).min(max);
        if size == 0 {
            return Ok(Vec::new());
        }
        let chain = self.table.chain(&self.vol, e.first_cluster())?;
        if (chain.len() as u64) < u64::from(e.size()).div_ceil(self.vol.cluster) {
            return Err(corrupt("a file is larger than its cluster chain"));
        }
        let mut out = vec![0u8; usize::try_from(size).map_err(|_| corrupt("file too large"))?];
        let cs = usize::try_from(self.vol.cluster).unwrap_or(usize::MAX);
        for (c, chunk) in chain.iter().zip(out.chunks_mut(cs)) {
            read_at(dev, self.vol.cluster_offset(*c), chunk)?;
        }
        Ok(out)
    }

    /// Which clusters the directory tree uses (index = cluster number): every live entry's
    /// chain, directories walked from the root. Cross-linked or broken chains are refused.
    pub fn reachable<D: Read + Seek>(&self, dev: &mut D) -> Result<Vec<bool>, FatError> {
        let mut used = vec![false; self.vol.clusters as usize + 2];
        let mut dirs = vec![self.vol.root];
        if let Dir::Chain(c) = self.vol.root {
            self.mark(&mut used, c)?;
        }
        while let Some(dir) = dirs.pop() {
            for e in self.entries(dev, dir)? {
                if !e.is_live() || e.is_dot() || e.first_cluster() == 0 {
                    continue;
                }
                self.mark(&mut used, e.first_cluster())?;
                if e.is_dir() {
                    dirs.push(Dir::Chain(e.first_cluster()));
                }
            }
        }
        Ok(used)
    }

    fn mark(&self, used: &mut [bool], first: u32) -> Result<(), FatError> {
        for c in self.table.chain(&self.vol, first)? {
            let slot = &mut used[c as usize];
            if *slot {
                return Err(corrupt(format!("cluster {c} belongs to two files")));
            }
            *slot = true;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests;

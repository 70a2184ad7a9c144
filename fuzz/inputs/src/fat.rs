//! Target `fat_read`: bytes as the EFI system partition `stele update stage1` reads
//! (stele_device::fat): boot sector, active FAT, the directory tree from the root,
//! `\EFI\BOOT\BOOTX64.EFI`. Never a panic, never an allocation larger than the partition.
//!
//! Input: the partition's length in 512-byte sectors (u32, little-endian; at most
//! [`MAX_SECTORS`]), then records of a sector number (u32, little-endian) and its 512
//! bytes; every other sector reads as zeros. A FAT32 ESP of 33 MiB is a few KiB of input.
//! Seeds: images made by mkfs.vfat and mtools (dosfstools, mtools: `cargo xtask setup`)
//! when the seeds are written, and crafted boot sectors.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom};
use std::process::Command;

use stele_device::fat::{short_name, Dir, FatError, Fs};

use crate::Seed;

pub const STAGES: &[&str] = &[
    "boot sector and FAT",
    "directory tree",
    "\\EFI\\BOOT",
    "BOOTX64.EFI",
];

/// The largest partition an input describes (256 MiB): the reader allocates at most the
/// FAT and a cluster map of it.
pub const MAX_SECTORS: u32 = 1 << 19;
const SECTOR: usize = 512;

/// A partition of zeros with some sectors set, readable and seekable.
#[derive(Clone, Debug, Default)]
pub struct Sparse {
    len: u64,
    sectors: BTreeMap<u32, [u8; SECTOR]>,
    pos: u64,
}

impl Sparse {
    /// Decodes an input (records for sectors outside the partition are dropped).
    pub fn decode(data: &[u8]) -> Sparse {
        let mut n = [0u8; 4];
        let head = data.get(..4).unwrap_or(data);
        n[..head.len()].copy_from_slice(head);
        let count = u32::from_le_bytes(n).min(MAX_SECTORS);
        let mut sectors = BTreeMap::new();
        for rec in data.get(4..).unwrap_or(&[]).chunks_exact(4 + SECTOR) {
            let at = u32::from_le_bytes([rec[0], rec[1], rec[2], rec[3]]);
            if at < count {
                let mut s = [0u8; SECTOR];
                s.copy_from_slice(&rec[4..]);
                sectors.insert(at, s);
            }
        }
        Sparse {
            len: u64::from(count) * SECTOR as u64,
            sectors,
            pos: 0,
        }
    }

    /// Encodes a whole image (its length rounded down to sectors; zero sectors left out).
    pub fn encode(image: &[u8]) -> Vec<u8> {
        let count = u32::try_from(image.len() / SECTOR).unwrap_or(u32::MAX);
        let mut v = count.to_le_bytes().to_vec();
        for (i, s) in image.chunks_exact(SECTOR).enumerate() {
            if s.iter().any(|&b| b != 0) {
                v.extend_from_slice(&u32::try_from(i).unwrap_or(u32::MAX).to_le_bytes());
                v.extend_from_slice(s);
            }
        }
        v
    }
}

impl Read for Sparse {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len {
            return Ok(0);
        }
        let sector = u32::try_from(self.pos / SECTOR as u64).unwrap_or(u32::MAX);
        let within = usize::try_from(self.pos % SECTOR as u64).unwrap_or(0);
        let n = buf
            .len()
            .min(SECTOR - within)
            .min(usize::try_from(self.len - self.pos).unwrap_or(usize::MAX));
        match self.sectors.get(&sector) {
            Some(s) => buf[..n].copy_from_slice(&s[within..within + n]),
            None => buf[..n].fill(0),
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Sparse {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(o) => Some(o),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = new.ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        Ok(self.pos)
    }
}

fn name(s: &str) -> [u8; 11] {
    short_name(s).unwrap_or([b' '; 11])
}

/// How far the reader gets, and the checks on what it returns.
fn walk(data: &[u8]) -> usize {
    let mut dev = Sparse::decode(data);
    let partition = dev.len;
    let Ok(fs) = Fs::open(&mut dev) else {
        return 0;
    };
    // Every region the boot sector names lies inside the partition.
    let v = &fs.vol;
    assert!(v.data_offset <= partition, "{v:?} in {partition}");
    assert!(
        v.fat_offset + v.fat_len <= partition,
        "{v:?} in {partition}"
    );
    let Ok(used) = fs.reachable(&mut dev) else {
        return 1;
    };
    assert_eq!(used.len(), v.clusters as usize + 2);
    let boot = match fs.find_dir(&mut dev, &[name("EFI"), name("BOOT")]) {
        Ok(Some(d)) => d,
        _ => return 2,
    };
    if let Dir::Chain(c) = boot {
        assert!(v.valid(c), "a directory at cluster {c}");
    }
    let Ok(files) = fs.find(&mut dev, boot, &name("BOOTX64.EFI")) else {
        return 2;
    };
    let Some(file) = files.first() else {
        return 2;
    };
    match fs.read_file(&mut dev, file, 1 << 20) {
        Ok(bytes) => {
            assert!(bytes.len() as u64 <= u64::from(file.size()).min(1 << 20));
            4
        }
        Err(FatError::Io { .. } | FatError::NotFat(_) | FatError::NoMemory(_)) => {
            panic!("reading a file inside the partition failed outside its checks")
        }
        Err(FatError::Corrupt(_)) => 3,
    }
}

pub fn run(data: &[u8]) {
    walk(data);
}

pub fn depth(data: &[u8]) -> usize {
    walk(data)
}

/// Runs a host tool for the seeds; a missing one names the set-up command.
fn tool(cmd: &mut Command) {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap_or_else(|e| {
            panic!("{name}: {e} (install dosfstools and mtools: `cargo xtask setup`)")
        });
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An image made by `mkfs.vfat -F fat` (`kib` KiB, fixed volume id) holding `files`.
fn mkfs(fat: &str, kib: u32, files: &[(&str, &[u8])]) -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("stele-fat-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory for the FAT seeds");
    let img = dir.join(format!("fat{fat}-{}.img", files.len()));
    let _ = std::fs::remove_file(&img);
    let mut cmd = Command::new("mkfs.vfat");
    cmd.args([
        "-C",
        "-F",
        fat,
        "-S",
        "512",
        "--invariant",
        "-i",
        "5e1e0001",
    ]);
    if fat == "16" {
        // 1 KiB clusters: enough of them for FAT16 in 8 MiB.
        cmd.args(["-s", "2"]);
    }
    tool(cmd.arg(&img).arg(kib.to_string()));
    let i = img.to_str().expect("a UTF-8 temporary path");
    for (n, (path, bytes)) in files.iter().enumerate() {
        if n == 0 {
            tool(Command::new("mmd").args(["-i", i, "::/EFI", "::/EFI/BOOT"]));
        }
        let src = dir.join(format!("src{n}"));
        std::fs::write(&src, bytes).expect("a seed file");
        tool(
            Command::new("mcopy")
                .args(["-i", i])
                .arg(&src)
                .arg(format!("::{path}")),
        );
    }
    let b = std::fs::read(&img).expect("the seed image");
    let _ = std::fs::remove_dir_all(&dir);
    b
}

/// The boot sector fields of issue 18's crafted FAT32 volume: 4096-byte sectors, one FAT,
/// total32 0xFFFFFFFF, FAT size 0xF0000000 (it once asked for 16 TB of memory).
pub fn crafted_boot_sector(bs: &mut [u8]) {
    bs[11..13].copy_from_slice(&4096u16.to_le_bytes());
    bs[16] = 1;
    bs[19..21].fill(0);
    bs[22..24].fill(0);
    bs[32..36].copy_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
    bs[36..40].copy_from_slice(&0xF000_0000u32.to_le_bytes());
}

pub fn seeds() -> Vec<Seed> {
    let uki: Vec<u8> = (0..9000u32).map(|i| (i % 251) as u8).collect();
    let mut out = Vec::new();
    for (fat, kib) in [("12", 1024), ("16", 8192), ("32", 34000)] {
        let full = mkfs(
            fat,
            kib,
            &[
                ("/EFI/BOOT/BOOTX64.EFI", &uki),
                ("/EFI/BOOT/other.txt", b"x"),
            ],
        );
        out.push(Seed::new(format!("fat{fat}"), Sparse::encode(&full)));
        let empty = mkfs(fat, kib, &[]);
        out.push(Seed::new(format!("fat{fat}-empty"), Sparse::encode(&empty)));
        let no_file = mkfs(fat, kib, &[("/EFI/BOOT/other.txt", b"x")]);
        out.push(Seed::new(
            format!("fat{fat}-no-uki"),
            Sparse::encode(&no_file),
        ));
        let mut crafted = full.clone();
        crafted_boot_sector(&mut crafted[..SECTOR]);
        out.push(Seed::new(
            format!("fat{fat}-issue-18"),
            Sparse::encode(&crafted),
        ));
        // The volume one sector larger than its partition.
        out.push(Seed::new(
            format!("fat{fat}-cut"),
            Sparse::encode(&full[..full.len() - SECTOR]),
        ));
    }
    // A file whose chain breaks (its first cluster marked free): the tree is refused.
    let mut broken = mkfs("12", 1024, &[("/EFI/BOOT/BOOTX64.EFI", &uki)]);
    let mut dev = Sparse::decode(&Sparse::encode(&broken));
    if let Ok(fs) = Fs::open(&mut dev) {
        if let Ok(Some(boot)) = fs.find_dir(&mut dev, &[name("EFI"), name("BOOT")]) {
            if let Some(f) = fs
                .find(&mut dev, boot, &name("BOOTX64.EFI"))
                .ok()
                .and_then(|f| f.first().copied())
            {
                // FAT12: entry n at byte n + n/2 of each FAT copy.
                let n = f.first_cluster() as usize;
                for fat in &fs.vol.written_fats {
                    let o = usize::try_from(*fat).unwrap_or(usize::MAX) + n + n / 2;
                    if n.is_multiple_of(2) {
                        broken[o] = 0;
                        broken[o + 1] &= 0xF0;
                    } else {
                        broken[o] &= 0x0F;
                        broken[o + 1] = 0;
                    }
                }
            }
        }
    }
    out.push(Seed::new("fat12-broken-chain", Sparse::encode(&broken)));
    // A file larger than its chain.
    let mut short = mkfs("12", 1024, &[("/EFI/BOOT/BOOTX64.EFI", &uki)]);
    if let Some(at) = short.windows(11).position(|w| w == b"BOOTX64 EFI") {
        short[at + 28..at + 32].copy_from_slice(&(1u32 << 19).to_le_bytes());
    }
    out.push(Seed::new("fat12-file-past-chain", Sparse::encode(&short)));
    out
}

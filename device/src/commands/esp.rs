//! `stele update stage1`: replaces the ESP's `\EFI\BOOT\BOOTX64.EFI` with a new UKI so that,
//! whenever the power goes, the ESP still holds a complete stage 1, the old or the new one.
//!
//! FAT has no atomic rename. The switch is two one-byte writes instead, each flushed:
//! 1. the new UKI goes into clusters the directory tree does not use (free, or lost to an
//!    earlier interrupted update), its FAT chain into every FAT copy, and its directory
//!    entry into a free slot of `\EFI\BOOT` *marked deleted* (first byte 0xE5); flush.
//!    Nothing any reader follows has changed;
//! 2. the new entry's first byte is written (it is live: two live `BOOTX64.EFI` entries,
//!    both complete; a firmware takes the first in directory order); flush;
//! 3. every old entry's first byte becomes 0xE5 (and its long-name parts'); flush. Only the
//!    new entry is live;
//! 4. the old chains (and lost clusters) are freed in the FATs, the FSInfo free count is
//!    set again (it reads "unknown" from the start until here); flush.
//!
//! A one-byte write cannot tear, and each step leaves every live entry pointing at a whole,
//! flushed file: the proof is the replay test (stage1/power_cut.rs). Decisions ([`plan`])
//! apart from writes ([`Plan::write`]). Layout in docs/FORMATS.md, "Replacing stage 1".

use std::io::{self, Read};
use std::os::unix::fs::FileTypeExt;

use sha2::{Digest, Sha256};
use stele_verifier::uki::{self, UkiError};

use crate::commands::install::BundleArg;
use crate::fat::{write_at, Entry, FatError, Fs, Link, DELETED};
use crate::runtime::open::{self, Storage};
use crate::target::Target;
use crate::{Error, Result};

/// Where the firmware finds stage 1.
pub const PATH: &str = "\\EFI\\BOOT\\BOOTX64.EFI";
/// [`PATH`] as 8.3 names.
const DIRS: [[u8; 11]; 2] = [*b"EFI        ", *b"BOOT       "];
const FILE: [u8; 11] = *b"BOOTX64 EFI";
/// Bytes of the current stage 1 read to see whether it is signed.
const HEADER: u64 = 64 << 10;
/// FSInfo: signatures and the free-count field.
const FSI_LEAD: u32 = 0x4161_5252;
const FSI_STRUC: u32 = 0x6141_7272;
const FSI_FREE: u64 = 488;
/// The FSInfo free count for "unknown".
const UNKNOWN: u32 = 0xFFFF_FFFF;

/// Why a stage-1 update is refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum Stage1Error {
    /// The new file is not a UKI stele can boot.
    #[error("not a stage-1 UKI: {0}")]
    NotUki(#[source] UkiError),
    /// The new UKI does not fit beside the current one.
    #[error("the UKI is {len} bytes but the ESP has {free} bytes free beside the current stage 1 ({current} bytes): the new file is written next to the old one before the switch; give the ESP more room (`stele disk create --esp-size`) or make the UKI smaller")]
    NoSpace { len: u64, free: u64, current: u64 },
    /// Replacing a signed stage 1 with an unsigned one would leave a Secure Boot machine
    /// with nothing the firmware runs.
    #[error("the current stage 1 is signed for Secure Boot and the new UKI is not: the firmware would refuse it and nothing would boot; sign it (`stele uki build --sign-key KEY.pem --sign-cert CERT.pem`)")]
    Unsigned,
    /// Nothing to replace.
    #[error("the ESP has no {PATH}: there is no stage 1 to replace (an ESP made by `stele disk create --uki` has one)")]
    NoStage1,
    /// `\EFI\BOOT` has no free slot for the new entry.
    #[error("\\EFI\\BOOT on the ESP has no free directory entry for the new file (delete a file from it)")]
    DirFull,
    /// Reading or writing the FAT filesystem.
    #[error(transparent)]
    Fat(#[from] FatError),
    /// Flushing the device.
    #[error("flushing the ESP to stable storage failed: {0}")]
    Sync(#[source] io::Error),
    /// The new file is larger than the whole ESP.
    #[error("the UKI is larger than the whole ESP ({esp} bytes)")]
    LargerThanEsp { esp: u64 },
}

impl Stage1Error {
    /// True when the caller's UKI is at fault (usage), not the ESP (environment).
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            Stage1Error::NotUki(_)
                | Stage1Error::NoSpace { .. }
                | Stage1Error::Unsigned
                | Stage1Error::LargerThanEsp { .. }
        )
    }
}

/// What [`plan`] decided; nothing has been written.
#[derive(Clone, Debug)]
pub struct Plan {
    fs: Fs,
    /// The live `BOOTX64.EFI` entries, in directory order (one, or two after a power cut
    /// between steps 2 and 3 of an earlier update).
    old: Vec<Entry>,
    /// Byte offsets of the old entries' long-name parts.
    old_lfn: Vec<u64>,
    /// The new entry, complete, at its slot.
    entry: Entry,
    /// The new file's clusters, in order.
    clusters: Vec<u32>,
    /// Freed after the switch: the old chains and clusters lost to earlier interruptions.
    free_after: Vec<u32>,
    /// Bytes of the current stage 1 (the first live entry).
    pub current_len: u64,
    pub signed: bool,
}

/// What was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replaced {
    pub old_len: u64,
    pub new_len: u64,
    pub signed: bool,
}

/// Checks the new UKI and plans the update of the ESP on `dev`: where the file goes, which
/// entry flips, what is freed. Reads only.
pub fn plan<D: Storage>(dev: &mut D, new: &[u8]) -> Result<Plan, Stage1Error> {
    let signed = uki::parse(new).map_err(Stage1Error::NotUki)?.pe.is_signed();
    let fs = Fs::open(dev)?;
    let boot = fs.find_dir(dev, &DIRS)?.ok_or(Stage1Error::NoStage1)?;
    let entries = fs.entries(dev, boot)?;
    let old: Vec<Entry> = entries
        .iter()
        .filter(|e| e.is_live() && !e.is_dir() && e.name().eq_ignore_ascii_case(&FILE))
        .copied()
        .collect();
    let first = *old.first().ok_or(Stage1Error::NoStage1)?;
    let current = fs.read_file(dev, &first, HEADER)?;
    if !signed && uki::parse_pe(&current).is_ok_and(|pe| pe.is_signed()) {
        return Err(Stage1Error::Unsigned);
    }
    let used = fs.reachable(dev)?;
    let (vol, table) = (&fs.vol, &fs.table);
    let available: Vec<u32> = (2..=vol.clusters + 1)
        .filter(|&c| !used[c as usize] && !table.is_bad(c))
        .collect();
    let len = new.len() as u64;
    let need = usize::try_from(len.div_ceil(vol.cluster)).unwrap_or(usize::MAX);
    if available.len() < need || u32::try_from(len).is_err() {
        return Err(Stage1Error::NoSpace {
            len,
            free: available.len() as u64 * vol.cluster,
            current: u64::from(first.size()),
        });
    }
    let clusters = pick(&available, need);
    let mut free_after = Vec::new();
    for e in &old {
        if e.first_cluster() != 0 {
            free_after.extend(table.chain(vol, e.first_cluster())?);
        }
    }
    free_after.extend(
        available
            .iter()
            .filter(|c| table.link(vol, **c) != Link::Free && !clusters.contains(c)),
    );
    let slot = free_slot(&entries, &old, vol.sector).ok_or(Stage1Error::DirFull)?;
    let mut entry = first;
    entry.at = slot;
    entry.set_first_cluster(clusters.first().copied().unwrap_or(0));
    entry.set_size(u32::try_from(len).unwrap_or(u32::MAX));
    let old_lfn = long_name_parts(&entries, &old);
    Ok(Plan {
        current_len: u64::from(first.size()),
        signed,
        fs,
        old,
        old_lfn,
        entry,
        clusters,
        free_after,
    })
}

/// The first run of `need` consecutive clusters in `available` (sorted), else the first
/// `need` of them. Pure.
fn pick(available: &[u32], need: usize) -> Vec<u32> {
    let mut start = 0;
    for i in 0..available.len() {
        if i > start && available[i] != available[i - 1] + 1 {
            start = i;
        }
        if i + 1 - start == need {
            return available[start..=i].to_vec();
        }
    }
    available[..need].to_vec()
}

/// A free slot for the new entry that readers reach: a deleted slot, or the first
/// never-used one (readers stop there). One outside the old entries' sectors is preferred,
/// so that no sector holds both. Pure.
fn free_slot(entries: &[Entry], old: &[Entry], sector: u64) -> Option<u64> {
    let free: Vec<u64> = entries
        .iter()
        .filter(|e| e.is_free())
        .map(|e| e.at)
        .collect();
    let apart = |at: &&u64| old.iter().all(|o| o.at / sector != **at / sector);
    free.iter().find(apart).or(free.first()).copied()
}

/// The long-name parts (before each old entry, with its checksum) to delete with it. Pure.
fn long_name_parts(entries: &[Entry], old: &[Entry]) -> Vec<u64> {
    let mut out = Vec::new();
    for o in old {
        let Some(i) = entries.iter().position(|e| e.at == o.at) else {
            continue;
        };
        let sum = o.lfn_checksum();
        for e in entries[..i].iter().rev() {
            if !(e.is_lfn() && !e.is_free() && e.raw[13] == sum) {
                break;
            }
            out.push(e.at);
        }
    }
    out
}

fn sync<D: Storage>(dev: &mut D) -> Result<(), Stage1Error> {
    dev.sync().map_err(Stage1Error::Sync)
}

impl Plan {
    /// Writes the new UKI `new` (the bytes [`plan`] checked) in the documented order,
    /// flushing between the steps. `progress` gets one line per step.
    pub fn write<D: Storage>(
        mut self,
        dev: &mut D,
        new: &[u8],
        progress: &mut dyn FnMut(&str),
    ) -> Result<Replaced, Stage1Error> {
        let fsinfo = self.fsinfo(dev)?;
        if let Some(off) = fsinfo {
            write_at(
                dev,
                off + FSI_FREE,
                &UNKNOWN.to_le_bytes(),
                "writing FSInfo",
            )?;
        }
        // Step 1: the file, its chain and its entry (deleted), all out of every reader's way.
        let mut hidden = self.entry.raw;
        hidden[0] = DELETED;
        write_at(
            dev,
            self.entry.at,
            &hidden,
            "writing the new directory entry",
        )?;
        let cs = usize::try_from(self.fs.vol.cluster).unwrap_or(512);
        let mut rest = new;
        let mut i = 0;
        while i < self.clusters.len() {
            let mut j = i + 1;
            while j < self.clusters.len() && self.clusters[j] == self.clusters[j - 1] + 1 {
                j += 1;
            }
            let take = ((j - i) * cs).min(rest.len());
            let mut run = rest[..take].to_vec();
            run.resize((j - i) * cs, 0);
            let at = self.fs.vol.cluster_offset(self.clusters[i]);
            write_at(dev, at, &run, "writing the new UKI")?;
            rest = &rest[take..];
            i = j;
        }
        for (k, &c) in self.clusters.iter().enumerate() {
            let link = self
                .clusters
                .get(k + 1)
                .map_or(Link::End, |&n| Link::Next(n));
            self.fs.table.set(c, link);
        }
        self.fs.table.flush(dev, &self.fs.vol)?;
        sync(dev)?;
        progress(&format!(
            "stage1: new UKI written and flushed beside the old one ({} bytes)",
            new.len()
        ));
        // Step 2: the new entry goes live.
        write_at(
            dev,
            self.entry.at,
            &self.entry.raw[..1],
            "switching to the new entry",
        )?;
        sync(dev)?;
        progress(&format!("stage1: switched {PATH} to the new UKI"));
        // Step 3: the old entries go.
        for at in self
            .old
            .iter()
            .map(|e| e.at)
            .chain(self.old_lfn.iter().copied())
        {
            write_at(dev, at, &[DELETED], "deleting the old entry")?;
        }
        sync(dev)?;
        // Step 4: clean-up.
        for &c in &self.free_after {
            self.fs.table.set(c, Link::Free);
        }
        self.fs.table.flush(dev, &self.fs.vol)?;
        if let Some(off) = fsinfo {
            let free = self.fs.table.free_count(&self.fs.vol);
            write_at(dev, off + FSI_FREE, &free.to_le_bytes(), "writing FSInfo")?;
        }
        sync(dev)?;
        progress("stage1: old UKI freed");
        Ok(Replaced {
            old_len: self.current_len,
            new_len: new.len() as u64,
            signed: self.signed,
        })
    }

    /// The FSInfo sector's offset, when the volume has a valid one.
    fn fsinfo<D: Storage>(&self, dev: &mut D) -> Result<Option<u64>, Stage1Error> {
        let Some(off) = self.fs.vol.fsinfo else {
            return Ok(None);
        };
        let mut s = [0u8; 512];
        dev.seek(io::SeekFrom::Start(off))
            .and_then(|_| dev.read_exact(&mut s))
            .map_err(|source| FatError::Io {
                op: "reading FSInfo",
                source,
            })?;
        let sig = |o: usize| u32::from_le_bytes([s[o], s[o + 1], s[o + 2], s[o + 3]]);
        Ok((sig(0) == FSI_LEAD && sig(484) == FSI_STRUC).then_some(off))
    }
}

/// [`plan`] then [`Plan::write`]: replaces stage 1 on the ESP `dev` with `new`.
pub fn replace<D: Storage>(
    dev: &mut D,
    new: &[u8],
    progress: &mut dyn FnMut(&str),
) -> Result<Replaced, Stage1Error> {
    let p = plan(dev, new)?;
    progress(&format!(
        "stage1: new UKI of {} bytes, {}, replacing {} bytes at {PATH}",
        new.len(),
        if p.signed { "signed" } else { "unsigned" },
        p.current_len
    ));
    p.write(dev, new, progress)
}

/// A finished `stele update stage1`, for its output line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Done {
    pub replaced: Replaced,
    /// The UKI argument (`stdin` for `-`) and the ESP (device or disk image).
    pub uki: String,
    pub esp: String,
    pub sha256: [u8; 32],
}

/// The line on stdout after a stage-1 update. Pure.
pub fn replaced_line(d: &Done) -> String {
    format!(
        "stele: stage 1 replaced: {PATH} on {} is now {} ({} bytes, {}, sha256 {}); reboot to run it",
        d.esp,
        d.uki,
        d.replaced.new_len,
        if d.replaced.signed { "signed" } else { "unsigned" },
        stele_verifier::hex::encode(&d.sha256)
    )
}

/// Reads the new UKI: a regular file, or stdin for `-` (a block device is refused: its size
/// is not the file's). More than `limit` bytes is [`Stage1Error::LargerThanEsp`].
pub fn read_uki(arg: &BundleArg, limit: u64) -> Result<(Vec<u8>, String)> {
    let (mut r, name): (Box<dyn Read>, String) = match arg {
        BundleArg::Stdin => (Box::new(io::stdin()), "stdin".into()),
        BundleArg::Path(p) => {
            let name = p.display().to_string();
            let f = open::open(&name, false)?;
            let md = f.metadata().map_err(|e| Error::io("stat", &name, e))?;
            if !md.is_file() && !md.file_type().is_fifo() {
                return Err(Error::UkiNotAFile { path: name });
            }
            (Box::new(f), name)
        }
    };
    let mut bytes = Vec::new();
    r.by_ref()
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io("read", &name, e))?;
    if bytes.len() as u64 > limit {
        return Err(Error::Stage1 {
            uki: name,
            esp: String::new(),
            source: Stage1Error::LargerThanEsp { esp: limit },
        });
    }
    Ok((bytes, name))
}

/// `stele update stage1` on an opened ESP (`esp_name` for messages, `esp_len` bytes): reads
/// the UKI, replaces stage 1, returns what the output line says. Both front-ends run this.
pub fn run<D: Storage>(
    esp: &mut D,
    esp_len: u64,
    esp_name: &str,
    arg: &BundleArg,
    progress: &mut dyn FnMut(&str),
) -> Result<Done> {
    let (bytes, uki) = read_uki(arg, esp_len).map_err(|e| match e {
        Error::Stage1 { uki, source, .. } => Error::Stage1 {
            uki,
            esp: esp_name.to_string(),
            source,
        },
        e => e,
    })?;
    let replaced = replace(esp, &bytes, progress).map_err(|source| Error::Stage1 {
        uki: uki.clone(),
        esp: esp_name.to_string(),
        source,
    })?;
    Ok(Done {
        replaced,
        uki,
        esp: esp_name.to_string(),
        sha256: Sha256::digest(&bytes).into(),
    })
}

/// `stele update stage1` on an opened target: its ESP ([`Target::esp`]: on the device
/// the partition the boot published, opened exclusively; the disk image's otherwise).
pub fn on_target(t: &Target, arg: &BundleArg, progress: &mut dyn FnMut(&str)) -> Result<Done> {
    let mut esp = t.esp()?;
    let len = esp.len();
    let name = esp.path().to_string();
    run(&mut esp, len, &name, arg, progress)
}

#[cfg(test)]
mod power_cut;
#[cfg(test)]
mod tests;

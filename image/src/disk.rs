//! `stele disk create`: a GPT disk image with the state partition, two root slots and an
//! optional ext4 data partition (layout in docs/FORMATS.md, "Disk image").

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use stele_verifier::state::BootState;

pub use crate::esp::EspSpec;
pub use crate::flash::flash_slot;
use crate::tool::MKFS_EXT4;
use stele_verifier::exit::{Exit, Report};
pub use stele_verifier::gpt::find_partition;
use stele_verifier::gpt::{Gpt, GptError, Guid, Partition, SECTOR};
use stele_verifier::layout::{PerRole, Role};
use stele_verifier::partition::PartitionIo;
use stele_verifier::progress::{Progress, Step};

/// One mebibyte: the partition alignment.
pub const MIB: u64 = 1 << 20;
/// GPT entry attribute bit 2: legacy BIOS bootable (set on the ESP with `--bios`).
pub const LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;
/// Size of the state partition: its two copies an erase block (1 MiB) apart.
pub const STATE_SIZE: u64 = stele_verifier::state::PARTITION_SIZE;

/// What went wrong while creating a disk.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// An I/O error on a named file.
    #[error("I/O error {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A size argument is not acceptable.
    #[error("invalid {what}: {why}")]
    Size { what: &'static str, why: String },
    /// A slot image does not fit its partition.
    #[error("slot image {path} is {image_len} bytes, larger than the slot size {slot_len} bytes: use a larger --slot-size")]
    TooLarge {
        path: PathBuf,
        image_len: u64,
        slot_len: u64,
    },
    /// The file is not a stele slot image (no valid footer/manifest locator).
    #[error("{path} is not a stele slot image: {why}")]
    NotSlot { path: PathBuf, why: String },
    /// A slot image's rollback index is below the other's, which is the disk's rollback
    /// floor: that slot could never boot.
    #[error("slot image {path} has rollback_index {index}, below the other slot image's {floor}: the disk starts with rollback floor {floor}, so this slot could never boot; give both slots images with rollback_index {floor} (or leave --b out)")]
    BelowFloor {
        path: PathBuf,
        index: u64,
        floor: u64,
    },
    /// Writing the partition table failed.
    #[error(transparent)]
    Gpt(#[from] GptError),
    /// Writing the boot state failed.
    #[error("failed to write the initial boot state: {0}")]
    State(stele_verifier::Error),
    /// A build step: the UKI and the EFI system partition, mkfs.ext4 (a missing or failing
    /// tool), the output (it exists without --force, it is not a file).
    #[error(transparent)]
    Image(#[from] crate::Error),
    /// The output is one of the inputs.
    #[error("--out {} is the input {}: the disk would replace it; give another --out", out.display(), input.display())]
    OutIsInput { out: PathBuf, input: PathBuf },
    /// A slot image argument that is a directory.
    #[error("slot image {} is a directory: give a slot image file (from `stele image build`)", path.display())]
    SlotIsDirectory { path: PathBuf },
}

impl Report for DiskError {
    /// I/O and tools are the environment; a file that is not a slot image is refused;
    /// sizes are the arguments.
    fn exit(&self) -> Exit {
        match self {
            DiskError::Io { .. } | DiskError::State(_) | DiskError::SlotIsDirectory { .. } => {
                Exit::Environment
            }
            DiskError::Gpt(e) => e.exit(),
            DiskError::NotSlot { .. } => Exit::Refused,
            DiskError::Size { .. }
            | DiskError::TooLarge { .. }
            | DiskError::OutIsInput { .. }
            | DiskError::BelowFloor { .. } => Exit::Usage,
            DiskError::Image(e) => e.exit(),
        }
    }
}

/// Parses `64M`, `1G`, `512K`, `1T` (powers of 1024, optional `iB`/`B` suffix) or bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, mult) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1 << 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 1 << 30),
        Some('T' | 't') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a size (examples: 64M, 1G, 512K, 1048576)"))
}

/// What goes on the disk.
#[derive(Clone, Debug)]
pub struct DiskSpec {
    /// Size of each root slot partition (rounded up to a whole MiB).
    pub slot_size: u64,
    pub a: PathBuf,
    pub b: Option<PathBuf>,
    /// Size of the ext4 data partition (rounded up to a whole MiB), if any.
    pub data_size: Option<u64>,
    /// Timestamp for the data filesystem (SOURCE_DATE_EPOCH).
    pub epoch: u64,
    /// `--disk-guid`: the GPT disk GUID (the disk's identity, docs/BOOT.md "The boot
    /// disk"); derived from the content when not given.
    pub disk_guid: Option<Guid>,
}

fn round_mib(what: &'static str, n: u64) -> Result<u64, DiskError> {
    if n == 0 {
        return Err(DiskError::Size {
            what,
            why: "must not be zero".into(),
        });
    }
    n.checked_next_multiple_of(MIB)
        .filter(|&n| n <= 1 << 50)
        .ok_or_else(|| DiskError::Size {
            what,
            why: format!("{n} bytes is too large"),
        })
}

/// The partition table for a disk. `seed` makes the GUIDs unique to the content. Pure.
pub fn layout(slot_size: u64, data_size: Option<u64>, seed: &[u8]) -> Result<Gpt, DiskError> {
    layout_with_esp(None, slot_size, data_size, seed)
}

/// [`layout`] with an EFI system partition first: `esp` is its size (a whole number of MiB)
/// and whether it is legacy-BIOS bootable. Pure.
pub fn layout_with_esp(
    esp: Option<(u64, bool)>,
    slot_size: u64,
    data_size: Option<u64>,
    seed: &[u8],
) -> Result<Gpt, DiskError> {
    let slot = round_mib("slot size", slot_size)?;
    // The one partition record: each role's size and attributes, laid out in its order.
    let mut sizes: PerRole<Option<(u64, u64)>> = PerRole::default();
    if let Some((size, bios)) = esp {
        let attrs = if bios { LEGACY_BIOS_BOOTABLE } else { 0 };
        *sizes.get_mut(Role::Esp) = Some((round_mib("ESP size", size)?, attrs));
    }
    *sizes.get_mut(Role::State) = Some((STATE_SIZE, 0));
    *sizes.get_mut(Role::SlotA) = Some((slot, 0));
    *sizes.get_mut(Role::SlotB) = Some((slot, 0));
    if let Some(d) = data_size {
        *sizes.get_mut(Role::Data) = Some((round_mib("data size", d)?, 0));
    }
    let parts = sizes
        .iter()
        .filter_map(|(r, s)| s.map(|(size, attrs)| (r.name(), r.spec().type_guid, size, attrs)));
    let mut start = MIB;
    let mut partitions = Vec::new();
    for (name, ty, size, attributes) in parts {
        let type_guid = Guid::parse(ty).ok_or_else(|| DiskError::Size {
            what: "type GUID",
            why: ty.to_string(),
        })?;
        partitions.push(Partition {
            name: name.to_string(),
            type_guid,
            guid: Guid::derive(&[seed, b"partition:", name.as_bytes()].concat()),
            first_lba: start / SECTOR,
            last_lba: (start + size) / SECTOR - 1,
            attributes,
        });
        start += size;
    }
    // One MiB at the end for the backup GPT (33 sectors), keeping the size aligned.
    let total = start + MIB;
    Ok(Gpt {
        disk_guid: Guid::derive(&[seed, b"disk"].concat()),
        total_sectors: total / SECTOR,
        partitions,
    })
}

struct SlotInput {
    path: PathBuf,
    file: File,
    len: u64,
    /// From the image's manifest as built (signatures are the device's to check).
    rollback_index: u64,
}

fn open_slot(path: &Path, slot_len: u64) -> Result<SlotInput, DiskError> {
    let ioe = |what| {
        move |source| DiskError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    };
    let mut file = File::open(path).map_err(ioe("opening"))?;
    if file.metadata().map_err(ioe("reading"))?.is_dir() {
        return Err(DiskError::SlotIsDirectory {
            path: path.to_path_buf(),
        });
    }
    let len = crate::slot::byte_len(&mut file).map_err(ioe("reading the size of"))?;
    if len > slot_len {
        return Err(DiskError::TooLarge {
            path: path.to_path_buf(),
            image_len: len,
            slot_len,
        });
    }
    let not_slot = |e: stele_verifier::Error| match e {
        // Reading failed: the environment, not the file's content.
        stele_verifier::Error::Io { source, .. } => DiskError::Io {
            what: "reading",
            path: path.to_path_buf(),
            source,
        },
        e => DiskError::NotSlot {
            path: path.to_path_buf(),
            why: e.to_string(),
        },
    };
    let loc = stele_verifier::slot::locate(&mut file, len).map_err(not_slot)?;
    // Read without a keyring (disk create has none): it only sets the starting floor, and
    // every slot is verified against the device's keys at boot.
    let rollback_index = loc
        .envelope
        .unverified_manifest()
        .map_err(not_slot)?
        .rollback_index;
    Ok(SlotInput {
        path: path.to_path_buf(),
        file,
        len,
        rollback_index,
    })
}

/// The rollback floor a fresh disk starts with: the highest rollback index of its slot
/// images, so that no older signed image installs before an update is marked good. A slot
/// image below it could never boot and is refused.
fn starting_floor(a: &SlotInput, b: Option<&SlotInput>) -> Result<u64, DiskError> {
    let floor = b.map_or(a.rollback_index, |b| b.rollback_index.max(a.rollback_index));
    match [Some(a), b]
        .into_iter()
        .flatten()
        .find(|s| s.rollback_index < floor)
    {
        Some(low) => Err(DiskError::BelowFloor {
            path: low.path.clone(),
            index: low.rollback_index,
            floor,
        }),
        None => Ok(floor),
    }
}

fn hash_file(
    h: &mut Sha256,
    s: &mut SlotInput,
    progress: &mut dyn Progress,
) -> Result<(), DiskError> {
    let ioe = |source| DiskError::Io {
        what: "reading",
        path: s.path.clone(),
        source,
    };
    s.file.seek(SeekFrom::Start(0)).map_err(ioe)?;
    let mut step = Step::new(
        progress,
        &format!("hashing {}", s.path.display()),
        Some(s.len),
    );
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = s.file.read(&mut buf).map_err(ioe)?;
        if n == 0 {
            return Ok(());
        }
        step.advance(n as u64);
        h.update(&buf[..n]);
    }
}

/// Runs mkfs.ext4 on the data partition inside the disk file at `disk_path`.
fn mkfs_data(disk_path: &Path, p: &Partition, seed: &[u8], epoch: u64) -> Result<(), DiskError> {
    let (offset, len) = p.byte_range();
    let uuid = Guid::derive(&[seed, b"ext4-uuid"].concat()).to_string();
    let hash_seed = Guid::derive(&[seed, b"ext4-hash-seed"].concat()).to_string();
    let mut cmd = MKFS_EXT4.command()?;
    cmd.env("E2FSPROGS_FAKE_TIME", epoch.max(1).to_string())
        .env("MKE2FS_DEVICE_SECTSIZE", "512")
        .args([
            "-q",
            "-F",
            "-b",
            "4096",
            "-L",
            Role::Data.name(),
            "-U",
            &uuid,
            "-E",
        ])
        .arg(format!(
            "offset={offset},hash_seed={hash_seed},root_owner=0:0,nodiscard,lazy_itable_init=0"
        ))
        .arg(disk_path)
        .arg(format!("{}k", len / 1024));
    MKFS_EXT4.run(&mut cmd)?;
    Ok(())
}

/// Creates the disk image `out` (via a temporary file renamed into place; an existing
/// `out` is refused). Returns the partition table written.
pub fn create(out: &Path, spec: &DiskSpec) -> Result<Gpt, DiskError> {
    create_with_esp(
        out,
        spec,
        None,
        false,
        &mut stele_verifier::progress::Silent,
    )
}

/// [`create`] with an EFI system partition first when `esp` is given; an existing `out`
/// is replaced only with `force` ([`crate::atomic::output_target`]).
pub fn create_with_esp(
    out: &Path,
    spec: &DiskSpec,
    esp: Option<&EspSpec>,
    force: bool,
    progress: &mut dyn Progress,
) -> Result<Gpt, DiskError> {
    // Before any work: an existing disk (its boot state and data) is not lost by mistake,
    // nor an input replaced by the disk made from it.
    crate::atomic::output_target(out, force)?;
    if let Ok(o) = std::fs::metadata(out) {
        let inputs = [Some(&spec.a), spec.b.as_ref(), esp.map(|e| &e.uki)];
        for input in inputs.into_iter().flatten() {
            if std::fs::metadata(input).is_ok_and(|i| stele_verifier::partition::same_file(&o, &i))
            {
                return Err(DiskError::OutIsInput {
                    out: out.to_path_buf(),
                    input: input.clone(),
                });
            }
        }
    }
    let slot_len = round_mib("slot size", spec.slot_size)?;
    let esp = esp
        .map(|e| {
            let (content, bytes) = crate::esp::EspContent::load(&e.uki, e.bios)?;
            let size = crate::esp::size(e.size, content.files_len())?;
            Ok((content, bytes, size))
        })
        .transpose()
        .map_err(DiskError::Image)?;
    let mut a = open_slot(&spec.a, slot_len)?;
    let mut b = spec
        .b
        .as_deref()
        .map(|p| open_slot(p, slot_len))
        .transpose()?;
    let floor = starting_floor(&a, b.as_ref())?;
    let mut h = Sha256::new();
    h.update(b"stele-disk-v1");
    h.update(slot_len.to_le_bytes());
    h.update(spec.data_size.unwrap_or(0).to_le_bytes());
    hash_file(&mut h, &mut a, progress)?;
    if let Some(b) = b.as_mut() {
        hash_file(&mut h, b, progress)?;
    }
    if let Some((content, bytes, size)) = &esp {
        content.seed(&mut h, *size, bytes);
    }
    if let Some(g) = spec.disk_guid {
        h.update(b"disk-guid");
        h.update(g.0);
    }
    let seed = h.finalize().to_vec();
    let esp_layout = esp.as_ref().map(|(c, _, size)| (*size, c.bios));
    let mut gpt = layout_with_esp(esp_layout, spec.slot_size, spec.data_size, &seed)?;
    if let Some(g) = spec.disk_guid {
        gpt.disk_guid = g;
    }

    let mut output = crate::atomic::AtomicFile::output(out, 0o644, force)?;
    let tmp_path = output.tmp_path().to_path_buf();
    let tmp_path = tmp_path.as_path();
    {
        let disk = output.file();
        let ioe = |what| {
            move |source| DiskError::Io {
                what,
                path: out.to_path_buf(),
                source,
            }
        };
        disk.set_len(gpt.total_sectors * SECTOR)
            .map_err(ioe("sizing"))?;
        gpt.write(disk)?;
        let part = |name: &str| {
            gpt.partitions
                .iter()
                .find(|p| p.name == name)
                .map(Partition::byte_range)
                .unwrap_or((0, 0))
        };
        for (role, slot) in [(Role::SlotA, Some(&mut a)), (Role::SlotB, b.as_mut())] {
            let Some(slot) = slot else { continue };
            let (off, len) = part(role.name());
            let mut w = PartitionIo::new(&mut *disk, off, len);
            let mut step = Step::new(
                &mut *progress,
                &format!("writing {}", role.name()),
                Some(slot.len),
            );
            flash_slot(&mut w, len, &mut step.reader(&mut slot.file), slot.len).map_err(
                |source| DiskError::Io {
                    what: "copying a slot image into",
                    path: out.to_path_buf(),
                    source,
                },
            )?;
        }
        let (off, len) = part(Role::State.name());
        let mut w = PartitionIo::new(&mut *disk, off, len);
        let mut st = BootState::initial(b.is_some());
        st.rollback_floor = floor;
        stele_verifier::state::initialize(&mut w, &st).map_err(DiskError::State)?;
        disk.flush().map_err(ioe("writing"))?;
        if let Some((content, _, _)) = &esp {
            let (offset, len) = part(Role::Esp.name());
            let place = crate::esp::EspPlace {
                offset,
                len,
                volume_id: crate::esp::volume_id(&seed),
                epoch: spec.epoch,
            };
            crate::esp::write(tmp_path, disk, &place, content).map_err(DiskError::Image)?;
        }
        if let Some(p) = gpt.partitions.iter().find(|p| p.name == Role::Data.name()) {
            let _step = Step::new(&mut *progress, "mkfs.ext4 (stele-data)", None);
            mkfs_data(tmp_path, p, &seed, spec.epoch)?;
        }
    }
    output.commit_with(progress)?;
    Ok(gpt)
}

#[cfg(test)]
#[path = "disk_tests.rs"]
mod tests;

//! The A/B boot state: two checksummed copies in the `stele-state` partition.
//!
//! Decisions (slot choice, marking) are pure functions on [`BootState`]; only
//! [`load`], [`store`] (and [`store_next`], [`initialize`]) touch the device.
//! Record layout and where the copies are: docs/FORMATS.md, "Boot state".

use std::io::{self, Read, Seek, SeekFrom, Write};

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Distance of the two copies on a state partition of [`SPREAD_MIN_LEN`] bytes or more:
/// one erase block of eMMC/SD flash, so that one interrupted erase cannot hit both.
pub const COPY_DISTANCE: u64 = 1 << 20;
/// Offsets of the two copies on a partition of [`SPREAD_MIN_LEN`] bytes or more (what
/// `stele disk create` makes: [`PARTITION_SIZE`]).
pub const SPREAD_COPY_OFFSETS: [u64; 2] = [0, COPY_DISTANCE];
/// Offsets of the two copies on a smaller partition: the layout of disks made before the
/// copies moved apart (a 1 MiB `stele-state`), still read and written as they are.
pub const LEGACY_COPY_OFFSETS: [u64; 2] = [0, 4096];
/// The smallest state partition that has the spread layout (copy 1 and its 4 KiB block
/// fit after [`COPY_DISTANCE`]).
pub const SPREAD_MIN_LEN: u64 = COPY_DISTANCE + 4096;
/// The size of the state partition `stele disk create` makes.
pub const PARTITION_SIZE: u64 = 2 * COPY_DISTANCE;
/// The bytes of the legacy layout (both 4 KiB copy blocks).
pub const LEGACY_AREA: u64 = 8192;
/// Encoded size of one copy.
pub const RECORD_LEN: usize = 512;
/// Each copy is written in a block of this size (the record, then zeros).
const COPY_BLOCK: usize = 4096;
/// Record magic.
pub const STATE_MAGIC: &[u8; 8] = b"STELESTA";
/// Record version written and understood.
pub const STATE_VERSION: u32 = 1;
/// Offset of the checksum in a record.
const CHECKSUM_OFFSET: usize = RECORD_LEN - 32;

/// A slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Slot {
    A,
    B,
}

/// Per-slot boot record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SlotState {
    /// 0 = never boot; higher boots first.
    pub priority: u8,
    pub tries_remaining: u8,
    pub successful: bool,
    /// Boots of this good slot that began (recorded before anything was mounted) and were
    /// not yet confirmed healthy by marking it good: a boot that ended in a dm-verity
    /// corruption restart, a panic, a hang or a power cut leaves it above 0.
    pub unconfirmed: u8,
}

impl SlotState {
    /// Priority > 0, and successful or with tries left.
    pub fn bootable(&self) -> bool {
        self.priority > 0 && (self.successful || self.tries_remaining > 0)
    }

    /// A good slot whose last boot was not confirmed healthy ([`SlotState::unconfirmed`]):
    /// it boots only when no other slot can.
    pub fn failing(&self) -> bool {
        self.successful && self.unconfirmed > 0
    }
}

/// The decoded state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootState {
    pub sequence: u64,
    pub rollback_floor: u64,
    pub slots: [SlotState; 2],
}

/// Encodes one record (with checksum).
pub fn encode(state: &BootState) -> [u8; RECORD_LEN] {
    let mut b = [0u8; RECORD_LEN];
    b[0..8].copy_from_slice(STATE_MAGIC);
    b[8..12].copy_from_slice(&STATE_VERSION.to_le_bytes());
    b[16..24].copy_from_slice(&state.sequence.to_le_bytes());
    b[24..32].copy_from_slice(&state.rollback_floor.to_le_bytes());
    for (i, s) in state.slots.iter().enumerate() {
        let at = 32 + 4 * i;
        b[at] = s.priority;
        b[at + 1] = s.tries_remaining;
        b[at + 2] = u8::from(s.successful);
        b[at + 3] = s.unconfirmed;
    }
    let sum = Sha256::digest(&b[..CHECKSUM_OFFSET]);
    b[CHECKSUM_OFFSET..].copy_from_slice(&sum);
    b
}

/// Decodes and checks one record (magic, version, checksum, reserved bytes, flags).
pub fn decode(b: &[u8]) -> Result<BootState> {
    if b.len() != RECORD_LEN {
        return Err(Error::Truncated {
            what: "boot state record",
            offset: 0,
            needed: RECORD_LEN as u64,
            available: b.len() as u64,
        });
    }
    if &b[0..8] != STATE_MAGIC {
        return Err(Error::BadMagic {
            what: "boot state",
            found: b[0..8].to_vec(),
        });
    }
    if Sha256::digest(&b[..CHECKSUM_OFFSET]).as_slice() != &b[CHECKSUM_OFFSET..] {
        return Err(Error::invalid(
            "boot state",
            "checksum mismatch (torn or corrupt copy)",
        ));
    }
    let version = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
    if version != STATE_VERSION {
        return Err(Error::UnsupportedVersion {
            what: "boot state",
            found: u64::from(version),
            supported: u64::from(STATE_VERSION),
        });
    }
    let reserved_zero = b[12..16]
        .iter()
        .chain(&b[40..CHECKSUM_OFFSET])
        .all(|&x| x == 0);
    if !reserved_zero {
        return Err(Error::invalid(
            "boot state",
            "reserved bytes are not zero (written by a newer stele?)",
        ));
    }
    let u64_at = |at: usize| {
        let mut v = [0u8; 8];
        v.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(v)
    };
    let mut slots = [SlotState::default(); 2];
    for (i, s) in slots.iter_mut().enumerate() {
        let at = 32 + 4 * i;
        s.priority = b[at];
        s.tries_remaining = b[at + 1];
        s.successful = match b[at + 2] {
            0 => false,
            1 => true,
            other => {
                return Err(Error::invalid(
                    "boot state",
                    format!("successful flag of slot {i} is {other}, not 0 or 1"),
                ))
            }
        };
        s.unconfirmed = b[at + 3];
    }
    Ok(BootState {
        sequence: u64_at(16),
        rollback_floor: u64_at(24),
        slots,
    })
}

/// Where the two copies are on a state device of `len` bytes: [`SPREAD_COPY_OFFSETS`]
/// from [`SPREAD_MIN_LEN`] on, else [`LEGACY_COPY_OFFSETS`]. Pure.
pub fn copy_offsets(len: u64) -> [u64; 2] {
    if len >= SPREAD_MIN_LEN {
        SPREAD_COPY_OFFSETS
    } else {
        LEGACY_COPY_OFFSETS
    }
}

/// The copy offsets of `dev`, from its length (its end).
fn device_offsets<D: Seek>(dev: &mut D) -> Result<[u64; 2]> {
    let len = dev
        .seek(SeekFrom::End(0))
        .map_err(|e| Error::io("boot state", e))?;
    Ok(copy_offsets(len))
}

/// True when sequence `a` is newer than `b`: sequences compare modulo 2^64 (RFC 1982
/// serial number arithmetic), so that a sequence at `u64::MAX` still advances, to 0, and
/// the copy written next still wins. Two copies exactly 2^63 apart are neither. Pure.
pub fn newer(a: u64, b: u64) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d < 1 << 63
}

/// Reads one copy; `None` if it is short, blank, torn or otherwise invalid.
fn read_copy<D: Read + Seek>(dev: &mut D, at: u64) -> Result<Option<BootState>> {
    dev.seek(SeekFrom::Start(at))
        .map_err(|e| Error::io("boot state", e))?;
    let mut b = [0u8; RECORD_LEN];
    match dev.read_exact(&mut b) {
        Ok(()) => Ok(decode(&b).ok()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(Error::io("boot state", e)),
    }
}

/// Reads both copies (where [`copy_offsets`] puts them for the device's length) and
/// returns the newest valid one ([`newer`]; copy 0 when neither is), and which copy it
/// was. I/O errors other than a short device are returned.
pub fn load<D: Read + Seek>(dev: &mut D) -> Result<(BootState, usize)> {
    let at = device_offsets(dev)?;
    let copies = [read_copy(dev, at[0])?, read_copy(dev, at[1])?];
    match copies {
        [Some(a), Some(b)] if newer(b.sequence, a.sequence) => Ok((b, 1)),
        [Some(a), _] => Ok((a, 0)),
        [None, Some(b)] => Ok((b, 1)),
        [None, None] => Err(Error::NoValidState),
    }
}

/// Writes `state` (sequence = previous + 1, modulo 2^64: it always advances) into the copy
/// that is NOT `current_copy`. The caller flushes (fdatasync) afterwards.
///
/// `state.sequence` is the sequence of the copy loaded from `current_copy`; what lands on
/// disk is `state` with the next sequence in copy `1 - current_copy`. The caller's `state`
/// is not changed: to store again, pass the next sequence and the other copy, or use
/// [`store_next`], which does that bookkeeping.
pub fn store<D: Write + Seek>(dev: &mut D, state: &BootState, current_copy: usize) -> Result<()> {
    if current_copy > 1 {
        return Err(Error::invalid(
            "boot state copy",
            format!("{current_copy}, must be 0 or 1"),
        ));
    }
    let at = device_offsets(dev)?;
    let record = encode(&BootState {
        sequence: state.sequence.wrapping_add(1),
        ..*state
    });
    dev.seek(SeekFrom::Start(at[1 - current_copy]))
        .map_err(|e| Error::io("boot state", e))?;
    dev.write_all(&record)
        .map_err(|e| Error::io("boot state", e))?;
    Ok(())
}

/// [`store`], then updates `state.sequence` and `current_copy` to what is now on disk.
pub fn store_next<D: Write + Seek>(
    dev: &mut D,
    state: &mut BootState,
    current_copy: &mut usize,
) -> Result<()> {
    store(dev, state, *current_copy)?;
    state.sequence = state.sequence.wrapping_add(1);
    *current_copy = 1 - *current_copy;
    Ok(())
}

/// Writes a fresh state: `state` as copy 0 (with its own sequence) and the block of copy 1
/// zeroed (both 4 KiB blocks, where [`copy_offsets`] puts them for the device's length),
/// so that nothing left on a reused partition can win. For `stele disk create`, and for
/// the boot rebuilding a state that has no valid copy.
pub fn initialize<D: Write + Seek>(dev: &mut D, state: &BootState) -> Result<()> {
    let at = device_offsets(dev)?;
    let mut first = [0u8; COPY_BLOCK];
    first[..RECORD_LEN].copy_from_slice(&encode(state));
    for (offset, block) in [(at[0], first), (at[1], [0u8; COPY_BLOCK])] {
        dev.seek(SeekFrom::Start(offset))
            .map_err(|e| Error::io("boot state", e))?;
        dev.write_all(&block)
            .map_err(|e| Error::io("boot state", e))?;
    }
    Ok(())
}

impl Slot {
    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
    /// `"a"` or `"b"`.
    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "a",
            Slot::B => "b",
        }
    }
    fn index(self) -> usize {
        match self {
            Slot::A => 0,
            Slot::B => 1,
        }
    }
}

impl BootState {
    /// A fresh state: slot a bootable and good (priority 2), slot b bootable only if present
    /// (priority 1, good). Sequence and floor are 0 (`stele disk create` then sets the floor
    /// to its images' highest rollback index).
    pub fn initial(b_present: bool) -> Self {
        let good = |priority| SlotState {
            priority,
            tries_remaining: 0,
            successful: true,
            unconfirmed: 0,
        };
        BootState {
            sequence: 0,
            rollback_floor: 0,
            slots: [
                good(2),
                if b_present {
                    good(1)
                } else {
                    SlotState::default()
                },
            ],
        }
    }
    /// The state to write when no valid copy is left, from the rollback index of each slot
    /// whose image verifies (`None`: it does not): the floor is the highest of them, as on
    /// a fresh disk, and the slots at that index are good (a first on a tie); a slot below
    /// it could not boot and gets priority 0. `None` when no slot verifies. Pure.
    pub fn rebuilt(indices: [Option<u64>; 2]) -> Option<Self> {
        let floor = indices.iter().flatten().copied().max()?;
        let mut st = BootState::initial(true);
        st.rollback_floor = floor;
        let at_floor = indices.map(|i| i == Some(floor));
        for (slot, ok) in st.slots.iter_mut().zip(at_floor) {
            if !ok {
                *slot = SlotState::default();
            }
        }
        if !at_floor[0] {
            st.slots[1].priority = 2;
        }
        Some(st)
    }
    pub fn slot(&self, s: Slot) -> &SlotState {
        &self.slots[s.index()]
    }
    pub fn slot_mut(&mut self, s: Slot) -> &mut SlotState {
        &mut self.slots[s.index()]
    }
    /// The slot to boot: among the bootable slots (priority above 0, and successful or
    /// with tries left), one that is not [`SlotState::failing`] first, then the highest
    /// priority; a wins ties. Pure.
    pub fn choose(&self) -> Option<Slot> {
        [Slot::A, Slot::B]
            .into_iter()
            .filter(|&s| self.slot(s).bootable())
            .max_by_key(|&s| {
                let st = self.slot(s);
                (!st.failing(), st.priority, s == Slot::A)
            })
    }
    /// Before booting `s`: if it is not successful, spend one try. Does not write to disk.
    pub fn begin_try(&mut self, s: Slot) {
        let st = self.slot_mut(s);
        if !st.successful {
            st.tries_remaining = st.tries_remaining.saturating_sub(1);
        }
    }
    /// Before booting `s`, stored before anything is mounted: a slot on trial spends one
    /// try ([`BootState::begin_try`]); a good slot counts one [`SlotState::unconfirmed`]
    /// boot (saturating at 255, so a slot that keeps failing stops costing writes), which
    /// marking it good clears. Does not write to disk.
    pub fn begin_boot(&mut self, s: Slot) {
        let st = self.slot_mut(s);
        if st.successful {
            st.unconfirmed = st.unconfirmed.saturating_add(1);
        } else {
            self.begin_try(s);
        }
    }
    /// `s` failed a check: priority 0, tries 0, not successful. Does not write to disk.
    pub fn mark_unbootable(&mut self, s: Slot) {
        *self.slot_mut(s) = SlotState::default();
    }
    /// `s` came up healthy: successful, tries 0, no unconfirmed boot, floor raised to
    /// `rollback_index` (never lowered). Does not write to disk.
    pub fn mark_good(&mut self, s: Slot, rollback_index: u64) {
        let st = self.slot_mut(s);
        st.successful = true;
        st.tries_remaining = 0;
        st.unconfirmed = 0;
        self.rollback_floor = self.rollback_floor.max(rollback_index);
    }
    /// A new image was installed in `s`: top priority, tries = `tries`, not successful,
    /// the other slot's priority lowered below it. Does not write to disk.
    ///
    /// "Top" is 2 and the other slot is lowered to at most 1, so it stays the fallback
    /// (unless it was unbootable, priority 0). With `tries == 0` the new slot cannot boot.
    pub fn activate_new(&mut self, s: Slot, tries: u8) {
        *self.slot_mut(s) = SlotState {
            priority: 2,
            tries_remaining: tries,
            successful: false,
            unconfirmed: 0,
        };
        let other = self.slot_mut(s.other());
        other.priority = other.priority.min(1);
    }
}

#[cfg(test)]
mod tests;

//! The A/B boot state: two checksummed copies in the `stele-state` partition.
//!
//! Decisions (slot choice, marking) are pure functions on [`BootState`]; only
//! [`load`] and [`store`] touch the device.

use std::io::{Read, Seek, Write};

use crate::Result;

/// Size of the state partition region used (both copies).
pub const STATE_AREA: u64 = 8192;
/// Offsets of the two copies.
pub const COPY_OFFSETS: [u64; 2] = [0, 4096];
/// Encoded size of one copy.
pub const RECORD_LEN: usize = 512;

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
}

/// The decoded state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootState {
    pub sequence: u64,
    pub rollback_floor: u64,
    pub slots: [SlotState; 2],
}

/// Reads both copies and returns the valid one with the highest sequence, and which copy it was.
pub fn load<D: Read + Seek>(dev: &mut D) -> Result<(BootState, usize)> {
    let _ = dev;
    todo!()
}

/// Writes `state` (sequence = previous + 1) into the copy that is NOT `current_copy`.
/// The caller flushes (fdatasync) afterwards.
pub fn store<D: Write + Seek>(dev: &mut D, state: &BootState, current_copy: usize) -> Result<()> {
    let _ = (dev, state, current_copy);
    todo!()
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
}

impl BootState {
    /// A fresh state: slot a bootable and good (priority 2), slot b bootable only if present
    /// (priority 1, good) — what `stele disk create` writes.
    pub fn initial(b_present: bool) -> Self {
        let _ = b_present;
        todo!()
    }
    pub fn slot(&self, s: Slot) -> &SlotState {
        let _ = s;
        todo!()
    }
    pub fn slot_mut(&mut self, s: Slot) -> &mut SlotState {
        let _ = s;
        todo!()
    }
    /// The bootable slot (priority > 0 and (successful or tries > 0)) with the highest
    /// priority; a wins ties. Pure.
    pub fn choose(&self) -> Option<Slot> {
        todo!()
    }
    /// Before booting `s`: if it is not successful, spend one try. Does not write to disk.
    pub fn begin_try(&mut self, s: Slot) {
        let _ = s;
        todo!()
    }
    /// `s` failed a check: priority 0, tries 0, not successful. Does not write to disk.
    pub fn mark_unbootable(&mut self, s: Slot) {
        let _ = s;
        todo!()
    }
    /// `s` came up healthy: successful, tries 0, floor raised to `rollback_index`. Does not write.
    pub fn mark_good(&mut self, s: Slot, rollback_index: u64) {
        let _ = (s, rollback_index);
        todo!()
    }
    /// A new image was installed in `s`: top priority, tries = `tries`, not successful,
    /// the other slot's priority lowered below it. Does not write to disk.
    pub fn activate_new(&mut self, s: Slot, tries: u8) {
        let _ = (s, tries);
        todo!()
    }
}

//! `stele update mark-good`: the booted slot becomes good in the boot state (successful,
//! tries 0, the rollback floor raised to the rollback index verified at boot), under the
//! state lock, then the TPM counter is raised to it ([`rollback::mark_good`]). PID 1's
//! supervisor does the same through the same function.

use stele_verifier::state::Slot;

use crate::runtime::rollback;
use crate::target::Target;
use crate::{Error, Result};

/// `stele update mark-good` on an opened target (the device only): the booted slot, with
/// the rollback index of the manifest verified at boot (`manifest.toml`). Returns the slot.
pub fn run(t: &mut Target) -> Result<Slot> {
    let dev = t.run_dir().ok_or(Error::DeviceOnly {
        command: "mark-good",
    })?;
    let (booted, index) = (dev.booted, dev.booted_rollback_index()?);
    let mut tpm = rollback::open_counter(&dev.config)?;
    t.state.lock()?;
    rollback::mark_good(&mut t.state, tpm.counter(), booted, index)?;
    Ok(booted)
}

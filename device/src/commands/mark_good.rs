//! `stele update mark-good`: the booted slot becomes good in the boot state (successful,
//! tries 0, the rollback floor raised to the rollback index verified at boot), under the
//! state lock, then the TPM counter is raised to it ([`rollback::mark_good`]). PID 1's
//! supervisor does the same through the same function.

use std::path::Path;

use stele_verifier::state::Slot;

use crate::runtime::rollback;
use crate::runtime::run_dir::RunDir;
use crate::runtime::state_file::StateFile;
use crate::Result;

/// `stele update mark-good` on the device: the booted slot, with the rollback index of the
/// manifest verified at boot (`manifest.toml`). Returns the slot.
pub fn on_device(run_dir: &Path) -> Result<Slot> {
    let dev = RunDir::read(run_dir)?;
    let index = dev.booted_rollback_index()?;
    let mut tpm = rollback::open_counter(&dev.config)?;
    let mut state = StateFile::open(dev.state_path(), true)?;
    state.lock()?;
    rollback::mark_good(&mut state, tpm.counter(), dev.booted, index)?;
    Ok(dev.booted)
}

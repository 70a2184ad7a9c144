//! `stele update mark-good`: the booted slot becomes good in the boot state (successful,
//! tries 0, the rollback floor raised to the rollback index verified at boot), under the
//! state lock. PID 1's supervisor does the same through [`StateFile::mark_good`].

use std::path::Path;

use stele_verifier::state::Slot;

use crate::run_dir::RunDir;
use crate::state_file::StateFile;
use crate::Result;

/// `stele update mark-good` on the device: the booted slot, with the rollback index of the
/// manifest verified at boot (`manifest.toml`). Returns the slot.
pub fn on_device(run_dir: &Path) -> Result<Slot> {
    let dev = RunDir::read(run_dir)?;
    let index = dev.booted_rollback_index()?;
    let mut state = StateFile::open(dev.state_path(), true)?;
    state.lock()?;
    state.mark_good(dev.booted, index)?;
    Ok(dev.booted)
}

//! A boot state with no valid copy (both torn, erased or overwritten) while the slots are
//! intact: rebuilt from the slots instead of refusing to boot forever. The slots are
//! verified as at every boot (signatures, product, hash tree); the state written is what
//! `stele disk create` writes for them (`BootState::rebuilt`: the floor at their highest
//! rollback index, the slots at it good), so it is never weaker than what a disk writer
//! could have written in its place.

use std::fs::File;

use stele_device::runtime::state_file::StateFile;
use stele_verifier::config::BootConfig;
use stele_verifier::keys::Keyring;
use stele_verifier::slot::{self, VerifyOptions};
use stele_verifier::state::{BootState, Slot};

use crate::devices::Partitions;
use crate::sys;

/// The rollback index of the image in slot `s` when it verifies, else `None`.
fn verified_index(s: Slot, parts: &Partitions, cfg: &BootConfig, keyring: &Keyring) -> Option<u64> {
    let dev = parts.slot(s)?;
    let path = dev.path();
    let mut f = File::open(&path).ok()?;
    let len = sys::block_size(&f, &path).ok()?;
    let opts = VerifyOptions {
        full: false,
        rollback_floor: None,
        product: cfg.name.as_deref(),
    };
    slot::verify(&mut f, len, keyring, opts)
        .ok()
        .map(|(_, v)| v.manifest.rollback_index)
}

/// Rebuilds the state on `state` from the slots that verify and writes it (copy 0, copy
/// 1 cleared, flushed). Returns it and the warning line to log; `Err` (the cause for the
/// failure action) when no slot verifies or the write fails.
pub fn rebuild(
    state: &mut StateFile<File>,
    parts: &Partitions,
    cfg: &BootConfig,
    keyring: &Keyring,
) -> Result<(BootState, String), String> {
    let indices = [Slot::A, Slot::B].map(|s| verified_index(s, parts, cfg, keyring));
    let Some(st) = BootState::rebuilt(indices) else {
        return Err(format!(
            "no valid boot state on {} and no slot verifies: reflash the disk (stele disk create)",
            state.origin()
        ));
    };
    state.initialize(&st).map_err(|e| e.to_string())?;
    let show = |i: Option<u64>| i.map_or("refused".to_string(), |i| format!("rollback_index {i}"));
    let line = format!(
        "no valid boot state on {}: rebuilt from the slots that verify (a: {}, b: {}): rollback floor {}",
        state.origin(),
        show(indices[0]),
        show(indices[1]),
        st.rollback_floor
    );
    Ok((st, line))
}

//! `stele data reset` (on the device) and `stele disk reset-data --disk D` (on a host):
//! request a fresh data partition. Only the request is written here (its own block on the
//! state partition, flushed: `stele_engine::reset_write`); the next boot makes the fresh
//! filesystem before it mounts the partition (init/src/reset.rs, docs/BOOT.md "Factory
//! reset"). The request touches no state copy and nothing of verification.

use std::time::{SystemTime, UNIX_EPOCH};

use stele_verifier::data_reset::{By, Request};
use stele_verifier::layout::Role;
use stele_verifier::recorder::Kind;

use crate::commands::history;
use crate::runtime::flight::wall_if_set;
use crate::target::{Place, Target};
use crate::{Error, Result};

/// What the command prints when the request is written.
pub const REQUESTED: &str = "stele: data reset requested: the next boot makes a fresh filesystem on the data partition before mounting it; everything on it is lost, the channel state and its rollout seed with it";

/// Writes the request on `t` (read-write): refused when `t` has no data partition or its
/// state partition is the old 1 MiB layout. On the device the request is recorded in the
/// flight recorder.
pub fn request(t: &mut Target) -> Result<()> {
    let has_data = match &t.place {
        Place::Device(dev) => dev.devices.get(Role::Data).is_some(),
        Place::Disk(p) => stele_verifier::gpt::find_partition(
            &mut crate::runtime::open::open(&p.display().to_string(), false)?,
            Role::Data.name(),
        )
        .is_ok(),
    };
    if !has_data {
        let place = match &t.place {
            Place::Device(_) => "this device".to_string(),
            Place::Disk(p) => p.display().to_string(),
        };
        return Err(Error::NothingToReset { place });
    }
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let r = Request {
        by: if t.on_device() { By::Device } else { By::Host },
        wall_secs: wall_if_set(wall),
    };
    t.state.request_reset(&r)?;
    let mut e = history::event(Kind::DataResetRequested);
    e.text = "the next boot makes a fresh data partition".into();
    history::note(t, e);
    Ok(())
}

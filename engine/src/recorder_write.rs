//! THE flight recorder write (docs/FORMATS.md "Flight recorder"): an event goes into its own
//! 4 KiB block of the ring between the state copies and is flushed before the writer goes
//! on. Every writer — the boot, PID 1, the update commands — appends through [`append`];
//! a torn or lost append leaves the state and every other event as they were.

use stele_verifier::recorder::{ring, Event};
use stele_verifier::Error;

use crate::Storage;

/// Where an append failed: reading the ring or writing the event, or flushing it.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{0}")]
    Write(#[source] Error),
    #[error("flushing it failed: {0}")]
    Flush(#[source] std::io::Error),
}

/// Appends `e` to the ring on the state partition `dev` with the next sequence and
/// flushes. Returns that sequence, or `None` when the partition's layout has no ring (an
/// old 1 MiB state partition: nothing is written).
pub fn append<D: Storage>(dev: &mut D, e: &Event) -> Result<Option<u64>, RecordError> {
    let seq = ring::append(dev, e).map_err(RecordError::Write)?;
    if seq.is_some() {
        dev.sync().map_err(RecordError::Flush)?;
    }
    Ok(seq)
}

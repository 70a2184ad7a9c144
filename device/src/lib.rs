//! stele-device: the device side of stele — the boot's runtime and the `stele update`
//! commands — run by the device binary (stele-init run as `stele`) on the running machine,
//! and by the host `stele` CLI on a disk image (`--disk`).
//!
//! - [`runtime`]: what PID 1 and the commands share: the state partition
//!   ([`runtime::state_file`]), the `/run/stele` contract ([`runtime::run_dir`]), keyring
//!   loading, rollback floors, opening and locking partitions
//! - [`target`]: THE install target: the device or a disk image, opened once (trust,
//!   state, partitions, lock)
//! - [`commands`]: install, status, mark-good, the channel's check and apply, and
//!   [`commands::esp`] (replacing the ESP's stage-1 UKI through [`fat`], a small
//!   FAT12/16/32 reader and writer whose every write the caller orders)
//! - [`remote`]: installs and plans from a URL (the fetch client) or a file, as a delta
//! - [`inspect`]: what a slot partition holds
//! - [`cli`]: the device binary's front-end; [`cli::spec`] describes the commands for both
//!   front-ends, [`cli::run`] runs one at a target
//!
//! The write order that keeps a power cut harmless is `stele_engine`'s; this crate adds
//! the policy (which slot, what floor, which keys), the device files and the output lines.
//! No `unsafe`: block devices are sized by seeking to their end, flushed with
//! `File::sync_data` and locked with nix's `Flock`.

pub mod cli;
pub mod commands;
pub mod error;
pub mod fat;
pub mod inspect;
pub mod remote;
pub mod report;
pub mod runtime;
pub mod target;

pub use error::{Error, Result};

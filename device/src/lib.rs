//! stele-device: A/B updates, shared by the device binary (stele-init run as `stele`) and
//! the host `stele` CLI.
//!
//! - [`run_dir`]: the `/run/stele` contract (written by the boot, read by the commands)
//! - [`state_file`]: the boot state device: open, lock, load, store with fdatasync
//! - [`keys`]: a keyring from key files and directories
//! - [`install`], [`status`], [`mark_good`]: the commands
//! - [`fetch`]: installs and plans from a URL (or file) as a delta; [`channel`]: the
//!   signed update channel on the device
//! - [`rollback`]: the rollback floor (state, TPM counter, initramfs minimum) and mark-good
//! - [`stage1`]: `stele update stage1`, replacing the ESP's UKI through [`fat`], a small
//!   FAT12/16/32 reader and writer whose every write the caller orders
//! - [`args`], [`device`], [`progress`]: the device binary's front-end
//!
//! The write order that keeps a power cut harmless is `stele_engine`'s; this
//! crate adds the policy (which slot, what floor, which keys), the device files and the
//! output lines. No `unsafe`: block devices are sized by seeking to their end, flushed with
//! `File::sync_data` and locked with nix's `Flock`.

pub mod cli;
pub mod commands;
pub mod error;
pub mod fat;
pub mod remote;
pub mod runtime;

pub use error::{Error, Result};

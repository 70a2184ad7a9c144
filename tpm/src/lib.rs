//! stele-tpm: the TPM 2.0 client of the boot and the update commands.
//!
//! - [`command`]: the commands as bytes (pure, tpm2-protocol marshalling)
//! - [`transport`]: /dev/tpmrm0 (else /dev/tpm0), or any byte stream (swtpm's socket)
//! - [`Tpm`]: one method per command over a transport
//! - [`counter`]: the rollback counter (an NV counter; its value minus one is the floor)
//! - [`measure`]: measured boot (the manifest envelope's sha256 into a PCR)
//!
//! No `unsafe` and no C library: the static init links it.

pub mod client;
pub mod command;
pub mod counter;
pub mod error;
pub mod measure;
pub mod transport;

pub use client::Tpm;
pub use error::{Error, Result};

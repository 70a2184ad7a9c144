//! stele-verifier: the formats stele reads and writes, and their checks.
//!
//! Pure Rust: no syscalls beyond `Read`/`Write`/`Seek`, no panics on any input, so every
//! parser here can be fuzzed and run anywhere. The build side (`stele-image`), the PID 1
//! (`stele-init`), the update library (`stele-device`) and the CLI all go through this
//! crate to read or check a slot image, a configuration file, the partition layout or a UKI, and
//! take their exit classes from [`exit`].

pub mod channel;
pub mod config;
pub mod data_grow;
pub mod data_reset;
pub mod error;
pub mod exit;
pub mod footer;
pub mod gpt;
pub mod gpt_grow;
pub mod hex;
pub mod keyfile;
pub mod keys;
pub mod kmod;
pub mod layout;
pub mod manifest;
pub mod modalias;
pub mod partition;
pub mod plural;
pub mod progress;
pub mod recorder;
pub mod resolve;
pub mod slot;
pub mod state;
#[cfg(any(test, feature = "test-util"))]
pub mod testutil;
pub mod uki;
pub mod verity;

pub use error::{Error, Result};
pub use exit::{Exit, Report};

//! stele-image: the build side of stele.
//!
//! Turns a root directory (or an existing filesystem image) into a signed, verity-protected
//! slot image laid out exactly as docs/FORMATS.md says, and manages the keys that sign it.
//! Everything read back goes through `stele-verifier`; this crate only writes.

pub mod atomic;
pub mod error;
pub mod fs;
pub mod keys;
pub mod random;
pub mod slot;

pub use error::{Error, Result};

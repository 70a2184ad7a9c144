//! stele-image: the build side of stele.
//!
//! Turns a root directory (or an existing filesystem image) into a signed, verity-protected
//! slot image laid out exactly as docs/FORMATS.md says, manages the keys that sign it, and
//! writes the initramfs (cpio, kernel modules) and GPT disk images that boot it.
//! Everything read back goes through `stele-verifier`.

pub mod added;
pub mod archive;
pub mod atomic;
pub mod bmap;
pub mod cleanup;
pub mod cpio;
pub mod delta;
pub mod disk;
pub mod disk_format;
pub mod error;
pub mod esp;
pub mod ext4;
pub mod flash;
pub mod fs;
pub mod hardware;
pub mod initramfs;
pub mod initramfs_mke2fs;
pub mod kconfig;
pub mod key_files;
pub mod kodecode;
pub mod linktree;
pub mod lzc;
pub mod modules;
pub mod outfile;
pub mod random;
pub mod rootfs_check;
pub mod slot;
pub mod stage;
pub mod tool;
pub mod uki;
pub mod vhdx;
pub mod zst;

pub use error::{Error, Result};

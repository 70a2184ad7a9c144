//! stele-image: the build side of stele.

pub mod cpio;
pub mod disk;
pub mod gpt;
pub mod initramfs;
pub mod modules;
pub mod outfile;

//! stele-image: the build side of stele.

pub mod cpio;
pub mod modules;

//! stele-qemu: QEMU boot harness.

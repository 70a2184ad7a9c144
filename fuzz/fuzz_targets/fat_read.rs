//! Fuzz target `fat_read`: the ESP's FAT reader (boot sector, FAT, directory tree,
//! `\EFI\BOOT\BOOTX64.EFI`) over a sparse partition. The body and its assertions are
//! `stele_fuzz_inputs::fat::run`, shared with the seed generator and the corpus replay.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stele_fuzz_inputs::fat::run(data));

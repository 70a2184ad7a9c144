//! Fuzz target `pstore_dump`: bytes as the files of a pstore filesystem (the previous
//! kernel's dumps). The body and its assertions are `stele_fuzz_inputs::pstore::run`,
//! shared with the seed generator and the corpus replay.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stele_fuzz_inputs::pstore::run(data));

//! Fuzz target `boot_toml`: bytes as boot.toml through the one boot.toml schema. The body and its assertions are
//! `stele_fuzz_inputs::config::run_boot`, shared with the seed generator and the corpus replay.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stele_fuzz_inputs::config::run_boot(data));

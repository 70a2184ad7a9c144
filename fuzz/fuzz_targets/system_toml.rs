//! Fuzz target `system_toml`: bytes as system.toml through the one system.toml schema. The body and its assertions are
//! `stele_fuzz_inputs::config::run_system`, shared with the seed generator and the corpus replay.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stele_fuzz_inputs::config::run_system(data));

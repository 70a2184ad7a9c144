//! Fuzz target `state_load`: bytes as the boot state area. The body and its assertions are
//! `stele_fuzz_inputs::state::run_area`, shared with the seed generator and the corpus replay.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stele_fuzz_inputs::state::run_area(data));

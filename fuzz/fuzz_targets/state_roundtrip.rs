//! Fuzz target `state_roundtrip`: boot states from a structured input: store then load, and edited pairs of copies. The body and its assertions are
//! `stele_fuzz_inputs::state::run`, shared with the seed generator and the corpus replay.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stele_fuzz_inputs::state::run(data));

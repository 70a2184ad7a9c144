//! Fuzz target `zst_frames`: the compressed form's seek table and bounded frame decoder.
//! The body and its assertions are `stele_fuzz_inputs::zst::run`, shared with the seed
//! generator and the corpus replay.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stele_fuzz_inputs::zst::run(data));

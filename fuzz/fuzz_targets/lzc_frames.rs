//! Fuzz target `lzc_frames`: the chained form's table and its chained frame decoder.
//! The body and its assertions are `stele_fuzz_inputs::lzc::run`, shared with the seed
//! generator and the corpus replay.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stele_fuzz_inputs::lzc::run(data));

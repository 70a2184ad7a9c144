//! Fuzz target `data_reset`: bytes as the data reset request's block. The body and its
//! assertions are `stele_fuzz_inputs::reset::run`, shared with the seed generator and the
//! corpus replay.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stele_fuzz_inputs::reset::run(data));

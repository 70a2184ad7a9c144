//! Fuzz target `recorder_ring`: bytes as the flight recorder's ring. The body and its
//! assertions are `stele_fuzz_inputs::recorder::run`, shared with the seed generator and the
//! corpus replay.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stele_fuzz_inputs::recorder::run(data));

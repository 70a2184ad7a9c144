//! Fuzz target `delta_frames`: the published delta's index and bounded frame decoder.
//! The body and its assertions are `stele_fuzz_inputs::patch::run`, shared with the seed
//! generator and the corpus replay.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stele_fuzz_inputs::patch::run(data));

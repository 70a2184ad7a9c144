//! Fuzz target `slot_verify`: a slot image built and signed from a structured input, then tampered with; the whole slot::verify. The body and its assertions are
//! `stele_fuzz_inputs::slot::run`, shared with the seed generator and the corpus replay.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stele_fuzz_inputs::slot::run(data));

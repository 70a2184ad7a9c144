//! Fuzz target `envelope`: bytes as a manifest envelope (structure, signatures, body). The body and its assertions are
//! `stele_fuzz_inputs::envelope::run`, shared with the seed generator and the corpus replay.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stele_fuzz_inputs::envelope::run(data));

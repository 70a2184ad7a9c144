//! Fuzz target `manifest_verify`: bytes as a manifest body, signed by a trusted key, then verified. The body and its assertions are
//! `stele_fuzz_inputs::envelope::run_body`, shared with the seed generator and the corpus replay.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stele_fuzz_inputs::envelope::run_body(data));

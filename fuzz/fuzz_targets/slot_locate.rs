//! Fuzz target `slot_locate`: bytes as a whole slot image (locate, then a full verify). The body and its assertions are
//! `stele_fuzz_inputs::slot::run_image`, shared with the seed generator and the corpus replay.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stele_fuzz_inputs::slot::run_image(data));

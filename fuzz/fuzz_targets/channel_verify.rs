//! Fuzz target `channel_verify`: bytes as a signed update channel, then the device's
//! decision. The body and its assertions are `stele_fuzz_inputs::channel::run`, shared
//! with the seed generator and the corpus replay.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stele_fuzz_inputs::channel::run(data));

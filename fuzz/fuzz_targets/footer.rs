//! Fuzz target `footer`: bytes as a footer at the end of a container. The body and its assertions are
//! `stele_fuzz_inputs::footer::run`, shared with the seed generator and the corpus replay.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stele_fuzz_inputs::footer::run(data));

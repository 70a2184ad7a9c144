//! Fuzz target `data_grow`: bytes as a disk flashed onto a larger one, booted with a power
//! cut and booted again. The body and its assertions are `stele_fuzz_inputs::data_grow::run`,
//! shared with the seed generator and the corpus replay.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stele_fuzz_inputs::data_grow::run(data));

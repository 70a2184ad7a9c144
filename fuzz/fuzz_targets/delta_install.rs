//! Fuzz target `delta_install`: the update planner and the delta writer against scripted
//! HTTP range responses. The body and its assertions are
//! `stele_fuzz_inputs::delta::run`, shared with the seed generator and the corpus replay.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| stele_fuzz_inputs::delta::run(data));

//! Fuzz target: arbitrary bytes as the boot state partition.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use stele_verifier::state::{decode, encode, load};

fuzz_target!(|data: &[u8]| {
    if let Ok((state, _copy)) = load(&mut Cursor::new(data)) {
        assert_eq!(decode(&encode(&state)).ok(), Some(state));
        let _ = state.choose();
    }
});

//! Fuzz target: arbitrary bytes as a whole slot image (locate, then a full verify).
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use stele_verifier::keys::{Keyring, SigningKey};
use stele_verifier::slot::{locate, verify, VerifyOptions};

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    let _ = locate(&mut Cursor::new(data), len);
    let key = SigningKey::from_bytes(&[7; 32]).verifying_key();
    if let Ok(ring) = Keyring::new(vec![key], 1) {
        let opts = VerifyOptions {
            full: true,
            rollback_floor: Some(1),
        };
        let _ = verify(&mut Cursor::new(data), len, &ring, opts);
    }
});

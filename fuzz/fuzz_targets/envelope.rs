//! Fuzz target: arbitrary bytes as a manifest envelope (structure, signatures, body).
#![no_main]

use libfuzzer_sys::fuzz_target;
use stele_verifier::keys::{Keyring, SigningKey};
use stele_verifier::manifest::Envelope;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::parse(data) {
        // What parses re-encodes to the same bytes.
        assert_eq!(env.to_bytes(), data);
        let key = SigningKey::from_bytes(&[7; 32]).verifying_key();
        if let Ok(ring) = Keyring::new(vec![key], 1) {
            let _ = env.verify(&ring);
        }
        let _ = env.unverified_manifest();
    }
});

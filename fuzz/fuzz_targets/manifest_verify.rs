//! Fuzz target: arbitrary bytes as a manifest body, signed by a trusted key, then verified,
//! so that the TOML parser and the sanity checks behind the signature check are reached.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stele_verifier::keys::{Keyring, SigningKey};
use stele_verifier::manifest::{Envelope, Manifest};

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::from_bytes(&[7; 32]);
    let Ok(ring) = Keyring::new(vec![key.verifying_key()], 1) else {
        return;
    };
    let mut env = Envelope::new(data.to_vec());
    if env.sign(&key).is_err() {
        return;
    }
    if let Ok(verified) = env.verify(&ring) {
        // An accepted manifest re-encodes to a body that parses to the same manifest.
        let text = verified.manifest.to_toml();
        assert_eq!(Manifest::parse_body(text.as_bytes()).ok(), Some(verified.manifest));
    }
});

//! Fuzz target: arbitrary bytes as a footer; the first 8 bytes give the container length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stele_verifier::footer::Footer;

fuzz_target!(|data: &[u8]| {
    let Some((len, bytes)) = data.split_first_chunk::<8>() else {
        return;
    };
    let container_len = u64::from_le_bytes(*len);
    if let Ok(footer) = Footer::parse(bytes, container_len) {
        assert_eq!(&footer.to_bytes()[..], bytes);
    }
});

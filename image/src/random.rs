//! Randomness from the kernel (`/dev/urandom`): keys and salts, no userspace RNG.

use std::fs::File;
use std::io::Read;

use crate::{Error, Result};

const URANDOM: &str = "/dev/urandom";

/// Fills `buf` from /dev/urandom.
pub fn fill(buf: &mut [u8]) -> Result<()> {
    File::open(URANDOM)
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|e| Error::io("read random bytes from", URANDOM, e))
}

/// `N` random bytes.
pub fn bytes<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    fill(&mut b)?;
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_draws_differ() {
        let a: [u8; 32] = bytes().unwrap();
        let b: [u8; 32] = bytes().unwrap();
        assert_ne!(a, b);
    }
}

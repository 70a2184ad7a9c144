//! Counted nouns in messages, the one plural rule of every stele message: `1 key`,
//! `2 keys`, `0 keys`.

/// `n` and the noun, singular for exactly one: `count(1, "key", "keys")` is `1 key`. Pure.
pub fn count(n: impl Into<u128>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

/// [`count`] for a `usize` (a length).
pub fn count_len(n: usize, one: &str, many: &str) -> String {
    count(n as u128, one, many)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_is_singular() {
        assert_eq!(count(1u64, "key", "keys"), "1 key");
        assert_eq!(count(0u64, "key", "keys"), "0 keys");
        assert_eq!(count_len(2, "data block", "data blocks"), "2 data blocks");
        assert_eq!(
            count(u64::MAX, "byte", "bytes"),
            "18446744073709551615 bytes"
        );
    }
}

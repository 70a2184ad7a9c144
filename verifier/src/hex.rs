//! Lower-case hex encoding and strict decoding (no extra dependency for 30 lines). A
//! refused string says precisely why ([`HexError`]), for the command-line arguments.

/// Encodes bytes as lower-case hex.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Why a string is not hex.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    /// `0x...` / `0X...`.
    #[error("the {0} prefix is not hex (give the digits only)")]
    Prefix(String),
    /// A character that is not 0-9, a-f or A-F.
    #[error("{} (character {at}) is not a hex digit", shown(*.c))]
    Digit { c: char, at: usize },
    /// Every byte takes two digits.
    #[error("{} is an odd number (two hex digits make one byte)", crate::plural::count_len(*digits, "digit", "digits"))]
    OddLength { digits: usize },
}

/// A character as it reads in a message: itself when visible, else quoted and escaped.
fn shown(c: char) -> String {
    if c.is_alphanumeric() || c.is_ascii_punctuation() {
        c.to_string()
    } else {
        format!("{c:?}")
    }
}

/// Decodes hex (either case). `-` decodes to an empty vector, as veritysetup's empty salt.
pub fn decode(s: &str) -> Option<Vec<u8>> {
    decode_strict(s).ok()
}

/// [`decode`], saying why a string is refused: a `0x` prefix, the first character that is
/// not a hex digit (position counted from 1), or an odd number of digits, in that order.
pub fn decode_strict(s: &str) -> Result<Vec<u8>, HexError> {
    if s == "-" {
        return Ok(Vec::new());
    }
    if let Some(p) = s.get(..2).filter(|p| p.eq_ignore_ascii_case("0x")) {
        return Err(HexError::Prefix(p.to_string()));
    }
    let nibble = |c: char| c.to_digit(16).and_then(|d| u8::try_from(d).ok());
    let digits = s
        .chars()
        .enumerate()
        .map(|(i, c)| nibble(c).ok_or(HexError::Digit { c, at: i + 1 }))
        .collect::<Result<Vec<u8>, _>>()?;
    if !digits.len().is_multiple_of(2) {
        return Err(HexError::OddLength {
            digits: digits.len(),
        });
    }
    Ok(digits.chunks_exact(2).map(|p| (p[0] << 4) | p[1]).collect())
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test data sizes are small
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        assert_eq!(encode(&[0x00, 0xab, 0xff]), "00abff");
        assert_eq!(decode("00ABff"), Some(vec![0x00, 0xab, 0xff]));
        assert_eq!(decode("-"), Some(vec![]));
        assert_eq!(decode(""), Some(vec![]));
        assert_eq!(decode("abc"), None);
        assert_eq!(decode("zz"), None);
    }

    #[test]
    fn refusals_say_why() {
        assert_eq!(decode_strict("0X00"), Err(HexError::Prefix("0X".into())));
        assert_eq!(decode_strict("0x"), Err(HexError::Prefix("0x".into())));
        assert_eq!(decode_strict("zz"), Err(HexError::Digit { c: 'z', at: 1 }));
        assert_eq!(
            decode_strict("00é0"),
            Err(HexError::Digit { c: 'é', at: 3 })
        );
        assert_eq!(
            HexError::OddLength { digits: 1 }.to_string(),
            "1 digit is an odd number (two hex digits make one byte)"
        );
        assert_eq!(decode_strict("abc"), Err(HexError::OddLength { digits: 3 }));
        assert_eq!(
            HexError::Prefix("0X".into()).to_string(),
            "the 0X prefix is not hex (give the digits only)"
        );
        assert_eq!(
            HexError::Digit { c: 'z', at: 1 }.to_string(),
            "z (character 1) is not a hex digit"
        );
        assert_eq!(
            HexError::Digit { c: ' ', at: 2 }.to_string(),
            "' ' (character 2) is not a hex digit"
        );
        // Every 1- and 2-character string: decode agrees with a plain reference.
        for a in 0u8..128 {
            for b in 0u8..128 {
                let s: String = [char::from(a), char::from(b)].iter().collect();
                let reference = u8::from_str_radix(&s, 16)
                    .ok()
                    .filter(|_| s.chars().all(|c| c.is_ascii_hexdigit()));
                let ours = decode_strict(&s).ok().map(|v| v[0]);
                let prefixed = s.eq_ignore_ascii_case("0x");
                assert_eq!(ours, if prefixed { None } else { reference }, "{s:?}");
            }
        }
    }
}

//! Helpers shared by the subcommands: hex arguments, SOURCE_DATE_EPOCH, salts.

use crate::error::{CliResult, Usage};

/// Parses a hex argument (`-` is the empty string, as in veritysetup).
pub fn parse_hex(what: &'static str, s: &str) -> CliResult<Vec<u8>> {
    stele_verifier::hex::decode_strict(s).map_err(|why| {
        Usage::Hex {
            arg: what,
            value: s.to_string(),
            why,
        }
        .into()
    })
}

/// The salt to use: `--salt` when given, else 32 bytes from /dev/urandom.
pub fn salt_or_random(salt: Option<&str>) -> CliResult<Vec<u8>> {
    match salt {
        Some(s) => {
            let v = parse_hex("--salt", s)?;
            if v.len() > stele_verifier::verity::MAX_SALT_LEN {
                return Err(Usage::SaltTooLong {
                    len: v.len(),
                    max: stele_verifier::verity::MAX_SALT_LEN,
                }
                .into());
            }
            Ok(v)
        }
        None => {
            let b: [u8; stele_image::slot::DEFAULT_SALT_LEN] = stele_image::random::bytes()?;
            Ok(b.to_vec())
        }
    }
}

/// Timestamps for reproducible builds: SOURCE_DATE_EPOCH when set, else 0.
pub fn source_date_epoch() -> CliResult<u64> {
    epoch_from(std::env::var("SOURCE_DATE_EPOCH").ok().as_deref())
}

fn epoch_from(v: Option<&str>) -> CliResult<u64> {
    match v {
        None | Some("") => Ok(0),
        Some(s) => s.trim().parse().map_err(|_| {
            Usage::Epoch {
                value: s.to_string(),
            }
            .into()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_defaults_to_zero() {
        assert_eq!(epoch_from(None).unwrap(), 0);
        assert_eq!(epoch_from(Some("1700000000")).unwrap(), 1_700_000_000);
        assert!(epoch_from(Some("yesterday")).is_err());
    }

    #[test]
    fn salts() {
        assert_eq!(salt_or_random(Some("00ff")).unwrap(), vec![0, 0xff]);
        assert!(salt_or_random(Some("0")).is_err());
        assert_eq!(salt_or_random(None).unwrap().len(), 32);
        assert!(salt_or_random(Some(&"00".repeat(257))).is_err());
    }
}

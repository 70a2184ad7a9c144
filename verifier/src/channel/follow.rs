//! Which channels an image follows: `/etc/stele/channels` in the image
//! (verifier::layout::CHANNELS_FILE), beside its channel keys, read from the verified
//! lower layer. One parser for `stele image build` (which refuses a bad file) and the
//! device (which refuses a channel file of another name). Pure. docs/FORMATS.md
//! "Followed channels".

use super::name_ok;

/// Most channel names one image follows.
pub const MAX_FOLLOWED: usize = 16;

/// Parses the followed-channels file: one channel name per line (the channel name rule:
/// 1..=64 of `A-Z a-z 0-9 . _ -`), blank lines and lines starting with `#` ignored,
/// surrounding spaces trimmed; 1..=[`MAX_FOLLOWED`] distinct names. The error names the
/// line and what is wrong.
pub fn parse_followed(text: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if !name_ok(l) {
            return Err(format!(
                "line {}: {l:?} is not a channel name (1..=64 of A-Z a-z 0-9 . _ -)",
                i + 1
            ));
        }
        if out.iter().any(|n| n == l) {
            return Err(format!("line {}: channel {l:?} is listed twice", i + 1));
        }
        if out.len() == MAX_FOLLOWED {
            return Err(format!("more than {MAX_FOLLOWED} channels"));
        }
        out.push(l.to_string());
    }
    if out.is_empty() {
        return Err("names no channel (one name per line, e.g. `stable`)".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn followed_channels_file() {
        assert_eq!(parse_followed("stable\n").unwrap(), ["stable"]);
        assert_eq!(
            parse_followed("# ours\n\n  stable \nbeta-2\n").unwrap(),
            ["stable", "beta-2"]
        );
        for (bad, why) in [
            ("", "names no channel"),
            ("# only a comment\n", "names no channel"),
            (
                "stable\nstable\n",
                "line 2: channel \"stable\" is listed twice",
            ),
            ("sta ble\n", "line 1: \"sta ble\" is not a channel name"),
            ("stable\n../x\n", "line 2"),
        ] {
            let e = parse_followed(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        let many: String = (0..=MAX_FOLLOWED).map(|i| format!("c{i}\n")).collect();
        assert!(parse_followed(&many).unwrap_err().contains("more than 16"));
    }
}

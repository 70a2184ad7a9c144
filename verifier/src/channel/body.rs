//! The channel body: TOML, decoded only after its signatures were checked, with the rules
//! a builder and a device both apply ([`Channel::check`]).

use serde::Deserialize;

use super::*;
use crate::hex;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannel {
    format_version: u64,
    channel: String,
    name: String,
    sequence: u64,
    issued: u64,
    expires: u64,
    #[serde(default)]
    release: Vec<RawRelease>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelease {
    version: String,
    rollback_index: u64,
    url: String,
    length: u64,
    manifest_sha256: String,
    start: u64,
    #[serde(default)]
    wave: Vec<RawWave>,
    #[serde(default)]
    delta: Vec<RawDelta>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelta {
    from_sha256: String,
    from_version: String,
    url: String,
    length: u64,
    sha256: String,
    index_sha256: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWave {
    after: u64,
    below: u64,
}

fn body_err(why: impl Into<String>) -> ChannelError {
    ChannelError::Body(why.into())
}

/// A 64-hex-digit field `what` of release `version`'s body.
fn digest_field(version: &str, what: &str, v: &str) -> Result<[u8; DIGEST_LEN], ChannelError> {
    let d = hex::decode(v)
        .filter(|d| d.len() == DIGEST_LEN && v != "-")
        .ok_or_else(|| body_err(format!("release {version:?}: {what} must be 64 hex digits")))?;
    let mut out = [0u8; DIGEST_LEN];
    out.copy_from_slice(&d);
    Ok(out)
}

/// A release's version, or the version a delta starts from: 1..=64 printable ASCII
/// characters (spaces allowed, no quote).
fn version_ok(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= crate::manifest::MAX_NAME_LEN
        && v.chars().all(|c| c == ' ' || c.is_ascii_graphic())
        && !v.contains('"')
}

/// A URL as the channel may hold it: printable ASCII without spaces, quotes or
/// backslashes; an absolute `http(s)://` URL or a relative reference without `..`.
pub(crate) fn url_ok(url: &str) -> Result<(), String> {
    if url.is_empty() || url.len() > MAX_URL_LEN {
        return Err(format!("url must be 1..={MAX_URL_LEN} bytes"));
    }
    if !url
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\'))
    {
        return Err(format!(
            "url {url:?} must be printable ASCII without spaces, quotes or backslashes"
        ));
    }
    let absolute = url.starts_with("http://") || url.starts_with("https://");
    if !absolute {
        if url.contains(':') || url.starts_with('/') {
            return Err(format!(
                "url {url:?}: use an http:// or https:// URL or a path relative to the channel"
            ));
        }
        if url.split('/').any(|seg| seg == "..") {
            return Err(format!("url {url:?}: a relative url may not contain .."));
        }
    }
    Ok(())
}

impl Channel {
    /// Decodes a body: UTF-8, TOML, `format_version`, known keys only, then [`Channel::check`].
    pub fn parse_body(body: &[u8]) -> Result<Self, ChannelError> {
        let text = std::str::from_utf8(body).map_err(|e| body_err(format!("not UTF-8: {e}")))?;
        let table: toml::Table =
            toml::from_str(text).map_err(|e| body_err(format!("not TOML: {e}")))?;
        match table.get("format_version") {
            Some(toml::Value::Integer(1)) => {}
            Some(toml::Value::Integer(v)) => {
                return Err(ChannelError::Verify(crate::Error::UnsupportedVersion {
                    what: "channel format",
                    found: u64::try_from(*v).unwrap_or(u64::MAX),
                    supported: CHANNEL_FORMAT_VERSION,
                }))
            }
            _ => return Err(body_err("format_version is missing or not an integer")),
        }
        let raw: RawChannel = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| body_err(e.to_string().trim().to_string()))?;
        debug_assert_eq!(raw.format_version, CHANNEL_FORMAT_VERSION);
        let releases = raw
            .release
            .into_iter()
            .map(|r| {
                let manifest_sha256 =
                    digest_field(&r.version, "manifest_sha256", &r.manifest_sha256)?;
                let deltas = r
                    .delta
                    .into_iter()
                    .map(|d| {
                        let field = |what, v: &str| digest_field(&r.version, what, v);
                        Ok(ReleaseDelta {
                            from_sha256: field("delta from_sha256", &d.from_sha256)?,
                            from_version: d.from_version,
                            url: d.url,
                            length: d.length,
                            sha256: field("delta sha256", &d.sha256)?,
                            index_sha256: field("delta index_sha256", &d.index_sha256)?,
                        })
                    })
                    .collect::<Result<Vec<_>, ChannelError>>()?;
                Ok(Release {
                    version: r.version,
                    rollback_index: r.rollback_index,
                    url: r.url,
                    length: r.length,
                    manifest_sha256,
                    start: r.start,
                    waves: r
                        .wave
                        .into_iter()
                        .map(|w| Wave {
                            after: w.after,
                            below: w.below,
                        })
                        .collect(),
                    deltas,
                })
            })
            .collect::<Result<Vec<_>, ChannelError>>()?;
        let c = Channel {
            channel: raw.channel,
            name: raw.name,
            sequence: raw.sequence,
            issued: raw.issued,
            expires: raw.expires,
            releases,
        };
        c.check()?;
        Ok(c)
    }

    /// The rules of a channel body (docs/FORMATS.md): names, `issued < expires`, at most
    /// [`MAX_RELEASES`] releases in strictly increasing `rollback_index` with distinct
    /// versions, URLs, lengths, and waves increasing in `after` and `below` with `below`
    /// in `1..=SEED_RANGE`; every integer at most 2^63 - 1.
    pub fn check(&self) -> Result<(), ChannelError> {
        if !name_ok(&self.channel) {
            return Err(body_err(format!(
                "channel {:?}: use 1..=64 characters of A-Z a-z 0-9 . _ -",
                self.channel
            )));
        }
        if !name_ok(&self.name) {
            return Err(body_err(format!(
                "name {:?}: use 1..=64 characters of A-Z a-z 0-9 . _ -",
                self.name
            )));
        }
        let big = |what: &str, v: u64| {
            (v > i64::MAX as u64).then(|| body_err(format!("{what} {v} is above 2^63 - 1")))
        };
        for (what, v) in [
            ("sequence", self.sequence),
            ("issued", self.issued),
            ("expires", self.expires),
        ] {
            if let Some(e) = big(what, v) {
                return Err(e);
            }
        }
        if self.expires <= self.issued {
            return Err(body_err(format!(
                "expires {} is not after issued {}",
                format_rfc3339(self.expires),
                format_rfc3339(self.issued)
            )));
        }
        if self.releases.len() > MAX_RELEASES {
            return Err(body_err(format!(
                "{} releases, at most {MAX_RELEASES}",
                self.releases.len()
            )));
        }
        for (i, r) in self.releases.iter().enumerate() {
            let ctx = |why: String| body_err(format!("release {:?}: {why}", r.version));
            if !version_ok(&r.version) {
                return Err(ctx(
                    "version must be 1..=64 printable ASCII characters".into()
                ));
            }
            url_ok(&r.url).map_err(ctx)?;
            for (what, v) in [
                ("rollback_index", r.rollback_index),
                ("length", r.length),
                ("start", r.start),
            ] {
                if let Some(e) = big(what, v) {
                    return Err(ctx(e.to_string()));
                }
            }
            if r.length < 2 * crate::footer::FOOTER_SIZE || !r.length.is_multiple_of(4096) {
                return Err(ctx(format!(
                    "length {} is not the length of a slot image (a multiple of 4096, at least 8192)",
                    r.length
                )));
            }
            if let Some(prev) = i.checked_sub(1).map(|p| &self.releases[p]) {
                if r.rollback_index <= prev.rollback_index {
                    return Err(ctx(format!(
                        "rollback_index {} is not above {} of the release before it (list releases oldest first)",
                        r.rollback_index, prev.rollback_index
                    )));
                }
            }
            if self.releases[..i].iter().any(|o| o.version == r.version) {
                return Err(ctx("listed twice".into()));
            }
            if r.waves.len() > MAX_WAVES {
                return Err(ctx(format!("{} waves, at most {MAX_WAVES}", r.waves.len())));
            }
            for (j, w) in r.waves.iter().enumerate() {
                if w.below == 0 || w.below > SEED_RANGE {
                    return Err(ctx(format!(
                        "wave {}: below {} must be 1..={SEED_RANGE}",
                        j + 1,
                        w.below
                    )));
                }
                if let Some(e) = big("wave after", w.after) {
                    return Err(ctx(e.to_string()));
                }
                if let Some(p) = j.checked_sub(1).map(|p| r.waves[p]) {
                    if w.after <= p.after || w.below <= p.below {
                        return Err(ctx(format!(
                            "wave {}: after and below must both increase from one wave to the next",
                            j + 1
                        )));
                    }
                }
            }
            self.check_deltas(r)?;
        }
        Ok(())
    }

    /// The rules of a release's `[[release.delta]]` entries: at most [`MAX_DELTAS`], each
    /// from a release other than this one and from another release than the entries
    /// before it, a `from_version` that is the version of that release when the channel
    /// lists it, a URL as a release's, a length of 1 ..= 2^63 - 1.
    fn check_deltas(&self, r: &Release) -> Result<(), ChannelError> {
        let ctx = |why: String| body_err(format!("release {:?}: {why}", r.version));
        if r.deltas.len() > MAX_DELTAS {
            return Err(ctx(format!(
                "{} deltas, at most {MAX_DELTAS}",
                r.deltas.len()
            )));
        }
        for (j, d) in r.deltas.iter().enumerate() {
            let dctx =
                |why: String| ctx(format!("delta {} from {:?}: {why}", j + 1, d.from_version));
            if !version_ok(&d.from_version) {
                return Err(dctx(
                    "from_version must be 1..=64 printable ASCII characters".into(),
                ));
            }
            url_ok(&d.url).map_err(dctx)?;
            if d.length == 0 || d.length > i64::MAX as u64 {
                return Err(dctx(format!("length {} must be 1..=2^63 - 1", d.length)));
            }
            if d.from_sha256 == r.manifest_sha256 || d.from_version == r.version {
                return Err(dctx("a delta from the release itself".into()));
            }
            if r.deltas[..j]
                .iter()
                .any(|o| o.from_sha256 == d.from_sha256 || o.from_version == d.from_version)
            {
                return Err(dctx(
                    "a second delta from the same release (list one per release)".into(),
                ));
            }
            if let Some(o) = self
                .releases
                .iter()
                .find(|o| o.manifest_sha256 == d.from_sha256 || o.version == d.from_version)
            {
                if o.manifest_sha256 != d.from_sha256 || o.version != d.from_version {
                    return Err(dctx(format!(
                        "from_sha256 and from_version name different releases (the channel lists {} with manifest_sha256 {})",
                        o.version,
                        hex::encode(&o.manifest_sha256)
                    )));
                }
            }
        }
        Ok(())
    }

    /// Encodes the body as TOML (fixed layout, no comments): the same channel always gives
    /// the same bytes.
    pub fn to_toml(&self) -> String {
        let s = |v: &str| toml::Value::String(v.to_string()).to_string();
        let mut out = format!(
            "format_version = {CHANNEL_FORMAT_VERSION}\n\
             channel = {}\n\
             name = {}\n\
             sequence = {}\n\
             issued = {}\n\
             expires = {}\n",
            s(&self.channel),
            s(&self.name),
            self.sequence,
            self.issued,
            self.expires
        );
        for r in &self.releases {
            out.push_str(&format!(
                "\n[[release]]\n\
                 version = {}\n\
                 rollback_index = {}\n\
                 url = {}\n\
                 length = {}\n\
                 manifest_sha256 = \"{}\"\n\
                 start = {}\n",
                s(&r.version),
                r.rollback_index,
                s(&r.url),
                r.length,
                hex::encode(&r.manifest_sha256),
                r.start
            ));
            for w in &r.waves {
                out.push_str(&format!(
                    "\n[[release.wave]]\nafter = {}\nbelow = {}\n",
                    w.after, w.below
                ));
            }
            for d in &r.deltas {
                out.push_str(&format!(
                    "\n[[release.delta]]\n\
                     from_sha256 = \"{}\"\n\
                     from_version = {}\n\
                     url = {}\n\
                     length = {}\n\
                     sha256 = \"{}\"\n\
                     index_sha256 = \"{}\"\n",
                    hex::encode(&d.from_sha256),
                    s(&d.from_version),
                    s(&d.url),
                    d.length,
                    hex::encode(&d.sha256),
                    hex::encode(&d.index_sha256)
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn body_round_trips_in_a_fixed_layout() {
        let c = sample();
        let text = c.to_toml();
        assert!(text.starts_with(
            "format_version = 1\nchannel = \"stable\"\nname = \"demo\"\nsequence = 7\n"
        ));
        assert!(text.contains("\n[[release.wave]]\nafter = 3600\nbelow = 1000\n"));
        assert!(text.contains(
            "\n[[release.delta]]\nfrom_sha256 = \"1111111111111111111111111111111111111111111111111111111111111111\"\nfrom_version = \"1.0.0\"\n"
        ));
        assert_eq!(Channel::parse_body(text.as_bytes()).unwrap(), c);
    }

    #[test]
    fn body_rules() {
        let bad = |edit: &dyn Fn(&mut Channel), needle: &str| {
            let mut c = sample();
            edit(&mut c);
            let e = c.check().unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
            // The device refuses what the builder refuses.
            assert!(Channel::parse_body(c.to_toml().as_bytes()).is_err());
        };
        bad(&|c| c.name = "a b".into(), "name");
        bad(&|c| c.channel = String::new(), "channel");
        bad(&|c| c.expires = c.issued, "not after issued");
        bad(&|c| c.releases[1].rollback_index = 1, "not above");
        bad(&|c| c.releases[1].version = "1.0.0".into(), "listed twice");
        bad(&|c| c.releases[0].url = "../x.img".into(), "..");
        bad(&|c| c.releases[0].url = "/x.img".into(), "relative");
        bad(&|c| c.releases[0].url = "ftp://h/x".into(), "relative");
        bad(&|c| c.releases[0].url = "a b".into(), "printable");
        bad(&|c| c.releases[0].length = 4097, "length");
        bad(&|c| c.releases[1].waves[1].below = 1001, "below");
        bad(&|c| c.releases[1].waves[1].after = 0, "increase");
        bad(&|c| c.sequence = u64::MAX, "2^63");
        bad(&|c| c.releases[1].deltas[0].url = "../d".into(), "..");
        bad(&|c| c.releases[1].deltas[0].length = 0, "length 0");
        bad(
            &|c| c.releases[1].deltas[0].from_version = "2.0.0".into(),
            "itself",
        );
        bad(
            &|c| c.releases[1].deltas[0].from_sha256 = [0x22; 32],
            "itself",
        );
        bad(
            &|c| c.releases[1].deltas[0].from_version = "0.9".into(),
            "name different releases",
        );
        bad(
            &|c| {
                let d = c.releases[1].deltas[0].clone();
                c.releases[1].deltas.push(d);
            },
            "same release",
        );
        bad(
            &|c| {
                let d = c.releases[1].deltas[0].clone();
                c.releases[1].deltas = (0..=MAX_DELTAS)
                    .map(|i| ReleaseDelta {
                        from_sha256: [u8::try_from(i + 0x80).unwrap(); 32],
                        from_version: format!("0.{i}"),
                        ..d.clone()
                    })
                    .collect();
            },
            "at most 16",
        );
        for (text, needle) in [
            ("format_version = 2\n", "unsupported"),
            ("channel = \"x\"\n", "format_version"),
            (
                "format_version = 1\nchannel = \"a\"\nname = \"b\"\nsequence = 1\nissued = 1\nexpires = 2\nextra = 1\n",
                "unknown field",
            ),
        ] {
            let e = Channel::parse_body(text.as_bytes()).unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }

    proptest! {
        #[test]
        fn garbage_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..800)) {
            let _ = Channel::parse_body(&bytes);
        }

        #[test]
        fn mutated_bodies_never_panic(pos: prop::sample::Index, val: u8) {
            let mut b = sample().to_toml().into_bytes();
            let i = pos.index(b.len());
            b[i] = val;
            let _ = Channel::parse_body(&b);
        }
    }
}

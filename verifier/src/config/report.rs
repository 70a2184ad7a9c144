//! The `[report]` table of system.toml: where a device sends its reports (docs/BOOT.md
//! "Reports", docs/FORMATS.md "Report document"). Named by the image, so it comes from the
//! verified root; a report URL only says where the device's own history goes, it can never
//! weaken verification. Parsing and expanding the URL template are pure.

use super::{ConfigError, Fields};

/// Keys of `[report]`.
pub const REPORT_KEYS: &[&str] = &["url", "method"];
/// The report's device id in the URL template (32 lowercase hex digits).
pub const DEVICE: &str = "{device}";
/// The report's sequence number in the URL template (decimal).
pub const SEQ: &str = "{seq}";
/// The longest URL template accepted.
pub const URL_MAX: usize = 2048;

/// How a report is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// One object per report (a presigned object store): the URL must contain `{seq}`.
    Put,
    /// A webhook: every report to the same URL.
    Post,
}

impl Method {
    /// The TOML names.
    pub const CHOICES: [(&'static str, Method); 2] = [("put", Method::Put), ("post", Method::Post)];

    /// Its name in system.toml and on the fetch client's command line.
    pub fn name(self) -> &'static str {
        match self {
            Method::Put => "put",
            Method::Post => "post",
        }
    }
}

/// `[report]`: the URL template and the method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportConfig {
    pub url: String,
    pub method: Method,
}

impl ReportConfig {
    /// Parses the `[report]` table (`f` names its keys `report.KEY`). Pure.
    pub fn parse(mut f: Fields<'_>) -> Result<ReportConfig, ConfigError> {
        let url = f
            .string("url")?
            .ok_or_else(|| f.error("url", "missing: the collector's http:// or https:// URL"))?;
        let method = f
            .choice("method", &Method::CHOICES)?
            .unwrap_or(Method::Post);
        if let Err(why) = check_url(&url, method) {
            return Err(f.error("url", why));
        }
        f.finish(REPORT_KEYS)?;
        Ok(ReportConfig { url, method })
    }

    /// The URL of report `seq` of `device`: the template with its placeholders replaced.
    /// Pure.
    pub fn expand(&self, device: &str, seq: u64) -> String {
        self.url
            .replace(DEVICE, device)
            .replace(SEQ, &seq.to_string())
    }
}

impl ReportConfig {
    /// `url` as messages show it: without its query, which may hold a presigned URL's
    /// signature. Pure.
    pub fn shown(url: &str) -> &str {
        url.split_once('?').map_or(url, |(u, _)| u)
    }
}

/// The rule a URL template breaks, if any. Pure.
fn check_url(url: &str, method: Method) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url:?} is not an http:// or https:// URL"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("{url:?} names no host"));
    }
    if url.len() > URL_MAX {
        return Err(format!("longer than {URL_MAX} bytes"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains a space or a control character".into());
    }
    let stripped = url.replace(DEVICE, "").replace(SEQ, "");
    if stripped.contains('{') || stripped.contains('}') {
        return Err(format!(
            "{url:?}: the only placeholders are {DEVICE} and {SEQ}"
        ));
    }
    if method == Method::Put && !url.contains(SEQ) {
        return Err(format!(
            "method = \"put\" needs {SEQ} in the URL: each report is its own object, or the next one overwrites it"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_table;

    fn parse(text: &str) -> Result<ReportConfig, ConfigError> {
        let t = parse_table(text, "system.toml").unwrap();
        ReportConfig::parse(Fields::new("system.toml", "report.", t))
    }

    #[test]
    fn a_template_is_expanded_per_device_and_report() {
        let r =
            parse("url = \"https://s3.example/r/{device}/{seq}.json?sig=x\"\nmethod = \"put\"\n")
                .unwrap();
        assert_eq!(r.method, Method::Put);
        assert_eq!(
            r.expand("00ff", 12),
            "https://s3.example/r/00ff/12.json?sig=x"
        );
        let hook = parse("url = \"http://10.0.2.100/hook\"\n").unwrap();
        assert_eq!(hook.method, Method::Post);
        assert_eq!(hook.expand("00ff", 3), "http://10.0.2.100/hook");
        assert_eq!(
            ReportConfig::shown("https://s/r/1.json?sig=x"),
            "https://s/r/1.json"
        );
    }

    #[test]
    fn bad_templates_are_refused_naming_the_rule() {
        let why = |t: &str| parse(t).unwrap_err().to_string();
        assert!(why("").contains("report.url: missing"), "{}", why(""));
        assert!(why("url = \"ftp://x/y\"").contains("not an http:// or https:// URL"));
        assert!(why("url = \"https:///y\"").contains("names no host"));
        assert!(why("url = \"https://x/{host}\"").contains("the only placeholders"));
        assert!(why("url = \"https://x/a b\"").contains("space or a control"));
        assert!(why("url = \"https://x/{device}\"\nmethod = \"put\"").contains("needs {seq}"));
        assert!(why("url = \"https://x/\"\nmethod = \"get\"").contains("report.method"));
        assert!(why("url = \"https://x/\"\nsecret = 1").contains("report.secret: unknown key"));
        let long = format!("url = \"https://x/{}\"", "a".repeat(URL_MAX));
        assert!(why(&long).contains("longer than"));
    }
}

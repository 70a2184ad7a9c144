//! The configuration schemas: `boot.toml` (initramfs) and `system.toml` (inside the image).
//!
//! One parser per file, used by the build side (`stele initramfs`, `stele image build`) and
//! by PID 1, so the build refuses exactly what the device would refuse, with the same
//! message. Parsers are pure: text in, a value or one [`ConfigError`] out. The schema is
//! written out by hand ([`Fields`]) rather than derived, so every error names the key and
//! the rule.

pub mod accounts;
pub mod boot_toml;
#[cfg(any(test, feature = "test-util"))]
pub mod cases;
pub mod report;
pub mod system_toml;

pub use accounts::{Account, Accounts, Credentials, RunAs};
pub use boot_toml::{Action, BootConfig, MountFlag, RollbackStorage, Stage, VerifyMode};
pub use report::{Method, ReportConfig};
pub use system_toml::{Restart, Service, SystemConfig};

use crate::exit::{Exit, Report};

/// Largest accepted delay or timeout, in seconds.
pub const MAX_SECS: u64 = 3600;

/// A configuration file refused: which file, which key (none for the file as a whole), and
/// the rule it breaks. Displays as `invalid <origin>: <key>: <why>`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {origin}: {}{why}", key.as_ref().map(|k| format!("{k}: ")).unwrap_or_default())]
pub struct ConfigError {
    /// The file, as the reader names it (`/etc/stele/boot.toml`, the `--config` path...).
    pub origin: String,
    /// The key, e.g. `data_mount` or `service "web" exec`.
    pub key: Option<String>,
    /// The rule, with the fix where there is one.
    pub why: String,
}

impl ConfigError {
    /// An error about `key` of `origin`.
    pub fn key(origin: &str, key: impl Into<String>, why: impl Into<String>) -> Self {
        ConfigError {
            origin: origin.to_string(),
            key: Some(key.into()),
            why: why.into(),
        }
    }

    /// An error about the file as a whole.
    pub fn file(origin: &str, why: impl Into<String>) -> Self {
        ConfigError {
            origin: origin.to_string(),
            key: None,
            why: why.into(),
        }
    }
}

impl Report for ConfigError {
    /// A configuration file is the user's input. (A copy published on the device is
    /// wrapped by its reader as an environment error.)
    fn exit(&self) -> Exit {
        Exit::Usage
    }
}

/// Parses TOML text into a table; a syntax error names the file. Pure.
pub fn parse_table(text: &str, origin: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| {
        ConfigError::file(
            origin,
            format!("not valid TOML: {}", one_line(&e.to_string())),
        )
    })
}

/// Whitespace (newlines included) collapsed to single spaces.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// True when `path` is `dir` or below it.
pub fn is_under(path: &str, dir: &str) -> bool {
    path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// A TOML table being read field by field: each `take_*` removes a key and checks its
/// type, [`Fields::finish`] refuses whatever is left. `prefix` is put before key names in
/// errors (`service "web" ` for a service's fields).
#[derive(Debug)]
pub struct Fields<'a> {
    origin: &'a str,
    prefix: String,
    table: toml::Table,
}

impl<'a> Fields<'a> {
    pub fn new(origin: &'a str, prefix: impl Into<String>, table: toml::Table) -> Self {
        Fields {
            origin,
            prefix: prefix.into(),
            table,
        }
    }

    /// The key as errors name it.
    pub fn name(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// An error about `key`.
    pub fn error(&self, key: &str, why: impl Into<String>) -> ConfigError {
        ConfigError::key(self.origin, self.name(key), why)
    }

    /// Refuses keys that no `take_*` consumed, naming the known ones.
    pub fn finish(self, known: &[&str]) -> Result<(), ConfigError> {
        match self.table.keys().next() {
            Some(k) => {
                Err(self.error(k, format!("unknown key (known keys: {})", known.join(", "))))
            }
            None => Ok(()),
        }
    }

    /// The raw value of `key`, if set.
    pub fn take(&mut self, key: &str) -> Option<toml::Value> {
        self.table.remove(key)
    }

    /// A string.
    pub fn string(&mut self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.error(key, "must be a string")),
        }
    }

    /// A non-negative integer.
    pub fn uint(&mut self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(toml::Value::Integer(i)) => u64::try_from(i)
                .map(Some)
                .map_err(|_| self.error(key, "must be a non-negative integer")),
            Some(_) => Err(self.error(key, "must be a non-negative integer")),
        }
    }

    /// A number of seconds, at most [`MAX_SECS`].
    pub fn secs(&mut self, key: &str) -> Result<Option<u64>, ConfigError> {
        match self.uint(key)? {
            Some(v) if v > MAX_SECS => {
                Err(self.error(key, format!("{v} is above the limit of {MAX_SECS} seconds")))
            }
            v => Ok(v),
        }
    }

    /// A boolean.
    pub fn boolean(&mut self, key: &str) -> Result<Option<bool>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(toml::Value::Boolean(b)) => Ok(Some(b)),
            Some(_) => Err(self.error(key, "must be true or false")),
        }
    }

    /// One of `choices` (name, value).
    pub fn choice<T: Copy>(
        &mut self,
        key: &str,
        choices: &[(&str, T)],
    ) -> Result<Option<T>, ConfigError> {
        let Some(s) = self.string(key)? else {
            return Ok(None);
        };
        match choices.iter().find(|(n, _)| *n == s) {
            Some((_, v)) => Ok(Some(*v)),
            None => {
                let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
                Err(self.error(
                    key,
                    format!("must be one of {}, not {s:?}", names.join(", ")),
                ))
            }
        }
    }

    /// An array of strings.
    pub fn strings(&mut self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        let Some(v) = self.take(key) else {
            return Ok(None);
        };
        let err = || self.error(key, "must be an array of strings");
        let toml::Value::Array(items) = v else {
            return Err(err());
        };
        items
            .into_iter()
            .map(|i| match i {
                toml::Value::String(s) => Ok(s),
                _ => Err(err()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// A command: a non-empty array of strings, the program an absolute path, no NUL byte.
    pub fn argv(&mut self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        let Some(argv) = self.strings(key)? else {
            return Ok(None);
        };
        match argv.first() {
            None => Err(self.error(key, "empty command")),
            Some(p) if !p.starts_with('/') => {
                Err(self.error(key, format!("{p:?}: the program must be an absolute path")))
            }
            Some(_) if argv.iter().any(|a| a.contains('\0')) => {
                Err(self.error(key, "an argument contains a NUL byte"))
            }
            Some(_) => Ok(Some(argv)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_file_key_and_rule() {
        let e = ConfigError::key("/etc/stele/boot.toml", "data_mount", "must be a string");
        assert_eq!(
            e.to_string(),
            "invalid /etc/stele/boot.toml: data_mount: must be a string"
        );
        let e = ConfigError::file("b.toml", "not valid TOML: x");
        assert_eq!(e.to_string(), "invalid b.toml: not valid TOML: x");
        assert_eq!(e.exit(), Exit::Usage);
    }

    #[test]
    fn fields_check_types() {
        let t = parse_table(
            "s = 1\nn = -1\nbig = 4000\nc = \"x\"\na = [1]\ncmd = [\"rel\"]\nz = 0",
            "f",
        )
        .unwrap();
        let mut f = Fields::new("f", "", t);
        assert_eq!(f.string("s").unwrap_err().why, "must be a string");
        assert!(f.uint("n").unwrap_err().why.contains("non-negative"));
        assert!(f.secs("big").unwrap_err().why.contains("limit of 3600"));
        let e = f.choice("c", &[("a", 1), ("b", 2)]).unwrap_err();
        assert_eq!(e.why, "must be one of a, b, not \"x\"");
        assert!(f.strings("a").is_err());
        assert!(f.argv("cmd").unwrap_err().why.contains("absolute path"));
        assert_eq!(f.string("missing").unwrap(), None);
        let e = f.finish(&["s"]).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("z"));
        assert!(parse_table("this is not toml", "f")
            .unwrap_err()
            .to_string()
            .starts_with("invalid f: not valid TOML: "));
    }
}

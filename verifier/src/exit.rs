//! The one outcome model of every stele program: exit classes, the [`Report`] trait that
//! gives each library error its class, and the one function that prints an error.
//!
//! | code | class | meaning |
//! | ---: | --- | --- |
//! | 0 | success | the command did what it says |
//! | 1 | refused | a check said no: signature, threshold, rollback, tampered or malformed image, on-trial fallback |
//! | 2 | usage | the caller's input is wrong: arguments, key or configuration files they gave |
//! | 3 | environment | the machine is: I/O, missing tool or device, a file published at boot |
//!
//! Each error type implements [`Report`] next to its definition; a wrapper takes the class
//! of what it wraps unless its own structure says otherwise (a key file read from
//! `/run/stele` on the device is wrapped as an environment error by the update crate).

use std::io::Write;

/// The process exit status, by class of outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Exit {
    Success = 0,
    Refused = 1,
    Usage = 2,
    Environment = 3,
}

impl Exit {
    /// The numeric exit status.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The class's name, as the JSON outputs and docs/CLI.md give it.
    pub fn name(self) -> &'static str {
        match self {
            Exit::Success => "success",
            Exit::Refused => "refused",
            Exit::Usage => "usage",
            Exit::Environment => "environment",
        }
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e.code())
    }
}

/// An error that knows its exit class. Its `Display` is the one-line message, with the fix
/// where there is one.
pub trait Report: std::error::Error {
    /// The exit class of this error.
    fn exit(&self) -> Exit;
}

/// One printable line for a terminal: newlines and tabs become spaces and other control
/// characters are escaped, so bytes from an unverified image (quoted in a parse error)
/// cannot drive the terminal. Pure.
pub fn error_line(message: &str) -> String {
    message
        .chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' => " ".to_owned(),
            c if c.is_control() => c.escape_default().to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// Writes `stele: error: <message>` (one line, [`error_line`]) to `out` and returns the
/// error's exit class.
pub fn write_error(out: &mut dyn Write, e: &dyn Report) -> Exit {
    // Nothing sensible is left to do when stderr itself cannot be written.
    let _ = writeln!(out, "stele: error: {}", error_line(&e.to_string()));
    e.exit()
}

/// [`write_error`] to stderr: what the host CLI's and the device binary's `main` call.
pub fn print_error(e: &dyn Report) -> Exit {
    write_error(&mut std::io::stderr().lock(), e)
}

/// Writes `stele: warning: <message>` (one line, [`error_line`]) to `out`: something the
/// command went on without (a skipped file, a setting the kernel cannot use).
pub fn write_warning(out: &mut dyn Write, w: &dyn std::fmt::Display) {
    let _ = writeln!(out, "stele: warning: {}", error_line(&w.to_string()));
}

/// [`write_warning`] to stderr.
pub fn print_warning(w: &dyn std::fmt::Display) {
    write_warning(&mut std::io::stderr().lock(), w);
}

impl Report for crate::Error {
    /// I/O and memory are the environment; a key file is the caller's input; everything else is a
    /// check that refused.
    fn exit(&self) -> Exit {
        match self {
            crate::Error::Io { .. } | crate::Error::NoMemory { .. } => Exit::Environment,
            crate::Error::Key { .. } => Exit::Usage,
            _ => Exit::Refused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_cannot_drive_the_terminal() {
        let raw = "bad body: line 1\n\u{1b}]0;pwned\u{7}\u{1b}[31m red";
        let line = error_line(raw);
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert!(
            line.starts_with("bad body: line 1 \\u{1b}]0;pwned"),
            "{line}"
        );
    }

    #[test]
    fn one_line_with_the_class_of_the_error() {
        let mut out = Vec::new();
        let e = crate::Error::Body("x\ny".into());
        assert_eq!(write_error(&mut out, &e), Exit::Refused);
        assert_eq!(out, b"stele: error: malformed manifest body: x y\n");
        let key = crate::Error::Key {
            path: "k.pem".into(),
            problem: crate::keyfile::KeyProblem::Empty {
                want: crate::keyfile::Half::Public,
            },
        };
        assert_eq!(key.exit(), Exit::Usage);
        let io = crate::Error::io("slot", std::io::Error::other("gone"));
        assert_eq!(io.exit(), Exit::Environment);
        assert_eq!(Exit::Environment.code(), 3);
        let mut out = Vec::new();
        write_warning(&mut out, &"a\nb");
        assert_eq!(out, b"stele: warning: a b\n");
    }
}

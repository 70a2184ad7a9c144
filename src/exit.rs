//! Exit codes of the `stele` command and the error that carries one.
//!
//! | code | meaning |
//! | ---: | --- |
//! | 0 | success |
//! | 1 | verification refused: bad or missing signature, threshold not met, rollback, tampered, truncated or malformed image |
//! | 2 | usage error: bad arguments, malformed key or configuration file given by the user |
//! | 3 | environment error: I/O, missing host tool, file exists, external command failed |

use std::fmt;
use std::process::ExitCode;

/// The process exit status, by class of failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    Refused = 1,
    Usage = 2,
    Environment = 3,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// A failed command: what to print and how to exit.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

/// Result of a subcommand.
pub type CliResult<T = ()> = Result<T, Failure>;

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Failure {
            exit,
            message: message.into(),
        }
    }
    pub fn usage(message: impl Into<String>) -> Self {
        Failure::new(Exit::Usage, message)
    }
    pub fn env(message: impl Into<String>) -> Self {
        Failure::new(Exit::Environment, message)
    }
    /// Prefixes the message with `context: `.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

/// The exit class of a verifier error.
pub fn verifier_exit(e: &stele_verifier::Error) -> Exit {
    match e {
        stele_verifier::Error::Io { .. } => Exit::Environment,
        stele_verifier::Error::Key { .. } => Exit::Usage,
        _ => Exit::Refused,
    }
}

/// The verifier's message, with the likely cause added where the bare check is cryptic.
pub fn verifier_message(e: &stele_verifier::Error) -> String {
    use stele_verifier::Error as V;
    match e {
        V::BadMagic { what, .. } if *what == "footer" => {
            format!("{e}: the image is truncated, or it is not a stele slot image")
        }
        V::RootHashMismatch { .. } => {
            format!("{e}: hash tree mismatch (the top hash block was modified)")
        }
        _ => e.to_string(),
    }
}

impl From<stele_verifier::Error> for Failure {
    fn from(e: stele_verifier::Error) -> Self {
        Failure::new(verifier_exit(&e), verifier_message(&e))
    }
}

impl From<stele_image::Error> for Failure {
    fn from(e: stele_image::Error) -> Self {
        use stele_image::Error as E;
        let exit = match &e {
            E::Verifier(v) => return Failure::new(verifier_exit(v), verifier_message(v)),
            E::Helper { code: 1, .. } => Exit::Refused,
            E::Helper { code: 2, .. } => Exit::Usage,
            E::Invalid { .. } => Exit::Usage,
            _ => Exit::Environment,
        };
        Failure::new(exit, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let f: Failure = stele_verifier::Error::FooterChecksum.into();
        assert_eq!(f.exit, Exit::Refused);
        let f: Failure = stele_image::Error::ToolMissing {
            tool: "mksquashfs",
            package: "squashfs-tools",
        }
        .into();
        assert_eq!(f.exit, Exit::Environment);
        let f: Failure = stele_image::Error::invalid("--salt", "odd").into();
        assert_eq!(f.exit, Exit::Usage);
        let f: Failure = stele_image::Error::Verifier(stele_verifier::Error::Key {
            path: "k".into(),
            why: "x".into(),
        })
        .into();
        assert_eq!(f.exit, Exit::Usage);
        assert_eq!(f.context("a").message, "a: bad key k: x");
        let f: Failure = stele_verifier::Error::BadMagic {
            what: "footer",
            found: vec![0; 8],
        }
        .into();
        assert!(f.message.contains("truncated"), "{}", f.message);
    }
}

//! JUnit XML for CI systems: one test case per console expectation of a VM run, with the
//! failure's cause and the console's last lines, the whole console as `system-out`. Pure.

use std::fmt::Write as _;
use std::time::Duration;

/// How one expectation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// `message` is one line (the cause); `detail` is the console tail.
    Failed {
        message: String,
        detail: String,
    },
    /// Not reached, because an earlier expectation failed.
    Skipped,
}

/// One expectation (a JUnit test case).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// The text expected on the console.
    pub name: String,
    pub time: Duration,
    pub outcome: Outcome,
}

/// Text with the characters XML 1.0 cannot hold (most control characters: consoles
/// print escape sequences) replaced by U+FFFD, and `& < > " '` escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c < ' ' || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// The JUnit XML document for a run named `suite` (one `<testsuite>` in `<testsuites>`).
pub fn render(suite: &str, cases: &[Case], console: &str, total: Duration) -> String {
    let count = |f: fn(&Outcome) -> bool| cases.iter().filter(|c| f(&c.outcome)).count();
    let failures = count(|o| matches!(o, Outcome::Failed { .. }));
    let skipped = count(|o| matches!(o, Outcome::Skipped));
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let head = format!(
        "name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{:.3}\"",
        escape(suite),
        cases.len(),
        total.as_secs_f64()
    );
    let _ = writeln!(x, "<testsuites {head}>");
    let _ = writeln!(x, "  <testsuite {head}>");
    for c in cases {
        let _ = write!(
            x,
            "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
            escape(suite),
            escape(&c.name),
            c.time.as_secs_f64()
        );
        match &c.outcome {
            Outcome::Passed => x.push_str("/>\n"),
            Outcome::Skipped => {
                x.push_str(">\n      <skipped message=\"not reached: an earlier expectation failed\"/>\n    </testcase>\n");
            }
            Outcome::Failed { message, detail } => {
                let _ = write!(
                    x,
                    ">\n      <failure message=\"{}\" type=\"expectation\">{}</failure>\n    </testcase>\n",
                    escape(message),
                    escape(detail)
                );
            }
        }
    }
    let _ = writeln!(x, "    <system-out>{}</system-out>", escape(console));
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_control_characters() {
        assert_eq!(escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&apos;");
        assert_eq!(escape("\x1b[2Jok\r\n\t"), "\u{fffd}[2Jok\r\n\t");
        assert_eq!(escape("\u{0}\u{ffff}é"), "\u{fffd}\u{fffd}é");
    }

    #[test]
    fn counts_failures_and_skips() {
        let cases = vec![
            Case {
                name: "stele: ready".into(),
                time: Duration::from_millis(1500),
                outcome: Outcome::Passed,
            },
            Case {
                name: "svc: <ok>".into(),
                time: Duration::from_secs(3),
                outcome: Outcome::Failed {
                    message: "timed out".into(),
                    detail: "last\x07line".into(),
                },
            },
            Case {
                name: "never".into(),
                time: Duration::ZERO,
                outcome: Outcome::Skipped,
            },
        ];
        let x = render(
            "stele qemu run",
            &cases,
            "console & more",
            Duration::from_secs(5),
        );
        assert!(
            x.contains("tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"1\" time=\"5.000\""),
            "{x}"
        );
        assert!(x.contains("name=\"svc: &lt;ok&gt;\" time=\"3.000\""), "{x}");
        assert!(x.contains(
            "<failure message=\"timed out\" type=\"expectation\">last\u{fffd}line</failure>"
        ));
        assert!(x.contains("<system-out>console &amp; more</system-out>"));
        assert!(x.contains("<skipped "));
    }
}

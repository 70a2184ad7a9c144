//! Progress bars for the long commands (indicatif): a step of known size is a bar with
//! bytes, rate and ETA; one of unknown size (a running mkfs, a stream) a spinner with the
//! bytes so far and the rate. Nothing at all when stderr is not a terminal, so scripts,
//! CI logs and the tests see only the command's own lines.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use stele_verifier::progress::Progress;

/// The bar template of a step of known size.
const BAR: &str = "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}";
/// A step of unknown size, before and after its first bytes.
const SPINNER: &str = "{spinner} {msg} {elapsed}";
const SPINNER_BYTES: &str = "{spinner} {msg} {bytes} {binary_bytes_per_sec} {elapsed}";

/// The progress of one command on stderr.
#[derive(Debug)]
pub struct Bars {
    enabled: bool,
    bar: Option<ProgressBar>,
    /// The current step has unknown size and has had bytes.
    counting: bool,
}

impl Bars {
    /// Bars when stderr is a terminal, else nothing.
    pub fn stderr() -> Bars {
        Bars {
            enabled: std::io::stderr().is_terminal(),
            bar: None,
            counting: false,
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    // The templates are constants: a parse error is a bug, shown as indicatif's default.
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Progress for Bars {
    fn start(&mut self, what: &str, total: Option<u64>) {
        self.finish();
        if !self.enabled {
            return;
        }
        let target = ProgressDrawTarget::stderr();
        let bar = match total {
            Some(len) => ProgressBar::with_draw_target(Some(len), target).with_style(style(BAR)),
            None => {
                let b = ProgressBar::with_draw_target(None, target).with_style(style(SPINNER));
                b.enable_steady_tick(Duration::from_millis(120));
                b
            }
        };
        bar.set_message(what.to_string());
        self.bar = Some(bar);
        self.counting = false;
    }

    fn advance(&mut self, bytes: u64) {
        let Some(b) = &self.bar else { return };
        if b.length().is_none() && !self.counting && bytes > 0 {
            b.set_style(style(SPINNER_BYTES));
            self.counting = true;
        }
        b.inc(bytes);
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        self.finish();
    }
}

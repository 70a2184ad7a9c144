//! THE description of the `stele update` commands: each command's name, arguments and help,
//! each option's help and default. Both front-ends are made from it: the device binary's
//! hand-written parser and its `--help` ([`help`]), and the host CLI's clap definitions
//! (src/update.rs takes every `about`, `help` and default from here). Pure.

use crate::remote::{DEFAULT_DEADLINE_SECS, DEFAULT_MAX_TIME_SECS, DEFAULT_TIMEOUT_SECS};

/// One `stele update` command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cmd {
    pub name: &'static str,
    /// Its arguments and options, as the usage shows them.
    pub args: &'static str,
    /// What it does (one or two sentences).
    pub about: &'static str,
}

/// One option of the fetch commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opt {
    pub long: &'static str,
    pub value: &'static str,
    pub help: &'static str,
}

pub const INSTALL: Cmd = Cmd {
    name: "install",
    args: "BUNDLE|-|URL [--max-rate RATE] [--deadline S] [--max-time S] [--timeout S]",
    about: "Verify a signed slot image and write it to the slot that is not running; the boot \
            state then boots it next (3 tries, not yet good). BUNDLE is a file or block \
            device, `-` reads stdin; an http(s):// URL is fetched as a delta (only the blocks \
            this device lacks), resuming where a cut left off.",
};
pub const STATUS: Cmd = Cmd {
    name: "status",
    args: "[--json]",
    about: "Show both slots (image, priority, tries, good), the booted slot and the rollback \
            floor.",
};
pub const MARK_GOOD: Cmd = Cmd {
    name: "mark-good",
    args: "",
    about: "Mark the booted slot good, raising the rollback floor (on the device only).",
};
pub const PLAN: Cmd = Cmd {
    name: "plan",
    args: "URL|FILE [--timeout S]",
    about: "What an install of URL (or a slot image file) would fetch and reuse, as a delta \
            from the running slot; writes nothing.",
};
pub const CHECK: Cmd = Cmd {
    name: "check",
    args: "--channel URL [--timeout S]",
    about: "Check the signed update channel: what it offers and whether this device's wave is \
            due (on the device only); changes nothing.",
};
pub const APPLY: Cmd = Cmd {
    name: "apply",
    args: "--channel URL [--max-rate RATE] [--deadline S] [--max-time S] [--timeout S]",
    about: "Check the channel, then install the release it offers (on the device only).",
};
pub const STAGE1: Cmd = Cmd {
    name: "stage1",
    args: "UKI.efi|-",
    about: "Replace the stage-1 UKI (\\EFI\\BOOT\\BOOTX64.EFI) on the EFI system partition: \
            written beside the old one, flushed, then switched in one write; `-` reads stdin.",
};

pub const HISTORY: Cmd = Cmd {
    name: "history",
    args: "[--json]",
    about: "List the flight recorder's events, oldest first, one line each: every boot's \
            slot, release and outcome (verified, refused and why, fell back, the health \
            command's failure and output, marked good) and every install and channel check.",
};
pub const WHY: Cmd = Cmd {
    name: "why",
    args: "",
    about: "Explain the last fallback or refusal in one paragraph, with its evidence from the \
            flight recorder: the slot and release, its tries, the health command's status \
            and output or the refusal's cause, what runs since, and what to do.",
};

pub const REPORT: Cmd = Cmd {
    name: "report",
    args: "[--send] [--json]",
    about: "Show the reports kept for the collector the booted image names (system.toml \
            [report]): the device id, the URL, the next report's first event, the kept \
            reports. With --send, make a report of the flight recorder's events since the \
            last one and both slots' states, then send every kept report, oldest first (on \
            the device only; PID 1 runs it after marking a slot good, an install after it \
            flipped, mark-good after it).",
};

/// `stele data reset`: the one command of the `data` group (on a host: `stele disk
/// reset-data --disk D`, src/disk.rs, with this help).
pub const DATA_RESET: Cmd = Cmd {
    name: "reset",
    args: "",
    about: "Request a fresh data partition (a factory reset): the next boot makes a new \
            filesystem on it before mounting it. Everything on it is lost, the channel \
            state and its rollout seed with it.",
};

/// Every command, in the order the help lists them.
pub const COMMANDS: [Cmd; 10] = [
    INSTALL, STATUS, MARK_GOOD, PLAN, CHECK, APPLY, STAGE1, HISTORY, WHY, REPORT,
];

pub const MAX_RATE: Opt = Opt {
    long: "max-rate",
    value: "RATE",
    help: "Fetch at most RATE bytes per second on average (K, M, G: powers of 1024), for \
           metered links.",
};
pub const DEADLINE: Opt = Opt {
    long: "deadline",
    value: "SECONDS",
    help: "Stop retrying after SECONDS without receiving a byte.",
};
pub const MAX_TIME: Opt = Opt {
    long: "max-time",
    value: "SECONDS",
    help: "End the whole fetch after SECONDS, progress or not (a server trickling bytes \
           cannot keep it running); the target slot keeps what arrived and a new run \
           resumes.",
};
pub const TIMEOUT: Opt = Opt {
    long: "timeout",
    value: "SECONDS",
    help: "Cut a request that sends nothing for SECONDS.",
};
pub const CHANNEL: Opt = Opt {
    long: "channel",
    value: "URL",
    help: "The signed channel file: an http:// or https:// URL, or a file.",
};
pub const JSON: Opt = Opt {
    long: "json",
    value: "",
    help: "One JSON object instead of text.",
};

pub const SEND: Opt = Opt {
    long: "send",
    value: "",
    help: "Make a report and send the backlog (report).",
};

/// Every option, in the order the help lists them.
pub const OPTIONS: [Opt; 7] = [MAX_RATE, DEADLINE, MAX_TIME, TIMEOUT, CHANNEL, JSON, SEND];

/// The default of an option, as the help shows it.
fn default_of(o: &Opt) -> Option<u64> {
    match o.long {
        "deadline" => Some(DEFAULT_DEADLINE_SECS),
        "max-time" => Some(DEFAULT_MAX_TIME_SECS),
        "timeout" => Some(DEFAULT_TIMEOUT_SECS),
        _ => None,
    }
}

/// The one-line usage that usage errors end with.
pub fn usage_line() -> String {
    let cmds: Vec<String> = COMMANDS
        .iter()
        .map(|c| {
            format!("stele update {} {}", c.name, c.args)
                .trim_end()
                .to_string()
        })
        .collect();
    format!("usage: {}", cmds.join(" | "))
}

/// Breaks `text` into lines of at most `width` characters, each indented by `indent`.
fn wrap(text: &str, indent: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && indent.len() + line.len() + 1 + word.len() > width {
            out.push_str(&format!("{indent}{line}\n"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(&format!("{indent}{line}\n"));
    }
    out
}

/// `stele update --help` on the device.
pub fn help() -> String {
    let mut out = String::from(
        "stele update: A/B updates on the device (this `stele` is stele-init, multi-call)\n\nusage:\n",
    );
    for c in COMMANDS {
        // A long usage continues on lines of its own, indented deeper.
        let usage = wrap(&format!("stele update {} {}", c.name, c.args), "    ", 92);
        out.push_str(&format!("  {}", usage.trim_start()));
        out.push_str(&wrap(c.about, "      ", 92));
    }
    let c = DATA_RESET;
    out.push_str(&format!("  stele data {}\n", c.name));
    out.push_str(&wrap(c.about, "      ", 92));
    out.push_str("\noptions:\n");
    for o in OPTIONS {
        let head = format!("  --{} {}", o.long, o.value);
        out.push_str(head.trim_end());
        out.push('\n');
        let help = match default_of(&o) {
            Some(d) => format!("{} Default: {d}.", o.help),
            None => o.help.to_string(),
        };
        out.push_str(&wrap(&help, "      ", 92));
    }
    out.push_str("\nexit codes: 0 ok, 1 refused, 2 usage, 3 environment\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_help_names_every_command_and_option_with_its_default() {
        let h = help();
        for c in COMMANDS {
            assert!(h.contains(&format!("stele update {}", c.name)), "{h}");
            let first_words: String = c
                .about
                .split_whitespace()
                .take(4)
                .collect::<Vec<_>>()
                .join(" ");
            assert!(h.contains(&first_words), "{first_words}: {h}");
        }
        assert!(
            h.contains("stele data reset\n      Request a fresh data partition"),
            "{h}"
        );
        for o in OPTIONS {
            assert!(h.contains(&format!("--{}", o.long)), "{h}");
        }
        assert!(
            h.contains(&format!("Default: {DEFAULT_DEADLINE_SECS}.")),
            "{h}"
        );
        assert!(
            h.contains(&format!("Default: {DEFAULT_TIMEOUT_SECS}.")),
            "{h}"
        );
        // Wrapped anywhere: compare the words.
        let words = h.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            words.contains(&format!("Default: {DEFAULT_MAX_TIME_SECS}.")),
            "{h}"
        );
        assert!(h.lines().all(|l| l.len() <= 92), "{h}");
        let u = usage_line();
        assert!(u.starts_with("usage: stele update install"), "{u}");
        assert!(u.contains("| stele update mark-good |"), "{u}");
    }
}

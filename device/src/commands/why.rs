//! `stele update why`: the last fallback or refusal the flight recorder holds, explained in
//! one paragraph with its evidence (the slot and release, the tries it had, each boot's
//! health command and its output, how its boots ended where the platform told (a watchdog
//! reset, a kernel panic: docs/BOOT.md "Why the last boot ended"), the cause a refusal
//! named, what the device runs since, and what to do). Pure over the events and the boot
//! state.

use stele_verifier::recorder::{Event, Kind};
use stele_verifier::state::{BootState, Slot};

use super::history::{ended, slot_words, when};

/// The kinds `why` explains, the newest first.
fn notable(k: Kind) -> bool {
    matches!(
        k,
        Kind::FellBack
            | Kind::Refused
            | Kind::NoBootableSlot
            | Kind::InstallRefused
            | Kind::WatchdogReset
            | Kind::Panic
            | Kind::Oops
            | Kind::VerityRestart
    )
}

/// What a boot that ended without a record may have been.
const NO_RECORD: &str = "ended without a record (a power cut, a hang without a watchdog, a dm-verity corruption restart, or a reset the hardware does not report)";

/// The events of `events` that say how a boot of `slot` ended: each ending is about the
/// boot before it, i.e. the slot the last `verified` event before it names. Pure.
fn endings_of(events: &[Event], slot: Slot) -> Vec<&Event> {
    let mut booted = None;
    let mut out = Vec::new();
    for e in events {
        if e.kind == Kind::Verified {
            booted = e.slot;
        } else if ended(e).is_some() && booted == Some(slot) {
            out.push(e);
        }
    }
    out
}

/// `a kernel panic (...), a watchdog reset`: the endings in words, a repeat as `×n`. Pure.
fn endings_words(endings: &[&Event]) -> String {
    let mut words: Vec<(String, usize)> = Vec::new();
    for w in endings.iter().filter_map(|e| ended(e)) {
        match words.iter_mut().find(|(x, _)| *x == w) {
            Some((_, n)) => *n += 1,
            None => words.push((w, 1)),
        }
    }
    let list: Vec<String> = words
        .into_iter()
        .map(|(w, n)| if n > 1 { format!("{w} ×{n}") } else { w })
        .collect();
    list.join(", ")
}

/// The version the events before `upto` last named for `slot`.
fn version_of(events: &[Event], slot: Slot) -> Option<&str> {
    events
        .iter()
        .rev()
        .filter(|e| e.slot == Some(slot))
        .find_map(|e| e.release.as_ref().map(|r| r.version.as_str()))
}

/// Where the slot's current release began: the events after its last finished install.
fn since_install(events: &[Event], slot: Slot) -> &[Event] {
    let start = events
        .iter()
        .rposition(|e| e.kind == Kind::InstallFinished && e.slot == Some(slot))
        .map_or(0, |i| i + 1);
    &events[start..]
}

/// The last `n` non-empty lines of an output, joined by ` / `. Pure.
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let from = lines.len().saturating_sub(n);
    stele_verifier::exit::error_line(&lines[from..].join(" / "))
}

/// What the health command events say: `each boot's health command `c` exited 1 (last
/// output: ...)`. The event's text is the command, a newline, its output's tail.
fn health_words(failures: &[&Event], boots: usize) -> Option<String> {
    let last = failures.last()?;
    let (cmd, output) = last.text.split_once('\n').unwrap_or((&last.text, ""));
    let status = last
        .status
        .map_or("failed".into(), |s| format!("exited {s}"));
    let every = failures.len() >= boots && boots > 1;
    let who = if every { "each boot's" } else { "its" };
    let mut s = format!("{who} health command `{cmd}` {status}");
    let out = last_lines(output, 3);
    if !out.is_empty() {
        s.push_str(&format!(" (last output: {out})"));
    }
    Some(s)
}

/// What the device runs since the event at `after`, as words: `the device runs slot a
/// (1.0.0) since <time>`.
fn runs_since(events: &[Event], after: usize) -> Option<String> {
    let e = events[after..]
        .iter()
        .find(|e| e.kind == Kind::Verified && e.slot.is_some())?;
    let slot = e.slot?;
    let v = e.release.as_ref().map(|r| r.version.as_str());
    Some(format!(
        "the device runs {} since {}",
        slot_words(slot, v),
        when(e)
    ))
}

/// The paragraph `stele update why` prints. Pure.
pub fn explain(events: &[Event], st: &BootState) -> String {
    let Some(i) = events.iter().rposition(|e| notable(e.kind)) else {
        let mut s =
            String::from("nothing to explain: the flight recorder holds no fallback or refusal");
        if let Some(run) = runs_since(
            events,
            events
                .iter()
                .rposition(|e| e.kind == Kind::Verified)
                .unwrap_or(0),
        ) {
            s.push_str(&format!("; {run}"));
        }
        s.push('.');
        return s;
    };
    let e = &events[i];
    let before = &events[..i];
    let mut parts = Vec::new();
    match (e.kind, e.slot) {
        (Kind::FellBack, Some(slot)) => {
            let window = since_install(before, slot);
            let of = |k: Kind| {
                window
                    .iter()
                    .filter(move |x| x.kind == k && x.slot == Some(slot))
            };
            // A slot with its own kernel is verified by stage 1 and again by stage 2 in
            // one boot: the boots are stage 1's (or stage 2's alone, never both).
            let boots = of(Kind::Verified)
                .filter(|x| x.origin != stele_verifier::recorder::Origin::Stage2)
                .count();
            let name = slot_words(slot, version_of(before, slot));
            let endings = endings_of(window, slot);
            let mut head = if e.count > 0 {
                let count = usize::from(e.count);
                let mut how = endings_words(&endings);
                let unknown = count.saturating_sub(endings.len());
                if how.is_empty() {
                    how = NO_RECORD.to_owned();
                } else if unknown > 0 {
                    how.push_str(&format!("; {unknown} {NO_RECORD}"));
                }
                format!(
                    "{name} was abandoned after {count} boot(s) that ended before it was confirmed healthy: {how}"
                )
            } else {
                format!(
                    "{name} was abandoned after {boots} tr{}",
                    if boots == 1 { "y" } else { "ies" }
                )
            };
            let health: Vec<&Event> = of(Kind::HealthFailed).collect();
            let mut why = Vec::new();
            if let Some(h) = health_words(&health, boots) {
                why.push(h);
            }
            if let Some(t) = of(Kind::TrialFailed).next_back() {
                why.push(format!("its trial ended: {}", t.text));
            }
            if e.count == 0 && !endings.is_empty() {
                why.push(format!("its boots ended in {}", endings_words(&endings)));
            }
            if let Some(r) = of(Kind::Refused).next_back() {
                why.push(format!("it was refused: {}", r.text));
            }
            if !why.is_empty() {
                head.push_str(&format!(": {}", why.join("; ")));
            }
            parts.push(head);
            if let Some(run) = runs_since(events, i) {
                parts.push(run);
            }
            parts.push(remedy(st, slot));
        }
        (Kind::Refused, Some(slot)) => {
            parts.push(format!(
                "{} was refused at boot ({}): {}",
                slot_words(slot, version_of(before, slot)),
                when(e),
                e.text
            ));
            if let Some(run) = runs_since(events, i) {
                parts.push(run);
            }
            parts.push(remedy(st, slot));
        }
        (Kind::WatchdogReset | Kind::Panic | Kind::Oops | Kind::VerityRestart, _) => {
            let boot = before
                .iter()
                .rev()
                .find(|x| x.kind == Kind::Verified)
                .and_then(|x| x.slot.map(|s| slot_words(s, version_of(before, s))));
            let what = ended(e).unwrap_or_default();
            parts.push(match boot {
                Some(b) => format!("the boot of {b} before {} ended in {what}", when(e)),
                None => format!("the boot before {} ended in {what}", when(e)),
            });
            if let Some(run) = runs_since(events, i) {
                parts.push(run);
            }
        }
        (Kind::InstallRefused, _) => {
            parts.push(format!(
                "the install at {} was refused: {}",
                when(e),
                e.text
            ));
            parts.push("nothing was changed: the slots boot as before".into());
        }
        _ => {
            parts.push(format!("no slot could boot at {}: {}", when(e), e.text));
            parts.push("the failure action of boot.toml ran".into());
        }
    }
    let mut s = parts.join("; ");
    s.push('.');
    s
}

/// What to do about `slot`, from the state now. Pure.
fn remedy(st: &BootState, slot: Slot) -> String {
    let n = slot.name();
    if st.slot(slot).bootable() {
        format!("slot {n} may still boot (it has tries left or is marked good)")
    } else {
        format!(
            "install a release that fixes it (`stele update install`): slot {n} is not booted again until an install replaces it"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stele_verifier::recorder::{Origin, Release};
    use stele_verifier::testutil::state;

    fn ev(kind: Kind, slot: Slot, version: Option<&str>) -> Event {
        Event {
            wall_secs: Some(1_796_000_000),
            slot: Some(slot),
            release: version.map(|v| Release {
                version: v.into(),
                rollback_index: 2,
                digest: [1; 8],
            }),
            ..Event::new(Origin::Stage1, kind)
        }
    }

    fn health(status: i32) -> Event {
        Event {
            status: Some(status),
            text: "/usr/bin/check\nchecking\nno route to host\n".into(),
            ..ev(Kind::HealthFailed, Slot::B, Some("2.0.0"))
        }
    }

    #[test]
    fn a_trial_whose_health_command_fails_three_times() {
        let mut events = vec![
            ev(Kind::Verified, Slot::A, Some("1.0.0")),
            ev(Kind::InstallFinished, Slot::B, Some("2.0.0")),
        ];
        for _ in 0..3 {
            events.push(ev(Kind::Verified, Slot::B, Some("2.0.0")));
            events.push(health(1));
        }
        events.push(ev(Kind::FellBack, Slot::B, None));
        events.push(ev(Kind::Verified, Slot::A, Some("1.0.0")));
        let st = state((1, 0, true), (2, 0, false));
        assert_eq!(
            explain(&events, &st),
            "slot b (2.0.0) was abandoned after 3 tries: each boot's health command `/usr/bin/check` exited 1 (last output: checking / no route to host); the device runs slot a (1.0.0) since 2026-11-30T00:53:20Z; install a release that fixes it (`stele update install`): slot b is not booted again until an install replaces it."
        );
    }

    #[test]
    fn a_refusal_an_install_refusal_and_nothing() {
        let mut refused = ev(Kind::Refused, Slot::B, None);
        refused.text = "bad signature by key k1: the manifest or the signature was modified".into();
        let events = vec![
            ev(Kind::InstallFinished, Slot::B, Some("3.1")),
            refused,
            ev(Kind::Verified, Slot::A, Some("1.0.0")),
        ];
        let st = state((1, 0, true), (0, 0, false));
        let s = explain(&events, &st);
        assert!(
            s.starts_with(
                "slot b (3.1) was refused at boot (2026-11-30T00:53:20Z): bad signature by key k1"
            ),
            "{s}"
        );
        assert!(s.contains("the device runs slot a (1.0.0) since"), "{s}");
        let mut ir = Event::new(Origin::Update, Kind::InstallRefused);
        ir.text = "rollback".into();
        assert!(
            explain(&[ir], &st).starts_with("the install at an unknown time was refused: rollback")
        );
        let only = [ev(Kind::Verified, Slot::A, Some("1.0.0"))];
        assert_eq!(
            explain(&only, &st),
            "nothing to explain: the flight recorder holds no fallback or refusal; the device runs slot a (1.0.0) since 2026-11-30T00:53:20Z."
        );
        assert!(explain(&[], &st).starts_with("nothing to explain"));
    }

    fn ending(kind: Kind, text: &str) -> Event {
        Event {
            slot: None,
            text: text.into(),
            ..ev(kind, Slot::A, None)
        }
    }

    #[test]
    fn a_good_slot_abandoned_after_a_panic_and_a_boot_without_a_record() {
        let events = vec![
            ev(Kind::Verified, Slot::A, Some("1.0.0")),
            ending(
                Kind::Panic,
                "Kernel panic - not syncing: sysrq triggered crash\nCall Trace:",
            ),
            ev(Kind::Verified, Slot::A, Some("1.0.0")),
            Event {
                count: 2,
                ..ev(Kind::FellBack, Slot::A, None)
            },
            ev(Kind::Verified, Slot::B, Some("0.9.0")),
        ];
        let st = state((1, 0, true), (2, 0, true));
        let s = explain(&events, &st);
        assert!(
            s.starts_with("slot a (1.0.0) was abandoned after 2 boot(s) that ended before it was confirmed healthy: a kernel panic (Kernel panic - not syncing: sysrq triggered crash); 1 ended without a record (a power cut"),
            "{s}"
        );
        // Nothing recorded at all: said so, with what it may have been.
        let quiet = [events[0].clone(), events[2].clone(), events[3].clone()];
        assert!(
            explain(&quiet, &st).contains(
                "confirmed healthy: ended without a record (a power cut, a hang without a watchdog"
            ),
            "{}",
            explain(&quiet, &st)
        );
    }

    #[test]
    fn a_trial_ended_by_watchdog_resets_and_a_panic_the_slot_survived() {
        let mut events = vec![ev(Kind::InstallFinished, Slot::B, Some("2.0.0"))];
        for _ in 0..3 {
            events.push(ev(Kind::Verified, Slot::B, Some("2.0.0")));
            events.push(ending(Kind::WatchdogReset, ""));
        }
        events.push(ev(Kind::FellBack, Slot::B, None));
        events.push(ev(Kind::Verified, Slot::A, Some("1.0.0")));
        let st = state((1, 0, true), (0, 0, false));
        let s = explain(&events, &st);
        assert!(
            s.starts_with("slot b (2.0.0) was abandoned after 3 tries: its boots ended in a watchdog reset ×3; the device runs slot a (1.0.0)"),
            "{s}"
        );
        let later = [
            ev(Kind::Verified, Slot::A, Some("1.0.0")),
            ending(Kind::Panic, "Kernel panic - not syncing: Fatal exception"),
            ev(Kind::Verified, Slot::A, Some("1.0.0")),
        ];
        assert_eq!(
            explain(&later, &st),
            "the boot of slot a (1.0.0) before 2026-11-30T00:53:20Z ended in a kernel panic (Kernel panic - not syncing: Fatal exception); the device runs slot a (1.0.0) since 2026-11-30T00:53:20Z."
        );
    }
}

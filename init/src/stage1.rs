//! Stage 1 (boot.toml `stage = 1`, started by the firmware or a boot loader): choose a
//! slot, spend its try or count a good slot's unconfirmed boot ([`crate::attempts`];
//! written and flushed before anything is mounted), verify, map,
//! mount the lower layer; then hand over to the slot's own kernel with kexec
//! ([`crate::handoff`]) or, when it has none or it is the running one, carry on in place.
//! A refused slot is marked (when it is its fault) and the other one tried in the same
//! boot; with none left, the failure action runs. A kexec refused by this boot's
//! lockdown/IMA command-line options gives the slot's try back (nothing kept on disk).

use stele_verifier::recorder::{Kind, Origin};
use stele_verifier::state::Slot;

use crate::boot::{exhausted, fail, finish, next_slot, no_slot_cause, write_state, Booted, Ready};
use crate::devices::BlockDev;
use crate::mapped::{self, Refusal};
use crate::{attempts, error, flight, handoff, info, lastboot, reset, warn, watchdog};
use stele_verifier::layout::Role;

const ORIGIN: Origin = Origin::Stage1;

/// Stage 1 from a ready state to switch root (or into the slot's kernel).
pub fn run(mut r: Ready) -> Booted {
    let (action, delay) = (r.cfg.on_failure, r.cfg.failure_delay_secs);
    let mut tried: Vec<Slot> = Vec::new();
    let mut causes: Vec<String> = Vec::new();
    lastboot::record(&mut r.state, ORIGIN);
    while let Some(s) = next_slot(&r.st, r.cmdline.slot, &tried) {
        if tried.is_empty() {
            if let Some(x) = exhausted(&r.st, s) {
                info!("slot={} exhausted, falling back to {}", x.name(), s.name());
                flight::record(&mut r.state, &flight::event(ORIGIN, Kind::FellBack, x));
            }
            if let Some(line) = attempts::fell_back(&r.st, s) {
                warn!("{line}");
                let x = s.other();
                let mut e = flight::event(ORIGIN, Kind::FellBack, x);
                e.count = r.st.slot(x).unconfirmed;
                flight::record(&mut r.state, &e);
            }
        }
        if let Some((line, wait)) = attempts::degraded(&r.st, s, delay) {
            warn!("{line}");
            let mut e = flight::event(ORIGIN, Kind::Unconfirmed, s);
            e.count = r.st.slot(s).unconfirmed;
            // A good slot that keeps failing stops costing state writes at 255 boots
            // (BootState::begin_boot); so does its record.
            if e.count < u8::MAX {
                flight::record(&mut r.state, &e);
            }
            watchdog::sleep(wait);
        }
        tried.push(s);
        let was_successful = r.st.slot(s).successful;
        let before = *r.st.slot(s);
        r.st.begin_boot(s);
        if *r.st.slot(s) != before {
            // A try that is not on disk would never run out: boot counting could not fall
            // back. Such a slot is not booted. An unconfirmed boot of a good slot that is
            // not on disk only means the next boot cannot know it: the slot boots.
            if let Err(e) = write_state(&mut r.state, &mut r.st) {
                if was_successful {
                    warn!("slot={}: its boot could not be recorded: {e}", s.name());
                } else {
                    error!(
                        "refused slot {}: its try could not be recorded: {e}",
                        s.name()
                    );
                    causes.push(format!("slot {}: try not recorded: {e}", s.name()));
                    let ev = flight::refused(ORIGIN, Kind::Refused, Some(s), &e);
                    flight::record(&mut r.state, &ev);
                    continue;
                }
            }
        }
        let floor = r.floors.effective();
        let tpm = r.tpm.tpm();
        let count = if was_successful {
            r.st.slot(s).unconfirmed
        } else {
            r.st.slot(s).tries_remaining
        };
        let data = r.parts.get(Role::Data).map(BlockDev::path);
        let state = &mut r.state;
        let booted = mapped::map(s, &r.parts, &r.cfg, &r.keyring, floor, tpm, &mut r.clock)
            .and_then(|m| {
                flight::record(state, &flight::verified(ORIGIN, s, &m.manifest, count));
                let policy = &r.cmdline.policy;
                let mut kexec = || flight::record(state, &flight::event(ORIGIN, Kind::Kexec, s));
                handoff::hand_over(m, &r.cfg, policy, &mut r.clock, r.start, &mut kexec)
            })
            .and_then(|m| {
                reset::before_mount(&mut r.state, data.as_deref(), ORIGIN);
                m.mount_rest(&r.cfg, &r.parts, &mut r.clock)
            });
        match booted {
            Ok(m) => return finish(r, m, was_successful),
            Err(Refusal { error, mark }) => {
                error!("refused slot {}: {error}", s.name());
                causes.push(format!("slot {}: {error}", s.name()));
                let ev = flight::refused(ORIGIN, Kind::Refused, Some(s), &error);
                flight::record(&mut r.state, &ev);
                if mark {
                    r.st.mark_unbootable(s);
                    // Logged inside; the other slot is tried either way.
                    let _ = write_state(&mut r.state, &mut r.st);
                } else if error.is_this_boots_policy() && *r.st.slot(s) != before {
                    // Nothing of the slot was tried: its try (or unconfirmed boot) is
                    // given back, so that nothing on disk stops it once the option is gone.
                    *r.st.slot_mut(s) = before;
                    if write_state(&mut r.state, &mut r.st).is_ok() {
                        info!("slot={}: try given back (this boot's kernel policy refused its kernel, not the slot)", s.name());
                    }
                }
            }
        }
    }
    let cause = no_slot_cause(&r.st, &causes);
    let mut e = stele_device::runtime::flight::event(ORIGIN, Kind::NoBootableSlot);
    e.text = cause.clone();
    flight::record(&mut r.state, &e);
    fail(action, delay, &cause)
}

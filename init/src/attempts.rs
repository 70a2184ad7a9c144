//! What one boot of a slot records before anything is mounted, and what the next boot
//! makes of it (docs/BOOT.md, "Verity errors and unconfirmed boots").
//!
//! A slot on trial spends a try; a good slot counts one unconfirmed boot
//! (`BootState::begin_boot`), cleared when the slot is marked good on this boot. A
//! dm-verity corruption restart (`restart_on_corruption`: the kernel restarts at once and
//! x86 keeps no reason across it), a panic, a hang or a power cut before that leaves the
//! count above 0: the next boot prefers the other slot if it can boot
//! (`BootState::choose`), and boots the failing one anyway, logged and after a delay,
//! when it cannot. How a slot that fails to mount is judged is here too: only a
//! filesystem the kernel finds invalid is the slot's fault; I/O errors and lack of memory
//! are not, so they never mark a slot bad.

use std::time::Duration;

use stele_verifier::state::{BootState, Slot};

use crate::Error;

/// Why a good slot's boot may have ended before it was confirmed, as the console says it.
pub const CAUSES: &str = "a dm-verity corruption restart, a panic, a hang or a power cut";

/// When `chosen` is not the top-priority slot because that one is a good slot whose last
/// boot was not confirmed, the line saying so. Pure.
pub fn fell_back(st: &BootState, chosen: Slot) -> Option<String> {
    let other = chosen.other();
    let (o, c) = (st.slot(other), st.slot(chosen));
    let outranks = o.priority > c.priority || (o.priority == c.priority && other == Slot::A);
    (o.bootable() && o.failing() && outranks).then(|| {
        format!(
            "slot={} failed {} boot(s) before it was confirmed healthy ({CAUSES}); falling back to {}",
            other.name(),
            o.unconfirmed,
            chosen.name()
        )
    })
}

/// When `chosen` itself failed its last boot(s) and is booted because no other slot can,
/// the line saying so and how long to wait first: nothing after one such boot (a power
/// cut), `failure_delay_secs` after two or more in a row, so that a slot that keeps
/// restarting boots at a bounded rate (and stops costing state writes at 255). Pure.
pub fn degraded(
    st: &BootState,
    chosen: Slot,
    failure_delay_secs: u64,
) -> Option<(String, Duration)> {
    let c = st.slot(chosen);
    c.failing().then(|| {
        let wait = if c.unconfirmed >= 2 {
            Duration::from_secs(failure_delay_secs)
        } else {
            Duration::ZERO
        };
        let line = format!(
            "slot={} failed {} boot(s) in a row before it was confirmed healthy ({CAUSES}) and no other slot can boot: booting it anyway in {}s",
            chosen.name(),
            c.unconfirmed,
            wait.as_secs()
        );
        (line, wait)
    })
}

/// True when a failed mount of the verified lower filesystem is the slot's fault: the
/// kernel found the (signed, dm-verity checked) filesystem invalid. A read error (EIO: a
/// failing or transient device; with `restart_on_corruption` a corrupted block restarts
/// the machine instead), no memory, an unknown filesystem type (a module missing from the
/// initramfs) or anything else is the system's, and does not mark the slot. Pure.
pub fn mount_is_slot_fault(e: &Error) -> bool {
    use nix::errno::Errno;
    matches!(
        e,
        Error::Sys {
            errno: Errno::EINVAL | Errno::EUCLEAN | Errno::EBADMSG,
            ..
        }
    )
}

/// True when a refused verification is the system's fault, not the slot's: the device
/// could not be read, or a region does not fit in memory. Pure.
pub fn verify_is_system_fault(e: &stele_verifier::Error) -> bool {
    matches!(
        e,
        stele_verifier::Error::Io { .. } | stele_verifier::Error::NoMemory { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use stele_verifier::state::SlotState;

    fn good(priority: u8, unconfirmed: u8) -> SlotState {
        SlotState {
            priority,
            tries_remaining: 0,
            successful: true,
            unconfirmed,
        }
    }

    fn with(a: SlotState, b: SlotState) -> BootState {
        BootState {
            sequence: 1,
            rollback_floor: 0,
            slots: [a, b],
        }
    }

    #[test]
    fn a_good_slot_whose_boot_was_not_confirmed_gives_way() {
        let st = with(good(2, 1), good(1, 0));
        assert_eq!(st.choose(), Some(Slot::B));
        let line = fell_back(&st, Slot::B).unwrap();
        assert_eq!(
            line,
            "slot=a failed 1 boot(s) before it was confirmed healthy (a dm-verity corruption restart, a panic, a hang or a power cut); falling back to b"
        );
        assert_eq!(degraded(&st, Slot::B, 10), None);
        // Nothing to say when the order is the plain priority order.
        assert_eq!(fell_back(&with(good(2, 0), good(1, 0)), Slot::A), None);
        assert_eq!(fell_back(&with(good(2, 1), good(1, 0)), Slot::A), None);
    }

    #[test]
    fn with_no_other_slot_the_failing_one_boots_at_a_bounded_rate() {
        let dead = SlotState::default();
        let once = with(good(2, 1), dead);
        assert_eq!(once.choose(), Some(Slot::A));
        let (line, wait) = degraded(&once, Slot::A, 10).unwrap();
        assert_eq!(
            wait,
            Duration::ZERO,
            "one unconfirmed boot may be a power cut"
        );
        assert!(
            line.starts_with("slot=a failed 1 boot(s) in a row"),
            "{line}"
        );
        assert!(
            line.ends_with("no other slot can boot: booting it anyway in 0s"),
            "{line}"
        );
        let (_, wait) = degraded(&with(good(2, 7), dead), Slot::A, 10).unwrap();
        assert_eq!(wait, Duration::from_secs(10));
    }

    #[test]
    fn only_an_invalid_filesystem_is_the_slots_fault() {
        use nix::errno::Errno;
        let mount = |errno| Error::sys("mount", "/run/stele/lower (erofs)", errno);
        for errno in [Errno::EINVAL, Errno::EUCLEAN, Errno::EBADMSG] {
            assert!(mount_is_slot_fault(&mount(errno)), "{errno}");
        }
        for errno in [Errno::EIO, Errno::ENOMEM, Errno::ENODEV, Errno::EBUSY] {
            assert!(!mount_is_slot_fault(&mount(errno)), "{errno}");
        }
        let no_memory = stele_verifier::Error::NoMemory {
            what: "verity hash tree",
            bytes: 1 << 40,
        };
        assert!(verify_is_system_fault(&no_memory));
        assert!(verify_is_system_fault(&stele_verifier::Error::io(
            "slot",
            std::io::Error::other("EIO")
        )));
        assert!(!verify_is_system_fault(&stele_verifier::Error::Rollback {
            index: 1,
            floor: 2
        }));
    }
}

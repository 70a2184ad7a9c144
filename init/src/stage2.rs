//! Stage 2 (boot.toml `stage = 2`: the slot's own stele-init under the slot's own kernel,
//! started only by stage 1's kexec): boots exactly the slot named by `stele.stage2=<a|b>`,
//! verifies it again with its own keys against the rollback floor (state, TPM, initramfs), spends no try
//! and never kexecs. Refused, the slot is marked (when it is its fault) and the failure
//! action runs: the reboot brings stage 1 back, which chooses again.

use stele_verifier::recorder::{Kind, Origin};

use crate::boot::{fail, finish, write_state, Booted, Ready};
use crate::devices::BlockDev;
use crate::mapped::{self, Refusal};
use crate::{error, flight, reset, Error};
use stele_verifier::layout::Role;

/// Why a stage-2 initramfs refuses to boot without `stele.stage2=`.
pub const NO_SLOT: &str = "this is a stage-2 initramfs (boot.toml stage = 2), started only by stage 1 with stele.stage2=<a|b> on the kernel command line, and that option is missing: boot stage 1 instead";

/// Stage 2 from a ready state to switch root.
pub fn run(mut r: Ready) -> Booted {
    let (action, delay) = (r.cfg.on_failure, r.cfg.failure_delay_secs);
    let Some(s) = r.cmdline.stage2 else {
        fail(action, delay, NO_SLOT)
    };
    // The try was spent by stage 1; the record says whether the slot is on trial.
    let was_successful = r.st.slot(s).successful;
    let floor = r.floors.effective();
    let tpm = r.tpm.tpm();
    let count = r.st.slot(s).tries_remaining;
    let data = r.parts.get(Role::Data).map(BlockDev::path);
    let state = &mut r.state;
    let booted = mapped::map(s, &r.parts, &r.cfg, &r.keyring, floor, tpm, &mut r.clock)
        .inspect(|m| {
            let e = flight::verified(Origin::Stage2, s, &m.manifest, count);
            flight::record(state, &e);
        })
        .and_then(|m| {
            reset::before_mount(&mut r.state, data.as_deref(), Origin::Stage2);
            m.mount_rest(&r.cfg, &r.parts, &mut r.clock)
        });
    match booted {
        Ok(m) => finish(r, m, was_successful),
        Err(Refusal { error, mark }) => {
            error!("refused slot {}: {error}", s.name());
            let e = flight::refused(Origin::Stage2, Kind::Refused, Some(s), &error);
            flight::record(&mut r.state, &e);
            if mark {
                r.st.mark_unbootable(s);
                let _ = write_state(&mut r.state, &mut r.st);
            }
            let cause = format!("slot {}: {}", s.name(), Error::to_string(&error));
            fail(action, delay, &cause)
        }
    }
}

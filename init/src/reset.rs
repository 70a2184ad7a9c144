//! The factory reset at boot (docs/BOOT.md "Factory reset"): before the data partition is
//! mounted, a request on the state partition (`stele data reset`, `stele disk
//! reset-data`) is carried out by the initramfs's mke2fs (a fresh ext4 over the whole
//! partition, flushed), and only then cleared: the order is `data_reset::at_boot`'s, so a
//! power cut anywhere leaves the old data or a request the next boot carries out again.
//! Only after the slot verified and mapped, and never from the kernel command line. A
//! failure is one console line; the boot goes on with the partition as it is.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use stele_device::runtime::state_file::StateFile;
use stele_verifier::data_reset::{self, at_boot, By, Found, Machine, Outcome};
use stele_verifier::layout::MKE2FS;
use stele_verifier::recorder::{tail, Kind, Origin, TEXT_MAX};

use crate::{flight, info, sys, warn};

/// Where mke2fs's output goes (read back when it fails; it stays in /run afterwards).
const OUTPUT: &str = "/run/stele-reset.out";

struct Boot<'a> {
    state: &'a mut StateFile<File>,
    data: &'a str,
}

/// Runs `argv` as a clean child (own session, empty mask) with stdout and stderr in
/// [`OUTPUT`], and waits for it.
fn run(argv: &[String]) -> Result<(), String> {
    let out = File::create(OUTPUT).map_err(|e| format!("{OUTPUT}: {e}"))?;
    let err = out.try_clone().map_err(|e| format!("{OUTPUT}: {e}"))?;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let pid = sys::spawn(&mut cmd, None).map_err(|e| format!("starting {}: {e}", argv[0]))?;
    let said = || {
        let text = std::fs::read(OUTPUT).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        tail(text.trim(), TEXT_MAX / 2).replace('\n', " ")
    };
    match waitpid(Pid::from_raw(pid), None) {
        Ok(WaitStatus::Exited(_, 0)) => Ok(()),
        Ok(WaitStatus::Exited(_, code)) => Err(format!("mke2fs exited {code}: {}", said())),
        Ok(WaitStatus::Signaled(_, sig, _)) => Err(format!("mke2fs killed by {sig}: {}", said())),
        Ok(other) => Err(format!("mke2fs: {other:?}")),
        Err(e) => Err(format!("waiting for mke2fs: {e}")),
    }
}

impl Machine for Boot<'_> {
    fn request(&mut self) -> Result<Found, String> {
        self.state.reset_request().map_err(|e| e.to_string())
    }

    fn make_fs(&mut self) -> Result<(), String> {
        if !Path::new(MKE2FS).exists() {
            return Err(format!(
                "this initramfs has no {MKE2FS} (made by an older `stele initramfs`): rebuild it with this stele"
            ));
        }
        info!(
            "data partition {}: factory reset requested: making a fresh ext4",
            self.data
        );
        run(&data_reset::mke2fs_argv(self.data))?;
        File::open(self.data)
            .and_then(|f| f.sync_all())
            .map_err(|e| format!("flushing {}: {e}", self.data))
    }

    fn clear(&mut self) -> Result<(), String> {
        self.state.clear_reset().map_err(|e| e.to_string())
    }
}

/// Who asked, in words.
fn by(b: By) -> &'static str {
    match b {
        By::Device => "`stele data reset` on the device",
        By::Host => "`stele disk reset-data` on a host",
    }
}

/// Carries out a data reset request before the data partition `data` is mounted (none:
/// nothing to do), with one console line and one flight recorder event for what happened.
pub fn before_mount(state: &mut StateFile<File>, data: Option<&str>, origin: Origin) {
    let Some(data) = data else {
        return;
    };
    let outcome = at_boot(&mut Boot { state, data });
    let (kind, text) = match outcome {
        Outcome::Nothing => return,
        Outcome::Reset(r) => {
            info!(
                "data partition {data}: fresh filesystem made (factory reset requested by {})",
                by(r.by)
            );
            (
                Kind::DataReset,
                format!("{data}: fresh ext4, requested by {}", by(r.by)),
            )
        }
        Outcome::ClearedDamaged => {
            warn!("data partition {data}: a damaged reset request (a `stele data reset` cut short) was cleared; nothing reset");
            return;
        }
        Outcome::Failed { cause, .. } => {
            warn!("data partition {data}: factory reset failed: {cause}; the request stays, the next boot tries again");
            (Kind::DataResetFailed, cause)
        }
    };
    let mut e = stele_device::runtime::flight::event(origin, kind);
    e.text = tail(&text, TEXT_MAX).to_string();
    flight::record(state, &e);
}

//! Stage 1's hand-over to the slot's own kernel (docs/BOOT.md "Two stages"): the kernel
//! and stage-2 initramfs the manifest names are opened through the mounted dm-verity
//! filesystem and checked against it (size, sha256); a kernel other than the running one
//! (boot.toml `kernel_sha256`) is loaded with `kexec_file_load` and booted. The decision
//! is a pure function; the rest calls [`crate::sys::kexec`].

use std::ffi::CString;
use std::fs::File;
use std::io::Read;

use sha2::{Digest, Sha256};
use stele_verifier::config::BootConfig;
use stele_verifier::hex;
use stele_verifier::manifest::{KernelFile, KernelInfo};
use stele_verifier::state::Slot;

use crate::mapped::{slot_fault, system_fault, Clock, Mapped, Refusal};
use crate::mounts::LOWER;
use crate::sys::{self, kexec};
use crate::{info, Error};

/// What stage 1 does with a verified, mounted slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The manifest names no kernel: carry on in place under the running kernel.
    NoKernel,
    /// The slot's kernel is the running one (byte for byte): carry on in place.
    SameKernel,
    /// Boot the slot's kernel with kexec.
    Kexec,
}

/// The decision for a slot with `kernel` when this initramfs runs under `running`. Pure.
pub fn decide(kernel: Option<&KernelInfo>, running: Option<&[u8; 32]>) -> Decision {
    match kernel {
        None => Decision::NoKernel,
        Some(k) if running == Some(&k.kernel.sha256) => Decision::SameKernel,
        Some(_) => Decision::Kexec,
    }
}

/// How a `kexec_file_load` that failed with `errno` is judged, `policy` being this boot's
/// lockdown/IMA options ([`crate::cmdline::POLICY_OPTIONS`]): EPERM or EACCES under such
/// an option is this boot's policy (not marked, the try given back by stage 1); otherwise
/// an image refusal ([`crate::error::KEXEC_REFUSALS`]) is the slot's, the rest the
/// system's. Pure.
pub fn judge_kexec(errno: nix::errno::Errno, policy: &[String]) -> Refusal {
    use nix::errno::Errno;
    if matches!(errno, Errno::EPERM | Errno::EACCES) && !policy.is_empty() {
        return system_fault(Error::KexecPolicy {
            errno,
            options: policy.join(" "),
        });
    }
    let error = Error::KexecLoad { errno };
    Refusal {
        mark: error.is_kexec_refusal(),
        error,
    }
}

/// The first 12 hex digits of a sha256, as the console shows it. Pure.
pub fn short(sha256: &[u8; 32]) -> String {
    hex::encode(&sha256[..6])
}

/// Opens `f` inside the slot's root and checks that it is a regular file of the
/// manifest's size and sha256 (reading it through dm-verity, so every block is checked
/// by the kernel too).
fn open_checked(root: &File, f: &KernelFile) -> Result<File, Refusal> {
    let mismatch = |why: String| {
        slot_fault(Error::KernelFile {
            path: f.path.clone(),
            why,
        })
    };
    let mut file = kexec::open_in_root(root, &f.path).map_err(|e| match e {
        Error::Sys {
            errno: nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR,
            ..
        } => mismatch("is missing".into()),
        e => system_fault(e),
    })?;
    let md = file
        .metadata()
        .map_err(|e| system_fault(Error::io("stat", &f.path, e)))?;
    if !md.is_file() || md.len() != f.size {
        return Err(mismatch(format!(
            "is not a regular file of {} bytes as the manifest says",
            f.size
        )));
    }
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| system_fault(Error::io("read", &f.path, e)))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let got: [u8; 32] = h.finalize().into();
    if got != f.sha256 {
        return Err(mismatch(format!(
            "has sha256 {}, the manifest says {}",
            hex::encode(&got),
            hex::encode(&f.sha256)
        )));
    }
    Ok(file)
}

/// After the lower mount: checks the slot's kernel files (when the manifest names them)
/// and, when the kernel is not the running one, boots it: logs
/// `slot=<x> kernel <sha> kexec`, loads it, prints stage 1's phases line, syncs and
/// reboots into it (never returning). Returns the mapped slot to carry on in place, or the
/// refusal (the slot's mount undone). `policy`: this boot's lockdown/IMA options;
/// `on_kexec` runs just before the kernel is loaded (the flight recorder's event).
pub fn hand_over(
    mut m: Mapped,
    cfg: &BootConfig,
    policy: &[String],
    clock: &mut Clock,
    start: std::time::Instant,
    on_kexec: &mut dyn FnMut(),
) -> Result<Mapped, Refusal> {
    let Some(k) = m.manifest.kernel.clone() else {
        return Ok(m);
    };
    let s = m.slot;
    let checked = File::open(LOWER)
        .map_err(|e| system_fault(Error::io("open", LOWER, e)))
        .and_then(|root| {
            Ok((
                open_checked(&root, &k.kernel)?,
                open_checked(&root, &k.initrd)?,
            ))
        });
    clock.lap("kernel");
    let (kernel, initrd) = match checked {
        Ok(files) => files,
        Err(r) => {
            m.undo();
            return Err(r);
        }
    };
    if decide(Some(&k), cfg.kernel_sha256.as_ref()) == Decision::SameKernel {
        info!(
            "slot={} kernel {} is the running kernel: no kexec",
            s.name(),
            short(&k.kernel.sha256)
        );
        return Ok(m);
    }
    on_kexec();
    let r = kexec_into(s, &k, (&kernel, &initrd), (cfg, policy), clock, start);
    // Closed first: open files would keep the lower layer busy.
    drop((kernel, initrd));
    m.undo();
    Err(r)
}

/// Loads and boots the slot's kernel; returns only the reason it did not happen.
fn kexec_into(
    s: Slot,
    k: &KernelInfo,
    (kernel, initrd): (&File, &File),
    (cfg, policy): (&BootConfig, &[String]),
    clock: &mut Clock,
    start: std::time::Instant,
) -> Refusal {
    info!("slot={} kernel {} kexec", s.name(), short(&k.kernel.sha256));
    // The manifest's rules allow printable ASCII only: no NUL inside.
    let Ok(cmdline) = CString::new(k.stage2_cmdline(s, cfg.stage2_panic_secs)) else {
        return slot_fault(Error::KernelFile {
            path: "command line".into(),
            why: "contains a NUL byte".into(),
        });
    };
    if let Err(errno) = kexec::kexec_file_load(kernel, initrd, &cmdline) {
        return judge_kexec(errno, policy);
    }
    clock.lap("kexec");
    info!("{}", clock.phases.line(cfg.stage, start.elapsed()));
    sys::sync();
    system_fault(kexec::reboot_kexec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(sha: u8) -> KernelInfo {
        KernelInfo::at_default_paths((1, [sha; 32]), (1, [9; 32]), String::new())
    }

    #[test]
    fn kexec_only_into_another_kernel() {
        assert_eq!(decide(None, None), Decision::NoKernel);
        assert_eq!(decide(None, Some(&[1; 32])), Decision::NoKernel);
        assert_eq!(decide(Some(&info(1)), Some(&[1; 32])), Decision::SameKernel);
        assert_eq!(decide(Some(&info(1)), Some(&[2; 32])), Decision::Kexec);
        // A stage 1 that does not know its own kernel always hands over.
        assert_eq!(decide(Some(&info(1)), None), Decision::Kexec);
        // The initrd's digest plays no part.
        assert_eq!(decide(Some(&info(9)), Some(&[9; 32])), Decision::SameKernel);
    }

    /// Regression (issue 20): `lockdown=integrity` on one boot's command line made the
    /// kexec refusal mark the slot unbootable for good.
    #[test]
    fn a_kexec_refused_under_a_lockdown_option_is_not_the_slots_fault() {
        use nix::errno::Errno;
        let policy = vec!["lockdown=integrity".to_string()];
        for errno in [Errno::EPERM, Errno::EACCES] {
            let r = judge_kexec(errno, &policy);
            assert!(!r.mark, "{errno}");
            assert!(r.error.is_this_boots_policy(), "{errno}");
            assert!(
                r.error
                    .to_string()
                    .contains("this boot's kernel policy (lockdown=integrity)"),
                "{}",
                r.error
            );
            // Without such an option the same errno is the slot's (Secure Boot's lockdown).
            let r = judge_kexec(errno, &[]);
            assert!(r.mark && !r.error.is_this_boots_policy(), "{errno}");
        }
        // A signature the kernel rejects is the slot's whatever the command line says.
        let r = judge_kexec(Errno::EKEYREJECTED, &policy);
        assert!(r.mark && !r.error.is_this_boots_policy());
        let r = judge_kexec(Errno::ENOMEM, &policy);
        assert!(!r.mark && !r.error.is_this_boots_policy());
    }

    #[test]
    fn short_digest_is_twelve_hex_digits() {
        assert_eq!(short(&[0xab; 32]), "abababababab");
    }
}

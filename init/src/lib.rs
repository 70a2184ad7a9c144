//! stele-init: the static PID 1 that verifies an A/B slot, maps it through dm-verity,
//! switches into it and supervises the image's services.
//!
//! Pure decisions (configuration, mount plans, dm payloads, slot and restart choices) live
//! apart from side effects and are unit-tested on the host; every `unsafe` block is in
//! [`sys`].

#![deny(unsafe_code)]

pub mod boot;
pub mod cmdline;
pub mod console;
pub mod devices;
pub mod error;
pub mod handoff;
pub mod mapped;
pub mod modules;
pub mod mounts;
pub mod stage1;
pub mod stage2;
pub mod supervise;
#[allow(unsafe_code)]
pub mod sys;
pub mod watchdog;

pub use error::{Error, Result};

/// The whole life of PID 1: boot, then supervise; never returns. Outside PID 1 it refuses
/// to do anything (it would remount and reboot the machine it runs on) and exits 2.
pub fn run() -> ! {
    if std::process::id() != 1 {
        eprintln!(
            "stele-init: must run as PID 1 (it is the initramfs /init, built by `stele initramfs`); refusing to run as pid {}",
            std::process::id()
        );
        std::process::exit(2);
    }
    boot::install_panic_hook();
    let booted = boot::boot();
    supervise::run(booted)
}

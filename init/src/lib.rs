//! stele-init: the static PID 1 that verifies an A/B slot, maps it through dm-verity,
//! switches into it and supervises the image's services.
//!
//! Pure decisions (configuration, mount plans, dm payloads, slot and restart choices) live
//! apart from side effects and are unit-tested on the host; every `unsafe` block is in
//! [`sys`].

#![deny(unsafe_code)]

pub mod attempts;
pub mod boot;
pub mod boot_disk;
pub mod cmdline;
pub mod console;
pub mod devices;
pub mod error;
pub mod flight;
pub mod grow;
pub mod handoff;
pub mod lastboot;
pub mod mapped;
pub mod missing;
pub mod modules;
pub mod mounts;
pub mod pid1;
pub mod recover;
pub mod report;
pub mod reset;
pub mod stage1;
pub mod stage2;
pub mod supervise;
#[allow(unsafe_code)]
pub mod sys;
pub mod watchdog;

pub use error::{Error, Result};

use stele_verifier::config::Stage;

/// The whole life of PID 1: boot, then supervise; never returns. Anything but the kernel's
/// init ([`pid1::Role`]: another pid, or PID 1 of a child PID namespace) refuses with one
/// line and exits 2 before touching anything (it would mount over and reboot the machine
/// it runs on).
pub fn run(role: pid1::Role) -> ! {
    if let Some(line) = role.refusal() {
        eprintln!("{line}");
        std::process::exit(2);
    }
    boot::install_panic_hook();
    // Steps 1-10; returns only after a successful switch root (stage 1 may instead
    // reboot into the slot's own kernel).
    let ready = boot::prepare();
    let booted = match ready.cfg.stage {
        Stage::One => stage1::run(ready),
        Stage::Two => stage2::run(ready),
    };
    supervise::run(booted)
}

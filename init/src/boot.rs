//! The boot flow (docs/BOOT.md, steps 1-10) both stages share: mounts, config, modules and
//! the watchdog, partitions, state ([`prepare`]); then (chosen by [`crate::run`]) stage 1
//! (choose, spend the try, verify, map, hand over to the slot's kernel or carry on) or
//! stage 2 (the slot stage 1 named, verified again), each ending in the overlay root,
//! /run/stele and switch root ([`finish`]). Nothing here calls the stages.
//!
//! Decisions are pure functions at the top (slot order, phase line); the flow calls them
//! and [`crate::sys`]. A failure before switch root refuses that slot; with none left, the
//! failure action runs. Never a shell.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use stele_device::runtime::keyring::load_keyring;
use stele_device::runtime::rollback::{self, Floors, TpmUse};
use stele_device::runtime::run_dir::{self, Devices, Publish};
use stele_device::runtime::state_file::StateFile;
use stele_verifier::config::{Action, BootConfig};
use stele_verifier::keys::Keyring;
use stele_verifier::layout::{self, PerRole};
use stele_verifier::state::{BootState, Slot};

use crate::cmdline::{apply_cmdline, Cmdline};
use crate::devices::{self, BlockDev, Partitions};
use crate::mapped::{Clock, Mapped, Phases};
use crate::mounts::{self, NEWROOT};
use crate::sys::{self, Halt};
use crate::{
    boot_disk, console, debug, error, info, missing, modules, warn, watchdog, Error, Result,
};

/// Filesystem magics of an initramfs root (only those are ever emptied).
const RAMFS_MAGIC: i64 = 0x8584_58f6;
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// True when `s` may boot: priority > 0 and (successful or tries left).
pub fn bootable(st: &BootState, s: Slot) -> bool {
    st.slot(s).bootable()
}

/// The next slot to try: the preferred one (stele.slot=) if bootable, else the verifier's
/// choice (`BootState::choose`) among the slots not yet tried in this boot. Pure.
pub fn next_slot(st: &BootState, preferred: Option<Slot>, tried: &[Slot]) -> Option<Slot> {
    let mut left = *st;
    for &s in tried {
        left.mark_unbootable(s);
    }
    preferred
        .filter(|&p| bootable(&left, p))
        .or_else(|| left.choose())
}

/// When `chosen` is not the top-priority slot because that one ran out of tries, returns
/// the exhausted slot (for the `slot=<x> exhausted, falling back to <y>` line). Pure.
pub fn exhausted(st: &BootState, chosen: Slot) -> Option<Slot> {
    let other = chosen.other();
    let o = st.slot(other);
    let c = st.slot(chosen);
    let outranks = o.priority > c.priority || (o.priority == c.priority && other == Slot::A);
    (o.priority > 0 && !o.successful && o.tries_remaining == 0 && outranks).then_some(other)
}

/// What the boot hands to the supervisor.
#[derive(Debug)]
pub struct Booted {
    pub slot: Slot,
    pub rollback_index: u64,
    /// The booted release, as the flight recorder names it.
    pub release: stele_verifier::recorder::Release,
    /// The slot was already marked successful when it was chosen (not on trial).
    pub was_successful: bool,
    /// The boot state partition, open read-write.
    pub state: StateFile<File>,
    /// The TPM and its rollback counter, as boot.toml's rollback_storage uses them.
    pub tpm: TpmUse<stele_tpm::transport::Channel<File>>,
    pub config: BootConfig,
    pub phases: Phases,
    pub start: Instant,
}

/// The panic hook: log, sync, reboot. With panic=abort it still runs before the abort.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info.to_string().replace('\n', " ");
        error!("panic: {msg}; rebooting");
        sys::sync();
        sys::reboot(Halt::Reboot)
    }));
}

/// Ends the machine after a boot failure: the message, the delay, the action. Never returns.
pub fn fail(action: Action, delay_secs: u64, cause: &str) -> ! {
    error!(
        "no bootable slot: {cause}; {} in {delay_secs}s",
        action.name()
    );
    watchdog::sleep(Duration::from_secs(delay_secs));
    halt(action)
}

/// Logs the shutdown lines, syncs and ends the machine.
pub fn halt(action: Action) -> ! {
    info!("shutdown: {}", action.name());
    final_halt(action)
}

/// Syncs, logs `halted` and calls reboot(2) (from a forked child). Never returns.
pub fn final_halt(action: Action) -> ! {
    sys::sync();
    info!("halted");
    sys::reboot(match action {
        Action::Reboot => Halt::Reboot,
        Action::Poweroff => Halt::Poweroff,
    })
}

/// What both stages know once the state is read (steps 1-5 done).
#[derive(Debug)]
pub struct Ready {
    pub start: Instant,
    pub clock: Clock,
    pub cfg: BootConfig,
    /// boot.toml as read (published in /run/stele).
    pub boot_text: String,
    pub cmdline: Cmdline,
    pub parts: Partitions,
    pub state: StateFile<File>,
    pub st: BootState,
    pub keyring: Keyring,
    pub tpm: TpmUse<stele_tpm::transport::Channel<File>>,
    /// The rollback floors when the state was read (its own, the TPM's, the initramfs').
    pub floors: Floors,
}

/// Steps 1-5: mounts, configuration, modules (and the watchdog), partitions, the state
/// and the keyring. A failure here ends the boot (the failure action). Then stage 1 or
/// stage 2 goes on ([`crate::run`]).
pub fn prepare() -> Ready {
    let start = Instant::now();
    let mut clock = Clock::new(start);
    let _ = sys::block_all_signals();
    sys::cad_to_signal();
    for m in mounts::EARLY {
        if let Err(e) = m.apply() {
            // Already mounted (e.g. devtmpfs automount) is fine; anything else shows later.
            if !matches!(
                e,
                Error::Sys {
                    errno: nix::errno::Errno::EBUSY,
                    ..
                }
            ) {
                warn!("{m}: {e}");
            }
        }
    }
    // Without procfs before, it shows now whether this is the kernel's init.
    if let Some(line) = crate::pid1::detect().refusal() {
        eprintln!("{line}");
        std::process::exit(2);
    }
    console::open();
    info!("stele-init {} starting", env!("CARGO_PKG_VERSION"));
    clock.lap("mounts");

    let defaults = BootConfig::default();
    let (boot_text, mut cfg) = match std::fs::read_to_string(layout::BOOT_TOML) {
        Ok(t) => match BootConfig::parse(&t, layout::BOOT_TOML) {
            Ok(c) => (t, c),
            Err(e) => fail(
                defaults.on_failure,
                defaults.failure_delay_secs,
                &e.to_string(),
            ),
        },
        Err(e) => fail(
            defaults.on_failure,
            defaults.failure_delay_secs,
            &format!(
                "read {} failed: {e} (rebuild the initramfs with `stele initramfs`)",
                layout::BOOT_TOML
            ),
        ),
    };
    let cmdline_text = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let cmdline = Cmdline::parse(&cmdline_text);
    for w in apply_cmdline(&mut cfg, &cmdline) {
        warn!("{w}");
    }
    console::set_debug(cmdline.debug);
    let (action, delay) = (cfg.on_failure, cfg.failure_delay_secs);

    let watchdog = cfg.watchdog_secs > 0;
    let loaded = modules::load(
        &cfg.modules,
        &cfg.watchdog_modules,
        watchdog,
        &cfg.modaliases,
        &cfg.module_deps,
        &cmdline_text,
    );
    for f in &loaded.failed {
        warn!("module {f}");
    }
    debug!(
        "modules: {} loaded, {} already present, {} failed, {} without a device, {} at a time",
        loaded.loaded,
        loaded.already,
        loaded.failed.len(),
        loaded.skipped,
        loaded.at_once
    );
    watchdog::arm(cfg.watchdog_secs);
    clock.lap("modules");

    let rule = boot_disk::Rule {
        binding: boot_disk::binding(&cfg),
        allow_removable: cfg.allow_removable,
    };
    let state_name = cfg.partition(layout::Role::State).to_string();
    let parts = devices::wait(
        &cfg.partitions,
        Duration::from_secs(cfg.partition_timeout_secs),
        &rule,
    )
    .map_err(|e| match e {
        // Say what the kernel does see instead (docs/BOOT.md "No stele disk").
        Error::PartitionMissing { name, waited_ms } => Error::NoStateDisk {
            seen: missing::look(&name, &missing::aliases()),
            name,
            waited_ms,
        },
        Error::BootDiskMissing {
            binding, waited_ms, ..
        } => Error::BootDiskMissing {
            binding,
            waited_ms,
            seen: Some(missing::look(&state_name, &missing::aliases())),
        },
        e => e,
    })
    .unwrap_or_else(|e| fail(action, delay, &e.to_string()));
    info!(
        "boot disk {}: {}",
        parts
            .state
            .disk
            .as_deref()
            .map_or_else(|| parts.state.path(), |d| format!("/dev/{d}")),
        rule.binding
    );
    debug!(
        "state partition {} ({})",
        parts.state.path(),
        parts.state.majmin()
    );
    for d in &parts.ignored {
        warn!("{}", devices::stranger_line(d, &parts.state.path()));
    }
    clock.lap("devices");

    let mut state = StateFile::open(&parts.state.path(), true)
        .unwrap_or_else(|e| fail(action, delay, &e.to_string()));
    let keys_dir = [PathBuf::from(layout::KEYS_DIR)];
    let keyring = load_keyring(&[], &keys_dir, cfg.threshold, &mut |s| warn!("{s}"))
        .map_err(Error::Keys)
        .unwrap_or_else(|e| fail(action, delay, &e.to_string()));
    let st = match state.load() {
        Ok(st) => st,
        Err(e) if e.is_no_valid_state() => {
            match crate::recover::rebuild(&mut state, &parts, &cfg, &keyring) {
                Ok((st, line)) => {
                    warn!("{line}");
                    st
                }
                Err(cause) => fail(action, delay, &cause),
            }
        }
        Err(e) => fail(action, delay, &e.to_string()),
    };
    debug!("boot state: {st:?}");
    let (tpm, floors) =
        open_tpm(&cfg, st.rollback_floor).unwrap_or_else(|e| fail(action, delay, &e.to_string()));
    clock.lap("state");
    Ready {
        start,
        clock,
        cfg,
        boot_text,
        cmdline,
        parts,
        state,
        st,
        keyring,
        tpm,
        floors,
    }
}

/// The TPM as boot.toml's `rollback_storage` says (docs/BOOT.md "With a TPM"): `tpm`
/// without one, or a TPM that fails, ends the boot; `tpm-if-present` without one is a
/// warning. The first boot with a TPM defines the counter. Logs the floors.
fn open_tpm(
    cfg: &BootConfig,
    state_floor: u64,
) -> stele_device::Result<(TpmUse<stele_tpm::transport::Channel<File>>, Floors)> {
    let mut tpm = rollback::open_counter(cfg)?;
    match &tpm {
        TpmUse::Counter(_, stele_tpm::counter::Opened::Defined) => info!(
            "TPM rollback counter {:#010x} defined",
            stele_tpm::counter::NV_INDEX
        ),
        TpmUse::Absent => warn!(
            "rollback_storage = \"tpm-if-present\": no TPM on this machine; the rollback floor is the boot state's alone"
        ),
        _ => {}
    }
    let floors = rollback::floors(state_floor, tpm.counter(), cfg)?;
    info!("rollback floor {floors}");
    Ok((tpm, floors))
}

/// Step 10 for a slot whose root is mounted ([`Mapped::mount_rest`]): /run/stele, switch
/// root; the [`Booted`] the supervisor takes. A failure here ends the boot.
pub fn finish(r: Ready, m: Mapped, was_successful: bool) -> Booted {
    let Ready {
        start,
        mut clock,
        cfg,
        boot_text,
        parts,
        state,
        tpm,
        ..
    } = r;
    let (action, delay) = (cfg.on_failure, cfg.failure_delay_secs);
    publish(m.slot, &m.body, &boot_text, &parts);
    let t = Instant::now();
    if let Err(e) = switch_root() {
        fail(action, delay, &format!("switch root failed: {e}"));
    }
    clock.phases.add("switch", t.elapsed());
    watchdog::ping();
    Booted {
        slot: m.slot,
        rollback_index: m.manifest.rollback_index,
        release: stele_device::runtime::flight::release(&m.manifest),
        was_successful,
        state,
        tpm,
        config: cfg,
        phases: clock.phases,
        start,
    }
}

/// The cause in `no bootable slot: <cause>`: every refusal of this boot, or the state. Pure.
pub fn no_slot_cause(st: &BootState, refusals: &[String]) -> String {
    if refusals.is_empty() {
        let show = |s: Slot| {
            let r = st.slot(s);
            format!(
                "{}: priority {} tries {} successful {}",
                s.name(),
                r.priority,
                r.tries_remaining,
                r.successful
            )
        };
        format!(
            "no slot is bootable in the boot state ({}, {})",
            show(Slot::A),
            show(Slot::B)
        )
    } else {
        refusals.join(" / ")
    }
}

/// Stores the state in the other copy and flushes it (logging a failure).
pub fn write_state(state: &mut StateFile<File>, st: &mut BootState) -> stele_device::Result<()> {
    let r = state.store(st);
    if let Err(e) = &r {
        error!("{e}");
    }
    r
}

/// The partitions found, as `/run/stele/devices` lists them. Pure.
pub fn devices_of(parts: &Partitions) -> Devices {
    Devices(PerRole::from_fn(|r| parts.get(r).map(BlockDev::path)))
}

/// Publishes /run/stele (stele_device::runtime::run_dir) and copies this binary to
/// /run/stele/bin/stele (the device's `stele update`). Failures are warnings: they only
/// matter to `stele update`, which says what is missing.
fn publish(s: Slot, body: &[u8], boot_text: &str, parts: &Partitions) {
    let devices = devices_of(parts);
    let what = Publish {
        slot: s,
        manifest: body,
        boot_toml: boot_text,
        devices: &devices,
        keys_dir: Path::new(layout::KEYS_DIR),
    };
    if let Err(e) = run_dir::publish(Path::new(run_dir::RUN_DIR), &what) {
        warn!("publishing {}: {e}", run_dir::RUN_DIR);
    }
    if let Err(e) = run_dir::install_self(Path::new(run_dir::BIN_DIR)) {
        warn!("installing the stele command in {}: {e}", run_dir::BIN_DIR);
    }
}

/// Step 10: move /dev /proc /sys /run into the new root, free the initramfs, switch root.
fn switch_root() -> Result<()> {
    for p in mounts::MOVED {
        let to = format!("{NEWROOT}{p}");
        sys::mkdir_p(&to)?;
        sys::move_mount(p, &to)?;
    }
    sys::chdir(NEWROOT)?;
    let magic = sys::fs_magic("/")?;
    if magic == RAMFS_MAGIC || magic == TMPFS_MAGIC {
        let dev = sys::dev_of("/")?;
        sys::delete_same_fs(std::path::Path::new("/"), dev);
    } else {
        warn!("/ is not an initramfs (magic {magic:#x}); not deleting it");
    }
    sys::move_mount(".", "/")?;
    sys::chroot(".")?;
    sys::chdir("/")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use stele_verifier::config::Stage;

    use stele_verifier::testutil::state as st;

    #[test]
    fn next_slot_by_priority_and_preference() {
        let s = st((2, 0, true), (1, 0, true));
        assert_eq!(next_slot(&s, None, &[]), Some(Slot::A));
        assert_eq!(next_slot(&s, Some(Slot::B), &[]), Some(Slot::B));
        assert_eq!(next_slot(&s, None, &[Slot::A]), Some(Slot::B));
        assert_eq!(next_slot(&s, None, &[Slot::A, Slot::B]), None);
        // b updated: top priority, on trial.
        let s = st((1, 0, true), (2, 3, false));
        assert_eq!(next_slot(&s, None, &[]), Some(Slot::B));
        // ties: a wins.
        let s = st((1, 0, true), (1, 0, true));
        assert_eq!(next_slot(&s, None, &[]), Some(Slot::A));
    }

    #[test]
    fn a_tried_slot_leaves_only_the_other_if_bootable() {
        let recs = [
            (0, 0, false),
            (0, 0, true),
            (1, 0, false),
            (1, 0, true),
            (1, 2, false),
            (2, 0, false),
            (2, 1, false),
            (2, 0, true),
        ];
        for a in recs {
            for b in recs {
                let s = st(a, b);
                for t in [Slot::A, Slot::B] {
                    let other = t.other();
                    let want = bootable(&s, other).then_some(other);
                    assert_eq!(next_slot(&s, None, &[t]), want, "{s:?} tried {t:?}");
                    assert_eq!(
                        next_slot(&s, Some(t), &[t]),
                        want,
                        "{s:?} prefers tried {t:?}"
                    );
                }
                assert_eq!(next_slot(&s, None, &[Slot::A, Slot::B]), None);
            }
        }
    }

    #[test]
    fn preferred_slot_must_still_be_bootable() {
        let s = st((2, 0, true), (0, 0, false));
        assert_eq!(next_slot(&s, Some(Slot::B), &[]), Some(Slot::A));
        let s = st((2, 0, true), (1, 0, false));
        assert_eq!(next_slot(&s, Some(Slot::B), &[]), Some(Slot::A));
    }

    #[test]
    fn exhausted_slot_falls_back() {
        let s = st((1, 0, true), (2, 0, false));
        assert_eq!(next_slot(&s, None, &[]), Some(Slot::A));
        assert_eq!(exhausted(&s, Slot::A), Some(Slot::B));
        // b lower priority and unbootable: no "exhausted" line.
        let s = st((2, 0, true), (1, 0, false));
        assert_eq!(exhausted(&s, Slot::A), None);
        // b marked unbootable (priority 0): not "exhausted" either.
        let s = st((1, 0, true), (0, 0, false));
        assert_eq!(exhausted(&s, Slot::A), None);
        assert_eq!(
            next_slot(&st((0, 0, false), (0, 0, false)), None, &[]),
            None
        );
    }

    #[test]
    fn no_slot_cause_names_every_refusal_or_the_state() {
        let s = st((0, 0, false), (2, 0, false));
        assert_eq!(
            no_slot_cause(&s, &[]),
            "no slot is bootable in the boot state (a: priority 0 tries 0 successful false, b: priority 2 tries 0 successful false)"
        );
        assert_eq!(
            no_slot_cause(&s, &["slot a: x".into(), "slot b: y".into()]),
            "slot a: x / slot b: y"
        );
    }

    fn bd(name: &str, minor: u32) -> BlockDev {
        BlockDev {
            devname: name.into(),
            major: 254,
            minor,
            partname: None,
            disk: None,
        }
    }

    #[test]
    fn publishes_the_partitions_it_found() {
        use stele_verifier::layout::Role;
        let parts = Partitions {
            state: bd("vda2", 2),
            found: PerRole::from_fn(|r| match r {
                Role::Esp => Some(bd("vda1", 1)),
                Role::State => Some(bd("vda2", 2)),
                Role::SlotA => Some(bd("vda3", 3)),
                Role::SlotB => Some(bd("vda4", 4)),
                Role::Data => None,
            }),
            ignored: Vec::new(),
        };
        assert_eq!(
            devices_of(&parts).to_text(),
            "esp=/dev/vda1\nstate=/dev/vda2\na=/dev/vda3\nb=/dev/vda4\ndata=\n"
        );
    }

    #[test]
    fn phases_line() {
        let mut p = Phases::default();
        p.add("mounts", Duration::from_millis(3));
        p.add("verify", Duration::from_millis(10));
        p.add("verify", Duration::from_millis(5));
        assert_eq!(
            p.line(Stage::One, Duration::from_millis(40)),
            "boot phases: stage=1 mounts=3 verify=15 total=40"
        );
        assert!(p
            .line(Stage::Two, Duration::ZERO)
            .starts_with("boot phases: stage=2 "));
    }
}

//! The boot flow (docs/BOOT.md, steps 1-10): mounts, config, modules, partitions, state,
//! verification, dm-verity, overlay root, publishing /run/stele, switch root.
//!
//! Decisions are pure functions at the top (slot order, phase line); the flow below calls
//! them and [`crate::sys`]. Any failure before switch root refuses that slot and tries the
//! other one in the same boot; with none left, the failure action runs. Never a shell.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use stele_update::keys::load_keyring;
use stele_update::run_dir::{self, Devices, Publish};
use stele_update::state_file::StateFile;
use stele_verifier::config::{Action, BootConfig, VerifyMode};
use stele_verifier::keys::Keyring;
use stele_verifier::layout;
use stele_verifier::manifest::Manifest;
use stele_verifier::slot::{self, VerifyOptions};
use stele_verifier::state::{BootState, Slot};
use stele_verifier::verity;

use crate::cmdline::{apply_cmdline, Cmdline};
use crate::devices::{self, BlockDev, Partitions};
use crate::mounts::{self, NEWROOT, RW};
use crate::sys::{self, dm, Halt};
use crate::{console, debug, error, info, modules, warn, Error, Result};

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

/// Milliseconds per boot phase, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Phases(pub Vec<(&'static str, u64)>);

impl Phases {
    /// Adds `d` to phase `name` (phases repeat when a slot is refused and the other tried).
    pub fn add(&mut self, name: &'static str, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => *v = v.saturating_add(ms),
            None => self.0.push((name, ms)),
        }
    }
    /// `boot phases: mounts=3 ... total=<ms>`.
    pub fn line(&self, total: Duration) -> String {
        let mut s = String::from("boot phases:");
        for (n, ms) in &self.0 {
            s.push_str(&format!(" {n}={ms}"));
        }
        s.push_str(&format!(" total={}", total.as_millis()));
        s
    }
}

/// A stopwatch that charges elapsed time to phases.
#[derive(Debug)]
struct Clock {
    last: Instant,
    phases: Phases,
}

impl Clock {
    fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        self.phases.add(name, now - self.last);
        self.last = now;
    }
}

/// What the boot hands to the supervisor.
#[derive(Debug)]
pub struct Booted {
    pub slot: Slot,
    pub rollback_index: u64,
    /// The slot was already marked successful when it was chosen (not on trial).
    pub was_successful: bool,
    /// The boot state partition, open read-write.
    pub state: StateFile<File>,
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
    std::thread::sleep(Duration::from_secs(delay_secs));
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

/// Steps 1-10. Returns only after a successful switch root.
pub fn boot() -> Booted {
    let start = Instant::now();
    let mut clock = Clock {
        last: start,
        phases: Phases::default(),
    };
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
    let cmdline = Cmdline::parse(&std::fs::read_to_string("/proc/cmdline").unwrap_or_default());
    for w in apply_cmdline(&mut cfg, &cmdline) {
        warn!("{w}");
    }
    console::set_debug(cmdline.debug);
    let (action, delay) = (cfg.on_failure, cfg.failure_delay_secs);

    let loaded = modules::load(&cfg.modules);
    for f in &loaded.failed {
        warn!("module {f}");
    }
    debug!(
        "modules: {} loaded, {} already present, {} failed",
        loaded.loaded,
        loaded.already,
        loaded.failed.len()
    );
    clock.lap("modules");

    let parts = devices::wait(
        &cfg.esp_partition,
        &cfg.state_partition,
        &cfg.slot_a_partition,
        &cfg.slot_b_partition,
        &cfg.data_partition,
        Duration::from_secs(cfg.partition_timeout_secs),
    )
    .unwrap_or_else(|e| fail(action, delay, &e.to_string()));
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
    let keyring = load_keyring(&[], &[PathBuf::from(layout::KEYS_DIR)], cfg.threshold)
        .map_err(Error::Keys)
        .unwrap_or_else(|e| fail(action, delay, &e.to_string()));
    let mut st = match state.load() {
        Ok(st) => st,
        Err(stele_update::Error::StateLoad {
            source: stele_verifier::Error::NoValidState,
            ..
        }) => match crate::recover::rebuild(&mut state, &parts, &cfg, &keyring) {
            Ok((st, line)) => {
                warn!("{line}");
                st
            }
            Err(cause) => fail(action, delay, &cause),
        },
        Err(e) => fail(action, delay, &e.to_string()),
    };
    debug!("boot state: {st:?}");
    clock.lap("state");

    let mut tried: Vec<Slot> = Vec::new();
    let mut causes: Vec<String> = Vec::new();
    while let Some(s) = next_slot(&st, cmdline.slot, &tried) {
        if tried.is_empty() {
            if let Some(x) = exhausted(&st, s) {
                info!("slot={} exhausted, falling back to {}", x.name(), s.name());
            }
            if let Some(line) = crate::attempts::fell_back(&st, s) {
                warn!("{line}");
            }
        }
        if let Some((line, wait)) = crate::attempts::degraded(&st, s, delay) {
            warn!("{line}");
            std::thread::sleep(wait);
        }
        tried.push(s);
        let was_successful = st.slot(s).successful;
        let before = *st.slot(s);
        st.begin_boot(s);
        if *st.slot(s) != before {
            // A try that is not on disk would never run out: boot counting could not fall
            // back. Such a slot is not booted. An unconfirmed boot of a good slot that is
            // not on disk only means the next boot cannot know it: the slot boots.
            if let Err(e) = write_state(&mut state, &mut st) {
                if was_successful {
                    warn!("slot={}: its boot could not be recorded: {e}", s.name());
                } else {
                    error!(
                        "refused slot {}: its try could not be recorded: {e}",
                        s.name()
                    );
                    causes.push(format!("slot {}: try not recorded: {e}", s.name()));
                    continue;
                }
            }
        }
        match try_slot(s, &parts, &cfg, &keyring, st.rollback_floor, &mut clock) {
            Ok(m) => {
                publish(s, &m.body, &boot_text, &parts);
                let t = Instant::now();
                if let Err(e) = switch_root() {
                    fail(action, delay, &format!("switch root failed: {e}"));
                }
                clock.phases.add("switch", t.elapsed());
                return Booted {
                    slot: s,
                    rollback_index: m.manifest.rollback_index,
                    was_successful,
                    state,
                    config: cfg,
                    phases: clock.phases,
                    start,
                };
            }
            Err(Refusal { error, mark }) => {
                error!("refused slot {}: {error}", s.name());
                causes.push(format!("slot {}: {error}", s.name()));
                if mark {
                    st.mark_unbootable(s);
                    // Logged inside; the other slot is tried either way.
                    let _ = write_state(&mut state, &mut st);
                }
            }
        }
    }
    fail(action, delay, &no_slot_cause(&st, &causes))
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
fn write_state(state: &mut StateFile<File>, st: &mut BootState) -> stele_update::Result<()> {
    let r = state.store(st);
    if let Err(e) = &r {
        error!("{e}");
    }
    r
}

/// Why a slot was refused, and whether that is the slot's fault (then it is marked
/// unbootable) or the system's (missing partition, dm unavailable: it is not marked).
#[derive(Debug)]
struct Refusal {
    error: Error,
    mark: bool,
}

fn slot_fault(error: Error) -> Refusal {
    Refusal { error, mark: true }
}
fn system_fault(error: Error) -> Refusal {
    Refusal { error, mark: false }
}

/// A verified, mounted slot.
#[derive(Debug)]
struct Mounted {
    manifest: Manifest,
    body: Vec<u8>,
}

/// Steps 6-9 for one slot.
fn try_slot(
    s: Slot,
    parts: &Partitions,
    cfg: &BootConfig,
    keyring: &Keyring,
    floor: u64,
    clock: &mut Clock,
) -> std::result::Result<Mounted, Refusal> {
    let name = cfg.partition(layout::Role::slot(s));
    let dev: &BlockDev = match s {
        Slot::A => parts.slot_a.as_ref(),
        Slot::B => parts.slot_b.as_ref(),
    }
    .ok_or_else(|| {
        system_fault(Error::PartitionMissing {
            name: name.to_string(),
            waited_ms: cfg.partition_timeout_secs * 1000,
        })
    })?;
    let path = dev.path();
    let mut f = File::open(&path).map_err(|e| system_fault(Error::io("open", &path, e)))?;
    let len = sys::block_size(&f, &path).map_err(system_fault)?;
    let opts = VerifyOptions {
        full: cfg.verify == VerifyMode::Full,
        rollback_floor: Some(floor),
        product: cfg.name.as_deref(),
    };
    let (loc, vm) = slot::verify(&mut f, len, keyring, opts).map_err(|e| {
        // A device that cannot be read, or a tree larger than memory, says nothing about
        // the slot's content.
        if crate::attempts::verify_is_system_fault(&e) {
            system_fault(Error::from(e))
        } else {
            slot_fault(Error::from(e))
        }
    })?;
    let m = vm.manifest;
    let root_hex = stele_verifier::hex::encode(&m.verity.root_hash);
    info!(
        "slot={} version={} rollback_index={} root_hash={} verified",
        s.name(),
        m.version,
        m.rollback_index,
        root_hex
    );
    clock.lap("verify");

    let params = m.verity_params().map_err(|e| slot_fault(e.into()))?;
    let majmin = dev.majmin();
    let table = verity::table_params(
        &params,
        &m.verity.root_hash,
        &majmin,
        &majmin,
        m.verity.hash_offset,
    )
    .map_err(|e| slot_fault(e.into()))?;
    let sectors = params.data_size() / 512;
    let dm_name = format!("stele-root-{}", s.name());
    debug!("dm {dm_name}: 0 {sectors} verity {table}");
    let (major, minor) = dm::activate(&dm_name, "verity", sectors, &table).map_err(system_fault)?;
    let _ = sys::mkdir_p("/dev/mapper");
    let dm_path = format!("/dev/mapper/{dm_name}");
    sys::mknod_block(&dm_path, major, minor).map_err(system_fault)?;
    clock.lap("dm");

    let data = parts.data.as_ref().map(BlockDev::path);
    let plan = mounts::root_plan(
        &dm_path,
        m.filesystem.fs_type.name(),
        &cfg.overlay_size,
        data.as_deref().map(|d| mounts::DataMount::of(cfg, d)),
    );
    let mut done: Vec<String> = Vec::new();
    for (i, mnt) in plan.iter().enumerate() {
        debug!("{mnt}");
        let r = mnt.apply().and_then(|()| {
            if mnt.target == RW {
                sys::mkdir_p(&format!("{RW}/upper"))?;
                sys::mkdir_p(&format!("{RW}/work"))?;
            }
            Ok(())
        });
        match r {
            Ok(()) => done.push(mnt.target.clone()),
            Err(e) if i >= 3 => warn!(
                "data partition {} not mounted at {}: {e}; {} stays on the tmpfs overlay",
                mnt.source, cfg.data_mount, cfg.data_mount
            ),
            Err(e) => {
                for t in done.iter().rev() {
                    let _ = sys::umount(t);
                }
                let _ = dm::remove(&dm_name);
                let _ = std::fs::remove_file(&dm_path);
                // The kernel refusing the verified filesystem is the slot's fault; an I/O
                // error, no memory or an unknown filesystem type is not.
                return Err(Refusal {
                    mark: i == 0 && crate::attempts::mount_is_slot_fault(&e),
                    error: e,
                });
            }
        }
    }
    clock.lap("mount");
    Ok(Mounted {
        manifest: m,
        body: loc.envelope.body,
    })
}

/// The partitions found, as `/run/stele/devices` lists them. Pure.
pub fn devices_of(parts: &Partitions) -> Devices {
    let dev = |d: &Option<BlockDev>| d.as_ref().map(BlockDev::path);
    Devices {
        esp: dev(&parts.esp),
        state: parts.state.path(),
        a: dev(&parts.slot_a),
        b: dev(&parts.slot_b),
        data: dev(&parts.data),
    }
}

/// Publishes /run/stele (stele_update::run_dir) and copies this binary to
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
        let parts = Partitions {
            esp: Some(bd("vda1", 1)),
            state: bd("vda2", 2),
            slot_a: Some(bd("vda3", 3)),
            slot_b: Some(bd("vda4", 4)),
            data: None,
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
            p.line(Duration::from_millis(40)),
            "boot phases: mounts=3 verify=15 total=40"
        );
    }
}

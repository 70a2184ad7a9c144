//! One slot, steps 6-9: verified (footer, signatures, floor, tree), mapped through
//! dm-verity, its lower layer mounted read-only; then either the rest of the root (tmpfs,
//! overlay, data partition) or, when stage 1 hands over to the slot's kernel and that is
//! refused, undone again. Both stages use it.

use std::fs::File;
use std::time::{Duration, Instant};

use stele_verifier::config::{BootConfig, Stage, VerifyMode};
use stele_verifier::keys::Keyring;
use stele_verifier::layout;
use stele_verifier::manifest::Manifest;
use stele_verifier::slot::{self, VerifyOptions};
use stele_verifier::state::Slot;
use stele_verifier::verity;

use crate::devices::{BlockDev, Partitions};
use crate::mounts::{self, OwnedMount, RW};
use crate::sys::{self, dm};
use crate::{attempts, debug, error, info, warn, watchdog, Error};
use stele_tpm::transport::Channel;
use stele_tpm::Tpm;

/// Why a slot was refused, and whether that is the slot's fault (then it is marked
/// unbootable) or the system's (missing partition, dm unavailable: it is not marked).
#[derive(Debug)]
pub struct Refusal {
    pub error: Error,
    pub mark: bool,
}

/// A refusal that is the slot's fault.
pub fn slot_fault(error: Error) -> Refusal {
    Refusal { error, mark: true }
}

/// A refusal that is the system's fault.
pub fn system_fault(error: Error) -> Refusal {
    Refusal { error, mark: false }
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
    /// `boot phases: stage=<1|2> mounts=3 ... total=<ms>`.
    pub fn line(&self, stage: Stage, total: Duration) -> String {
        let mut s = format!("boot phases: stage={}", stage.number());
        for (n, ms) in &self.0 {
            s.push_str(&format!(" {n}={ms}"));
        }
        s.push_str(&format!(" total={}", total.as_millis()));
        s
    }
}

/// A stopwatch that charges elapsed time to phases, and keeps the watchdog alive at each.
#[derive(Debug)]
pub struct Clock {
    pub last: Instant,
    pub phases: Phases,
}

impl Clock {
    /// A clock started at `start`.
    pub fn new(start: Instant) -> Clock {
        Clock {
            last: start,
            phases: Phases::default(),
        }
    }

    /// Charges the time since the last lap to `name`; pings the watchdog.
    pub fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        self.phases.add(name, now - self.last);
        self.last = now;
        watchdog::ping();
    }
}

/// A verified slot with its lower layer mounted at [`mounts::LOWER`].
#[derive(Debug)]
pub struct Mapped {
    pub slot: Slot,
    pub manifest: Manifest,
    /// The verified manifest body, byte for byte.
    pub body: Vec<u8>,
    dm_name: String,
    dm_path: String,
    plan: Vec<OwnedMount>,
    mounted: Vec<String>,
}

/// Steps 6-9 up to the lower mount, for slot `s`; the verified envelope is measured into
/// `tpm` (when there is one) before anything of the slot is mapped.
pub fn map(
    s: Slot,
    parts: &Partitions,
    cfg: &BootConfig,
    keyring: &Keyring,
    floor: u64,
    tpm: Option<&mut Tpm<Channel<File>>>,
    clock: &mut Clock,
) -> Result<Mapped, Refusal> {
    let name = cfg.partition(layout::Role::slot(s));
    let dev: &BlockDev = parts.slot(s).ok_or_else(|| {
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
        if attempts::verify_is_system_fault(&e) {
            system_fault(Error::from(e))
        } else {
            slot_fault(Error::from(e))
        }
    })?;
    let m = vm.manifest;
    info!(
        "slot={} version={} rollback_index={} root_hash={} verified",
        s.name(),
        m.version,
        m.rollback_index,
        stele_verifier::hex::encode(&m.verity.root_hash)
    );
    measure(s, tpm, &loc.envelope.to_bytes());
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
    if let Err(e) = sys::mknod_block(&dm_path, major, minor) {
        let _ = dm::remove(&dm_name);
        return Err(system_fault(e));
    }
    clock.lap("dm");

    let data = parts.get(layout::Role::Data).map(BlockDev::path);
    let plan = mounts::root_plan(
        &dm_path,
        m.filesystem.fs_type.name(),
        &cfg.overlay_size,
        data.as_deref().map(|d| mounts::DataMount::of(cfg, d)),
    );
    let mut mapped = Mapped {
        slot: s,
        manifest: m,
        body: loc.envelope.body,
        dm_name,
        dm_path,
        plan,
        mounted: Vec::new(),
    };
    let lower = mapped.plan[0].clone();
    debug!("{lower}");
    if let Err(e) = lower.apply() {
        mapped.undo();
        // The kernel refusing the verified filesystem is the slot's fault; an I/O error,
        // no memory or an unknown filesystem type is not.
        return Err(Refusal {
            mark: attempts::mount_is_slot_fault(&e),
            error: e,
        });
    }
    mapped.mounted.push(lower.target);
    clock.lap("mount");
    Ok(mapped)
}

/// Measured boot: extends the PCR with the sha256 of the verified envelope and logs
/// `slot=<x> measured <sha256> into pcr <n>`. No TPM: a debug line. A failed extend is
/// an error line, not a refusal (the PCR then proves nothing, which attestation sees).
fn measure(s: Slot, tpm: Option<&mut Tpm<Channel<File>>>, envelope: &[u8]) {
    let Some(tpm) = tpm else {
        debug!("no TPM: slot={} not measured", s.name());
        return;
    };
    match stele_tpm::measure::measure(tpm, envelope) {
        Ok(d) => info!(
            "slot={} measured {} into pcr {}",
            s.name(),
            stele_verifier::hex::encode(&d),
            stele_tpm::measure::PCR
        ),
        Err(e) => error!("slot={} not measured: {e}", s.name()),
    }
}

impl Mapped {
    /// The rest of step 9: tmpfs upper, overlay on /newroot, the data partition (a data
    /// partition that does not mount is a warning: `data_mount` stays on the overlay),
    /// grown to the end of its disk around its mount unless boot.toml `grow_data = false`
    /// ([`crate::grow`]). On failure everything is undone; none of these is the slot's
    /// fault.
    pub fn mount_rest(
        mut self,
        cfg: &BootConfig,
        parts: &Partitions,
        clock: &mut Clock,
    ) -> Result<Self, Refusal> {
        let rest: Vec<OwnedMount> = self.plan[1..].to_vec();
        for (i, mnt) in rest.iter().enumerate() {
            debug!("{mnt}");
            // After tmpfs and overlay: the data partition.
            let data = i >= 2;
            let grow = parts
                .get(layout::Role::Data)
                .filter(|_| data && cfg.grow_data)
                .and_then(|d| {
                    let name = cfg.partition(layout::Role::Data);
                    crate::grow::Grow::table(d, name, &mnt.target)
                });
            let r = mnt.apply().and_then(|()| {
                if mnt.target == RW {
                    sys::mkdir_p(&format!("{RW}/upper"))?;
                    sys::mkdir_p(&format!("{RW}/work"))?;
                }
                Ok(())
            });
            let mounted = r.is_ok();
            match r {
                Ok(()) => self.mounted.push(mnt.target.clone()),
                Err(e) if data => warn!(
                    "data partition {} not mounted at {}: {e}; {} stays on the tmpfs overlay",
                    mnt.source, cfg.data_mount, cfg.data_mount
                ),
                Err(e) => {
                    self.undo();
                    return Err(system_fault(e));
                }
            }
            if let Some(g) = grow {
                g.finish(mounted);
            }
        }
        clock.lap("mount");
        Ok(self)
    }

    /// Unmounts what was mounted (deepest first) and removes the dm device and its node.
    pub fn undo(&mut self) {
        for t in self.mounted.drain(..).rev() {
            let _ = sys::umount(&t);
        }
        let _ = dm::remove(&self.dm_name);
        let _ = std::fs::remove_file(&self.dm_path);
    }
}

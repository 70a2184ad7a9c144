//! The device of the host-side flow tests: `/run/stele` as the boot publishes it
//! (run_dir::publish), pointing at regular files for the partitions.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use stele_device::runtime::run_dir::{self, Devices, Publish};
use stele_verifier::keys::public_pem;
use stele_verifier::layout::{PerRole, Role};
use stele_verifier::state::{self, BootState, Slot};
use stele_verifier::testutil::key;

/// Publishes a device whose partitions are files in `base`: slot a holding image `a` (its
/// footer also at the partition's end), an empty slot b, a fresh boot state, the
/// initramfs trusting key 1, `boot_toml` as its boot.toml and `data` as the data
/// partition when given. Slot a is the booted one. Returns the run directory.
pub fn publish_device(base: &Path, a: &[u8], boot_toml: &str, data: Option<String>) -> PathBuf {
    let part = |n: &str| base.join(n).display().to_string();
    let mut a_part = vec![0u8; 1 << 20];
    a_part[..a.len()].copy_from_slice(a);
    a_part[(1 << 20) - 4096..].copy_from_slice(&a[a.len() - 4096..]);
    std::fs::write(part("a"), &a_part).unwrap();
    std::fs::write(part("b"), vec![0u8; 1 << 20]).unwrap();
    let mut st = Cursor::new(vec![0u8; 8192]);
    state::initialize(&mut st, &BootState::initial(false)).unwrap();
    std::fs::write(part("state"), st.into_inner()).unwrap();
    let keys = base.join("initramfs-keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::write(keys.join("k.pem"), public_pem(&key(1).verifying_key())).unwrap();
    let body = stele_verifier::slot::locate(&mut Cursor::new(a), a.len() as u64)
        .unwrap()
        .envelope
        .body;
    let run = base.join("run");
    run_dir::publish(
        &run,
        &Publish {
            slot: Slot::A,
            manifest: &body,
            boot_toml,
            devices: &Devices(PerRole::from_fn(|r| match r {
                Role::Esp => None,
                Role::State => Some(part("state")),
                Role::SlotA => Some(part("a")),
                Role::SlotB => Some(part("b")),
                Role::Data => data.clone(),
            })),
            keys_dir: &keys,
        },
    )
    .unwrap();
    run
}

/// The device's commands on the target its run directory names, as the device binary
/// runs them: open the target, call one function.
#[allow(dead_code)] // each test binary uses some
pub mod on_device {
    use std::path::Path;

    use stele_device::commands::channel::{self, Applied};
    use stele_device::commands::install::{self, BundleArg, Installed};
    use stele_device::commands::{mark_good, status};
    use stele_device::remote::{FetchOptions, Location};
    use stele_device::target::Target;
    use stele_device::Result;
    use stele_verifier::progress::Silent;
    use stele_verifier::state::Slot;

    pub fn install(run: &Path, arg: &BundleArg, log: &mut dyn FnMut(&str)) -> Result<Installed> {
        let mut t = Target::device(run, true)?;
        t.load_trust()?;
        install::run(&mut t, arg, log, &mut Silent)
    }

    pub fn status(run: &Path) -> Result<status::Status> {
        status::run(&mut Target::device(run, false)?)
    }

    pub fn mark_good(run: &Path) -> Result<Slot> {
        mark_good::run(&mut Target::device(run, true)?)
    }

    pub fn check(run: &Path, loc: &Location, opts: &FetchOptions) -> Result<String> {
        channel::check(&Target::device(run, false)?, loc, opts)
    }

    pub fn apply(
        run: &Path,
        loc: &Location,
        opts: &FetchOptions,
        log: &mut dyn FnMut(&str),
    ) -> Result<Applied> {
        channel::apply(&mut Target::device(run, true)?, loc, opts, log, &mut Silent)
    }
}

//! The device of the host-side flow tests: `/run/stele` as the boot publishes it
//! (run_dir::publish), pointing at regular files for the partitions.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use stele_device::runtime::run_dir::{self, Devices, Publish};
use stele_verifier::keys::public_pem;
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
            devices: &Devices {
                esp: None,
                state: part("state"),
                a: Some(part("a")),
                b: Some(part("b")),
                data,
            },
            keys_dir: &keys,
        },
    )
    .unwrap();
    run
}

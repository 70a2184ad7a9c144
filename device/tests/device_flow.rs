//! The device flow on the host: `/run/stele` as the boot publishes it (run_dir::publish),
//! pointing at regular files for the partitions; status, install, refusals, mark-good.

use std::path::Path;

use stele_device::commands::install::BundleArg;
use stele_device::commands::status::Image;
use stele_device::runtime::run_dir;
use stele_device::Error;
use stele_verifier::exit::{Exit, Report};
use stele_verifier::state::Slot;
use stele_verifier::testutil::image_signed_by;

mod common;

fn image(rollback_index: u64, seed: u8, signer: u8) -> Vec<u8> {
    image_signed_by(8, rollback_index, seed, signer).0
}

/// A device: state, slot a holding v1 (rollback index 1), empty slot b.
fn device(base: &Path) -> std::path::PathBuf {
    common::publish_device(base, &image(1, 1, 1), "threshold = 1\n", None)
}

#[test]
fn status_install_refusals_and_mark_good() {
    let base = tempfile::tempdir().unwrap();
    let run = device(base.path());
    let part = |n: &str| base.path().join(n);

    let s = common::on_device::status(&run).unwrap();
    assert_eq!(s.booted, Some(Slot::A));
    assert_eq!(s.slots[1].image, Image::Empty);
    assert!(matches!(
        s.slots[0].image,
        Image::Valid {
            rollback_index: 1,
            ..
        }
    ));

    let v2 = part("v2.img");
    std::fs::write(&v2, image(2, 9, 1)).unwrap();
    let mut lines = Vec::new();
    let log = &mut |l: &str| lines.push(l.to_string());
    let done = common::on_device::install(&run, &BundleArg::Path(v2.clone()), log).unwrap();
    assert_eq!(done.slot, Slot::B);
    assert_eq!(
        lines.last().map(String::as_str),
        Some("update: footer written")
    );
    let s = common::on_device::status(&run).unwrap();
    assert_eq!(s.next, Some(Slot::B));
    assert!(matches!(&s.slots[1].image, Image::Valid { version, .. } if version == "2.9"));
    assert_eq!(s.slots[1].record.tries_remaining, 3);

    // The bundle cannot be the slot being written.
    let e = common::on_device::install(&run, &BundleArg::Path(part("b")), &mut |_| {}).unwrap_err();
    assert!(matches!(e, Error::BundleIsSlot { .. }), "{e}");
    assert_eq!(e.exit(), Exit::Usage);

    // A bundle signed by an unknown key: refused, state bytes unchanged, and the error
    // names the slot and the partition it was meant for.
    let before = std::fs::read(part("state")).unwrap();
    std::fs::write(&v2, image(3, 9, 2)).unwrap();
    let e = common::on_device::install(&run, &BundleArg::Path(v2), &mut |_| {}).unwrap_err();
    assert_eq!(e.exit(), Exit::Refused);
    let msg = e.to_string();
    assert!(msg.contains("threshold not met"), "{msg}");
    assert!(
        msg.ends_with(&format!(
            "(installing into slot b on {})",
            part("b").display()
        )),
        "{msg}"
    );
    assert_eq!(std::fs::read(part("state")).unwrap(), before);

    // mark-good of the booted slot a raises the floor to 1.
    assert_eq!(common::on_device::mark_good(&run).unwrap(), Slot::A);
    assert_eq!(common::on_device::status(&run).unwrap().rollback_floor, 1);

    // Nothing published: an environment error naming the file.
    let e = common::on_device::status(&base.path().join("nowhere")).unwrap_err();
    assert_eq!(e.exit(), Exit::Environment);
    assert!(e.to_string().contains("nowhere/slot"), "{e}");
}

/// `stele update install -` whose stdin is the target slot's partition itself (`<
/// /dev/vda3`) is refused before anything is written; it used to zero that slot's footer
/// (the fallback's) and then copy the slot onto itself.
#[test]
fn stdin_that_is_the_target_slot_is_refused() {
    use std::os::fd::AsRawFd;
    let base = tempfile::tempdir().unwrap();
    let run = device(base.path());
    let b = base.path().join("b");
    // Slot b holds a good image too: the fallback an install into b would overwrite.
    std::fs::copy(base.path().join("a"), &b).unwrap();
    let before = std::fs::read(&b).unwrap();
    let slot = std::fs::File::open(&b).unwrap();
    // This test binary's stdin becomes the partition for the one call (nothing else in
    // it reads stdin), then is put back.
    let saved = nix::unistd::dup(0).unwrap();
    nix::unistd::dup2(slot.as_raw_fd(), 0).unwrap();
    let r = common::on_device::install(&run, &BundleArg::Stdin, &mut |_| {});
    nix::unistd::dup2(saved, 0).unwrap();
    nix::unistd::close(saved).unwrap();
    let e = r.unwrap_err();
    assert!(
        matches!(&e, Error::BundleIsSlot { bundle, .. } if bundle == "stdin"),
        "{e}"
    );
    assert_eq!(e.exit(), Exit::Usage);
    assert_eq!(std::fs::read(&b).unwrap(), before, "slot b was written");
}

/// A device bound to a product (boot.toml `name`, published by the boot) refuses another
/// product's image signed by its own key, and installs its own.
#[test]
fn a_bound_device_refuses_another_product() {
    let base = tempfile::tempdir().unwrap();
    let run = device(base.path());
    std::fs::write(
        run.join(run_dir::BOOT_TOML),
        "threshold = 1\nname = \"router\"\n",
    )
    .unwrap();
    let state = base.path().join("state");
    let before = std::fs::read(&state).unwrap();
    let v2 = base.path().join("v2.img");
    std::fs::write(&v2, image(2, 9, 1)).unwrap();
    let e =
        common::on_device::install(&run, &BundleArg::Path(v2.clone()), &mut |_| {}).unwrap_err();
    assert_eq!(e.exit(), Exit::Refused);
    assert!(
        e.to_string()
            .contains("product refused: the image is \"demo\", this device is bound to \"router\""),
        "{e}"
    );
    assert_eq!(std::fs::read(&state).unwrap(), before);
    std::fs::write(
        run.join(run_dir::BOOT_TOML),
        "threshold = 1\nname = \"demo\"\n",
    )
    .unwrap();
    common::on_device::install(&run, &BundleArg::Path(v2), &mut |_| {}).unwrap();
}

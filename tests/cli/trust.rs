//! The trust rules on the build host: a fresh disk's rollback floor, the floor of the slot
//! a disk boots (its verified index), product binding (`stele initramfs --name`, `stele
//! update install --disk --name`), disks laid out the old way (state copies 4 KiB apart)
//! read and written in place, a state whose sequence is at its end, and the same rules on
//! the fetch path (`update install --disk DISK URL`).

use crate::fixture::{
    change_state, old_layout, old_layout_copies, partition_bytes, state, Fixture,
};
use crate::util::*;

/// A slot image `out` of product `name` at `index` (a small tree, version `index.0`).
fn image(fx: &Fixture, out: &str, key: &str, name: &str, index: u64) -> String {
    let tree = fx.tree(&format!("{out}.root"), false).build();
    fx.image(&tree, key)
        .name(name)
        .version(&format!("{index}.0"))
        .index(index)
        .build(out)
}

/// `stele update install --disk DISK --key KEY BUNDLE [extra]`.
fn install(disk: &str, key: &str, bundle: &str, extra: &[&str]) -> Out {
    let mut args = vec!["update", "install", "--disk", disk, "--key", key];
    args.extend(extra);
    args.push(bundle);
    stele(&args)
}

/// `stele disk create --a v5` starts the floor at 5 (it wrote 0), so v3, signed by the
/// same key, is refused before anything is written; v5 itself installs.
#[test]
fn a_fresh_disk_refuses_images_older_than_its_own() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("k");
    let v5 = image(&fx, "v5.img", &k, "demo", 5);
    let v3 = image(&fx, "v3.img", &k, "demo", 3);
    let d = fx.disk(&v5).slot_size("4M").no_data().build();
    assert_eq!(state(&d).rollback_floor, 5);
    let before = partition_bytes(&d, "stele-state");
    let slot_b = partition_bytes(&d, "stele-root-b");
    fails(
        &install(&d, &p, &v3, &[]),
        1,
        &["rollback", "below the rollback floor 5"],
    );
    assert_eq!(partition_bytes(&d, "stele-state"), before);
    assert_eq!(partition_bytes(&d, "stele-root-b"), slot_b);
    ok(install(&d, &p, &v5, &[]));
    // An image below the other slot's could never boot: disk create refuses it.
    let out = fx
        .disk(&v5)
        .b(&v3)
        .out("two.img")
        .slot_size("4M")
        .no_data()
        .run();
    fails(
        &out,
        2,
        &["rollback_index 3", "below the other slot image's 5"],
    );
}

/// A disk whose state still says floor 0 (made by an older stele) and whose good slot
/// runs v5: v3 is refused all the same, by the floor of the slot the disk boots.
#[test]
fn the_good_slot_a_disk_boots_sets_the_floor() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("k");
    let v5 = image(&fx, "v5.img", &k, "demo", 5);
    let v3 = image(&fx, "v3.img", &k, "demo", 3);
    let d = fx.disk(&v5).slot_size("4M").no_data().build();
    change_state(&d, |st| st.rollback_floor = 0);
    let before = partition_bytes(&d, "stele-state");
    fails(
        &install(&d, &p, &v3, &[]),
        1,
        &["below the rollback floor 5"],
    );
    assert_eq!(partition_bytes(&d, "stele-state"), before);
    // Once that slot is not good (on trial), only the state's floor applies.
    change_state(&d, |st| st.slots[0].successful = false);
    change_state(&d, |st| st.slots[0].tries_remaining = 1);
    change_state(&d, |st| st.slots[1].priority = 0);
    ok(install(&d, &p, &v3, &[]));
}

/// Offline installs refuse another product's image (signed by the same key): the product
/// `--name` gives, else the product of the image the disk boots. (They installed.)
#[test]
fn offline_installs_refuse_another_product() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("k");
    let demo = image(&fx, "demo.img", &k, "demo", 2);
    let router = image(&fx, "router.img", &k, "router", 2);
    let d = fx.disk(&demo).slot_size("4M").no_data().build();
    let before = partition_bytes(&d, "stele-state");
    fails(
        &install(&d, &p, &router, &[]),
        1,
        &[
            "product refused",
            "the image is \"router\"",
            "bound to \"demo\"",
        ],
    );
    assert_eq!(partition_bytes(&d, "stele-state"), before);
    fails(
        &install(&d, &p, &demo, &["--name", "router"]),
        1,
        &["the image is \"demo\"", "bound to \"router\""],
    );
    ok(install(&d, &p, &router, &["--name", "router"]));
}

/// A disk made before the state copies moved 1 MiB apart (a 1 MiB `stele-state`, copies
/// at 0 and 4096) is read and written where its copies are: status shows its state and an
/// install flips it in the copy at 0 (the older one), 4096 keeping the previous state.
#[test]
fn old_layout_disks_are_read_and_written_in_place() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("k");
    let v1 = image(&fx, "v1.img", &k, "demo", 1);
    let v2 = image(&fx, "v2.img", &k, "demo", 2);
    let new = fx.disk(&v1).slot_size("4M").no_data().build();
    let old = fx.p("old.img");
    old_layout(&new, &old);
    let [c0, c1] = old_layout_copies(&old);
    let (c0, c1) = (c0.expect("copy 0"), c1.expect("copy 1"));
    assert_eq!(c1.sequence, c0.sequence.wrapping_add(1));
    let status = ok(stele(&["update", "status", "--disk", &old, "--key", &p]));
    assert!(
        status.contains(
            "slot a: next version=1.0 rollback_index=1 priority=2 tries_remaining=0 successful=yes"
        ),
        "{status}"
    );
    assert!(status.contains("rollback_floor=1"), "{status}");
    ok(install(&old, &p, &v2, &[]));
    let [n0, n1] = old_layout_copies(&old);
    let n0 = n0.expect("copy 0 after the install");
    assert_eq!(n0.sequence, c1.sequence.wrapping_add(1), "written at 0");
    assert_eq!(n1, Some(c1), "the copy at 4096 is the previous state");
    assert_eq!(n0.choose(), Some(crate::fixture::Slot::B));
    // Nothing was written where a new disk keeps its second copy: the state partition
    // ends at 1 MiB, and the data after it (slot a) is intact.
    let status = ok(stele(&["update", "status", "--disk", &old, "--key", &p]));
    assert!(
        status.contains("slot a: version=1.0 rollback_index=1"),
        "{status}"
    );
    assert!(status.contains("slot b: next version=2.0"), "{status}");
}

/// A valid state copy with sequence u64::MAX made every write fail: the install zeroed
/// the target slot, then could not flip the state. Sequences compare modulo 2^64: the
/// install flips it (to 0) and a second state write works too.
#[test]
fn a_state_at_the_end_of_its_sequence_still_installs() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("k");
    let v1 = image(&fx, "v1.img", &k, "demo", 1);
    let v2 = image(&fx, "v2.img", &k, "demo", 2);
    let d = fx.disk(&v1).b(&v1).slot_size("4M").no_data().build();
    // Walk the sequence to its end, each write newer than the copy before it.
    for at in [1 << 62, 1 << 63, u64::MAX - 1] {
        change_state(&d, |st| st.sequence = at);
    }
    assert_eq!(state(&d).sequence, u64::MAX);
    let out = install(&d, &p, &v2, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let st = state(&d);
    assert_eq!(st.sequence, 0);
    assert_eq!(st.choose(), Some(crate::fixture::Slot::B));
    let st = change_state(&d, |st| st.mark_good(crate::fixture::Slot::B, 2));
    assert_eq!((st.sequence, st.rollback_floor), (1, 2));
}

/// The fetch path (`stele update install --disk DISK URL`, a delta over HTTP) meets the
/// same rules as a bundle file: on a disk whose state says floor 0 while its good slot
/// runs v5, another product's image and v3 are refused before anything is written;
/// `--name` binds the product explicitly.
#[test]
fn fetched_images_meet_the_product_and_the_running_slots_floor() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("k");
    std::fs::create_dir_all(fx.path("www")).unwrap();
    image(&fx, "www/v5.img", &k, "demo", 5);
    let v5 = fx.p("www/v5.img");
    image(&fx, "www/v3.img", &k, "demo", 3);
    image(&fx, "www/router.img", &k, "router", 6);
    let d = fx.disk(&v5).slot_size("4M").no_data().build();
    change_state(&d, |st| st.rollback_floor = 0);
    let before = partition_bytes(&d, "stele-state");
    let slot_b = partition_bytes(&d, "stele-root-b");
    let nginx = fx.nginx("www");
    fails(
        &install(&d, &p, &nginx.url("router.img"), &[]),
        1,
        &["product refused: the image is \"router\", this device is bound to \"demo\""],
    );
    fails(
        &install(&d, &p, &nginx.url("v3.img"), &[]),
        1,
        &["rollback", "below the rollback floor 5"],
    );
    fails(
        &install(&d, &p, &nginx.url("v5.img"), &["--name", "router"]),
        1,
        &["this device is bound to \"router\""],
    );
    assert_eq!(partition_bytes(&d, "stele-state"), before);
    assert_eq!(partition_bytes(&d, "stele-root-b"), slot_b);
    let out = ok(install(&d, &p, &nginx.url("v5.img"), &[]));
    assert!(out.contains("rollback_index=5 into slot b"), "{out}");
}

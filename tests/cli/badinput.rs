//! Bad input at the command line (issue 8): each gets one `stele: error:` line naming the
//! cause and the fix, its exit code, and leaves the output (and the input) as it was.

use std::path::Path;

use crate::fixture::{partition_bytes, unmappable_slot, Fixture, SALT};
use crate::util::*;

/// The bytes at `path`, or `None` when nothing is there: compared before and after.
fn snapshot(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

/// A sparse-free 64 KiB data file, its bytes derived from `seed`.
fn data(seed: u8) -> Vec<u8> {
    (0..65536u32)
        .map(|i| u8::try_from(i % 251).unwrap_or(0) ^ seed)
        .collect()
}

#[test]
fn rollback_index_above_the_manifest_limit_is_refused_at_build_time() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("a");
    let root = fx.tree("root", false).build();
    // 2^63 - 1, the largest manifest integer, builds and verifies.
    let max = fx.image(&root, &k).index(u64::MAX >> 1).build("max.img");
    ok(stele(&["verify", &max, "--key", &p]));
    let before = snapshot(Path::new(&max));
    for index in [1u64 << 63, u64::MAX] {
        let o = fx
            .image(&root, &k)
            .index(index)
            .args(&["--force"])
            .run("max.img");
        fails(&o, 2, &["invalid --rollback-index", "above 2^63 - 1"]);
        assert_eq!(snapshot(Path::new(&max)), before, "the output changed");
    }
    let o = fx.image(&root, &k).index(u64::MAX).run("new.img");
    fails(&o, 2, &["--rollback-index"]);
    assert!(!fx.path("new.img").exists());
}

#[test]
fn verity_format_refuses_data_and_hash_being_one_file() {
    let fx = Fixture::new();
    let d = fx.path("data");
    std::fs::write(&d, data(1)).unwrap();
    std::os::unix::fs::symlink(&d, fx.path("alias")).unwrap();
    std::fs::hard_link(&d, fx.path("link")).unwrap();
    for hash in ["data", "alias", "link"] {
        let o = stele(&["verity", "format", &fx.p("data"), &fx.p(hash)]);
        fails(&o, 2, &["same file", "give another HASH"]);
        assert_eq!(snapshot(&d), Some(data(1)), "{hash}: the data changed");
    }
}

#[test]
fn fs_image_must_carry_the_superblock_of_fs() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("a");
    let root = fx.tree("root", false).build();
    std::fs::write(fx.path("zeros"), vec![0u8; 1 << 20]).unwrap();
    let made = [
        ("erofs", host("mkfs.erofs", &[&fx.p("fs.erofs"), &root])),
        (
            "squashfs",
            host("mksquashfs", &[&root, &fx.p("fs.squashfs"), "-quiet"]),
        ),
        (
            "ext4",
            host("mkfs.ext4", &["-q", "-d", &root, &fx.p("fs.ext4"), "4M"]),
        ),
    ];
    for (fs, o) in &made {
        assert_eq!(o.code, 0, "{fs}: {o:?}");
    }
    let wrap = |file: &str, fs: &str| fx.fs_image(&fx.p(file), &k).fs(fs).run("s.img");
    for (fs, want) in [
        ("erofs", "give an erofs image (made by mkfs.erofs)"),
        ("ext4", "give an ext4 image (made by mkfs.ext4)"),
        ("squashfs", "give a squashfs image (made by mksquashfs)"),
    ] {
        let no_fs = "has no erofs, squashfs or ext4 superblock";
        fails(&wrap("zeros", fs), 2, &["--fs-image", no_fs, want]);
    }
    fails(
        &wrap("fs.squashfs", "erofs"),
        2,
        &["is a squashfs image, not erofs", "pass --fs squashfs"],
    );
    fails(
        &wrap("fs.erofs", "ext4"),
        2,
        &["is an erofs image, not ext4", "pass --fs erofs"],
    );
    fails(
        &wrap("fs.ext4", "erofs"),
        2,
        &["is an ext4 image, not erofs", "pass --fs ext4"],
    );
    assert!(
        !fx.path("s.img").exists(),
        "a refused build wrote its output"
    );
    for (fs, _) in made {
        let img = fx
            .fs_image(&fx.p(&format!("fs.{fs}")), &k)
            .fs(fs)
            .build(&format!("{fs}.img"));
        ok(stele(&["verify", &img, "--key", &p, "--full"]));
    }
}

#[test]
fn block_sizes_no_kernel_maps_are_refused_for_slot_images() {
    let fx = Fixture::new();
    let (k, _) = fx.keygen("a");
    let root = fx.tree("root", false).build();
    for flag in ["--data-block-size", "--hash-block-size"] {
        let o = fx.image(&root, &k).args(&[flag, "8192"]).run("s.img");
        fails(&o, 2, &[flag, "8192", "above 4096", "use 4096"]);
    }
    let o = fx
        .image(&root, &k)
        .args(&["--data-block-size", "1000"])
        .run("s.img");
    fails(
        &o,
        2,
        &["--data-block-size 1000", "power of two from 512 to 4096"],
    );
    assert!(!fx.path("s.img").exists());
    // A validly signed image with 8 KiB blocks: every reader refuses it as a slot.
    let (img, key) = (fx.path("big-blocks.img"), fx.path("tk.pem"));
    unmappable_slot(&img, &key);
    let (img, key) = (img.display().to_string(), key.display().to_string());
    fails(
        &stele(&["verify", &img, "--key", &key]),
        1,
        &["verity data block size 8192", "above 4096"],
    );
    let good = fx.image(&root, &k).salt(SALT).build("good.img");
    let disk = fx.disk(&good).slot_size("4M").no_data().build();
    let state = partition_bytes(&disk, "stele-state");
    let slot_b = partition_bytes(&disk, "stele-root-b");
    let o = stele(&["update", "install", "--disk", &disk, "--key", &key, &img]);
    fails(&o, 1, &["above 4096"]);
    assert_eq!(partition_bytes(&disk, "stele-state"), state);
    assert_eq!(partition_bytes(&disk, "stele-root-b"), slot_b);
    // The low-level verbs only warn, as veritysetup does, and still work.
    let d = fx.p("data");
    std::fs::write(&d, data(2)).unwrap();
    let o = stele(&[
        "verity",
        "format",
        &d,
        &fx.p("hash"),
        "--data-block-size",
        "8192",
    ]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(
        o.stderr.lines().collect::<Vec<_>>(),
        [
            "stele: warning: --data-block-size 8192 is above 4096, the x86-64 page size: the \
          kernel's dm-verity cannot map such a tree there, and slot images refuse it"
        ]
    );
    assert!(o.stdout.contains("Root hash:"), "{o:?}");
}

/// `image build`, `disk create` (and its block map), `initramfs` and `uki build` refuse an
/// existing output without --force, as keygen does, and check it before any work.
#[test]
fn existing_outputs_are_refused_without_force() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("a");
    let root = fx.tree("root", false).build();
    let img = fx.image(&root, &k).build("s.img");
    let before = snapshot(Path::new(&img));
    let exists = ["already exists", "--force"];
    fails(&fx.image(&root, &k).run("s.img"), 3, &exists);
    assert_eq!(snapshot(Path::new(&img)), before);
    let replaced = fx
        .image(&root, &k)
        .salt(SALT)
        .args(&["--force"])
        .build("s.img");
    assert_ne!(snapshot(Path::new(&replaced)), before);
    ok(stele(&["verify", &replaced, "--key", &p]));

    let disk = fx.disk(&img).slot_size("4M").no_data().build();
    let disk_before = snapshot(Path::new(&disk));
    fails(&fx.disk(&img).slot_size("4M").no_data().run(), 3, &exists);
    assert_eq!(snapshot(Path::new(&disk)), disk_before);
    // The block map too, checked before the disk is written.
    std::fs::write(fx.path("d2.img.bmap"), "old map").unwrap();
    let o = fx
        .disk(&img)
        .out("d2.img")
        .slot_size("4M")
        .no_data()
        .args(&["--bmap"])
        .run();
    fails(&o, 3, &["d2.img.bmap", "already exists"]);
    assert!(!fx.path("d2.img").exists());
    ok(fx
        .disk(&img)
        .slot_size("8M")
        .no_data()
        .args(&["--force"])
        .run());
    assert_ne!(snapshot(Path::new(&disk)), disk_before);

    // initramfs and uki build refuse it before reading any input.
    std::fs::write(fx.path("initrd.cpio"), "old").unwrap();
    let o = fx
        .initramfs(&[&p])
        .modules_dir(&fx.p("no-modules"))
        .init(&fx.p("no-init"))
        .run();
    fails(&o, 3, &["initrd.cpio", "already exists"]);
    std::fs::write(fx.path("uki.efi"), "old").unwrap();
    let o = fx
        .uki(&fx.p("no-kernel"), &fx.p("no-initrd"))
        .run("uki.efi");
    fails(&o, 3, &["uki.efi", "already exists"]);
    for f in ["initrd.cpio", "uki.efi"] {
        assert_eq!(snapshot(&fx.path(f)), Some(b"old".to_vec()), "{f}");
    }
}

/// A block device is written only with --force; a directory or character device never.
#[test]
fn devices_and_directories_are_not_outputs_by_mistake() {
    let fx = Fixture::new();
    let (k, _) = fx.keygen("a");
    let root = fx.tree("root", false).build();
    let img = fx.image(&root, &k).build("s.img");
    // A block device node of a major number no driver has: nothing can be written to it.
    let dev = fx.p("sdx");
    let o = host("mknod", &[&dev, "b", "240", "0"]);
    assert_eq!(o.code, 0, "mknod (as root): {o:?}");
    fails(
        &fx.image(&root, &k).run(&dev),
        3,
        &["is a block device", "pass --force"],
    );
    fails(
        &fx.disk(&img).out("sdx").slot_size("4M").no_data().run(),
        3,
        &["is a block device"],
    );
    fails(
        &fx.image(&root, &k).args(&["--force"]).run(&dev),
        3,
        &["cannot open the device", "sdx"],
    );
    let o = fx.disk(&img).out("sdx").slot_size("4M").no_data();
    fails(
        &o.args(&["--force", "--bmap"]).run(),
        2,
        &["--bmap", "drop --bmap"],
    );
    for (out, what) in [
        ("/dev/null", "is a character device"),
        (".", "is a directory"),
    ] {
        let o = fx.image(&root, &k).args(&["--force"]).run(out);
        fails(&o, 3, &[what, "give a file name"]);
    }
    // Nothing left behind: the temporary files of a device output go to $TMPDIR.
    let names: Vec<String> = std::fs::read_dir(fx.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("stele-"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
    // disk create never replaces one of its own inputs.
    let before = snapshot(Path::new(&img));
    let o = fx
        .disk(&img)
        .out("s.img")
        .slot_size("4M")
        .no_data()
        .args(&["--force"])
        .run();
    fails(&o, 2, &["is the input", "give another --out"]);
    assert_eq!(snapshot(Path::new(&img)), before);
}

/// mkfs.ext4 lives in /usr/sbin: found by every command on a PATH without it.
#[test]
fn host_tools_are_found_without_sbin_on_path() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("a");
    let root = fx.tree("root", false).build();
    let short = [("PATH", "/usr/bin:/bin")];
    let mut build = fx.image(&root, &k).fs("ext4").argv("s.img");
    build.push("--force".into());
    let args: Vec<&str> = build.iter().map(String::as_str).collect();
    ok(stele_env(&args, &short));
    let img = fx.p("s.img");
    ok(stele(&["verify", &img, "--key", &p, "--full"]));
    let disk = fx.p("d.img");
    let create = [
        "disk",
        "create",
        "--out",
        &disk,
        "--slot-size",
        "16M",
        "--a",
        &img,
        "--data-size",
        "8M",
    ];
    ok(stele_env(&create, &short));
}

#[test]
fn smaller_refusals_name_the_cause_once() {
    let fx = Fixture::new();
    let (_, p) = fx.keygen("a");
    // inspect names a missing file once.
    let missing = fx.p("nope.img");
    let o = stele(&["inspect", &missing]);
    fails(&o, 3, &["cannot open", "nope.img"]);
    assert_eq!(o.stderr.matches("nope.img").count(), 1, "{o:?}");
    // A directory as a slot image is the environment, not a refused image.
    let dir = fx.path("slots");
    std::fs::create_dir(&dir).unwrap();
    let o = fx.disk(&dir.display().to_string()).no_data().run();
    fails(&o, 3, &["is a directory", "stele image build"]);
    fails(
        &stele(&["verify", &fx.p("slots"), "--key", &p]),
        3,
        &["is a directory"],
    );
    assert!(!fx.path("disk.img").exists());
}

//! Tests of `stele disk create`: sizes and layout, the slots and the state written, the
//! fresh disk's rollback floor, refused inputs.

use super::*;
use std::io::Cursor;

const STATE_NAME: &str = Role::State.name();
const SLOT_A_NAME: &str = Role::SlotA.name();
const SLOT_B_NAME: &str = Role::SlotB.name();
const DATA_NAME: &str = Role::Data.name();

#[test]
fn sizes() {
    assert_eq!(parse_size("64M"), Ok(64 << 20));
    assert_eq!(parse_size("1G"), Ok(1 << 30));
    assert_eq!(parse_size("512K"), Ok(512 << 10));
    assert_eq!(parse_size("2MiB"), Ok(2 << 20));
    assert_eq!(parse_size("4096"), Ok(4096));
    for bad in ["", "M", "1.5G", "-1", "12X", "99999999999999999999T"] {
        assert!(parse_size(bad).is_err(), "{bad}");
    }
}

#[test]
fn layout_is_aligned_and_named() {
    let g = layout(3 * MIB + 1, Some(8 * MIB), b"seed").unwrap();
    let names: Vec<&str> = g.partitions.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, [STATE_NAME, SLOT_A_NAME, SLOT_B_NAME, DATA_NAME]);
    let ranges: Vec<(u64, u64)> = g.partitions.iter().map(Partition::byte_range).collect();
    assert_eq!(
        ranges,
        [
            (MIB, 2 * MIB),
            (3 * MIB, 4 * MIB),
            (7 * MIB, 4 * MIB),
            (11 * MIB, 8 * MIB)
        ]
    );
    assert_eq!(g.total_sectors * SECTOR, 20 * MIB);
    let roles = [Role::State, Role::SlotA, Role::SlotB, Role::Data];
    for (p, role) in g.partitions.iter().zip(roles) {
        assert_eq!(p.type_guid.to_string(), role.spec().type_guid);
    }
    g.check().unwrap();
    let guids: std::collections::HashSet<Guid> = g.partitions.iter().map(|p| p.guid).collect();
    assert_eq!(guids.len(), 4);
    assert_eq!(layout(3 * MIB + 1, Some(8 * MIB), b"seed").unwrap(), g);
    assert_ne!(
        layout(3 * MIB + 1, Some(8 * MIB), b"other")
            .unwrap()
            .disk_guid,
        g.disk_guid
    );
    assert_eq!(layout(MIB, None, b"s").unwrap().partitions.len(), 3);
    assert!(matches!(layout(0, None, b"s"), Err(DiskError::Size { .. })));
}

#[test]
fn slot_written_with_footer_at_partition_end() {
    let mut image: Vec<u8> = (0..3 * 4096u32).map(|i| (i % 7) as u8).collect();
    image[2 * 4096..].fill(0xF0);
    let mut disk = Cursor::new(vec![0u8; 64 * 1024]);
    {
        let mut p = PartitionIo::new(&mut disk, 8192, 32 * 1024);
        flash_slot(
            &mut p,
            32 * 1024,
            &mut Cursor::new(&image),
            image.len() as u64,
        )
        .unwrap();
    }
    let d = disk.into_inner();
    assert_eq!(&d[8192..8192 + image.len()], &image[..]);
    assert!(d[8192 + image.len()..8192 + 28 * 1024]
        .iter()
        .all(|&b| b == 0));
    assert!(d[8192 + 28 * 1024..8192 + 32 * 1024]
        .iter()
        .all(|&b| b == 0xF0));
    assert!(d[..8192]
        .iter()
        .chain(&d[8192 + 32 * 1024..])
        .all(|&b| b == 0));
    // Too large for the partition.
    let mut disk = Cursor::new(vec![0u8; 64 * 1024]);
    let mut p = PartitionIo::new(&mut disk, 0, 8192);
    assert!(flash_slot(&mut p, 8192, &mut Cursor::new(&image), image.len() as u64).is_err());
}

fn tool(name: &str) -> PathBuf {
    crate::tool::find(name)
        .unwrap_or_else(|| panic!("`{name}` is missing: run `cargo xtask setup`"))
}

/// `sgdisk -v` must find no problem in a table we wrote.
pub(crate) fn sgdisk_verify(path: &Path) {
    let out = std::process::Command::new(tool("sgdisk"))
        .arg("-v")
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "sgdisk -v failed: {text}");
    assert!(text.contains("No problems found"), "sgdisk -v: {text}");
}

/// The table and the data filesystem, without slot images (those need the verifier).
fn table_and_data(dir: &Path, name: &str) -> Vec<u8> {
    let g = layout(MIB, Some(8 * MIB), b"seed").unwrap();
    let path = dir.join(name);
    let mut f = File::create(&path).unwrap();
    f.set_len(g.total_sectors * SECTOR).unwrap();
    g.write(&mut f).unwrap();
    drop(f);
    let data = g.partitions.iter().find(|p| p.name == DATA_NAME).unwrap();
    tool("mkfs.ext4");
    mkfs_data(&path, data, b"seed", 1_700_000_000).unwrap();
    sgdisk_verify(&path);
    let mut f = File::open(&path).unwrap();
    let (off, len) = find_partition(&mut f, DATA_NAME).unwrap();
    assert_eq!((off, len), data.byte_range());
    let bytes = std::fs::read(&path).unwrap();
    // ext4 superblock at 1024 in the partition: magic 0xEF53 at 56, label at 120.
    let off = usize::try_from(off).unwrap();
    let sb = &bytes[off + 1024..off + 2048];
    assert_eq!(&sb[56..58], &[0x53, 0xEF]);
    assert_eq!(&sb[120..130], b"stele-data");
    // Nothing written outside the data partition except the GPT.
    let slot_a = find_partition(&mut f, SLOT_A_NAME).unwrap();
    let (a0, alen) = (
        usize::try_from(slot_a.0).unwrap(),
        usize::try_from(slot_a.1).unwrap(),
    );
    let a = &bytes[a0..a0 + alen];
    assert!(a.iter().all(|&b| b == 0));
    bytes
}

#[test]
fn sgdisk_accepts_table_and_data_fs_is_reproducible() {
    let d = tempfile::tempdir().unwrap();
    let one = table_and_data(d.path(), "one.img");
    let two = table_and_data(d.path(), "two.img");
    assert!(one == two, "two runs gave different disk bytes");
}

/// A minimal slot image `locate` accepts: `data_len` bytes of `fill`, an unsigned
/// envelope at the next 4 KiB boundary, padding, the footer.
fn fake_slot(dir: &Path, name: &str, fill: u8, data_len: usize) -> PathBuf {
    fake_slot_at(dir, name, fill, data_len, 1)
}

/// [`fake_slot`] whose manifest says `rollback_index`.
fn fake_slot_at(dir: &Path, name: &str, fill: u8, data_len: usize, rollback_index: u64) -> PathBuf {
    use stele_verifier::footer::Footer;
    use stele_verifier::manifest::Envelope;
    let body = format!(
        "format_version = 1\nname = \"demo\"\nversion = \"1\"\nrollback_index = {rollback_index}\ncreated = 0\n\n\
         [filesystem]\ntype = \"erofs\"\nsize = 4096\n\n\
         [verity]\nalgorithm = \"sha256\"\ndata_block_size = 4096\nhash_block_size = 4096\n\
         data_blocks = 1\nhash_offset = 4096\nsalt = \"\"\nroot_hash = \"{}\"\n",
        "0".repeat(64)
    );
    let env = Envelope {
        signatures: vec![],
        body: body.into_bytes(),
    }
    .to_bytes();
    let mut img = vec![fill; data_len];
    img.resize(data_len.next_multiple_of(4096), 0);
    let manifest_offset = img.len() as u64;
    img.extend_from_slice(&env);
    img.resize(img.len().next_multiple_of(4096), 0);
    let footer = Footer {
        manifest_offset,
        manifest_len: env.len() as u64,
        image_len: manifest_offset + env.len() as u64,
    };
    img.extend_from_slice(&footer.to_bytes());
    let p = dir.join(name);
    std::fs::write(&p, img).unwrap();
    p
}

fn range(bytes: &[u8], (off, len): (u64, u64)) -> &[u8] {
    let off = usize::try_from(off).unwrap();
    &bytes[off..off + usize::try_from(len).unwrap()]
}

#[test]
fn create_full_disk() {
    let d = tempfile::tempdir().unwrap();
    let a = fake_slot(d.path(), "a.img", 0xAA, 10_000);
    let b = fake_slot(d.path(), "b.img", 0xBB, 20_000);
    let spec = DiskSpec {
        slot_size: MIB,
        a: a.clone(),
        b: Some(b.clone()),
        data_size: Some(4 * MIB),
        epoch: 0,
        disk_guid: None,
    };
    let out = d.path().join("disk.img");
    let gpt = create(&out, &spec).unwrap();
    sgdisk_verify(&out);
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(bytes.len() as u64, gpt.total_sectors * SECTOR);
    // 1 MiB before the state, state 2, slots 1 + 1, data 4, 1 MiB for the backup GPT.
    assert_eq!(bytes.len() as u64, 10 * MIB);
    let mut f = File::open(&out).unwrap();
    for (name, img) in [(SLOT_A_NAME, &a), (SLOT_B_NAME, &b)] {
        let img = std::fs::read(img).unwrap();
        let part = range(&bytes, find_partition(&mut f, name).unwrap());
        assert_eq!(&part[..img.len()], &img[..], "{name}");
        assert_eq!(
            &part[part.len() - 4096..],
            &img[img.len() - 4096..],
            "{name}"
        );
        // The partition is a valid slot container on its own.
        let mut c = std::io::Cursor::new(part);
        stele_verifier::slot::locate(&mut c, part.len() as u64).unwrap();
    }
    let (so, sl) = find_partition(&mut f, STATE_NAME).unwrap();
    assert_eq!((so, sl), (MIB, 2 * MIB));
    let mut w = PartitionIo::new(&mut f, so, sl);
    let mut fresh = BootState::initial(true);
    fresh.rollback_floor = 1;
    assert_eq!(stele_verifier::state::load(&mut w).unwrap(), (fresh, 0));
    let data = range(&bytes, find_partition(&mut f, DATA_NAME).unwrap());
    assert_eq!(&data[1024 + 56..1024 + 58], &[0x53, 0xEF]);
    // Reproducible, and no temporary file left behind.
    let out2 = d.path().join("disk2.img");
    create(&out2, &spec).unwrap();
    assert!(std::fs::read(&out2).unwrap() == bytes);
    let names: Vec<String> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn create_without_b_marks_b_unbootable() {
    let d = tempfile::tempdir().unwrap();
    let a = fake_slot(d.path(), "a.img", 1, 4096);
    let spec = DiskSpec {
        slot_size: 2 * MIB,
        a,
        b: None,
        data_size: None,
        epoch: 0,
        disk_guid: None,
    };
    let out = d.path().join("disk.img");
    let gpt = create(&out, &spec).unwrap();
    assert_eq!(gpt.partitions.len(), 3);
    sgdisk_verify(&out);
    let mut f = File::open(&out).unwrap();
    let (so, sl) = find_partition(&mut f, STATE_NAME).unwrap();
    let (state, _) = stele_verifier::state::load(&mut PartitionIo::new(&mut f, so, sl)).unwrap();
    assert_eq!(state.slots, BootState::initial(false).slots);
    let bytes = std::fs::read(&out).unwrap();
    let b = range(&bytes, find_partition(&mut f, SLOT_B_NAME).unwrap());
    assert!(b.iter().all(|&x| x == 0));
}

/// A fresh disk starts with the rollback floor of its images (it used to start at 0,
/// so that any older signed image installed); an image below the other slot's could
/// never boot and is refused.
#[test]
fn a_fresh_disk_starts_at_its_images_rollback_index() {
    let d = tempfile::tempdir().unwrap();
    let v5 = fake_slot_at(d.path(), "v5.img", 1, 4096, 5);
    let v3 = fake_slot_at(d.path(), "v3.img", 2, 4096, 3);
    let out = d.path().join("disk.img");
    let spec = DiskSpec {
        slot_size: MIB,
        a: v5.clone(),
        b: Some(v5.clone()),
        data_size: None,
        epoch: 0,
        disk_guid: None,
    };
    let state = |out: &Path| {
        let mut f = File::open(out).unwrap();
        let (so, sl) = find_partition(&mut f, STATE_NAME).unwrap();
        stele_verifier::state::load(&mut PartitionIo::new(&mut f, so, sl))
            .unwrap()
            .0
    };
    create(&out, &spec).unwrap();
    assert_eq!(state(&out).rollback_floor, 5);
    let only_a = d.path().join("only-a.img");
    create(
        &only_a,
        &DiskSpec {
            b: None,
            ..spec.clone()
        },
    )
    .unwrap();
    assert_eq!(state(&only_a).rollback_floor, 5);
    for (a, b) in [(&v5, &v3), (&v3, &v5)] {
        let e = create(
            &d.path().join("mixed.img"),
            &DiskSpec {
                a: a.clone(),
                b: Some(b.clone()),
                ..spec.clone()
            },
        )
        .unwrap_err();
        assert!(
            matches!(&e, DiskError::BelowFloor { path, index: 3, floor: 5 } if *path == v3),
            "{e}"
        );
        assert_eq!(e.exit(), Exit::Usage);
    }
}

#[test]
fn create_refuses_oversized_and_non_slot_images() {
    let d = tempfile::tempdir().unwrap();
    let big = fake_slot(d.path(), "big.img", 1, 2 << 20);
    let big_len = std::fs::metadata(&big).unwrap().len();
    let out = d.path().join("disk.img");
    let spec = DiskSpec {
        slot_size: MIB,
        a: big,
        b: None,
        data_size: None,
        epoch: 0,
        disk_guid: None,
    };
    let e = create(&out, &spec).unwrap_err();
    assert!(matches!(e, DiskError::TooLarge { slot_len, .. } if slot_len == MIB));
    let msg = e.to_string();
    assert!(
        msg.contains(&MIB.to_string()) && msg.contains(&big_len.to_string()),
        "{msg}"
    );
    let junk = d.path().join("junk.img");
    std::fs::write(&junk, vec![0x5Au8; 3 * 4096]).unwrap();
    let spec = DiskSpec { a: junk, ..spec };
    assert!(matches!(
        create(&out, &spec),
        Err(DiskError::NotSlot { .. })
    ));
    assert!(!out.exists());
    let spec = DiskSpec {
        a: d.path().to_path_buf(),
        ..spec
    };
    let e = create(&out, &spec).unwrap_err();
    assert!(matches!(e, DiskError::SlotIsDirectory { .. }), "{e}");
    assert_eq!(e.exit(), Exit::Environment);
}

/// `--disk-guid`: the GPT disk GUID is the one given (the identity `stele initramfs
/// --boot-disk` records), and the partition GUIDs differ from those of the same content
/// without it (two disks of one image with two identities share no PARTUUID).
#[test]
fn disk_guid_is_the_one_given() {
    let d = tempfile::tempdir().unwrap();
    let a = fake_slot(d.path(), "a.img", 0xAA, 10_000);
    let spec = DiskSpec {
        slot_size: MIB,
        a,
        b: None,
        data_size: None,
        epoch: 0,
        disk_guid: None,
    };
    let plain = create(&d.path().join("plain.img"), &spec).unwrap();
    let guid = Guid::parse("5a1e0000-0000-4000-8000-00000000d15c").unwrap();
    let named = DiskSpec {
        disk_guid: Some(guid),
        ..spec.clone()
    };
    let out = d.path().join("named.img");
    let gpt = create(&out, &named).unwrap();
    sgdisk_verify(&out);
    assert_eq!(gpt.disk_guid, guid);
    assert_ne!(plain.disk_guid, guid);
    for (p, q) in plain.partitions.iter().zip(&gpt.partitions) {
        assert_ne!(p.guid, q.guid, "{}", p.name);
    }
    let again = create(&d.path().join("again.img"), &named).unwrap();
    assert_eq!(again, gpt, "reproducible");
}

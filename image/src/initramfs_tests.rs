//! Tests of `stele initramfs`: the generated boot.toml (the one schema, the keys the
//! command sets itself), the archive's layout and the module order.

use super::*;
use crate::cpio::EntryKind;

/// A minimal 64-bit ELF header with one program header of type `p_type`.
fn elf(p_type: u32) -> Vec<u8> {
    let mut b = vec![0u8; 64 + 56];
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2;
    b[5] = 1;
    b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
    b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
    b[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
    b[64..68].copy_from_slice(&p_type.to_le_bytes());
    b
}

#[test]
fn init_must_be_a_static_elf() {
    assert_eq!(check_static_elf(&elf(1)), Ok(()));
    let dynamic = check_static_elf(&elf(3)).unwrap_err();
    assert!(dynamic.contains("dynamically linked"), "{dynamic}");
    assert!(check_static_elf(b"#!/bin/sh\n")
        .unwrap_err()
        .contains("not an ELF"));
    assert!(check_static_elf(&elf(1)[..66]).is_err());
    // The test binary itself is dynamically linked (cargo's default).
    let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    assert!(check_static_elf(&me).is_err());
}

#[test]
fn boot_toml_adds_threshold_and_modules() {
    let user = "verify = \"full\"\non_failure = \"poweroff\"\nfailure_delay_secs = 3\n";
    let g = Generated {
        threshold: 2,
        modules: vec!["virtio_ring.ko".into(), "virtio.ko".into()],
        name: Some("router".into()),
        ..Generated::default()
    };
    let out = boot_toml(Some(("b.toml", user)), &g).unwrap();
    let t: toml::Table = out.parse().unwrap();
    assert_eq!(t["threshold"].as_integer(), Some(2));
    assert_eq!(t["verify"].as_str(), Some("full"));
    assert_eq!(t["failure_delay_secs"].as_integer(), Some(3));
    let m: Vec<&str> = t["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(m, ["virtio_ring.ko", "virtio.ko"]);
    assert_eq!(t["name"].as_str(), Some("router"));
    // No user file: only the generated keys, and only those that say something.
    let t: toml::Table = boot_toml(None, &one()).unwrap().parse().unwrap();
    assert_eq!(t.len(), 2);
    // A name the schema refuses is refused with PID 1's message.
    let bad = Generated {
        name: Some("my router".into()),
        ..one()
    };
    let e = boot_toml(None, &bad).unwrap_err();
    assert!(
        e.to_string()
            .contains("name: \"my router\" is not a product name"),
        "{e}"
    );
    let g = Generated {
        modules: vec!["i6300esb.ko".into()],
        watchdog_modules: vec!["i6300esb.ko".into()],
        stage2: true,
        ..one()
    };
    let t: toml::Table = boot_toml(None, &g).unwrap().parse().unwrap();
    assert_eq!(t["stage"].as_integer(), Some(2));
    assert_eq!(t["watchdog_modules"].as_array().map(Vec::len), Some(1));
    let g = Generated {
        kernel_sha256: Some([0xab; 32]),
        ..one()
    };
    let t: toml::Table = boot_toml(None, &g).unwrap().parse().unwrap();
    assert_eq!(
        t["kernel_sha256"].as_str().map(str::to_owned),
        Some("ab".repeat(32))
    );
    // The schema's own rule on generated values: stage 2 never kexecs.
    let g = Generated { stage2: true, ..g };
    let e = boot_toml(None, &g).unwrap_err();
    assert!(e.to_string().contains("never kexecs"), "{e}");
}

#[test]
fn min_rollback_index_from_the_option_or_the_file_not_both() {
    let g = Generated {
        min_rollback_index: Some(3),
        ..one()
    };
    let t: toml::Table = boot_toml(None, &g).unwrap().parse().unwrap();
    assert_eq!(t["min_rollback_index"].as_integer(), Some(3));
    let file = Some((
        "b.toml",
        "min_rollback_index = 2\nrollback_storage = \"tpm\"\n",
    ));
    let t: toml::Table = boot_toml(file, &one()).unwrap().parse().unwrap();
    assert_eq!(t["min_rollback_index"].as_integer(), Some(2));
    let e = boot_toml(file, &g).unwrap_err();
    assert!(matches!(e, InitramfsError::Generated { .. }), "{e}");
    assert!(e.to_string().contains("--min-rollback-index"), "{e}");
    let huge = Generated {
        min_rollback_index: Some(u64::MAX),
        ..one()
    };
    assert!(boot_toml(None, &huge).is_err());
}

#[test]
fn boot_disk_from_the_option_or_the_file_not_both() {
    let guid = stele_verifier::gpt::Guid::derive(b"disk");
    let g = Generated {
        boot_disk: Some(guid),
        ..one()
    };
    let t: toml::Table = boot_toml(None, &g).unwrap().parse().unwrap();
    assert_eq!(t["boot_disk"].as_str(), Some(guid.to_string().as_str()));
    let file = Some((
        "b.toml",
        "boot_disk = \"5a1e0000-0000-4000-8000-00000000d15c\"\n",
    ));
    let t: toml::Table = boot_toml(file, &one()).unwrap().parse().unwrap();
    assert!(t.contains_key("boot_disk"));
    let e = boot_toml(file, &g).unwrap_err();
    assert!(e.to_string().contains("--boot-disk"), "{e}");
}

fn one() -> Generated {
    Generated {
        threshold: 1,
        ..Generated::default()
    }
}

#[test]
fn boot_toml_refuses_what_stele_init_refuses() {
    for (text, needle) in [
        (
            "threshold = 2",
            "set by `stele initramfs` (use --threshold)",
        ),
        ("modules = []", "set by `stele initramfs` (use --module)"),
        ("name = \"demo\"", "set by `stele initramfs` (use --name)"),
        ("stage = 2", "set by `stele initramfs` (use --stage2)"),
        (
            "stage = 2\nkernel_sha256 = \"\"",
            "`kernel_sha256` is set by `stele initramfs` (use --kernel)",
        ),
        (
            "watchdog_modules = []",
            "set by `stele initramfs` (use --module)",
        ),
        ("colour = \"red\"", "colour: unknown key"),
        ("verify = 1", "verify: must be a string"),
        ("failure_delay_secs = \"3\"", "non-negative integer"),
        ("verify = \"none\"", "one of tree, full"),
        ("on_failure = \"halt\"", "one of reboot, poweroff"),
        (
            "data_mount = \"/usr\"",
            "data_mount: \"/usr\" would put writable storage",
        ),
        ("this is not toml", "not valid TOML"),
    ] {
        let e = boot_toml(Some(("u.toml", text)), &one()).unwrap_err();
        assert_eq!(e.exit(), Exit::Usage, "{text}");
        let msg = e.to_string();
        assert!(
            msg.contains(needle) && msg.contains("u.toml"),
            "{text}: {msg}"
        );
        if !needle.contains("set by") {
            // The very message stele-init would log for the same file.
            let pid1 = BootConfig::parse(text, "u.toml").unwrap_err();
            assert_eq!(msg, pid1.to_string());
        }
    }
    // A generated value the schema refuses (a module name it would not load).
    let g = Generated {
        modules: vec!["bad".into()],
        ..one()
    };
    let e = boot_toml(None, &g).unwrap_err();
    assert!(e.to_string().contains("modules"), "{e}");
}

#[test]
fn dirs_hold_every_directory_of_the_layout() {
    let file_dir = |p: &'static str| Path::new(p).parent().unwrap();
    for p in [
        file_dir(layout::BOOT_TOML),
        Path::new(layout::KEYS_DIR),
        Path::new(layout::MODULES_DIR),
    ] {
        for d in p.ancestors().filter(|d| *d != Path::new("/")) {
            let rel = d.to_str().unwrap().trim_start_matches('/');
            assert!(
                DIRS.contains(&rel),
                "{rel} (of {}) is not in DIRS",
                p.display()
            );
        }
    }
}

#[test]
fn archive_has_contract_layout() {
    let keys = [TrustedKey {
        id: "0123456789abcdef".into(),
        pem: "PEM".into(),
    }];
    let mods = vec![
        ModuleFile {
            file_name: "virtio_ring.ko".into(),
            data: b"r".to_vec(),
        },
        ModuleFile {
            file_name: "virtio.ko".into(),
            data: b"v".to_vec(),
        },
    ];
    let a = build_archive(b"ELF".to_vec(), "threshold = 1\n", &keys, mods, 0).unwrap();
    let entries: Vec<(&str, u32, &EntryKind)> =
        a.entries().map(|(p, e)| (p, e.mode(), &e.kind)).collect();
    let find = |p: &str| entries.iter().find(|e| e.0 == p).copied();
    for d in DIRS {
        assert_eq!(find(d).map(|e| e.1), Some(0o040_755), "{d}");
    }
    assert_eq!(
        find("dev/console").map(|e| (e.1, e.2.clone())),
        Some((0o020_600, EntryKind::CharDev { major: 5, minor: 1 }))
    );
    assert_eq!(find("init").map(|e| e.1), Some(0o100_755));
    assert_eq!(find("etc/stele/boot.toml").map(|e| e.1), Some(0o100_644));
    assert_eq!(
        find("etc/stele/keys/0123456789abcdef.pem").map(|e| e.2.clone()),
        Some(EntryKind::File(b"PEM".to_vec()))
    );
    assert!(find("lib/modules/virtio.ko").is_some());
    assert_eq!(entries.len(), DIRS.len() + 6);
    // Same inputs, same bytes.
    let again = build_archive(b"ELF".to_vec(), "threshold = 1\n", &keys, vec![], 0)
        .unwrap()
        .to_bytes()
        .unwrap();
    let again2 = build_archive(b"ELF".to_vec(), "threshold = 1\n", &keys, vec![], 0)
        .unwrap()
        .to_bytes()
        .unwrap();
    assert_eq!(again, again2);
}

#[test]
fn requested_modules_defaults_and_replacement() {
    let mut spec = InitramfsSpec {
        modules_dir: PathBuf::new(),
        modules: vec!["vfat".into(), "erofs".into()],
        default_modules: true,
        hardware: Default::default(),
        keys: vec![],
        threshold: 1,
        config: None,
        init: PathBuf::new(),
        mtime: 0,
        name: None,
        stage2: false,
        kernel: None,
        min_rollback_index: None,
        boot_disk: None,
    };
    let r = requested_modules(&spec);
    assert_eq!(r.len(), hardware::CORE.len() + 1);
    assert_eq!(r.last().map(String::as_str), Some("vfat"));
    spec.default_modules = false;
    assert_eq!(requested_modules(&spec), ["vfat", "erofs"]);
}

#[test]
fn threshold_checked_against_keys() {
    assert!(matches!(
        load_keys(&[], 1),
        Err(InitramfsError::Threshold {
            threshold: 1,
            keys: 0
        })
    ));
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("nope.pem");
    let e = load_keys(&[missing], 1).unwrap_err();
    assert_eq!(e.exit(), Exit::Environment);
}

fn key_file(dir: &Path, seed: u8) -> (PathBuf, String) {
    let sk = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let vk = sk.verifying_key();
    let p = dir.join(format!("k{seed}.pem"));
    std::fs::write(&p, stele_verifier::keys::public_pem(&vk)).unwrap();
    (p, stele_verifier::keys::key_id(&vk).to_string())
}

#[test]
fn load_keys_ids_threshold_and_duplicates() {
    let d = tempfile::tempdir().unwrap();
    let (k1, id1) = key_file(d.path(), 1);
    let (k2, id2) = key_file(d.path(), 2);
    let keys = load_keys(&[k1.clone(), k2.clone()], 2).unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(
        (keys[0].id.as_str(), keys[1].id.as_str()),
        (id1.as_str(), id2.as_str())
    );
    assert_eq!(keys[0].id.len(), 16);
    assert!(matches!(
        load_keys(&[k1.clone(), k2.clone()], 3),
        Err(InitramfsError::Threshold {
            threshold: 3,
            keys: 2
        })
    ));
    assert!(matches!(
        load_keys(std::slice::from_ref(&k1), 0),
        Err(InitramfsError::Threshold { .. })
    ));
    let e = load_keys(&[k1.clone(), k1.clone()], 1).unwrap_err();
    assert!(matches!(e, InitramfsError::Duplicate { .. }), "{e}");
    assert!(e.to_string().contains("twice"), "{e}");
    let junk = d.path().join("junk.pem");
    std::fs::write(
        &junk,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let e = load_keys(&[junk], 1).unwrap_err();
    assert!(matches!(e, InitramfsError::KeyParse(_)));
    assert!(e.to_string().contains("junk.pem"), "{e}");
    assert_eq!(e.exit(), Exit::Usage);
}

#[test]
fn build_from_files() {
    let d = tempfile::tempdir().unwrap();
    let mods = crate::modules::tests::fake_dir();
    let (k1, id1) = key_file(d.path(), 1);
    let init = d.path().join("init");
    std::fs::write(&init, elf(1)).unwrap();
    let cfg = d.path().join("boot.toml");
    std::fs::write(&cfg, "verify = \"full\"\n").unwrap();
    let spec = InitramfsSpec {
        modules_dir: mods.path().to_path_buf(),
        modules: vec!["erofs".into(), "virtio-blk".into(), "i6300esb".into()],
        default_modules: false,
        hardware: Default::default(),
        keys: vec![k1],
        threshold: 1,
        config: Some(cfg),
        init,
        mtime: 77,
        name: None,
        stage2: false,
        kernel: None,
        min_rollback_index: None,
        boot_disk: None,
    };
    let (a, order) = build(&spec).unwrap();
    assert_eq!(
        order,
        [
            "crc32c_generic.ko",
            "libcrc32c.ko",
            "erofs.ko",
            "virtio_ring.ko",
            "virtio.ko",
            "virtio_blk.ko",
            "watchdog.ko",
            "i6300esb.ko"
        ]
    );
    let file = |p: &str| match a.entries().find(|(q, _)| *q == p).map(|(_, e)| &e.kind) {
        Some(EntryKind::File(d)) => d.clone(),
        other => panic!("{p}: {other:?}"),
    };
    assert_eq!(file("init"), elf(1));
    let t: toml::Table = String::from_utf8(file("etc/stele/boot.toml"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(t["verify"].as_str(), Some("full"));
    let listed: Vec<&str> = t["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(listed, order);
    assert_eq!(
        t["watchdog_modules"].as_array().unwrap()[..],
        [toml::Value::from("i6300esb.ko")]
    );
    // What each module needs loaded first (modules.dep and softdep pre:), so that
    // stele-init loads the others at the same time; modules needing nothing have no entry.
    let needs = |m: &str| -> Vec<&str> {
        t["module_deps"].get(m).map_or(Vec::new(), |v| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap())
                .collect()
        })
    };
    assert_eq!(needs("libcrc32c.ko"), ["crc32c_generic.ko"]);
    assert_eq!(needs("virtio_blk.ko"), ["virtio.ko", "virtio_ring.ko"]);
    assert!(needs("crc32c_generic.ko").is_empty() && needs("virtio_ring.ko").is_empty());
    assert!(!t.contains_key("stage") && !t.contains_key("kernel_sha256"));
    assert!(file(&format!("etc/stele/keys/{id1}.pem")).starts_with(b"-----BEGIN PUBLIC KEY-----"));
    assert_eq!(
        file("lib/modules/libcrc32c.ko"),
        b"ELF\0softdep=pre: crc32c\0name=libcrc32c\0"
    );
    // Same inputs, same bytes.
    assert_eq!(
        a.to_bytes().unwrap(),
        build(&spec).unwrap().0.to_bytes().unwrap()
    );
    // --stage2 and --kernel: stage = 2, the kernel's sha256.
    let kernel = d.path().join("vmlinuz");
    std::fs::write(&kernel, b"kernel bytes").unwrap();
    let boot_toml_of = |spec: &InitramfsSpec| -> toml::Table {
        let (a, _) = build(spec).unwrap();
        let text = a
            .entries()
            .find_map(|(p, e)| match (&e.kind, p == "etc/stele/boot.toml") {
                (EntryKind::File(d), true) => Some(String::from_utf8(d.clone()).unwrap()),
                _ => None,
            })
            .unwrap();
        text.parse().unwrap()
    };
    let t = boot_toml_of(&InitramfsSpec {
        kernel: Some(kernel.clone()),
        ..spec.clone()
    });
    let sha = stele_verifier::hex::encode(&sha2::Sha256::digest(b"kernel bytes"));
    assert_eq!(t["kernel_sha256"].as_str(), Some(sha.as_str()));
    let t = boot_toml_of(&InitramfsSpec {
        stage2: true,
        ..spec.clone()
    });
    assert_eq!(t["stage"].as_integer(), Some(2));
    // A config that sets threshold is refused.
    let bad = d.path().join("bad.toml");
    std::fs::write(&bad, "threshold = 1\n").unwrap();
    let spec = InitramfsSpec {
        config: Some(bad),
        ..spec
    };
    assert!(matches!(
        build(&spec),
        Err(InitramfsError::Generated { .. })
    ));
}

#[test]
fn storage_aliases_of_a_modules_dir_and_none_without_modules_alias() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("modules.dep"),
        "kernel/drivers/nvme/host/nvme.ko:\nkernel/net/x.ko:\n",
    )
    .unwrap();
    assert_eq!(storage_aliases(d.path()).unwrap(), "");
    std::fs::write(
        d.path().join("modules.alias"),
        "alias pci:v*d*sv*sd*bc01sc08i02* nvme\nalias pci:v*d*sv*sd*bc02* x\n",
    )
    .unwrap();
    assert_eq!(
        storage_aliases(d.path()).unwrap(),
        "alias pci:v*d*sv*sd*bc01sc08i02* nvme\n"
    );
}

//! Tests of the hardware profiles on a fake modules directory shaped like Debian's.

use super::*;

const NVME_PCI: &str = "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02";
const MEGARAID_PCI: &str = "pci:v00001000d00000060sv00001000sd00001000bc01sc04i00";

fn fake() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let dep = "kernel/drivers/nvme/host/nvme-core.ko:\n\
        kernel/drivers/nvme/host/nvme.ko: kernel/drivers/nvme/host/nvme-core.ko\n\
        kernel/drivers/scsi/scsi_mod.ko:\n\
        kernel/drivers/scsi/sd_mod.ko: kernel/drivers/scsi/scsi_mod.ko\n\
        kernel/drivers/ata/libata.ko: kernel/drivers/scsi/scsi_mod.ko\n\
        kernel/drivers/ata/libahci.ko: kernel/drivers/ata/libata.ko kernel/drivers/scsi/scsi_mod.ko\n\
        kernel/drivers/ata/ahci.ko: kernel/drivers/ata/libahci.ko kernel/drivers/ata/libata.ko kernel/drivers/scsi/scsi_mod.ko\n\
        kernel/drivers/md/dm-mod.ko:\n\
        kernel/drivers/md/dm-verity.ko: kernel/drivers/md/dm-mod.ko\n\
        kernel/drivers/scsi/megaraid/megaraid_sas.ko: kernel/drivers/scsi/scsi_mod.ko\n\
        kernel/drivers/watchdog/wdat_wdt.ko:\n\
        kernel/drivers/misc/noalias.ko:\n";
    for line in dep.lines() {
        let rel = line.split(':').next().unwrap();
        let p = d.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"\0name=x\0").unwrap();
    }
    std::fs::write(d.path().join("modules.dep"), dep).unwrap();
    std::fs::write(
        d.path().join("modules.alias"),
        "alias pci:v*d*sv*sd*bc01sc08i02* nvme\n\
         alias pci:v*d*sv*sd*bc01sc06i01* ahci\n\
         alias scsi:t-0x00* sd_mod\n\
         alias pci:v00001000d00000060sv*sd*bc*sc*i* megaraid_sas\n\
         alias platform:wdat_wdt wdat_wdt\n",
    )
    .unwrap();
    std::fs::write(
        d.path().join("modules.builtin"),
        "kernel/drivers/char/tpm/tpm_tis.ko\n",
    )
    .unwrap();
    d
}

const DRIVERS: &[Driver] = &[
    d("nvme", &[]),
    d("ahci", &["sd_mod"]),
    d("tpm_tis", &[]),
    d("i6300esb", &[]),
    d("wdat_wdt", &[]),
    d("noalias", &[]),
];

fn names(order: &[ResolvedModule]) -> Vec<&str> {
    order.iter().map(|m| m.name.as_str()).collect()
}

#[test]
fn drivers_are_gated_by_their_own_device_aliases() {
    let dir = fake();
    let db = ModuleDb::load(dir.path()).unwrap();
    let (order, gates) = plan(&db, &["dm_verity".to_owned()], DRIVERS, None).unwrap();
    // tpm_tis is built in, i6300esb absent: neither is carried.
    assert_eq!(
        names(&order),
        [
            "dm_mod",
            "dm_verity",
            "nvme_core",
            "nvme",
            "scsi_mod",
            "libata",
            "libahci",
            "ahci",
            "sd_mod",
            "wdat_wdt",
            "noalias"
        ]
    );
    let nvme = vec!["pci:v*d*sv*sd*bc01sc08i02*".to_owned()];
    let ahci = vec!["pci:v*d*sv*sd*bc01sc06i01*".to_owned()];
    assert_eq!(gates["nvme.ko"], nvme);
    assert_eq!(gates["nvme-core.ko"], nvme);
    for m in [
        "ahci.ko",
        "libahci.ko",
        "libata.ko",
        "scsi_mod.ko",
        "sd_mod.ko",
    ] {
        assert_eq!(gates[m], ahci, "{m}");
    }
    assert_eq!(gates["wdat_wdt.ko"], ["platform:wdat_wdt"]);
    // The core, and a driver without device aliases, always load.
    for m in ["dm-verity.ko", "dm-mod.ko", "noalias.ko"] {
        assert!(!gates.contains_key(m), "{m}");
    }
}

#[test]
fn what_every_boot_needs_is_never_gated() {
    let dir = fake();
    let db = ModuleDb::load(dir.path()).unwrap();
    let always = ["dm_verity".to_owned(), "sd_mod".to_owned()];
    let (_, gates) = plan(&db, &always, DRIVERS, None).unwrap();
    assert!(!gates.contains_key("sd_mod.ko"));
    assert!(!gates.contains_key("scsi_mod.ko"));
    assert!(gates.contains_key("libata.ko"));
}

#[test]
fn usb_storage_on_request_brings_sd_mod_unconditionally() {
    let dir = fake();
    let dep = std::fs::read_to_string(dir.path().join("modules.dep")).unwrap();
    let usb = "kernel/drivers/usb/storage/usb-storage.ko: kernel/drivers/scsi/scsi_mod.ko\n";
    let p = dir.path().join("kernel/drivers/usb/storage/usb-storage.ko");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, b"\0name=usb_storage\0").unwrap();
    std::fs::write(dir.path().join("modules.dep"), dep + usb).unwrap();
    let db = ModuleDb::load(dir.path()).unwrap();
    let (order, gates) = plan(&db, &["usb-storage".to_owned()], DRIVERS, None).unwrap();
    let n = names(&order);
    assert!(n.contains(&"usb_storage") && n.contains(&"sd_mod"), "{n:?}");
    assert!(!gates.contains_key("sd_mod.ko"), "{gates:?}");
}

#[test]
fn host_takes_the_drivers_of_present_devices() {
    let dir = fake();
    let db = ModuleDb::load(dir.path()).unwrap();
    let present = vec![NVME_PCI.to_owned(), MEGARAID_PCI.to_owned()];
    let drivers = super::drivers(&db, Hardware::Host, &present);
    assert!(drivers.iter().any(|d| d.module == "megaraid_sas"));
    let (order, gates) = plan(&db, &[], &drivers, Some(&present)).unwrap();
    assert_eq!(
        names(&order),
        ["nvme_core", "nvme", "scsi_mod", "megaraid_sas"]
    );
    assert!(gates.contains_key("megaraid_sas.ko"));
    let qemu = super::drivers(&db, Hardware::Qemu, &present);
    assert_eq!(qemu, QEMU);
}

#[test]
fn present_devices_from_sysfs() {
    let sys = tempfile::tempdir().unwrap();
    for (bus, dev, alias) in [
        ("pci", "0000:00:04.0", NVME_PCI),
        ("acpi", "PNP0C31:00", "acpi:PNP0C31:"),
        ("platform", "serial8250", "platform:serial8250"),
        ("usb", "1-1", "usb:v0001"),
    ] {
        let p = sys.path().join("bus").join(bus).join("devices").join(dev);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("modalias"), format!("{alias}\n")).unwrap();
    }
    assert_eq!(
        present_modaliases(sys.path()),
        ["acpi:PNP0C31:", NVME_PCI, "platform:serial8250"]
    );
    assert!(matches_any(
        &["acpi*:PNP0C31:*".to_owned()],
        &present_modaliases(sys.path())
    ));
}

#[test]
fn the_generic_profile_carries_the_pstore_backends_init_gives_parameters() {
    for b in stele_verifier::kmod::PSTORE_BACKENDS {
        assert!(
            GENERIC
                .iter()
                .any(|d| crate::modules::normalize(&d.module) == b),
            "{b}"
        );
    }
}

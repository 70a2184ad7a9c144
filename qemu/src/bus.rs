//! The buses a VM's disks sit on (virtio-blk, NVMe, SATA/AHCI, virtio-scsi, USB), as real
//! machines have them: [`Disk`] and the pure [`disk_args`] that turns a VM's disks into
//! QEMU arguments, with one controller per bus that needs one.

use std::path::PathBuf;

/// The bus a disk is attached to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DiskBus {
    /// virtio-blk (`/dev/vdX`): QEMU's `-drive if=virtio`.
    #[default]
    Virtio,
    /// An NVMe controller per disk (`/dev/nvmeXn1`).
    Nvme,
    /// A port of an AHCI controller (`/dev/sdX`, six ports per controller).
    Sata,
    /// virtio-scsi (`/dev/sdX`).
    Scsi,
    /// A USB mass-storage stick (removable) on an xHCI controller (`/dev/sdX`).
    Usb,
}

impl DiskBus {
    /// Every bus, in the order of [`DiskBus::name`]'s list.
    pub const ALL: [DiskBus; 5] = [
        DiskBus::Virtio,
        DiskBus::Nvme,
        DiskBus::Sata,
        DiskBus::Scsi,
        DiskBus::Usb,
    ];

    /// The name on the command line (`--disk-bus`).
    pub fn name(self) -> &'static str {
        match self {
            DiskBus::Virtio => "virtio",
            DiskBus::Nvme => "nvme",
            DiskBus::Sata => "sata",
            DiskBus::Scsi => "scsi",
            DiskBus::Usb => "usb",
        }
    }

    /// The bus called `name`, if any.
    pub fn from_name(name: &str) -> Option<DiskBus> {
        DiskBus::ALL.into_iter().find(|b| b.name() == name)
    }
}

/// One disk image of a VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    /// A raw image.
    pub path: PathBuf,
    /// The guest cannot change the file. QEMU's SATA disk (`ide-hd`) cannot be read-only:
    /// there the disk is attached with `snapshot=on` (the guest's writes go to a temporary
    /// overlay and are dropped; the file is never written).
    pub readonly: bool,
    pub bus: DiskBus,
}

impl Disk {
    /// A writable virtio disk. Pure.
    pub fn new(path: impl Into<PathBuf>) -> Disk {
        Disk {
            path: path.into(),
            readonly: false,
            bus: DiskBus::Virtio,
        }
    }

    /// The same disk, read-only. Pure.
    pub fn read_only(mut self) -> Disk {
        self.readonly = true;
        self
    }

    /// The same disk on `bus`. Pure.
    pub fn on(mut self, bus: DiskBus) -> Disk {
        self.bus = bus;
        self
    }
}

/// Disks per AHCI controller (QEMU's `ahci` has six ports).
const AHCI_PORTS: usize = 6;

/// The QEMU arguments attaching `disks` in order: each disk is `-drive ...,id=diskN` plus
/// its device; the controllers a bus needs (`ahciN`, `scsi0`, `xhci0`) come first, once.
/// virtio disks keep `-drive ...,if=virtio`. Pure.
pub fn disk_args(disks: &[Disk]) -> Vec<String> {
    // QEMU's option syntax doubles commas inside a value.
    let escape = |p: &PathBuf| p.display().to_string().replace(',', ",,");
    let count = |bus: DiskBus| disks.iter().filter(|d| d.bus == bus).count();
    let mut a = Vec::new();
    let mut device = |s: String| a.extend(["-device".to_string(), s]);
    for n in 0..count(DiskBus::Sata).div_ceil(AHCI_PORTS) {
        device(format!("ahci,id=ahci{n}"));
    }
    if count(DiskBus::Scsi) > 0 {
        device("virtio-scsi-pci,id=scsi0".into());
    }
    if count(DiskBus::Usb) > 0 {
        device("qemu-xhci,id=xhci0".into());
    }
    let mut sata = 0;
    for (n, d) in disks.iter().enumerate() {
        let file = format!("file={},format=raw", escape(&d.path));
        let ro = match (d.readonly, d.bus) {
            (false, _) => "",
            (true, DiskBus::Sata) => ",snapshot=on",
            (true, _) => ",readonly=on",
        };
        if d.bus == DiskBus::Virtio {
            a.extend(["-drive".into(), format!("{file},if=virtio{ro}")]);
            continue;
        }
        a.extend(["-drive".into(), format!("{file},if=none,id=disk{n}{ro}")]);
        let dev = match d.bus {
            DiskBus::Virtio => unreachable!("virtio disks are attached above"),
            DiskBus::Nvme => format!("nvme,drive=disk{n},serial=stele{n}"),
            DiskBus::Sata => {
                let (ctl, port) = (sata / AHCI_PORTS, sata % AHCI_PORTS);
                sata += 1;
                format!("ide-hd,drive=disk{n},bus=ahci{ctl}.{port}")
            }
            DiskBus::Scsi => format!("scsi-hd,drive=disk{n},bus=scsi0.0"),
            DiskBus::Usb => format!("usb-storage,drive=disk{n},bus=xhci0.0,removable=on"),
        };
        a.extend(["-device".into(), dev]);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::pair;

    #[test]
    fn names_round_trip() {
        for b in DiskBus::ALL {
            assert_eq!(DiskBus::from_name(b.name()), Some(b));
        }
        assert_eq!(DiskBus::from_name("ide"), None);
        assert_eq!(DiskBus::default(), DiskBus::Virtio);
    }

    #[test]
    fn virtio_is_unchanged() {
        let a = disk_args(&[Disk::new("/d/a,b.img"), Disk::new("/d/r.img").read_only()]);
        assert_eq!(
            a,
            [
                "-drive",
                "file=/d/a,,b.img,format=raw,if=virtio",
                "-drive",
                "file=/d/r.img,format=raw,if=virtio,readonly=on"
            ]
        );
    }

    #[test]
    fn each_bus_has_its_device_and_controller() {
        let cases = [
            (DiskBus::Nvme, None, "nvme,drive=disk0,serial=stele0"),
            (
                DiskBus::Sata,
                Some("ahci,id=ahci0"),
                "ide-hd,drive=disk0,bus=ahci0.0",
            ),
            (
                DiskBus::Scsi,
                Some("virtio-scsi-pci,id=scsi0"),
                "scsi-hd,drive=disk0,bus=scsi0.0",
            ),
            (
                DiskBus::Usb,
                Some("qemu-xhci,id=xhci0"),
                "usb-storage,drive=disk0,bus=xhci0.0,removable=on",
            ),
        ];
        for (bus, controller, dev) in cases {
            let a = disk_args(&[Disk::new("/d/x.img").on(bus)]);
            assert_eq!(
                pair(&a, "-drive"),
                ["file=/d/x.img,format=raw,if=none,id=disk0"],
                "{bus:?}"
            );
            let mut want: Vec<&str> = controller.into_iter().collect();
            want.push(dev);
            assert_eq!(pair(&a, "-device"), want, "{bus:?}");
        }
    }

    #[test]
    fn read_only_sata_is_a_snapshot() {
        let a = disk_args(&[
            Disk::new("/d/s.img").on(DiskBus::Sata).read_only(),
            Disk::new("/d/n.img").on(DiskBus::Nvme).read_only(),
        ]);
        assert_eq!(
            pair(&a, "-drive"),
            [
                "file=/d/s.img,format=raw,if=none,id=disk0,snapshot=on",
                "file=/d/n.img,format=raw,if=none,id=disk1,readonly=on"
            ]
        );
    }

    #[test]
    fn mixed_buses_one_controller_each() {
        let mut disks: Vec<Disk> = (0..7)
            .map(|i| Disk::new(format!("/d/s{i}.img")).on(DiskBus::Sata))
            .collect();
        disks.push(Disk::new("/d/u.img").on(DiskBus::Usb));
        disks.push(Disk::new("/d/u2.img").on(DiskBus::Usb));
        disks.insert(0, Disk::new("/d/v.img"));
        let a = disk_args(&disks);
        let devs = pair(&a, "-device");
        assert_eq!(
            &devs[..3],
            ["ahci,id=ahci0", "ahci,id=ahci1", "qemu-xhci,id=xhci0"]
        );
        assert_eq!(devs[3], "ide-hd,drive=disk1,bus=ahci0.0");
        assert_eq!(devs[8], "ide-hd,drive=disk6,bus=ahci0.5");
        assert_eq!(devs[9], "ide-hd,drive=disk7,bus=ahci1.0");
        assert_eq!(devs.len(), 3 + 7 + 2);
        assert_eq!(pair(&a, "-drive")[0], "file=/d/v.img,format=raw,if=virtio");
    }
}

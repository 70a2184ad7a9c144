//! Kernel module files in the initramfs: plain `.ko` or compressed as distributions ship
//! them (`.ko.gz`, `.ko.xz`, `.ko.zst`). One definition for `stele initramfs` (which files
//! it accepts and records in boot.toml, which kernel configuration can load them) and for
//! stele-init (which files it hands to `finit_module` as compressed).

/// How a module file is stored, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModuleFormat {
    Plain,
    Gzip,
    Xz,
    Zstd,
}

impl ModuleFormat {
    /// Every format.
    pub const ALL: [ModuleFormat; 4] = [
        ModuleFormat::Plain,
        ModuleFormat::Gzip,
        ModuleFormat::Xz,
        ModuleFormat::Zstd,
    ];

    /// The end of a file name in this format.
    pub fn suffix(self) -> &'static str {
        match self {
            ModuleFormat::Plain => ".ko",
            ModuleFormat::Gzip => ".ko.gz",
            ModuleFormat::Xz => ".ko.xz",
            ModuleFormat::Zstd => ".ko.zst",
        }
    }

    /// The format of module file `name` (`dm-verity.ko.xz`), `None` when it is no module
    /// file name. Pure.
    pub fn of(name: &str) -> Option<ModuleFormat> {
        ModuleFormat::ALL.into_iter().find(|f| {
            name.strip_suffix(f.suffix())
                .is_some_and(|stem| !stem.is_empty())
        })
    }

    /// Compressed: the kernel decompresses it itself (`finit_module` with
    /// `MODULE_INIT_COMPRESSED_FILE`).
    pub fn compressed(self) -> bool {
        self != ModuleFormat::Plain
    }

    /// The compressor's name (`xz`), for messages.
    pub fn name(self) -> &'static str {
        match self {
            ModuleFormat::Plain => "uncompressed",
            ModuleFormat::Gzip => "gzip",
            ModuleFormat::Xz => "xz",
            ModuleFormat::Zstd => "zstd",
        }
    }

    /// The kernel options that must be `y` for the kernel to load a module in this format:
    /// in-kernel decompression, and the one algorithm it was built for (Linux decompresses
    /// only the `CONFIG_MODULE_COMPRESS_*` chosen at build time). None for plain modules.
    pub fn kernel_config(self) -> &'static [&'static str] {
        match self {
            ModuleFormat::Plain => &[],
            ModuleFormat::Gzip => &["CONFIG_MODULE_DECOMPRESS", "CONFIG_MODULE_COMPRESS_GZIP"],
            ModuleFormat::Xz => &["CONFIG_MODULE_DECOMPRESS", "CONFIG_MODULE_COMPRESS_XZ"],
            ModuleFormat::Zstd => &["CONFIG_MODULE_DECOMPRESS", "CONFIG_MODULE_COMPRESS_ZSTD"],
        }
    }
}

/// The module name of a file name, path or bare name (`kernel/drivers/md/dm-verity.ko.xz`
/// -> `dm_verity`): its base name without the module suffix, dashes as underscores (as
/// modprobe compares them). Pure.
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = ModuleFormat::ALL
        .into_iter()
        .rev()
        .find_map(|f| base.strip_suffix(f.suffix()))
        .unwrap_or(base);
    stem.replace('-', "_")
}

/// The pstore backends (docs/BOOT.md "Why the last boot ended"): the generic hardware
/// profile carries them where the kernel has them as modules, and stele-init loads them
/// with their `<module>.<param>=<value>` words of the kernel command line, as modprobe
/// would (ramoops needs its memory region there; a built-in backend reads them itself).
pub const PSTORE_BACKENDS: [&str; 2] = ["ramoops", "efi_pstore"];

/// The parameters the kernel command line `cmdline` gives module `file` (a file or module
/// name) when it is one of the [`PSTORE_BACKENDS`]: each `<module>.<param>=<value>` word,
/// as `<param>=<value>`, space-separated (dashes and underscores of the module name alike).
/// Only the pstore backends: the command line must not retune any other module (dm-verity
/// and the filesystems above all). Pure.
pub fn cmdline_params(file: &str, cmdline: &str) -> String {
    let name = module_name(file);
    if !PSTORE_BACKENDS.contains(&name.as_str()) {
        return String::new();
    }
    let mut out: Vec<&str> = Vec::new();
    for w in cmdline.split_ascii_whitespace() {
        let Some((module, param)) = w.split_once('.') else {
            continue;
        };
        if module.replace('-', "_") == name && param.contains('=') && !param.contains('"') {
            out.push(param);
        }
    }
    out.join(" ")
}

/// The buses whose devices stele-init scans for modaliases
/// (`/sys/bus/<bus>/devices/*/modalias`): their devices exist before a driver binds (PCI,
/// ACPI, platform) or appear while the controller's driver loads (virtio). Drivers whose
/// device aliases are all of other buses (scsi, mmc, usb: devices found asynchronously)
/// are not gated.
pub const SCANNED_BUSES: [&str; 4] = ["pci", "acpi", "platform", "virtio"];

/// The modalias stele-init counts as present when the machine booted through UEFI
/// (`/sys/firmware/efi` exists): it gates efivarfs, which PID 1 needs to read the boot
/// disk the firmware names and which a BIOS boot's kernel refuses to load (docs/BOOT.md
/// "The boot disk").
pub const EFI_ALIAS: &str = "firmware:efi";

/// Where the kernel shows that it booted through UEFI.
pub const EFI_SYSFS: &str = "firmware/efi";

/// A modules.alias pattern of a device on one of the [`SCANNED_BUSES`]
/// (`pci:v*d*sv*sd*bc01sc08i02*`, `acpi*:PNP0C31:*`). Pure.
pub fn scanned_alias(pattern: &str) -> bool {
    SCANNED_BUSES.iter().any(|b| {
        pattern
            .strip_prefix(b)
            .is_some_and(|rest| rest.starts_with(':') || rest.starts_with('*'))
    })
}

/// Shell-style pattern match (`*`, `?`, `[...]`) as modules.alias patterns and sysfs
/// `modalias` values use them: one matcher for the build (alias lookup), stele-init (which
/// devices are present) and the "no stele disk" diagnosis ([`crate::modalias`], iterative:
/// never exponential in the `*`s of a pattern).
pub use crate::modalias::glob_match;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_from_file_names() {
        let cases = [
            ("dm-verity.ko", Some(ModuleFormat::Plain)),
            ("virtio_blk.ko.xz", Some(ModuleFormat::Xz)),
            ("nvme.ko.zst", Some(ModuleFormat::Zstd)),
            ("ahci.ko.gz", Some(ModuleFormat::Gzip)),
            (".ko", None),
            (".ko.xz", None),
            ("ahci.ko.bz2", None),
            ("ahci.o", None),
            ("ahci", None),
        ];
        for (name, want) in cases {
            assert_eq!(ModuleFormat::of(name), want, "{name}");
        }
        assert!(!ModuleFormat::Plain.compressed());
        assert!(ModuleFormat::Plain.kernel_config().is_empty());
        for f in [ModuleFormat::Gzip, ModuleFormat::Xz, ModuleFormat::Zstd] {
            assert!(f.compressed());
            assert_eq!(f.kernel_config()[0], "CONFIG_MODULE_DECOMPRESS");
            assert!(f.kernel_config()[1].ends_with(&f.name().to_uppercase()));
        }
    }

    #[test]
    fn scanned_aliases_and_globs() {
        for a in [
            "pci:v*d*sv*sd*bc01sc08i02*",
            "acpi*:PNP0C31:*",
            "platform:iTCO_wdt",
            "virtio:d00000002v*",
        ] {
            assert!(scanned_alias(a), "{a}");
        }
        for a in [
            "scsi:t-0x00*",
            "mmc:block",
            "usb:v*d*",
            "pcie:x",
            "fs-erofs",
            "crypto-crc32c",
        ] {
            assert!(!scanned_alias(a), "{a}");
        }
        assert!(glob_match(
            "pci:v*d*sv*sd*bc01sc08i02*",
            "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02"
        ));
        assert!(glob_match("acpi*:PNP0C31:*", "acpi:PNP0C31:"));
        assert!(!glob_match(
            "virtio:d00000002v*",
            "virtio:d00000008v00001AF4"
        ));
    }

    #[test]
    fn names_drop_the_suffix_and_dashes() {
        assert_eq!(module_name("kernel/drivers/md/dm-verity.ko"), "dm_verity");
        assert_eq!(
            module_name("kernel/drivers/md/dm-verity.ko.xz"),
            "dm_verity"
        );
        assert_eq!(module_name("nvme-core.ko.zst"), "nvme_core");
        assert_eq!(module_name("sd_mod"), "sd_mod");
    }

    #[test]
    fn only_the_pstore_backends_take_parameters_from_the_command_line() {
        let cmdline = "console=ttyS0 memmap=1M$0x10000000 ramoops.mem_address=0x10000000 ramoops.mem_size=0x100000 dm_verity.prefetch_cluster=0 efi-pstore.pstore_disable=0 ramoops.bad";
        assert_eq!(
            cmdline_params("ramoops.ko", cmdline),
            "mem_address=0x10000000 mem_size=0x100000"
        );
        assert_eq!(
            cmdline_params("efi-pstore.ko.xz", cmdline),
            "pstore_disable=0"
        );
        assert_eq!(cmdline_params("dm-verity.ko", cmdline), "");
        assert_eq!(cmdline_params("ramoops.ko", "console=ttyS0"), "");
        assert_eq!(cmdline_params("ramoops.ko", "ramoops.x=\"a b\""), "");
    }
}

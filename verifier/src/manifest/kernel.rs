//! The manifest's optional `[kernel]` table: the slot's own kernel and stage-2 initramfs
//! inside its filesystem, and the stage-2 command line (docs/FORMATS.md, "The `[kernel]`
//! table"). The one place their rules live: `stele image build` writes only what
//! [`KernelInfo::check`] accepts, and stage 1 boots only what it accepts.

use crate::{Error, Result};

/// Where `stele image build --kernel` puts the kernel.
pub const DEFAULT_KERNEL_PATH: &str = "/boot/stele/vmlinuz";
/// Where `stele image build --initrd` puts the stage-2 initramfs.
pub const DEFAULT_INITRD_PATH: &str = "/boot/stele/initrd";
/// Longest path of the kernel or the initrd.
pub const MAX_PATH_LEN: usize = 255;
/// Largest kernel or initrd.
pub const MAX_FILE_SIZE: u64 = 1 << 30;
/// Longest stage-2 command line from the manifest; stage 1 appends
/// ` stele.stage2=<x> panic=<n>` to it, well inside the kernel's 2048 bytes.
pub const MAX_CMDLINE_LEN: usize = 1024;
/// The kernel option stage 1 adds to name the slot; the manifest's command line may not
/// carry it.
pub const STAGE2_OPTION: &str = "stele.stage2";

/// One file the slot's kernel boot needs: a path inside the slot's filesystem, its size
/// and sha256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelFile {
    pub path: String,
    pub size: u64,
    pub sha256: [u8; 32],
}

/// `[kernel]` of the body: the kernel stage 1 hands over to with kexec, its stage-2
/// initramfs and its command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelInfo {
    pub kernel: KernelFile,
    pub initrd: KernelFile,
    /// The stage-2 command line (printable ASCII, at most [`MAX_CMDLINE_LEN`] bytes).
    pub cmdline: String,
}

/// A path inside the slot's filesystem: absolute, plain (no `.`, `..`, `//`, trailing
/// `/`), 2..=255 bytes of printable ASCII other than space. `what` names the key. Pure.
pub fn check_path(what: &'static str, p: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::invalid(what, format!("{p:?}: {why}")));
    if !p.starts_with('/') || p.len() < 2 {
        return bad("must be an absolute path of a file, like \"/boot/stele/vmlinuz\"");
    }
    if p.len() > MAX_PATH_LEN || !p.bytes().all(|b| b.is_ascii_graphic()) {
        return bad("use at most 255 printable ASCII characters, no spaces");
    }
    if p.ends_with('/')
        || p[1..]
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return bad("must be a plain path (no ., .., // or trailing /)");
    }
    Ok(())
}

/// The stage-2 command line: printable ASCII, at most [`MAX_CMDLINE_LEN`] bytes, without
/// [`STAGE2_OPTION`] (stage 1 adds it). Pure.
pub fn check_cmdline(c: &str) -> Result<()> {
    let what = "manifest kernel.cmdline";
    if c.len() > MAX_CMDLINE_LEN || !c.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Err(Error::invalid(
            what,
            format!("use at most {MAX_CMDLINE_LEN} printable ASCII characters"),
        ));
    }
    let sets_stage2 = c.split(' ').any(|w| {
        w.trim_matches('"') == STAGE2_OPTION
            || w.trim_matches('"')
                .starts_with(&format!("{STAGE2_OPTION}="))
    });
    if sets_stage2 {
        return Err(Error::invalid(
            what,
            format!("{c:?} sets {STAGE2_OPTION}, which stage 1 adds itself"),
        ));
    }
    Ok(())
}

impl KernelInfo {
    /// The kernel and initrd at the default paths.
    pub fn at_default_paths(
        kernel: (u64, [u8; 32]),
        initrd: (u64, [u8; 32]),
        cmdline: String,
    ) -> Self {
        let file = |path: &str, (size, sha256): (u64, [u8; 32])| KernelFile {
            path: path.to_string(),
            size,
            sha256,
        };
        KernelInfo {
            kernel: file(DEFAULT_KERNEL_PATH, kernel),
            initrd: file(DEFAULT_INITRD_PATH, initrd),
            cmdline,
        }
    }

    /// The rules of docs/FORMATS.md: plain absolute paths that differ, sizes 1..=1 GiB, the
    /// command line. Pure.
    pub fn check(&self) -> Result<()> {
        check_path("manifest kernel.path", &self.kernel.path)?;
        check_path("manifest kernel.initrd_path", &self.initrd.path)?;
        if self.kernel.path == self.initrd.path {
            return Err(Error::invalid(
                "manifest kernel.initrd_path",
                format!("{:?} is also the kernel's path", self.initrd.path),
            ));
        }
        for (what, size) in [
            ("manifest kernel.size", self.kernel.size),
            ("manifest kernel.initrd_size", self.initrd.size),
        ] {
            if size == 0 || size > MAX_FILE_SIZE {
                return Err(Error::invalid(
                    what,
                    format!("{size} bytes: must be 1 ..= {MAX_FILE_SIZE}"),
                ));
            }
        }
        check_cmdline(&self.cmdline)
    }

    /// The command line stage 1 gives the slot's kernel: the manifest's, then
    /// `stele.stage2=<slot> panic=<panic_secs>` (the kernel takes the last `panic=`). Pure.
    pub fn stage2_cmdline(&self, slot: crate::state::Slot, panic_secs: u64) -> String {
        let extra = format!("{STAGE2_OPTION}={} panic={panic_secs}", slot.name());
        match self.cmdline.trim() {
            "" => extra,
            c => format!("{c} {extra}"),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::state::Slot;

    pub(crate) fn sample() -> KernelInfo {
        KernelInfo::at_default_paths(
            (8_000_000, [0x11; 32]),
            (3_000_000, [0x22; 32]),
            "console=ttyS0 quiet".into(),
        )
    }

    #[test]
    fn paths() {
        for ok in ["/boot/stele/vmlinuz", "/v", "/a.b/c-d_e+f", "/boot/..x"] {
            assert!(check_path("p", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/",
            "boot/vmlinuz",
            "/boot/",
            "/boot//x",
            "/boot/../etc/x",
            "/./x",
            "/a b",
            "/tab\tx",
            "/ü",
            &format!("/{}", "x".repeat(255)),
        ] {
            assert!(
                matches!(check_path("p", bad), Err(Error::Invalid { what: "p", .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn cmdlines() {
        for ok in ["", "console=ttyS0", "a=\"b c\" quiet", &"x".repeat(1024)] {
            assert!(check_cmdline(ok).is_ok(), "{ok}");
        }
        for bad in [
            "console=ttyS0\n",
            "é",
            &"x".repeat(1025),
            "stele.stage2=a",
            "quiet stele.stage2",
            "\"stele.stage2=b\"",
        ] {
            assert!(check_cmdline(bad).is_err(), "{bad:?}");
        }
        assert!(check_cmdline("stele.stage2x=1 stele.slot=a").is_ok());
    }

    #[test]
    fn info_checks() {
        sample().check().unwrap();
        let mut k = sample();
        k.initrd.path = k.kernel.path.clone();
        assert!(matches!(
            k.check(),
            Err(Error::Invalid {
                what: "manifest kernel.initrd_path",
                ..
            })
        ));
        for (kernel, initrd) in [(0, 1), (1, 0), (MAX_FILE_SIZE + 1, 1)] {
            let mut k = sample();
            k.kernel.size = kernel;
            k.initrd.size = initrd;
            assert!(k.check().is_err(), "{kernel} {initrd}");
        }
    }

    #[test]
    fn stage2_command_line_names_the_slot_and_the_panic_delay() {
        let k = sample();
        assert_eq!(
            k.stage2_cmdline(Slot::B, 10),
            "console=ttyS0 quiet stele.stage2=b panic=10"
        );
        let k = KernelInfo {
            cmdline: " ".into(),
            ..sample()
        };
        assert_eq!(k.stage2_cmdline(Slot::A, 1), "stele.stage2=a panic=1");
        // The longest manifest command line still fits the kernel's 2048 bytes.
        let k = KernelInfo {
            cmdline: "x".repeat(MAX_CMDLINE_LEN),
            ..sample()
        };
        assert!(k.stage2_cmdline(Slot::A, 3600).len() < 2047);
    }
}

//! Kernel modules: load the ones boot.toml lists, in order, from /lib/modules (plain, or
//! compressed as the distribution shipped them: the kernel decompresses those); a module
//! boot.toml `modaliases` gates loads only once a present device's modalias matches.

use std::collections::{BTreeMap, HashSet};
use std::ffi::CString;
use std::path::Path;

use stele_verifier::kmod::{cmdline_params, glob_match, ModuleFormat, SCANNED_BUSES};

use crate::sys;

/// Where `stele initramfs` puts the modules (flattened base names).
pub const MODULE_DIR: &str = "/lib/modules";

/// The module file paths to load, in order.
pub fn plan(modules: &[String]) -> Vec<String> {
    modules.iter().map(|m| path(m)).collect()
}

/// Where module file `name` is in the initramfs.
pub fn path(name: &str) -> String {
    format!("{MODULE_DIR}/{name}")
}

/// Outcome of loading the list.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    pub loaded: usize,
    pub already: usize,
    /// `<path>: <cause>` for each module that failed.
    pub failed: Vec<String>,
    /// Gated modules no present device needed.
    pub skipped: usize,
}

/// The modaliases of the devices present under `sys` (`/sys`): every
/// `bus/<bus>/devices/*/modalias` of the [`SCANNED_BUSES`].
pub fn present_modaliases(sys: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for bus in SCANNED_BUSES {
        let Ok(dir) = std::fs::read_dir(sys.join("bus").join(bus).join("devices")) else {
            continue;
        };
        for e in dir.flatten() {
            if let Ok(a) = std::fs::read_to_string(e.path().join("modalias")) {
                out.push(a.trim().to_owned());
            }
        }
    }
    out
}

/// The modules of `modules` to load now, in order: those not `done` that no gate holds back
/// (not in `gates`, or one of their patterns matches a `present` modalias). Pure.
pub fn due<'a>(
    modules: &'a [String],
    gates: &BTreeMap<String, Vec<String>>,
    present: &[String],
    done: &HashSet<&str>,
) -> Vec<&'a str> {
    modules
        .iter()
        .map(String::as_str)
        .filter(|m| !done.contains(m))
        .filter(|m| {
            gates.get(*m).is_none_or(|patterns| {
                patterns
                    .iter()
                    .any(|p| present.iter().any(|a| glob_match(p, a)))
            })
        })
        .collect()
}

/// The parameters a module is loaded with: `nowayout=1` for the watchdog drivers when the
/// watchdog is used (so that it stays running across kexec and cannot be stopped); a
/// pstore backend's words of the kernel command line `cmdline` ([`cmdline_params`]);
/// none otherwise. Pure.
pub fn params(module: &str, watchdog_modules: &[String], watchdog: bool, cmdline: &str) -> CString {
    if watchdog && watchdog_modules.iter().any(|m| m == module) {
        return c"nowayout=1".to_owned();
    }
    // The command line has no NUL; a word that did would only lose its parameters.
    CString::new(cmdline_params(module, cmdline)).unwrap_or_default()
}

/// Loads the modules of the plan that are [`due`] (with the [`params`] of `cmdline`),
/// in rounds: a driver's probe adds devices (virtio_pci the virtio devices, lpc_ich the
/// iTCO watchdog), so the present modaliases are read again until a round loads nothing.
/// A failure is recorded and the rest still load (a later step then fails with its own
/// cause, e.g. a missing partition or dm target).
pub fn load(
    modules: &[String],
    watchdog_modules: &[String],
    watchdog: bool,
    gates: &BTreeMap<String, Vec<String>>,
    cmdline: &str,
) -> Loaded {
    let mut out = Loaded::default();
    let mut done: HashSet<&str> = HashSet::new();
    loop {
        let present = if gates.is_empty() {
            Vec::new()
        } else {
            present_modaliases(Path::new("/sys"))
        };
        let now = due(modules, gates, &present, &done);
        if now.is_empty() {
            break;
        }
        for name in now {
            done.insert(name);
            let path = path(name);
            let compressed = ModuleFormat::of(name).is_some_and(ModuleFormat::compressed);
            let p = params(name, watchdog_modules, watchdog, cmdline);
            match sys::finit_module(&path, &p, compressed) {
                Ok(true) => out.loaded += 1,
                Ok(false) => out.already += 1,
                Err(e) => out.failed.push(e.to_string()),
            }
        }
    }
    out.skipped = modules.len() - done.len();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_keeps_order_and_dir() {
        let m = vec![
            "virtio_ring.ko".to_string(),
            "dm-mod.ko".into(),
            "dm-verity.ko".into(),
        ];
        assert_eq!(
            plan(&m),
            [
                "/lib/modules/virtio_ring.ko",
                "/lib/modules/dm-mod.ko",
                "/lib/modules/dm-verity.ko"
            ]
        );
        assert!(plan(&[]).is_empty());
    }

    #[test]
    fn watchdog_drivers_get_nowayout_only_when_the_watchdog_is_used() {
        let wd = ["i6300esb.ko".to_string()];
        let c = "ramoops.mem_size=4096 i6300esb.nowayout=0";
        assert_eq!(
            params("i6300esb.ko", &wd, true, c).as_c_str(),
            c"nowayout=1"
        );
        assert_eq!(params("i6300esb.ko", &wd, false, c).as_c_str(), c"");
        assert_eq!(params("dm-verity.ko", &wd, true, c).as_c_str(), c"");
        assert_eq!(
            params("ramoops.ko", &wd, true, c).as_c_str(),
            c"mem_size=4096"
        );
    }

    #[test]
    fn gated_modules_wait_for_their_devices() {
        let modules: Vec<String> = [
            "dm-mod.ko",
            "libata.ko",
            "ahci.ko",
            "virtio_pci.ko",
            "virtio_blk.ko",
        ]
        .map(String::from)
        .to_vec();
        let gates: BTreeMap<String, Vec<String>> = [
            ("libata.ko", "pci:v*d*sv*sd*bc01sc06i01*"),
            ("ahci.ko", "pci:v*d*sv*sd*bc01sc06i01*"),
            ("virtio_pci.ko", "pci:v00001AF4d*sv*sd*bc*sc*i*"),
            ("virtio_blk.ko", "virtio:d00000002v*"),
        ]
        .into_iter()
        .map(|(m, p)| (m.to_owned(), vec![p.to_owned()]))
        .collect();
        // A virtio machine: first the PCI devices, then (virtio_pci loaded) the virtio ones.
        let pci = vec!["pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00".to_owned()];
        let mut done = HashSet::new();
        let first = due(&modules, &gates, &pci, &done);
        assert_eq!(first, ["dm-mod.ko", "virtio_pci.ko"]);
        done.extend(first);
        let mut both = pci.clone();
        both.push("virtio:d00000002v00001AF4".to_owned());
        assert_eq!(due(&modules, &gates, &both, &done), ["virtio_blk.ko"]);
        done.insert("virtio_blk.ko");
        assert!(
            due(&modules, &gates, &both, &done).is_empty(),
            "no AHCI: ahci, libata stay"
        );
        // No gates (an initramfs without `modaliases`): everything, in order.
        assert_eq!(
            due(&modules, &BTreeMap::new(), &[], &HashSet::new()).len(),
            5
        );
    }

    #[test]
    fn missing_module_is_reported_not_fatal() {
        let r = load(
            &["stele-no-such-module.ko".to_string()],
            &[],
            false,
            &BTreeMap::new(),
            "",
        );
        assert_eq!(r.loaded, 0);
        assert_eq!(r.failed.len(), 1);
        assert!(
            r.failed[0].contains("/lib/modules/stele-no-such-module.ko"),
            "{:?}",
            r.failed
        );
    }
}

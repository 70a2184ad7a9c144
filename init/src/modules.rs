//! Kernel modules: load the ones boot.toml lists, in order, from /lib/modules.

use std::ffi::CStr;

use crate::sys;

/// Where `stele initramfs` puts the modules (flattened base names).
pub const MODULE_DIR: &str = "/lib/modules";

/// The module file paths to load, in order.
pub fn plan(modules: &[String]) -> Vec<String> {
    modules
        .iter()
        .map(|m| format!("{MODULE_DIR}/{m}"))
        .collect()
}

/// Outcome of loading the list.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    pub loaded: usize,
    pub already: usize,
    /// `<path>: <cause>` for each module that failed.
    pub failed: Vec<String>,
}

/// The parameters a module is loaded with: `nowayout=1` for the watchdog drivers when the
/// watchdog is used (so that it stays running across kexec and cannot be stopped), none
/// otherwise. Pure.
pub fn params(module: &str, watchdog_modules: &[String], watchdog: bool) -> &'static CStr {
    if watchdog && watchdog_modules.iter().any(|m| m == module) {
        c"nowayout=1"
    } else {
        c""
    }
}

/// Loads every module of the plan (watchdog drivers as [`params`] says); a failure is
/// recorded and the rest still load (a later step then fails with its own cause, e.g. a
/// missing partition or dm target).
pub fn load(modules: &[String], watchdog_modules: &[String], watchdog: bool) -> Loaded {
    let mut out = Loaded::default();
    for (name, path) in modules.iter().zip(plan(modules)) {
        match sys::finit_module(&path, params(name, watchdog_modules, watchdog)) {
            Ok(true) => out.loaded += 1,
            Ok(false) => out.already += 1,
            Err(e) => out.failed.push(e.to_string()),
        }
    }
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
        assert_eq!(params("i6300esb.ko", &wd, true), c"nowayout=1");
        assert_eq!(params("i6300esb.ko", &wd, false), c"");
        assert_eq!(params("dm-verity.ko", &wd, true), c"");
    }

    #[test]
    fn missing_module_is_reported_not_fatal() {
        let r = load(&["stele-no-such-module.ko".to_string()], &[], false);
        assert_eq!(r.loaded, 0);
        assert_eq!(r.failed.len(), 1);
        assert!(
            r.failed[0].contains("/lib/modules/stele-no-such-module.ko"),
            "{:?}",
            r.failed
        );
    }
}

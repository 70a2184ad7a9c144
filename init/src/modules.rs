//! Kernel modules: load the ones boot.toml lists, in order, from /lib/modules (plain, or
//! compressed as the distribution shipped them: the kernel decompresses those); a module
//! boot.toml `modaliases` gates loads only once a present device's modalias matches.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::CString;
use std::path::Path;
use std::sync::{Condvar, Mutex};

use stele_verifier::kmod::{
    cmdline_params, glob_match, ModuleFormat, EFI_ALIAS, EFI_SYSFS, SCANNED_BUSES,
};

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
    /// Modules loaded at the same time at most (threads).
    pub at_once: usize,
}

/// The modaliases of the devices present under `sys` (`/sys`): every
/// `bus/<bus>/devices/*/modalias` of the [`SCANNED_BUSES`], and [`EFI_ALIAS`] on a UEFI
/// boot.
pub fn present_modaliases(sys: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if sys.join(EFI_SYSFS).is_dir() {
        out.push(EFI_ALIAS.to_owned());
    }
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
/// (not in `gates`, or one of their patterns matches a `present` modalias). Each distinct
/// pattern is tried once (the generic profile repeats a driver's few hundred PCI ids on
/// each of its dependencies). Pure.
pub fn due<'a>(
    modules: &'a [String],
    gates: &BTreeMap<String, Vec<String>>,
    present: &[String],
    done: &HashSet<&str>,
) -> Vec<&'a str> {
    let mut matches: HashMap<&str, bool> = HashMap::new();
    let mut out = Vec::new();
    for m in modules.iter().map(String::as_str) {
        if done.contains(m) {
            continue;
        }
        let open = match gates.get(m) {
            None => true,
            Some(patterns) => patterns.iter().any(|p| {
                *matches
                    .entry(p)
                    .or_insert_with(|| present.iter().any(|a| glob_match(p, a)))
            }),
        };
        if open {
            out.push(m);
        }
    }
    out
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
/// Within a round, a module starts as soon as the ones it needs (boot.toml `module_deps`)
/// are loaded, device drivers first, on as many threads as the machine has CPUs (at most
/// [`MAX_WORKERS`]): the kernel checks, relocates and initializes independent modules at
/// the same time, and a disk's probe runs while the filesystems load.
/// A failure is recorded and the rest still load (a later step then fails with its own
/// cause, e.g. a missing partition or dm target).
pub fn load(
    modules: &[String],
    watchdog_modules: &[String],
    watchdog: bool,
    gates: &BTreeMap<String, Vec<String>>,
    deps: &BTreeMap<String, Vec<String>>,
    cmdline: &str,
) -> Loaded {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS));
    load_with(modules, gates, deps, workers, &|name: &str| {
        let compressed = ModuleFormat::of(name).is_some_and(ModuleFormat::compressed);
        let p = params(name, watchdog_modules, watchdog, cmdline);
        sys::finit_module(&path(name), &p, compressed).map_err(|e| e.to_string())
    })
}

/// Threads loading modules at most: beyond a few, the kernel's module lock and the disk
/// probe, not the CPUs, bound the time.
pub const MAX_WORKERS: usize = 4;

/// [`load`] with `load_one` (true: loaded, false: was already there) on `workers` threads.
fn load_with<F>(
    modules: &[String],
    gates: &BTreeMap<String, Vec<String>>,
    deps: &BTreeMap<String, Vec<String>>,
    workers: usize,
    load_one: &F,
) -> Loaded
where
    F: Fn(&str) -> std::result::Result<bool, String> + Sync,
{
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
        // Without `module_deps` (an initramfs of an older stele) the needs are unknown:
        // the list's order is the only safe one.
        let (workers, driver) = if deps.is_empty() {
            (1, vec![false; now.len()])
        } else {
            (
                workers,
                now.iter().map(|m| gates.contains_key(*m)).collect(),
            )
        };
        out.at_once = out.at_once.max(workers.clamp(1, now.len()));
        for r in load_round(&now, deps, &driver, workers, load_one) {
            match r {
                Ok(true) => out.loaded += 1,
                Ok(false) => out.already += 1,
                Err(e) => out.failed.push(e),
            }
        }
        done.extend(now);
    }
    out.skipped = modules.len() - done.len();
    out
}

/// The module of `round` to start next: of those not `started` whose needs in `round`
/// (`deps`) have all `finished` (tried: a failed one does not hold it back; it then fails
/// with its own cause), the first device driver (`driver`: gated by a modalias, so its
/// probe, which waits for the device, starts early), else the first. Since `module_deps`
/// names only earlier modules, the first one not started is ready once everything before
/// it has finished: loading always goes on. Pure.
fn next_ready(
    round: &[&str],
    deps: &BTreeMap<String, Vec<String>>,
    driver: &[bool],
    started: &[bool],
    finished: &[bool],
) -> Option<usize> {
    let ready = |i: &usize| {
        !started[*i]
            && deps.get(round[*i]).is_none_or(|needs| {
                needs.iter().all(|n| {
                    round
                        .iter()
                        .position(|m| m == n)
                        .is_none_or(|j| finished[j])
                })
            })
    };
    (0..round.len())
        .filter(ready)
        .find(|&i| driver[i])
        .or_else(|| (0..round.len()).find(ready))
}

/// Loads `round` on up to `workers` threads as [`next_ready`] orders it; the results in
/// `round`'s order.
fn load_round<F>(
    round: &[&str],
    deps: &BTreeMap<String, Vec<String>>,
    driver: &[bool],
    workers: usize,
    load_one: &F,
) -> Vec<std::result::Result<bool, String>>
where
    F: Fn(&str) -> std::result::Result<bool, String> + Sync,
{
    struct Progress {
        started: Vec<bool>,
        finished: Vec<bool>,
        results: Vec<Option<std::result::Result<bool, String>>>,
    }
    let n = round.len();
    let progress = Mutex::new(Progress {
        started: vec![false; n],
        finished: vec![false; n],
        results: vec![None; n],
    });
    let changed = Condvar::new();
    let work = || loop {
        let i = {
            let mut p = progress.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(i) = next_ready(round, deps, driver, &p.started, &p.finished) {
                    p.started[i] = true;
                    break i;
                }
                if p.started.iter().all(|s| *s) {
                    return;
                }
                p = changed.wait(p).unwrap_or_else(|e| e.into_inner());
            }
        };
        let r = load_one(round[i]);
        let mut p = progress.lock().unwrap_or_else(|e| e.into_inner());
        p.finished[i] = true;
        p.results[i] = Some(r);
        changed.notify_all();
    };
    let workers = workers.clamp(1, n.max(1));
    if workers == 1 {
        work();
    } else {
        std::thread::scope(|s| {
            for _ in 1..workers {
                s.spawn(work);
            }
            work();
        });
    }
    let p = progress.into_inner().unwrap_or_else(|e| e.into_inner());
    p.results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err("not loaded".to_owned())))
        .collect()
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

    fn deps_of(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(m, d)| ((*m).to_owned(), d.iter().map(|x| (*x).to_owned()).collect()))
            .collect()
    }

    #[test]
    fn a_module_is_ready_once_what_it_needs_has_been_tried() {
        let round = ["crc16.ko", "jbd2.ko", "ext4.ko", "virtio_blk.ko"];
        let deps = deps_of(&[("ext4.ko", &["crc16.ko", "jbd2.ko", "mbcache.ko"])]);
        let plain = [false; 4];
        let mut started = [false; 4];
        let mut finished = [false; 4];
        assert_eq!(
            next_ready(&round, &deps, &plain, &started, &finished),
            Some(0)
        );
        // A device driver that is ready goes first.
        let driver = [false, false, false, true];
        assert_eq!(
            next_ready(&round, &deps, &driver, &started, &finished),
            Some(3)
        );
        started[0] = true;
        started[1] = true;
        // ext4 waits for crc16 and jbd2 (mbcache is not in this round: loaded before, or
        // gated off); virtio_blk needs nothing.
        assert_eq!(
            next_ready(&round, &deps, &plain, &started, &finished),
            Some(3)
        );
        started[3] = true;
        finished[0] = true;
        assert_eq!(next_ready(&round, &deps, &plain, &started, &finished), None);
        finished[1] = true;
        assert_eq!(
            next_ready(&round, &deps, &plain, &started, &finished),
            Some(2)
        );
    }

    /// Independent modules load at the same time (the first waits until the second has
    /// started), and no module starts before the ones it needs have finished.
    #[test]
    fn independent_modules_load_at_the_same_time_and_dependents_wait() {
        let round = [
            "dm-mod.ko",
            "dm-verity.ko",
            "virtio.ko",
            "virtio_blk.ko",
            "ext4.ko",
        ];
        let deps = deps_of(&[
            ("dm-verity.ko", &["dm-mod.ko"]),
            ("virtio_blk.ko", &["virtio.ko"]),
        ]);
        let log: Mutex<Vec<String>> = Mutex::new(Vec::new());
        let seen = Condvar::new();
        let load_one = |name: &str| {
            let mut l = log.lock().unwrap();
            l.push(format!("start {name}"));
            seen.notify_all();
            if name == "dm-mod.ko" {
                let (l2, t) = seen
                    .wait_timeout_while(l, std::time::Duration::from_secs(20), |l| {
                        !l.iter().any(|e| e == "start virtio.ko")
                    })
                    .unwrap();
                assert!(
                    !t.timed_out(),
                    "virtio.ko never started while dm-mod.ko loaded"
                );
                l = l2;
            }
            l.push(format!("end {name}"));
            seen.notify_all();
            Ok(name != "ext4.ko")
        };
        let r = load_round(&round, &deps, &[false; 5], 2, &load_one);
        assert_eq!(r, [Ok(true), Ok(true), Ok(true), Ok(true), Ok(false)]);
        let l = log.into_inner().unwrap();
        let at = |e: &str| l.iter().position(|x| x == e).unwrap();
        assert!(at("end dm-mod.ko") < at("start dm-verity.ko"), "{l:?}");
        assert!(at("end virtio.ko") < at("start virtio_blk.ko"), "{l:?}");
        assert!(at("start virtio.ko") < at("end dm-mod.ko"), "{l:?}");
    }

    /// One CPU, or an initramfs without `module_deps` (an older stele's: the needs are
    /// unknown) on any number: the list's order, one at a time.
    #[test]
    fn without_known_needs_modules_load_in_list_order_and_failures_keep_their_place() {
        let modules: Vec<String> = ["a.ko", "b.ko", "c.ko"].map(String::from).to_vec();
        for workers in [1, 4] {
            let order = Mutex::new(Vec::new());
            let running = std::sync::atomic::AtomicUsize::new(0);
            let r = load_with(
                &modules,
                &BTreeMap::new(),
                &BTreeMap::new(),
                workers,
                &|n: &str| {
                    let at_once = running.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    assert_eq!(at_once, 0, "{n} started while another module loaded");
                    std::thread::yield_now();
                    order.lock().unwrap().push(n.to_owned());
                    running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    if n == "b.ko" {
                        Err(format!("/lib/modules/{n}: no such file"))
                    } else {
                        Ok(true)
                    }
                },
            );
            assert_eq!(order.into_inner().unwrap(), ["a.ko", "b.ko", "c.ko"]);
            assert_eq!((r.loaded, r.already, r.skipped, r.at_once), (2, 0, 0, 1));
            assert_eq!(r.failed, ["/lib/modules/b.ko: no such file"]);
        }
    }
}

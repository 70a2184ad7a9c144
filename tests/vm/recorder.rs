//! The flight recorder under QEMU: a trial slot whose health command fails is abandoned,
//! and `stele update why` (in the guest and on the host with `--disk`) names the slot, its
//! tries and the command's output; a good slot with a corrupted block and nothing to fall
//! back to reboots 10 times, and the ring stays within its bound with the state intact.
//!
//! Needs STELE_KERNEL, STELE_MODULES and STELE_INIT, set by `cargo xtask test`.

use std::collections::BTreeMap;

use crate::fixture::{ballast, change_partition, state, Fixture};
use crate::util::{ok, stele};

/// Version 1: on its first boot installs the bundle on /dev/vdb and reboots; on a later
/// boot asks `why` and shows the history, then powers off.
const V1: &str = r#"#!/bin/sh
sleep 2
if [ ! -e /var/installed ]; then
  touch /var/installed; sync
  /run/stele/bin/stele update install /dev/vdb
  kill -TERM 1
  sleep 100
fi
echo "why: $(/run/stele/bin/stele update why)"
/run/stele/bin/stele update history
echo "v1: done"
kill -USR2 1
sleep 100
"#;

/// Version 2's service runs fine; its health command fails, every time.
const V2: &str = "#!/bin/sh\necho \"v2: up\"\nsleep 1000\n";
const CHECK: &str = "#!/bin/sh\necho checking\necho 'no route to host' >&2\nexit 1\n";

/// A trial slot whose health command exits 1: three tries, each ended by the trial
/// timeout, then slot a again; `why` says so with the evidence, in the guest and offline.
#[test]
fn why_names_the_abandoned_slot_its_tries_and_the_health_commands_output() {
    let fx = Fixture::new();
    let (key, public) = fx.keygen("release");
    let r1 = fx
        .rootfs(
            "root1",
            "healthy_after = 1\nshutdown_grace = 2\n[[service]]\nname = \"app\"\nexec = [\"/bin/app\"]\nrestart = \"never\"\n",
        )
        .file("bin/app", V1, 0o755)
        .build();
    let r2 = fx
        .rootfs(
            "root2",
            "healthy_after = 1\ntrial_timeout = 6\nhealth = [\"/bin/check\"]\nshutdown_grace = 2\n[[service]]\nname = \"app\"\nexec = [\"/bin/app\"]\nrestart = \"never\"\n",
        )
        .file("bin/app", V2, 0o755)
        .file("bin/check", CHECK, 0o755)
        .build();
    let image = |root: &str, v: &str, i: u64, out: &str| {
        fx.image(root, &key)
            .name("test")
            .version(v)
            .index(i)
            .build(out)
    };
    let v1 = image(&r1, "1.0.0", 1, "v1.img");
    let v2 = image(&r2, "2.0.0", 2, "v2.img");
    let initrd = fx.initramfs(&[&public]).build();
    let disk = fx.disk(&v1).build();
    let mut vm = fx.boot(&initrd, &disk).read_only_disk(&v2).start();
    vm.expect("stele: installed test 2.0.0 rollback_index=2 into slot b");
    for _ in 0..3 {
        vm.expect("stele: slot=b version=2.0.0");
        vm.expect("stele: warning: health check /bin/check exited status 1: no route to host");
        vm.expect("stele: slot=b not healthy within trial_timeout = 6s");
    }
    vm.expect("stele: slot=b exhausted, falling back to a");
    let why = vm.expect("why: ");
    let want = "slot b (2.0.0) was abandoned after 3 tries: each boot's health command `/bin/check` exited 1 (last output: checking / no route to host); its trial ended: not healthy within trial_timeout = 6s; the device runs slot a (1.0.0) since ";
    assert!(why.contains(want), "{why}");
    assert!(
        why.contains("slot b is not booted again until an install replaces it"),
        "{why}"
    );
    vm.expect("v1: done");
    let console = vm.powered_off();
    assert_eq!(
        console.matches("stage1: fell-back slot b").count(),
        1,
        "{console}"
    );

    // Offline, on the build host: the same paragraph from the disk image.
    let host = ok(stele(&["update", "why", "--disk", &disk]));
    assert!(host.contains(want), "{host}");
    let history = ok(stele(&["update", "history", "--disk", &disk, "--json"]));
    let h: serde_json::Value = serde_json::from_str(&history).expect("history JSON");
    let kinds: Vec<&str> = h["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or(""))
        .collect();
    for k in [
        "install-started",
        "install-finished",
        "health-failed",
        "trial-failed",
        "fell-back",
        "marked-good",
    ] {
        assert!(kinds.contains(&k), "{k} not in {kinds:?}");
    }
    assert_eq!(
        kinds.iter().filter(|k| **k == "health-failed").count(),
        3,
        "{kinds:?}"
    );
}

/// The events on `disk` per boot id, from `stele update history --disk --json`.
fn events_per_boot(disk: &str) -> (serde_json::Value, BTreeMap<String, usize>) {
    let out = ok(stele(&["update", "history", "--disk", disk, "--json"]));
    let h: serde_json::Value = serde_json::from_str(&out).expect("history JSON");
    let mut per = BTreeMap::new();
    for e in h["events"].as_array().expect("events") {
        *per.entry(e["boot_id"].as_str().unwrap_or("").to_string())
            .or_insert(0) += 1;
    }
    (h, per)
}

/// A good slot with a corrupted block and no other slot: it restarts on every boot
/// (restart_on_corruption). After 10 boots the ring holds at most 8 events per boot, the
/// unconfirmed boots counted 1, 2, 3, ..., no damaged block, and the state is intact.
#[test]
fn a_reboot_loop_stays_within_the_recorders_bound() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("k");
    let reader = "#!/bin/sh\ncat /srv/ballast > /dev/null && echo \"reader: READ-OK\"\nsleep 100\n";
    let root = fx
        .rootfs(
            "root",
            "healthy_after = 30\nshutdown_grace = 2\n[[service]]\nname = \"reader\"\nexec = [\"/bin/reader\"]\nrestart = \"never\"\n",
        )
        .file("bin/reader", reader, 0o755)
        .file("srv/ballast", ballast(64 << 10, 7), 0o644)
        .build();
    let img = fx.image(&root, &k).build("r.img");
    let initrd = fx
        .initramfs(&[&p])
        .config("failure_delay_secs = 1\n")
        .build();
    let d = fx.disk(&img).slot_size("16M").no_data().build();
    let needle = ballast(64, 7);
    change_partition(&d, "stele-root-a", |slot| {
        let at = slot
            .windows(needle.len())
            .position(|w| w == needle.as_bytes())
            .expect("the ballast inside slot a");
        slot[at + 40_000] ^= 0x01;
    });
    let mut vm = fx.boot(&initrd, &d).start();
    for _ in 0..10 {
        vm.expect_all(&["stele: slot=a version=1.0.0", "is corrupted"]);
    }
    vm.power_cut();
    let st = state(&d);
    assert!(
        st.slots[0].successful && st.slots[0].priority == 2 && st.slots[0].unconfirmed >= 10,
        "{st:?}"
    );
    let (h, per) = events_per_boot(&d);
    assert_eq!(h["damaged"], 0, "{h}");
    assert!(per.len() >= 10, "boots recorded: {per:?}");
    assert!(per.values().all(|&n| n <= 8), "events per boot: {per:?}");
    let unconfirmed: Vec<u64> = h["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "unconfirmed-boot")
        .map(|e| e["count"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(
        &unconfirmed[..9],
        &(1..=9).collect::<Vec<u64>>()[..],
        "{unconfirmed:?}"
    );
    let why = ok(stele(&["update", "why", "--disk", &d]));
    assert!(why.starts_with("nothing to explain"), "{why}");
}

//! Reports under QEMU: a loopback collector (tests/fixture/collector.rs, reached only
//! through QEMU user networking's one forwarded address) gets one report per boot marked
//! good and one per install, each a PUT of its own object `/r/{device}/{seq}.json`. While
//! the collector is down the report is kept on the data partition, and it goes out in
//! order on the next boot.
//!
//! Needs STELE_KERNEL, STELE_MODULES, STELE_INIT and STELE_FETCH, set by `cargo xtask test`.

use crate::fixture::{env_path, Collector, Fixture};

/// The image's `[report]`: one object per report.
const SYSTEM: &str = "healthy_after = 1\nhealth = [\"/bin/netup\"]\nshutdown_grace = 3\n\n[report]\nurl = \"http://10.0.2.100/r/{device}/{seq}.json\"\nmethod = \"put\"\n\n[[service]]\nname = \"app\"\nexec = [\"/bin/app\"]\nrestart = \"never\"\n";

/// The health command brings the network up: the slot is marked good (and reported) after.
const NETUP: &str = "#!/bin/sh\nifconfig eth0 10.0.2.15 netmask 255.255.255.0 up\n";

/// Counts its boots on the data partition; waits until PID 1's report of this boot is
/// made and its sending over (`stele update report` waits for the backlog's lock) and the
/// report child has ended (a reboot would cut its last lines); reboots, and on the third
/// boot installs /dev/vdb and powers off.
const APP: &str = r#"#!/bin/sh
n=$(cat /var/boots 2>/dev/null || echo 0); n=$((n+1)); echo $n > /var/boots; sync
echo "app: boot $n"
i=0
until stele update report | grep -q "^next report: $n,"; do
  i=$((i+1)); if [ $i -gt 120 ]; then echo "app: no report"; break; fi
  sleep 1
done
# The child prints its lines after it let go of the backlog: wait for it to end.
while ps | grep -q "[r]eport --send"; do sleep 1; done
echo "app: boot $n reported"
if [ $n = 3 ]; then
  stele update install /dev/vdb
  stele update report
  echo "app: done"
  kill -USR2 1
else
  kill -TERM 1
fi
sleep 100
"#;

/// The JSON bodies the collector took (201), in order, with their paths.
fn taken(c: &Collector) -> Vec<(String, serde_json::Value)> {
    c.got()
        .into_iter()
        .filter(|g| g.status == 201)
        .map(|g| {
            assert_eq!(g.method, "PUT", "{g:?}");
            let doc = serde_json::from_slice(&g.body)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&g.body)));
            (g.path, doc)
        })
        .collect()
}

fn kinds(doc: &serde_json::Value) -> Vec<String> {
    doc["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn three_boots_and_an_install_are_reported_and_a_down_collector_gets_them_later() {
    let fx = Fixture::new();
    let (key, public) = fx.keygen("release");
    let fetch = env_path("STELE_FETCH").display().to_string();
    let client = ["--fetch-client", fetch.as_str()];
    let root = |name: &str| {
        fx.rootfs(name, SYSTEM)
            .file("bin/app", APP, 0o755)
            .file("bin/netup", NETUP, 0o755)
            .symlink("bin/ifconfig", "busybox")
            .build()
    };
    let (r1, r2) = (root("root1"), root("root2"));
    let image = |root: &str, v: &str, i: u64, out: &str| {
        fx.image(root, &key)
            .name("test")
            .version(v)
            .index(i)
            .args(&client)
            .build(out)
    };
    let v1 = image(&r1, "1.0.0", 1, "v1.img");
    let v2 = image(&r2, "2.0.0", 2, "v2.img");
    let initrd = fx
        .initramfs(&[&public])
        .args(&["--module", "virtio_net"])
        .build();
    let disk = fx.disk(&v1).build();
    let collector = Collector::start();
    let mut vm = fx
        .boot(&initrd, &disk)
        .read_only_disk(&v2)
        .loopback_port_as(collector.port)
        .start();

    // Boot 1: reported at once.
    vm.expect("app: boot 1");
    vm.expect("stele: slot=a marked good");
    let sent = vm.expect("stele: report 0 sent: PUT http://10.0.2.100/r/");
    assert!(sent.contains("/0.json: HTTP 201"), "{sent}");
    vm.expect("app: boot 1 reported");
    collector.set_down(true);

    // Boot 2: the collector answers 503; the report is kept.
    vm.expect("app: boot 2");
    let kept = vm.expect("report(s) kept on the data partition, not sent");
    assert!(
        kept.contains("1 report(s) kept") && kept.contains("HTTP 503"),
        "{kept}"
    );
    vm.expect("app: boot 2 reported");
    collector.set_down(false);

    // Boot 3: the kept report goes first, then this boot's; then an install's.
    vm.expect("app: boot 3");
    vm.expect("stele: report 1 sent: PUT");
    vm.expect("stele: report 2 sent: PUT");
    vm.expect("stele: installed test 2.0.0 rollback_index=2 into slot b");
    vm.expect("stele: report 3 sent: PUT");
    vm.expect("kept: 0 report(s), 0 bytes");
    vm.expect("app: done");
    vm.powered_off();

    let refused: Vec<String> = collector
        .got()
        .into_iter()
        .filter(|g| g.status == 503)
        .map(|g| g.path)
        .collect();
    assert_eq!(refused.len(), 3, "three attempts while down: {refused:?}");
    let docs = taken(&collector);
    assert_eq!(docs.len(), 4, "{docs:?}");
    let device = docs[0].1["device"].as_str().expect("device").to_string();
    assert_eq!(device.len(), 32, "{device}");
    assert!(
        refused.iter().all(|p| *p == format!("/r/{device}/1.json")),
        "{refused:?}"
    );
    let mut next_event = 0;
    for (i, (path, doc)) in docs.iter().enumerate() {
        assert_eq!(*path, format!("/r/{device}/{i}.json"));
        assert_eq!(doc["schema"], "stele-report", "{doc}");
        assert_eq!(doc["version"], 1, "{doc}");
        assert_eq!(doc["device"], device.as_str());
        assert_eq!(doc["seq"], i);
        assert_eq!(doc["running"]["version"], "1.0.0", "{doc}");
        assert_eq!(doc["running"]["slot"], "a", "{doc}");
        assert_eq!(doc["dropped_reports"], 0, "{doc}");
        assert_eq!(doc["events_missed"], 0, "{doc}");
        // Events since the last report, none twice, none left out.
        assert_eq!(doc["events_since"], next_event, "{doc}");
        let first = doc["events"][0]["sequence"].as_u64().expect("an event");
        assert_eq!(first, next_event, "{doc}");
        next_event = doc["next_event"].as_u64().expect("next_event");
    }
    for (_, boot) in &docs[..3] {
        let k = kinds(boot);
        assert!(k.contains(&"verified".to_string()), "{k:?}");
        assert_eq!(k.last().map(String::as_str), Some("marked-good"), "{k:?}");
    }
    let boot_ids: Vec<&serde_json::Value> = docs[..3].iter().map(|(_, d)| &d["boot_id"]).collect();
    assert!(
        boot_ids[0] != boot_ids[1] && boot_ids[1] != boot_ids[2],
        "{boot_ids:?}"
    );
    let install = &docs[3].1;
    assert_eq!(
        kinds(install),
        ["install-started", "install-finished"],
        "{install}"
    );
    assert_eq!(install["events"][1]["version"], "2.0.0", "{install}");
    assert_eq!(
        install["status"]["slots"]["b"]["version"], "2.0.0",
        "{install}"
    );
    assert_eq!(install["status"]["next"], "b", "{install}");
}

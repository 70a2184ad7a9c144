//! A device updates itself from a signed channel on a local HTTP server, under QEMU: the
//! guest's only network is QEMU user networking with `restrict=on` and one forwarded
//! address (10.0.2.100:80 -> nginx on a loopback port). v1 runs `stele update apply
//! --channel`, which fetches v2 as a delta through the fetch client of the verified root;
//! the power is cut in the middle; on the next boot the same command resumes from what
//! slot b holds, the device reboots into v2 and marks it good.

use std::fs;

use crate::fixture::{env_path, Fixture, Rootfs};
use crate::net::http::noise;
use crate::util::ok;

const CHANNEL: &str = "http://10.0.2.100/stable.channel";

/// v1's service: network up, check and apply the channel (slowly, so that the power cut
/// lands in the middle), reboot into what it installed.
fn v1_service() -> String {
    format!(
        r#"#!/bin/sh
ifconfig eth0 10.0.2.15 netmask 255.255.255.0 up
echo "v1: running on slot $(cat /run/stele/slot)"
stele update check --channel {CHANNEL}
echo "v1: check exit $?"
stele update apply --channel {CHANNEL} --max-rate 192K
code=$?
echo "v1: apply exit $code"
if [ $code = 0 ]; then kill -TERM 1; else kill -USR2 1; fi
sleep 100
"#
    )
}

/// v2's service: shows the status once it is marked good, powers off.
const V2_SERVICE: &str = r#"#!/bin/sh
echo "v2: running on slot $(cat /run/stele/slot)"
sleep 3
stele update status
echo "v2: done"
kill -USR2 1
sleep 100
"#;

/// A root with `service` as /bin/app, the channel key and ifconfig (the fetch client is
/// added by `stele image build --fetch-client`).
fn root<'a>(fx: &'a Fixture, name: &str, service: &str, channel_pem: &str) -> Rootfs<'a> {
    let system = "healthy_after = 1\nshutdown_grace = 3\n\n[[service]]\nname = \"app\"\nexec = [\"/bin/app\"]\nrestart = \"never\"\n";
    fx.rootfs(name, system)
        .file("bin/app", service, 0o755)
        .file(
            "etc/stele/channel-keys/channel.pem",
            fs::read(channel_pem).unwrap(),
            0o644,
        )
        .file("etc/stele/channels", "stable\n", 0o644)
        .file("srv/ballast", noise(2_000_000, 3), 0o644)
        .symlink("bin/ifconfig", "busybox")
}

/// The numbers of `stele: update: plan: fetch N bytes in R ranges, reuse M bytes (K kept,
/// C copied, Z zero blocks)`: (N, K, C).
fn plan_numbers(line: &str) -> (u64, u64, u64) {
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    // N, R, M, K, C, Z
    (n[0], n[3], n[4])
}

#[test]
fn device_updates_from_a_channel_as_a_delta_through_a_power_cut() {
    let fx = Fixture::new();
    let (key, public) = fx.keygen("release");
    let (ckey, cpub) = fx.keygen("channel");
    let r1 = root(&fx, "root1", &v1_service(), &cpub).build();
    let r2 = root(&fx, "root2", V2_SERVICE, &cpub)
        .file("srv/new", noise(3_000_000, 11), 0o644)
        .build();
    let fetch = env_path("STELE_FETCH").display().to_string();
    let client = ["--fetch-client", fetch.as_str()];
    let v1 = fx
        .image(&r1, &key)
        .name("test")
        .version("1.0.0")
        .index(1)
        .args(&client)
        .build("v1.img");
    assert!(
        !fx.path("root1/usr/lib/stele").exists(),
        "--fetch-client changed the tree"
    );
    let dump = crate::util::host("dump.erofs", &["--path=/usr/lib/stele/stele-fetch", &v1]);
    assert!(
        dump.stdout.contains("regular file") && dump.stdout.contains("Access: 0755"),
        "the fetch client is not in the image: {dump:?}"
    );
    fs::create_dir_all(fx.path("www")).unwrap();
    fx.image(&r2, &key)
        .args(&client)
        .name("test")
        .version("2.0.0")
        .index(2)
        .build("www/v2.img");
    ok(crate::util::stele(&[
        "channel",
        "build",
        "--key",
        &ckey,
        "--name",
        "test",
        "--channel",
        "stable",
        "--sequence",
        "1",
        "--expires",
        "2040-01-01T00:00:00Z",
        "--release",
        "2.0.0=v2.img",
        "--start",
        "2.0.0=2000-01-01T00:00:00Z",
        "--out",
        &fx.p("www/stable.channel"),
    ]));
    let initrd = fx
        .initramfs(&[&public])
        .args(&["--module", "virtio_net"])
        .build();
    let disk = fx.disk(&v1).build();
    let nginx = fx.nginx("www");

    // Boot 1: v1 applies the channel; the power is cut once two MiB have arrived.
    let mut vm = fx
        .boot(&initrd, &disk)
        .loopback_port_as(nginx.port)
        .console_log("boot1.log")
        .start();
    vm.expect("stele: slot=a version=1.0.0");
    vm.expect("stele: offered: 2.0.0 rollback_index=2, due now");
    vm.expect("v1: check exit 0");
    vm.expect("stele: update: http://10.0.2.100/v2.img: test 2.0.0 rollback_index=2 verified");
    let first = vm.expect("stele: update: plan: fetch ");
    let (to_fetch, kept, copied) = plan_numbers(&first);
    assert!(kept < 10, "slot b is empty (zeros at most): {first}");
    assert!(copied > 400, "the delta reuses v1's blocks: {first}");
    vm.expect("stele: update: writing slot b");
    // Cut the power once 2 MiB of data are written into slot b: the device's progress
    // line (on its console, a terminal) says so; it is redrawn with `\r`, without a
    // newline to wait for, so the console is polled.
    let until = std::time::Instant::now() + std::time::Duration::from_secs(240);
    while !vm.console().contains("% (2/") {
        assert!(
            std::time::Instant::now() < until,
            "no progress line: {}",
            vm.console()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    vm.power_cut();

    // Boot 2: slot b has no footer, v1 boots again and the same command resumes.
    let mut vm = fx
        .boot(&initrd, &disk)
        .loopback_port_as(nginx.port)
        .console_log("boot2.log")
        .start();
    vm.expect("stele: slot=a version=1.0.0");
    let again = vm.expect("stele: update: plan: fetch ");
    let (left, kept2, _) = plan_numbers(&again);
    assert!(
        kept2 > 200,
        "blocks written before the cut are kept: {again}"
    );
    assert!(
        left < to_fetch - (512 << 10),
        "fetched again: {again} (first: {first})"
    );
    let summary = vm.expect("stele: fetched ");
    vm.expect("stele: installed test 2.0.0 rollback_index=2 into slot b");
    vm.expect("v1: apply exit 0");
    vm.expect("stele: shutdown: reboot");

    // Boot 3: v2 in slot b, marked good.
    vm.expect("stele: slot=b version=2.0.0 rollback_index=2");
    vm.expect("v2: running on slot b");
    vm.expect("stele: slot=b marked good");
    let b = vm.expect("slot b:");
    assert!(b.contains("booted") && b.contains("successful=yes"), "{b}");
    vm.expect("v2: done");
    vm.powered_off();

    // The server saw range requests only, from the one forwarded address.
    let log = nginx.log();
    assert!(
        log.iter()
            .any(|l| l.starts_with("GET /stable.channel 206 bytes=-4096")),
        "{log:?}"
    );
    // The image itself (not its compressed form `v2.img.zst`, which this server does not
    // have: each boot looked for it once, was told 404 and fetched raw blocks).
    assert!(
        log.iter()
            .filter(|l| l.starts_with("GET /v2.img "))
            .all(|l| l.contains(" 206 bytes=")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .filter(|l| l.starts_with("GET /v2.img.zst "))
            .all(|l| l.contains(" 404 ")),
        "{log:?}"
    );
    // What the two boots asked for is what their plans said (nginx's byte counts include
    // what was in flight when the power went).
    let asked: u64 = log
        .iter()
        .filter(|l| l.starts_with("GET /v2.img "))
        .map(|l| {
            let r = l
                .split(" bytes=")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap();
            match r.split_once('-').unwrap() {
                ("", n) => n.parse::<u64>().unwrap(),
                (a, b) => b.parse::<u64>().unwrap() - a.parse::<u64>().unwrap() + 1,
            }
        })
        .sum();
    assert!(
        asked <= to_fetch + left,
        "asked for {asked} bytes ({first}; {again}; {summary})"
    );
    let size = fs::metadata(fx.path("www/v2.img")).unwrap().len();
    assert!(to_fetch < size / 2, "{first}: the image is {size} bytes");
}

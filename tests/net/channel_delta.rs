//! Published deltas listed in the signed channel, over loopback nginx: `stele channel build
//! --delta` lists the delta from v1 for v2; a device running v1 (`/run/stele` published on
//! the host, the static fetch client in its verified root) applies the channel and takes
//! the delta by its listed URL (served under another name than the one beside the image,
//! so the listing is what found it); the slot equals v2. A listed delta served with
//! another length or another index is not used (one line says why) and the install
//! completes by the compressed form. The same device also installs through the chained
//! form, decoded by its fetch client.

use std::fs;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use stele_device::commands::channel::{self, Applied};
use stele_device::remote::{FetchOptions, Location};
use stele_device::runtime::run_dir::{self, Devices, Publish};
use stele_device::target::Target;
use stele_engine::delta::ways::WayKind;
use stele_verifier::channel::ChannelState;
use stele_verifier::layout::{PerRole, Role, FETCH_CLIENT};
use stele_verifier::progress::Silent;
use stele_verifier::state::{self, BootState, Slot};

use crate::fixture::{env_path, Fixture, Nginx};
use crate::net::delta::served;
use crate::net::http::Pair;
use crate::util::{ok, stele};

/// Where the delta is served: not its documented name beside `v2.img`.
const LISTED: &str = "deltas/v1-to-v2.bin";
const SLOT: usize = 8 << 20;

/// A device running `v1` in slot a (8 MiB slots, files under `base`), trusting the release
/// key `public` and the channel key `channel_pem`, following `stable`, the static fetch
/// client (STELE_FETCH) in its verified root; rollout seed 500. Returns the run directory.
fn device(base: &Path, v1: &[u8], public: &str, channel_pem: &str) -> PathBuf {
    let part = |n: &str| base.join(n);
    let mut a = vec![0u8; SLOT];
    a[..v1.len()].copy_from_slice(v1);
    a[SLOT - 4096..].copy_from_slice(&v1[v1.len() - 4096..]);
    fs::write(part("a"), &a).unwrap();
    fs::write(part("b"), vec![0u8; SLOT]).unwrap();
    fs::write(part("data"), b"").unwrap();
    let mut st = Cursor::new(vec![0u8; 8192]);
    state::initialize(&mut st, &BootState::initial(false)).unwrap();
    fs::write(part("state"), st.into_inner()).unwrap();
    let keys = part("initramfs-keys");
    fs::create_dir_all(&keys).unwrap();
    fs::copy(public, keys.join("release.pem")).unwrap();
    let body = stele_verifier::slot::locate(&mut Cursor::new(v1), v1.len() as u64)
        .unwrap()
        .envelope
        .body;
    let boot_toml = format!(
        "threshold = 1\ndata_mount = \"{}\"\n",
        part("var").display()
    );
    let show = |n: &str| Some(part(n).display().to_string());
    let run = part("run");
    run_dir::publish(
        &run,
        &Publish {
            slot: Slot::A,
            manifest: &body,
            boot_toml: &boot_toml,
            devices: &Devices(PerRole::from_fn(|r| match r {
                Role::Esp => None,
                Role::State => show("state"),
                Role::SlotA => show("a"),
                Role::SlotB => show("b"),
                Role::Data => show("data"),
            })),
            keys_dir: &keys,
        },
    )
    .unwrap();
    let lower = run.join("lower");
    let ck = channel::channel_keys_in(&lower);
    fs::create_dir_all(&ck).unwrap();
    fs::copy(channel_pem, ck.join("channel.pem")).unwrap();
    fs::write(channel::channels_file_in(&lower), "stable\n").unwrap();
    let client = lower.join(FETCH_CLIENT.trim_start_matches('/'));
    fs::create_dir_all(client.parent().unwrap()).unwrap();
    fs::copy(env_path("STELE_FETCH"), &client).unwrap();
    let mut seeded = ChannelState::new(500);
    seeded.channels.clear();
    let state_file = part("var/lib/stele/channel.toml");
    fs::create_dir_all(state_file.parent().unwrap()).unwrap();
    channel::save_state(&state_file, &seeded).unwrap();
    run
}

/// v1 and v2 (with v2's compressed form) served by nginx, the delta from v1 moved to
/// [`LISTED`] and listed by a signed channel `www/stable.channel`; a device running v1.
fn listed(fx: &Fixture) -> (Pair, Nginx, PathBuf) {
    let (p, nginx, name) = served(fx);
    fs::create_dir_all(fx.path("www/deltas")).unwrap();
    fs::rename(
        fx.path(&format!("www/{name}")),
        fx.path(&format!("www/{LISTED}")),
    )
    .unwrap();
    fs::copy(&p.v1, fx.path("www/v1.img")).unwrap();
    let (ckey, cpub) = fx.keygen("channel");
    let delta = format!("{}={LISTED}", fx.p(&format!("www/{LISTED}")));
    let built = ok(stele(&[
        "channel",
        "build",
        "--key",
        &ckey,
        "--name",
        "demo",
        "--channel",
        "stable",
        "--sequence",
        "1",
        "--issued",
        "2025-01-01T00:00:00Z",
        "--expires",
        "2099-01-01T00:00:00Z",
        "--release",
        "1.0.0=v1.img",
        "--release",
        "2.0.0=v2.img",
        "--delta",
        &delta,
        "--out",
        &fx.p("www/stable.channel"),
    ]));
    assert!(built.contains("releases=1.0.0,2.0.0"), "{built}");
    let base = fx.path("device");
    fs::create_dir_all(&base).unwrap();
    let run = device(&base, &fs::read(&p.v1).unwrap(), &p.public, &cpub);
    (p, nginx, run)
}

/// `update apply --channel` on the device of `run`: what it did and its log lines.
fn apply(run: &Path, nginx: &Nginx) -> (Applied, Vec<String>) {
    let mut lines = Vec::new();
    let mut t = Target::device(run, true).unwrap();
    let done = channel::apply(
        &mut t,
        &Location::parse(&nginx.url("stable.channel")),
        &FetchOptions::default(),
        &mut |l: &str| lines.push(l.to_string()),
        &mut Silent,
    );
    match done {
        Ok(a) => (a, lines),
        Err(e) => panic!("{e}\n{}", lines.join("\n")),
    }
}

/// Slot b holds v2 byte for byte (its data, tree and manifest, and its footer at the
/// partition's end) and boots next.
fn assert_v2_in_b(fx: &Fixture, p: &Pair) {
    let v2 = fs::read(&p.v2).unwrap();
    let b = fs::read(fx.path("device/b")).unwrap();
    let r = crate::util::regions(&v2);
    let end = r.manifest_offset + r.manifest_len;
    assert!(b[..end] == v2[..end], "slot b differs from v2");
    assert!(
        b[SLOT - 4096..] == v2[v2.len() - 4096..],
        "slot b's footer is not v2's"
    );
    let (st, _) = state::load(&mut fs::File::open(fx.path("device/state")).unwrap()).unwrap();
    assert_eq!(st.choose(), Some(Slot::B));
}

#[test]
fn a_channel_lists_a_delta_and_the_device_takes_it_by_its_listed_url() {
    let fx = Fixture::new();
    let (p, nginx, run) = listed(&fx);
    // `check` shows the listed delta with its release.
    let text = channel::check(
        &Target::device(&run, false).unwrap(),
        &Location::parse(&nginx.url("stable.channel")),
        &FetchOptions::default(),
    )
    .unwrap();
    assert!(
        text.contains(&format!(
            "stele: release 2.0.0: delta from 1.0.0 {LISTED} ("
        )),
        "{text}"
    );
    let (applied, lines) = apply(&run, &nginx);
    let Applied::Installed(d) = applied else {
        panic!("not installed: {lines:?}");
    };
    assert_eq!(d.way, WayKind::Delta, "{lines:?}");
    assert_v2_in_b(&fx, &p);
    // The delta's frames gave the blocks (decoded by the fetch client): the way was not
    // given up for raw ranges.
    assert!(d.stats.patch_blocks > 0, "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.contains("was given up")),
        "{lines:?}"
    );
    // Written without v2's tree (the fetch client decoded the frames over the pipe), the
    // tree rebuilt and its root checked.
    assert!(
        lines
            .iter()
            .any(|l| l.contains("the hash tree rebuilt from slot b has the signed root hash")),
        "{lines:?}"
    );
    let from = format!(
        "update: delta {} (listed in the channel: ",
        nginx.url(LISTED)
    );
    assert!(lines.iter().any(|l| l.starts_with(&from)), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains(", from 1.0.0)")),
        "{lines:?}"
    );
    let log = nginx.log();
    assert!(
        log.iter()
            .any(|l| l.starts_with(&format!("GET /{LISTED} 206 "))),
        "{log:?}"
    );
    // The name beside the image was not even asked for: the listing found the delta.
    assert!(!log.iter().any(|l| l.contains(".delta ")), "{log:?}");
}

/// The listed delta replaced on the server after the channel was signed: `edit` changes
/// its bytes; the device does not use it, says why in one line, and completes by the
/// compressed form.
fn not_used(edit: &dyn Fn(&mut Vec<u8>), why: &str) {
    let fx = Fixture::new();
    let (p, nginx, run) = listed(&fx);
    let path = fx.path(&format!("www/{LISTED}"));
    let mut d = fs::read(&path).unwrap();
    edit(&mut d);
    fs::write(&path, d).unwrap();
    let (applied, lines) = apply(&run, &nginx);
    let Applied::Installed(done) = applied else {
        panic!("not installed: {lines:?}");
    };
    assert_eq!(done.way, WayKind::Zstd, "{lines:?}");
    assert_v2_in_b(&fx, &p);
    let said: Vec<&String> = lines.iter().filter(|l| l.contains(why)).collect();
    assert_eq!(said.len(), 1, "{why}: {lines:?}");
    assert!(said[0].contains("no delta way: "), "{}", said[0]);
    assert!(said[0].contains("the channel lists"), "{}", said[0]);
}

#[test]
fn a_listed_delta_served_with_another_length_is_not_used() {
    not_used(
        &|d| d.extend_from_slice(&[0u8; 4096]),
        "bytes, the channel lists",
    );
}

#[test]
fn a_listed_delta_served_with_another_index_is_not_used() {
    // Same length; the reserved word of the last index entry changed (just before the
    // 96-byte trailer): the index's digest is no longer the channel's.
    not_used(
        &|d| {
            let at = d.len() - 96 - 4;
            d[at] ^= 1;
        },
        "its index and trailer have sha256",
    );
}

/// On the device the fetch client decodes the chained frames: the static binary in the
/// verified root, over its pipe (`CHAIN` requests). With only `v2.img.lzc` beside the
/// image (no `.zst`, and the listed delta gone from the server) and nothing to copy from
/// the running slot (its first MiB overwritten: an install that fetches most of the
/// image), the install takes the way `lzc`, its frames give the blocks, and slot b equals
/// v2.
#[test]
fn on_the_device_the_fetch_client_decodes_the_chained_frames() {
    let fx = Fixture::new();
    let (p, nginx, run) = listed(&fx);
    let mut a = fs::read(fx.path("device/a")).unwrap();
    a[..1 << 20].copy_from_slice(&crate::net::http::noise(1 << 20, 11));
    fs::write(fx.path("device/a"), a).unwrap();
    fs::remove_file(fx.path(&format!("www/{LISTED}"))).unwrap();
    fs::remove_file(fx.path("www/v2.img.zst")).unwrap();
    fs::copy(format!("{}.lzc", p.v2), fx.path("www/v2.img.lzc")).unwrap();
    let (applied, lines) = apply(&run, &nginx);
    let Applied::Installed(d) = applied else {
        panic!("not installed: {lines:?}");
    };
    assert_eq!(d.way, WayKind::Lzc, "{lines:?}");
    assert!(d.stats.frame_blocks > 0, "{lines:?}");
    assert!(
        !lines.iter().any(|l| l.contains("was given up")),
        "{lines:?}"
    );
    assert_v2_in_b(&fx, &p);
    assert!(
        nginx
            .log()
            .iter()
            .any(|l| l.starts_with("GET /v2.img.lzc 206 ")),
        "{:?}",
        nginx.log()
    );
}

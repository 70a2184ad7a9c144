//! The signed channel on the device, on the host: `/run/stele` as the boot publishes it
//! (partitions as files, the verified root's channel keys under `lower/`, the data
//! partition's mount point a directory), channel and image as local files. Every refusal
//! (expired, lower sequence, wrong product, manifest mismatch, wave not due) is one error
//! line with exit 1 and writes nothing: not the slots, not the boot state, not the
//! channel state.

use std::io::Cursor;
use std::path::PathBuf;

use sha2::{Digest, Sha256};
use stele_device::commands::channel::{self, Applied};
use stele_device::remote::{FetchOptions, Location};
use stele_verifier::channel::{sign, Channel, ChannelRecord, ChannelState, Release, Wave};
use stele_verifier::exit::{write_error, Exit};
use stele_verifier::keys::public_pem;
use stele_verifier::state::Slot;
use stele_verifier::testutil::{image_signed_by, key};

mod common;

const NOW_ISH: u64 = 1_750_000_000;
const FAR: u64 = 4_000_000_000;

struct Device {
    base: tempfile::TempDir,
    run: PathBuf,
    v2: Vec<u8>,
}

impl Device {
    fn part(&self, n: &str) -> PathBuf {
        self.base.path().join(n)
    }
    fn state_file(&self) -> PathBuf {
        self.part("var/lib/stele/channel.toml")
    }
    /// Everything a refusal must leave alone.
    fn snapshot(&self) -> Vec<Vec<u8>> {
        ["a", "b", "state", "var/lib/stele/channel.toml"]
            .iter()
            .map(|n| std::fs::read(self.part(n)).unwrap_or_default())
            .collect()
    }
}

/// Slot a holds v1 (`demo` 1.1), b is empty; a data partition at `<tmp>/var`; the image
/// trusts channel key 7; the device's rollout seed is 500.
fn device() -> Device {
    let base = tempfile::tempdir().unwrap();
    let part = |n: &str| base.path().join(n);
    let a = image_signed_by(8, 1, 1, 1).0;
    std::fs::write(part("data"), b"").unwrap();
    let boot_toml = format!(
        "threshold = 1\ndata_mount = \"{}\"\n",
        part("var").display()
    );
    let data = Some(part("data").display().to_string());
    let run = common::publish_device(base.path(), &a, &boot_toml, data);
    let ck = channel::channel_keys_in(&run.join("lower"));
    std::fs::create_dir_all(&ck).unwrap();
    std::fs::write(ck.join("channel.pem"), public_pem(&key(7).verifying_key())).unwrap();
    std::fs::write(channel::channels_file_in(&run.join("lower")), "stable\n").unwrap();
    let v2 = image_signed_by(8, 2, 9, 1).0;
    std::fs::write(part("v2.img"), &v2).unwrap();
    let d = Device { base, run, v2 };
    let mut seeded = ChannelState::new(500);
    seeded.channels.clear();
    channel::save_state(&d.state_file(), &seeded).unwrap();
    d
}

/// The channel offering v2 (relative url, next to the channel file).
fn offer(d: &Device) -> Channel {
    let env_at = {
        let loc = stele_verifier::slot::locate(&mut Cursor::new(&d.v2), d.v2.len() as u64).unwrap();
        loc.envelope.to_bytes()
    };
    Channel {
        channel: "stable".into(),
        name: "demo".into(),
        sequence: 5,
        issued: NOW_ISH,
        expires: FAR,
        releases: vec![Release {
            version: "2.9".into(),
            rollback_index: 2,
            url: "v2.img".into(),
            length: d.v2.len() as u64,
            manifest_sha256: Sha256::digest(env_at).into(),
            start: NOW_ISH,
            waves: vec![],
            deltas: vec![],
        }],
    }
}

fn write_channel(d: &Device, c: &Channel) -> Location {
    let p = d.part("stable.channel");
    std::fs::write(&p, sign(c, &[key(7)]).unwrap()).unwrap();
    Location::File(p)
}

fn apply(d: &Device, loc: &Location) -> stele_device::Result<Applied> {
    common::on_device::apply(&d.run, loc, &FetchOptions::default(), &mut |_| {})
}

/// The one line the device prints for an error, and its exit class.
fn line(e: &stele_device::Error) -> (String, Exit) {
    let mut out = Vec::new();
    let exit = write_error(&mut out, e);
    (String::from_utf8(out).unwrap(), exit)
}

#[test]
fn every_refusal_is_one_line_and_writes_nothing() {
    type Edit = Box<dyn Fn(&mut Channel, &Device)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "expired",
            Box::new(|c, _| {
                c.issued = 1000;
                c.expires = 2000;
            }),
            "the channel expired at 1970-01-01T00:33:20Z",
        ),
        (
            // Issue 18: another channel's valid file (beta's, or a retired channel's) at
            // the followed URL would re-offer a withdrawn release and move the device.
            "another channel",
            Box::new(|c, _| c.channel = "beta".into()),
            "the channel file is channel \"beta\" but this image follows \"stable\": refused",
        ),
        (
            "lower sequence",
            Box::new(|_, d| {
                let mut st = ChannelState::new(500);
                st.channels.insert(
                    "stable".into(),
                    ChannelRecord {
                        sequence: 9,
                        issued: NOW_ISH,
                        sha256: [0; 32],
                    },
                );
                channel::save_state(&d.state_file(), &st).unwrap();
            }),
            "has sequence 5, lower than 9 seen before",
        ),
        (
            "wrong product",
            Box::new(|c, _| c.name = "toaster".into()),
            "the channel is for product \"toaster\" but this device runs \"demo\"",
        ),
        (
            "manifest mismatch",
            Box::new(|c, _| c.releases[0].manifest_sha256[0] ^= 1),
            "the image's manifest envelope has sha256",
        ),
        (
            "wave not due",
            Box::new(|c, _| {
                c.releases[0].waves = vec![
                    Wave {
                        after: 0,
                        below: 100,
                    },
                    Wave {
                        after: FAR,
                        below: 1000,
                    },
                ];
            }),
            "release 2.9 is not yet due for this device (seed 500): due at",
        ),
    ];
    for (name, edit, needle) in cases {
        let d = device();
        let mut c = offer(&d);
        edit(&mut c, &d);
        let loc = write_channel(&d, &c);
        let before = d.snapshot();
        let e = apply(&d, &loc)
            .err()
            .unwrap_or_else(|| panic!("{name}: installed"));
        let (text, exit) = line(&e);
        assert_eq!(exit, Exit::Refused, "{name}: {text}");
        assert!(text.starts_with("stele: error: "), "{name}: {text}");
        assert_eq!(text.lines().count(), 1, "{name}: {text}");
        assert!(text.contains(needle), "{name}: {text}");
        assert_eq!(d.snapshot(), before, "{name}: something was written");
    }
}

#[test]
fn a_due_release_is_installed_and_the_channel_remembered() {
    let d = device();
    let c = offer(&d);
    let loc = write_channel(&d, &c);
    let text = common::on_device::check(&d.run, &loc, &FetchOptions::default()).unwrap();
    assert!(
        text.contains("stele: offered: 2.9 rollback_index=2, due now"),
        "{text}"
    );
    assert!(text.contains("rollout seed 500 of 1000"), "{text}");
    let Applied::Installed(done) = apply(&d, &loc).unwrap() else {
        panic!("not installed")
    };
    assert_eq!(done.installed.slot, Slot::B);
    assert_eq!(done.installed.version, "2.9");
    let s = common::on_device::status(&d.run).unwrap();
    assert_eq!(s.next, Some(Slot::B));
    let st = ChannelState::parse(&std::fs::read_to_string(d.state_file()).unwrap()).unwrap();
    assert_eq!(st.seed, 500);
    assert_eq!(st.channels["stable"].sequence, 5);
    // The same file again is fine; an older one is not, though correctly signed.
    let mut older = c.clone();
    older.sequence = 4;
    let loc_old = write_channel(&d, &older);
    let e = common::on_device::check(&d.run, &loc_old, &FetchOptions::default()).unwrap_err();
    assert!(line(&e).0.contains("lower than 5"), "{}", line(&e).0);
    // A channel not signed by the image's channel key: refused before its body is read.
    let p = d.part("forged.channel");
    std::fs::write(&p, sign(&c, &[key(1)]).unwrap()).unwrap();
    let e =
        common::on_device::check(&d.run, &Location::File(p), &FetchOptions::default()).unwrap_err();
    let (text, exit) = line(&e);
    assert_eq!(exit, Exit::Refused);
    assert!(
        text.contains("channel: signature threshold not met"),
        "{text}"
    );
    // A wave not due is shown by check, not refused.
    let mut later = c;
    later.sequence = 6;
    later.releases[0].start = FAR;
    let loc = write_channel(&d, &later);
    let text = common::on_device::check(&d.run, &loc, &FetchOptions::default()).unwrap();
    assert!(
        text.contains("stele: not offered: release 2.9 is not yet due"),
        "{text}"
    );
}

/// Issue 18: a FIFO at channel.toml hung `check` and `apply` (the open waited for a
/// writer), and a symlink there was read through. Each is now one line naming the file,
/// exit 3, before anything is written: not the slots, not the boot state, not the link's
/// target.
#[test]
fn a_fifo_or_a_symlink_at_the_channel_state_is_refused_and_nothing_written() {
    let d = device();
    let loc = write_channel(&d, &offer(&d));
    let parts = || {
        ["a", "b", "state"]
            .map(|n| std::fs::read(d.part(n)).unwrap())
            .to_vec()
    };
    let before = parts();
    let state = d.state_file();
    std::fs::remove_file(&state).unwrap();
    nix::unistd::mkfifo(&state, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let victim = d.part("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    for (kind, needle) in [
        ("fifo", "is a FIFO, not a regular file"),
        ("link", "is a symbolic link, not a regular file"),
    ] {
        if kind == "link" {
            std::fs::remove_file(&state).unwrap();
            std::os::unix::fs::symlink(&victim, &state).unwrap();
        }
        let check = common::on_device::check(&d.run, &loc, &FetchOptions::default());
        for e in [check.err().unwrap(), apply(&d, &loc).err().unwrap()] {
            let (text, exit) = line(&e);
            assert_eq!(exit, Exit::Environment, "{kind}: {text}");
            assert_eq!(text.lines().count(), 1, "{kind}: {text}");
            assert!(
                text.starts_with(&format!("stele: error: {} {needle}", state.display())),
                "{kind}: {text}"
            );
        }
        assert_eq!(parts(), before, "{kind}: something was written");
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");
}

/// An image with channel keys but no `/etc/stele/channels` (built before channels were
/// pinned, or by hand) does not act on any channel: one line naming the file, exit 3,
/// nothing written.
#[test]
fn an_image_that_follows_no_channel_acts_on_none() {
    let d = device();
    std::fs::remove_file(channel::channels_file_in(&d.run.join("lower"))).unwrap();
    let loc = write_channel(&d, &offer(&d));
    let before = d.snapshot();
    let e = apply(&d, &loc).expect_err("installed without a followed channel");
    let (text, exit) = line(&e);
    assert_eq!(exit, Exit::Environment, "{text}");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("etc/stele/channels: "), "{text}");
    assert!(
        text.contains("the update channels the booted image follows"),
        "{text}"
    );
    assert_eq!(d.snapshot(), before);
}

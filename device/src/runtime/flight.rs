//! Stamping a flight recorder event (docs/BOOT.md "Flight recorder"): who wrote it, this
//! boot's id, the time since the kernel started and the wall time where the clock is set,
//! and a release from its verified manifest ([`release`]). The event bytes and the ring are the
//! verifier's (`stele_verifier::recorder`); appending is [`super::state_file::StateFile::record`].

use std::time::{SystemTime, UNIX_EPOCH};

use stele_verifier::manifest::Manifest;
use stele_verifier::recorder::{Event, Kind, Origin, Release};

/// Where the kernel publishes this boot's id.
pub const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
/// A wall clock before this (2024-01-01) is taken as not set (a board without an RTC
/// starts at 1970): the event then has no wall time.
pub const WALL_CLOCK_SET: u64 = 1_704_067_200;

/// The 16 bytes of a boot id as the kernel prints it (`8-4-4-4-12` hex); zero when it is
/// not one. Pure.
pub fn parse_boot_id(text: &str) -> [u8; 16] {
    let hex: Vec<u8> = text.trim().bytes().filter(|&b| b != b'-').collect();
    let mut out = [0u8; 16];
    if hex.len() != 32 {
        return out;
    }
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).unwrap_or("");
        match u8::from_str_radix(s, 16) {
            Ok(v) => out[i] = v,
            Err(_) => return [0; 16],
        }
    }
    out
}

/// A wall time in seconds, if the clock is set ([`WALL_CLOCK_SET`]). Pure.
pub fn wall_if_set(secs: u64) -> Option<u64> {
    (secs >= WALL_CLOCK_SET).then_some(secs)
}

/// An event of `kind` by `origin`, stamped now: this boot's id, the milliseconds since
/// the kernel started, the wall time where the clock is set.
pub fn event(origin: Origin, kind: Kind) -> Event {
    let mut e = Event::new(origin, kind);
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    e.wall_secs = wall_if_set(wall);
    e.boot_id = parse_boot_id(&std::fs::read_to_string(BOOT_ID).unwrap_or_default());
    e.monotonic_ms = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .ok()
        .and_then(|t| {
            let ms = i128::from(t.tv_sec()) * 1000 + i128::from(t.tv_nsec()) / 1_000_000;
            u64::try_from(ms).ok()
        });
    e
}

/// The release of a verified manifest: its version, rollback index and the first 8 bytes
/// of its signed dm-verity root hash (what identifies the slot's content, known alike to
/// the boot and to an install). Pure.
pub fn release(m: &Manifest) -> Release {
    let mut digest = [0u8; 8];
    digest.copy_from_slice(&m.verity.root_hash[..8]);
    Release {
        version: m.version.clone(),
        rollback_index: m.rollback_index,
        digest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_ids_and_clocks() {
        let id = parse_boot_id("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0\n");
        assert_eq!(id[0], 0x0f);
        assert_eq!(id[15], 0xf0);
        assert_eq!(parse_boot_id("nonsense"), [0; 16]);
        assert_eq!(parse_boot_id(&"zz".repeat(16)), [0; 16]);
        assert_eq!(wall_if_set(5), None);
        assert_eq!(wall_if_set(1_790_000_000), Some(1_790_000_000));
        let e = event(Origin::Update, Kind::InstallStarted);
        assert!(e.monotonic_ms.is_some());
        assert!(e.wall_secs.is_some(), "the build machine's clock is set");
    }
}

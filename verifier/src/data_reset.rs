//! The factory reset of the data partition: the request record on the state partition
//! (written by `stele data reset` and `stele disk reset-data`) and the boot's steps that
//! carry it out before the data partition is mounted ([`at_boot`], over a [`Machine`]).
//! Pure: the bytes, and the order of the steps. Layout and reasons: docs/FORMATS.md
//! "Data partition reset request"; behaviour: docs/BOOT.md "Factory reset".

use std::io::{Read, Seek, SeekFrom};

use sha2::{Digest, Sha256};

use crate::state::COPY_DISTANCE;

/// Where the request is on the state partition: half-way between copy 1 (1 MiB) and the
/// partition's end, in its own 4 KiB block (docs/FORMATS.md).
pub const REQUEST_OFFSET: u64 = COPY_DISTANCE + COPY_DISTANCE / 2;
/// The request's block: the record, then zeros. Clearing writes it all zero.
pub const BLOCK: usize = 4096;
/// Encoded size of the record.
pub const RECORD_LEN: usize = 512;
/// The smallest state partition with room for a request (the 2 MiB layout has it, the old
/// 1 MiB one does not).
pub const MIN_LEN: u64 = REQUEST_OFFSET + BLOCK as u64;
/// Record magic.
pub const MAGIC: &[u8; 8] = b"STELERST";
/// Record version written and understood.
pub const VERSION: u32 = 1;
const CHECKSUM_AT: usize = RECORD_LEN - 32;
// The request block is apart from both state copies' blocks (and from the ring, which
// ends at copy 1), and fits in the partition `stele disk create` makes.
const _: () = assert!(REQUEST_OFFSET >= COPY_DISTANCE + 4096);
const _: () = assert!(MIN_LEN <= crate::state::PARTITION_SIZE);

/// Who asked for the reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum By {
    /// `stele data reset` on the device.
    Device,
    /// `stele disk reset-data --disk` on a host.
    Host,
}

/// A request for a fresh data partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub by: By,
    /// Seconds since 1970 when it was made, if the clock was set.
    pub wall_secs: Option<u64>,
}

/// What the request block holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// All zero: no reset requested.
    None,
    Requested(Request),
    /// Neither: a request or its clearing cut short, or corruption. Treated as no request
    /// (the command that wrote it did not finish) and cleared.
    Damaged,
    /// The state partition is too short (the old 1 MiB layout): no request can exist.
    NoRoom,
}

/// The request's block. Pure.
pub fn encode(r: &Request) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    b[0..8].copy_from_slice(MAGIC);
    b[8..12].copy_from_slice(&VERSION.to_le_bytes());
    b[12] = match r.by {
        By::Device => 1,
        By::Host => 2,
    };
    b[13] = u8::from(r.wall_secs.is_some());
    b[16..24].copy_from_slice(&r.wall_secs.unwrap_or(0).to_le_bytes());
    let sum = Sha256::digest(&b[..CHECKSUM_AT]);
    b[CHECKSUM_AT..RECORD_LEN].copy_from_slice(&sum);
    b
}

/// What a block of [`BLOCK`] bytes (or a shorter read) holds. Never panics. Pure.
pub fn decode(b: &[u8]) -> Found {
    if b.len() < RECORD_LEN {
        return Found::Damaged;
    }
    if b.iter().all(|&x| x == 0) {
        return Found::None;
    }
    let rec = &b[..RECORD_LEN];
    let by = match rec[12] {
        1 => By::Device,
        2 => By::Host,
        _ => return Found::Damaged,
    };
    let intact = &rec[0..8] == MAGIC
        && rec[8..12] == VERSION.to_le_bytes()
        && (rec[13] == 1 || (rec[13] == 0 && rec[16..24].iter().all(|&x| x == 0)))
        && rec[14..16].iter().all(|&x| x == 0)
        && rec[24..CHECKSUM_AT].iter().all(|&x| x == 0)
        && b[RECORD_LEN..].iter().all(|&x| x == 0)
        && Sha256::digest(&rec[..CHECKSUM_AT]).as_slice() == &rec[CHECKSUM_AT..];
    if !intact {
        return Found::Damaged;
    }
    let mut w = [0u8; 8];
    w.copy_from_slice(&rec[16..24]);
    Found::Requested(Request {
        by,
        wall_secs: (rec[13] == 1).then(|| u64::from_le_bytes(w)),
    })
}

/// Reads the request block of a state partition. An I/O error is returned as is.
pub fn read<D: Read + Seek>(dev: &mut D) -> std::io::Result<Found> {
    let len = dev.seek(SeekFrom::End(0))?;
    if len < MIN_LEN {
        return Ok(Found::NoRoom);
    }
    dev.seek(SeekFrom::Start(REQUEST_OFFSET))?;
    let mut b = vec![0u8; BLOCK];
    dev.read_exact(&mut b)?;
    Ok(decode(&b))
}

/// The command line PID 1 runs to make the fresh filesystem on the data partition `dev`:
/// the initramfs's mke2fs through its own interpreter and libraries
/// ([`crate::layout::MKE2FS_DIR`]), an ext4 of 4 KiB blocks over the whole partition,
/// labelled as `stele disk create` labels it, its root directory owned by root. Pure.
pub fn mke2fs_argv(dev: &str) -> Vec<String> {
    use crate::layout::{Role, MKE2FS, MKE2FS_DIR, MKE2FS_LOADER};
    [
        MKE2FS_LOADER,
        "--library-path",
        MKE2FS_DIR,
        MKE2FS,
        "-F",
        "-q",
        "-t",
        "ext4",
        "-b",
        "4096",
        "-L",
        Role::Data.name(),
        "-E",
        "root_owner=0:0",
        dev,
    ]
    .iter()
    .map(|s| (*s).to_string())
    .collect()
}

/// What the boot does about a request, in this order, each step flushed before the next.
pub trait Machine {
    /// The request block ([`read`]).
    fn request(&mut self) -> Result<Found, String>;
    /// Makes a fresh filesystem over the whole data partition and flushes it; it may be
    /// cut at any point and is redone from scratch on the next boot.
    fn make_fs(&mut self) -> Result<(), String>;
    /// Writes the request block all zero and flushes it.
    fn clear(&mut self) -> Result<(), String>;
}

/// What [`at_boot`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// No request (or no room for one): the data partition is mounted as it is.
    Nothing,
    /// A fresh filesystem was made and the request cleared.
    Reset(Request),
    /// A damaged request block was cleared (its command did not finish): nothing reset.
    ClearedDamaged,
    /// The reset failed at `step`; the request stays, so the next boot tries again.
    Failed {
        request: Option<Request>,
        cause: String,
    },
}

/// The boot's part, before the data partition is mounted: a request is carried out by
/// making the filesystem first and clearing the request only once that is flushed, so a
/// cut anywhere leaves the old data (the request not yet written) or a request the next
/// boot carries out again from the start; never a cleared request over a half-made
/// filesystem.
pub fn at_boot(m: &mut dyn Machine) -> Outcome {
    let found = match m.request() {
        Ok(f) => f,
        Err(cause) => {
            return Outcome::Failed {
                request: None,
                cause: format!("reading the request: {cause}"),
            }
        }
    };
    match found {
        Found::None | Found::NoRoom => Outcome::Nothing,
        Found::Damaged => match m.clear() {
            Ok(()) => Outcome::ClearedDamaged,
            Err(cause) => Outcome::Failed {
                request: None,
                cause: format!("clearing a damaged request: {cause}"),
            },
        },
        Found::Requested(r) => {
            if let Err(cause) = m.make_fs() {
                return Outcome::Failed {
                    request: Some(r),
                    cause,
                };
            }
            match m.clear() {
                Ok(()) => Outcome::Reset(r),
                Err(cause) => Outcome::Failed {
                    request: Some(r),
                    cause: format!("clearing the request: {cause}"),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_round_trips_and_every_flipped_bit_is_damaged() {
        for r in [
            Request {
                by: By::Device,
                wall_secs: Some(1_800_000_000),
            },
            Request {
                by: By::Host,
                wall_secs: None,
            },
        ] {
            let b = encode(&r);
            assert_eq!(decode(&b), Found::Requested(r));
            for i in (0..BLOCK).step_by(7) {
                let mut bad = b;
                bad[i] ^= 0x20;
                assert_eq!(decode(&bad), Found::Damaged, "byte {i}");
            }
            // Half a record (a torn write): damaged, never a request.
            let mut torn = [0u8; BLOCK];
            torn[..256].copy_from_slice(&b[..256]);
            assert_eq!(decode(&torn), Found::Damaged);
        }
        assert_eq!(decode(&[0u8; BLOCK]), Found::None);
        assert_eq!(decode(&[1u8; 10]), Found::Damaged);
    }

    #[test]
    fn an_old_state_partition_has_no_room_for_a_request() {
        let mut old = std::io::Cursor::new(vec![0u8; 1 << 20]);
        assert_eq!(read(&mut old).unwrap(), Found::NoRoom);
        let mut new = std::io::Cursor::new(vec![0u8; 2 << 20]);
        assert_eq!(read(&mut new).unwrap(), Found::None);
        let r = Request {
            by: By::Device,
            wall_secs: None,
        };
        let at = usize::try_from(REQUEST_OFFSET).unwrap();
        new.get_mut()[at..at + BLOCK].copy_from_slice(&encode(&r));
        assert_eq!(read(&mut new).unwrap(), Found::Requested(r));
    }

    /// A machine whose steps can fail.
    struct Fake {
        found: Found,
        fail_make: bool,
        steps: Vec<&'static str>,
    }
    impl Machine for Fake {
        fn request(&mut self) -> Result<Found, String> {
            Ok(self.found)
        }
        fn make_fs(&mut self) -> Result<(), String> {
            self.steps.push("make_fs");
            if self.fail_make {
                return Err("mke2fs exited 1".into());
            }
            Ok(())
        }
        fn clear(&mut self) -> Result<(), String> {
            self.steps.push("clear");
            Ok(())
        }
    }

    #[test]
    fn the_request_is_cleared_only_after_the_filesystem_is_made() {
        let r = Request {
            by: By::Host,
            wall_secs: None,
        };
        let mut m = Fake {
            found: Found::Requested(r),
            fail_make: false,
            steps: vec![],
        };
        assert_eq!(at_boot(&mut m), Outcome::Reset(r));
        assert_eq!(m.steps, ["make_fs", "clear"]);
        // A failed mkfs keeps the request for the next boot.
        m.fail_make = true;
        m.steps.clear();
        assert!(matches!(
            at_boot(&mut m),
            Outcome::Failed {
                request: Some(_),
                ..
            }
        ));
        assert_eq!(m.steps, ["make_fs"]);
        // Damaged: cleared, nothing made; none: nothing at all.
        m.found = Found::Damaged;
        m.steps.clear();
        assert_eq!(at_boot(&mut m), Outcome::ClearedDamaged);
        assert_eq!(m.steps, ["clear"]);
        for f in [Found::None, Found::NoRoom] {
            m.found = f;
            m.steps.clear();
            assert_eq!(at_boot(&mut m), Outcome::Nothing);
            assert!(m.steps.is_empty());
        }
    }
}

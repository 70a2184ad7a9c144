//! The flight recorder's event: one checksummed 512-byte record of something a boot or an
//! update did (docs/FORMATS.md "Flight recorder"). Encoding and decoding are pure and never
//! panic; where the events live on the state partition is [`ring`].

use sha2::{Digest, Sha256};

use crate::exit::Exit;
use crate::state::Slot;

pub mod pstore;
pub mod ring;

/// Encoded size of one event.
pub const EVENT_LEN: usize = 512;
/// Event magic.
pub const EVENT_MAGIC: &[u8; 8] = b"STELEEVT";
/// Event version written and understood.
pub const EVENT_VERSION: u8 = 1;
/// The longest release version an event keeps (bytes, UTF-8); longer ones are cut.
pub const VERSION_MAX: usize = 32;
/// The longest text an event keeps (bytes, UTF-8): a cause or an output's tail.
pub const TEXT_MAX: usize = 368;
const CHECKSUM_OFFSET: usize = EVENT_LEN - 32;
const VERSION_AT: usize = 80;
const TEXT_AT: usize = VERSION_AT + VERSION_MAX;

/// Who wrote an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// stele-init in stage 1 (choosing, verifying, mapping).
    Stage1,
    /// stele-init in stage 2 (after a kexec into the slot's own kernel).
    Stage2,
    /// PID 1 supervising the booted slot (health command, marking good).
    Pid1,
    /// `stele update` on the device.
    Update,
    /// A code this stele does not know (written by a newer one).
    Other(u8),
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The slot verified and is booting (its release is in the event).
    Verified,
    /// The slot was refused; the text is the console's cause, the class its exit class.
    Refused,
    /// The slot's last boot(s) ended before it was confirmed healthy (count: how many).
    Unconfirmed,
    /// The boot chose the other slot: this slot ran out of tries or failed its last boots
    /// (count: its unconfirmed boots, 0 when it ran out of tries).
    FellBack,
    /// The previous boot ended in a watchdog reset (the watchdog's boot status said so).
    WatchdogReset,
    /// Stage 1 hands over to the slot's own kernel.
    Kexec,
    /// The health command failed (status: its exit status; text: its output's tail).
    HealthFailed,
    /// The slot was marked good.
    MarkedGood,
    /// An install into the slot began.
    InstallStarted,
    /// An install into the slot was written and flipped (the slot boots next, on trial).
    InstallFinished,
    /// An install was refused (text: the cause, class: its exit class).
    InstallRefused,
    /// The update channel was checked (text: what it said).
    ChannelChecked,
    /// No slot could boot (text: the cause); the failure action runs.
    NoBootableSlot,
    /// The slot's trial ended without it getting healthy (text: why); the machine reboots.
    TrialFailed,
    /// The previous boot ended in a kernel panic (pstore; text: the panic's line, then the
    /// dump's last lines; count: the dumps found).
    Panic,
    /// The previous boot had a kernel oops (pstore; text as for [`Kind::Panic`]).
    Oops,
    /// The previous boot ended in a dm-verity corruption restart (pstore, where the
    /// backend keeps restart dumps).
    VerityRestart,
    /// A fresh data partition was requested (`stele data reset`; text: how to undo it).
    DataResetRequested,
    /// The boot made a fresh filesystem on the data partition (text: the partition).
    DataReset,
    /// The boot could not carry out the reset (text: the cause); the request stays.
    DataResetFailed,
    /// A code this stele does not know (written by a newer one).
    Other(u8),
}

/// The release an event is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    pub version: String,
    pub rollback_index: u64,
    /// The first 8 bytes of the release's signed dm-verity root hash (its content's
    /// identity, in the verified manifest both at boot and at install).
    pub digest: [u8; 8],
}

/// One event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Position in the history: each append takes the highest sequence in the ring + 1.
    pub sequence: u64,
    /// The kernel's boot id (/proc/sys/kernel/random/boot_id); zero on a host.
    pub boot_id: [u8; 16],
    /// Milliseconds since the kernel started (CLOCK_BOOTTIME), where known.
    pub monotonic_ms: Option<u64>,
    /// Seconds since the Unix epoch, where the clock is known to be set.
    pub wall_secs: Option<u64>,
    pub origin: Origin,
    pub kind: Kind,
    pub slot: Option<Slot>,
    pub release: Option<Release>,
    /// The exit class of a refusal's cause.
    pub class: Option<Exit>,
    /// Tries or boots, as the kind says.
    pub count: u8,
    /// An exit status (the health command's).
    pub status: Option<i32>,
    /// A cause or an output's tail, at most [`TEXT_MAX`] bytes.
    pub text: String,
}

impl Event {
    /// An event of `kind` by `origin` with nothing else known (sequence 0: [`ring::append`]
    /// gives it its own).
    pub fn new(origin: Origin, kind: Kind) -> Event {
        Event {
            sequence: 0,
            boot_id: [0; 16],
            monotonic_ms: None,
            wall_secs: None,
            origin,
            kind,
            slot: None,
            release: None,
            class: None,
            count: 0,
            status: None,
            text: String::new(),
        }
    }
}

const CODES: [(Kind, u8); 20] = [
    (Kind::Verified, 1),
    (Kind::Refused, 2),
    (Kind::Unconfirmed, 3),
    (Kind::FellBack, 4),
    (Kind::WatchdogReset, 5),
    (Kind::Kexec, 6),
    (Kind::HealthFailed, 7),
    (Kind::MarkedGood, 8),
    (Kind::InstallStarted, 9),
    (Kind::InstallFinished, 10),
    (Kind::InstallRefused, 11),
    (Kind::ChannelChecked, 12),
    (Kind::NoBootableSlot, 13),
    (Kind::TrialFailed, 14),
    (Kind::Panic, 15),
    (Kind::Oops, 16),
    (Kind::VerityRestart, 17),
    (Kind::DataResetRequested, 20),
    (Kind::DataReset, 21),
    (Kind::DataResetFailed, 22),
];

impl Kind {
    /// The byte on disk.
    pub fn code(self) -> u8 {
        match self {
            Kind::Other(c) => c,
            k => CODES.iter().find(|(x, _)| *x == k).map_or(0, |(_, c)| *c),
        }
    }
    /// The kind of a byte on disk.
    pub fn from_code(c: u8) -> Kind {
        CODES
            .iter()
            .find(|(_, x)| *x == c)
            .map_or(Kind::Other(c), |(k, _)| *k)
    }
    /// Its name in `stele update history` (text and JSON).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Verified => "verified",
            Kind::Refused => "refused",
            Kind::Unconfirmed => "unconfirmed-boot",
            Kind::FellBack => "fell-back",
            Kind::WatchdogReset => "watchdog-reset",
            Kind::Kexec => "kexec",
            Kind::HealthFailed => "health-failed",
            Kind::MarkedGood => "marked-good",
            Kind::InstallStarted => "install-started",
            Kind::InstallFinished => "install-finished",
            Kind::InstallRefused => "install-refused",
            Kind::ChannelChecked => "channel-checked",
            Kind::NoBootableSlot => "no-bootable-slot",
            Kind::TrialFailed => "trial-failed",
            Kind::Panic => "panic",
            Kind::Oops => "oops",
            Kind::VerityRestart => "verity-restart",
            Kind::DataResetRequested => "data-reset-requested",
            Kind::DataReset => "data-reset",
            Kind::DataResetFailed => "data-reset-failed",
            Kind::Other(_) => "unknown",
        }
    }
}

impl Origin {
    /// The byte on disk.
    pub fn code(self) -> u8 {
        match self {
            Origin::Stage1 => 1,
            Origin::Stage2 => 2,
            Origin::Pid1 => 3,
            Origin::Update => 4,
            Origin::Other(c) => c,
        }
    }
    /// The origin of a byte on disk.
    pub fn from_code(c: u8) -> Origin {
        match c {
            1 => Origin::Stage1,
            2 => Origin::Stage2,
            3 => Origin::Pid1,
            4 => Origin::Update,
            c => Origin::Other(c),
        }
    }
    /// Its name in `stele update history`.
    pub fn name(self) -> &'static str {
        match self {
            Origin::Stage1 => "stage1",
            Origin::Stage2 => "stage2",
            Origin::Pid1 => "pid1",
            Origin::Update => "update",
            Origin::Other(_) => "unknown",
        }
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary. Pure.
pub fn head(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The longest suffix of `s` of at most `max` bytes that starts on a character boundary
/// (for an output's last lines). Pure.
pub fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

const FLAG_MONOTONIC: u8 = 1;
const FLAG_WALL: u8 = 2;
const FLAG_STATUS: u8 = 4;
const FLAG_RELEASE: u8 = 8;
const KNOWN_FLAGS: u8 = 15;
const NO_CLASS: u8 = 0xff;

/// Encodes `e` (with its checksum); a version or text too long is cut at a character
/// boundary ([`VERSION_MAX`], [`TEXT_MAX`]). Pure.
pub fn encode(e: &Event) -> [u8; EVENT_LEN] {
    let mut b = [0u8; EVENT_LEN];
    b[0..8].copy_from_slice(EVENT_MAGIC);
    b[8] = EVENT_VERSION;
    b[9] = e.origin.code();
    b[10] = e.kind.code();
    b[11] = match e.slot {
        None => 0,
        Some(Slot::A) => 1,
        Some(Slot::B) => 2,
    };
    b[12] = e.class.map_or(NO_CLASS, Exit::code);
    b[13] = e.count;
    let mut flags = 0;
    if let Some(ms) = e.monotonic_ms {
        flags |= FLAG_MONOTONIC;
        b[40..48].copy_from_slice(&ms.to_le_bytes());
    }
    if let Some(s) = e.wall_secs {
        flags |= FLAG_WALL;
        b[48..56].copy_from_slice(&s.to_le_bytes());
    }
    if let Some(st) = e.status {
        flags |= FLAG_STATUS;
        b[72..76].copy_from_slice(&st.to_le_bytes());
    }
    if let Some(r) = &e.release {
        flags |= FLAG_RELEASE;
        b[56..64].copy_from_slice(&r.rollback_index.to_le_bytes());
        b[64..72].copy_from_slice(&r.digest);
        let v = head(&r.version, VERSION_MAX).as_bytes();
        b[15] = u8::try_from(v.len()).unwrap_or(0); // at most VERSION_MAX (32)
        b[VERSION_AT..VERSION_AT + v.len()].copy_from_slice(v);
    }
    b[14] = flags;
    b[16..24].copy_from_slice(&e.sequence.to_le_bytes());
    b[24..40].copy_from_slice(&e.boot_id);
    let t = head(&e.text, TEXT_MAX).as_bytes();
    b[76..78].copy_from_slice(&u16::try_from(t.len()).unwrap_or(0).to_le_bytes()); // at most TEXT_MAX
    b[TEXT_AT..TEXT_AT + t.len()].copy_from_slice(t);
    let sum = Sha256::digest(&b[..CHECKSUM_OFFSET]);
    b[CHECKSUM_OFFSET..].copy_from_slice(&sum);
    b
}

/// Why a block of the ring holds no event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// All zero: never written.
    Blank,
    /// Anything else: torn, corrupt, or of a newer format.
    Damaged(&'static str),
}

/// Decodes and checks one event (magic, checksum, version, lengths, reserved bytes, UTF-8).
/// Pure; never panics.
pub fn decode(b: &[u8]) -> Result<Event, Invalid> {
    if b.len() < EVENT_LEN {
        return Err(Invalid::Damaged("short"));
    }
    let b = &b[..EVENT_LEN];
    if b.iter().all(|&x| x == 0) {
        return Err(Invalid::Blank);
    }
    if &b[0..8] != EVENT_MAGIC {
        return Err(Invalid::Damaged("bad magic"));
    }
    if Sha256::digest(&b[..CHECKSUM_OFFSET]).as_slice() != &b[CHECKSUM_OFFSET..] {
        return Err(Invalid::Damaged("checksum mismatch (torn or corrupt)"));
    }
    if b[8] != EVENT_VERSION {
        return Err(Invalid::Damaged("unsupported version"));
    }
    let flags = b[14];
    let vlen = usize::from(b[15]);
    let tlen = usize::from(u16::from_le_bytes([b[76], b[77]]));
    if flags & !KNOWN_FLAGS != 0 || vlen > VERSION_MAX || tlen > TEXT_MAX {
        return Err(Invalid::Damaged("invalid field"));
    }
    let zero = |r: std::ops::Range<usize>| b[r].iter().all(|&x| x == 0);
    let unused_zero = b[78..80].iter().all(|&x| x == 0)
        && zero(VERSION_AT + vlen..TEXT_AT)
        && zero(TEXT_AT + tlen..CHECKSUM_OFFSET);
    if !unused_zero {
        return Err(Invalid::Damaged("reserved bytes are not zero"));
    }
    let u64_at = |at: usize| {
        let mut v = [0u8; 8];
        v.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(v)
    };
    let slot = match b[11] {
        0 => None,
        1 => Some(Slot::A),
        2 => Some(Slot::B),
        _ => return Err(Invalid::Damaged("invalid slot")),
    };
    let class = match b[12] {
        NO_CLASS => None,
        0 => Some(Exit::Success),
        1 => Some(Exit::Refused),
        2 => Some(Exit::Usage),
        3 => Some(Exit::Environment),
        _ => return Err(Invalid::Damaged("invalid exit class")),
    };
    let text = |r: std::ops::Range<usize>| {
        std::str::from_utf8(&b[r])
            .map(str::to_owned)
            .map_err(|_| Invalid::Damaged("text is not UTF-8"))
    };
    let release = if flags & FLAG_RELEASE != 0 {
        let mut digest = [0u8; 8];
        digest.copy_from_slice(&b[64..72]);
        Some(Release {
            version: text(VERSION_AT..VERSION_AT + vlen)?,
            rollback_index: u64_at(56),
            digest,
        })
    } else {
        None
    };
    let mut boot_id = [0u8; 16];
    boot_id.copy_from_slice(&b[24..40]);
    Ok(Event {
        sequence: u64_at(16),
        boot_id,
        monotonic_ms: (flags & FLAG_MONOTONIC != 0).then(|| u64_at(40)),
        wall_secs: (flags & FLAG_WALL != 0).then(|| u64_at(48)),
        origin: Origin::from_code(b[9]),
        kind: Kind::from_code(b[10]),
        slot,
        release,
        class,
        count: b[13],
        status: (flags & FLAG_STATUS != 0)
            .then(|| i32::from_le_bytes([b[72], b[73], b[74], b[75]])),
        text: text(TEXT_AT..TEXT_AT + tlen)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn full() -> Event {
        Event {
            sequence: 7,
            boot_id: [9; 16],
            monotonic_ms: Some(1234),
            wall_secs: Some(1_790_000_000),
            origin: Origin::Pid1,
            kind: Kind::HealthFailed,
            slot: Some(Slot::B),
            release: Some(Release {
                version: "2.0.0".into(),
                rollback_index: 3,
                digest: [1, 2, 3, 4, 5, 6, 7, 8],
            }),
            class: Some(Exit::Refused),
            count: 2,
            status: Some(-9),
            text: "check: disk full\n".into(),
        }
    }

    #[test]
    fn an_event_round_trips_and_every_flipped_bit_is_refused() {
        let e = full();
        let b = encode(&e);
        assert_eq!(decode(&b), Ok(e.clone()));
        let bare = Event::new(Origin::Update, Kind::InstallStarted);
        assert_eq!(decode(&encode(&bare)), Ok(bare));
        for i in 0..EVENT_LEN {
            let mut bad = b;
            bad[i] ^= 0x10;
            assert!(
                matches!(decode(&bad), Err(Invalid::Damaged(_))),
                "byte {i} flipped"
            );
        }
        assert_eq!(decode(&[0u8; EVENT_LEN]), Err(Invalid::Blank));
        // A torn write: the first half of the record, zeros after it.
        let mut torn = [0u8; EVENT_LEN];
        torn[..256].copy_from_slice(&b[..256]);
        assert!(matches!(decode(&torn), Err(Invalid::Damaged(_))));
        assert!(matches!(decode(&b[..100]), Err(Invalid::Damaged(_))));
    }

    #[test]
    fn long_texts_are_cut_at_a_character_boundary() {
        let mut e = full();
        e.text = "é".repeat(300);
        e.release.as_mut().unwrap().version = "ü".repeat(40);
        let d = decode(&encode(&e)).unwrap();
        assert_eq!(d.text, "é".repeat(TEXT_MAX / 2));
        assert_eq!(d.release.unwrap().version, "ü".repeat(16));
        assert_eq!(tail("aé", 2), "é");
        assert_eq!(tail("aé", 1), "");
        assert_eq!(head("aé", 2), "a");
    }

    #[test]
    fn unknown_codes_are_kept_not_refused() {
        let mut b = encode(&full());
        b[10] = 200;
        b[9] = 77;
        let sum = Sha256::digest(&b[..CHECKSUM_OFFSET]);
        b[CHECKSUM_OFFSET..].copy_from_slice(&sum);
        let d = decode(&b).unwrap();
        assert_eq!(d.kind, Kind::Other(200));
        assert_eq!(d.origin, Origin::Other(77));
        for (k, c) in CODES {
            assert_eq!(Kind::from_code(c), k);
            assert_eq!(k.code(), c);
        }
    }
}

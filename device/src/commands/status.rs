//! `stele update status`: the boot state and what each slot holds, as text (one line per
//! slot) or one JSON object (serde; field names documented in docs/CLI.md).

use serde::Serialize;

use stele_verifier::state::{BootState, Slot, SlotState};

use crate::runtime::rollback::Floors;
use crate::target::Target;
use crate::Result;

pub use crate::inspect::{inspect_slot, Image};

/// One slot in the status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotStatus {
    pub slot: Slot,
    pub record: SlotState,
    pub image: Image,
}

/// `stele update status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The running slot (unknown on a disk image).
    pub booted: Option<Slot>,
    /// The slot the state boots next.
    pub next: Option<Slot>,
    pub rollback_floor: u64,
    pub slots: [SlotStatus; 2],
}

/// The JSON object, field for field (docs/CLI.md).
#[derive(Serialize)]
struct Json<'a> {
    booted: Option<&'static str>,
    next: Option<&'static str>,
    rollback_floor: u64,
    slots: JsonSlots<'a>,
}

#[derive(Serialize)]
struct JsonSlots<'a> {
    a: JsonSlot<'a>,
    b: JsonSlot<'a>,
}

#[derive(Serialize)]
struct JsonSlot<'a> {
    name: Option<&'a str>,
    version: Option<&'a str>,
    rollback_index: Option<u64>,
    priority: u8,
    tries_remaining: u8,
    successful: bool,
    unconfirmed: u8,
    valid: bool,
    verified: bool,
    error: Option<&'a str>,
}

impl<'a> From<&'a SlotStatus> for JsonSlot<'a> {
    fn from(s: &'a SlotStatus) -> Self {
        let r = &s.record;
        let mut j = JsonSlot {
            name: None,
            version: None,
            rollback_index: None,
            priority: r.priority,
            tries_remaining: r.tries_remaining,
            successful: r.successful,
            unconfirmed: r.unconfirmed,
            valid: false,
            verified: false,
            error: None,
        };
        match &s.image {
            Image::Valid {
                name,
                version,
                rollback_index,
            } => {
                j.name = Some(name);
                j.version = Some(version);
                j.rollback_index = Some(*rollback_index);
                j.valid = true;
                j.verified = true;
            }
            Image::Unverified {
                name,
                version,
                rollback_index,
            } => {
                j.name = Some(name);
                j.version = Some(version);
                j.rollback_index = Some(*rollback_index);
                j.valid = true;
            }
            Image::Empty => j.error = Some("empty"),
            Image::Missing => j.error = Some("missing: no partition"),
            Image::Invalid(why) => j.error = Some(why),
        }
        j
    }
}

impl Status {
    /// Builds the status from the state and each slot's [`Image`]. Pure.
    pub fn new(st: &BootState, booted: Option<Slot>, images: [Image; 2]) -> Status {
        let [a, b] = images;
        let slot = |slot, image| SlotStatus {
            slot,
            record: *st.slot(slot),
            image,
        };
        Status {
            booted,
            next: st.choose(),
            rollback_floor: st.rollback_floor,
            slots: [slot(Slot::A, a), slot(Slot::B, b)],
        }
    }

    /// One line per slot, then the floor and the next slot:
    /// `slot a: booted version=1.0.0 rollback_index=1 priority=1 tries_remaining=0 successful=yes`.
    /// Pure.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for s in &self.slots {
            let mut line = format!("slot {}:", s.slot.name());
            if self.booted == Some(s.slot) {
                line.push_str(" booted");
            }
            if self.next == Some(s.slot) {
                line.push_str(" next");
            }
            match &s.image {
                Image::Valid {
                    version,
                    rollback_index,
                    ..
                } => line.push_str(&format!(
                    " version={version} rollback_index={rollback_index}"
                )),
                Image::Unverified {
                    version,
                    rollback_index,
                    ..
                } => line.push_str(&format!(
                    " unverified version={version} rollback_index={rollback_index}"
                )),
                Image::Empty => line.push_str(" empty"),
                Image::Missing => line.push_str(" missing"),
                Image::Invalid(why) => line.push_str(&format!(" invalid: {why};")),
            }
            let r = &s.record;
            line.push_str(&format!(
                " priority={} tries_remaining={} successful={}",
                r.priority,
                r.tries_remaining,
                if r.successful { "yes" } else { "no" }
            ));
            if r.unconfirmed > 0 {
                line.push_str(&format!(" unconfirmed={}", r.unconfirmed));
            }
            line.push('\n');
            out.push_str(&line);
        }
        out.push_str(&format!(
            "rollback_floor={} next={}\n",
            self.rollback_floor,
            self.next.map_or("none", Slot::name)
        ));
        out
    }

    /// One JSON object with stable keys (see docs/CLI.md), and a newline. Pure.
    pub fn json(&self) -> String {
        // Serializing plain strings, integers and booleans cannot fail.
        let mut s = serde_json::to_string(&self.json_fields()).unwrap_or_default();
        s.push('\n');
        s
    }

    /// The object of [`Status::json`] (also a report's `status`). Pure.
    pub fn json_value(&self) -> serde_json::Value {
        serde_json::to_value(self.json_fields()).unwrap_or_default()
    }

    fn json_fields(&self) -> Json<'_> {
        Json {
            booted: self.booted.map(Slot::name),
            next: self.next.map(Slot::name),
            rollback_floor: self.rollback_floor,
            slots: JsonSlots {
                a: (&self.slots[0]).into(),
                b: (&self.slots[1]).into(),
            },
        }
    }
}

/// `stele update status` on an opened target: both slots checked against its keyring;
/// on the device the booted slot, and the floor an install is checked against (the TPM's
/// or the initramfs minimum when higher than the state's).
pub fn run(t: &mut Target) -> Result<Status> {
    let st = t.state.load()?;
    t.load_floors()?;
    let mut status = Status::new(&st, t.booted(), t.images());
    if t.on_device() {
        let floors = Floors {
            state: st.rollback_floor,
            ..t.trusted.floors()
        };
        status.rollback_floor = floors.effective();
    }
    Ok(status)
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test sizes are small
mod tests {
    use super::*;
    use std::io::Cursor;
    use stele_verifier::testutil::{image_signed_by, ring};

    fn fixture() -> Status {
        let s = BootState {
            rollback_floor: 2,
            ..stele_verifier::testutil::state((1, 0, true), (2, 3, false))
        };
        Status::new(
            &s,
            Some(Slot::A),
            [
                Image::Valid {
                    name: "demo".into(),
                    version: "1.0.0".into(),
                    rollback_index: 1,
                },
                Image::Invalid("bad signature by key \"x\"\n".into()),
            ],
        )
    }

    #[test]
    fn text() {
        assert_eq!(
            fixture().text(),
            "slot a: booted version=1.0.0 rollback_index=1 priority=1 tries_remaining=0 successful=yes\n\
             slot b: next invalid: bad signature by key \"x\"\n; priority=2 tries_remaining=3 successful=no\n\
             rollback_floor=2 next=b\n"
        );
        let mut s = fixture();
        s.slots[0].record.unconfirmed = 2;
        assert!(
            s.text().starts_with("slot a: booted version=1.0.0 rollback_index=1 priority=1 tries_remaining=0 successful=yes unconfirmed=2\n"),
            "{}",
            s.text()
        );
        let mut s = fixture();
        s.slots[1].image = Image::Empty;
        s.booted = None;
        assert!(
            s.text().contains("slot b: next empty priority=2"),
            "{}",
            s.text()
        );
        assert!(
            s.text().starts_with("slot a: version=1.0.0"),
            "{}",
            s.text()
        );
    }

    #[test]
    fn json() {
        assert_eq!(
            fixture().json(),
            "{\"booted\":\"a\",\"next\":\"b\",\"rollback_floor\":2,\"slots\":{\
             \"a\":{\"name\":\"demo\",\"version\":\"1.0.0\",\"rollback_index\":1,\"priority\":1,\"tries_remaining\":0,\"successful\":true,\"unconfirmed\":0,\"valid\":true,\"verified\":true,\"error\":null},\
             \"b\":{\"name\":null,\"version\":null,\"rollback_index\":null,\"priority\":2,\"tries_remaining\":3,\"successful\":false,\"unconfirmed\":0,\"valid\":false,\"verified\":false,\"error\":\"bad signature by key \\\"x\\\"\\n\"}}}\n"
        );
        let mut s = fixture();
        s.booted = None;
        s.slots[0].image = Image::Missing;
        s.slots[1].image = Image::Invalid("a\u{1}\\".into());
        let v: serde_json::Value = serde_json::from_str(&s.json()).unwrap();
        assert_eq!(v["booted"], serde_json::Value::Null);
        assert_eq!(v["slots"]["a"]["error"], "missing: no partition");
        assert_eq!(v["slots"]["b"]["error"], "a\u{1}\\");
        assert!(s.json().contains("\"a\\u0001\\\\\""), "{}", s.json());
    }

    #[test]
    fn inspect_slots() {
        let img = image_signed_by(8, 1, 1, 1).0;
        let mut slot = Cursor::new(vec![0u8; 1 << 20]);
        assert_eq!(
            inspect_slot(&mut slot, 1 << 20, Some(&ring())),
            Image::Empty
        );
        let len = img.len() as u64;
        assert_eq!(
            inspect_slot(&mut Cursor::new(&img), len, Some(&ring())),
            Image::Valid {
                name: "demo".into(),
                version: "1.1".into(),
                rollback_index: 1
            }
        );
        let other = image_signed_by(8, 1, 1, 2).0;
        match inspect_slot(&mut Cursor::new(&other), len, Some(&ring())) {
            Image::Invalid(why) => assert!(why.contains("threshold"), "{why}"),
            i => panic!("{i:?}"),
        }
        match inspect_slot(&mut Cursor::new(vec![1u8; 100]), 100, Some(&ring())) {
            Image::Invalid(why) => assert!(why.contains("footer"), "{why}"),
            i => panic!("{i:?}"),
        }
        // Without keys: everything but the signatures, so another signer's image shows.
        assert_eq!(
            inspect_slot(&mut Cursor::new(&other), len, None),
            Image::Unverified {
                name: "demo".into(),
                version: "1.1".into(),
                rollback_index: 1
            }
        );
        // ... and a modified hash tree is still found.
        let mut tampered = other.clone();
        tampered[8 * 4096 + 5] ^= 1;
        match inspect_slot(&mut Cursor::new(&tampered), len, None) {
            Image::Invalid(why) => assert!(why.contains("root hash mismatch"), "{why}"),
            i => panic!("{i:?}"),
        }
        let mut s = fixture();
        s.slots[0].image = Image::Unverified {
            name: "demo".into(),
            version: "1.0.0".into(),
            rollback_index: 1,
        };
        assert!(
            s.text()
                .starts_with("slot a: booted unverified version=1.0.0"),
            "{}",
            s.text()
        );
        let v: serde_json::Value = serde_json::from_str(&s.json()).unwrap();
        assert_eq!(v["slots"]["a"]["verified"], false);
        assert_eq!(v["slots"]["a"]["valid"], true);
    }
}

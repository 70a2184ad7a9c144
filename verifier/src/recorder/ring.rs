//! Where the flight recorder's events live: a ring of 4 KiB blocks on the state partition,
//! between the two state copies (docs/FORMATS.md "Flight recorder"). Event `n` is in
//! block `n mod CAPACITY`; the head is the valid event with the highest sequence, so a
//! torn block is skipped and the next append rewrites it. Reading and planning are pure;
//! [`append`] writes one block and never touches a state copy (the caller flushes).

use std::io::{self, Read, Seek, SeekFrom, Write};

use super::{decode, encode, Event, Invalid, EVENT_LEN};
use crate::state::{COPY_DISTANCE, SPREAD_MIN_LEN};
use crate::{Error, Result};

/// Each event is written alone in a block of this size (the event, then zeros), so a torn
/// write or a read-modify-write of a 4 KiB sector can only hit that one event.
pub const BLOCK: u64 = BLOCK_LEN as u64;
/// [`BLOCK`] as a buffer length.
const BLOCK_LEN: usize = 4096;
/// Where the ring starts: half-way to copy 1, so that on flash with erase blocks of up to
/// 512 KiB no ring block shares an erase block with a state copy.
pub const RING_OFFSET: u64 = COPY_DISTANCE / 2;
/// Blocks in the ring: [`RING_OFFSET`] up to copy 1 at [`COPY_DISTANCE`] (512 KiB).
pub const CAPACITY: u64 = (COPY_DISTANCE - RING_OFFSET) / BLOCK;
/// At most this many events are written by one boot (stage 1, stage 2 and PID 1 together):
/// a reboot loop writes at most this many blocks per boot beside its state write.
pub const BOOT_BUDGET: u32 = 8;

/// True when a state partition of `len` bytes has a ring: only the spread layout (2 MiB,
/// `stele disk create`); the old 1 MiB layout, whose two copies already share the first
/// erase block, gets none. Pure.
pub fn has_ring(len: u64) -> bool {
    len >= SPREAD_MIN_LEN
}

/// The offset of the block that holds the event with `sequence`. Pure.
pub fn block_offset(sequence: u64) -> u64 {
    RING_OFFSET + (sequence % CAPACITY) * BLOCK
}

/// The events read from a ring.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ring {
    /// The valid events, oldest (lowest sequence) first.
    pub events: Vec<Event>,
    /// Blocks that were written but hold no valid event (torn or corrupt): skipped.
    pub damaged: usize,
}

impl Ring {
    /// The sequence the next event gets: one above the highest, 0 in an empty ring. Pure.
    pub fn next_sequence(&self) -> u64 {
        self.events.last().map_or(0, |e| e.sequence.wrapping_add(1))
    }

    /// The events with a sequence of `n` or more (for a reader that saw those before `n`).
    pub fn since(&self, n: u64) -> &[Event] {
        let i = self.events.partition_point(|e| e.sequence < n);
        &self.events[i..]
    }

    /// Decodes the ring from its blocks' first [`EVENT_LEN`] bytes, each in ring order.
    /// Pure.
    pub fn from_blocks<'a>(blocks: impl IntoIterator<Item = &'a [u8]>) -> Ring {
        let mut ring = Ring::default();
        for b in blocks {
            match decode(b) {
                Ok(e) => ring.events.push(e),
                Err(Invalid::Blank) => {}
                Err(Invalid::Damaged(_)) => ring.damaged += 1,
            }
        }
        ring.events.sort_by_key(|e| e.sequence);
        ring
    }

    /// What to write to append `e`: the block's offset and bytes (`e` with the next
    /// sequence, then zeros), and that sequence. Pure.
    pub fn plan(&self, e: &Event) -> (u64, Vec<u8>, u64) {
        let sequence = self.next_sequence();
        let mut block = vec![0u8; BLOCK_LEN];
        block[..EVENT_LEN].copy_from_slice(&encode(&Event {
            sequence,
            ..e.clone()
        }));
        (block_offset(sequence), block, sequence)
    }
}

fn io_err(e: io::Error) -> Error {
    Error::io("flight recorder", e)
}

/// Reads the ring of the state partition `dev`; `None` when its layout has none
/// ([`has_ring`]). I/O errors are returned; a block that cannot be decoded is skipped.
pub fn read<D: Read + Seek>(dev: &mut D) -> Result<Option<Ring>> {
    let len = dev.seek(SeekFrom::End(0)).map_err(io_err)?;
    if !has_ring(len) {
        return Ok(None);
    }
    let mut heads = Vec::new();
    for i in 0..CAPACITY {
        let mut b = [0u8; EVENT_LEN];
        dev.seek(SeekFrom::Start(RING_OFFSET + i * BLOCK))
            .map_err(io_err)?;
        dev.read_exact(&mut b).map_err(io_err)?;
        heads.push(b);
    }
    Ok(Some(Ring::from_blocks(heads.iter().map(|b| &b[..]))))
}

/// Appends `e` with the next sequence: one block written at its place in the ring, nothing
/// else (no state copy, no other event). Returns its sequence, or `None` when the layout
/// has no ring. The caller flushes.
pub fn append<D: Read + Write + Seek>(dev: &mut D, e: &Event) -> Result<Option<u64>> {
    let Some(ring) = read(dev)? else {
        return Ok(None);
    };
    let (at, block, sequence) = ring.plan(e);
    dev.seek(SeekFrom::Start(at)).map_err(io_err)?;
    dev.write_all(&block).map_err(io_err)?;
    Ok(Some(sequence))
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test sizes are small
mod tests {
    use super::super::{Kind, Origin};
    use super::*;
    use crate::state::{self, BootState, PARTITION_SIZE};
    use std::io::Cursor;

    fn ev(kind: Kind, text: &str) -> Event {
        Event {
            text: text.into(),
            ..Event::new(Origin::Stage1, kind)
        }
    }

    #[test]
    fn the_ring_lies_between_the_copies_and_old_disks_have_none() {
        assert_eq!(CAPACITY, 128);
        assert_eq!(RING_OFFSET, 512 * 1024);
        assert!(block_offset(CAPACITY - 1) + BLOCK <= state::SPREAD_COPY_OFFSETS[1]);
        assert!(block_offset(0) >= 4096);
        let mut old = Cursor::new(vec![0u8; 1 << 20]);
        assert_eq!(read(&mut old).unwrap(), None);
        assert_eq!(append(&mut old, &ev(Kind::Verified, "")).unwrap(), None);
        assert!(old.get_ref().iter().all(|&b| b == 0), "nothing written");
    }

    #[test]
    fn appends_wrap_around_and_never_touch_the_state() {
        let mut dev = Cursor::new(vec![0u8; PARTITION_SIZE as usize]);
        state::initialize(&mut dev, &BootState::initial(true)).unwrap();
        let before = state::load(&mut dev).unwrap();
        for i in 0..300u64 {
            let seq = append(&mut dev, &ev(Kind::MarkedGood, &i.to_string())).unwrap();
            assert_eq!(seq, Some(i));
        }
        assert_eq!(state::load(&mut dev).unwrap(), before);
        let ring = read(&mut dev).unwrap().unwrap();
        assert_eq!(ring.events.len(), CAPACITY as usize);
        assert_eq!(ring.events[0].sequence, 300 - CAPACITY);
        assert_eq!(ring.events.last().unwrap().text, "299");
        assert_eq!(ring.since(298).len(), 2);
        assert_eq!(ring.since(1000).len(), 0);
        // Only the ring's bytes changed.
        let d = dev.get_ref();
        assert!(d[4096..RING_OFFSET as usize].iter().all(|&b| b == 0));
    }

    #[test]
    fn a_torn_event_is_skipped_and_rewritten_by_the_next_append() {
        let mut dev = Cursor::new(vec![0u8; PARTITION_SIZE as usize]);
        for t in ["a", "b"] {
            append(&mut dev, &ev(Kind::Verified, t)).unwrap();
        }
        // The third append torn half-way through its record.
        let ring = read(&mut dev).unwrap().unwrap();
        let (at, block, seq) = ring.plan(&ev(Kind::Refused, "c"));
        assert_eq!(seq, 2);
        dev.get_mut()[at as usize..at as usize + 200].copy_from_slice(&block[..200]);
        let ring = read(&mut dev).unwrap().unwrap();
        assert_eq!(ring.events.len(), 2);
        assert_eq!(ring.damaged, 1);
        assert_eq!(append(&mut dev, &ev(Kind::Refused, "d")).unwrap(), Some(2));
        let ring = read(&mut dev).unwrap().unwrap();
        assert_eq!(ring.damaged, 0);
        let texts: Vec<_> = ring.events.iter().map(|e| e.text.as_str()).collect();
        assert_eq!(texts, ["a", "b", "d"]);
    }
}

//! The `zstd` way's plan ([`FramePlan`]): which frames of the compressed form to fetch and
//! the raw ranges of the other blocks, priced before the first data byte. Its own module:
//! the `zstd` way ([`super::ways`]) and the `delta` way's rest ([`super::patched`]) both
//! use it.

use super::plan::{merge, Action, Plan};
use super::zst::SeekTable;

/// The `zstd` way of a plan: which frames, and the raw ranges of the other blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FramePlan {
    pub table: SeekTable,
    /// Bytes read to find and read the table (its footer, then the table).
    pub table_fetched: u64,
    /// The frames fetched, in order.
    pub frames: Vec<u64>,
    /// Per data block: true when it comes from a frame.
    covered: Vec<bool>,
    /// The fetched blocks not in a chosen frame, as ranges: (first block, blocks).
    pub raw_ranges: Vec<(u64, u64)>,
    /// Compressed bytes of the chosen frames.
    pub frame_bytes: u64,
    /// Bytes of the raw ranges.
    pub raw_bytes: u64,
}

impl FramePlan {
    /// The `zstd` way for `plan` with `table` (read with `table_fetched` bytes): each
    /// frame that holds blocks to fetch is taken when its compressed length is below the
    /// bytes of those blocks; raw ranges of at most `max_blocks` for the others. Pure.
    pub fn new(plan: &Plan, table: SeekTable, table_fetched: u64, max_blocks: u64) -> Self {
        let bs = plan.block_size;
        let per = (table.frame_raw / bs).max(1);
        let mut frames = Vec::new();
        let mut covered = vec![false; plan.actions.len()];
        let mut raw_actions = plan.actions.clone();
        let mut frame_bytes = 0;
        let per = usize::try_from(per).unwrap_or(1);
        for (f, chunk) in plan.actions.chunks(per).enumerate() {
            let wanted = chunk.iter().filter(|a| **a == Action::Fetch).count() as u64;
            let Some(fr) = table.frame(f as u64) else {
                break;
            };
            if wanted == 0 || fr.len >= wanted * bs {
                continue;
            }
            frames.push(f as u64);
            frame_bytes += fr.len;
            let first = f * per;
            for (k, a) in chunk.iter().enumerate() {
                if *a == Action::Fetch {
                    covered[first + k] = true;
                    raw_actions[first + k] = Action::Keep;
                }
            }
        }
        let raw_ranges = merge(&raw_actions, max_blocks);
        let raw_bytes = raw_ranges.iter().map(|r| r.1).sum::<u64>() * bs;
        FramePlan {
            table,
            table_fetched,
            frames,
            covered,
            raw_ranges,
            frame_bytes,
            raw_bytes,
        }
    }

    /// True when data block `i` comes from a frame.
    pub fn covers(&self, i: u64) -> bool {
        usize::try_from(i)
            .ok()
            .and_then(|i| self.covered.get(i).copied())
            .unwrap_or(false)
    }

    /// All the bytes of this way: the table, the frames, the raw ranges.
    pub fn bytes(&self) -> u64 {
        self.table_fetched + self.frame_bytes + self.raw_bytes
    }
}

//! Target `delta_install`: the update planner and the delta writer against a hostile
//! server. The input describes an old and a new image (data blocks changed, inserted,
//! zeroed, removed; the same salt or another), what the target slot already holds, and a
//! script of HTTP range responses (each answer passed, cut, bit-flipped, padded, a 503, a
//! 200 instead of 206, a length that changed, a refusal). The whole install runs: signed
//! first, plan, write. Never a panic; an install that succeeds leaves the slot equal to
//! the new image byte for byte (data, tree, envelope); the plan never fetches a block the
//! base slot or the zero block already gives.

#![allow(clippy::cast_possible_truncation)] // the sizes here are a few dozen blocks

use std::collections::VecDeque;
use std::io::Cursor;
use std::time::Duration;

use stele_engine::delta::apply::apply;
use stele_engine::delta::plan::{plan, Action};
use stele_engine::delta::{
    fetch_meta, Clock, FetchError, Fetcher, KnownHashBlocks, RangeSource, RetryPolicy, Sink, Trust,
};
use stele_verifier::progress::Silent;
use stele_verifier::testutil::{image_of_blocks, ring, slot_with};

use crate::codec::{Reader, Writer};
use crate::Seed;

/// Signed first (footer, envelope, hash tree), then the plan and the write (the plan reads
/// only the local slots: it cannot fail on what the server sends).
pub const STAGES: &[&str] = &["footer, envelope and tree", "written"];

const BS: usize = 4096;
/// The slot partitions: room for the largest image an input describes.
const SLOT_LEN: u64 = 40 * BS as u64;
const MAX_BLOCKS: usize = 12;
const MAX_EDITS: usize = 6;
const MAX_ANSWERS: usize = 32;

/// What the server does to one answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The bytes asked for.
    Pass,
    /// Breaks off after `at` (modulo the length) bytes.
    Cut(u32),
    /// Bit 0 of byte `at` (modulo the length) flipped.
    Flip(u32),
    /// `n` bytes more than asked for.
    Extra(u16),
    /// 503 with Retry-After `n` seconds.
    Busy(u16),
    /// 200 with the whole file (the server ignores Range): streamed from then on.
    Whole,
    /// Another total length than before.
    Changed,
    /// 404.
    Refused,
}

const ANSWER_KINDS: usize = 8;

/// The structured input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeltaInput {
    /// (tag, fill) of each old data block; fill 0 is the zero block.
    pub old: Vec<(u8, u8)>,
    /// (where, kind: replace/insert/zero/remove, tag).
    pub edits: Vec<(u8, u8, u8)>,
    pub same_salt: bool,
    /// The target slot: blank, half of the new image, an older image.
    pub target: u8,
    pub answers: Vec<Answer>,
}

impl DeltaInput {
    pub fn decode(data: &[u8]) -> Self {
        let mut r = Reader::new(data);
        let old = r.list(MAX_BLOCKS, |r| (r.u8(), r.u8()));
        let edits = r.list(MAX_EDITS, |r| (r.u8(), r.u8(), r.u8()));
        let same_salt = r.bool();
        let target = r.u8();
        let answers = r.list(MAX_ANSWERS, |r| match r.choice(ANSWER_KINDS) {
            0 => Answer::Pass,
            1 => Answer::Cut(r.u32()),
            2 => Answer::Flip(r.u32()),
            3 => Answer::Extra(r.u16()),
            4 => Answer::Busy(r.u16()),
            5 => Answer::Whole,
            6 => Answer::Changed,
            _ => Answer::Refused,
        });
        DeltaInput {
            old,
            edits,
            same_salt,
            target,
            answers,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.list(&self.old, MAX_BLOCKS, |w, &(t, f)| {
            w.u8(t);
            w.u8(f);
        });
        w.list(&self.edits, MAX_EDITS, |w, &(a, k, t)| {
            w.u8(a);
            w.u8(k);
            w.u8(t);
        });
        w.bool(self.same_salt);
        w.u8(self.target);
        w.list(&self.answers, MAX_ANSWERS, |w, a| match *a {
            Answer::Pass => w.choice(0, ANSWER_KINDS),
            Answer::Cut(at) => {
                w.choice(1, ANSWER_KINDS);
                w.u32(at);
            }
            Answer::Flip(at) => {
                w.choice(2, ANSWER_KINDS);
                w.u32(at);
            }
            Answer::Extra(n) => {
                w.choice(3, ANSWER_KINDS);
                w.u16(n);
            }
            Answer::Busy(n) => {
                w.choice(4, ANSWER_KINDS);
                w.u16(n);
            }
            Answer::Whole => w.choice(5, ANSWER_KINDS),
            Answer::Changed => w.choice(6, ANSWER_KINDS),
            Answer::Refused => w.choice(7, ANSWER_KINDS),
        });
        w.finish()
    }
}

fn block(tag: u8, fill: u8) -> Vec<u8> {
    if fill == 0 {
        return vec![0; BS];
    }
    let mut b = vec![fill; BS];
    b[0] = tag;
    b[1] = 0xb1;
    b
}

/// The old and new data blocks of an input.
fn blocks(i: &DeltaInput) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut old: Vec<Vec<u8>> = i.old.iter().map(|&(t, f)| block(t, f % 3)).collect();
    if old.is_empty() {
        old.push(block(1, 1));
    }
    let mut new = old.clone();
    for &(at, kind, tag) in &i.edits {
        let at = usize::from(at) % new.len();
        match kind % 4 {
            0 => new[at] = block(tag, 9),
            1 => new.insert(at, block(tag, 7)),
            2 => new[at] = block(0, 0),
            _ => {
                new.remove(at);
                if new.is_empty() {
                    new.push(block(3, 3));
                }
            }
        }
    }
    (old, new)
}

/// A slot image (signed by the testutil key 1) of `data` with `salt`.
fn image(data: &[Vec<u8>], salt: u8, index: u64) -> Vec<u8> {
    image_of_blocks(data, salt, index, 4096)
}

/// A clock that moves only when slept on.
#[derive(Debug, Default)]
struct FakeClock(Duration);

impl Clock for FakeClock {
    fn now(&mut self) -> Duration {
        self.0
    }
    fn sleep(&mut self, d: Duration) {
        self.0 += d;
    }
    fn random(&mut self) -> f64 {
        0.5
    }
}

/// The image served with the script's answers (then honest ones).
#[derive(Debug)]
struct Scripted {
    file: Vec<u8>,
    answers: VecDeque<Answer>,
    stream: Option<usize>,
}

impl RangeSource for Scripted {
    fn name(&self) -> String {
        "fuzz://image".into()
    }
    fn len(&mut self) -> Result<u64, FetchError> {
        Ok(self.file.len() as u64)
    }
    fn read_range(&mut self, off: u64, len: u64, sink: Sink<'_>) -> Result<(), FetchError> {
        let end = off.saturating_add(len).min(self.file.len() as u64);
        let mut answer = self.file
            [usize::try_from(off.min(end)).unwrap_or(0)..usize::try_from(end).unwrap_or(0)]
            .to_vec();
        let mut cut = None;
        match self.answers.pop_front().unwrap_or(Answer::Pass) {
            Answer::Pass => {}
            Answer::Cut(at) => cut = Some(at as usize % answer.len().max(1)),
            Answer::Flip(at) => {
                if !answer.is_empty() {
                    let i = at as usize % answer.len();
                    answer[i] ^= 1;
                }
            }
            Answer::Extra(n) => answer.extend(std::iter::repeat_n(0x5a, usize::from(n))),
            Answer::Busy(n) => {
                return Err(FetchError::Transient {
                    why: "503".into(),
                    retry_after: Some(Duration::from_secs(u64::from(n % 120))),
                })
            }
            Answer::Whole => return Err(FetchError::RangesIgnored),
            Answer::Changed => {
                return Err(FetchError::Changed {
                    was: self.file.len() as u64,
                    now: self.file.len() as u64 + 4096,
                })
            }
            Answer::Refused => {
                return Err(FetchError::Permanent {
                    why: "404 Not Found".into(),
                })
            }
        }
        let upto = cut.unwrap_or(answer.len());
        for piece in answer[..upto].chunks(1500) {
            sink(piece).map_err(|_| FetchError::Aborted)?;
        }
        match cut {
            Some(_) => Err(FetchError::transient("connection reset")),
            None => Ok(()),
        }
    }
    fn start_stream(&mut self) -> Result<(), FetchError> {
        self.stream = Some(0);
        Ok(())
    }
    fn read_stream(&mut self, buf: &mut [u8]) -> Result<usize, FetchError> {
        let pos = self.stream.unwrap_or(self.file.len());
        let n = buf.len().min(self.file.len() - pos).min(3000);
        buf[..n].copy_from_slice(&self.file[pos..pos + n]);
        self.stream = Some(pos + n);
        Ok(n)
    }
}

/// Runs the install of `data`; returns how many [`STAGES`] it passed.
fn install(data: &[u8]) -> usize {
    let input = DeltaInput::decode(data);
    let (old, new) = blocks(&input);
    let old_img = image(&old, 1, 1);
    let new_img = image(&new, if input.same_salt { 1 } else { 2 }, 2);
    let mut base = Cursor::new(slot_with(&old_img, SLOT_LEN as usize));
    let mut target = Cursor::new(match input.target % 3 {
        0 => vec![0xee; SLOT_LEN as usize],
        1 => {
            let mut t = vec![0xee; SLOT_LEN as usize];
            let half = new.len() / 2 * BS;
            t[..half].copy_from_slice(&new_img[..half]);
            t
        }
        _ => slot_with(&image(&old[..old.len() / 2 + 1], 3, 0), SLOT_LEN as usize),
    });
    let mut src = Scripted {
        file: new_img.clone(),
        answers: input.answers.iter().copied().collect(),
        stream: None,
    };
    let mut clock = FakeClock::default();
    let policy = RetryPolicy {
        deadline: Duration::from_secs(600),
        ..RetryPolicy::default()
    };
    let mut f = Fetcher::new(&mut src, &mut clock, policy, None);
    let keys = ring();
    let trust = Trust::Keyring(&keys);
    let known = KnownHashBlocks::from_slot(&mut base, SLOT_LEN, trust)
        .expect("the base slot is a valid image");
    let Ok(meta) = fetch_meta(&mut f, trust, Some(0), Some(SLOT_LEN), known.as_ref()) else {
        return 0;
    };
    let p = plan(
        &meta,
        Some((&mut target, SLOT_LEN)),
        Some((&mut base, SLOT_LEN)),
        trust,
        3 * BS as u64,
    )
    .expect("planning reads only local slots");
    let before = target.get_ref().clone();
    for (i, a) in p.actions.iter().enumerate() {
        if *a == Action::Fetch {
            assert!(
                !old.contains(&new[i]) && new[i] != vec![0; BS],
                "block {i} is fetched but the base slot or the zero block has it"
            );
            assert!(
                before.get(i * BS..(i + 1) * BS) != Some(&new[i][..]),
                "block {i} is fetched but the target slot has it"
            );
        }
    }
    let Ok((written, _)) = apply(
        &meta,
        &p,
        &mut f,
        &mut target,
        SLOT_LEN,
        Some(&mut base),
        &mut Silent,
    ) else {
        return 1;
    };
    let n = usize::try_from(written.image_len).unwrap_or(usize::MAX);
    assert!(
        target.get_ref()[..n] == new_img[..n],
        "the written slot differs from the new image"
    );
    2
}

pub fn run(data: &[u8]) {
    install(data);
}

pub fn depth(data: &[u8]) -> usize {
    install(data)
}

fn seed(name: &str, answers: Vec<Answer>, same_salt: bool, target: u8) -> Seed {
    let input = DeltaInput {
        old: (1..=8).map(|t| (t, 1 + t % 2)).collect(),
        edits: vec![(2, 0, 40), (5, 1, 41), (7, 2, 0)],
        same_salt,
        target,
        answers,
    };
    Seed::new(name, input.encode())
}

/// Seeds: honest answers for each target state and salt, and every kind of HTTP range
/// response fault at the footer, the envelope, the tree and the data.
pub fn seeds() -> Vec<Seed> {
    use Answer::*;
    let mut v = vec![
        seed("honest", vec![], true, 0),
        seed("other-salt", vec![], false, 0),
        seed("resume-half", vec![], true, 1),
        seed("older-target", vec![], false, 2),
    ];
    for (name, a) in [
        ("cut", Cut(100)),
        ("flip", Flip(77)),
        ("extra", Extra(10)),
        ("busy", Busy(3)),
        ("whole-file", Whole),
        ("changed-length", Changed),
        ("refused", Refused),
    ] {
        for (at, skip) in [("footer", 0), ("envelope", 1), ("tree", 2), ("data", 3)] {
            let mut answers = vec![Pass; skip];
            answers.push(a);
            v.push(seed(&format!("{name}-at-{at}"), answers, true, 0));
        }
    }
    v.push(seed("flip-every-time", vec![Flip(5); 12], true, 0));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_reads_what_encode_wrote() {
        for s in seeds() {
            let d = DeltaInput::decode(&s.bytes);
            assert_eq!(d.encode(), s.bytes, "{}", s.name);
        }
    }

    #[test]
    fn honest_seeds_install_and_faults_end_verified_or_refused() {
        for s in seeds() {
            let got = depth(&s.bytes);
            if s.name == "honest" || s.name.starts_with("resume") || s.name.ends_with("salt") {
                assert_eq!(got, 2, "{}", s.name);
            }
            run(&s.bytes);
        }
        // A server that ignores Range still gets the image installed.
        assert_eq!(depth(&seed("w", vec![Answer::Whole], true, 0).bytes), 2);
        // One that refuses the footer is refused before anything is planned.
        assert_eq!(depth(&seed("r", vec![Answer::Refused], true, 0).bytes), 0);
    }
}

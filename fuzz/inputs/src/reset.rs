//! Target `data_reset`: bytes as the data reset request's block on the state partition
//! (at most 4 KiB, the rest zero). What decodes as a request re-encodes to the same block;
//! the boot's steps over it make the filesystem only for a request, and clear the block
//! before anything else reads it again only after that.

use stele_verifier::data_reset::{
    at_boot, decode, encode, By, Found, Machine, Outcome, Request, BLOCK,
};

use crate::Seed;

pub const STAGES: &[&str] = &["not all zero", "a valid request"];

fn block(data: &[u8]) -> Vec<u8> {
    let mut b = data[..data.len().min(BLOCK)].to_vec();
    b.resize(BLOCK, 0);
    b
}

/// Records the boot's steps on a block.
struct Steps {
    block: Vec<u8>,
    made: bool,
}

impl Machine for Steps {
    fn request(&mut self) -> Result<Found, String> {
        Ok(decode(&self.block))
    }
    fn make_fs(&mut self) -> Result<(), String> {
        self.made = true;
        Ok(())
    }
    fn clear(&mut self) -> Result<(), String> {
        self.block = vec![0; BLOCK];
        Ok(())
    }
}

pub fn run(data: &[u8]) {
    let b = block(data);
    let found = decode(&b);
    let _ = decode(data);
    if let Found::Requested(r) = found {
        assert_eq!(encode(&r).to_vec(), b);
    }
    let mut m = Steps {
        block: b,
        made: false,
    };
    let outcome = at_boot(&mut m);
    assert_eq!(m.made, matches!(found, Found::Requested(_)));
    match found {
        Found::Requested(r) => assert_eq!(outcome, Outcome::Reset(r)),
        Found::Damaged => assert_eq!(outcome, Outcome::ClearedDamaged),
        Found::None | Found::NoRoom => assert_eq!(outcome, Outcome::Nothing),
    }
    assert_eq!(decode(&m.block), Found::None);
}

pub fn depth(data: &[u8]) -> usize {
    match decode(&block(data)) {
        Found::None | Found::NoRoom => 0,
        Found::Damaged => 1,
        Found::Requested(_) => 2,
    }
}

pub fn seeds() -> Vec<Seed> {
    let device = encode(&Request {
        by: By::Device,
        wall_secs: Some(1_790_000_000),
    });
    let host = encode(&Request {
        by: By::Host,
        wall_secs: None,
    });
    vec![
        Seed::new("blank", vec![0u8; 512]),
        Seed::new("device", device[..512].to_vec()),
        Seed::new("host", host[..512].to_vec()),
        Seed::new("torn", device[..300].to_vec()),
    ]
}

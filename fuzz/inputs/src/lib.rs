//! stele's fuzz targets, as plain functions: what each target does with its input
//! (`run`, with its assertions), its seed corpus (`seeds`, written by `cargo xtask fuzz`),
//! and how far an input gets through the checks (`depth`, replayed over a corpus after a
//! run). The cargo-fuzz binaries in fuzz/fuzz_targets/ are one-line wrappers of `run`.
//!
//! Adding a target: a module here with `run`, `seeds`, `STAGES` and `depth`; one entry in
//! [`TARGETS`]; a `[[bin]]` in fuzz/Cargo.toml and fuzz/fuzz_targets/<name>.rs calling
//! `run`. The tests check that the three lists agree.

pub mod channel;
pub mod codec;
pub mod config;
pub mod data_grow;
pub mod delta;
pub mod envelope;
pub mod fat;
pub mod footer;
pub mod lzc;
pub mod patch;
pub mod pstore;
pub mod recorder;
pub mod reset;
pub mod slot;
pub mod state;
pub mod zst;

use std::sync::OnceLock;

use stele_verifier::keys::{Keyring, SigningKey};

/// One input of a seed corpus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seed {
    /// File name under the corpus directory (without the `seed-` prefix).
    pub name: String,
    pub bytes: Vec<u8>,
}

impl Seed {
    pub fn new(name: impl Into<String>, bytes: Vec<u8>) -> Self {
        Seed {
            name: name.into(),
            bytes,
        }
    }
}

/// A fuzz target.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    /// The cargo-fuzz target (`[[bin]]` of fuzz/Cargo.toml).
    pub name: &'static str,
    /// The target's body: never panics, except where one of its assertions finds a bug.
    pub run: fn(&[u8]),
    /// The seed corpus.
    pub seeds: fn() -> Vec<Seed>,
    /// The checks an input can pass, in the order the code under test makes them.
    pub stages: &'static [&'static str],
    /// How many of `stages` an input passes (0 = stopped at the first check).
    pub depth: fn(&[u8]) -> usize,
}

/// Every fuzz target, in the order `cargo xtask fuzz` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "footer",
        run: footer::run,
        seeds: footer::seeds,
        stages: footer::STAGES,
        depth: footer::depth,
    },
    Target {
        name: "envelope",
        run: envelope::run,
        seeds: envelope::seeds,
        stages: envelope::STAGES,
        depth: envelope::depth,
    },
    Target {
        name: "manifest_verify",
        run: envelope::run_body,
        seeds: envelope::body_seeds,
        stages: envelope::BODY_STAGES,
        depth: envelope::body_depth,
    },
    Target {
        name: "slot_locate",
        run: slot::run_image,
        seeds: slot::image_seeds,
        stages: slot::STAGES,
        depth: slot::image_depth,
    },
    Target {
        name: "slot_verify",
        run: slot::run,
        seeds: slot::seeds,
        stages: slot::STAGES,
        depth: slot::depth,
    },
    Target {
        name: "state_load",
        run: state::run_area,
        seeds: state::area_seeds,
        stages: state::AREA_STAGES,
        depth: state::area_depth,
    },
    Target {
        name: "state_roundtrip",
        run: state::run,
        seeds: state::seeds,
        stages: state::STAGES,
        depth: state::depth,
    },
    Target {
        name: "recorder_ring",
        run: recorder::run,
        seeds: recorder::seeds,
        stages: recorder::STAGES,
        depth: recorder::depth,
    },
    Target {
        name: "data_reset",
        run: reset::run,
        seeds: reset::seeds,
        stages: reset::STAGES,
        depth: reset::depth,
    },
    Target {
        name: "pstore_dump",
        run: pstore::run,
        seeds: pstore::seeds,
        stages: pstore::STAGES,
        depth: pstore::depth,
    },
    Target {
        name: "boot_toml",
        run: config::run_boot,
        seeds: config::boot_seeds,
        stages: config::STAGES,
        depth: config::boot_depth,
    },
    Target {
        name: "system_toml",
        run: config::run_system,
        seeds: config::system_seeds,
        stages: config::STAGES,
        depth: config::system_depth,
    },
    Target {
        name: "channel_verify",
        run: channel::run,
        seeds: channel::seeds,
        stages: channel::STAGES,
        depth: channel::depth,
    },
    Target {
        name: "delta_install",
        run: delta::run,
        seeds: delta::seeds,
        stages: delta::STAGES,
        depth: delta::depth,
    },
    Target {
        name: "fat_read",
        run: fat::run,
        seeds: fat::seeds,
        stages: fat::STAGES,
        depth: fat::depth,
    },
    Target {
        name: "data_grow",
        run: data_grow::run,
        seeds: data_grow::seeds,
        stages: data_grow::STAGES,
        depth: data_grow::depth,
    },
    Target {
        name: "zst_frames",
        run: zst::run,
        seeds: zst::seeds,
        stages: zst::STAGES,
        depth: zst::depth,
    },
    Target {
        name: "delta_frames",
        run: patch::run,
        seeds: patch::seeds,
        stages: patch::STAGES,
        depth: patch::depth,
    },
    Target {
        name: "lzc_frames",
        run: lzc::run,
        seeds: lzc::seeds,
        stages: lzc::STAGES,
        depth: lzc::depth,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// Number of keys the targets sign with: `key(0)` and `key(1)` are trusted, `key(2)` is not.
pub const KEYS: u8 = 3;

/// The targets' signing keys (deterministic). `key(0)` is the one the byte-level targets
/// (envelope, manifest_verify, slot_locate) sign their seeds with. Derived once: deriving
/// a public key costs more than most runs of a target.
pub fn key(i: u8) -> &'static SigningKey {
    static DERIVED: OnceLock<Vec<SigningKey>> = OnceLock::new();
    let keys = DERIVED.get_or_init(|| {
        (0..KEYS)
            .map(|i| SigningKey::from_bytes(&[7 + i; 32]))
            .collect()
    });
    &keys[usize::from(i)]
}

/// The keyring the targets verify against: `key(0)` and `key(1)`, `threshold` (1 or 2) of
/// them.
pub fn ring(threshold: usize) -> &'static Keyring {
    static RINGS: OnceLock<Vec<Keyring>> = OnceLock::new();
    let rings = RINGS.get_or_init(|| {
        [1, 2]
            .map(|t| {
                Keyring::new(vec![key(0).verifying_key(), key(1).verifying_key()], t)
                    .expect("a valid test keyring")
            })
            .to_vec()
    });
    &rings[threshold.clamp(1, 2) - 1]
}

#[cfg(test)]
mod tests;

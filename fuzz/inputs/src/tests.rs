//! The targets, their seeds and their input formats, checked in the ordinary test suite:
//! every seed runs clean, the seeds reach every stage of their target, the structured
//! formats round-trip, and the target list matches fuzz/Cargo.toml.

use std::collections::BTreeSet;
use std::path::PathBuf;

use proptest::prelude::*;

use super::*;
use crate::slot::SlotInput;
use crate::state::StateInput;

#[test]
fn every_seed_runs_and_the_seeds_stop_at_every_stage() {
    for t in TARGETS {
        let seeds = (t.seeds)();
        let names: BTreeSet<&str> = seeds.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names.len(), seeds.len(), "{}: seed names repeat", t.name);
        let mut reached = BTreeSet::new();
        for s in &seeds {
            (t.run)(&s.bytes);
            let d = (t.depth)(&s.bytes);
            assert!(d <= t.stages.len(), "{}: {} has depth {d}", t.name, s.name);
            reached.insert(d);
        }
        let all: BTreeSet<usize> = (0..=t.stages.len()).collect();
        assert_eq!(reached, all, "{}: depths its seeds reach", t.name);
    }
}

#[test]
fn every_shape_verifies_in_both_slot_targets() {
    let shapes = slot::shapes();
    let mut combos = BTreeSet::new();
    for s in &shapes {
        let image = s.build().image;
        assert_eq!(slot::image_depth(&image), slot::STAGES.len(), "{s:?}");
        assert_eq!(slot::depth(&s.encode()), slot::STAGES.len(), "{s:?}");
        let levels = s.build().levels.min(2);
        combos.insert((
            s.fs_type.name(),
            s.data_block_size,
            s.hash_block_size,
            s.salt.is_empty(),
            levels,
        ));
    }
    let sizes = [512, 1024, 4096];
    for fs in ["erofs", "squashfs", "ext4"] {
        for d in sizes {
            for h in sizes {
                assert!(
                    combos.iter().any(|c| (c.0, c.1, c.2) == (fs, d, h)),
                    "no {fs} seed with {d}-byte data and {h}-byte hash blocks"
                );
            }
        }
    }
    for salted in [true, false] {
        for levels in 0..=2 {
            assert!(combos.iter().any(|c| (c.3, c.4) == (salted, levels)));
        }
    }
}

#[test]
fn targets_match_the_cargo_fuzz_package() {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest: toml::Table = std::fs::read_to_string(fuzz.join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let bins: BTreeSet<String> = manifest["bin"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect();
    let names: BTreeSet<String> = TARGETS.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(bins, names, "fuzz/Cargo.toml [[bin]] names and TARGETS");
    for t in TARGETS {
        let src =
            std::fs::read_to_string(fuzz.join(format!("fuzz_targets/{}.rs", t.name))).unwrap();
        assert!(
            src.contains("stele_fuzz_inputs::"),
            "{} does not call its run",
            t.name
        );
        assert!(target(t.name).is_some());
    }
}

proptest! {
    #[test]
    fn slot_input_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let input = SlotInput::decode(&bytes);
        prop_assert_eq!(SlotInput::decode(&input.encode()), input);
    }

    #[test]
    fn state_input_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
        let input = StateInput::decode(&bytes);
        prop_assert_eq!(StateInput::decode(&input.encode()), input);
    }

    #[test]
    fn any_slot_input_runs(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        slot::run(&bytes);
    }

    #[test]
    fn any_state_input_runs(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
        state::run(&bytes);
    }

    /// The grow's seed with bytes changed in its tables and superblock (the headers, the
    /// entries, the data partition's superblock), a power cut anywhere.
    #[test]
    fn a_changed_disk_grows_safely(
        changes in proptest::collection::vec((0usize..4, 0usize..1024, any::<u8>()), 1..6),
        cut in any::<u8>(),
    ) {
        let mut input = data_grow::seeds().remove(0).bytes;
        input[1] = cut % 12;
        for (area, at, v) in changes {
            // Input offset 2 is the disk's byte 0: MBR+header, the entries, the superblock.
            let base = [2 + 512, 2 + 1024, 2 + 1024 + 512, 2 + 300 * 512 + 1024][area];
            input[base + at % 512] = v;
        }
        data_grow::run(&input);
    }
}

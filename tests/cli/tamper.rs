//! One flipped bit anywhere that matters is refused by `stele verify`, with the cause named.

use crate::fixture::Fixture;
use crate::util::*;

fn tampered(fx: &Fixture, bytes: &[u8], offset: usize, name: &str) -> String {
    let dest = fx.path(name);
    write_flipped(bytes, offset, &dest);
    dest.display().to_string()
}

#[test]
fn every_region_is_protected() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("a");
    let img = fx.build("s.img", &k);
    ok(stele(&["verify", &img, "--key", &p, "--full"]));
    let bytes = std::fs::read(&img).unwrap();
    let r = regions(&bytes);

    let t = tampered(&fx, &bytes, r.body_offset + r.body_len / 2, "body.img");
    fails(&stele(&["verify", &t, "--key", &p]), 1, &["bad signature"]);

    let t = tampered(&fx, &bytes, r.manifest_offset + 24 + 8 + 10, "sig.img");
    fails(&stele(&["verify", &t, "--key", &p]), 1, &["bad signature"]);

    // The key id of the only signature: now it is by an unknown key.
    let t = tampered(&fx, &bytes, r.manifest_offset + 24 + 2, "keyid.img");
    fails(
        &stele(&["verify", &t, "--key", &p]),
        1,
        &["threshold not met"],
    );

    for (i, off) in [40, 4064, 4095].into_iter().enumerate() {
        let t = tampered(&fx, &bytes, r.footer + off, &format!("footer{i}.img"));
        fails(&stele(&["verify", &t, "--key", &p]), 1, &["footer"]);
    }

    // Top hash block: the root hash no longer matches.
    let t = tampered(&fx, &bytes, r.hash_offset + 7, "top.img");
    fails(
        &stele(&["verify", &t, "--key", &p]),
        1,
        &["root hash mismatch", "hash tree mismatch"],
    );

    // Last level-0 hash block: the hash tree no longer matches its parent.
    let t = tampered(&fx, &bytes, r.hash_tree_end - 4096 + 3, "leaf.img");
    fails(&stele(&["verify", &t, "--key", &p]), 1, &["hash tree"]);

    // A data block: only the full check reads the data, and names the block.
    let t = tampered(&fx, &bytes, 5 * 4096 + 123, "data.img");
    ok(stele(&["verify", &t, "--key", &p]));
    fails(
        &stele(&["verify", &t, "--key", &p, "--full"]),
        1,
        &["data block 5"],
    );

    // The padding after the filesystem is covered too (it is part of the last data block).
    let t = tampered(&fx, &bytes, r.hash_offset - 1, "pad.img");
    let last = r.data_blocks - 1;
    fails(
        &stele(&["verify", &t, "--key", &p, "--full"]),
        1,
        &[&format!("data block {last}")],
    );
}

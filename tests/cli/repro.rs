//! Reproducible builds: same tree content, salt and SOURCE_DATE_EPOCH give the same bytes,
//! whatever the files' mtimes, for every filesystem type.

use crate::fixture::{Fixture, SALT};
use crate::util::*;

fn build(fx: &Fixture, root: &str, k: &str, fs: &str, out: &str, epoch: Option<&str>) -> Vec<u8> {
    let image = fx.image(root, k).version("1.0").salt(SALT).fs(fs);
    let img = match epoch {
        Some(e) => image.epoch(e).build(out),
        None => image.build(out),
    };
    std::fs::read(&img).unwrap()
}

#[test]
fn same_inputs_same_bytes_for_every_filesystem() {
    let fx = Fixture::new();
    let (k, p) = fx.keygen("a");
    for (fs, tool) in [
        ("erofs", "mkfs.erofs"),
        ("squashfs", "mksquashfs"),
        ("ext4", "mkfs.ext4"),
    ] {
        need_tool(tool);
        let r1 = fx.tree(&format!("{fs}-1"), true).build();
        let a = build(&fx, &r1, &k, fs, &format!("{fs}-a.img"), Some("1700000000"));
        // The same content created later (different mtimes, ctimes and inode numbers).
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let r2 = fx.tree(&format!("{fs}-2"), true).build();
        let b = build(&fx, &r2, &k, fs, &format!("{fs}-b.img"), Some("1700000000"));
        assert!(a == b, "{fs}: two builds of the same tree differ");
        let s = ok(stele(&[
            "verify",
            &fx.p(&format!("{fs}-b.img")),
            "--key",
            &p,
            "--full",
        ]));
        assert!(s.starts_with("verified: demo 1.0"), "{s}");
        // Without SOURCE_DATE_EPOCH the timestamps are 0: still reproducible.
        let c = build(&fx, &r1, &k, fs, &format!("{fs}-c.img"), None);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let d = build(&fx, &r2, &k, fs, &format!("{fs}-d.img"), None);
        assert!(c == d, "{fs}: builds without SOURCE_DATE_EPOCH differ");
        assert!(a != c, "{fs}: SOURCE_DATE_EPOCH had no effect");
    }
}

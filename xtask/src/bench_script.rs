//! `cargo xtask bench boot`'s comparison init: a busybox + veritysetup script doing
//! stele-init's work by hand ([`script_init`]).

/// The GPT name the script init looks for (stele's default for slot a).
pub const SLOT_A: &str = stele_verifier::layout::Role::SlotA.name();

/// What the script init needs to know about the slot (from its manifest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerityArgs {
    pub root_hash: String,
    pub salt: String,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub data_blocks: u64,
    pub hash_offset: u64,
    pub fs_type: &'static str,
}

/// The comparison `/init`: busybox sh doing stele-init's work by hand: the kernel
/// filesystems, `modules` in order, the slot by its GPT name, veritysetup open with the
/// manifest's parameters (restart on corruption, as stele's table), the read-only lower
/// mount, the tmpfs overlay, /dev /proc /sys /run moved, switch_root. No signature, rollback
/// or boot state work: that is stele-init's extra. Pure.
pub fn script_init(modules: &[String], v: &VerityArgs) -> String {
    let loads: String = modules
        .iter()
        .map(|m| format!("insmod /lib/modules/{m} 2>/dev/null\n"))
        .collect();
    format!(
        r#"#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=0755 run /run
{loads}dev=
while [ -z "$dev" ]; do
  for u in /sys/class/block/*/uevent; do
    if grep -q '^PARTNAME={SLOT_A}$' "$u"; then dev=/dev/$(grep '^DEVNAME=' "$u" | cut -d= -f2); fi
  done
  [ -n "$dev" ] || usleep 50000
done
veritysetup open "$dev" stele-root "$dev" {root} --no-superblock --salt {salt} \
  --data-block-size {dbs} --hash-block-size {hbs} --data-blocks {blocks} \
  --hash-offset {off} --restart-on-corruption || echo "bench: veritysetup failed"
mkdir -p /run/stele/lower /run/stele/rw
mount -t {fs} -o ro,nodev /dev/mapper/stele-root /run/stele/lower
mount -t tmpfs -o size=50% tmpfs /run/stele/rw
mkdir /run/stele/rw/upper /run/stele/rw/work
mount -t overlay -o lowerdir=/run/stele/lower,upperdir=/run/stele/rw/upper,workdir=/run/stele/rw/work overlay /newroot
for d in dev proc sys run; do mount --move /$d /newroot/$d; done
exec switch_root /newroot /bin/bench-root
"#,
        root = v.root_hash,
        salt = v.salt,
        dbs = v.data_block_size,
        hbs = v.hash_block_size,
        blocks = v.data_blocks,
        off = v.hash_offset,
        fs = v.fs_type,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_init_does_the_same_steps() {
        let v = VerityArgs {
            root_hash: "ab".repeat(32),
            salt: "5e".into(),
            data_block_size: 4096,
            hash_block_size: 4096,
            data_blocks: 10,
            hash_offset: 40960,
            fs_type: "erofs",
        };
        let s = script_init(&["virtio_blk.ko".into(), "dm-verity.ko".into()], &v);
        let order = [
            "insmod /lib/modules/virtio_blk.ko",
            "insmod /lib/modules/dm-verity.ko",
            "PARTNAME=stele-root-a",
            &format!(
                "stele-root \"$dev\" {} --no-superblock --salt 5e",
                "ab".repeat(32)
            ),
            "--data-blocks 10 \\\n  --hash-offset 40960 --restart-on-corruption",
            "mount -t erofs -o ro,nodev /dev/mapper/stele-root",
            "mount -t overlay",
            "exec switch_root /newroot /bin/bench-root",
        ];
        let mut at = 0;
        for step in order {
            let i = s[at..]
                .find(step)
                .unwrap_or_else(|| panic!("{step:?} missing or out of order:\n{s}"));
            at += i + step.len();
        }
    }
}

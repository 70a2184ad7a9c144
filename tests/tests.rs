//! Integration tests of the `stele` command line (one test binary).
//!
//! Modules, in three groups: `cli` runs the host `stele` on files, `net` adds loopback
//! HTTP servers (nginx, a fault-injecting server), `vm` boots real kernels under QEMU.
//! - util: running `stele` and host tools, error-line assertions, an independent FORMATS.md reader
//! - fixture (+ fixture/boot.rs, fixture/internals.rs): the one fixture: keys, rootfs,
//!   images, initramfs, UKIs, disks, QEMU boots, partitions and boot state
//! - cli::badinput: each bad input of issue 8 (limits, same files, superblocks, block sizes,
//!   existing outputs and devices, host tools): one line, its exit code, nothing changed
//! - cli::keys: keygen, wrong keys, key files of every other kind, key directories,
//!   thresholds, OpenSSL interop, external signers
//! - cli::image: build, verify, inspect, --fs-image, atomic output, veritysetup cross-check
//! - cli::tamper: one flipped bit in each region is refused with the right cause
//! - cli::malformed: empty, truncated, absurd and validly-signed-but-bad images
//! - cli::repro: reproducible builds for erofs, squashfs and ext4
//! - cli::output: --json of image build and verify; progress bars only on a terminal
//! - cli::owners: owners, modes, xattrs, hard links, holes; --all-root; --rootfs-tar (unprivileged)
//! - cli::signals: SIGINT/SIGTERM during a build leave no temporary file
//! - cli::initramfs: `stele initramfs` refuses an /init that cannot boot
//! - cli::kernel: `image build --kernel --initrd`: the files go in as if the tree held
//!   them, the tree untouched; `initramfs --kernel | --stage2`; build-time refusals
//! - cli::config: the build refuses every boot.toml / system.toml PID 1 refuses, same message
//! - cli::verity: `stele verity` against `veritysetup --no-superblock`
//! - cli::uki: `stele uki build`, ESP/BIOS/bmap disks: reproducible, checked by the real tools
//! - cli::update: `stele update --disk`: offline install, status, refusals leave the state alone
//! - cli::channel: `channel build --delta`: a published delta listed for its release; refusals
//! - cli::trust: a fresh disk's floor, the floor of the slot a disk boots, product binding
//!   offline, old-layout state partitions, a state sequence at its end
//! - net::http: `update install --disk URL` against nginx and a fault-injecting server;
//!   `update plan`, `image diff`, `channel build`
//! - net::zstd: the compressed form IMAGE.img.zst over nginx: the planner takes it when it
//!   costs fewer bytes (and `image diff` prices it as the plan does); a tampered or bomb
//!   frame is refused and the install ends raw
//! - net::resume: a connection cut at 100 random offsets; each re-run fetches only what is missing
//! - net::channel_delta: a delta listed in the signed channel is taken by its listed URL; one
//!   served with another length or index is not used and the install ends by the `.zst`
//! - vm::fleet: under QEMU a device applies a signed channel from nginx as a delta, through a
//!   power cut, and boots into the new slot
//! - cli::esp_uki: `stele update stage1 --disk`: the ESP's UKI replaced, nothing else; refusals
//! - vm::update: A/B updates under QEMU: install in the guest, fallback, refusals, power cuts
//! - vm::boot: the real kernel under QEMU boots our initramfs and disk (needs `cargo xtask test`)
//! - vm::uefi: OVMF boots the ESP's UKI, Secure Boot refuses unsigned and ignores loader
//!   command lines, SeaBIOS boots the same disk through SYSLINUX
//! - vm::kexec: stage 1 kexecs into the slot's kernel and stage 2 verifies the same slot;
//!   the same-kernel fast path; panicking and hanging (watchdog) slot kernels fall back; an
//!   update with a new kernel and stele-init installed in the guest
//! - vm::esp_uki: `stele update stage1` in a guest booted by OVMF; the next boot runs the new UKI
//! - vm::tpm: under swtpm: the TPM rollback floor survives a reset of the state's floor (install
//!   and boot refuse the older image), rollback_storage = "tpm" without a TPM, measured boot
//! - vm::debian13: Debian 13's kernel with its xz-compressed modules boots a verified slot,
//!   as stage 1 and as a slot's kernel after a kexec
//! - vm::hardware: the same disk with a default initramfs booted by OVMF over NVMe, SATA and
//!   virtio-scsi, and from a USB stick with USB storage asked for
//! - vm::boot_disk: the boot disk is bound: a USB stick with a stele disk beside the
//!   internal one is ignored (either attachment order); two internal stele disks are refused
//!   unless `stele initramfs --boot-disk` names one
//! - vm::grow: a 256 MiB disk on a 1 GiB one: the data partition and its ext4 fill it once,
//!   files kept, `sgdisk -v` clean; `grow_data = false`; power cuts during the grow
//! - vm::owners: an image from a tar boots with its owners and a working file capability
//! - vm::recorder: the flight recorder: `update why` after a failed health command, in the
//!   guest and with --disk; a reboot loop stays within the ring's bound
//! - vm::report: reports to a loopback collector for 3 boots and an install; a report kept
//!   while the collector is down goes out on the next boot
//! - vm::reset: the factory reset: `stele data reset`, the next boot's fresh data partition,
//!   a power cut during the reset
//! - vm::lastboot: why the last boot ended: watchdog resets of a hung trial (i6300esb
//!   bootstatus), a kernel panic from ramoops, a power cut as neither
//! - vm::init: stele-init under QEMU: verified boot, services, refusal and fallback, boot counting
//! - vm::links: a system.toml or /etc/passwd linked into /var (the data partition) is
//!   refused by PID 1, naming the link; the attacker's file there never runs
//! - vm::trust: a corrupted good slot, RUST_MIN_STACK on the command line, partitions on
//!   another disk (at the scan and late), services as users, another product, a lost or
//!   wrapped or old-layout state, a stalled install

mod fixture;
mod util;

pub(crate) mod cli {
    pub(crate) mod badinput;
    pub(crate) mod channel;
    pub(crate) mod config;
    pub(crate) mod esp_uki;
    pub(crate) mod image;
    pub(crate) mod initramfs;
    pub(crate) mod kernel;
    pub(crate) mod keys;
    pub(crate) mod malformed;
    pub(crate) mod output;
    pub(crate) mod owners;
    pub(crate) mod repro;
    pub(crate) mod signals;
    pub(crate) mod tamper;
    pub(crate) mod trust;
    pub(crate) mod uki;
    pub(crate) mod update;
    pub(crate) mod verity;
}

pub(crate) mod net {
    pub(crate) mod channel_delta;
    pub(crate) mod delta;
    pub(crate) mod http;
    pub(crate) mod lzc;
    pub(crate) mod resume;
    pub(crate) mod zstd;
}

pub(crate) mod vm {
    pub(crate) mod boot;
    pub(crate) mod boot_disk;
    pub(crate) mod debian13;
    pub(crate) mod esp_uki;
    pub(crate) mod fleet;
    pub(crate) mod grow;
    pub(crate) mod hardware;
    pub(crate) mod init;
    pub(crate) mod kexec;
    pub(crate) mod lastboot;
    pub(crate) mod links;
    pub(crate) mod owners;
    pub(crate) mod recorder;
    pub(crate) mod report;
    pub(crate) mod reset;
    pub(crate) mod tpm;
    pub(crate) mod trust;
    pub(crate) mod uefi;
    pub(crate) mod update;
}

//! Integration tests of the `stele` command line (one test binary).
//!
//! Modules:
//! - util: running `stele` and host tools, error-line assertions, an independent FORMATS.md reader
//! - fixture (+ fixture/boot.rs, fixture/internals.rs): the one fixture: keys, rootfs,
//!   images, initramfs, UKIs, disks, QEMU boots, partitions and boot state
//! - cli_badinput: each bad input of issue 8 (limits, same files, superblocks, block sizes,
//!   existing outputs and devices, host tools): one line, its exit code, nothing changed
//! - cli_keys: keygen, wrong keys, key files of every other kind, key directories,
//!   thresholds, OpenSSL interop, external signers
//! - cli_image: build, verify, inspect, --fs-image, atomic output, veritysetup cross-check
//! - cli_tamper: one flipped bit in each region is refused with the right cause
//! - cli_malformed: empty, truncated, absurd and validly-signed-but-bad images
//! - cli_repro: reproducible builds for erofs, squashfs and ext4
//! - cli_output: --json of image build and verify; progress bars only on a terminal
//! - cli_owners: owners, modes, xattrs, hard links, holes; --all-root; --rootfs-tar (unprivileged)
//! - cli_signals: SIGINT/SIGTERM during a build leave no temporary file
//! - cli_initramfs: `stele initramfs` refuses an /init that cannot boot
//! - cli_kernel: `image build --kernel --initrd`: the files go in as if the tree held
//!   them, the tree untouched; `initramfs --kernel | --stage2`; build-time refusals
//! - cli_config: the build refuses every boot.toml / system.toml PID 1 refuses, same message
//! - cli_verity: `stele verity` against `veritysetup --no-superblock`
//! - cli_uki: `stele uki build`, ESP/BIOS/bmap disks: reproducible, checked by the real tools
//! - cli_update: `stele update --disk`: offline install, status, refusals leave the state alone
//! - cli_trust: a fresh disk's floor, the floor of the slot a disk boots, product binding
//!   offline, old-layout state partitions, a state sequence at its end
//! - fleet_http: `update install --disk URL` against nginx and a fault-injecting server;
//!   `update plan`, `image diff`, `channel build`
//! - fleet_zstd: the compressed form IMAGE.img.zst over nginx: the planner takes it when it
//!   costs fewer bytes; a tampered or bomb frame is refused and the install ends raw
//! - fleet_resume: a connection cut at 100 random offsets; each re-run fetches only what is missing
//! - fleet_vm: under QEMU a device applies a signed channel from nginx as a delta, through a
//!   power cut, and boots into the new slot
//! - cli_stage1: `stele update stage1 --disk`: the ESP's UKI replaced, nothing else; refusals
//! - update_vm: A/B updates under QEMU: install in the guest, fallback, refusals, power cuts
//! - boot: the real kernel under QEMU boots our initramfs and disk (needs `cargo xtask test`)
//! - uefi_vm: OVMF boots the ESP's UKI, Secure Boot refuses unsigned and ignores loader
//!   command lines, SeaBIOS boots the same disk through SYSLINUX
//! - kexec_vm: stage 1 kexecs into the slot's kernel and stage 2 verifies the same slot;
//!   the same-kernel fast path; panicking and hanging (watchdog) slot kernels fall back; an
//!   update with a new kernel and stele-init installed in the guest
//! - stage1_vm: `stele update stage1` in a guest booted by OVMF; the next boot runs the new UKI
//! - tpm_vm: under swtpm: the TPM rollback floor survives a reset of the state's floor (install
//!   and boot refuse the older image), rollback_storage = "tpm" without a TPM, measured boot
//! - vm_owners: an image from a tar boots with its owners and a working file capability
//! - vm_init: stele-init under QEMU: verified boot, services, refusal and fallback, boot counting
//! - vm_trust: a corrupted good slot, RUST_MIN_STACK on the command line, partitions on
//!   another disk (at the scan and late), services as users, another product, a lost or
//!   wrapped or old-layout state, a stalled install

mod fixture;
mod util;

mod boot;
mod cli_badinput;
mod cli_config;
mod cli_image;
mod cli_initramfs;
mod cli_kernel;
mod cli_keys;
mod cli_malformed;
mod cli_output;
mod cli_owners;
mod cli_repro;
mod cli_signals;
mod cli_stage1;
mod cli_tamper;
mod cli_trust;
mod cli_uki;
mod cli_update;
mod cli_verity;
mod fleet_http;
mod fleet_resume;
mod fleet_vm;
mod fleet_zstd;
mod kexec_vm;
mod stage1_vm;
mod tpm_vm;
mod uefi_vm;
mod update_vm;
mod vm_init;
mod vm_owners;
mod vm_trust;

//! `cargo xtask bench boot [--runs N]`: QEMU start to `stele: ready` for a direct kernel
//! boot, a UEFI boot of stage 1 without kexec and one that kexecs into the slot's kernel
//! (skipped, with a note, while a slot image cannot carry a kernel); and stele-init's
//! userspace phase against a busybox + veritysetup script init doing the same work (same
//! modules in the same order, verity with the same root hash and salt, mount, tmpfs
//! overlay, switch root into the same root) in the same QEMU. The phase runs from the
//! kernel's `Run /init as init process` to the line the first program of the new root
//! writes to /dev/kmsg, both kernel timestamps. Medians of N runs (default 5), the runs of
//! every row interleaved, same machine, same run.

use std::fs;
use std::io::Seek;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use stele_qemu::firmware::{prepare_uefi, Firmware};
use stele_qemu::{Vm, VmConfig};
use stele_verifier::config::BootConfig;
use stele_verifier::manifest::Manifest;

use crate::bench::median;
use crate::util::{build_cli, build_static_init, output, run, target_dir};

/// The kernel's line when it starts PID 1.
const RUN_INIT: &str = "Run /init as init process";
/// What the first program of the switched root writes to /dev/kmsg.
const ROOT_MARK: &str = "stele-bench: root";
const READY: &str = "stele: ready";
const PHASES: &str = "stele: boot phases: ";
/// The stage-1 command line, the same as the direct boot's (stele_qemu::BASE_APPEND).
const CMDLINE: &str = stele_qemu::BASE_APPEND;
/// The GPT name the script init looks for (stele's default for slot a).
const SLOT_A: &str = stele_verifier::layout::Role::SlotA.name();
/// Limit for one boot.
const VM_TIMEOUT: Duration = Duration::from_secs(240);
/// The note printed for the kexec row until slot images carry a kernel.
const NO_KEXEC: &str = "kexec flow not available in this build";

/// The first program of the slot's root, under both inits: one line to the kernel log.
const ROOT_PROGRAM: &str = "#!/bin/sh\necho \"stele-bench: root\" > /dev/kmsg\nexec sleep 1000\n";

/// The busybox applets the script init and the slot's root use.
const APPLETS: &[&str] = &[
    "sh",
    "mount",
    "mkdir",
    "insmod",
    "cat",
    "grep",
    "cut",
    "usleep",
    "switch_root",
    "echo",
    "sleep",
];

/// `--runs N` (default 5). Pure.
pub fn parse_runs(args: &[String]) -> Result<usize, String> {
    match args {
        [] => Ok(5),
        [flag, n] if flag == "--runs" => n
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("--runs {n:?}: expected a number of runs, at least 1")),
        _ => Err(format!(
            "unexpected arguments {args:?}; usage: cargo xtask bench boot [--runs N]"
        )),
    }
}

/// The kernel timestamp (seconds) of a console line `[    1.234567] <text>`. Pure.
pub fn kernel_time(line: &str) -> Option<f64> {
    let open = line.rfind('[')?;
    let close = open + line[open..].find(']')?;
    line[open + 1..close].trim().parse().ok()
}

/// The first line of `console` containing `text`, if any. Pure.
pub fn line_with<'a>(console: &'a str, text: &str) -> Option<&'a str> {
    console.lines().find(|l| l.contains(text))
}

/// `total=<ms>` of stele-init's `boot phases:` line. Pure.
pub fn phases_total_ms(line: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("total="))
        .and_then(|v| v.parse().ok())
}

/// The files `ldd` names (libraries and the loader), in its order. Pure.
pub fn ldd_paths(ldd: &str) -> Vec<PathBuf> {
    ldd.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.trim(),
                None => l,
            };
            let path = path.split_whitespace().next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Whether `stele image build` can put a kernel into a slot (its help lists `--kernel`):
/// the kexec flow needs it. Pure.
pub fn slot_carries_kernel(build_help: &str) -> bool {
    build_help.lines().any(|l| {
        l.trim_start().starts_with("--kernel ") || l.trim_start().starts_with("--kernel <")
    })
}

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

/// The files of one benchmark run.
struct Inputs {
    kernel: PathBuf,
    disk: PathBuf,
    initrd: PathBuf,
    script_initrd: PathBuf,
    /// The disk whose slot carries its own kernel, or why there is none.
    kexec_disk: Result<PathBuf, String>,
}

fn io<T>(what: &Path, r: std::io::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{}: {e}", what.display()))
}

fn stele_cmd(stele: &Path, dir: &Path, args: &[&str]) -> Result<String, String> {
    let mut c = Command::new(stele);
    c.args(args)
        .current_dir(dir)
        .env("SOURCE_DATE_EPOCH", "1700000000");
    output(&mut c, &format!("stele {}", args.join(" ")))
}

/// A busybox root with [`ROOT_PROGRAM`] as `/bin/bench-root`, started by stele-init as
/// its one service.
fn write_rootfs(root: &Path) -> Result<(), String> {
    let _ = fs::remove_dir_all(root);
    for d in [
        "bin",
        "etc/stele",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "var",
    ] {
        io(root, fs::create_dir_all(root.join(d)))?;
    }
    io(root, fs::copy("/bin/busybox", root.join("bin/busybox")))?;
    for a in APPLETS {
        io(
            root,
            std::os::unix::fs::symlink("busybox", root.join("bin").join(a)),
        )?;
    }
    let prog = root.join("bin/bench-root");
    io(&prog, fs::write(&prog, ROOT_PROGRAM))?;
    io(
        &prog,
        fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o755)),
    )?;
    let system =
        "[[service]]\nname = \"bench\"\nexec = [\"/bin/bench-root\"]\nrestart = \"never\"\n";
    io(root, fs::write(root.join("etc/stele/system.toml"), system))
}

/// The slot's verity parameters, read from its manifest.
fn verity_args(slot: &Path) -> Result<VerityArgs, String> {
    let mut f = io(slot, fs::File::open(slot))?;
    let len = io(slot, f.seek(std::io::SeekFrom::End(0)))?;
    let loc = stele_verifier::slot::locate(&mut f, len).map_err(|e| e.to_string())?;
    let m = Manifest::parse_body(&loc.envelope.body).map_err(|e| e.to_string())?;
    let hex = stele_verifier::hex::encode;
    Ok(VerityArgs {
        root_hash: hex(&m.verity.root_hash),
        salt: if m.verity.salt.is_empty() {
            "-".into()
        } else {
            hex(&m.verity.salt)
        },
        data_block_size: m.verity.data_block_size,
        hash_block_size: m.verity.hash_block_size,
        data_blocks: m.verity.data_blocks,
        hash_offset: m.verity.hash_offset,
        fs_type: m.filesystem.fs_type.name(),
    })
}

/// The comparison initramfs: stele's initramfs unpacked (the same modules and device
/// node), its /init replaced by [`script_init`], plus busybox and veritysetup with every
/// library ldd names.
fn script_initramfs(dir: &Path, stele_initrd: &Path, slot: &Path) -> Result<PathBuf, String> {
    let tree = dir.join("script-initramfs");
    let _ = fs::remove_dir_all(&tree);
    io(&tree, fs::create_dir_all(&tree))?;
    let mut unpack = Command::new("cpio");
    unpack
        .args(["-idm", "--quiet"])
        .current_dir(&tree)
        .stdin(io(stele_initrd, fs::File::open(stele_initrd))?);
    run(&mut unpack, "cpio -idm (unpacking stele's initramfs)")?;
    let boot_toml = tree.join("etc/stele/boot.toml");
    let text = io(&boot_toml, fs::read_to_string(&boot_toml))?;
    let cfg = BootConfig::parse(&text, "boot.toml").map_err(|e| e.to_string())?;
    for d in ["bin", "newroot", "run"] {
        io(&tree, fs::create_dir_all(tree.join(d)))?;
    }
    io(&tree, fs::copy("/bin/busybox", tree.join("bin/busybox")))?;
    for a in APPLETS {
        io(
            &tree,
            std::os::unix::fs::symlink("busybox", tree.join("bin").join(a)),
        )?;
    }
    let vs = Path::new("/usr/sbin/veritysetup");
    io(vs, fs::copy(vs, tree.join("bin/veritysetup")))?;
    let ldd = output(Command::new("ldd").arg(vs), "ldd veritysetup")?;
    for lib in ldd_paths(&ldd) {
        let to = tree.join(lib.strip_prefix("/").unwrap_or(&lib));
        io(&to, fs::create_dir_all(to.parent().unwrap_or(&tree)))?;
        io(&lib, fs::copy(&lib, &to))?;
    }
    let init = tree.join("init");
    io(&init, fs::remove_file(&init))?;
    io(
        &init,
        fs::write(&init, script_init(&cfg.modules, &verity_args(slot)?)),
    )?;
    io(
        &init,
        fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755)),
    )?;
    let out = dir.join("script-initrd.cpio");
    let cpio = format!(
        "cd '{}' && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet > '{}'",
        tree.display(),
        out.display()
    );
    run(
        Command::new("sh").args(["-c", &cpio]),
        "cpio -o (the script initramfs)",
    )?;
    Ok(out)
}

/// Keys, the slot, stele's initramfs, the UKI and the disk; the script initramfs; the
/// kexec disk when slots can carry a kernel.
fn prepare(
    dir: &Path,
    stele: &Path,
    kernel: &Path,
    modules: &Path,
    init: &Path,
) -> Result<Inputs, String> {
    let _ = fs::remove_dir_all(dir);
    io(dir, fs::create_dir_all(dir))?;
    let s = |args: &[&str]| stele_cmd(stele, dir, args);
    let k = kernel.display().to_string();
    s(&[
        "keygen",
        "--private",
        "release.key",
        "--public",
        "release.pub",
    ])?;
    write_rootfs(&dir.join("rootfs"))?;
    let build = [
        "image",
        "build",
        "--rootfs",
        "rootfs",
        "--key",
        "release.key",
        "--name",
        "bench",
        "--version",
        "1.0.0",
        "--rollback-index",
        "1",
    ];
    s(&[&build[..], &["--out", "slot.img"]].concat())?;
    s(&[
        "initramfs",
        "--modules-dir",
        &modules.display().to_string(),
        "--init",
        &init.display().to_string(),
        "--key",
        "release.pub",
        "--out",
        "initrd.cpio",
    ])?;
    s(&[
        "uki",
        "build",
        "--kernel",
        &k,
        "--initrd",
        "initrd.cpio",
        "--cmdline",
        CMDLINE,
        "--out",
        "uki.efi",
    ])?;
    let disk = ["disk", "create", "--slot-size", "64M", "--uki", "uki.efi"];
    s(&[&disk[..], &["--a", "slot.img", "--out", "disk.img"]].concat())?;
    let script_initrd = script_initramfs(dir, &dir.join("initrd.cpio"), &dir.join("slot.img"))?;
    let help = s(&["image", "build", "--help"])?;
    let kexec_disk = if slot_carries_kernel(&help) {
        // A kernel that differs from stage 1's (4 KiB of padding), so stage 1 kexecs,
        // with the slot's own stage-2 initramfs and a console.
        let mut bytes = io(kernel, fs::read(kernel))?;
        bytes.extend_from_slice(&[0u8; 4096]);
        io(dir, fs::write(dir.join("slot-vmlinuz"), bytes))?;
        let stage2 = [
            "initramfs",
            "--stage2",
            "--modules-dir",
            &modules.display().to_string(),
            "--init",
            &init.display().to_string(),
            "--key",
            "release.pub",
            "--out",
            "stage2.cpio",
        ];
        let kexec = [
            &build[..],
            &[
                "--kernel",
                "slot-vmlinuz",
                "--initrd",
                "stage2.cpio",
                "--kernel-cmdline",
                CMDLINE,
                "--out",
                "slot-kexec.img",
            ],
        ]
        .concat();
        s(&stage2)
            .and_then(|_| s(&kexec))
            .and_then(|_| {
                s(&[
                    &disk[..],
                    &["--a", "slot-kexec.img", "--out", "disk-kexec.img"],
                ]
                .concat())
            })
            .map(|_| dir.join("disk-kexec.img"))
    } else {
        Err(format!(
            "{NO_KEXEC} (`stele image build` cannot put a kernel into a slot yet)"
        ))
    };
    Ok(Inputs {
        kernel: kernel.to_path_buf(),
        disk: dir.join("disk.img"),
        initrd: dir.join("initrd.cpio"),
        script_initrd,
        kexec_disk,
    })
}

/// How one boot is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Boot {
    Direct,
    Uefi,
    UefiKexec,
    Script,
}

/// What one boot measured: QEMU start to `stele: ready`, PID 1 start to the new root's
/// first program, stele-init's own `total=`.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    ready: Option<f64>,
    userspace: Option<f64>,
    phases_ms: Option<u64>,
}

fn boot_once(inp: &Inputs, how: Boot, log: &Path) -> Result<Sample, String> {
    let disk = match how {
        Boot::UefiKexec => inp.kexec_disk.clone()?,
        _ => inp.disk.clone(),
    };
    let (mut cfg, _vars) = match how {
        Boot::Direct => (VmConfig::from_env(&inp.kernel, &inp.initrd), None),
        Boot::Script => (VmConfig::from_env(&inp.kernel, &inp.script_initrd), None),
        Boot::Uefi | Boot::UefiKexec => {
            let (u, vars) = prepare_uefi(None, None).map_err(|e| e.to_string())?;
            (VmConfig::with_firmware(Firmware::Uefi(u)), vars)
        }
    };
    if let Ok(a) = std::env::var("STELE_QEMU_ACCEL") {
        if !a.trim().is_empty() {
            cfg.accel = a.trim().to_string();
        }
    }
    cfg.disks = vec![stele_qemu::Disk::new(disk)];
    cfg.no_reboot = how != Boot::UefiKexec;
    cfg.timeout = VM_TIMEOUT;
    cfg.serial_log = Some(log.to_path_buf());
    let start = Instant::now();
    let mut vm = Vm::start(&cfg).map_err(|e| e.to_string())?;
    let r = measure(&mut vm, how, start);
    let _ = vm.kill();
    r
}

fn measure(vm: &mut Vm, how: Boot, start: Instant) -> Result<Sample, String> {
    let err = |e: stele_qemu::QemuError| e.summary();
    let mut s = Sample::default();
    if how != Boot::Script {
        let phases = vm.expect(PHASES, VM_TIMEOUT).map_err(err)?;
        s.phases_ms = phases_total_ms(&phases);
        vm.expect(READY, VM_TIMEOUT).map_err(err)?;
        s.ready = Some(start.elapsed().as_secs_f64());
    }
    if how == Boot::UefiKexec {
        return Ok(s);
    }
    // The new root's line may come before or after `stele: ready`: read it from the
    // whole console, by its kernel timestamp.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let con = vm.console();
        if let Some(mark) = line_with(&con, ROOT_MARK) {
            let t0 = line_with(&con, RUN_INIT).and_then(kernel_time);
            let t1 = kernel_time(mark);
            s.userspace = t0.zip(t1).map(|(a, b)| b - a);
            return Ok(s);
        }
        if Instant::now() > until {
            return Err(format!(
                "no {ROOT_MARK:?} on the console; its end:\n{}",
                tail(&con)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Median and range of the present values, as text.
fn stat(v: &[Option<f64>], unit: f64, suffix: &str) -> String {
    let mut x: Vec<f64> = v.iter().flatten().map(|t| t * unit).collect();
    if x.is_empty() {
        return "no result".into();
    }
    let (lo, hi) = x
        .iter()
        .fold((f64::MAX, f64::MIN), |(l, h), &t| (l.min(t), h.max(t)));
    format!(
        "median {:.2} {suffix}  (min {lo:.2}, max {hi:.2}, {} runs)",
        median(&mut x),
        x.len()
    )
}

/// Runs the benchmark and prints the table.
pub fn boot(args: &[String]) -> Result<(), String> {
    let runs = parse_runs(args)?;
    let env = crate::setup::setup()?;
    let stele = build_cli()?;
    let init = build_static_init()?;
    let dir = target_dir().join("bench").join("boot");
    let inp = prepare(&dir, &stele, &env.kernel, &env.modules, &init)?;
    let rows: [(&str, Boot); 4] = [
        ("direct kernel boot (-kernel/-initrd)", Boot::Direct),
        ("UEFI (OVMF) stage 1, no kexec", Boot::Uefi),
        (
            "UEFI (OVMF) stage 1, kexec into the slot's kernel",
            Boot::UefiKexec,
        ),
        ("busybox + veritysetup script init (direct)", Boot::Script),
    ];
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); rows.len()];
    let mut failures: Vec<Option<String>> = vec![None; rows.len()];
    for i in 0..runs {
        for (r, (name, how)) in rows.iter().enumerate() {
            if *how == Boot::UefiKexec && inp.kexec_disk.is_err() || failures[r].is_some() {
                continue;
            }
            let log = dir.join(format!("console-{r}-{i}.log"));
            match boot_once(&inp, *how, &log) {
                Ok(s) => {
                    eprintln!(
                        "xtask: run {}: {name}: ready {:?} s, userspace {:?} s, phases {:?} ms",
                        i + 1,
                        s.ready,
                        s.userspace,
                        s.phases_ms
                    );
                    samples[r].push(s);
                }
                Err(e) => failures[r] = Some(format!("failed ({}): {e}", log.display())),
            }
        }
    }
    let col = |r: usize, f: fn(&Sample) -> Option<f64>| -> Vec<Option<f64>> {
        samples[r].iter().map(f).collect()
    };
    let kernel = env
        .kernel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    println!(
        "bench boot: QEMU ({}), 512 MiB, {kernel}, {runs} runs per row, interleaved; medians",
        std::env::var("STELE_QEMU_ACCEL").unwrap_or_else(|_| "tcg".into())
    );
    println!("  QEMU start to `stele: ready`:");
    for (r, (name, how)) in rows.iter().enumerate().take(3) {
        let cell = match (&failures[r], how, &inp.kexec_disk) {
            (_, Boot::UefiKexec, Err(why)) => format!("skipped: {why}"),
            (Some(f), _, _) => f.clone(),
            _ => stat(&col(r, |s| s.ready), 1.0, "s"),
        };
        println!("    {name:<52} {cell}");
    }
    println!("  PID 1 start (`{RUN_INIT}`) to the new root's first program (kernel timestamps):");
    let stele_us = col(0, |s| s.userspace);
    let script_us = col(3, |s| s.userspace);
    println!(
        "    {:<52} {}",
        "stele-init (direct boot runs)",
        stat(&stele_us, 1000.0, "ms")
    );
    println!(
        "    {:<52} {}",
        "busybox + veritysetup script init",
        failures[3]
            .clone()
            .unwrap_or_else(|| stat(&script_us, 1000.0, "ms"))
    );
    let phases: Vec<Option<f64>> = samples[0]
        .iter()
        .map(|s| s.phases_ms.map(|m| m as f64))
        .collect();
    println!(
        "    {:<52} {}",
        "stele-init's own `boot phases: total=`",
        stat(&phases, 1.0, "ms")
    );
    let med = |v: &[Option<f64>]| {
        let mut x: Vec<f64> = v.iter().flatten().copied().collect();
        (!x.is_empty()).then(|| median(&mut x))
    };
    if let (Some(a), Some(b)) = (med(&stele_us), med(&script_us)) {
        println!("  ratio stele-init / script init (userspace phase) = {:.2} (below 1: stele-init is faster; it also checks signatures, the rollback floor, the hash tree and the boot state, which the script does not)", a / b);
    }
    if let (Some(d), Some(u)) = (med(&col(0, |s| s.ready)), med(&col(1, |s| s.ready))) {
        println!("  ratio UEFI / direct (to `stele: ready`) = {:.2}", u / d);
    }
    println!("  consoles: {}", dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_console_lines() {
        assert_eq!(
            kernel_time("[    1.234567] Run /init as init process"),
            Some(1.234567)
        );
        assert_eq!(
            kernel_time("\u{1b}[2J[   12.500000] stele-bench: root"),
            Some(12.5)
        );
        assert_eq!(kernel_time("stele: ready"), None);
        let con = "a\n[    0.900000] Run /init as init process\nstele: boot phases: mounts=10 verify=14 total=496\n[    2.100000] stele-bench: root\n";
        assert_eq!(line_with(con, ROOT_MARK).and_then(kernel_time), Some(2.1));
        assert_eq!(line_with(con, PHASES).and_then(phases_total_ms), Some(496));
        assert_eq!(line_with(con, "nothing"), None);
        assert_eq!(phases_total_ms("stele: boot phases: total=x"), None);
    }

    #[test]
    fn arguments_and_medians() {
        assert_eq!(parse_runs(&[]), Ok(5));
        assert_eq!(parse_runs(&["--runs".into(), "3".into()]), Ok(3));
        for bad in [
            &["--runs", "0"][..],
            &["--runs", "x"],
            &["--runs"],
            &["-n", "3"],
        ] {
            let v: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
            assert!(parse_runs(&v).is_err(), "{bad:?}");
        }
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(
            stat(&[Some(1.0), None, Some(3.0), Some(2.0)], 1.0, "s"),
            "median 2.00 s  (min 1.00, max 3.00, 3 runs)"
        );
        assert_eq!(stat(&[None], 1.0, "s"), "no result");
    }

    #[test]
    fn ldd_output_and_kexec_detection() {
        let ldd = "\tlinux-vdso.so.1 (0x00007f)\n\tlibcryptsetup.so.12 => /lib/x86_64-linux-gnu/libcryptsetup.so.12 (0x7f)\n\t/lib64/ld-linux-x86-64.so.2 (0x7f)\n";
        assert_eq!(
            ldd_paths(ldd),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libcryptsetup.so.12"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
        assert!(!slot_carries_kernel(
            "      --key <K.pem>\n      --rootfs <DIR>\n"
        ));
        assert!(slot_carries_kernel(
            "      --kernel <VMLINUZ>\n          The slot's own kernel\n"
        ));
        assert!(!slot_carries_kernel("      --kernel-cmdline <ARGS>\n"));
    }

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

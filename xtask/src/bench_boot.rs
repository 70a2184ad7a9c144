//! `cargo xtask bench boot [--runs N] [--smp N]`: QEMU start to `stele: ready` for a direct kernel
//! boot, a UEFI boot of stage 1 without kexec and one that kexecs into the slot's kernel
//! (skipped, with a note, while a slot image cannot carry a kernel); and stele-init's
//! userspace phase against a busybox + veritysetup script init doing the same work (same
//! modules in the same order, verity with the same root hash and salt, mount, tmpfs
//! overlay, switch root into the same root) in the same QEMU. The phase runs from the
//! kernel's `Run /init as init process` to the line the first program of the new root
//! writes to /dev/kmsg, both kernel timestamps. Every row's machine has the same CPUs
//! (`--smp`, default 2: stele-init loads independent modules on each; the script loads them
//! one after another, as such scripts do). Medians of N runs (default 5), the runs of
//! every row interleaved, same machine, same run. Every boot starts from a fresh copy of its
//! disk (a boot that spends a try would make the next run wait `failure_delay_secs`).
//! The userspace phase is shown for the generic hardware profile (the default), the qemu
//! profile (virtio only, what `stele initramfs` carried before profiles) and the script
//! init; and Debian 13's kernel boots with its modules as shipped (xz) against the same
//! modules decompressed at build time ([`crate::bench_modules`]).

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
use crate::bench_script::{script_init, VerityArgs};
use crate::util::{build_cli, build_static_init, output, run, target_dir};

/// The kernel's line when it starts PID 1.
const RUN_INIT: &str = "Run /init as init process";
/// What the first program of the switched root writes to /dev/kmsg.
const ROOT_MARK: &str = "stele-bench: root";
const READY: &str = "stele: ready";
const PHASES: &str = "stele: boot phases: ";
/// The stage-1 command line, the same as the direct boot's (stele_qemu::BASE_APPEND).
const CMDLINE: &str = stele_qemu::BASE_APPEND;
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

/// `--runs N` (default 5) and `--smp N` (default 2: the CPUs of every row's virtual
/// machine; the smallest x86-64 machines users own have two). Pure.
pub fn parse_args(args: &[String]) -> Result<(usize, u32), String> {
    let usage = "usage: cargo xtask bench boot [--runs N] [--smp N]";
    let (mut runs, mut smp) = (5usize, 2u32);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let n = it.next();
        let num = |what: &str| {
            n.and_then(|n| n.parse::<u32>().ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| {
                    format!("{flag} {n:?}: expected a number of {what}, at least 1; {usage}")
                })
        };
        match flag.as_str() {
            "--runs" => runs = num("runs")? as usize,
            "--smp" => smp = num("CPUs")?,
            _ => return Err(format!("unexpected arguments {args:?}; {usage}")),
        }
    }
    Ok((runs, smp))
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
    phase_ms(line, "total")
}

/// `<name>=<ms>` of stele-init's `boot phases:` line. Pure.
pub fn phase_ms(line: &str, name: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
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

/// The files of one benchmark run.
struct Inputs {
    dir: PathBuf,
    kernel: PathBuf,
    disk: PathBuf,
    /// Stele's initramfs, generic profile (the default), and the qemu profile's.
    initrd: PathBuf,
    initrd_qemu: PathBuf,
    script_initrd: PathBuf,
    /// Debian 13's kernel with compressed and decompressed modules, or why not.
    debian13: Result<crate::bench_modules::Compressed, String>,
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
    debian13: Option<(PathBuf, PathBuf)>,
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
    let initramfs = |mods: &Path, out: &str, extra: &[&str]| {
        let m = mods.display().to_string();
        let i = init.display().to_string();
        let base = ["initramfs", "--modules-dir", &m, "--init", &i];
        s(&[&base[..], &["--key", "release.pub", "--out", out], extra].concat()).map(|_| ())
    };
    initramfs(modules, "initrd-qemu.cpio", &["--hardware", "qemu"])?;
    let debian13 = match debian13 {
        Some((k13, m13)) => {
            crate::bench_modules::prepare(dir, &k13, &m13, &|m, out| initramfs(m, out, &[]))
        }
        None => Err("Debian 13's kernel is not set up (`cargo xtask setup`)".to_owned()),
    };
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
    // The script init loads what stele's initramfs carried before profiles: virtio only.
    let script_initrd =
        script_initramfs(dir, &dir.join("initrd-qemu.cpio"), &dir.join("slot.img"))?;
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
        dir: dir.to_path_buf(),
        kernel: kernel.to_path_buf(),
        disk: dir.join("disk.img"),
        initrd: dir.join("initrd.cpio"),
        initrd_qemu: dir.join("initrd-qemu.cpio"),
        script_initrd,
        debian13,
        kexec_disk,
    })
}

/// How one boot is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Boot {
    Direct,
    DirectQemu,
    Uefi,
    UefiKexec,
    Script,
    Debian13Xz,
    Debian13Plain,
}

/// What one boot measured: QEMU start to `stele: ready`, PID 1 start to the new root's
/// first program, stele-init's own `total=`.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    ready: Option<f64>,
    userspace: Option<f64>,
    phases_ms: Option<u64>,
    modules_ms: Option<u64>,
}

fn boot_once(inp: &Inputs, how: Boot, smp: u32, log: &Path) -> Result<Sample, String> {
    let template = match how {
        Boot::UefiKexec => inp.kexec_disk.clone()?,
        _ => inp.disk.clone(),
    };
    // A fresh copy each boot: the previous boot's spent try must not count here.
    let disk = inp.dir.join("run-disk.img");
    io(&disk, fs::copy(&template, &disk))?;
    let d13 = || inp.debian13.as_ref().map_err(Clone::clone);
    let (mut cfg, _vars) = match how {
        Boot::Direct => (VmConfig::from_env(&inp.kernel, &inp.initrd), None),
        Boot::DirectQemu => (VmConfig::from_env(&inp.kernel, &inp.initrd_qemu), None),
        Boot::Script => (VmConfig::from_env(&inp.kernel, &inp.script_initrd), None),
        Boot::Debian13Xz => (VmConfig::from_env(&d13()?.kernel, &d13()?.shipped), None),
        Boot::Debian13Plain => (VmConfig::from_env(&d13()?.kernel, &d13()?.plain), None),
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
    cfg.smp = smp;
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
        s.modules_ms = phase_ms(&phases, "modules");
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
    let (runs, smp) = parse_args(args)?;
    let env = crate::setup::setup()?;
    let env13 = crate::kernel::ensure_debian13()
        .ok()
        .map(|e| (e.kernel, e.modules));
    let stele = build_cli()?;
    let init = build_static_init()?;
    let dir = target_dir().join("bench").join("boot");
    let inp = prepare(&dir, &stele, &env.kernel, &env.modules, &init, env13)?;
    let rows: [(&str, Boot); 7] = [
        ("direct kernel boot (-kernel/-initrd)", Boot::Direct),
        ("UEFI (OVMF) stage 1, no kexec", Boot::Uefi),
        (
            "UEFI (OVMF) stage 1, kexec into the slot's kernel",
            Boot::UefiKexec,
        ),
        ("busybox + veritysetup script init (direct)", Boot::Script),
        (
            "stele-init, --hardware qemu (virtio only)",
            Boot::DirectQemu,
        ),
        (
            "Debian 13 (6.12), modules as shipped (xz)",
            Boot::Debian13Xz,
        ),
        (
            "Debian 13 (6.12), modules decompressed at build",
            Boot::Debian13Plain,
        ),
    ];
    let skip = |how: Boot| match how {
        Boot::UefiKexec => inp.kexec_disk.as_ref().err().cloned(),
        Boot::Debian13Xz | Boot::Debian13Plain => inp.debian13.as_ref().err().cloned(),
        _ => None,
    };
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); rows.len()];
    let mut failures: Vec<Option<String>> = vec![None; rows.len()];
    for i in 0..runs {
        for (r, (name, how)) in rows.iter().enumerate() {
            if skip(*how).is_some() || failures[r].is_some() {
                continue;
            }
            let log = dir.join(format!("console-{r}-{i}.log"));
            match boot_once(&inp, *how, smp, &log) {
                Ok(s) => {
                    eprintln!(
                        "xtask: run {}: {name}: ready {:?} s, userspace {:?} s, phases {:?} ms, modules {:?} ms",
                        i + 1,
                        s.ready,
                        s.userspace,
                        s.phases_ms,
                        s.modules_ms
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
    let cell = |r: usize, f: fn(&Sample) -> Option<f64>, unit: f64, suffix: &str| match (
        skip(rows[r].1),
        &failures[r],
    ) {
        (Some(why), _) => format!("skipped: {why}"),
        (None, Some(f)) => f.clone(),
        (None, None) => stat(&col(r, f), unit, suffix),
    };
    let kernel = env
        .kernel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    println!(
        "bench boot: QEMU ({}), {smp} CPUs, 512 MiB, {kernel}, {runs} runs per row, interleaved, a fresh disk each boot; medians; host CPU: {}",
        std::env::var("STELE_QEMU_ACCEL").unwrap_or_else(|_| "tcg".into()),
        crate::bench::cpu_model()
    );
    println!("  QEMU start to `stele: ready` (stele-init, --hardware generic):");
    for (r, (name, _)) in rows.iter().enumerate().take(3) {
        println!("    {name:<52} {}", cell(r, |s| s.ready, 1.0, "s"));
    }
    println!("  PID 1 start (`{RUN_INIT}`) to the new root's first program (kernel timestamps):");
    let us = |s: &Sample| s.userspace;
    for (r, label) in [
        (0, "stele-init, --hardware generic (the default)"),
        (4, "stele-init, --hardware qemu (virtio only)"),
        (3, "busybox + veritysetup script init (virtio only)"),
        (5, "Debian 13, stele-init, modules as shipped (xz)"),
        (6, "Debian 13, stele-init, modules decompressed"),
    ] {
        println!("    {label:<52} {}", cell(r, us, 1000.0, "ms"));
    }
    println!("  stele-init's own phases (`boot phases:`), modules= and total=:");
    let modules_ms = |s: &Sample| s.modules_ms.map(|m| m as f64);
    let total_ms = |s: &Sample| s.phases_ms.map(|m| m as f64);
    for r in [0, 4, 5, 6] {
        println!(
            "    {:<52} modules {}; total {}",
            rows[r].0,
            cell(r, modules_ms, 1.0, "ms"),
            cell(r, total_ms, 1.0, "ms")
        );
    }
    let med = |v: &[Option<f64>]| {
        let mut x: Vec<f64> = v.iter().flatten().copied().collect();
        (!x.is_empty()).then(|| median(&mut x))
    };
    let ratio = |a: usize, b: usize| med(&col(a, us)).zip(med(&col(b, us))).map(|(x, y)| x / y);
    if let Some(q) = ratio(0, 3) {
        println!("  ratio stele-init generic / script init (userspace phase) = {q:.2} (target at most 0.5; stele-init also checks signatures, the rollback floor, the hash tree and the boot state, which the script does not)");
    }
    if let Some(q) = ratio(0, 4) {
        println!("  ratio generic / qemu profile (userspace phase) = {q:.2} (target at most 1)");
    }
    if let Some(q) = ratio(5, 6) {
        println!("  ratio Debian 13 modules as shipped / decompressed (userspace phase) = {q:.2}");
    }
    let size = |p: &Path| fs::metadata(p).map_or(0, |m| m.len());
    println!(
        "  initramfs sizes: generic {} B, qemu {} B{}",
        size(&inp.initrd),
        size(&inp.initrd_qemu),
        inp.debian13.as_ref().map_or(String::new(), |d| format!(
            "; Debian 13 generic, modules as shipped {} B, decompressed {} B",
            size(&d.shipped),
            size(&d.plain)
        ))
    );
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
        let p = "stele: boot phases: stage=1 mounts=8 modules=508 devices=7 total=628";
        assert_eq!(phase_ms(p, "modules"), Some(508));
        assert_eq!(phase_ms(p, "module"), None);
    }

    #[test]
    fn arguments_and_medians() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_args(&[]), Ok((5, 2)));
        assert_eq!(parse_args(&v(&["--runs", "3"])), Ok((3, 2)));
        assert_eq!(parse_args(&v(&["--smp", "1", "--runs", "3"])), Ok((3, 1)));
        for bad in [
            &["--runs", "0"][..],
            &["--runs", "x"],
            &["--runs"],
            &["--smp", "0"],
            &["-n", "3"],
        ] {
            assert!(parse_args(&v(bad)).is_err(), "{bad:?}");
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
}

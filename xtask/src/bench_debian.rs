//! The Debian appliance roots of `cargo xtask bench delta debian`, made with debootstrap
//! from Debian's archive and cached as tarballs under target/bench/debian/:
//!
//! - `bookworm-old.tar`: `debootstrap --variant=minbase` of bookworm with systemd,
//!   openssh-server, curl and python3, from the `bookworm` suite alone: the current point
//!   release as the archive serves it, without -updates and -security;
//! - `bookworm-new.tar`: that root after `apt-get upgrade` with bookworm-updates and
//!   bookworm-security added (a vendor's monthly security update);
//! - `trixie.tar`: that root after `apt-get full-upgrade` to trixie, trixie-updates and
//!   trixie-security, then `apt-get autoremove` (a major upgrade).
//!
//! Each `.packages` file beside a tarball lists its packages (`name version`). Making them
//! needs root and the network; a cached tarball is reused as it is (delete it to remake
//! it). The mirror is debootstrap's default unless STELE_BENCH_DEBIAN_MIRROR names one;
//! the security archive is the mirror's `-security` sibling (STELE_BENCH_DEBIAN_SECURITY).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{output, run, target_dir};

/// The packages of the appliance, beyond minbase.
pub const INCLUDE: &str = "systemd,openssh-server,curl,python3";

/// One cached root: its tarball and package list.
pub struct Root {
    pub tar: PathBuf,
    pub packages: Vec<(String, String)>,
}

/// The three roots: (old point release, upgraded from -updates/-security, trixie).
pub fn roots() -> Result<(Root, Root, Root), String> {
    let cache = target_dir().join("bench").join("debian");
    let work = cache.join("work");
    fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let old = cached(&cache, "bookworm-old", |dir| {
        let mut cmd = Command::new("debootstrap");
        cmd.args(["--variant=minbase", &format!("--include={INCLUDE}")])
            .arg("bookworm")
            .arg(dir);
        if let Ok(m) = std::env::var("STELE_BENCH_DEBIAN_MIRROR") {
            cmd.arg(m);
        }
        eprintln!(
            "xtask: debootstrap bookworm into {} (minutes)",
            dir.display()
        );
        run(&mut cmd, "debootstrap bookworm")
    })?;
    let new = cached(&cache, "bookworm-new", |dir| {
        extract(&old.tar, dir)?;
        let (debian, security) = archives(dir)?;
        let sources = format!(
            "deb {debian} bookworm main\ndeb {debian} bookworm-updates main\n\
             deb {security} bookworm-security main\n"
        );
        upgrade(dir, &sources, &["upgrade"])
    })?;
    let trixie = cached(&cache, "trixie", |dir| {
        extract(&new.tar, dir)?;
        let (debian, security) = archives(dir)?;
        let sources = format!(
            "deb {debian} trixie main\ndeb {debian} trixie-updates main\n\
             deb {security} trixie-security main\n"
        );
        upgrade(dir, &sources, &["full-upgrade"])?;
        in_chroot(dir, &["apt-get", "-y", "-q", "autoremove", "--purge"])
    })?;
    Ok((old, new, trixie))
}

/// The tarball `name`.tar under `cache`, made by `make` in a fresh directory (then
/// cleaned like an image root and packed) unless it is there.
fn cached(
    cache: &Path,
    name: &str,
    make: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<Root, String> {
    let tar = cache.join(format!("{name}.tar"));
    let list = cache.join(format!("{name}.packages"));
    if !tar.is_file() || !list.is_file() {
        let dir = cache.join("work").join(name);
        remove_root(&dir)?;
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        make(&dir)?;
        pack(&dir, &tar, &list)?;
        remove_root(&dir)?;
    }
    let text = fs::read_to_string(&list).map_err(|e| format!("{}: {e}", list.display()))?;
    let packages = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(p, v)| (p.to_string(), v.to_string()))
        .collect();
    Ok(Root { tar, packages })
}

/// Removes a root directory (nothing may be mounted in it any more).
pub fn remove_root(dir: &Path) -> Result<(), String> {
    if dir.exists() {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(dir.join("proc"))
            .output();
        fs::remove_dir_all(dir).map_err(|e| format!("removing {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// Cleans `dir` as an image root (no apt caches or lists, no host resolver, no
/// policy-rc.d), writes its package list to `list` and packs it into `tar`.
fn pack(dir: &Path, tar: &Path, list: &Path) -> Result<(), String> {
    let packages = in_chroot_output(dir, &["dpkg-query", "-W", "-f=${Package} ${Version}\n"])?;
    run(
        Command::new("sh")
            .arg("-c")
            .arg(
                "cd \"$1\" && rm -rf var/cache/apt/archives/*.deb var/cache/apt/*.bin \
             var/lib/apt/lists/* etc/resolv.conf usr/sbin/policy-rc.d",
            )
            .arg("sh")
            .arg(dir),
        "cleaning the root",
    )?;
    let partial = tar.with_extension("tar.partial");
    run(
        Command::new("tar")
            .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-cf"])
            .arg(&partial)
            .arg("-C")
            .arg(dir)
            .arg("."),
        "tar",
    )?;
    fs::write(list, packages).map_err(|e| format!("{}: {e}", list.display()))?;
    fs::rename(&partial, tar).map_err(|e| format!("{}: {e}", tar.display()))
}

/// Unpacks `tar` into the (empty) directory `dir`, owners and xattrs as stored.
pub fn extract(tar: &Path, dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    run(
        Command::new("tar")
            .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf"])
            .arg(tar)
            .arg("-C")
            .arg(dir),
        &format!("tar -x {}", tar.display()),
    )
}

/// The Debian archive debootstrap used (from the root's sources.list) and its security
/// archive (`.../debian` -> `.../debian-security`), unless the environment names them.
fn archives(dir: &Path) -> Result<(String, String), String> {
    let debian = match std::env::var("STELE_BENCH_DEBIAN_MIRROR") {
        Ok(m) => m,
        Err(_) => {
            let list = dir.join("etc/apt/sources.list");
            let text = fs::read_to_string(&list).map_err(|e| format!("{}: {e}", list.display()))?;
            text.lines()
                .find_map(|l| l.strip_prefix("deb "))
                .and_then(|l| l.split_whitespace().next())
                .map(str::to_string)
                .ok_or_else(|| format!("{} names no archive", list.display()))?
        }
    };
    let security = std::env::var("STELE_BENCH_DEBIAN_SECURITY")
        .unwrap_or_else(|_| format!("{}-security", debian.trim_end_matches('/')));
    Ok((debian, security))
}

/// /proc mounted in a root while apt runs in it.
struct Proc(PathBuf);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).output();
    }
}

/// Runs `args` in the root `dir` (chroot, /proc mounted, no services started, the
/// host's resolver for apt).
fn in_chroot_output(dir: &Path, args: &[&str]) -> Result<String, String> {
    let proc_dir = dir.join("proc");
    fs::create_dir_all(&proc_dir).map_err(|e| e.to_string())?;
    run(
        Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(&proc_dir),
        "mount proc",
    )?;
    let _proc = Proc(proc_dir);
    let policy = dir.join("usr/sbin/policy-rc.d");
    fs::write(&policy, "#!/bin/sh\nexit 101\n").map_err(|e| e.to_string())?;
    run(
        Command::new("chmod").arg("755").arg(&policy),
        "chmod policy-rc.d",
    )?;
    let resolv = dir.join("etc/resolv.conf");
    let _ = fs::remove_file(&resolv);
    fs::copy("/etc/resolv.conf", &resolv).map_err(|e| format!("/etc/resolv.conf: {e}"))?;
    output(
        Command::new("chroot")
            .arg(dir)
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("LC_ALL", "C.UTF-8"),
        &args.join(" "),
    )
}

fn in_chroot(dir: &Path, args: &[&str]) -> Result<(), String> {
    in_chroot_output(dir, args).map(drop)
}

/// Writes `sources` as the root's sources.list, then `apt-get update` and `apt-get
/// <how>` (configuration files kept as they are).
fn upgrade(dir: &Path, sources: &str, how: &[&str]) -> Result<(), String> {
    fs::write(dir.join("etc/apt/sources.list"), sources).map_err(|e| e.to_string())?;
    eprintln!(
        "xtask: apt-get {} in {} (minutes)",
        how.join(" "),
        dir.display()
    );
    in_chroot(dir, &["apt-get", "-q", "update"])?;
    let mut args = vec![
        "apt-get",
        "-y",
        "-q",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
    ];
    args.extend(how);
    in_chroot(dir, &args)
}

/// The packages whose version differs between `a` and `b`, or that only one has.
pub fn changed(a: &Root, b: &Root) -> (Vec<String>, usize, usize) {
    use std::collections::BTreeMap;
    let old: BTreeMap<&str, &str> = a
        .packages
        .iter()
        .map(|(p, v)| (p.as_str(), v.as_str()))
        .collect();
    let new: BTreeMap<&str, &str> = b
        .packages
        .iter()
        .map(|(p, v)| (p.as_str(), v.as_str()))
        .collect();
    let upgraded = new
        .iter()
        .filter(|(p, v)| old.get(*p).is_some_and(|o| o != *v))
        .map(|(p, _)| (*p).to_string())
        .collect();
    let added = new.keys().filter(|p| !old.contains_key(*p)).count();
    let removed = old.keys().filter(|p| !new.contains_key(*p)).count();
    (upgraded, added, removed)
}

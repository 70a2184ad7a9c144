//! The initramfs's mke2fs, for the factory reset (docs/BOOT.md "Factory reset"): the host's
//! `mke2fs` (e2fsprogs) with the shared libraries it links and its program interpreter,
//! flat in `stele_verifier::layout::MKE2FS_DIR`, so that PID 1 can make a fresh ext4 on
//! the data partition before mounting it. PID 1 runs it through that interpreter with
//! `--library-path` (no shell, no /etc/ld.so.cache, nothing of the host's paths).

use std::path::{Path, PathBuf};
use std::process::Command;

use stele_verifier::layout::{MKE2FS, MKE2FS_DIR, MKE2FS_LOADER};

use crate::cpio::Archive;

/// The host tool.
pub const MKE2FS_TOOL: crate::tool::Tool = crate::tool::Tool {
    name: "mke2fs",
    package: "e2fsprogs",
};

/// What `ldd` printed, as (file name in the initramfs, host path): the libraries by their
/// file names, the program interpreter (the line with a path and no `=>`) as
/// [`MKE2FS_LOADER`]'s file name. The vdso and anything without a path are skipped. Pure.
pub fn parse_ldd(text: &str) -> Result<Vec<(String, PathBuf)>, String> {
    let loader = Path::new(MKE2FS_LOADER)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("ld.so");
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.contains("statically linked") {
            continue;
        }
        if line.contains("not found") {
            return Err(format!("a library is missing: {line}"));
        }
        let (name, path) = match line.split_once("=>") {
            Some((_, rest)) => {
                let p = rest.split_whitespace().next().unwrap_or("");
                let Some(file) = Path::new(p).file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                (file.to_string(), p)
            }
            None => {
                let p = line.split_whitespace().next().unwrap_or("");
                if !p.starts_with('/') {
                    continue;
                }
                (loader.to_string(), p)
            }
        };
        if !path.starts_with('/') {
            continue;
        }
        if out.iter().any(|(n, _)| *n == name) {
            continue;
        }
        out.push((name, PathBuf::from(path)));
    }
    out.sort();
    Ok(out)
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("failed to read {}: {e}", path.display()))
}

/// Adds the host's mke2fs, its libraries and its interpreter to `a`
/// ([`MKE2FS_DIR`]). A host without e2fsprogs, or whose `ldd` fails, is refused with the
/// fix (the caller wraps the cause).
pub fn add(a: &mut Archive) -> Result<(), String> {
    let tool = MKE2FS_TOOL.path().map_err(|e| e.to_string())?;
    let out = Command::new("ldd")
        .arg(&tool)
        .output()
        .map_err(|e| format!("running ldd {}: {e}", tool.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // A static mke2fs: ldd says so and exits 1; then it is the only file.
    let files = if out.status.success() {
        parse_ldd(&text).map_err(|e| format!("{}: {e}", tool.display()))?
    } else {
        Vec::new()
    };
    let rel = |p: &str| p.trim_start_matches('/').to_string();
    let dir = rel(MKE2FS_DIR);
    let cpio = |e: crate::cpio::CpioError| e.to_string();
    if let Some((parent, _)) = dir.rsplit_once('/') {
        a.add_dir(parent, 0o755).map_err(cpio)?;
    }
    a.add_dir(&dir, 0o755).map_err(cpio)?;
    a.add_file(&rel(MKE2FS), 0o755, read(&tool)?)
        .map_err(cpio)?;
    for (name, path) in files {
        a.add_file(&format!("{dir}/{name}"), 0o755, read(&path)?)
            .map_err(cpio)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_the_libraries_and_the_interpreter() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
            \tlibext2fs.so.2 => /lib/x86_64-linux-gnu/libext2fs.so.2 (0x00007f8a)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f8a)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f8a)\n";
        let got = parse_ldd(text).unwrap();
        assert_eq!(
            got,
            [
                (
                    "ld.so".to_string(),
                    PathBuf::from("/lib64/ld-linux-x86-64.so.2")
                ),
                ("libc.so.6".into(), "/lib/x86_64-linux-gnu/libc.so.6".into()),
                (
                    "libext2fs.so.2".into(),
                    "/lib/x86_64-linux-gnu/libext2fs.so.2".into()
                ),
            ]
        );
        let missing = "\tlibblkid.so.1 => not found\n";
        assert!(parse_ldd(missing).unwrap_err().contains("libblkid.so.1"));
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
    }

    /// The host's mke2fs as the initramfs carries it runs, through the carried
    /// interpreter and libraries only, and makes an ext4 (what PID 1 does at a reset).
    #[test]
    fn the_carried_mke2fs_runs_from_its_own_directory() {
        let mut a = Archive::new(0);
        add(&mut a).unwrap();
        let root = tempfile::tempdir().unwrap();
        for (path, e) in a.entries() {
            let at = root.path().join(path);
            match &e.kind {
                crate::cpio::EntryKind::Dir => std::fs::create_dir_all(&at).unwrap(),
                crate::cpio::EntryKind::File(data) => {
                    std::fs::write(&at, data).unwrap();
                    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
                    std::fs::set_permissions(&at, mode).unwrap();
                }
                _ => {}
            }
        }
        let img = root.path().join("data.img");
        std::fs::write(&img, vec![0u8; 16 << 20]).unwrap();
        // The boot's own command line, with the carried paths under `root`.
        let argv = stele_verifier::data_reset::mke2fs_argv(&img.display().to_string());
        let under = |p: &str| root.path().join(p.trim_start_matches('/'));
        let out = Command::new(under(&argv[0]))
            .arg(&argv[1])
            .arg(under(&argv[2]))
            .arg(under(&argv[3]))
            .args(&argv[4..])
            .env_clear()
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let sb = std::fs::read(&img).unwrap();
        // The ext4 superblock's magic at 1024 + 56.
        assert_eq!(sb[1024 + 56..1024 + 58], [0x53, 0xef]);
    }
}

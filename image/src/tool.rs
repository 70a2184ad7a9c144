//! Host tools: the one lookup of every tool stele runs ([`find`]: `$PATH`, then the sbin
//! directories, so mkfs.* is found on a user's PATH without /usr/sbin), running them with
//! one error for a missing tool (naming its Debian package) and one for a failing run, plus
//! a scratch directory next to an output file for the tools' intermediate files.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::cleanup::TempPath;

use crate::{Error, Result};

/// A host tool and the Debian package that ships it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tool {
    pub name: &'static str,
    pub package: &'static str,
}

/// Directories searched after `$PATH`: where Debian puts mkfs.*, debugfs and friends.
pub const SBIN_DIRS: [&str; 5] = ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// The one host-tool lookup: `name` in each directory of `$PATH`, then [`SBIN_DIRS`]; the
/// first executable regular file. A name with a `/` is taken as it is.
pub fn find(name: &str) -> Option<PathBuf> {
    find_in(name, &std::env::var_os("PATH").unwrap_or_default())
}

/// [`find`] with `path` as `$PATH`.
fn find_in(name: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return executable(&p).then_some(p);
    }
    std::env::split_paths(path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| executable(p))
}

impl Tool {
    /// Where the tool is ([`find`]), or [`Error::ToolMissing`] naming its package.
    pub fn path(&self) -> Result<PathBuf> {
        find(self.name).ok_or(Error::ToolMissing {
            tool: self.name,
            package: self.package,
        })
    }

    /// A `Command` for the tool ([`Tool::path`]); its environment has `SOURCE_DATE_EPOCH`
    /// removed so that only what the caller sets counts.
    pub fn command(&self) -> Result<Command> {
        let mut c = Command::new(self.path()?);
        c.env_remove("SOURCE_DATE_EPOCH");
        Ok(c)
    }

    /// Runs `cmd` (made by [`Tool::command`]) to completion, stdin empty, in its own
    /// process group (stopped on a signal, [`crate::cleanup`]); a non-zero exit is
    /// [`Error::ToolFailed`] with the last line the tool printed.
    pub fn run(&self, cmd: &mut Command) -> Result<Output> {
        let (tool, package) = (self.name, self.package);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let output = crate::cleanup::spawn(cmd)
            .and_then(crate::cleanup::wait_output)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Error::ToolMissing { tool, package }
                } else {
                    Error::ToolFailed {
                        tool,
                        status: "could not start".into(),
                        stderr: e.to_string(),
                    }
                }
            })?;
        if output.status.success() {
            return Ok(output);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let text = if stderr.trim().is_empty() {
            stdout
        } else {
            stderr
        };
        Err(Error::ToolFailed {
            tool,
            status: output.status.to_string(),
            stderr: text.trim().lines().last().unwrap_or("").to_string(),
        })
    }
}

pub const MKFS_EROFS: Tool = Tool {
    name: "mkfs.erofs",
    package: "erofs-utils",
};
pub const MKSQUASHFS: Tool = Tool {
    name: "mksquashfs",
    package: "squashfs-tools",
};
pub const MKFS_EXT4: Tool = Tool {
    name: "mkfs.ext4",
    package: "e2fsprogs",
};
pub const DEBUGFS: Tool = Tool {
    name: "debugfs",
    package: "e2fsprogs",
};
pub const FAKEROOT: Tool = Tool {
    name: "fakeroot",
    package: "fakeroot",
};

pub const OBJCOPY: Tool = Tool {
    name: "objcopy",
    package: "binutils",
};
pub const SBSIGN: Tool = Tool {
    name: "sbsign",
    package: "sbsigntool",
};
pub const MKFS_VFAT: Tool = Tool {
    name: "mkfs.vfat",
    package: "dosfstools",
};
pub const MMD: Tool = Tool {
    name: "mmd",
    package: "mtools",
};
pub const MCOPY: Tool = Tool {
    name: "mcopy",
    package: "mtools",
};
pub const SYSLINUX: Tool = Tool {
    name: "syslinux",
    package: "syslinux",
};
pub const BMAPTOOL: Tool = Tool {
    name: "bmaptool",
    package: "bmap-tools",
};

/// A directory next to an output file for intermediate files, removed with everything in
/// it when dropped, or on a signal once [`crate::cleanup::install`] ran (so an error or an
/// interruption leaves nothing behind).
#[derive(Debug)]
pub struct Scratch(TempPath);

impl Scratch {
    /// Creates `.<name>.stele-work-<pid>-<n>` where the temporary files of `out` go
    /// ([`crate::atomic::temp_name`]).
    pub fn beside(out: &Path) -> Result<Scratch> {
        let path = crate::atomic::temp_name(out, "work")
            .map_err(|e| Error::invalid("output path", e.to_string()))?;
        let dir = TempPath::register(path);
        std::fs::create_dir(dir.path())
            .map_err(|e| Error::io("create a scratch directory", dir.path(), e))?;
        Ok(Scratch(dir))
    }

    /// A path inside the scratch directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    /// Writes `bytes` to the scratch file `name` and returns its path.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<PathBuf> {
        let p = self.join(name);
        std::fs::write(&p, bytes).map_err(|e| Error::io("write", &p, e))?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_names_the_package() {
        let t = Tool {
            name: "stele-no-such-tool",
            package: "stele-no-such-package",
        };
        let e = t.command().unwrap_err();
        assert!(matches!(e, Error::ToolMissing { .. }));
        assert!(e.to_string().contains("stele-no-such-package"), "{e}");
    }

    /// mkfs.ext4 is found with a PATH without /usr/sbin (`disk create --data-size` once
    /// failed there while `image build` found it).
    #[test]
    fn sbin_tools_are_found_on_a_short_path() {
        let short = std::ffi::OsStr::new("/nonexistent:/usr/bin");
        let p = find_in("mkfs.ext4", short).expect("mkfs.ext4: run `cargo xtask setup`");
        assert!(
            p.starts_with("/usr/sbin") || p.starts_with("/sbin"),
            "{p:?}"
        );
        assert_eq!(find_in("stele-no-such-tool", short), None);
        assert_eq!(find_in("/bin/sh", short), Some(PathBuf::from("/bin/sh")));
        assert_eq!(find_in("/nonexistent/sh", short), None);
    }

    #[test]
    fn failing_tool_reports_its_last_line() {
        let t = Tool {
            name: "sh",
            package: "dash",
        };
        let mut c = t.command().unwrap();
        c.args(["-c", "echo first >&2; echo last words >&2; exit 4"]);
        match t.run(&mut c) {
            Err(Error::ToolFailed { tool, stderr, .. }) => {
                assert_eq!(tool, "sh");
                assert_eq!(stderr, "last words");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scratch_is_removed_on_drop() {
        let d = tempfile::tempdir().unwrap();
        let s = Scratch::beside(&d.path().join("out.efi")).unwrap();
        let p = s.write("x", b"1").unwrap();
        assert!(p.exists());
        drop(s);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }
}

//! Running Debian host tools (objcopy, sbsign, mkfs.vfat, mtools, syslinux, bmaptool) with
//! one error for a missing tool (naming its package) and one for a failing run, plus a
//! scratch directory next to an output file for the tools' intermediate files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::cleanup::TempPath;

use crate::{Error, Result};

/// A host tool and the Debian package that ships it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tool {
    pub name: &'static str,
    pub package: &'static str,
}

impl Tool {
    /// A `Command` for the tool, found in $PATH or the sbin directories; its environment
    /// has `SOURCE_DATE_EPOCH` removed so that only what the caller sets counts.
    pub fn command(&self) -> Result<Command> {
        let exe = crate::fs::find_tool(self.name, self.package)?;
        let mut c = Command::new(exe);
        c.env_remove("SOURCE_DATE_EPOCH");
        Ok(c)
    }

    /// Runs `cmd` (made by [`Tool::command`]) to completion, in its own process group
    /// (stopped on a signal, [`crate::cleanup`]); a non-zero exit is
    /// [`Error::ToolFailed`] with the last line the tool printed.
    pub fn run(&self, cmd: &mut Command) -> Result<Output> {
        crate::fs::run(cmd, self.name, self.package)
    }
}

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

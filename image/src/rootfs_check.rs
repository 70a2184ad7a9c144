//! Before `stele image build --rootfs` packs a tree: its `/etc/stele/system.toml`, when
//! there is one, must be what PID 1 accepts ([`SystemConfig::parse`]), and every program it
//! would run (`exec`, `health`, each service's `exec`) must be an executable regular file
//! in the tree. Paths are resolved INSIDE the tree, as they will be on the device:
//! absolute symlinks from the tree's root, relative ones from their directory, `..` never
//! above the root, at most [`MAX_LINKS`] links.
//!
//! The files PID 1 and the updater trust ([`stele_verifier::layout::TRUSTED`]) must not be
//! reached through a symlink that leaves the tree or points into a directory the device
//! writes: the rule is the device's own ([`check_all_trusted`]).
//!
//! The users and groups services run as (`user`, `group`, `supplementary_groups`) must be
//! in the tree's own `/etc/passwd` and `/etc/group`, where PID 1 will look them up.
//!
//! The tree is read through [`Tree`] (look at one path without following it, read one
//! file), implemented here for a directory ([`DirTree`]); a tar archive can implement it
//! too. The resolution is [`resolve`] (stele_verifier::resolve), the same for every tree
//! and for the device's lower layer.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use stele_verifier::config::{Accounts, ConfigError, SystemConfig};
use stele_verifier::exit::{Exit, Report};
use stele_verifier::layout::{GROUP, PASSWD, SYSTEM_TOML};
use stele_verifier::resolve::{check_all_trusted, LinkOut};
pub use stele_verifier::resolve::{resolve, Node, Resolved, Tree, MAX_LINKS};

/// A root tree that is a directory of the build host.
#[derive(Clone, Debug)]
pub struct DirTree {
    root: PathBuf,
}

impl DirTree {
    pub fn new(root: &Path) -> Self {
        DirTree {
            root: root.to_path_buf(),
        }
    }

    fn host(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }
}

impl Tree for DirTree {
    fn lstat(&self, path: &str) -> io::Result<Option<Node>> {
        let p = self.host(path);
        let md = match std::fs::symlink_metadata(&p) {
            Ok(md) => md,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let ft = md.file_type();
        Ok(Some(if ft.is_symlink() {
            Node::Symlink(std::fs::read_link(&p)?.to_string_lossy().into_owned())
        } else if ft.is_dir() {
            Node::Dir
        } else if ft.is_file() {
            Node::File {
                mode: md.permissions().mode() & 0o7777,
            }
        } else {
            Node::Other
        }))
    }

    fn read(&self, path: &str) -> io::Result<Vec<u8>> {
        std::fs::read(self.host(path))
    }

    fn list(&self, path: &str) -> io::Result<Vec<String>> {
        std::fs::read_dir(self.host(path))?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect()
    }
}

/// Why a program of system.toml cannot run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("does not exist in the rootfs ({0} is missing)")]
    Missing(String),
    #[error("cannot be reached in the rootfs ({0} is not a directory)")]
    NotADirectory(String),
    #[error("cannot be resolved in the rootfs (more than 40 symbolic links)")]
    Loop,
    #[error("is not a regular file in the rootfs")]
    NotAFile,
    #[error("is not executable in the rootfs (mode {0:04o}; chmod +x it)")]
    NotExecutable(u32),
}

/// A rootfs refused before the build.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// system.toml is refused by the schema PID 1 uses.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A program system.toml names cannot run.
    #[error("invalid {origin}: {key}: {program} {problem}")]
    Program {
        origin: String,
        key: String,
        program: String,
        problem: Problem,
    },
    /// A trusted file is behind a link out of the image.
    #[error("invalid rootfs: {0}")]
    TrustedLink(#[from] LinkOut),
    /// The tree cannot be read.
    #[error("cannot read {path} in the rootfs: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

impl Report for RootfsError {
    fn exit(&self) -> Exit {
        match self {
            RootfsError::Io { .. } => Exit::Environment,
            _ => Exit::Usage,
        }
    }
}

/// Checks that no trusted file of `tree` is behind a link out of it, then its system.toml
/// (`origin` names it in errors) and the programs it runs. Returns the parsed file, or
/// `None` when the tree has none.
pub fn check(tree: &dyn Tree, origin: &str) -> Result<Option<SystemConfig>, RootfsError> {
    let io_err = |path: &str| {
        let path = path.to_string();
        move |source| RootfsError::Io { path, source }
    };
    // The image cannot know boot.toml's data mount: /var, its default, is in WRITABLE.
    if let Some(out) = check_all_trusted(tree, "/var").map_err(io_err("/"))? {
        return Err(out.into());
    }
    let at = match resolve(tree, SYSTEM_TOML).map_err(io_err(SYSTEM_TOML))? {
        Resolved::Found {
            path,
            node: Node::File { .. },
        } => path,
        Resolved::Found { .. } => {
            return Err(ConfigError::file(origin, "is not a regular file").into())
        }
        _ => return Ok(None),
    };
    let bytes = tree.read(&at).map_err(io_err(&at))?;
    let text = String::from_utf8(bytes).map_err(|_| ConfigError::file(origin, "not UTF-8"))?;
    let cfg = SystemConfig::parse(&text, origin)?;
    for (key, program) in cfg.programs() {
        let problem = match resolve(tree, program).map_err(io_err(program))? {
            Resolved::Found {
                node: Node::File { mode },
                ..
            } if mode & 0o111 != 0 => continue,
            Resolved::Found {
                node: Node::File { mode },
                ..
            } => Problem::NotExecutable(mode),
            Resolved::Found { .. } => Problem::NotAFile,
            Resolved::Missing { at } => Problem::Missing(at),
            Resolved::NotADirectory { at } => Problem::NotADirectory(at),
            Resolved::Loop => Problem::Loop,
        };
        return Err(RootfsError::Program {
            origin: origin.to_string(),
            key,
            program: program.to_string(),
            problem,
        });
    }
    // PID 1 reads both whatever the services' users are, and refuses either when it is
    // there but cannot be read as a file.
    let accounts = Accounts::parse(&text_of(tree, PASSWD)?, &text_of(tree, GROUP)?);
    if cfg.services.iter().any(|s| !s.run_as.is_default()) {
        cfg.credentials(origin, &accounts)?;
    }
    Ok(Some(cfg))
}

/// The text of the regular file at `path` in the tree (symlinks resolved inside it), empty
/// when there is none: what PID 1 reads from the image. Something else there (a directory,
/// FIFO or device, a link loop, a file in place of a directory on the way) is refused, as
/// PID 1 refuses it.
fn text_of(tree: &dyn Tree, path: &str) -> Result<String, RootfsError> {
    let io_err = |source| RootfsError::Io {
        path: path.to_string(),
        source,
    };
    match resolve(tree, path).map_err(io_err)? {
        Resolved::Found {
            path: at,
            node: Node::File { .. },
        } => {
            let bytes = tree.read(&at).map_err(io_err)?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        }
        Resolved::Missing { .. } => Ok(String::new()),
        Resolved::Found { .. } => Err(ConfigError::file(path, "is not a regular file").into()),
        Resolved::Loop => {
            Err(ConfigError::file(path, "cannot be resolved (more than 40 symbolic links)").into())
        }
        Resolved::NotADirectory { at } => Err(ConfigError::file(
            path,
            format!("cannot be reached ({at} is not a directory)"),
        )
        .into()),
    }
}

/// [`check`] of a directory: the origin is `DIR/etc/stele/system.toml`.
pub fn check_dir(dir: &Path) -> Result<Option<SystemConfig>, RootfsError> {
    let origin = dir.join(SYSTEM_TOML.trim_start_matches('/'));
    check(&DirTree::new(dir), &origin.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for dir in ["etc/stele", "usr/bin", "sbin", "srv"] {
            std::fs::create_dir_all(r.join(dir)).unwrap();
        }
        let exe = |p: &str, mode: u32| {
            std::fs::write(r.join(p), "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(r.join(p), std::fs::Permissions::from_mode(mode)).unwrap();
        };
        exe("usr/bin/app", 0o755);
        exe("usr/bin/data", 0o644);
        symlink("usr/bin", r.join("bin")).unwrap();
        symlink("/usr/bin/app", r.join("sbin/init")).unwrap();
        symlink("../../usr/bin/app", r.join("srv/up")).unwrap();
        symlink("/etc/passwd", r.join("srv/host")).unwrap();
        symlink("loop2", r.join("srv/loop1")).unwrap();
        symlink("loop1", r.join("srv/loop2")).unwrap();
        d
    }

    fn found(t: &DirTree, p: &str) -> String {
        match resolve(t, p).unwrap() {
            Resolved::Found { path, .. } => path,
            other => panic!("{p}: {other:?}"),
        }
    }

    #[test]
    fn symlinks_resolve_inside_the_tree() {
        let d = tree();
        let t = DirTree::new(d.path());
        assert_eq!(found(&t, "/bin/app"), "/usr/bin/app");
        assert_eq!(found(&t, "/sbin/init"), "/usr/bin/app");
        assert_eq!(found(&t, "/srv/up"), "/usr/bin/app");
        assert_eq!(found(&t, "/../../usr/./bin//app"), "/usr/bin/app");
        // An absolute link points into the tree, never at the build host's files.
        assert_eq!(
            resolve(&t, "/srv/host").unwrap(),
            Resolved::Missing {
                at: "/etc/passwd".into()
            }
        );
        assert_eq!(resolve(&t, "/srv/loop1").unwrap(), Resolved::Loop);
        assert_eq!(
            resolve(&t, "/usr/bin/app/x").unwrap(),
            Resolved::NotADirectory {
                at: "/usr/bin/app".into()
            }
        );
    }

    fn with_system(text: &str) -> (tempfile::TempDir, Result<Option<SystemConfig>, RootfsError>) {
        let d = tree();
        std::fs::write(d.path().join("etc/stele/system.toml"), text).unwrap();
        let r = check_dir(d.path());
        (d, r)
    }

    #[test]
    fn programs_must_be_executable_files_in_the_tree() {
        let (_d, r) = with_system("exec = [\"/sbin/init\"]\n");
        assert!(r.unwrap().is_some());
        for (text, key, problem) in [
            ("exec = [\"/bin/nope\"]", "exec", "does not exist in the rootfs"),
            ("exec = [\"/usr/bin/data\"]", "exec", "is not executable in the rootfs (mode 0644"),
            ("exec = [\"/usr/bin\"]", "exec", "is not a regular file"),
            ("exec = [\"/srv/host\"]", "exec", "does not exist"),
            (
                "[[service]]\nname = \"w\"\nexec = [\"/bin/app\"]\n[[service]]\nname = \"x\"\nexec = [\"/srv/loop1\"]",
                "service \"x\" exec",
                "more than 40 symbolic links",
            ),
            (
                "exec = [\"/bin/app\"]\nhealth = [\"/usr/bin/app/check\"]",
                "health",
                "not a directory",
            ),
        ] {
            let (d, r) = with_system(text);
            let e = r.unwrap_err();
            assert_eq!(e.exit(), Exit::Usage);
            let msg = e.to_string();
            let origin = d.path().join("etc/stele/system.toml");
            assert!(
                msg.starts_with(&format!("invalid {}: {key}: ", origin.display())),
                "{msg}"
            );
            assert!(msg.contains(problem), "{text}: {msg}");
        }
    }

    /// A service's user and groups must be in the tree's own /etc/passwd and /etc/group.
    #[test]
    fn users_and_groups_come_from_the_tree() {
        let svc = "[[service]]\nname = \"w\"\nexec = [\"/bin/app\"]\nuser = \"web\"\nsupplementary_groups = [\"logs\"]\n";
        let (dir, r) = with_system(svc);
        let e = r.unwrap_err();
        assert!(
            e.to_string()
                .contains("service \"w\" user: user \"web\" is not in the image's /etc/passwd"),
            "{e}"
        );
        std::fs::write(dir.path().join("etc/passwd"), "web:x:33:33::/:/bin/false\n").unwrap();
        let e = check_dir(dir.path()).unwrap_err();
        assert!(
            e.to_string()
                .contains("\"logs\" is not in the image's /etc/group"),
            "{e}"
        );
        std::fs::write(dir.path().join("etc/group"), "logs:x:4:\n").unwrap();
        let cfg = check_dir(dir.path()).unwrap().unwrap();
        assert_eq!(cfg.services[0].run_as.supplementary_groups.len(), 1);
    }

    /// PID 1 refuses an /etc/passwd or /etc/group it cannot read as a file (a FIFO hung
    /// it before); the build refuses it too, with or without service users.
    #[test]
    fn passwd_or_group_that_is_not_a_file_is_refused() {
        let (d, r) = with_system("exec = [\"/bin/app\"]\n");
        assert!(r.unwrap().is_some());
        let fifo = d.path().join("etc/passwd");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let e = check_dir(d.path()).unwrap_err();
        assert_eq!(e.to_string(), "invalid /etc/passwd: is not a regular file");
        assert_eq!(e.exit(), Exit::Usage);
        std::fs::remove_file(&fifo).unwrap();
        std::fs::create_dir(d.path().join("etc/group")).unwrap();
        let e = check_dir(d.path()).unwrap_err();
        assert_eq!(e.to_string(), "invalid /etc/group: is not a regular file");
    }

    #[test]
    fn the_schema_is_pid1s_and_no_file_is_no_check() {
        let (d, r) = with_system("mode = \"exec\"\n");
        let origin = d.path().join("etc/stele/system.toml").display().to_string();
        let pid1 = SystemConfig::parse("mode = \"exec\"\n", &origin).unwrap_err();
        assert_eq!(r.unwrap_err().to_string(), pid1.to_string());
        let d = tree();
        assert!(check_dir(d.path()).unwrap().is_none());
        assert!(check_dir(&d.path().join("missing")).unwrap().is_none());
    }
}

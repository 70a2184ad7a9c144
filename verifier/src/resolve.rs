//! Resolving a path inside a root tree as the device's kernel does with
//! `openat2(RESOLVE_IN_ROOT)`, and the one rule for the files PID 1 and the updater trust
//! after switch root ([`layout::TRUSTED`]): none of them may be reached through a symbolic
//! link that leaves the image or points where the device writes ([`layout::WRITABLE`]).
//!
//! `stele image build` applies [`check_trusted`] to the rootfs it packs (refusing with exit
//! 2), stele-init and the updater apply it to the verified lower layer before they open a
//! trusted file (and then open it with `RESOLVE_IN_ROOT`, so a link resolves inside the
//! image or not at all). The tree is read through [`Tree`]; its implementations (a build
//! directory, the device's lower layer) live with their callers, so this stays pure.

use std::io;

use crate::layout;

/// Most symlinks followed while resolving one path (Linux's MAXSYMLINKS).
pub const MAX_LINKS: usize = 40;

/// What is at a path of the tree, not following a final symlink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// A regular file with its permission bits.
    File {
        mode: u32,
    },
    Dir,
    /// A symlink and its target, as stored.
    Symlink(String),
    /// A device, FIFO or socket.
    Other,
}

/// Read access to a root tree. Paths are absolute within the tree (`/etc/stele/system.toml`)
/// and contain no symlink before their last component ([`resolve`] sees to that).
pub trait Tree {
    /// What is at `path` (a final symlink is not followed); `None` when nothing is.
    fn lstat(&self, path: &str) -> io::Result<Option<Node>>;
    /// The bytes of the regular file at `path`.
    fn read(&self, path: &str) -> io::Result<Vec<u8>>;
    /// The names in the directory at `path` (without `.` and `..`), in any order.
    fn list(&self, path: &str) -> io::Result<Vec<String>>;
}

/// Where resolving a path ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    /// The path leads to `node` at `path` (no symlink in it).
    Found { path: String, node: Node },
    /// Nothing at `at`.
    Missing { at: String },
    /// `at` is in the middle of the path but not a directory.
    NotADirectory { at: String },
    /// More than [`MAX_LINKS`] symlinks.
    Loop,
}

/// A symlink met while resolving: where it is and its target as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub at: String,
    pub target: String,
}

/// Resolves `path` inside `tree`, following every symlink as the device's kernel would
/// with the tree as its root: absolute targets from the tree's root, relative ones from
/// their directory, `..` never above the root, at most [`MAX_LINKS`] links.
pub fn resolve(tree: &dyn Tree, path: &str) -> io::Result<Resolved> {
    Ok(resolve_links(tree, path)?.0)
}

/// [`resolve`], with every symlink met on the way, in order.
pub fn resolve_links(tree: &dyn Tree, path: &str) -> io::Result<(Resolved, Vec<Link>)> {
    let mut pending: Vec<String> = Vec::new();
    push_components(&mut pending, path);
    let mut done: Vec<String> = Vec::new();
    let mut node = Node::Dir;
    let mut links = Vec::new();
    while let Some(c) = pending.pop() {
        if node != Node::Dir {
            return Ok((Resolved::NotADirectory { at: join(&done) }, links));
        }
        if c == ".." {
            done.pop();
            continue;
        }
        done.push(c);
        let at = join(&done);
        match tree.lstat(&at)? {
            None => return Ok((Resolved::Missing { at }, links)),
            Some(Node::Symlink(target)) => {
                if links.len() == MAX_LINKS {
                    return Ok((Resolved::Loop, links));
                }
                done.pop();
                if target.starts_with('/') {
                    done.clear();
                }
                push_components(&mut pending, &target);
                links.push(Link { at, target });
                node = Node::Dir;
            }
            Some(n) => node = n,
        }
    }
    let found = Resolved::Found {
        path: join(&done),
        node,
    };
    Ok((found, links))
}

/// Pushes the components of `path` so that the first is popped first.
fn push_components(pending: &mut Vec<String>, path: &str) {
    let comps = path.split('/').filter(|c| !c.is_empty() && *c != ".");
    let mut v: Vec<String> = comps.map(str::to_string).collect();
    v.reverse();
    pending.extend(v);
}

fn join(components: &[String]) -> String {
    format!("/{}", components.join("/"))
}

/// Where a refused link goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Escape {
    /// A relative target climbs above the image's root.
    LeavesTheImage,
    /// The target is in this directory, which the device writes (or mounts over).
    Writable(String),
}

impl std::fmt::Display for Escape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Escape::LeavesTheImage => write!(f, "which leaves the image"),
            Escape::Writable(dir) => write!(f, "into {dir}, which the device writes"),
        }
    }
}

/// A trusted file reached through a link out of the verified image.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{path} is reached through the symbolic link {} -> {}, {escape}: files PID 1 and the \
     updater trust must be read from the verified image (put the file itself there)",
    link.at, link.target
)]
pub struct LinkOut {
    /// The trusted path ([`layout::TRUSTED`]).
    pub path: String,
    pub link: Link,
    pub escape: Escape,
}

/// Where `link`'s target lies, taken literally from the link's directory: a relative
/// target with more `..` than its directory has parents leaves the image; `None` when it
/// stays inside and not under `writable`. Pure.
pub fn escape(link: &Link, writable: &[&str]) -> Option<Escape> {
    let absolute = link.target.starts_with('/');
    let mut at: Vec<&str> = if absolute {
        Vec::new()
    } else {
        let parent = link.at.rsplit_once('/').map_or("", |(p, _)| p);
        parent.split('/').filter(|c| !c.is_empty()).collect()
    };
    for c in link.target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if at.pop().is_none() && !absolute {
                    return Some(Escape::LeavesTheImage);
                }
            }
            c => at.push(c),
        }
    }
    let p = format!("/{}", at.join("/"));
    writable
        .iter()
        .find(|w| p == **w || p.starts_with(&format!("{}/", w.trim_end_matches('/'))))
        .map(|w| Escape::Writable(w.to_string()))
}

/// The directories a trusted file must not be linked into: [`layout::WRITABLE`] and the
/// device's data mount point (boot.toml `data_mount`).
pub fn writable_dirs(data_mount: &str) -> Vec<&str> {
    let mut v = layout::WRITABLE.to_vec();
    if data_mount != "/" && !v.contains(&data_mount) {
        v.push(data_mount);
    }
    v
}

/// Checks the trusted `path` in `tree`: `Some` names the first link on its way that leaves
/// the image or points under a `writable` directory. A missing file is no refusal (whether
/// it must exist is its reader's rule).
pub fn check_trusted(
    tree: &dyn Tree,
    path: &str,
    writable: &[&str],
) -> io::Result<Option<LinkOut>> {
    let (_, links) = resolve_links(tree, path)?;
    Ok(links.into_iter().find_map(|link| {
        let escape = escape(&link, writable)?;
        Some(LinkOut {
            path: path.to_string(),
            link,
            escape,
        })
    }))
}

/// [`check_trusted`] for every path of [`layout::TRUSTED`] and every entry of the
/// directories of [`layout::TRUSTED_DIRS`] (sorted by name): the first refusal.
pub fn check_all_trusted(tree: &dyn Tree, data_mount: &str) -> io::Result<Option<LinkOut>> {
    let writable = writable_dirs(data_mount);
    let mut paths: Vec<String> = layout::TRUSTED.iter().map(|p| p.to_string()).collect();
    for dir in layout::TRUSTED_DIRS {
        if let Resolved::Found {
            path,
            node: Node::Dir,
        } = resolve(tree, dir)?
        {
            let mut names = tree.list(&path)?;
            names.sort();
            paths.extend(names.iter().map(|n| format!("{dir}/{n}")));
        }
    }
    for p in paths {
        if let Some(out) = check_trusted(tree, &p, &writable)? {
            return Ok(Some(out));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A tree in memory: path -> node (directories implied by their entries).
    struct Mem(BTreeMap<String, Node>);

    impl Tree for Mem {
        fn lstat(&self, path: &str) -> io::Result<Option<Node>> {
            if let Some(n) = self.0.get(path) {
                return Ok(Some(n.clone()));
            }
            let dir = format!("{path}/");
            Ok(self
                .0
                .keys()
                .any(|k| k.starts_with(&dir))
                .then_some(Node::Dir))
        }
        fn read(&self, _: &str) -> io::Result<Vec<u8>> {
            Ok(Vec::new())
        }
        fn list(&self, path: &str) -> io::Result<Vec<String>> {
            let dir = format!("{path}/");
            let mut v: Vec<String> = self
                .0
                .keys()
                .filter_map(|k| k.strip_prefix(&dir))
                .map(|rest| rest.split('/').next().unwrap_or(rest).to_string())
                .collect();
            v.dedup();
            Ok(v)
        }
    }

    fn tree(links: &[(&str, &str)]) -> Mem {
        let mut m = BTreeMap::new();
        for f in ["/etc/passwd", "/etc/group", "/usr/share/stele/system.toml"] {
            m.insert(f.to_string(), Node::File { mode: 0o644 });
        }
        m.insert("/var/lib/x/system.toml".into(), Node::File { mode: 0o644 });
        for (at, target) in links {
            m.insert(at.to_string(), Node::Symlink(target.to_string()));
        }
        Mem(m)
    }

    /// Every way out that the build and the device refuse, and the links that stay inside.
    #[test]
    fn trusted_files_are_refused_behind_a_link_out_of_the_image() {
        let out = |links: &[(&str, &str)], data_mount: &str| {
            check_all_trusted(&tree(links), data_mount).unwrap()
        };
        for (links, data_mount, link_at, escape) in [
            (
                &[("/etc/stele/system.toml", "/var/lib/x/system.toml")][..],
                "/var",
                "/etc/stele/system.toml",
                Escape::Writable("/var".into()),
            ),
            (
                &[("/etc/stele", "../var/lib/x")],
                "/var",
                "/etc/stele",
                Escape::Writable("/var".into()),
            ),
            (
                &[("/etc", "/run/etc")],
                "/var",
                "/etc",
                Escape::Writable("/run".into()),
            ),
            (
                &[("/etc/passwd", "../../../../tmp/passwd")],
                "/var",
                "/etc/passwd",
                Escape::LeavesTheImage,
            ),
            (
                &[("/etc/group", "/data/group")],
                "/data",
                "/etc/group",
                Escape::Writable("/data".into()),
            ),
            (
                &[("/usr/lib/stele/stele-fetch", "/dev/shm/f")],
                "/var",
                "/usr/lib/stele/stele-fetch",
                Escape::Writable("/dev".into()),
            ),
            (
                // The way out is a second link, met through a first that stays inside.
                &[("/etc/stele", "/srv/stele"), ("/srv/stele", "/tmp/stele")],
                "/var",
                "/srv/stele",
                Escape::Writable("/tmp".into()),
            ),
            (
                &[("/etc/stele/channel-keys", "/var/lib/keys")],
                "/var",
                "/etc/stele/channel-keys",
                Escape::Writable("/var".into()),
            ),
            (
                // One key of the directory, behind the image's own link to the directory.
                &[
                    ("/etc/stele/channel-keys", "/usr/share/keys"),
                    ("/usr/share/keys/a.pem", "/var/lib/keys/a.pem"),
                ],
                "/var",
                "/usr/share/keys/a.pem",
                Escape::Writable("/var".into()),
            ),
        ] {
            let got = out(links, data_mount).unwrap_or_else(|| panic!("{links:?}: accepted"));
            assert_eq!(got.link.at, link_at, "{links:?}");
            assert_eq!(got.escape, escape, "{links:?}");
            let msg = got.to_string();
            assert!(msg.contains(&format!("{} -> ", got.link.at)), "{msg}");
        }
        for links in [
            &[][..],
            &[("/etc/stele/system.toml", "/usr/share/stele/system.toml")],
            &[(
                "/etc/stele/system.toml",
                "../../usr/share/stele/system.toml",
            )],
            // Absolute `..` stays at the root, as RESOLVE_IN_ROOT does.
            &[("/etc/passwd", "/../../etc/passwd.real")],
            &[("/etc/group", "group.d/../group-real")],
            // Not under /var: only a prefix of the name.
            &[("/etc/passwd", "/variant/passwd")],
        ] {
            assert_eq!(out(links, "/var"), None, "{links:?}");
        }
        // The data mount is always writable, wherever boot.toml puts it.
        assert!(out(&[("/etc/passwd", "/srv/data/passwd")], "/srv/data").is_some());
        assert!(out(&[("/etc/passwd", "/srv/data/passwd")], "/var").is_none());
    }

    #[test]
    fn a_link_loop_on_a_trusted_path_is_no_way_out_and_no_panic() {
        let t = tree(&[("/etc/stele", "/etc/stele2"), ("/etc/stele2", "/etc/stele")]);
        assert_eq!(
            resolve(&t, "/etc/stele/system.toml").unwrap(),
            Resolved::Loop
        );
        assert_eq!(check_all_trusted(&t, "/var").unwrap(), None);
    }

    #[test]
    fn the_message_names_the_path_the_link_and_where_it_goes() {
        let t = tree(&[("/etc/stele/system.toml", "/var/lib/x/system.toml")]);
        let e = check_all_trusted(&t, "/var").unwrap().unwrap();
        assert_eq!(
            e.to_string(),
            "/etc/stele/system.toml is reached through the symbolic link \
             /etc/stele/system.toml -> /var/lib/x/system.toml, into /var, which the device \
             writes: files PID 1 and the updater trust must be read from the verified image \
             (put the file itself there)"
        );
    }

    use proptest::strategy::Strategy;

    proptest::proptest! {
        /// On any graph of links (loops, `..`, absolute and relative), the check never
        /// panics, and when it passes, each trusted file that resolves does so outside
        /// every writable directory: the rule is about where the file ends up, not about
        /// how the links are spelled.
        #[test]
        fn a_passed_check_never_ends_in_a_writable_directory(
            links in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "/etc", "/etc/stele", "/etc/passwd", "/etc/stele/system.toml",
                        "/srv", "/srv/a", "/usr/lib/stele", "/l",
                    ]),
                    proptest::prop_oneof![
                        proptest::sample::select(vec![
                            "/var/lib/x", "/var/lib/x/system.toml", "../var/lib/x",
                            "../../var/lib/x/passwd", "/srv/../var/lib/x", "/l/../x", "/l",
                            "../l", "/srv/a", "a", "lib/x", "/var/lib", "/run", "../srv",
                        ])
                        .prop_map(str::to_string),
                        "(/)?((\\.\\.|\\.|etc|srv|var|lib|x|a|l|stele)/){0,4}(etc|stele|passwd|a|l|x|var|lib|system.toml)",
                    ],
                ),
                0..6,
            )
        ) {
            let links: Vec<(&str, &str)> = links.iter().map(|(a, t)| (*a, t.as_str())).collect();
            let mut t = tree(&links);
            for f in ["/var/lib/x/passwd", "/var/lib/x/group", "/var/lib/x/stele/system.toml", "/run/x/passwd"] {
                t.0.entry(f.to_string()).or_insert(Node::File { mode: 0o644 });
            }
            if check_all_trusted(&t, "/var").unwrap().is_none() {
                for p in layout::TRUSTED {
                    if let Resolved::Found { path, .. } = resolve(&t, p).unwrap() {
                        let under = layout::WRITABLE
                            .iter()
                            .any(|w| path == *w || path.starts_with(&format!("{w}/")));
                        proptest::prop_assert!(!under, "{p} -> {path} through {links:?}");
                    }
                }
            }
        }
    }
}

//! Before `stele image build` packs a tree: the update channels it follows
//! (`/etc/stele/channels`, verifier::channel::parse_followed) are what the device accepts,
//! and they come with channel keys (`/etc/stele/channel-keys`) and the other way round, so
//! that `stele update check|apply --channel` on the device never finds one without the
//! other. Paths resolve inside the tree (rootfs_check::resolve), as on the device.

use stele_verifier::channel::parse_followed;
use stele_verifier::layout::{CHANNELS_FILE, CHANNEL_KEYS_DIR};

use crate::rootfs_check::{resolve, Node, Resolved, RootfsError, Tree};

/// What the tree holds at `path`, symlinks resolved inside it.
fn found(tree: &dyn Tree, path: &str) -> Result<Option<(String, Node)>, RootfsError> {
    match resolve(tree, path).map_err(|source| RootfsError::Io {
        path: path.to_string(),
        source,
    })? {
        Resolved::Found { path, node } => Ok(Some((path, node))),
        _ => Ok(None),
    }
}

/// Checks the followed channels of `tree`; the error names the file and the fix.
pub fn check(tree: &dyn Tree) -> Result<(), RootfsError> {
    let bad = |why: String| RootfsError::Channels {
        path: CHANNELS_FILE,
        why,
    };
    let keys = matches!(found(tree, CHANNEL_KEYS_DIR)?, Some((_, Node::Dir)));
    match found(tree, CHANNELS_FILE)? {
        None if keys => Err(bad(format!(
            "missing, but the image has channel keys ({CHANNEL_KEYS_DIR}): write the channel \
             names it follows there, one per line (e.g. `stable`)"
        ))),
        None => Ok(()),
        Some((at, Node::File { .. })) => {
            let bytes = tree.read(&at).map_err(|source| RootfsError::Io {
                path: at.clone(),
                source,
            })?;
            let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
            parse_followed(&text).map_err(bad)?;
            if !keys {
                return Err(bad(format!(
                    "names channels but the image has no channel keys ({CHANNEL_KEYS_DIR}/*.pem)"
                )));
            }
            Ok(())
        }
        Some(_) => Err(bad("not a regular file".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rootfs_check::DirTree;

    #[test]
    fn followed_channels_come_with_channel_keys() {
        let d = tempfile::tempdir().unwrap();
        let t = DirTree::new(d.path());
        check(&t).unwrap();
        let etc = d.path().join("etc/stele");
        std::fs::create_dir_all(etc.join("channel-keys")).unwrap();
        let e = check(&t).unwrap_err().to_string();
        assert!(
            e.contains("/etc/stele/channels in the rootfs: missing"),
            "{e}"
        );
        std::fs::write(etc.join("channels"), "stable\nstable\n").unwrap();
        let e = check(&t).unwrap_err().to_string();
        assert!(e.contains("listed twice"), "{e}");
        std::fs::write(etc.join("channels"), "# ours\nstable\n").unwrap();
        check(&t).unwrap();
        std::fs::remove_dir(etc.join("channel-keys")).unwrap();
        let e = check(&t).unwrap_err().to_string();
        assert!(e.contains("no channel keys"), "{e}");
    }
}

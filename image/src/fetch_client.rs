//! `stele image build --rootfs DIR --fetch-client PATH`: the image gets the fetch client at
//! `/usr/lib/stele/stele-fetch` (verifier::layout::FETCH_CLIENT), where the device's
//! `stele update install URL` runs it from the verified root. DIR itself is not changed:
//! it is copied (`cp -a`: owners, modes, xattrs, hard links) into a scratch directory
//! next to the output, the client is added there (root-owned, mode 0755), and the image
//! is built from the copy.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::tool::{Scratch, Tool};
use crate::{Error, Result};

/// GNU cp, for the copy of the tree.
pub const CP: Tool = Tool {
    name: "cp",
    package: "coreutils",
};

/// A copy of `dir` with `client` added at the fetch client's path, in a scratch directory
/// next to `out` (removed when the returned [`Scratch`] is dropped); the copy's root is
/// the returned path.
pub fn stage(dir: &Path, client: &Path, out: &Path) -> Result<(Scratch, PathBuf)> {
    let md = std::fs::metadata(client).map_err(|e| Error::io("read", client, e))?;
    if !md.is_file() {
        return Err(Error::invalid(
            "--fetch-client",
            format!("{} is not a regular file", client.display()),
        ));
    }
    let scratch = Scratch::beside(out)?;
    let root = scratch.join("root");
    let mut cmd = CP.command()?;
    cmd.arg("-a")
        .arg("--no-target-directory")
        .arg(dir)
        .arg(&root);
    CP.run(&mut cmd)?;
    let rel = stele_verifier::layout::FETCH_CLIENT.trim_start_matches('/');
    let dest = root.join(rel);
    // Missing directories on the way are made like a distribution's: 0755.
    let mut at = root.clone();
    for part in Path::new(rel)
        .parent()
        .into_iter()
        .flat_map(Path::components)
    {
        at.push(part);
        if !at.exists() {
            std::fs::create_dir(&at).map_err(|e| Error::io("create", &at, e))?;
            std::fs::set_permissions(&at, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| Error::io("set mode of", &at, e))?;
        }
    }
    std::fs::copy(client, &dest).map_err(|e| Error::io("copy the fetch client to", &dest, e))?;
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::io("set mode of", &dest, e))?;
    Ok((scratch, root))
}

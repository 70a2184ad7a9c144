//! The initramfs's storage aliases (`/etc/stele/storage.alias`, docs/FORMATS.md): the
//! storage-driver subset of the kernel's `modules.alias`, read from the modules directory
//! and filtered by `stele_verifier::modalias::storage_subset` (the one definition).

use std::path::Path;

use stele_verifier::modalias::storage_subset;

use crate::initramfs::InitramfsError;

/// The storage aliases of the kernel whose modules are in `dir`, or an empty string when
/// it has no `modules.alias` (PID 1 then names a driverless controller by its PCI id).
pub fn subset(dir: &Path) -> Result<String, InitramfsError> {
    let read = |name: &str| -> Result<String, InitramfsError> {
        let path = dir.join(name);
        match std::fs::read(&path) {
            Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(source) => Err(InitramfsError::Read { path, source }),
        }
    };
    let alias = read("modules.alias")?;
    if alias.is_empty() {
        return Ok(String::new());
    }
    Ok(storage_subset(&read("modules.dep")?, &alias))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subset_of_a_modules_dir_and_none_without_modules_alias() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("modules.dep"),
            "kernel/drivers/nvme/host/nvme.ko:\nkernel/net/x.ko:\n",
        )
        .unwrap();
        assert_eq!(subset(d.path()).unwrap(), "");
        std::fs::write(
            d.path().join("modules.alias"),
            "alias pci:v*d*sv*sd*bc01sc08i02* nvme\nalias pci:v*d*sv*sd*bc02* x\n",
        )
        .unwrap();
        assert_eq!(
            subset(d.path()).unwrap(),
            "alias pci:v*d*sv*sd*bc01sc08i02* nvme\n"
        );
    }
}

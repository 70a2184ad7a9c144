//! A TPM 2.0 for the VM: swtpm (Debian's `swtpm`) with its state in a directory, reached
//! by QEMU's TPM emulator backend over swtpm's control socket and shown to the guest as a
//! TIS device. The state directory outlives the VM: reboots inside one VM keep it, and a
//! later VM on the same directory (`stele qemu run --tpm-state DIR`) sees the same TPM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::QemuError;

/// The swtpm binary.
pub const SWTPM: &str = "swtpm";
/// The control socket's name inside the state directory.
pub const SOCKET: &str = "swtpm-ctrl.sock";

/// The control socket of the TPM whose state is in `dir`. Pure.
pub fn socket(dir: &Path) -> PathBuf {
    dir.join(SOCKET)
}

/// swtpm's arguments (without the binary) for the state in `dir`: a TPM 2.0 serving
/// QEMU on the control socket, ending when QEMU disconnects. Pure.
pub fn swtpm_args(dir: &Path) -> Vec<String> {
    vec![
        "socket".into(),
        "--tpm2".into(),
        "--tpmstate".into(),
        format!("dir={}", dir.display()),
        "--ctrl".into(),
        format!("type=unixio,path={}", socket(dir).display()),
        "--terminate".into(),
    ]
}

/// QEMU's arguments for the TPM of `dir`: the emulator backend on swtpm's control socket
/// and a TIS device (Linux's built-in tpm_tis driver). Pure.
pub fn qemu_args(dir: &Path) -> Vec<String> {
    vec![
        "-chardev".into(),
        format!(
            "socket,id=chrtpm,path={}",
            socket(dir).display().to_string().replace(',', ",,")
        ),
        "-tpmdev".into(),
        "emulator,id=tpm0,chardev=chrtpm".into(),
        "-device".into(),
        "tpm-tis,tpmdev=tpm0".into(),
    ]
}

/// A running swtpm; killed when dropped (it also ends by itself when QEMU goes).
#[derive(Debug)]
pub struct Swtpm {
    child: Child,
}

impl Swtpm {
    /// Starts swtpm on `dir` (created if missing) and waits for its socket.
    pub fn start(dir: &Path) -> Result<Swtpm, QemuError> {
        std::fs::create_dir_all(dir).map_err(|source| QemuError::Spawn {
            what: format!("the TPM state directory {}", dir.display()),
            source,
        })?;
        let sock = socket(dir);
        let _ = std::fs::remove_file(&sock);
        let exe = stele_image::tool::find(SWTPM).ok_or_else(|| QemuError::Missing {
            what: "the software TPM".into(),
            path: PathBuf::from(SWTPM),
            fix: "install the swtpm package (run `cargo xtask setup`)".into(),
        })?;
        let mut child = Command::new(exe)
            .args(swtpm_args(dir))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|source| QemuError::Spawn {
                what: SWTPM.into(),
                source,
            })?;
        let until = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            if Instant::now() >= until || matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(QemuError::Spawn {
                    what: SWTPM.into(),
                    source: std::io::Error::other(format!(
                        "{} did not appear within 10 s",
                        sock.display()
                    )),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Swtpm { child })
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swtpm_and_qemu_meet_on_one_socket() {
        let dir = Path::new("/tmp/vm,1/tpm");
        let s = swtpm_args(dir);
        assert_eq!(
            s[..4],
            ["socket", "--tpm2", "--tpmstate", "dir=/tmp/vm,1/tpm"]
        );
        assert!(s.contains(&"type=unixio,path=/tmp/vm,1/tpm/swtpm-ctrl.sock".to_string()));
        assert!(s.contains(&"--terminate".to_string()));
        let q = qemu_args(dir);
        assert_eq!(
            q,
            [
                "-chardev",
                "socket,id=chrtpm,path=/tmp/vm,,1/tpm/swtpm-ctrl.sock",
                "-tpmdev",
                "emulator,id=tpm0,chardev=chrtpm",
                "-device",
                "tpm-tis,tpmdev=tpm0"
            ]
        );
    }
}

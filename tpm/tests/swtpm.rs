//! stele-tpm against a real TPM: swtpm (Debian's `swtpm`, installed by `cargo xtask
//! setup`) started on a unix socket per test, spoken to through the same [`Channel`] the
//! device uses on /dev/tpmrm0.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use stele_tpm::counter::{Opened, RollbackCounter, MAX_RAISE, NV_INDEX};
use stele_tpm::transport::{Channel, Transport};
use stele_tpm::{measure, Error, Tpm};
use tpm2_protocol::basic::TpmHandle;
use tpm2_protocol::data::{Tpm2bAuth, Tpm2bNonce, TpmSt, TpmaSession, TpmsAuthCommand};
use tpm2_protocol::frame::{
    tpm_marshal_command, TpmFrame, TpmHierarchyChangeAuthCommand, TpmNvUndefineSpaceCommand,
};
use tpm2_protocol::TpmWriter;

/// A swtpm process with its state in a temporary directory; killed on drop.
struct Swtpm {
    child: Child,
    sock: PathBuf,
    _dir: tempfile::TempDir,
}

impl Swtpm {
    fn start() -> Swtpm {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("tpm.sock");
        let ctrl = dir.path().join("ctrl.sock");
        let child = Command::new("swtpm")
            .arg("socket")
            .arg("--tpm2")
            .arg("--tpmstate")
            .arg(format!("dir={}", dir.path().display()))
            .arg("--server")
            .arg(format!("type=unixio,path={}", sock.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}", ctrl.display()))
            .args(["--flags", "not-need-init,startup-clear"])
            .stdout(Stdio::null())
            // "Data client disconnected" after every connection.
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("swtpm: {e} (install it with `cargo xtask setup`)"));
        let until = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            assert!(
                Instant::now() < until,
                "swtpm did not create {}",
                sock.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Swtpm {
            child,
            sock,
            _dir: dir,
        }
    }

    /// A new connection; swtpm serves one at a time, so drop the previous one first.
    fn channel(&self) -> Channel<UnixStream> {
        connect(&self.sock)
    }

    fn tpm(&self) -> Tpm<Channel<UnixStream>> {
        Tpm::new(self.channel())
    }
}

fn connect(sock: &Path) -> Channel<UnixStream> {
    Channel::new(
        UnixStream::connect(sock).unwrap(),
        sock.display().to_string(),
    )
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command authorized by the empty password, marshalled here (stele never sends it).
fn raw<C: TpmFrame>(c: &C, password: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 1024];
    let auth = [TpmsAuthCommand {
        session_handle: TpmHandle::new(stele_tpm::command::TPM_RS_PW),
        nonce: Tpm2bNonce::default(),
        session_attributes: TpmaSession::empty(),
        hmac: Tpm2bAuth::try_from(password).unwrap(),
    }];
    let mut w = TpmWriter::new(&mut buf);
    tpm_marshal_command(c, TpmSt::Sessions, &auth, &mut w).unwrap();
    let n = w.len();
    buf.truncate(n);
    buf
}

fn assert_success(resp: &[u8]) {
    assert_eq!(&resp[6..10], &[0, 0, 0, 0], "response {resp:02x?}");
}

#[test]
fn counter_defines_raises_and_never_starts_lower() {
    let sw = Swtpm::start();
    let (mut c, opened) = RollbackCounter::open(sw.tpm()).unwrap();
    assert_eq!(opened, Opened::Defined);
    assert_eq!(c.floor().unwrap(), 0, "a fresh TPM starts at floor 0");
    assert_eq!(c.raise(3).unwrap(), (0, 3));
    assert_eq!(c.raise(2).unwrap(), (3, 3), "never lowered");
    assert_eq!(c.check_raise(3 + MAX_RAISE).unwrap(), 3);
    let e = c.raise(4 + MAX_RAISE).unwrap_err();
    assert!(matches!(e, Error::TooFarAhead { floor: 3, .. }), "{e}");
    assert_eq!(c.floor().unwrap(), 3, "a refused raise writes nothing");
    drop(c);

    // Found again by a new connection (as the next boot finds it).
    let (mut c, opened) = RollbackCounter::open(sw.tpm()).unwrap();
    assert_eq!((opened, c.floor().unwrap()), (Opened::Existing, 3));
    drop(c); // swtpm serves one connection at a time

    // Whoever can talk to the TPM undefines it and defines it again (the owner password is
    // empty): the new counter starts above every value the old one had.
    let mut ch = sw.channel();
    let undefine = TpmNvUndefineSpaceCommand {
        handles: [
            TpmHandle::new(stele_tpm::command::TPM_RH_OWNER),
            TpmHandle::new(NV_INDEX),
        ],
    };
    assert_success(&ch.transact(&raw(&undefine, b"")).unwrap());
    drop(ch);
    assert_eq!(sw.tpm().nv_read_public(NV_INDEX).unwrap(), None);
    let (mut c, opened) = RollbackCounter::open(sw.tpm()).unwrap();
    assert_eq!(opened, Opened::Defined);
    let again = c.floor().unwrap();
    assert!(
        again >= 3,
        "re-created counter starts at floor {again}, below 3"
    );
}

#[test]
fn an_owner_password_is_one_clear_error() {
    let sw = Swtpm::start();
    let mut ch = sw.channel();
    let change = TpmHierarchyChangeAuthCommand {
        handles: [TpmHandle::new(stele_tpm::command::TPM_RH_OWNER)],
        new_auth: Tpm2bAuth::try_from(&b"secret"[..]).unwrap(),
    };
    assert_success(&ch.transact(&raw(&change, b"")).unwrap());
    drop(ch);
    let e = RollbackCounter::open(sw.tpm()).unwrap_err();
    assert!(
        matches!(
            e,
            Error::OwnerAuth {
                index: NV_INDEX,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("owner hierarchy has a password"),
        "{e}"
    );
    assert_eq!(
        stele_verifier::exit::Report::exit(&e),
        stele_verifier::exit::Exit::Environment
    );
    // Nothing was defined.
    assert_eq!(sw.tpm().nv_read_public(NV_INDEX).unwrap(), None);
}

#[test]
fn pcr_extend_matches_the_hosts_computation() {
    let sw = Swtpm::start();
    let mut tpm = sw.tpm();
    assert_eq!(tpm.pcr_read(measure::PCR).unwrap(), [0u8; 32]);
    let envelopes: [&[u8]; 2] = [b"stage 1 envelope", b"stage 2 envelope"];
    let mut want = [0u8; 32];
    for e in envelopes {
        let d = measure::measure(&mut tpm, e).unwrap();
        assert_eq!(d, <[u8; 32]>::from(Sha256::digest(e)));
        let mut h = Sha256::new();
        h.update(want);
        h.update(d);
        want = h.finalize().into();
    }
    assert_eq!(tpm.pcr_read(measure::PCR).unwrap(), want);
    // Other PCRs are untouched.
    assert_eq!(tpm.pcr_read(measure::PCR + 1).unwrap(), [0u8; 32]);
}

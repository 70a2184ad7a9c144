//! THE boot state write protocol (docs/FORMATS.md "Boot state"): a new state goes into the
//! copy that does not hold the current one, with the next sequence, and is flushed before
//! anything else happens; a fresh state area is copy 0 with copy 1 cleared, flushed. Every
//! writer of the state — the boot (spending a try), the supervisor and `mark-good`, an
//! install's flip ([`crate::activate`]) — goes through these two functions, so a torn or lost
//! write always leaves the previous state readable.

use stele_verifier::state::{self, BootState};
use stele_verifier::Error;

use crate::Storage;

/// Where a state write failed: writing the copy, or flushing it.
#[derive(Debug, thiserror::Error)]
pub enum StateWriteError {
    #[error("{0}")]
    Write(#[source] Error),
    #[error("flushing it failed: {0}")]
    Flush(#[source] std::io::Error),
}

/// Writes `st` into the copy that is not `*copy` (the one holding the current state), with
/// the next sequence, and flushes. On return `*copy` names the copy now current and
/// `st.sequence` is what is on the device.
pub fn store<D: Storage>(
    dev: &mut D,
    st: &mut BootState,
    copy: &mut usize,
) -> Result<(), StateWriteError> {
    state::store_next(dev, st, copy).map_err(StateWriteError::Write)?;
    dev.sync().map_err(StateWriteError::Flush)
}

/// Writes a fresh state area holding `st` (copy 0; copy 1 cleared) and flushes it.
pub fn initialize<D: Storage>(dev: &mut D, st: &BootState) -> Result<(), StateWriteError> {
    state::initialize(dev, st).map_err(StateWriteError::Write)?;
    dev.sync().map_err(StateWriteError::Flush)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};

    /// A device whose flush fails: the error says it was the flush.
    struct NoFlush(Cursor<Vec<u8>>);
    impl Read for NoFlush {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            self.0.read(b)
        }
    }
    impl Write for NoFlush {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.write(b)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl Seek for NoFlush {
        fn seek(&mut self, p: SeekFrom) -> io::Result<u64> {
            self.0.seek(p)
        }
    }
    impl Storage for NoFlush {
        fn sync(&mut self) -> io::Result<()> {
            Err(io::Error::other("EIO"))
        }
    }

    #[test]
    fn store_writes_the_other_copy_and_flushes() {
        let mut dev = Cursor::new(vec![0u8; 8192]);
        initialize(&mut dev, &BootState::initial(true)).unwrap();
        let (mut st, mut copy) = state::load(&mut dev).unwrap();
        assert_eq!(copy, 0);
        st.rollback_floor = 9;
        store(&mut dev, &mut st, &mut copy).unwrap();
        assert_eq!(copy, 1);
        assert_eq!(state::load(&mut dev).unwrap(), (st, 1));
        let mut bad = NoFlush(dev);
        let e = store(&mut bad, &mut st, &mut copy).unwrap_err();
        assert!(matches!(e, StateWriteError::Flush(_)), "{e}");
    }
}

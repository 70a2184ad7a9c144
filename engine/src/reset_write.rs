//! THE data reset request's writes (docs/FORMATS.md "Data partition reset request"): the
//! request, or its clearing, is one 4096-byte write of its own block on the state
//! partition, flushed; it never touches a state copy or the flight recorder's ring.

use std::io::SeekFrom;

use stele_verifier::data_reset::{self, Request, BLOCK, MIN_LEN, REQUEST_OFFSET};

use crate::Storage;

/// Why a request could not be written.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("the state partition is {0} bytes, the old layout without room for a reset request (it needs {MIN_LEN}: a disk made by this stele's `stele disk create`)")]
    NoRoom(u64),
    #[error("{0}")]
    Io(#[source] std::io::Error),
}

fn write_block<D: Storage>(dev: &mut D, b: &[u8; BLOCK]) -> Result<(), RequestError> {
    let len = dev.seek(SeekFrom::End(0)).map_err(RequestError::Io)?;
    if len < MIN_LEN {
        return Err(RequestError::NoRoom(len));
    }
    dev.seek(SeekFrom::Start(REQUEST_OFFSET))
        .map_err(RequestError::Io)?;
    dev.write_all(b).map_err(RequestError::Io)?;
    dev.sync().map_err(RequestError::Io)
}

/// Writes `r` into the request block of the state partition `dev` and flushes.
pub fn request<D: Storage>(dev: &mut D, r: &Request) -> Result<(), RequestError> {
    write_block(dev, &data_reset::encode(r))
}

/// Writes the request block all zero (no request) and flushes.
pub fn clear<D: Storage>(dev: &mut D) -> Result<(), RequestError> {
    write_block(dev, &[0u8; BLOCK])
}

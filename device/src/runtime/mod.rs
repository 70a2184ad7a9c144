//! The boot's runtime on the device: what PID 1 and every update command share. The boot
//! state device and its write protocol ([`state_file`]), the `/run/stele` contract
//! ([`run_dir`]), the keyring loader ([`keyring`]), the rollback floors ([`rollback`]),
//! partitions as files to read, write, flush and lock ([`open`]), the trusted files of
//! the verified lower layer read inside it ([`verified`]) and the files stele keeps on the
//! data partition opened as data ([`data_file`]).

pub mod data_file;
pub mod flight;
pub mod keyring;
pub mod open;
pub mod rollback;
pub mod run_dir;
pub mod state_file;
pub mod verified;

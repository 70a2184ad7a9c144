//! The boot's runtime on the device: what PID 1 and every update command share. The boot
//! state device and its write protocol ([`state_file`]), the `/run/stele` contract
//! ([`run_dir`]), the keyring loader ([`keyring`]), the rollback floors ([`rollback`]) and
//! partitions as files to read, write, flush and lock ([`storage`]).

pub mod keyring;
pub mod rollback;
pub mod run_dir;
pub mod state_file;
pub mod storage;

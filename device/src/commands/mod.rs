//! The `stele update` commands, each a function of an opened install target: install (a
//! bundle file or stream), status, mark-good, the signed channel's check and apply, and
//! replacing the ESP's stage-1 UKI ([`esp`]), the flight recorder's [`history`] and
//! [`why`], and the reports a fleet collects ([`report`]).

pub mod channel;
pub mod esp;
pub mod history;
pub mod install;
pub mod mark_good;
pub mod report;
pub mod reset;
pub mod status;
pub mod why;

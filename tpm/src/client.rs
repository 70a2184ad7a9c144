//! [`Tpm`]: the commands of [`crate::command`] sent over a [`Transport`], one method each.
//! A TPM that says "retry" (TPM_RC_RETRY, YIELDED, TESTING) is asked again a few times.

use std::time::Duration;

use crate::command::{self as cmd, classify, response_code, Code, Command, NvPublic};
use crate::transport::Transport;
use crate::{Error, Result};

/// How often a busy TPM is asked again, and how long stele waits in between.
const RETRIES: u32 = 20;
const RETRY_WAIT: Duration = Duration::from_millis(50);

/// A TPM behind a transport.
#[derive(Debug)]
pub struct Tpm<T> {
    t: T,
}

impl<T: Transport> Tpm<T> {
    /// The TPM reached through `t`.
    pub fn new(t: T) -> Self {
        Tpm { t }
    }

    /// Sends `command`, again while the TPM answers "retry"; returns the response.
    fn send(&mut self, command: Command, bytes: &[u8]) -> Result<Vec<u8>> {
        let mut tries = 0;
        loop {
            let resp = self.t.transact(bytes)?;
            if classify(response_code(command, &resp)?) != Code::Retry || tries >= RETRIES {
                return Ok(resp);
            }
            tries += 1;
            std::thread::sleep(RETRY_WAIT);
        }
    }

    /// One fixed TPM property (TPM_CAP_TPM_PROPERTIES), e.g. TPM_PT_PERMANENT.
    pub fn property(&mut self, property: u32) -> Result<u32> {
        let resp = self.send(Command::GetCapability, &cmd::build_get_property(property)?)?;
        cmd::parse_get_property(&resp, property)
    }

    /// The public area of NV index `index`; `None` when it is not defined.
    pub fn nv_read_public(&mut self, index: u32) -> Result<Option<NvPublic>> {
        let resp = self.send(Command::NvReadPublic, &cmd::build_nv_read_public(index)?)?;
        cmd::parse_nv_read_public(&resp)
    }

    /// Defines an NV index in the owner hierarchy with the empty owner password; an owner
    /// password is [`Error::OwnerAuth`].
    pub fn nv_define_space(&mut self, public: &NvPublic) -> Result<()> {
        let command = Command::NvDefineSpace;
        let resp = self.send(command, &cmd::build_nv_define_space(public)?)?;
        let rc = response_code(command, &resp)?;
        if classify(rc) == Code::BadAuth {
            return Err(Error::OwnerAuth {
                index: public.index,
                rc,
            });
        }
        cmd::check(command, &resp)
    }

    /// The value of counter index `index`; `None` when it was never incremented.
    pub fn nv_read_counter(&mut self, index: u32) -> Result<Option<u64>> {
        let resp = self.send(Command::NvRead, &cmd::build_nv_read(index, 8)?)?;
        cmd::parse_nv_read_counter(&resp)
    }

    /// Adds 1 to counter index `index` (the first increment sets it to the highest value
    /// any counter on this TPM ever had, plus 1).
    pub fn nv_increment(&mut self, index: u32) -> Result<()> {
        let resp = self.send(Command::NvIncrement, &cmd::build_nv_increment(index)?)?;
        cmd::check(Command::NvIncrement, &resp)
    }

    /// Extends `pcr` of the sha256 bank with `digest`.
    pub fn pcr_extend(&mut self, pcr: u32, digest: &[u8; 32]) -> Result<()> {
        let resp = self.send(Command::PcrExtend, &cmd::build_pcr_extend(pcr, digest)?)?;
        cmd::check(Command::PcrExtend, &resp)
    }

    /// The value of `pcr` in the sha256 bank.
    pub fn pcr_read(&mut self, pcr: u32) -> Result<[u8; 32]> {
        let resp = self.send(Command::PcrRead, &cmd::build_pcr_read(pcr)?)?;
        cmd::parse_pcr_read(&resp)
    }
}

//! The rollback counter: a TPM 2.0 NV counter at [`NV_INDEX`] whose value minus one is the
//! TPM's rollback floor (docs/BOOT.md "With a TPM", docs/FORMATS.md "TPM NV counter").
//!
//! TPM counters only go up, and a counter defined anew starts above the highest value any
//! counter on that TPM ever had: whoever can write the disk, or even talk to the TPM, can
//! raise the floor but never lower it. stele increments a newly defined counter once
//! (the TPM then says where it starts), so on a fresh TPM the floor starts at 0.

use crate::command::{NvPublic, TPM_PT_PERMANENT};
use crate::transport::Transport;
use crate::{Error, Result, Tpm};

/// The counter's NV index: in the TPM owner's range of the TCG handle registry
/// (0x01000000-0x013FFFFF), near its top, away from the low indices tools such as
/// `tpm2_nvdefine` hand out first. "5E1E" reads "stele".
pub const NV_INDEX: u32 = 0x013E_5E1E;

/// TPMA_NV of the counter: a counter (TPM_NT_COUNTER), read and incremented with its own
/// (empty) authorization, not subject to dictionary-attack lockout.
pub const ATTRIBUTES: u32 = NT_COUNTER | AUTHWRITE | AUTHREAD | NO_DA;
const AUTHWRITE: u32 = 0x0000_0004;
const NT_COUNTER: u32 = 0x0000_0010;
const AUTHREAD: u32 = 0x0004_0000;
const NO_DA: u32 = 0x0200_0000;
/// State bits the TPM sets itself (written, locks): not part of the definition.
const STATE_BITS: u32 = 0x2000_0000 | 0x0000_0800 | 0x1000_0000;

/// At most this many increments (one NV write each) per raise: a mark-good whose image is
/// further above the TPM floor is refused ([`Error::TooFarAhead`]).
pub const MAX_RAISE: u64 = 64;

/// How many increments raise the TPM floor `floor` to `index` (0 when it is there
/// already); more than [`MAX_RAISE`] is [`Error::TooFarAhead`]. Pure.
pub fn increments(floor: u64, index: u64) -> Result<u64> {
    let n = index.saturating_sub(floor);
    if n > MAX_RAISE {
        return Err(Error::TooFarAhead {
            index,
            floor,
            max: MAX_RAISE,
        });
    }
    Ok(n)
}

/// The floor a counter value stands for: the value minus one (0 for a counter never
/// incremented). Pure.
pub fn floor_of(value: Option<u64>) -> u64 {
    value.map_or(0, |v| v.saturating_sub(1))
}

/// True when an existing index is stele's counter (the state bits aside). Pure.
pub fn is_ours(p: &NvPublic) -> bool {
    p.attributes & !STATE_BITS == ATTRIBUTES && p.size == 8
}

/// The counter on one TPM.
#[derive(Debug)]
pub struct RollbackCounter<T> {
    tpm: Tpm<T>,
}

/// What [`RollbackCounter::open`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opened {
    /// The counter was there.
    Existing,
    /// It was defined now (the first boot with this TPM).
    Defined,
}

impl<T: Transport> RollbackCounter<T> {
    /// Finds stele's counter on `tpm`, or defines it (owner hierarchy, empty owner
    /// password: an owner password is [`Error::OwnerAuth`], checked before trying); a
    /// counter never incremented is incremented once, so it has a value.
    pub fn open(mut tpm: Tpm<T>) -> Result<(Self, Opened)> {
        let opened = match tpm.nv_read_public(NV_INDEX)? {
            Some(p) if is_ours(&p) => Opened::Existing,
            Some(p) => {
                return Err(Error::NotOurCounter {
                    index: NV_INDEX,
                    attributes: p.attributes,
                    size: p.size,
                    expected: ATTRIBUTES,
                })
            }
            None => {
                // ownerAuthSet: asking with the wrong password would count as a
                // dictionary attack on the owner.
                if tpm.property(TPM_PT_PERMANENT)? & 1 != 0 {
                    return Err(Error::OwnerAuth {
                        index: NV_INDEX,
                        rc: 0,
                    });
                }
                tpm.nv_define_space(&NvPublic {
                    index: NV_INDEX,
                    attributes: ATTRIBUTES,
                    size: 8,
                })?;
                Opened::Defined
            }
        };
        let mut c = RollbackCounter { tpm };
        if c.tpm.nv_read_counter(NV_INDEX)?.is_none() {
            c.tpm.nv_increment(NV_INDEX)?;
        }
        Ok((c, opened))
    }

    /// The TPM's rollback floor: the counter's value minus one.
    pub fn floor(&mut self) -> Result<u64> {
        Ok(floor_of(self.tpm.nv_read_counter(NV_INDEX)?))
    }

    /// Checks that the floor can be raised to `index` ([`increments`]); returns the floor.
    pub fn check_raise(&mut self, index: u64) -> Result<u64> {
        let floor = self.floor()?;
        increments(floor, index)?;
        Ok(floor)
    }

    /// Raises the floor to `index` (never lowers it); returns the floors before and after.
    pub fn raise(&mut self, index: u64) -> Result<(u64, u64)> {
        let before = self.floor()?;
        for _ in 0..increments(before, index)? {
            self.tpm.nv_increment(NV_INDEX)?;
        }
        Ok((before, self.floor()?))
    }

    /// The TPM itself (for [`crate::measure`] on the same device).
    pub fn tpm(&mut self) -> &mut Tpm<T> {
        &mut self.tpm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_is_bounded_and_never_lowers() {
        assert_eq!(increments(0, 1).unwrap(), 1);
        assert_eq!(increments(3, 3).unwrap(), 0);
        assert_eq!(increments(9, 2).unwrap(), 0, "a lower index raises nothing");
        assert_eq!(increments(0, MAX_RAISE).unwrap(), MAX_RAISE);
        let e = increments(1, MAX_RAISE + 2).unwrap_err();
        assert!(matches!(
            e,
            Error::TooFarAhead {
                index: 66,
                floor: 1,
                max: 64
            }
        ));
        assert_eq!(
            stele_verifier::exit::Report::exit(&e),
            stele_verifier::exit::Exit::Refused
        );
        assert!(
            e.to_string()
                .starts_with("rollback_index 66 is 65 above the TPM rollback floor 1"),
            "{e}"
        );
        assert_eq!(increments(u64::MAX - 1, u64::MAX).unwrap(), 1);
    }

    #[test]
    fn floor_is_the_value_minus_one() {
        assert_eq!(floor_of(None), 0);
        assert_eq!(floor_of(Some(1)), 0);
        assert_eq!(floor_of(Some(8)), 7);
    }

    #[test]
    fn only_our_definition_is_ours() {
        let mut p = NvPublic {
            index: NV_INDEX,
            attributes: ATTRIBUTES,
            size: 8,
        };
        assert!(is_ours(&p));
        p.attributes |= 0x2000_0000; // written
        assert!(is_ours(&p));
        assert_eq!(ATTRIBUTES, 0x0204_0014);
        for other in [
            ATTRIBUTES & !NT_COUNTER,
            ATTRIBUTES | 0x2,
            ATTRIBUTES & !NO_DA,
        ] {
            assert!(
                !is_ours(&NvPublic {
                    attributes: other,
                    ..p
                }),
                "{other:#x}"
            );
        }
        assert!(!is_ours(&NvPublic { size: 4, ..p }));
    }
}

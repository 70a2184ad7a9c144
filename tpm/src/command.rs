//! The seven TPM 2.0 commands stele sends, as pure functions: `build_*` returns the command
//! bytes, `parse_*` reads the response (its code first, mapped to [`Error`]). Marshalled
//! with the `tpm2-protocol` crate; no I/O here, so every byte string is unit-tested.

use std::fmt;

use tpm2_protocol::basic::{TpmHandle, TpmUint16, TpmUint32};
use tpm2_protocol::data::{
    Tpm2bAuth, Tpm2bDigest, Tpm2bNonce, Tpm2bNvPublic, TpmAlgId, TpmCap, TpmRc, TpmRcBase, TpmSt,
    TpmaNv, TpmaSession, TpmlDigestValues, TpmlPcrSelection, TpmsAuthCommand, TpmsNvPublic,
    TpmsPcrSelect, TpmsPcrSelection, TpmtHa, TpmuCapabilities, TpmuHa,
};
use tpm2_protocol::frame::{
    tpm_marshal_command, TpmFrame, TpmGetCapabilityCommand, TpmGetCapabilityResponse,
    TpmNvDefineSpaceCommand, TpmNvIncrementCommand, TpmNvReadCommand, TpmNvReadPublicCommand,
    TpmNvReadPublicResponse, TpmNvReadResponse, TpmPcrExtendCommand, TpmPcrReadCommand,
    TpmPcrReadResponse, TpmResponse, TpmUnmarshalBody,
};
use tpm2_protocol::TpmWriter;

use crate::{Error, Result};

/// TPM_RH_OWNER: the owner hierarchy (authorizes NV_DefineSpace).
pub const TPM_RH_OWNER: u32 = 0x4000_0001;
/// TPM_RS_PW: the password session (here always with the empty password).
pub const TPM_RS_PW: u32 = 0x4000_0009;
/// The largest command or response stele exchanges (the TPM's own limit is about 4 KiB).
pub const MAX_MESSAGE: usize = 4096;

/// The commands, as they are named in errors (`TPM2_<name>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    GetCapability,
    NvReadPublic,
    NvDefineSpace,
    NvRead,
    NvIncrement,
    PcrExtend,
    PcrRead,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Command::GetCapability => "GetCapability",
            Command::NvReadPublic => "NV_ReadPublic",
            Command::NvDefineSpace => "NV_DefineSpace",
            Command::NvRead => "NV_Read",
            Command::NvIncrement => "NV_Increment",
            Command::PcrExtend => "PCR_Extend",
            Command::PcrRead => "PCR_Read",
        })
    }
}

/// The public area of an NV index, as stele reads and defines it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NvPublic {
    pub index: u32,
    /// TPMA_NV bits.
    pub attributes: u32,
    pub size: u16,
}

/// What a response code means to stele (the ones it acts on; the rest stay numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    Success,
    /// TPM_RC_HANDLE: the handle (an NV index) does not exist.
    Handle,
    /// TPM_RC_NV_DEFINED: the index already exists.
    NvDefined,
    /// TPM_RC_NV_UNINITIALIZED: a counter never incremented.
    NvUninitialized,
    /// TPM_RC_BAD_AUTH / TPM_RC_AUTH_FAIL: wrong (here: non-empty) authorization.
    BadAuth,
    /// TPM_RC_LOCKOUT: dictionary-attack lockout.
    Lockout,
    /// TPM_RC_RETRY / TPM_RC_YIELDED / TPM_RC_TESTING: busy, try again.
    Retry,
    Other,
}

/// Classifies a raw response code. Pure.
pub fn classify(rc: u32) -> Code {
    let Ok(rc) = TpmRc::try_from(rc) else {
        return Code::Other;
    };
    match rc.base() {
        TpmRcBase::Success => Code::Success,
        TpmRcBase::Handle => Code::Handle,
        TpmRcBase::NvDefined => Code::NvDefined,
        TpmRcBase::NvUninitialized => Code::NvUninitialized,
        TpmRcBase::BadAuth | TpmRcBase::AuthFail => Code::BadAuth,
        TpmRcBase::Lockout => Code::Lockout,
        TpmRcBase::Retry | TpmRcBase::Yielded | TpmRcBase::Testing => Code::Retry,
        _ => Code::Other,
    }
}

/// The response code's TCG name (`TPM_RC_...`) or its number.
pub fn rc_name(rc: u32) -> String {
    match TpmRc::try_from(rc) {
        Ok(r) => r.to_string(),
        Err(_) => format!("{rc:#x}"),
    }
}

fn marshal<C: TpmFrame>(command: Command, c: &C, authorized: bool) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let empty_password = [TpmsAuthCommand {
        session_handle: TpmHandle::new(TPM_RS_PW),
        nonce: Tpm2bNonce::default(),
        session_attributes: TpmaSession::empty(),
        hmac: Tpm2bAuth::default(),
    }];
    let (tag, sessions): (TpmSt, &[TpmsAuthCommand]) = if authorized {
        (TpmSt::Sessions, &empty_password)
    } else {
        (TpmSt::NoSessions, &[])
    };
    let mut w = TpmWriter::new(&mut buf);
    tpm_marshal_command(c, tag, sessions, &mut w).map_err(|why| Error::Marshal { command, why })?;
    let n = w.len();
    buf.truncate(n);
    Ok(buf)
}

/// The response code of a response (the header's third field).
pub fn response_code(command: Command, resp: &[u8]) -> Result<u32> {
    match resp {
        [_, _, _, _, _, _, a, b, c, d, ..] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => Err(Error::Malformed {
            command,
            why: format!("{} bytes, shorter than a response header", resp.len()),
        }),
    }
}

/// The size a response header announces (for reading a response from a stream).
pub fn announced_size(header: &[u8]) -> Option<usize> {
    match header {
        [_, _, a, b, c, d, ..] => usize::try_from(u32::from_be_bytes([*a, *b, *c, *d])).ok(),
        _ => None,
    }
}

/// Checks the response code (anything but success is [`Error::Response`] or a variant the
/// caller maps first through [`classify`]) and unmarshals the body as `R`.
fn unmarshal<R: TpmUnmarshalBody>(command: Command, resp: &[u8]) -> Result<R> {
    check(command, resp)?;
    let malformed = |why: tpm2_protocol::TpmError| Error::Malformed {
        command,
        why: format!("{why:?}"),
    };
    TpmResponse::cast(resp)
        .map_err(malformed)?
        .unmarshal::<R>()
        .map_err(malformed)
}

/// Success, or the error for the response code.
pub fn check(command: Command, resp: &[u8]) -> Result<()> {
    let rc = response_code(command, resp)?;
    match classify(rc) {
        Code::Success => Ok(()),
        Code::Lockout => Err(Error::Lockout { command }),
        _ => Err(Error::Response {
            command,
            rc,
            name: rc_name(rc),
        }),
    }
}

/// TPM2_GetCapability(TPM_CAP_TPM_PROPERTIES, `property`, 1): one fixed property.
pub fn build_get_property(property: u32) -> Result<Vec<u8>> {
    let c = TpmGetCapabilityCommand {
        handles: [],
        cap: TpmCap::TpmProperties,
        property: TpmUint32::from(property),
        property_count: TpmUint32::from(1),
    };
    marshal(Command::GetCapability, &c, false)
}

/// TPM_PT_PERMANENT: the property whose bit 0 (`ownerAuthSet`) says the owner has a
/// password.
pub const TPM_PT_PERMANENT: u32 = 0x200;

/// The value of `property` in a GetCapability(TPM_CAP_TPM_PROPERTIES) response.
pub fn parse_get_property(resp: &[u8], property: u32) -> Result<u32> {
    let command = Command::GetCapability;
    let r: TpmGetCapabilityResponse = unmarshal(command, resp)?;
    let TpmuCapabilities::TpmProperties(props) = r.capability_data.data else {
        return Err(Error::Malformed {
            command,
            why: "not a list of TPM properties".into(),
        });
    };
    props
        .iter()
        .find(|p| p.property.value() == property)
        .map(|p| p.value.value())
        .ok_or(Error::Malformed {
            command,
            why: format!("property {property:#x} missing"),
        })
}

/// TPM2_NV_ReadPublic(`index`).
pub fn build_nv_read_public(index: u32) -> Result<Vec<u8>> {
    let c = TpmNvReadPublicCommand {
        handles: [TpmHandle::new(index)],
    };
    marshal(Command::NvReadPublic, &c, false)
}

/// The index's public area, or `None` when it is not defined (TPM_RC_HANDLE).
pub fn parse_nv_read_public(resp: &[u8]) -> Result<Option<NvPublic>> {
    let command = Command::NvReadPublic;
    if classify(response_code(command, resp)?) == Code::Handle {
        return Ok(None);
    }
    let r: TpmNvReadPublicResponse = unmarshal(command, resp)?;
    let p = r.nv_public.inner;
    Ok(Some(NvPublic {
        index: p.nv_index.value(),
        attributes: p.attributes.bits(),
        size: p.data_size.value(),
    }))
}

/// TPM2_NV_DefineSpace(TPM_RH_OWNER, empty auth, `public` with sha256 names and no
/// policy), authorized by the owner's empty password.
pub fn build_nv_define_space(public: &NvPublic) -> Result<Vec<u8>> {
    let c = TpmNvDefineSpaceCommand {
        handles: [TpmHandle::new(TPM_RH_OWNER)],
        auth: Tpm2bAuth::default(),
        public_info: Tpm2bNvPublic {
            inner: TpmsNvPublic {
                nv_index: TpmHandle::new(public.index),
                name_alg: TpmAlgId::Sha256,
                attributes: TpmaNv::from_bits_truncate(public.attributes),
                auth_policy: Tpm2bDigest::default(),
                data_size: TpmUint16::from(public.size),
            },
        },
    };
    marshal(Command::NvDefineSpace, &c, true)
}

/// TPM2_NV_Read(`index` authorizing itself, `index`, `size` bytes at 0).
pub fn build_nv_read(index: u32, size: u16) -> Result<Vec<u8>> {
    let c = TpmNvReadCommand {
        handles: [TpmHandle::new(index), TpmHandle::new(index)],
        size: TpmUint16::from(size),
        offset: TpmUint16::from(0),
    };
    marshal(Command::NvRead, &c, true)
}

/// A counter's value, or `None` when it was never incremented (TPM_RC_NV_UNINITIALIZED).
pub fn parse_nv_read_counter(resp: &[u8]) -> Result<Option<u64>> {
    let command = Command::NvRead;
    if classify(response_code(command, resp)?) == Code::NvUninitialized {
        return Ok(None);
    }
    let r: TpmNvReadResponse = unmarshal(command, resp)?;
    let data: [u8; 8] = (*r.data).try_into().map_err(|_| Error::Malformed {
        command,
        why: format!("a counter is 8 bytes, the TPM returned {}", r.data.len()),
    })?;
    Ok(Some(u64::from_be_bytes(data)))
}

/// TPM2_NV_Increment(`index` authorizing itself, `index`).
pub fn build_nv_increment(index: u32) -> Result<Vec<u8>> {
    let c = TpmNvIncrementCommand {
        handles: [TpmHandle::new(index), TpmHandle::new(index)],
    };
    marshal(Command::NvIncrement, &c, true)
}

/// TPM2_PCR_Extend(`pcr`, one sha256 digest), authorized by the PCR's empty password.
pub fn build_pcr_extend(pcr: u32, sha256: &[u8; 32]) -> Result<Vec<u8>> {
    let command = Command::PcrExtend;
    let mut digests = TpmlDigestValues::new();
    let digest = tpm2_protocol::basic::TpmBuffer::try_from(&sha256[..])
        .map_err(|why| Error::Marshal { command, why })?;
    digests
        .try_push(TpmtHa {
            hash_alg: TpmAlgId::Sha256,
            digest: TpmuHa::Digest(digest),
        })
        .map_err(|why| Error::Marshal { command, why })?;
    let c = TpmPcrExtendCommand {
        handles: [TpmHandle::new(pcr)],
        digests,
    };
    marshal(command, &c, true)
}

/// The sha256 bank's bit map selecting one PCR (3 bytes: PCRs 0..=23).
fn pcr_selection(pcr: u32) -> Result<TpmlPcrSelection> {
    let command = Command::PcrRead;
    let bad = |why| Error::Marshal { command, why };
    let mut bits = [0u8; 3];
    let byte = usize::try_from(pcr / 8).unwrap_or(usize::MAX);
    let slot = bits.get_mut(byte).ok_or(Error::Malformed {
        command,
        why: format!("PCR {pcr} is not one of 0..=23"),
    })?;
    *slot = 1 << (pcr % 8);
    let mut sel = TpmlPcrSelection::new();
    sel.try_push(TpmsPcrSelection {
        hash: TpmAlgId::Sha256,
        pcr_select: TpmsPcrSelect::try_from(&bits[..]).map_err(bad)?,
    })
    .map_err(bad)?;
    Ok(sel)
}

/// TPM2_PCR_Read of `pcr` in the sha256 bank.
pub fn build_pcr_read(pcr: u32) -> Result<Vec<u8>> {
    let c = TpmPcrReadCommand {
        handles: [],
        pcr_selection_in: pcr_selection(pcr)?,
    };
    marshal(Command::PcrRead, &c, false)
}

/// The one sha256 PCR value of a PCR_Read response.
pub fn parse_pcr_read(resp: &[u8]) -> Result<[u8; 32]> {
    let command = Command::PcrRead;
    let r: TpmPcrReadResponse = unmarshal(command, resp)?;
    let value = r.pcr_values.first().ok_or(Error::Malformed {
        command,
        why: "no PCR value (is the sha256 bank allocated?)".into(),
    })?;
    (**value).try_into().map_err(|_| Error::Malformed {
        command,
        why: format!("a sha256 PCR is 32 bytes, the TPM returned {}", value.len()),
    })
}

#[cfg(test)]
mod tests {
    //! Byte strings captured from swtpm 0.7 (Debian 12) by tests/swtpm.rs's commands.
    use super::*;
    use stele_verifier::hex;

    const INDEX: u32 = 0x013E_5E1E;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    #[test]
    fn nv_read_public_of_a_missing_index_is_none() {
        assert_eq!(
            hex::encode(&build_nv_read_public(INDEX).unwrap()),
            "80010000000e00000169013e5e1e"
        );
        // TPM_RC_HANDLE for handle 1.
        assert_eq!(
            parse_nv_read_public(&h("80010000000a0000018b")).unwrap(),
            None
        );
    }

    #[test]
    fn nv_read_public_reads_the_definition() {
        // After NV_DefineSpace and one NV_Increment: TPMA_NV_WRITTEN is set.
        let resp = h(
            "80010000003e00000000000e013e5e1e000b22040014000000080022000b\
                      946d8078b1d7aeb0322a38a7eb865372c4f1243d85208852b3c5fa4d02a0a018",
        );
        let p = parse_nv_read_public(&resp).unwrap().unwrap();
        assert_eq!(
            p,
            NvPublic {
                index: INDEX,
                attributes: 0x2204_0014,
                size: 8
            }
        );
    }

    #[test]
    fn get_property_reads_one_value() {
        assert_eq!(
            hex::encode(&build_get_property(TPM_PT_PERMANENT).unwrap()),
            "8001000000160000017a000000060000020000000001"
        );
        let resp = h("80010000001b000000000100000006000000010000020000000400");
        assert_eq!(parse_get_property(&resp, TPM_PT_PERMANENT).unwrap(), 0x400);
        assert!(matches!(
            parse_get_property(&resp, 0x201),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn define_space_is_an_owner_counter_with_the_empty_password() {
        let p = NvPublic {
            index: INDEX,
            attributes: 0x0204_0014,
            size: 8,
        };
        assert_eq!(
            hex::encode(&build_nv_define_space(&p).unwrap()),
            "80020000002d0000012a40000001000000094000000900000000000000000e013e5e1e000b0204001400000008"
        );
        check(
            Command::NvDefineSpace,
            &h("80020000001300000000000000000000010000"),
        )
        .unwrap();
    }

    #[test]
    fn counter_reads_and_increments() {
        assert_eq!(
            hex::encode(&build_nv_read(INDEX, 8).unwrap()),
            "8002000000230000014e013e5e1e013e5e1e0000000940000009000000000000080000"
        );
        assert_eq!(
            parse_nv_read_counter(&h("80010000000a0000014a")).unwrap(),
            None,
            "TPM_RC_NV_UNINITIALIZED: never incremented"
        );
        let two = h("80020000001d000000000000000a000800000000000000020000010000");
        assert_eq!(parse_nv_read_counter(&two).unwrap(), Some(2));
        assert_eq!(
            hex::encode(&build_nv_increment(INDEX).unwrap()),
            "80020000001f00000134013e5e1e013e5e1e00000009400000090000000000"
        );
        // A 4-byte value is not a counter.
        let short = h("80020000001900000000000000060004000000020000010000");
        assert!(matches!(
            parse_nv_read_counter(&short),
            Err(Error::Malformed {
                command: Command::NvRead,
                ..
            })
        ));
    }

    #[test]
    fn pcr_extend_and_read() {
        let d: [u8; 32] = h("2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881")
            .try_into()
            .unwrap();
        assert_eq!(
            hex::encode(&build_pcr_extend(13, &d).unwrap()),
            "800200000041000001820000000d0000000940000009000000000000000001000b2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
        );
        assert_eq!(
            hex::encode(&build_pcr_read(13).unwrap()),
            "8001000000140000017e00000001000b03002000"
        );
        let resp = h("80010000003e000000000000001500000001000b030020000000000100207f85193790de75e46b70bfec3614098f47332a6993dabac6e38ad35f47df5da4");
        assert_eq!(
            hex::encode(&parse_pcr_read(&resp).unwrap()),
            "7f85193790de75e46b70bfec3614098f47332a6993dabac6e38ad35f47df5da4"
        );
        assert!(hex::encode(&build_pcr_read(0).unwrap()).ends_with("000b03010000"));
        assert!(build_pcr_read(24).is_err());
    }

    #[test]
    fn response_codes_are_errors_with_names() {
        let e = check(Command::NvIncrement, &h("80010000000a00000148")).unwrap_err();
        assert!(matches!(e, Error::Response { rc: 0x148, .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "TPM2_NV_Increment failed: TPM response code 0x148 (TPM_RC_NV_LOCKED)"
        );
        let e = check(Command::NvRead, &h("80010000000a00000921")).unwrap_err();
        assert!(matches!(e, Error::Lockout { .. }), "{e}");
        assert_eq!(
            classify(0x9a2),
            Code::BadAuth,
            "TPM_RC_BAD_AUTH for session 1"
        );
        assert_eq!(
            classify(0x98e),
            Code::BadAuth,
            "TPM_RC_AUTH_FAIL for session 1"
        );
        assert_eq!(classify(0x922), Code::Retry);
        assert_eq!(classify(0x14c), Code::NvDefined);
        assert_eq!(classify(0xdead_beef), Code::Other);
    }

    #[test]
    fn malformed_responses_never_panic() {
        let good = h("80020000001d000000000000000a000800000000000000020000010000");
        for n in 0..good.len() {
            assert!(parse_nv_read_counter(&good[..n]).is_err(), "prefix {n}");
        }
        let pcr = h("80010000003e000000000000001500000001000b030020000000000100207f85193790de75e46b70bfec3614098f47332a6993dabac6e38ad35f47df5da4");
        for n in 0..pcr.len() {
            assert!(parse_pcr_read(&pcr[..n]).is_err(), "prefix {n}");
        }
        let mut flipped = pcr.clone();
        flipped[20] ^= 0xff;
        let _ = parse_pcr_read(&flipped);
        assert!(matches!(
            response_code(Command::PcrRead, &[0x80, 1]),
            Err(Error::Malformed { .. })
        ));
    }
}

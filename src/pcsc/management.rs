//! Device info over the YubiKey management application (CCID / NFC).
//!
//! SELECT AID `A000000527471117` answers an ASCII version ("5.7.1"); READ
//! CONFIG `00 1D <page> 00` answers `len ‖ TLVs` — the same TLVs as the
//! CTAPHID vendor command 0xC2 (research notes §3.2b, yubikit
//! `management.py`). Tag 0x10 (more data) asks for the next page.

use super::apdu::{self, Command, StatusWord};
use super::transport::{ApduSession, CardChannel, PcscCard};
use super::{LengthMode, PcscError};
use crate::yubikey::DeviceInfo;

/// TLV tag "more data": further pages follow.
pub const TAG_MORE_DATA: u8 = 0x10;
/// A card announcing more pages than this is faulty.
pub const MAX_PAGES: u8 = 16;

/// What the management application told us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagementInfo {
    /// The SELECT answer, e.g. "5.7.1".
    pub version: String,
    /// Every page's TLVs concatenated (tag 0x10 dropped), without length bytes:
    /// the input of the `yubikey` module's device info parser.
    pub tlvs: Vec<u8>,
}

impl ManagementInfo {
    /// The TLVs as a [`DeviceInfo`] (serial, form factor, firmware, ...).
    pub fn parse(&self) -> Result<DeviceInfo, PcscError> {
        DeviceInfo::parse_tlv_bytes(&self.tlvs).map_err(|e| PcscError::DeviceInfo(e.to_string()))
    }

    /// The first value with `tag` (1-byte tags and lengths).
    pub fn tlv(&self, tag: u8) -> Option<&[u8]> {
        tlvs(&self.tlvs)
            .ok()?
            .into_iter()
            .find(|(t, _)| *t == tag)
            .map(|(_, v)| v)
    }
}

/// Splits `len ‖ TLVs`-style TLVs (1-byte tag, 1-byte length) strictly.
pub fn tlvs(bytes: &[u8]) -> Result<Vec<(u8, &[u8])>, PcscError> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let [tag, len, tail @ ..] = rest else {
            return Err(PcscError::DeviceInfo("TLV header cut short".into()));
        };
        let len = usize::from(*len);
        if tail.len() < len {
            return Err(PcscError::DeviceInfo(format!(
                "TLV {tag:#04x} claims {len} bytes, {} left",
                tail.len()
            )));
        }
        out.push((*tag, &tail[..len]));
        rest = &tail[len..];
    }
    Ok(out)
}

/// SELECTs the management application and reads every config page.
pub fn read<C: CardChannel>(session: &mut ApduSession<C>) -> Result<ManagementInfo, PcscError> {
    let version = session.select(apdu::aid::MANAGEMENT, "management")?;
    let version = String::from_utf8_lossy(&version)
        .trim_end_matches('\0')
        .to_owned();
    let mut merged = Vec::new();
    for page in 0..MAX_PAGES {
        let rsp = session.send(&Command::new(0x00, apdu::ins::READ_CONFIG, page, 0x00))?;
        if rsp.sw != StatusWord::SUCCESS {
            return Err(PcscError::Status {
                command: "READ CONFIG",
                sw: rsp.sw,
            });
        }
        let Some((&len, body)) = rsp.data.split_first() else {
            return Err(PcscError::DeviceInfo("empty READ CONFIG answer".into()));
        };
        if usize::from(len) != body.len() {
            return Err(PcscError::DeviceInfo(format!(
                "length byte {len}, {} bytes follow",
                body.len()
            )));
        }
        let mut more = false;
        for (tag, value) in tlvs(body)? {
            if tag == TAG_MORE_DATA {
                more = value.first().is_some_and(|&v| v != 0);
            } else {
                merged.extend_from_slice(&[tag, value.len() as u8]);
                merged.extend_from_slice(value);
            }
        }
        if !more {
            return Ok(ManagementInfo {
                version,
                tlvs: merged,
            });
        }
    }
    Err(PcscError::DeviceInfo(format!(
        "more than {MAX_PAGES} pages"
    )))
}

/// What the management application of the key in `reader` answers.
pub fn device_info(reader: &str) -> Result<ManagementInfo, PcscError> {
    let mut session = ApduSession::new(PcscCard::connect(reader)?, LengthMode::Short);
    read(&mut session)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tlvs_split_strictly() {
        // .NET SDK example (research notes §3.2): serial 0x00B5FE55, form factor 1, fw 5.4.2.
        let body =
            hex::decode("0102023f0302023f020400b5fe5504010105030504 02".replace(' ', "")).unwrap();
        let items = tlvs(&body).unwrap();
        assert_eq!(items[2], (0x02, &[0x00, 0xB5, 0xFE, 0x55][..]));
        assert_eq!(items[4], (0x05, &[5, 4, 2][..]));
        assert!(matches!(
            tlvs(&[0x02, 0x04, 0x00]),
            Err(PcscError::DeviceInfo(_))
        ));
        assert!(matches!(tlvs(&[0x02]), Err(PcscError::DeviceInfo(_))));
    }
}

//! YubiKey device information over the vendor CTAPHID command READ_CONFIG
//! (0x42, wire byte 0xC2; research §3.2): serial, form factor, firmware, NFC,
//! FIPS, PIN complexity. Parse (the station) and encode (the simulator).
//!
//! A page is `len(1) ‖ TLVs(len)`, each TLV `tag(1) len(1) value`. Tag 0x10
//! (MORE_DATA) = 1 asks for the next page; pages are merged, later wins
//! (yubikey-manager `read_device_info`).

use crate::ctaphid::{HidChannel, HidCommand, HidError};
use crate::transport::Transport;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use thiserror::Error;

/// Vendor CTAPHID command: read a device-info page (payload: page number).
pub const READ_CONFIG: HidCommand = HidCommand(0x42);
/// Vendor CTAPHID command: write device configuration.
pub const WRITE_CONFIG: HidCommand = HidCommand(0x43);
/// Pages read at most (real keys use one or two).
pub const MAX_PAGES: u8 = 16;

/// Device-info TLV tags (research §3.2, yubikey-manager `management.py`).
pub mod tag {
    pub const USB_SUPPORTED: u8 = 0x01;
    pub const SERIAL: u8 = 0x02;
    pub const USB_ENABLED: u8 = 0x03;
    pub const FORM_FACTOR: u8 = 0x04;
    pub const FIRMWARE_VERSION: u8 = 0x05;
    pub const AUTO_EJECT_TIMEOUT: u8 = 0x06;
    pub const CHAL_RESP_TIMEOUT: u8 = 0x07;
    pub const DEVICE_FLAGS: u8 = 0x08;
    pub const APP_VERSIONS: u8 = 0x09;
    pub const CONFIG_LOCK: u8 = 0x0a;
    pub const UNLOCK: u8 = 0x0b;
    pub const REBOOT: u8 = 0x0c;
    pub const NFC_SUPPORTED: u8 = 0x0d;
    pub const NFC_ENABLED: u8 = 0x0e;
    pub const IAP_DETECTION: u8 = 0x0f;
    pub const MORE_DATA: u8 = 0x10;
    pub const FREE_FORM: u8 = 0x11;
    pub const HID_INIT_DELAY: u8 = 0x12;
    pub const PART_NUMBER: u8 = 0x13;
    pub const FIPS_CAPABLE: u8 = 0x14;
    pub const FIPS_APPROVED: u8 = 0x15;
    pub const PIN_COMPLEXITY: u8 = 0x16;
    pub const NFC_RESTRICTED: u8 = 0x17;
    pub const RESET_BLOCKED: u8 = 0x18;
    pub const VERSION_QUALIFIER: u8 = 0x19;
    pub const FPS_VERSION: u8 = 0x20;
    pub const STM_VERSION: u8 = 0x21;
}

/// A firmware version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Default)]
pub struct Version {
    pub major: u8,
    pub minor: u8,
    pub patch: u8,
}

impl Version {
    pub const fn new(major: u8, minor: u8, patch: u8) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    fn from_bytes(b: &[u8]) -> Option<Self> {
        match b {
            [major, minor, patch] => Some(Self::new(*major, *minor, *patch)),
            _ => None,
        }
    }

    fn to_bytes(self) -> Vec<u8> {
        vec![self.major, self.minor, self.patch]
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl std::str::FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('.').collect();
        let n = |p: &str| {
            p.parse::<u8>()
                .map_err(|_| format!("invalid version {s:?}"))
        };
        match parts.as_slice() {
            [a, b, c] => Ok(Self::new(n(a)?, n(b)?, n(c)?)),
            _ => Err(format!(
                "invalid version {s:?} (expected MAJOR.MINOR.PATCH)"
            )),
        }
    }
}

/// Form factor: the low nibble of tag 0x04 (research §3.2). Open newtype.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct FormFactor(pub u8);

impl FormFactor {
    pub const UNKNOWN: Self = Self(0);
    pub const USB_A_KEYCHAIN: Self = Self(1);
    pub const USB_A_NANO: Self = Self(2);
    pub const USB_C_KEYCHAIN: Self = Self(3);
    pub const USB_C_NANO: Self = Self(4);
    pub const USB_C_LIGHTNING: Self = Self(5);
    pub const USB_A_BIO: Self = Self(6);
    pub const USB_C_BIO: Self = Self(7);

    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::UNKNOWN => "Unknown",
            Self::USB_A_KEYCHAIN => "Keychain (USB-A)",
            Self::USB_A_NANO => "Nano (USB-A)",
            Self::USB_C_KEYCHAIN => "Keychain (USB-C)",
            Self::USB_C_NANO => "Nano (USB-C)",
            Self::USB_C_LIGHTNING => "Keychain (USB-C, Lightning)",
            Self::USB_A_BIO => "Bio (USB-A)",
            Self::USB_C_BIO => "Bio (USB-C)",
            _ => return None,
        })
    }
}

impl fmt::Display for FormFactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "form factor 0x{:02x}", self.0),
        }
    }
}

impl fmt::Debug for FormFactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FormFactor({self})")
    }
}

/// Application capability bits of tags 0x01/0x03/0x0D/0x0E/0x14/0x15/0x18. Open.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
pub struct Capabilities(pub u16);

impl Capabilities {
    pub const OTP: u16 = 0x01;
    pub const U2F: u16 = 0x02;
    pub const OPENPGP: u16 = 0x08;
    pub const PIV: u16 = 0x10;
    pub const OATH: u16 = 0x20;
    pub const HSMAUTH: u16 = 0x100;
    pub const FIDO2: u16 = 0x200;

    pub fn has(self, bit: u16) -> bool {
        self.0 & bit != 0
    }

    /// Capability names, for `devices info`.
    pub fn names(self) -> Vec<&'static str> {
        [
            (Self::OTP, "OTP"),
            (Self::U2F, "FIDO U2F"),
            (Self::OPENPGP, "OpenPGP"),
            (Self::PIV, "PIV"),
            (Self::OATH, "OATH"),
            (Self::HSMAUTH, "YubiHSM Auth"),
            (Self::FIDO2, "FIDO2"),
        ]
        .into_iter()
        .filter(|(b, _)| self.has(*b))
        .map(|(_, n)| n)
        .collect()
    }

    fn from_bytes(b: &[u8]) -> Option<Self> {
        match b {
            [x] => Some(Self(*x as u16)),
            [h, l] => Some(Self(u16::from_be_bytes([*h, *l]))),
            _ => None,
        }
    }

    /// One byte when it fits (USB tags on YubiKey 4 are one byte), else two.
    fn to_bytes(self) -> Vec<u8> {
        if self.0 <= 0xff {
            vec![self.0 as u8]
        } else {
            self.0.to_be_bytes().to_vec()
        }
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Capabilities(0x{:04x} {:?})", self.0, self.names())
    }
}

/// Tag 0x19: what a pre-release firmware really is (it reports 0.0.1 in 0x05).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VersionQualifier {
    pub version: Version,
    /// 0 alpha, 1 beta, 2 final.
    pub release_type: u8,
    pub iteration: u32,
}

/// Parsed device information. `Default` + public fields let the simulator
/// build one and [`DeviceInfo::encode_page`] it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct DeviceInfo {
    /// 0x02; absent on some Security Key series keys.
    pub serial: Option<u32>,
    /// 0x04 low nibble.
    pub form_factor: FormFactor,
    /// 0x04 bit 0x80.
    pub is_fips_series: bool,
    /// 0x04 bit 0x40 (Security Key series).
    pub is_sky: bool,
    /// 0x05
    pub firmware: Option<Version>,
    /// 0x19
    pub version_qualifier: Option<VersionQualifier>,
    /// 0x01 / 0x03
    pub usb_supported: Option<Capabilities>,
    pub usb_enabled: Option<Capabilities>,
    /// 0x0D / 0x0E: present only on NFC keys.
    pub nfc_supported: Option<Capabilities>,
    pub nfc_enabled: Option<Capabilities>,
    /// 0x06
    pub auto_eject_timeout: Option<u16>,
    /// 0x07
    pub chal_resp_timeout: Option<u8>,
    /// 0x08
    pub device_flags: Option<u8>,
    /// 0x0A
    pub config_locked: Option<bool>,
    /// 0x13
    pub part_number: Option<String>,
    /// 0x14 / 0x15
    pub fips_capable: Option<Capabilities>,
    pub fips_approved: Option<Capabilities>,
    /// 0x16
    pub pin_complexity: Option<bool>,
    /// 0x17
    pub nfc_restricted: Option<bool>,
    /// 0x18
    pub reset_blocked: Option<Capabilities>,
    /// 0x20 / 0x21 (Bio)
    pub fps_version: Option<Version>,
    pub stm_version: Option<Version>,
    /// Every other tag, as received.
    #[serde(skip)]
    pub other: BTreeMap<u8, Vec<u8>>,
}

/// Why device info could not be read.
#[derive(Debug, Error)]
pub enum YubiKeyError {
    #[error("READ_CONFIG failed: {0}")]
    Hid(#[from] HidError),
    #[error("malformed device info: {0}")]
    Malformed(String),
    #[error("device info claims more than {MAX_PAGES} pages")]
    TooManyPages,
}

fn malformed(s: impl Into<String>) -> YubiKeyError {
    YubiKeyError::Malformed(s.into())
}

/// Splits one page (`len ‖ TLVs`) into TLVs; the length byte must match.
pub fn parse_page(page: &[u8]) -> Result<Vec<(u8, Vec<u8>)>, YubiKeyError> {
    let (&len, rest) = page.split_first().ok_or_else(|| malformed("empty page"))?;
    if rest.len() != len as usize {
        return Err(malformed(format!(
            "page length byte says {len}, {} bytes follow",
            rest.len()
        )));
    }
    parse_tlvs(rest)
}

/// Splits concatenated TLVs (no length prefix), e.g. the pages the PC/SC
/// management path has already merged.
pub fn parse_tlvs(mut rest: &[u8]) -> Result<Vec<(u8, Vec<u8>)>, YubiKeyError> {
    let mut out = Vec::new();
    while !rest.is_empty() {
        let [t, l, ..] = rest else {
            return Err(malformed("truncated TLV header"));
        };
        let (t, l) = (*t, *l as usize);
        let value = rest
            .get(2..2 + l)
            .ok_or_else(|| malformed(format!("TLV 0x{t:02x} truncated")))?;
        out.push((t, value.to_vec()));
        rest = &rest[2 + l..];
    }
    Ok(out)
}

fn flag(v: &[u8], what: &str) -> Result<bool, YubiKeyError> {
    match v {
        [b] => Ok(*b != 0),
        _ => Err(malformed(format!("{what} is not one byte"))),
    }
}

impl DeviceInfo {
    /// Builds device info from merged TLVs.
    pub fn from_tlvs(tlvs: &BTreeMap<u8, Vec<u8>>) -> Result<Self, YubiKeyError> {
        let mut info = DeviceInfo::default();
        for (&t, v) in tlvs {
            let caps = |what: &str| {
                Capabilities::from_bytes(v)
                    .ok_or_else(|| malformed(format!("{what} is not 1-2 bytes")))
            };
            let version = |what: &str| {
                Version::from_bytes(v).ok_or_else(|| malformed(format!("{what} is not 3 bytes")))
            };
            match t {
                tag::USB_SUPPORTED => info.usb_supported = Some(caps("USB supported")?),
                tag::USB_ENABLED => info.usb_enabled = Some(caps("USB enabled")?),
                tag::NFC_SUPPORTED => info.nfc_supported = Some(caps("NFC supported")?),
                tag::NFC_ENABLED => info.nfc_enabled = Some(caps("NFC enabled")?),
                tag::FIPS_CAPABLE => info.fips_capable = Some(caps("FIPS capable")?),
                tag::FIPS_APPROVED => info.fips_approved = Some(caps("FIPS approved")?),
                tag::RESET_BLOCKED => info.reset_blocked = Some(caps("reset blocked")?),
                tag::SERIAL => {
                    let b: [u8; 4] = v
                        .as_slice()
                        .try_into()
                        .map_err(|_| malformed("serial is not 4 bytes"))?;
                    info.serial = Some(u32::from_be_bytes(b));
                }
                tag::FORM_FACTOR => {
                    let b = *v
                        .first()
                        .filter(|_| v.len() == 1)
                        .ok_or_else(|| malformed("form factor is not one byte"))?;
                    info.form_factor = FormFactor(b & 0x0f);
                    info.is_fips_series = b & 0x80 != 0;
                    info.is_sky = b & 0x40 != 0;
                }
                tag::FIRMWARE_VERSION => info.firmware = Some(version("firmware version")?),
                tag::FPS_VERSION => info.fps_version = Some(version("FPS version")?),
                tag::STM_VERSION => info.stm_version = Some(version("STM version")?),
                tag::AUTO_EJECT_TIMEOUT => {
                    let b: [u8; 2] = v
                        .as_slice()
                        .try_into()
                        .map_err(|_| malformed("auto-eject timeout is not 2 bytes"))?;
                    info.auto_eject_timeout = Some(u16::from_be_bytes(b));
                }
                tag::CHAL_RESP_TIMEOUT => {
                    info.chal_resp_timeout = Some(
                        *v.first()
                            .ok_or_else(|| malformed("empty chal-resp timeout"))?,
                    )
                }
                tag::DEVICE_FLAGS => {
                    info.device_flags =
                        Some(*v.first().ok_or_else(|| malformed("empty device flags"))?)
                }
                tag::CONFIG_LOCK => info.config_locked = Some(flag(v, "config lock")?),
                tag::PIN_COMPLEXITY => info.pin_complexity = Some(flag(v, "PIN complexity")?),
                tag::NFC_RESTRICTED => info.nfc_restricted = Some(flag(v, "NFC restricted")?),
                tag::PART_NUMBER => {
                    info.part_number = Some(
                        String::from_utf8(v.clone())
                            .map_err(|_| malformed("part number is not UTF-8"))?,
                    )
                }
                tag::VERSION_QUALIFIER => info.version_qualifier = Some(parse_qualifier(v)?),
                tag::MORE_DATA => {}
                _ => {
                    info.other.insert(t, v.clone());
                }
            }
        }
        Ok(info)
    }

    /// Parses one or more pages, merged in order.
    pub fn parse_pages(pages: &[&[u8]]) -> Result<Self, YubiKeyError> {
        let mut merged = BTreeMap::new();
        for p in pages {
            merged.extend(parse_page(p)?);
        }
        Self::from_tlvs(&merged)
    }

    /// Parses concatenated TLVs without a page length byte.
    pub fn parse_tlv_bytes(tlvs: &[u8]) -> Result<Self, YubiKeyError> {
        Self::from_tlvs(&parse_tlvs(tlvs)?.into_iter().collect())
    }

    /// The real firmware version: 0x05, unless a pre-release reports 0.0.1 and
    /// the qualifier (0x19) says what it is (yubikey-manager rule).
    pub fn effective_firmware(&self) -> Option<Version> {
        match (self.firmware, self.version_qualifier) {
            (
                Some(Version {
                    major: 0,
                    minor: 0,
                    patch: 1,
                }),
                Some(q),
            ) => Some(q.version),
            (v, _) => v,
        }
    }

    /// Whether the key has NFC (tag 0x0D present and non-zero).
    pub fn has_nfc(&self) -> bool {
        self.nfc_supported.is_some_and(|c| c.0 != 0)
    }

    /// All TLVs this info encodes to, in tag order (device side).
    pub fn to_tlvs(&self) -> Vec<(u8, Vec<u8>)> {
        let mut t: BTreeMap<u8, Vec<u8>> = self.other.clone();
        let mut put = |k: u8, v: Option<Vec<u8>>| {
            if let Some(v) = v {
                t.insert(k, v);
            }
        };
        put(
            tag::USB_SUPPORTED,
            self.usb_supported.map(Capabilities::to_bytes),
        );
        put(tag::SERIAL, self.serial.map(|s| s.to_be_bytes().to_vec()));
        put(
            tag::USB_ENABLED,
            self.usb_enabled.map(Capabilities::to_bytes),
        );
        let ff = self.form_factor.0 & 0x0f
            | if self.is_fips_series { 0x80 } else { 0 }
            | if self.is_sky { 0x40 } else { 0 };
        put(tag::FORM_FACTOR, Some(vec![ff]));
        put(tag::FIRMWARE_VERSION, self.firmware.map(Version::to_bytes));
        put(
            tag::AUTO_EJECT_TIMEOUT,
            self.auto_eject_timeout.map(|v| v.to_be_bytes().to_vec()),
        );
        put(
            tag::CHAL_RESP_TIMEOUT,
            self.chal_resp_timeout.map(|v| vec![v]),
        );
        put(tag::DEVICE_FLAGS, self.device_flags.map(|v| vec![v]));
        put(tag::CONFIG_LOCK, self.config_locked.map(|v| vec![v as u8]));
        put(
            tag::NFC_SUPPORTED,
            self.nfc_supported.map(|c| c.0.to_be_bytes().to_vec()),
        );
        put(
            tag::NFC_ENABLED,
            self.nfc_enabled.map(|c| c.0.to_be_bytes().to_vec()),
        );
        put(
            tag::PART_NUMBER,
            self.part_number.as_ref().map(|p| p.as_bytes().to_vec()),
        );
        put(
            tag::FIPS_CAPABLE,
            self.fips_capable.map(|c| c.0.to_be_bytes().to_vec()),
        );
        put(
            tag::FIPS_APPROVED,
            self.fips_approved.map(|c| c.0.to_be_bytes().to_vec()),
        );
        put(
            tag::PIN_COMPLEXITY,
            self.pin_complexity.map(|v| vec![v as u8]),
        );
        put(
            tag::NFC_RESTRICTED,
            self.nfc_restricted.map(|v| vec![v as u8]),
        );
        put(
            tag::RESET_BLOCKED,
            self.reset_blocked.map(|c| c.0.to_be_bytes().to_vec()),
        );
        put(
            tag::VERSION_QUALIFIER,
            self.version_qualifier.map(encode_qualifier),
        );
        put(tag::FPS_VERSION, self.fps_version.map(Version::to_bytes));
        put(tag::STM_VERSION, self.stm_version.map(Version::to_bytes));
        t.into_iter().collect()
    }

    /// Splits the TLVs into pages of at most `max_len` TLV bytes (16..=255),
    /// each `len ‖ TLVs`, with MORE_DATA = 1 on every page but the last.
    pub fn encode_pages(&self, max_len: usize) -> Vec<Vec<u8>> {
        let max_len = max_len.clamp(16, 255);
        let budget = max_len - 3; // room for the MORE_DATA TLV
                                  // A value longer than a page can hold is cut (only free-form tags get there).
        let max_value = budget - 2;
        let mut pages: Vec<Vec<u8>> = vec![Vec::new()];
        for (t, v) in self.to_tlvs() {
            let v = &v[..v.len().min(max_value)];
            if pages
                .last()
                .is_some_and(|p| !p.is_empty() && p.len() + 2 + v.len() > budget)
            {
                pages.push(Vec::new());
            }
            let page = pages.last_mut().expect("at least one page");
            page.push(t);
            page.push(v.len() as u8);
            page.extend_from_slice(v);
        }
        let n = pages.len();
        pages
            .into_iter()
            .enumerate()
            .map(|(i, mut p)| {
                if i + 1 < n {
                    p.extend_from_slice(&[tag::MORE_DATA, 1, 1]);
                }
                let mut out = vec![p.len() as u8];
                out.extend(p);
                out
            })
            .collect()
    }

    /// The READ_CONFIG answer for `page` (device side); pages past the end are empty.
    pub fn encode_page(&self, page: u8) -> Vec<u8> {
        self.encode_pages(255)
            .into_iter()
            .nth(page as usize)
            .unwrap_or_else(|| vec![0])
    }
}

fn parse_qualifier(v: &[u8]) -> Result<VersionQualifier, YubiKeyError> {
    let tlvs = parse_page(&[&[v.len() as u8][..], v].concat())?;
    let get = |t: u8| {
        tlvs.iter()
            .find(|(k, _)| *k == t)
            .map(|(_, v)| v.as_slice())
    };
    let version = get(1)
        .and_then(Version::from_bytes)
        .ok_or_else(|| malformed("version qualifier without version"))?;
    let release_type = *get(2)
        .and_then(<[u8]>::first)
        .ok_or_else(|| malformed("version qualifier without type"))?;
    let iteration = match get(3) {
        Some(b) if b.len() <= 4 => b.iter().fold(0u32, |acc, &x| acc << 8 | x as u32),
        Some(_) => return Err(malformed("version qualifier iteration longer than 4 bytes")),
        None => 0,
    };
    Ok(VersionQualifier {
        version,
        release_type,
        iteration,
    })
}

fn encode_qualifier(q: VersionQualifier) -> Vec<u8> {
    let mut v = vec![1, 3];
    v.extend(q.version.to_bytes());
    v.extend([2, 1, q.release_type, 3, 4]);
    v.extend(q.iteration.to_be_bytes());
    v
}

/// Reads every page over CTAPHID (READ_CONFIG with the page number).
/// Keys without the management application answer INVALID_CMD.
pub fn read_device_info<T: Transport>(
    channel: &mut HidChannel<T>,
) -> Result<DeviceInfo, YubiKeyError> {
    let mut pages = Vec::new();
    for page in 0..MAX_PAGES {
        let data = channel.vendor(READ_CONFIG, &[page])?;
        let tlvs = parse_page(&data)?;
        let more = tlvs
            .iter()
            .any(|(t, v)| *t == tag::MORE_DATA && v.as_slice() == [1]);
        pages.push(data);
        if !more {
            let refs: Vec<&[u8]> = pages.iter().map(Vec::as_slice).collect();
            return DeviceInfo::parse_pages(&refs);
        }
    }
    Err(YubiKeyError::TooManyPages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(t: u8, v: &[u8]) -> Result<DeviceInfo, YubiKeyError> {
        DeviceInfo::from_tlvs(&BTreeMap::from([(t, v.to_vec())]))
    }

    #[test]
    fn dotnet_sdk_example_page() {
        // Yubico.NET.SDK docs/users-manual/application-u2f/u2f-commands.md
        // (research §3.2), first 22 TLV bytes with the length byte set to match.
        let page =
            hex::decode("16 0102023f 0302023f 020400b5fe55 040101 0503050402".replace(' ', ""))
                .unwrap();
        let info = DeviceInfo::parse_pages(&[&page]).unwrap();
        assert_eq!(info.serial, Some(11_927_125));
        assert_eq!(info.form_factor, FormFactor::USB_A_KEYCHAIN);
        assert_eq!(info.firmware, Some(Version::new(5, 4, 2)));
        assert_eq!(info.usb_supported.unwrap().0, 0x023f);
        assert!(info.usb_enabled.unwrap().has(Capabilities::FIDO2));
        assert!(!info.has_nfc());
    }

    #[test]
    fn single_tag_cases_from_yubikit_android() {
        // yubikit-android management/src/test/.../DeviceInfoTest.java.
        assert_eq!(
            one(0x02, &[0x07, 0x5b, 0xcd, 0x15]).unwrap().serial,
            Some(123_456_789)
        );
        assert_eq!(
            one(0x05, &[5, 3, 4]).unwrap().firmware,
            Some(Version::new(5, 3, 4))
        );
        for (b, ff) in [(0x01, 1), (0x07, 7), (0x46, 6), (0x84, 4)] {
            assert_eq!(one(0x04, &[b]).unwrap().form_factor, FormFactor(ff));
        }
        let fips_sky = |b| {
            let i = one(0x04, &[b]).unwrap();
            (i.is_fips_series, i.is_sky)
        };
        assert_eq!(fips_sky(0x80), (true, false));
        assert_eq!(fips_sky(0xc0), (true, true));
        assert_eq!(fips_sky(0x40), (false, true));
        assert_eq!(one(0x0a, &[1]).unwrap().config_locked, Some(true));
        assert_eq!(
            one(0x14, &[0, 0x0f]).unwrap().fips_capable,
            Some(Capabilities(15))
        );
        assert_eq!(
            one(0x15, &[0, 0x1f]).unwrap().fips_approved,
            Some(Capabilities(31))
        );
        assert_eq!(one(0x16, &[1]).unwrap().pin_complexity, Some(true));
        assert_eq!(one(0x16, &[0]).unwrap().pin_complexity, Some(false));
        assert_eq!(
            one(0x18, &[0x04, 0x20]).unwrap().reset_blocked,
            Some(Capabilities(1056))
        );
        assert_eq!(
            one(0x20, &[5, 6, 6]).unwrap().fps_version,
            Some(Version::new(5, 6, 6))
        );
        assert_eq!(
            one(0x21, &[7, 0, 5]).unwrap().stm_version,
            Some(Version::new(7, 0, 5))
        );
    }

    fn sample() -> DeviceInfo {
        DeviceInfo {
            serial: Some(31_415_926),
            form_factor: FormFactor::USB_C_KEYCHAIN,
            is_fips_series: true,
            firmware: Some(Version::new(0, 0, 1)),
            version_qualifier: Some(VersionQualifier {
                version: Version::new(5, 7, 4),
                release_type: 1,
                iteration: 3,
            }),
            usb_supported: Some(Capabilities(0x023f)),
            usb_enabled: Some(Capabilities(0x023f)),
            nfc_supported: Some(Capabilities(0x023f)),
            nfc_enabled: Some(Capabilities(0x0002)),
            part_number: Some("YK5CNFC-FIPS".into()),
            pin_complexity: Some(true),
            other: BTreeMap::from([(0x30, vec![1, 2, 3])]),
            ..Default::default()
        }
    }

    #[test]
    fn encode_parse_round_trip_over_one_and_many_pages() {
        let info = sample();
        let pages = info.encode_pages(255);
        assert_eq!(pages.len(), 1);
        assert_eq!(DeviceInfo::parse_pages(&[&pages[0]]).unwrap(), info);
        assert_eq!(info.effective_firmware(), Some(Version::new(5, 7, 4)));
        assert!(info.has_nfc());
        // Force several pages by giving the key a long free-form tag.
        let mut big = sample();
        big.other.insert(0x11, vec![0x41; 200]);
        big.other.insert(0x31, vec![0x42; 120]);
        let pages = big.encode_pages(255);
        assert!(pages.len() >= 2);
        for p in &pages[..pages.len() - 1] {
            assert!(parse_page(p).unwrap().contains(&(tag::MORE_DATA, vec![1])));
        }
        let refs: Vec<&[u8]> = pages.iter().map(Vec::as_slice).collect();
        assert_eq!(DeviceInfo::parse_pages(&refs).unwrap(), big);
        assert_eq!(big.encode_page(99), vec![0]);
    }

    #[test]
    fn malformed_pages_are_typed_errors() {
        for bad in [
            "",
            "05 0201",
            "03 0204",
            "04 02040000",
            "02 0401",
            "03 040201",
            "06 0503050402",
        ] {
            let b = hex::decode(bad.replace(' ', "")).unwrap();
            assert!(DeviceInfo::parse_pages(&[&b]).is_err(), "{bad}");
        }
        assert!(one(0x13, &[0xff]).is_err());
        assert!(one(0x19, &[1, 2, 5]).is_err());
        assert_eq!("5.7.1".parse::<Version>().unwrap(), Version::new(5, 7, 1));
        assert!("5.7".parse::<Version>().is_err());
    }
}

//! CTAPHID packets (CTAP 2.1 §11.2.4): the two frame shapes of a 64-byte
//! report, the wire enums carried in them, and [`fragment`].
//!
//! Pure and direction-neutral: the host stack and the simulator both use it.

use super::FrameError;
use crate::transport::{Report, REPORT_LEN};
use std::fmt;

/// Broadcast channel, used for INIT before a channel is allocated (§11.2.9.1.3).
pub const BROADCAST_CID: u32 = 0xffff_ffff;
/// Reserved channel id; never allocated (§11.2.4).
pub const RESERVED_CID: u32 = 0;
/// Header of an initialization packet: CID(4) CMD(1) BCNTH(1) BCNTL(1).
pub const INIT_HEADER_LEN: usize = 7;
/// Header of a continuation packet: CID(4) SEQ(1).
pub const CONT_HEADER_LEN: usize = 5;
/// Payload bytes in an initialization packet (57).
pub const INIT_DATA_LEN: usize = REPORT_LEN - INIT_HEADER_LEN;
/// Payload bytes in a continuation packet (59).
pub const CONT_DATA_LEN: usize = REPORT_LEN - CONT_HEADER_LEN;
/// Highest continuation sequence number (SEQ is 7 bits).
pub const MAX_SEQ: u8 = 0x7f;
/// Largest message one init and 128 continuation packets can carry: 57 + 128×59 = 7609.
pub const MAX_MESSAGE_LEN: usize = INIT_DATA_LEN + (MAX_SEQ as usize + 1) * CONT_DATA_LEN;

/// Bit 7 of byte 4 marks an initialization packet.
const INIT_BIT: u8 = 0x80;

/// A CTAPHID command, stored as its 7-bit code (the wire byte is `0x80 | code`).
///
/// Open: vendor commands (0x40..=0x7F) and unknown codes survive as numbers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HidCommand(pub u8);

impl HidCommand {
    /// §11.2.9.1.4: echo.
    pub const PING: Self = Self(0x01);
    /// §11.2.9.1.1: a CTAP1/U2F APDU.
    pub const MSG: Self = Self(0x03);
    /// §11.2.9.2.2: exclusive channel lock.
    pub const LOCK: Self = Self(0x04);
    /// §11.2.9.1.3: channel allocation / resynchronisation.
    pub const INIT: Self = Self(0x06);
    /// §11.2.9.2.1: blink the LED.
    pub const WINK: Self = Self(0x08);
    /// §11.2.9.1.2: a CTAP2 CBOR request / response.
    pub const CBOR: Self = Self(0x10);
    /// §11.2.9.1.5: cancel the pending CBOR request on this channel (no reply of its own).
    pub const CANCEL: Self = Self(0x11);
    /// §11.2.9.1.7: authenticator → host, "still working" (1 status byte).
    pub const KEEPALIVE: Self = Self(0x3b);
    /// §11.2.9.1.6: authenticator → host, one [`HidErrorCode`] byte.
    pub const ERROR: Self = Self(0x3f);
    /// First vendor-specific command (§11.2.9.3).
    pub const VENDOR_FIRST: Self = Self(0x40);
    /// Last vendor-specific command.
    pub const VENDOR_LAST: Self = Self(0x7f);

    /// The byte in an initialization packet.
    pub fn wire(self) -> u8 {
        INIT_BIT | (self.0 & 0x7f)
    }

    /// Whether this is in the vendor range 0x40..=0x7F.
    pub fn is_vendor(self) -> bool {
        (Self::VENDOR_FIRST.0..=Self::VENDOR_LAST.0).contains(&self.0)
    }

    /// The spec name, if this is a standard command.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::PING => "PING",
            Self::MSG => "MSG",
            Self::LOCK => "LOCK",
            Self::INIT => "INIT",
            Self::WINK => "WINK",
            Self::CBOR => "CBOR",
            Self::CANCEL => "CANCEL",
            Self::KEEPALIVE => "KEEPALIVE",
            Self::ERROR => "ERROR",
            _ => return None,
        })
    }
}

impl fmt::Debug for HidCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for HidCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}"),
            None if self.is_vendor() => write!(f, "VENDOR(0x{:02x})", self.0),
            None => write!(f, "0x{:02x}", self.0),
        }
    }
}

/// Payload byte of a CTAPHID ERROR frame (§11.2.9.1.6). Open newtype.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct HidErrorCode(pub u8);

impl HidErrorCode {
    pub const INVALID_CMD: Self = Self(0x01);
    pub const INVALID_PAR: Self = Self(0x02);
    pub const INVALID_LEN: Self = Self(0x03);
    pub const INVALID_SEQ: Self = Self(0x04);
    pub const MSG_TIMEOUT: Self = Self(0x05);
    pub const CHANNEL_BUSY: Self = Self(0x06);
    pub const LOCK_REQUIRED: Self = Self(0x0a);
    pub const INVALID_CHANNEL: Self = Self(0x0b);
    pub const OTHER: Self = Self(0x7f);

    /// The spec name, if known.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::INVALID_CMD => "INVALID_CMD",
            Self::INVALID_PAR => "INVALID_PAR",
            Self::INVALID_LEN => "INVALID_LEN",
            Self::INVALID_SEQ => "INVALID_SEQ",
            Self::MSG_TIMEOUT => "MSG_TIMEOUT",
            Self::CHANNEL_BUSY => "CHANNEL_BUSY",
            Self::LOCK_REQUIRED => "LOCK_REQUIRED",
            Self::INVALID_CHANNEL => "INVALID_CHANNEL",
            Self::OTHER => "OTHER",
            _ => return None,
        })
    }
}

impl fmt::Debug for HidErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for HidErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n} (0x{:02x})", self.0),
            None => write!(f, "unknown CTAPHID error 0x{:02x}", self.0),
        }
    }
}

/// Status byte of a KEEPALIVE frame (§11.2.9.1.7). Open newtype.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeepaliveStatus(pub u8);

impl KeepaliveStatus {
    /// The authenticator is still processing.
    pub const PROCESSING: Self = Self(1);
    /// The authenticator waits for user presence (a touch).
    pub const UPNEEDED: Self = Self(2);

    pub fn name(self) -> Option<&'static str> {
        match self {
            Self::PROCESSING => Some("PROCESSING"),
            Self::UPNEEDED => Some("UPNEEDED"),
            _ => None,
        }
    }
}

impl fmt::Debug for KeepaliveStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for KeepaliveStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "KEEPALIVE(0x{:02x})", self.0),
        }
    }
}

/// One decoded report: an initialization or a continuation packet (§11.2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// Starts a message: command and total payload length, first ≤ 57 bytes.
    Init {
        cid: u32,
        cmd: HidCommand,
        /// BCNT: the length of the whole message payload.
        len: u16,
        /// All 57 data bytes of the report (including padding).
        data: &'a [u8],
    },
    /// Carries the next ≤ 59 bytes of the message on `cid`.
    Cont {
        cid: u32,
        seq: u8,
        /// All 59 data bytes of the report (including padding).
        data: &'a [u8],
    },
}

impl<'a> Packet<'a> {
    /// Reads the header of a report. Every 64-byte pattern is some packet; the
    /// [`super::Assembler`] decides whether it makes sense.
    pub fn parse(report: &'a Report) -> Self {
        let cid = u32::from_be_bytes([report[0], report[1], report[2], report[3]]);
        if report[4] & INIT_BIT != 0 {
            Packet::Init {
                cid,
                cmd: HidCommand(report[4] & 0x7f),
                len: u16::from_be_bytes([report[5], report[6]]),
                data: &report[INIT_HEADER_LEN..],
            }
        } else {
            Packet::Cont {
                cid,
                seq: report[4],
                data: &report[CONT_HEADER_LEN..],
            }
        }
    }

    /// The channel the packet is on.
    pub fn cid(&self) -> u32 {
        match self {
            Packet::Init { cid, .. } | Packet::Cont { cid, .. } => *cid,
        }
    }
}

/// Splits a message into reports: one init packet and as many continuation
/// packets as needed, zero-padded (§11.2.4). `max_payload` is the peer's limit
/// (never more than [`MAX_MESSAGE_LEN`]).
pub fn fragment(
    cid: u32,
    cmd: HidCommand,
    payload: &[u8],
    max_payload: usize,
) -> Result<Vec<Report>, FrameError> {
    let limit = max_payload.min(MAX_MESSAGE_LEN);
    if payload.len() > limit {
        return Err(FrameError::TooLong {
            len: payload.len(),
            max: limit,
        });
    }
    let cid_bytes = cid.to_be_bytes();
    let first_len = payload.len().min(INIT_DATA_LEN);
    let mut reports = Vec::with_capacity(
        1 + payload
            .len()
            .saturating_sub(first_len)
            .div_ceil(CONT_DATA_LEN),
    );
    let mut init = [0u8; REPORT_LEN];
    init[..4].copy_from_slice(&cid_bytes);
    init[4] = cmd.wire();
    init[5..7].copy_from_slice(&(payload.len() as u16).to_be_bytes());
    init[INIT_HEADER_LEN..INIT_HEADER_LEN + first_len].copy_from_slice(&payload[..first_len]);
    reports.push(init);
    for (seq, chunk) in payload[first_len..].chunks(CONT_DATA_LEN).enumerate() {
        let mut cont = [0u8; REPORT_LEN];
        cont[..4].copy_from_slice(&cid_bytes);
        // seq < 128 because payload.len() <= MAX_MESSAGE_LEN.
        cont[4] = seq as u8;
        cont[CONT_HEADER_LEN..CONT_HEADER_LEN + chunk.len()].copy_from_slice(chunk);
        reports.push(cont);
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_info_is_one_report() {
        // Research §5b: getInfo on CID 2133e1b9 → `21 33 e1 b9 90 00 01 04` + 56 zeros.
        let reports = fragment(0x2133_e1b9, HidCommand::CBOR, &[0x04], 7609).unwrap();
        assert_eq!(reports.len(), 1);
        assert_eq!(hex::encode(&reports[0][..8]), "2133e1b990000104");
        assert!(reports[0][8..].iter().all(|&b| b == 0));
    }

    #[test]
    fn hundred_bytes_take_two_reports() {
        // Research §5b: init `CID 90 00 64` + 57 bytes, then `CID 00` + 43 bytes.
        let payload: Vec<u8> = (0..100).collect();
        let r = fragment(1, HidCommand::CBOR, &payload, 7609).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(&r[0][..7], &[0, 0, 0, 1, 0x90, 0x00, 0x64]);
        assert_eq!(&r[0][7..], &payload[..57]);
        assert_eq!(&r[1][..5], &[0, 0, 0, 1, 0x00]);
        assert_eq!(&r[1][5..5 + 43], &payload[57..]);
        assert!(r[1][48..].iter().all(|&b| b == 0));
    }

    #[test]
    fn limits() {
        assert_eq!(MAX_MESSAGE_LEN, 7609);
        let full = vec![0xaa; MAX_MESSAGE_LEN];
        let r = fragment(7, HidCommand::MSG, &full, usize::MAX).unwrap();
        assert_eq!(r.len(), 129);
        assert_eq!(r[128][4], 0x7f);
        assert_eq!(
            fragment(7, HidCommand::MSG, &[0; 7610], usize::MAX).unwrap_err(),
            FrameError::TooLong {
                len: 7610,
                max: 7609
            }
        );
        assert!(fragment(7, HidCommand::MSG, &[0; 1025], 1024).is_err());
        let empty = fragment(7, HidCommand::WINK, &[], 0).unwrap();
        assert_eq!(empty.len(), 1);
        assert_eq!(empty[0][4], 0x88);
    }

    #[test]
    fn parse_reads_both_shapes() {
        let r = fragment(0xdead_beef, HidCommand(0x42), &[0; 60], 7609).unwrap();
        match Packet::parse(&r[0]) {
            Packet::Init {
                cid,
                cmd,
                len,
                data,
            } => {
                assert_eq!(
                    (cid, cmd, len, data.len()),
                    (0xdead_beef, HidCommand(0x42), 60, 57)
                )
            }
            p => panic!("{p:?}"),
        }
        assert_eq!(
            Packet::parse(&r[1]),
            Packet::Cont {
                cid: 0xdead_beef,
                seq: 0,
                data: &r[1][5..]
            }
        );
    }

    #[test]
    fn names() {
        assert_eq!(HidCommand::CBOR.wire(), 0x90);
        assert_eq!(HidCommand(0x42).to_string(), "VENDOR(0x42)");
        assert_eq!(HidCommand(0x20).to_string(), "0x20");
        assert_eq!(HidErrorCode(6).to_string(), "CHANNEL_BUSY (0x06)");
        assert_eq!(HidErrorCode(0x33).to_string(), "unknown CTAPHID error 0x33");
        assert_eq!(KeepaliveStatus(2).to_string(), "UPNEEDED");
        assert_eq!(KeepaliveStatus(9).to_string(), "KEEPALIVE(0x09)");
    }
}

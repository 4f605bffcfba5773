//! ISO/IEC 7816-4 APDUs: a pure codec shared by the host ([`super::transport`])
//! and the virtual card ([`super::vcard`]).
//!
//! Command APDU (ISO 7816-4 §5.1): `CLA INS P1 P2 [Lc data] [Le]`, where Lc/Le
//! are either short (1 byte each, Le `00` = 256) or extended (`00 Lc1 Lc2`, and
//! a 2-byte Le, `00 00` = 65536; with no data Le is `00 Le1 Le2`).
//! Response APDU: `data SW1 SW2`. Long commands go as a chain of short APDUs
//! with CLA bit 0x10 on all but the last (§5.1.1.1); long responses come in
//! pieces announced by SW `61xx` and fetched with GET RESPONSE (INS 0xC0).

use std::fmt;
use thiserror::Error;

/// Short APDUs carry at most 255 bytes of command data.
pub const SHORT_MAX_LC: usize = 255;
/// A short Le of `00` asks for up to 256 bytes.
pub const SHORT_MAX_LE: usize = 256;
/// Extended APDUs carry at most 65 535 bytes of command data.
pub const EXTENDED_MAX_LC: usize = 65_535;
/// An extended Le of `00 00` asks for up to 65 536 bytes.
pub const EXTENDED_MAX_LE: usize = 65_536;

/// ISO 7816-4 §5.4.1: CLA bit announcing "more commands of this chain follow".
pub const CLA_CHAINING: u8 = 0x10;

/// Instruction bytes this crate sends or answers.
pub mod ins {
    /// SELECT (ISO 7816-4 §11.1.1); P1 0x04 = by DF name (AID).
    pub const SELECT: u8 = 0xA4;
    /// GET RESPONSE (ISO 7816-4 §11.4.1), after SW 61xx.
    pub const GET_RESPONSE: u8 = 0xC0;
    /// NFCCTAP_MSG (CTAP 2.1 §11.3.9.2), CLA 0x80.
    pub const NFCCTAP_MSG: u8 = 0x10;
    /// NFCCTAP_GETRESPONSE (CTAP 2.1 §11.3.9.2), CLA 0x80, after SW 9100.
    pub const NFCCTAP_GETRESPONSE: u8 = 0x11;
    /// Yubico management application READ CONFIG (yubikit `management.py`).
    pub const READ_CONFIG: u8 = 0x1D;
}

/// Application identifiers (SELECT by name).
pub mod aid {
    /// FIDO applet (CTAP 2.1 §11.3.4).
    pub const FIDO: &[u8] = &[0xA0, 0x00, 0x00, 0x06, 0x47, 0x2F, 0x00, 0x01];
    /// Yubico management application.
    pub const MANAGEMENT: &[u8] = &[0xA0, 0x00, 0x00, 0x05, 0x27, 0x47, 0x11, 0x17];
}

/// A status word from a card: open, so unknown values survive for logs.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusWord(pub u16);

impl StatusWord {
    pub const SUCCESS: Self = Self(0x9000);
    /// CTAP 2.1 §11.3.9.2: still processing; data = one keepalive status byte.
    pub const FIDO_STATUS_UPDATE: Self = Self(0x9100);
    pub const WARNING_NO_INFO: Self = Self(0x6200);
    pub const WRONG_LENGTH: Self = Self(0x6700);
    pub const LAST_COMMAND_EXPECTED: Self = Self(0x6883);
    pub const CHAINING_NOT_SUPPORTED: Self = Self(0x6884);
    pub const SECURITY_STATUS_NOT_SATISFIED: Self = Self(0x6982);
    pub const CONDITIONS_NOT_SATISFIED: Self = Self(0x6985);
    pub const WRONG_DATA: Self = Self(0x6A80);
    pub const FILE_NOT_FOUND: Self = Self(0x6A82);
    pub const INCORRECT_P1P2: Self = Self(0x6A86);
    pub const INS_NOT_SUPPORTED: Self = Self(0x6D00);
    pub const CLA_NOT_SUPPORTED: Self = Self(0x6E00);
    pub const NO_PRECISE_DIAGNOSIS: Self = Self(0x6F00);

    pub fn from_bytes(sw1: u8, sw2: u8) -> Self {
        Self(u16::from_be_bytes([sw1, sw2]))
    }
    pub fn sw1(self) -> u8 {
        (self.0 >> 8) as u8
    }
    pub fn sw2(self) -> u8 {
        self.0 as u8
    }
    pub fn to_bytes(self) -> [u8; 2] {
        self.0.to_be_bytes()
    }
    pub fn is_success(self) -> bool {
        self == Self::SUCCESS
    }
    /// `61xx`: that many more bytes wait for GET RESPONSE (`xx` = 0 means 256 or more).
    pub fn bytes_remaining(self) -> Option<usize> {
        (self.sw1() == 0x61).then(|| match self.sw2() {
            0 => SHORT_MAX_LE,
            n => usize::from(n),
        })
    }
    /// `6Cxx`: wrong Le; resend with Le = `xx` (0 means 256).
    pub fn exact_length(self) -> Option<usize> {
        (self.sw1() == 0x6C).then(|| match self.sw2() {
            0 => SHORT_MAX_LE,
            n => usize::from(n),
        })
    }
    /// `61xx` announcing `remaining` more bytes.
    pub fn more_data(remaining: usize) -> Self {
        Self(
            0x6100
                | if remaining >= SHORT_MAX_LE {
                    0
                } else {
                    remaining as u16
                },
        )
    }
    fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::SUCCESS => "success",
            Self::FIDO_STATUS_UPDATE => "FIDO status update",
            Self::WARNING_NO_INFO => "warning",
            Self::WRONG_LENGTH => "wrong length",
            Self::LAST_COMMAND_EXPECTED => "last command of chain expected",
            Self::CHAINING_NOT_SUPPORTED => "command chaining not supported",
            Self::SECURITY_STATUS_NOT_SATISFIED => "security status not satisfied",
            Self::CONDITIONS_NOT_SATISFIED => "conditions of use not satisfied",
            Self::WRONG_DATA => "wrong data",
            Self::FILE_NOT_FOUND => "application not found",
            Self::INCORRECT_P1P2 => "incorrect P1/P2",
            Self::INS_NOT_SUPPORTED => "instruction not supported",
            Self::CLA_NOT_SUPPORTED => "class not supported",
            Self::NO_PRECISE_DIAGNOSIS => "no precise diagnosis",
            _ if self.sw1() == 0x61 => "more data available",
            _ if self.sw1() == 0x6C => "wrong Le",
            _ => return None,
        })
    }
}

impl fmt::Debug for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SW {:04X}", self.0)?;
        if let Some(name) = self.name() {
            write!(f, " ({name})")?;
        }
        Ok(())
    }
}

impl fmt::Display for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// How Lc and Le are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthMode {
    /// One byte each; long data must be chained (works with every reader).
    Short,
    /// Three-byte Lc and two- or three-byte Le (needs reader and card support).
    Extended,
}

/// Why bytes are not a well-formed APDU, or a command cannot be encoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ApduError {
    #[error("command APDU shorter than its 4-byte header")]
    TooShort,
    #[error("response APDU of {0} bytes has no status word")]
    NoStatusWord(usize),
    #[error("Lc/Le encoding is inconsistent with the APDU's {0} bytes")]
    BadLength(usize),
    #[error("{len} bytes of data do not fit a {mode:?} APDU")]
    DataTooLong { len: usize, mode: LengthMode },
    #[error("Le {0} is out of range")]
    LeOutOfRange(usize),
}

/// A command APDU. `le` is the number of response bytes asked for (`None`: none).
#[derive(Clone, PartialEq, Eq)]
pub struct Command {
    pub cla: u8,
    pub ins: u8,
    pub p1: u8,
    pub p2: u8,
    pub data: Vec<u8>,
    pub le: Option<usize>,
}

impl fmt::Debug for Command {
    // Length only: command data may carry encrypted PINs; headers identify the command.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Command({:02X} {:02X} {:02X} {:02X}, {} bytes, le {:?})",
            self.cla,
            self.ins,
            self.p1,
            self.p2,
            self.data.len(),
            self.le
        )
    }
}

impl Command {
    pub fn new(cla: u8, ins: u8, p1: u8, p2: u8) -> Self {
        Self {
            cla,
            ins,
            p1,
            p2,
            data: Vec::new(),
            le: None,
        }
    }
    pub fn with_data(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.data = data.into();
        self
    }
    pub fn with_le(mut self, le: usize) -> Self {
        self.le = Some(le);
        self
    }

    /// SELECT by AID, asking for the full answer.
    pub fn select(aid: &[u8]) -> Self {
        Self::new(0x00, ins::SELECT, 0x04, 0x00)
            .with_data(aid)
            .with_le(SHORT_MAX_LE)
    }

    /// GET RESPONSE for up to `le` bytes.
    pub fn get_response(le: usize) -> Self {
        Self::new(0x00, ins::GET_RESPONSE, 0x00, 0x00).with_le(le)
    }

    /// Whether CLA announces that more commands of this chain follow.
    pub fn is_chained(&self) -> bool {
        // Only interindustry classes (CLA 0x0X/0x1X ... and 0x8X/0x9X proprietary
        // that follow the same coding) carry the chaining bit; both CTAP and
        // ISO commands used here do.
        self.cla & CLA_CHAINING != 0
    }

    /// Encodes the command (ISO 7816-4 §5.1).
    pub fn encode(&self, mode: LengthMode) -> Result<Vec<u8>, ApduError> {
        let (max_lc, max_le) = match mode {
            LengthMode::Short => (SHORT_MAX_LC, SHORT_MAX_LE),
            LengthMode::Extended => (EXTENDED_MAX_LC, EXTENDED_MAX_LE),
        };
        if self.data.len() > max_lc {
            return Err(ApduError::DataTooLong {
                len: self.data.len(),
                mode,
            });
        }
        if let Some(le) = self.le {
            if le == 0 || le > max_le {
                return Err(ApduError::LeOutOfRange(le));
            }
        }
        let mut out = Vec::with_capacity(self.data.len() + 9);
        out.extend_from_slice(&[self.cla, self.ins, self.p1, self.p2]);
        match mode {
            LengthMode::Short => {
                if !self.data.is_empty() {
                    out.push(self.data.len() as u8);
                    out.extend_from_slice(&self.data);
                }
                if let Some(le) = self.le {
                    // 256 wraps to 0x00 by design (§5.1).
                    out.push(le as u8);
                }
            }
            LengthMode::Extended => {
                if !self.data.is_empty() {
                    out.push(0);
                    out.extend_from_slice(&(self.data.len() as u16).to_be_bytes());
                    out.extend_from_slice(&self.data);
                }
                if let Some(le) = self.le {
                    if self.data.is_empty() {
                        out.push(0);
                    }
                    // 65 536 wraps to 00 00 by design.
                    out.extend_from_slice(&(le as u16).to_be_bytes());
                }
            }
        }
        Ok(out)
    }

    /// Decodes any of the four cases, short or extended (ISO 7816-4 §5.1 table 1).
    pub fn decode(bytes: &[u8]) -> Result<Self, ApduError> {
        if bytes.len() < 4 {
            return Err(ApduError::TooShort);
        }
        let mut cmd = Self::new(bytes[0], bytes[1], bytes[2], bytes[3]);
        let body = &bytes[4..];
        let bad = || ApduError::BadLength(bytes.len());
        let short_le = |b: u8| if b == 0 { SHORT_MAX_LE } else { usize::from(b) };
        let ext_le = |hi: u8, lo: u8| match u16::from_be_bytes([hi, lo]) {
            0 => EXTENDED_MAX_LE,
            n => usize::from(n),
        };
        match body.len() {
            0 => {}                                // case 1
            1 => cmd.le = Some(short_le(body[0])), // case 2S
            _ if body[0] != 0 => {
                // case 3S / 4S
                let lc = usize::from(body[0]);
                match body.len() - 1 {
                    n if n == lc => cmd.data = body[1..].to_vec(),
                    n if n == lc + 1 => {
                        cmd.data = body[1..=lc].to_vec();
                        cmd.le = Some(short_le(body[lc + 1]));
                    }
                    _ => return Err(bad()),
                }
            }
            3 => cmd.le = Some(ext_le(body[1], body[2])), // case 2E
            n if n >= 4 => {
                // case 3E / 4E
                let lc = usize::from(u16::from_be_bytes([body[1], body[2]]));
                if lc == 0 {
                    return Err(bad());
                }
                match n - 3 {
                    m if m == lc => cmd.data = body[3..].to_vec(),
                    m if m == lc + 2 => {
                        cmd.data = body[3..3 + lc].to_vec();
                        cmd.le = Some(ext_le(body[3 + lc], body[4 + lc]));
                    }
                    _ => return Err(bad()),
                }
            }
            _ => return Err(bad()),
        }
        Ok(cmd)
    }

    /// Splits this command into a chain of commands whose data is at most
    /// `chunk` bytes (ISO 7816-4 §5.1.1.1): all but the last carry
    /// [`CLA_CHAINING`] and no Le; the last keeps this command's Le.
    pub fn chain(&self, chunk: usize) -> Vec<Command> {
        let chunk = chunk.max(1);
        if self.data.len() <= chunk {
            return vec![self.clone()];
        }
        let pieces: Vec<&[u8]> = self.data.chunks(chunk).collect();
        let last = pieces.len() - 1;
        pieces
            .into_iter()
            .enumerate()
            .map(|(i, piece)| Command {
                cla: if i < last {
                    self.cla | CLA_CHAINING
                } else {
                    self.cla
                },
                ins: self.ins,
                p1: self.p1,
                p2: self.p2,
                data: piece.to_vec(),
                le: if i < last { None } else { self.le },
            })
            .collect()
    }
}

/// A response APDU.
#[derive(Clone, PartialEq, Eq)]
pub struct Response {
    pub data: Vec<u8>,
    pub sw: StatusWord,
}

impl fmt::Debug for Response {
    // Length only: response data may carry encrypted PIN tokens.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Response({} bytes, {})", self.data.len(), self.sw)
    }
}

impl Response {
    pub fn new(data: impl Into<Vec<u8>>, sw: StatusWord) -> Self {
        Self {
            data: data.into(),
            sw,
        }
    }
    pub fn status(sw: StatusWord) -> Self {
        Self {
            data: Vec::new(),
            sw,
        }
    }
    pub fn parse(bytes: &[u8]) -> Result<Self, ApduError> {
        match bytes.len() {
            n if n < 2 => Err(ApduError::NoStatusWord(n)),
            n => Ok(Self {
                data: bytes[..n - 2].to_vec(),
                sw: StatusWord::from_bytes(bytes[n - 2], bytes[n - 1]),
            }),
        }
    }
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + 2);
        out.extend_from_slice(&self.data);
        out.extend_from_slice(&self.sw.to_bytes());
        out
    }
}

/// Card side: collects a chain of commands into one (ISO 7816-4 §5.1.1.1).
/// Bounded so a host cannot make the card buffer without limit.
#[derive(Debug, Default)]
pub struct ChainAssembler {
    pending: Option<Command>,
    limit: usize,
}

/// What the assembler made of one command.
#[derive(Debug, PartialEq, Eq)]
pub enum Chained {
    /// More links expected: answer `9000`.
    Partial,
    /// The whole command.
    Complete(Command),
}

impl ChainAssembler {
    pub fn new(limit: usize) -> Self {
        Self {
            pending: None,
            limit,
        }
    }

    /// Feeds one received command. A link with another INS, or data beyond the
    /// limit, is refused with the status word to answer.
    pub fn push(&mut self, cmd: Command) -> Result<Chained, StatusWord> {
        let more = cmd.is_chained();
        let cmd_cla = cmd.cla & !CLA_CHAINING;
        let merged = match self.pending.take() {
            None => Command {
                cla: cmd_cla,
                ..cmd
            },
            Some(mut head) => {
                if head.ins != cmd.ins || head.cla != cmd_cla {
                    return Err(StatusWord::LAST_COMMAND_EXPECTED);
                }
                head.data.extend_from_slice(&cmd.data);
                head.le = cmd.le;
                head
            }
        };
        if merged.data.len() > self.limit {
            return Err(StatusWord::WRONG_LENGTH);
        }
        if more {
            self.pending = Some(merged);
            Ok(Chained::Partial)
        } else {
            Ok(Chained::Complete(merged))
        }
    }

    /// Forgets a half-received chain (card reset, SELECT).
    pub fn reset(&mut self) {
        self.pending = None;
    }
}

/// Card side: hands out a long response in `61xx` pieces for GET RESPONSE.
#[derive(Debug, Default)]
pub struct ResponseQueue {
    rest: Vec<u8>,
    sw: Option<StatusWord>,
}

impl ResponseQueue {
    /// Answers with at most `le` bytes of `response` now and queues the rest.
    pub fn start(&mut self, response: Response, le: usize) -> Response {
        self.rest = response.data;
        self.sw = Some(response.sw);
        self.next(le)
    }

    /// The next piece (GET RESPONSE); `6985` if nothing is queued.
    pub fn next(&mut self, le: usize) -> Response {
        let Some(final_sw) = self.sw else {
            return Response::status(StatusWord::CONDITIONS_NOT_SATISFIED);
        };
        let take = le.min(self.rest.len());
        let piece: Vec<u8> = self.rest.drain(..take).collect();
        if self.rest.is_empty() {
            self.sw = None;
            Response::new(piece, final_sw)
        } else {
            Response::new(piece, StatusWord::more_data(self.rest.len()))
        }
    }

    pub fn clear(&mut self) {
        self.rest.clear();
        self.sw = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    #[test]
    fn select_fido_encodes_as_in_ctap_spec() {
        // CTAP 2.1 §11.3.4: 00 A4 04 00 08 A0000006472F0001 00
        let apdu = Command::select(aid::FIDO)
            .encode(LengthMode::Short)
            .unwrap();
        assert_eq!(apdu, h("00A4040008A0000006472F000100"));
        // yubikit management SELECT
        let apdu = Command::select(aid::MANAGEMENT)
            .encode(LengthMode::Short)
            .unwrap();
        assert_eq!(apdu, h("00A4040008A00000052747111700"));
    }

    #[test]
    fn four_cases_short_and_extended_round_trip() {
        let cases = [
            Command::new(0x80, 0x11, 0, 0),
            Command::new(0x00, 0xC0, 0, 0).with_le(256),
            Command::new(0x00, 0xC0, 0, 0).with_le(17),
            Command::new(0x80, 0x10, 0x80, 0).with_data(vec![4]),
            Command::new(0x80, 0x10, 0x80, 0)
                .with_data(vec![1; 255])
                .with_le(256),
        ];
        for cmd in cases {
            for mode in [LengthMode::Short, LengthMode::Extended] {
                let bytes = cmd.encode(mode).unwrap();
                assert_eq!(
                    Command::decode(&bytes).unwrap(),
                    cmd,
                    "{mode:?} {}",
                    hex::encode(&bytes)
                );
            }
        }
        let big = Command::new(0x80, 0x10, 0x80, 0)
            .with_data(vec![7; 1000])
            .with_le(65_536);
        let bytes = big.encode(LengthMode::Extended).unwrap();
        assert_eq!(&bytes[..7], &h("80108000 0003E8")[..]);
        assert_eq!(&bytes[bytes.len() - 2..], &[0, 0]);
        assert_eq!(Command::decode(&bytes).unwrap(), big);
        assert_eq!(
            big.encode(LengthMode::Short),
            Err(ApduError::DataTooLong {
                len: 1000,
                mode: LengthMode::Short
            })
        );
    }

    #[test]
    fn extended_le_without_data_has_leading_zero() {
        let cmd = Command::new(0, 0xC0, 0, 0).with_le(65_536);
        assert_eq!(
            cmd.encode(LengthMode::Extended).unwrap(),
            h("00C00000 000000")
        );
        let cmd = Command::new(0, 0xC0, 0, 0).with_le(300);
        assert_eq!(
            cmd.encode(LengthMode::Extended).unwrap(),
            h("00C00000 00012C")
        );
    }

    #[test]
    fn malformed_commands_are_typed_errors() {
        assert_eq!(Command::decode(&h("00A404")), Err(ApduError::TooShort));
        // Lc says 5, 3 bytes follow.
        assert_eq!(
            Command::decode(&h("00A40400 05 010203")),
            Err(ApduError::BadLength(8))
        );
        // extended Lc of zero
        assert_eq!(
            Command::decode(&h("00A40400 000000 01")),
            Err(ApduError::BadLength(8))
        );
        assert_eq!(
            Command::decode(&h("00A40400 00 01")),
            Err(ApduError::BadLength(6))
        );
        assert!(matches!(
            Command::new(0, 0, 0, 0)
                .with_le(0)
                .encode(LengthMode::Short),
            Err(ApduError::LeOutOfRange(0))
        ));
    }

    #[test]
    fn chaining_splits_and_reassembles() {
        let cmd = Command::new(0x80, 0x10, 0x80, 0)
            .with_data((0..=255u8).cycle().take(600).collect::<Vec<_>>())
            .with_le(256);
        let links = cmd.chain(255);
        assert_eq!(links.len(), 3);
        assert_eq!(links[0].cla, 0x90);
        assert_eq!(links[1].cla, 0x90);
        assert_eq!(links[2].cla, 0x80);
        assert_eq!(links[0].le, None);
        assert_eq!(links[2].le, Some(256));
        assert_eq!(links[2].data.len(), 90);

        let mut asm = ChainAssembler::new(4096);
        assert_eq!(asm.push(links[0].clone()), Ok(Chained::Partial));
        assert_eq!(asm.push(links[1].clone()), Ok(Chained::Partial));
        assert_eq!(asm.push(links[2].clone()), Ok(Chained::Complete(cmd)));
    }

    #[test]
    fn chain_assembler_refuses_mixed_and_oversized_chains() {
        let mut asm = ChainAssembler::new(300);
        let link = Command::new(0x90, 0x10, 0, 0).with_data(vec![0; 200]);
        assert_eq!(asm.push(link.clone()), Ok(Chained::Partial));
        assert_eq!(
            asm.push(Command::new(0x00, 0xA4, 4, 0).with_data(vec![1])),
            Err(StatusWord::LAST_COMMAND_EXPECTED)
        );
        assert_eq!(asm.push(link.clone()), Ok(Chained::Partial));
        assert_eq!(asm.push(link), Err(StatusWord::WRONG_LENGTH));
    }

    #[test]
    fn response_queue_hands_out_61xx_pieces() {
        let mut q = ResponseQueue::default();
        let data: Vec<u8> = (0..600u32).map(|i| i as u8).collect();
        let first = q.start(Response::new(data.clone(), StatusWord::SUCCESS), 256);
        assert_eq!(first.sw, StatusWord(0x6100)); // 344 left: "256 or more"
        assert_eq!(first.sw.bytes_remaining(), Some(256));
        let second = q.next(256);
        assert_eq!(second.sw, StatusWord(0x6158));
        assert_eq!(second.sw.bytes_remaining(), Some(0x58));
        let third = q.next(0x58);
        assert_eq!(third.sw, StatusWord::SUCCESS);
        let all: Vec<u8> = [first.data, second.data, third.data].concat();
        assert_eq!(all, data);
        assert_eq!(q.next(256).sw, StatusWord::CONDITIONS_NOT_SATISFIED);
    }

    #[test]
    fn responses_parse_and_status_words_are_open() {
        let r = Response::parse(&h("5532 9000")).unwrap();
        assert_eq!(r.data, h("5532"));
        assert!(r.sw.is_success());
        assert_eq!(Response::parse(&h("90")), Err(ApduError::NoStatusWord(1)));
        let odd = StatusWord(0x1234);
        assert_eq!(format!("{odd}"), "SW 1234");
        assert_eq!(
            format!("{}", StatusWord::FIDO_STATUS_UPDATE),
            "SW 9100 (FIDO status update)"
        );
        assert_eq!(StatusWord(0x6C10).exact_length(), Some(16));
        assert_eq!(
            Response::new(vec![1], StatusWord(0x6A82)).to_bytes(),
            h("01 6A82")
        );
    }
}

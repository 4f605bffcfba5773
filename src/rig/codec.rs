//! The rig controller line protocol (SPEC §9) as a pure codec: no I/O.
//!
//! ASCII lines terminated by `\n`, one request → one reply. Where SPEC §9 is
//! silent this module decides (and `docs/operator.md` records):
//! - slots are numbered from 0 on the wire; bit `n` of `PRESENT?` is slot `n`
//!   (so at most [`MAX_SLOTS`] slots);
//! - `<ms>` is decimal, 1..=[`MAX_TOUCH_MS`];
//! - `<code>` of `ERR` is a decimal number (open: [`ErrCode`]), the text is
//!   the rest of the line;
//! - `CAPS -` is an empty capability list; unknown capability names are kept,
//!   not refused, so a newer rig still works;
//! - a single `\r` before the `\n` is tolerated (many microcontroller
//!   firmwares end lines with CRLF); any other control or non-ASCII byte is
//!   garbage.

use std::fmt;
use std::time::Duration;

use thiserror::Error;

/// Longest line either side may send, without the terminator. Bounds memory
/// and lets the reader resynchronise after garbage (drain to the next `\n`).
pub const MAX_LINE: usize = 128;
/// Slots addressable by the `PRESENT?` bitmask (a u64).
pub const MAX_SLOTS: u8 = 64;
/// Longest press a `TOUCH` may ask for: a YubiKey needs well under a second.
pub const MAX_TOUCH_MS: u32 = 10_000;
/// Longest rig name in `HELLO` replies.
pub const MAX_NAME: usize = 32;

/// The slot lamp (`LED <slot> …`), a closed set: our own decision of what
/// the operator should see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lamp {
    Off,
    Busy,
    Pass,
    Fail,
    Attn,
}

impl Lamp {
    pub const ALL: [Lamp; 5] = [Lamp::Off, Lamp::Busy, Lamp::Pass, Lamp::Fail, Lamp::Attn];

    pub fn as_str(self) -> &'static str {
        match self {
            Lamp::Off => "OFF",
            Lamp::Busy => "BUSY",
            Lamp::Pass => "PASS",
            Lamp::Fail => "FAIL",
            Lamp::Attn => "ATTN",
        }
    }

    fn parse(s: &str) -> Option<Lamp> {
        Lamp::ALL.into_iter().find(|l| l.as_str() == s)
    }
}

impl fmt::Display for Lamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of slots, bit `n` = slot `n` (the `PRESENT?` reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct SlotMask(pub u64);

impl SlotMask {
    pub fn contains(self, slot: u8) -> bool {
        slot < MAX_SLOTS && self.0 & (1u64 << slot) != 0
    }

    pub fn with(self, slot: u8) -> SlotMask {
        if slot < MAX_SLOTS {
            SlotMask(self.0 | (1u64 << slot))
        } else {
            self
        }
    }

    /// The slots in the set, lowest first.
    pub fn slots(self) -> impl Iterator<Item = u8> {
        (0..MAX_SLOTS).filter(move |s| self.contains(*s))
    }
}

/// What a rig can do (`HELLO` → `CAPS`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Capabilities {
    pub touch: bool,
    pub power: bool,
    pub led: bool,
    /// Capability names this version does not know, kept verbatim.
    pub other: Vec<String>,
}

impl Capabilities {
    pub fn all() -> Self {
        Capabilities {
            touch: true,
            power: true,
            led: true,
            other: Vec::new(),
        }
    }

    pub fn none() -> Self {
        Capabilities::default()
    }

    fn encode(&self) -> String {
        let mut names: Vec<&str> = Vec::new();
        if self.touch {
            names.push("touch");
        }
        if self.power {
            names.push("power");
        }
        if self.led {
            names.push("led");
        }
        names.extend(self.other.iter().map(String::as_str));
        if names.is_empty() {
            "-".to_owned()
        } else {
            names.join(",")
        }
    }

    fn parse(s: &str) -> Result<Self, CodecError> {
        let mut caps = Capabilities::none();
        if s == "-" {
            return Ok(caps);
        }
        for name in s.split(',') {
            match name {
                "touch" => caps.touch = true,
                "power" => caps.power = true,
                "led" => caps.led = true,
                other if is_token(other) => caps.other.push(other.to_owned()),
                _ => return Err(CodecError::BadField("CAPS")),
            }
        }
        Ok(caps)
    }
}

/// Identity of a rig (`HELLO` reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RigInfo {
    pub name: String,
    pub slots: u8,
    pub caps: Capabilities,
}

/// A request from the station to the rig (SPEC §9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Hello,
    Touch { slot: u8, ms: u32 },
    Power { slot: u8, on: bool },
    Led { slot: u8, lamp: Lamp },
    Present,
}

/// Which request a reply answers; used to check a reply fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Hello,
    Touch,
    Power,
    Led,
    Present,
}

impl fmt::Display for RequestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RequestKind::Hello => "HELLO",
            RequestKind::Touch => "TOUCH",
            RequestKind::Power => "POWER",
            RequestKind::Led => "LED",
            RequestKind::Present => "PRESENT?",
        })
    }
}

impl Request {
    /// A `TOUCH` for a duration, refused if out of range.
    pub fn touch(slot: u8, press: Duration) -> Result<Request, CodecError> {
        let ms = u32::try_from(press.as_millis()).unwrap_or(u32::MAX);
        check_slot(slot)?;
        if ms == 0 || ms > MAX_TOUCH_MS {
            return Err(CodecError::OutOfRange("ms"));
        }
        Ok(Request::Touch { slot, ms })
    }

    pub fn kind(&self) -> RequestKind {
        match self {
            Request::Hello => RequestKind::Hello,
            Request::Touch { .. } => RequestKind::Touch,
            Request::Power { .. } => RequestKind::Power,
            Request::Led { .. } => RequestKind::Led,
            Request::Present => RequestKind::Present,
        }
    }

    /// The line to send, with its `\n`.
    pub fn encode(&self) -> String {
        match self {
            Request::Hello => "HELLO\n".to_owned(),
            Request::Touch { slot, ms } => format!("TOUCH {slot} {ms}\n"),
            Request::Power { slot, on } => {
                format!("POWER {slot} {}\n", if *on { "ON" } else { "OFF" })
            }
            Request::Led { slot, lamp } => format!("LED {slot} {lamp}\n"),
            Request::Present => "PRESENT?\n".to_owned(),
        }
    }

    /// Parses one line (without its terminator), as the rig does.
    pub fn parse(line: &[u8]) -> Result<Request, CodecError> {
        let line = check_line(line)?;
        let mut words = line.split(' ');
        let verb = words.next().unwrap_or_default();
        let args: Vec<&str> = words.collect();
        let req = match (verb, args.as_slice()) {
            ("HELLO", []) => Request::Hello,
            ("PRESENT?", []) => Request::Present,
            ("TOUCH", [slot, ms]) => {
                let slot = parse_slot(slot)?;
                let ms = parse_dec(ms, "ms")?;
                if ms == 0 || ms > MAX_TOUCH_MS {
                    return Err(CodecError::OutOfRange("ms"));
                }
                Request::Touch { slot, ms }
            }
            ("POWER", [slot, state]) => {
                let slot = parse_slot(slot)?;
                let on = match *state {
                    "ON" => true,
                    "OFF" => false,
                    _ => return Err(CodecError::BadField("power state")),
                };
                Request::Power { slot, on }
            }
            ("LED", [slot, lamp]) => {
                let slot = parse_slot(slot)?;
                let lamp = Lamp::parse(lamp).ok_or(CodecError::BadField("lamp"))?;
                Request::Led { slot, lamp }
            }
            ("HELLO" | "PRESENT?" | "TOUCH" | "POWER" | "LED", _) => {
                return Err(CodecError::BadArity(verb_name(verb)))
            }
            _ => return Err(CodecError::UnknownVerb),
        };
        Ok(req)
    }
}

fn verb_name(verb: &str) -> &'static str {
    match verb {
        "HELLO" => "HELLO",
        "PRESENT?" => "PRESENT?",
        "TOUCH" => "TOUCH",
        "POWER" => "POWER",
        _ => "LED",
    }
}

/// An `ERR` code: an open wire value (a rig may send codes we do not know).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrCode(pub u16);

impl ErrCode {
    /// The verb is not one the rig knows.
    pub const UNKNOWN_COMMAND: ErrCode = ErrCode(1);
    /// Wrong number or form of arguments.
    pub const BAD_ARGUMENT: ErrCode = ErrCode(2);
    /// The slot does not exist on this rig.
    pub const BAD_SLOT: ErrCode = ErrCode(3);
    /// The rig lacks that capability (e.g. no touch actuator).
    pub const NOT_SUPPORTED: ErrCode = ErrCode(4);
    /// The rig's hardware failed to act.
    pub const HARDWARE: ErrCode = ErrCode(5);
}

impl fmt::Display for ErrCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A reply from the rig (SPEC §9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `OK RIG <name> SLOTS <n> CAPS <caps>`
    Hello(RigInfo),
    /// `OK`
    Ok,
    /// `OK <hex>`
    Present(SlotMask),
    /// `ERR <code> <text>`
    Err { code: ErrCode, text: String },
}

impl Reply {
    /// The line to send, with its `\n`.
    pub fn encode(&self) -> String {
        match self {
            Reply::Hello(info) => format!(
                "OK RIG {} SLOTS {} CAPS {}\n",
                info.name,
                info.slots,
                info.caps.encode()
            ),
            Reply::Ok => "OK\n".to_owned(),
            Reply::Present(mask) => format!("OK {:x}\n", mask.0),
            Reply::Err { code, text } => {
                // Keep whatever the text is on one printable line that fits.
                let prefix = format!("ERR {code}");
                let text: String = text
                    .chars()
                    .map(|c| if c.is_ascii_graphic() { c } else { ' ' })
                    .take(MAX_LINE - prefix.len() - 1)
                    .collect();
                let text = text.trim();
                if text.is_empty() {
                    format!("{prefix}\n")
                } else {
                    format!("{prefix} {text}\n")
                }
            }
        }
    }

    /// Parses one line (without its terminator), context free: the three
    /// `OK` forms are distinguishable (`RIG` is not hex).
    pub fn parse(line: &[u8]) -> Result<Reply, CodecError> {
        let line = check_line(line)?;
        if line == "OK" {
            return Ok(Reply::Ok);
        }
        if let Some(rest) = line.strip_prefix("ERR ") {
            let (code, text) = rest.split_once(' ').unwrap_or((rest, ""));
            let code = parse_dec(code, "ERR code")?;
            let code = u16::try_from(code).map_err(|_| CodecError::OutOfRange("ERR code"))?;
            return Ok(Reply::Err {
                code: ErrCode(code),
                text: text.trim().to_owned(),
            });
        }
        let Some(rest) = line.strip_prefix("OK ") else {
            return Err(CodecError::UnknownVerb);
        };
        let words: Vec<&str> = rest.split(' ').collect();
        match words.as_slice() {
            ["RIG", name, "SLOTS", n, "CAPS", caps] => {
                if name.len() > MAX_NAME || !is_token(name) {
                    return Err(CodecError::BadField("rig name"));
                }
                let n = parse_dec(n, "SLOTS")?;
                if n == 0 || n > u32::from(MAX_SLOTS) {
                    return Err(CodecError::OutOfRange("SLOTS"));
                }
                Ok(Reply::Hello(RigInfo {
                    name: (*name).to_owned(),
                    slots: n as u8,
                    caps: Capabilities::parse(caps)?,
                }))
            }
            [hex] => {
                if hex.is_empty() || hex.len() > 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(CodecError::BadField("bitmask"));
                }
                let mask =
                    u64::from_str_radix(hex, 16).map_err(|_| CodecError::BadField("bitmask"))?;
                Ok(Reply::Present(SlotMask(mask)))
            }
            _ => Err(CodecError::BadField("OK reply")),
        }
    }

    /// Checks this reply answers `kind`. An `ERR` fits every request (the
    /// caller turns it into its own error).
    pub fn fits(self, kind: RequestKind) -> Result<Reply, CodecError> {
        let fits = matches!(
            (&self, kind),
            (Reply::Err { .. }, _)
                | (Reply::Hello(_), RequestKind::Hello)
                | (Reply::Present(_), RequestKind::Present)
                | (
                    Reply::Ok,
                    RequestKind::Touch | RequestKind::Power | RequestKind::Led
                )
        );
        if fits {
            Ok(self)
        } else {
            Err(CodecError::WrongReply(kind))
        }
    }
}

/// Why a line is not a valid request or reply. Carries no line content:
/// a garbled line may be anything, so only its shape is reported.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CodecError {
    #[error("line longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("empty line")]
    Empty,
    #[error("line holds a control or non-ASCII byte (garbage on the wire)")]
    Garbage,
    #[error("unknown verb")]
    UnknownVerb,
    #[error("wrong number of arguments for {0}")]
    BadArity(&'static str),
    #[error("malformed {0}")]
    BadField(&'static str),
    #[error("{0} out of range")]
    OutOfRange(&'static str),
    #[error("reply does not answer {0}")]
    WrongReply(RequestKind),
}

/// Splits a byte stream into lines, bounded: a line longer than [`MAX_LINE`]
/// is reported once as [`Frame::TooLong`] and the rest of it is drained up to
/// the next `\n` (resynchronisation), so garbage can never grow memory or
/// desynchronise the following lines.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
    discarding: bool,
}

/// One unit out of a [`LineSplitter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete line, without its `\n`.
    Line(Vec<u8>),
    /// A line that exceeded [`MAX_LINE`] (its bytes were dropped).
    TooLong,
}

impl LineSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the frames they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Frame> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                if self.discarding {
                    self.discarding = false;
                } else {
                    out.push(Frame::Line(std::mem::take(&mut self.buf)));
                }
                continue;
            }
            if self.discarding {
                continue;
            }
            // MAX_LINE + 1 bytes kept: room for the `\r` of a CRLF ending.
            if self.buf.len() > MAX_LINE {
                self.buf.clear();
                self.discarding = true;
                out.push(Frame::TooLong);
                continue;
            }
            self.buf.push(b);
        }
        out
    }

    /// Drops any partial line (after a timeout or reconnect).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.discarding = false;
    }
}

fn check_line(line: &[u8]) -> Result<&str, CodecError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_LINE {
        return Err(CodecError::TooLong);
    }
    if line.is_empty() {
        return Err(CodecError::Empty);
    }
    if !line.iter().all(|b| (0x20..0x7f).contains(b)) {
        return Err(CodecError::Garbage);
    }
    // Checked printable ASCII above, so this cannot fail; map anyway.
    std::str::from_utf8(line).map_err(|_| CodecError::Garbage)
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Decimal without sign or leading zeros (except "0"), at most 9 digits.
fn parse_dec(s: &str, field: &'static str) -> Result<u32, CodecError> {
    let ok = !s.is_empty()
        && s.len() <= 9
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    if !ok {
        return Err(CodecError::BadField(field));
    }
    s.parse().map_err(|_| CodecError::BadField(field))
}

fn check_slot(slot: u8) -> Result<u8, CodecError> {
    if slot >= MAX_SLOTS {
        Err(CodecError::OutOfRange("slot"))
    } else {
        Ok(slot)
    }
}

fn parse_slot(s: &str) -> Result<u8, CodecError> {
    let n = parse_dec(s, "slot")?;
    let n = u8::try_from(n).map_err(|_| CodecError::OutOfRange("slot"))?;
    check_slot(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(s: &str) -> &[u8] {
        s.strip_suffix('\n').unwrap().as_bytes()
    }

    #[test]
    fn requests_round_trip() {
        let reqs = [
            Request::Hello,
            Request::Present,
            Request::Touch { slot: 3, ms: 250 },
            Request::Power { slot: 0, on: true },
            Request::Power {
                slot: 63,
                on: false,
            },
            Request::Led {
                slot: 7,
                lamp: Lamp::Attn,
            },
        ];
        for r in reqs {
            let line = r.encode();
            assert!(line.ends_with('\n'));
            assert_eq!(Request::parse(strip(&line)).unwrap(), r, "{line:?}");
        }
        assert_eq!(
            Request::Touch { slot: 3, ms: 250 }.encode(),
            "TOUCH 3 250\n"
        );
        assert_eq!(Request::Present.encode(), "PRESENT?\n");
        assert_eq!(
            Request::Led {
                slot: 1,
                lamp: Lamp::Pass
            }
            .encode(),
            "LED 1 PASS\n"
        );
    }

    #[test]
    fn replies_round_trip() {
        let replies = [
            Reply::Ok,
            Reply::Present(SlotMask(0)),
            Reply::Present(SlotMask(0x8000_0000_0000_0005)),
            Reply::Hello(RigInfo {
                name: "line1-rig3".into(),
                slots: 8,
                caps: Capabilities::all(),
            }),
            Reply::Hello(RigInfo {
                name: "bare".into(),
                slots: 1,
                caps: Capabilities::none(),
            }),
            Reply::Err {
                code: ErrCode::BAD_SLOT,
                text: "no slot 9".into(),
            },
        ];
        for r in replies {
            let line = r.encode();
            assert_eq!(Reply::parse(strip(&line)).unwrap(), r, "{line:?}");
        }
        assert_eq!(
            Reply::parse(b"OK RIG r SLOTS 4 CAPS touch,power,led").unwrap(),
            Reply::Hello(RigInfo {
                name: "r".into(),
                slots: 4,
                caps: Capabilities::all()
            })
        );
        assert_eq!(
            Reply::parse(b"OK 1F").unwrap(),
            Reply::Present(SlotMask(0x1f))
        );
        assert_eq!(Reply::parse(b"OK\r").unwrap(), Reply::Ok);
    }

    #[test]
    fn unknown_caps_are_kept() {
        let r = Reply::parse(b"OK RIG r SLOTS 2 CAPS led,vibrate").unwrap();
        let Reply::Hello(info) = r else { panic!() };
        assert!(info.caps.led && !info.caps.touch && !info.caps.power);
        assert_eq!(info.caps.other, vec!["vibrate".to_owned()]);
    }

    #[test]
    fn strict_requests() {
        use CodecError::*;
        let cases: &[(&[u8], CodecError)] = &[
            (b"", Empty),
            (b"hello", UnknownVerb),
            (b"HELLO ", BadArity("HELLO")),
            (b"HELLO x", BadArity("HELLO")),
            (b"TOUCH 1", BadArity("TOUCH")),
            (b"TOUCH 1  200", BadArity("TOUCH")),
            (b"TOUCH 64 200", OutOfRange("slot")),
            (b"TOUCH 256 200", OutOfRange("slot")),
            (b"TOUCH 01 200", BadField("slot")),
            (b"TOUCH -1 200", BadField("slot")),
            (b"TOUCH 1 0", OutOfRange("ms")),
            (b"TOUCH 1 10001", OutOfRange("ms")),
            (b"TOUCH 1 9999999999", BadField("ms")),
            (b"POWER 1 on", BadField("power state")),
            (b"LED 1 GREEN", BadField("lamp")),
            (b"LED 1\tPASS", Garbage),
            (b"PRESENT?\x00", Garbage),
            (b"\xff\xfe", Garbage),
        ];
        for (line, want) in cases {
            assert_eq!(Request::parse(line).unwrap_err(), *want, "{line:?}");
        }
        let long = vec![b'A'; MAX_LINE + 1];
        assert_eq!(Request::parse(&long).unwrap_err(), TooLong);
    }

    #[test]
    fn strict_replies() {
        use CodecError::*;
        let cases: &[(&[u8], CodecError)] = &[
            (b"ok", UnknownVerb),
            (b"OK ", BadField("bitmask")),
            (b"OK 0x5", BadField("bitmask")),
            (b"OK 12345678901234567", BadField("bitmask")),
            (b"OK RIG r SLOTS 0 CAPS led", OutOfRange("SLOTS")),
            (b"OK RIG r SLOTS 65 CAPS led", OutOfRange("SLOTS")),
            (b"OK RIG r/x SLOTS 2 CAPS led", BadField("rig name")),
            (b"OK RIG r SLOTS 2 CAPS led,,power", BadField("CAPS")),
            (b"OK RIG r SLOTS 2", BadField("OK reply")),
            (b"ERR x nope", BadField("ERR code")),
            (b"ERR 70000 nope", OutOfRange("ERR code")),
            (b"OK\r\r", Garbage),
        ];
        for (line, want) in cases {
            assert_eq!(Reply::parse(line).unwrap_err(), *want, "{line:?}");
        }
    }

    #[test]
    fn reply_must_fit_request() {
        assert_eq!(
            Reply::Ok.fits(RequestKind::Present).unwrap_err(),
            CodecError::WrongReply(RequestKind::Present)
        );
        assert_eq!(
            Reply::Present(SlotMask(1))
                .fits(RequestKind::Touch)
                .unwrap_err(),
            CodecError::WrongReply(RequestKind::Touch)
        );
        assert!(Reply::Ok.fits(RequestKind::Led).is_ok());
        let err = Reply::Err {
            code: ErrCode(99),
            text: "x".into(),
        };
        assert!(err.fits(RequestKind::Hello).is_ok());
    }

    #[test]
    fn err_text_is_sanitised_on_encode() {
        let r = Reply::Err {
            code: ErrCode::HARDWARE,
            text: "bad\nline\x07".into(),
        };
        assert_eq!(r.encode(), "ERR 5 bad line\n");
    }

    #[test]
    fn splitter_resyncs_after_overlong_line() {
        let mut sp = LineSplitter::new();
        assert_eq!(sp.push(b"OK\nOK 1"), vec![Frame::Line(b"OK".to_vec())]);
        assert_eq!(sp.push(b"f\n"), vec![Frame::Line(b"OK 1f".to_vec())]);
        let mut junk = vec![b'x'; 1000];
        junk.extend_from_slice(b"\nOK\n");
        assert_eq!(
            sp.push(&junk),
            vec![Frame::TooLong, Frame::Line(b"OK".to_vec())]
        );
        sp.push(b"partial");
        sp.reset();
        assert_eq!(sp.push(b"OK\n"), vec![Frame::Line(b"OK".to_vec())]);
        let exact = [vec![b'A'; MAX_LINE], b"\r\n".to_vec()].concat();
        let frames = sp.push(&exact);
        assert_eq!(frames.len(), 1);
        assert!(matches!(&frames[0], Frame::Line(l) if l.len() == MAX_LINE + 1));
    }

    #[test]
    fn random_bytes_never_panic_and_chunking_does_not_matter() {
        // Deterministic xorshift: garbage of every shape, biased toward the
        // protocol's own alphabet so the parsers get past their first checks.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"OK RIGSLOTCAPERHLTUPWNDF?0123456789abcdef,\n\r\x00\xff";
        let mut stream = Vec::new();
        for _ in 0..20_000 {
            let r = next();
            let b = if r % 4 == 0 {
                (r >> 8) as u8
            } else {
                alphabet[(r >> 8) as usize % alphabet.len()]
            };
            stream.push(b);
        }
        for tricky in ["ERR 1 x \n", "ERR 1 \n", "ERR 65535\n", "ERR 1  a  b\n"] {
            stream.extend_from_slice(tricky.as_bytes());
        }
        stream.extend_from_slice(b"ERR 7 ");
        stream.extend(std::iter::repeat_n(b'y', MAX_LINE - 6));
        stream.push(b'\n');
        let whole = LineSplitter::new().push(&stream);
        let mut sp = LineSplitter::new();
        let mut chunked = Vec::new();
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let n = (next() as usize % 17 + 1).min(rest.len());
            chunked.extend(sp.push(&rest[..n]));
            rest = &rest[n..];
        }
        assert_eq!(whole, chunked);
        for f in &whole {
            if let Frame::Line(l) = f {
                assert!(l.len() <= MAX_LINE + 1);
                let _ = Request::parse(l);
                if let Ok(r) = Reply::parse(l) {
                    // Whatever parses re-encodes to something that parses the same.
                    let enc = r.encode();
                    assert_eq!(
                        Reply::parse(enc.trim_end_matches('\n').as_bytes()).as_ref(),
                        Ok(&r)
                    );
                }
            }
        }
    }

    #[test]
    fn slot_mask() {
        let m = SlotMask::default().with(0).with(5).with(64);
        assert_eq!(m, SlotMask(0b100001));
        assert_eq!(m.slots().collect::<Vec<_>>(), vec![0, 5]);
        assert!(!m.contains(200));
        assert!(Request::touch(1, Duration::from_millis(200)).is_ok());
        assert!(Request::touch(1, Duration::ZERO).is_err());
        assert!(Request::touch(64, Duration::from_millis(1)).is_err());
    }
}

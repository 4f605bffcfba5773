//! The host side of CTAPHID (CTAP 2.1 §11.2.9): one allocated channel to one
//! authenticator over a [`Transport`].
//!
//! Every wait is bounded twice: by [`Timeouts::reply`] (silence: no packet on
//! our channel) and by [`Timeouts::transaction`] (the whole exchange, so an
//! authenticator that sends KEEPALIVE forever still ends). Reports on other
//! channels are ignored (another process may share the device, §11.2.4).

use super::assemble::{Assembler, Message};
use super::packet::{
    fragment, HidCommand, HidErrorCode, KeepaliveStatus, Packet, BROADCAST_CID, MAX_MESSAGE_LEN,
    MAX_SEQ, RESERVED_CID,
};
use super::FrameError;
use crate::transport::{Transport, TransportError};
use std::fmt;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Time limits of one channel. `Default` suits real keys; tests use milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Longest silence on our channel: before the first reply packet, between
    /// keepalives, between continuation packets. Authenticators send a
    /// KEEPALIVE about every 100 ms while busy (research §1.6).
    pub reply: Duration,
    /// Deadline of a whole transaction, keepalives included. YubiKeys give up
    /// waiting for a touch after 30 s, so the default leaves room for that.
    pub transaction: Duration,
    /// Pause between retries when the device answers CHANNEL_BUSY.
    pub busy_retry: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            reply: Duration::from_secs(3),
            transaction: Duration::from_secs(40),
            busy_retry: Duration::from_millis(100),
        }
    }
}

impl Timeouts {
    /// Short limits for tests and simulators that answer at once.
    pub fn short() -> Self {
        Self {
            reply: Duration::from_millis(200),
            transaction: Duration::from_secs(1),
            busy_retry: Duration::from_millis(10),
        }
    }
}

/// Capability flags of the INIT response (§11.2.9.1.3). Open newtype.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Capabilities(pub u8);

impl Capabilities {
    /// Implements WINK.
    pub const WINK: u8 = 0x01;
    /// Implements CBOR (CTAP2).
    pub const CBOR: u8 = 0x04;
    /// Does NOT implement MSG (CTAP1).
    pub const NMSG: u8 = 0x08;

    pub fn wink(self) -> bool {
        self.0 & Self::WINK != 0
    }
    pub fn cbor(self) -> bool {
        self.0 & Self::CBOR != 0
    }
    /// Whether MSG (CTAP1/U2F) is implemented (the NMSG bit is clear).
    pub fn msg(self) -> bool {
        self.0 & Self::NMSG == 0
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Capabilities(0x{:02x}", self.0)?;
        for (bit, name) in [
            (Self::WINK, "WINK"),
            (0x02, "LOCK"),
            (Self::CBOR, "CBOR"),
            (Self::NMSG, "NMSG"),
        ] {
            if self.0 & bit != 0 {
                write!(f, " {name}")?;
            }
        }
        f.write_str(")")
    }
}

/// What the INIT response says about the device (§11.2.9.1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitInfo {
    /// The allocated channel.
    pub cid: u32,
    /// CTAPHID protocol version (2).
    pub protocol_version: u8,
    /// Device version major / minor / build (on YubiKey 4/5: the firmware version).
    pub device_version: (u8, u8, u8),
    pub capabilities: Capabilities,
}

impl InitInfo {
    /// Length of the INIT response payload.
    pub const LEN: usize = 17;

    /// Parses an INIT response payload after the nonce check (bytes 8..17).
    pub fn parse(payload: &[u8]) -> Result<Self, HidError> {
        if payload.len() < Self::LEN {
            return Err(HidError::Malformed(format!(
                "INIT response of {} bytes, expected {}",
                payload.len(),
                Self::LEN
            )));
        }
        let cid = u32::from_be_bytes([payload[8], payload[9], payload[10], payload[11]]);
        Ok(Self {
            cid,
            protocol_version: payload[12],
            device_version: (payload[13], payload[14], payload[15]),
            capabilities: Capabilities(payload[16]),
        })
    }

    /// Encodes the 17-byte INIT response (device side).
    pub fn encode(&self, nonce: &[u8; 8]) -> [u8; 17] {
        let mut out = [0u8; 17];
        out[..8].copy_from_slice(nonce);
        out[8..12].copy_from_slice(&self.cid.to_be_bytes());
        out[12] = self.protocol_version;
        out[13] = self.device_version.0;
        out[14] = self.device_version.1;
        out[15] = self.device_version.2;
        out[16] = self.capabilities.0;
        out
    }
}

/// Which limit ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// No packet on our channel for [`Timeouts::reply`].
    Silent,
    /// The transaction outlived [`Timeouts::transaction`] (e.g. endless keepalives).
    Deadline,
}

/// A failure of a CTAPHID exchange.
#[derive(Debug, Error)]
pub enum HidError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The device answered with a CTAPHID ERROR frame.
    #[error("device answered {cmd} with CTAPHID error {code}")]
    Device { cmd: HidCommand, code: HidErrorCode },
    /// The device's packets do not form a valid message.
    #[error("bad packets from the device: {0}")]
    Frame(FrameError),
    /// Our own message cannot be framed (too long).
    #[error("request cannot be sent: {0}")]
    Request(FrameError),
    #[error("device answered {sent} with a {got} message")]
    UnexpectedCommand { sent: HidCommand, got: HidCommand },
    #[error("{cmd} timed out after {waited:?} ({kind:?})")]
    Timeout {
        cmd: HidCommand,
        kind: TimeoutKind,
        waited: Duration,
    },
    /// A reply that has the right command but makes no sense.
    #[error("malformed reply: {0}")]
    Malformed(String),
    /// `vendor()` was given a command outside 0x40..=0x7F.
    #[error("{0} is not a vendor command (0x40..=0x7f)")]
    NotVendor(HidCommand),
    /// The device does not advertise the capability the call needs.
    #[error("device does not support {0}")]
    Unsupported(&'static str),
}

/// An open CTAPHID channel to one authenticator.
#[derive(Debug)]
pub struct HidChannel<T: Transport> {
    transport: T,
    timeouts: Timeouts,
    info: InitInfo,
}

impl<T: Transport> HidChannel<T> {
    /// Allocates a channel: INIT on the broadcast CID with a random 8-byte
    /// nonce, reading until the reply that echoes it (§11.2.9.1.3).
    pub fn open(mut transport: T, timeouts: Timeouts) -> Result<Self, HidError> {
        let nonce: [u8; 8] = rand::random();
        let info = init(&mut transport, &timeouts, BROADCAST_CID, &nonce)?;
        tracing::debug!(device = %transport.describe(), cid = format_args!("{:08x}", info.cid), ?info, "CTAPHID channel allocated");
        Ok(Self {
            transport,
            timeouts,
            info,
        })
    }

    /// INIT on our own channel (§11.2.9.1.3): the device drops any transaction
    /// in progress and keeps the channel. Use after a timeout or garbled reply
    /// before the next request. The reply must keep our channel id.
    pub fn resync(&mut self) -> Result<(), HidError> {
        let nonce: [u8; 8] = rand::random();
        let info = init(&mut self.transport, &self.timeouts, self.info.cid, &nonce)?;
        if info.cid != self.info.cid {
            return Err(HidError::Malformed(format!(
                "resync moved channel {:08x} to {:08x}",
                self.info.cid, info.cid
            )));
        }
        self.info = info;
        Ok(())
    }

    /// The INIT response: channel, versions, capabilities.
    pub fn info(&self) -> &InitInfo {
        &self.info
    }

    /// Our channel id.
    pub fn cid(&self) -> u32 {
        self.info.cid
    }

    pub fn timeouts(&self) -> &Timeouts {
        &self.timeouts
    }

    pub fn set_timeouts(&mut self, timeouts: Timeouts) {
        self.timeouts = timeouts;
    }

    /// The transport, e.g. for `describe()`.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    pub fn into_transport(self) -> T {
        self.transport
    }

    /// A CTAP2 request (command byte ‖ CBOR) → response (status ‖ CBOR)
    /// (§11.2.9.1.2). `on_keepalive` sees every KEEPALIVE status, e.g. to ask
    /// the rig for a touch on UPNEEDED.
    pub fn cbor(
        &mut self,
        request: &[u8],
        on_keepalive: &mut dyn FnMut(KeepaliveStatus),
    ) -> Result<Vec<u8>, HidError> {
        if !self.info.capabilities.cbor() {
            return Err(HidError::Unsupported("CTAPHID_CBOR"));
        }
        self.call(HidCommand::CBOR, request, on_keepalive)
    }

    /// A CTAP1/U2F APDU (§11.2.9.1.1).
    pub fn msg(
        &mut self,
        apdu: &[u8],
        on_keepalive: &mut dyn FnMut(KeepaliveStatus),
    ) -> Result<Vec<u8>, HidError> {
        if !self.info.capabilities.msg() {
            return Err(HidError::Unsupported("CTAPHID_MSG"));
        }
        self.call(HidCommand::MSG, apdu, on_keepalive)
    }

    /// A vendor command (0x40..=0x7F, §11.2.9.3), e.g. YubiKey READ_CONFIG 0x42.
    pub fn vendor(&mut self, cmd: HidCommand, payload: &[u8]) -> Result<Vec<u8>, HidError> {
        if !cmd.is_vendor() {
            return Err(HidError::NotVendor(cmd));
        }
        self.call(cmd, payload, &mut |_| {})
    }

    /// Blinks the device (§11.2.9.2.1).
    pub fn wink(&mut self) -> Result<(), HidError> {
        if !self.info.capabilities.wink() {
            return Err(HidError::Unsupported("CTAPHID_WINK"));
        }
        self.call(HidCommand::WINK, &[], &mut |_| {}).map(drop)
    }

    /// Echo test (§11.2.9.1.4): the reply must equal `data`.
    pub fn ping(&mut self, data: &[u8]) -> Result<(), HidError> {
        let echo = self.call(HidCommand::PING, data, &mut |_| {})?;
        if echo != data {
            return Err(HidError::Malformed(format!(
                "PING echoed {} different bytes",
                echo.len()
            )));
        }
        Ok(())
    }

    /// Sends CANCEL for the pending CBOR request (§11.2.9.1.5). There is no
    /// reply; the cancelled request itself ends with KEEPALIVE_CANCEL (0x2D).
    pub fn cancel(&mut self) -> Result<(), HidError> {
        for report in
            fragment(self.info.cid, HidCommand::CANCEL, &[], 0).map_err(HidError::Request)?
        {
            self.transport.send(&report)?;
        }
        Ok(())
    }

    /// Sends any command on our channel and waits for its reply, skipping
    /// KEEPALIVEs (to `on_keepalive`) and retrying CHANNEL_BUSY.
    pub fn call(
        &mut self,
        cmd: HidCommand,
        payload: &[u8],
        on_keepalive: &mut dyn FnMut(KeepaliveStatus),
    ) -> Result<Vec<u8>, HidError> {
        let reports =
            fragment(self.info.cid, cmd, payload, MAX_MESSAGE_LEN).map_err(HidError::Request)?;
        self.discard_stale()?;
        let start = Instant::now();
        let deadline = start + self.timeouts.transaction;
        'send: loop {
            for r in &reports {
                self.transport.send(r)?;
            }
            let mut assembler = Assembler::default();
            let mut last = Instant::now();
            loop {
                let message =
                    match self.next_message(&mut assembler, cmd, start, deadline, &mut last) {
                        Err(
                            e @ HidError::Timeout {
                                kind: TimeoutKind::Deadline,
                                ..
                            },
                        ) if cmd == HidCommand::CBOR => {
                            self.abort_cbor();
                            return Err(e);
                        }
                        Err(e @ HidError::Frame(_)) => {
                            self.drain_garbled_reply();
                            return Err(e);
                        }
                        other => other?,
                    };
                match message.cmd {
                    HidCommand::KEEPALIVE => match message.payload.first() {
                        Some(&status) => on_keepalive(KeepaliveStatus(status)),
                        None => return Err(HidError::Malformed("empty KEEPALIVE".into())),
                    },
                    HidCommand::ERROR => {
                        let code = HidErrorCode(message.payload.first().copied().unwrap_or(0));
                        if code == HidErrorCode::CHANNEL_BUSY
                            && Instant::now() + self.timeouts.busy_retry < deadline
                        {
                            std::thread::sleep(self.timeouts.busy_retry);
                            continue 'send;
                        }
                        return Err(HidError::Device { cmd, code });
                    }
                    got if got == cmd => return Ok(message.payload),
                    got => return Err(HidError::UnexpectedCommand { sent: cmd, got }),
                }
            }
        }
    }

    /// Drops reports already waiting (the tail of a reply we gave up on), so
    /// they cannot be taken for the answer to the next request. Bounded: a
    /// device that floods us cannot keep us here.
    fn discard_stale(&mut self) -> Result<(), HidError> {
        for _ in 0..=MAX_SEQ as usize + 1 {
            if self.transport.recv(Duration::ZERO)?.is_none() {
                break;
            }
        }
        Ok(())
    }

    /// After bad packets: the rest of that reply may still be in flight. Read
    /// until the line is quiet for a moment (bounded by [`Timeouts::reply`]),
    /// so the tail is not taken for the next answer.
    fn drain_garbled_reply(&mut self) {
        const QUIET: Duration = Duration::from_millis(50);
        let until = Instant::now() + self.timeouts.reply;
        while Instant::now() < until {
            match self.transport.recv(QUIET) {
                Ok(Some(_)) => continue,
                _ => break,
            }
        }
    }

    /// Reads reports of our channel until one completes a message.
    fn next_message(
        &mut self,
        assembler: &mut Assembler,
        cmd: HidCommand,
        start: Instant,
        deadline: Instant,
        last: &mut Instant,
    ) -> Result<Message, HidError> {
        recv_message(
            &mut self.transport,
            assembler,
            self.info.cid,
            cmd,
            start,
            deadline,
            last,
            self.timeouts.reply,
        )
    }

    /// After the deadline of a CBOR request: CANCEL it and read away its
    /// KEEPALIVE_CANCEL reply, so it cannot be taken for the next answer.
    fn abort_cbor(&mut self) {
        if self.cancel().is_err() {
            return;
        }
        let start = Instant::now();
        let deadline = start + self.timeouts.reply;
        let mut last = start;
        let mut assembler = Assembler::default();
        while let Ok(m) = recv_message(
            &mut self.transport,
            &mut assembler,
            self.info.cid,
            HidCommand::CBOR,
            start,
            deadline,
            &mut last,
            self.timeouts.reply,
        ) {
            if m.cmd != HidCommand::KEEPALIVE {
                break;
            }
        }
    }
}

/// Reads reports until one completes a message on `cid`; ignores other channels.
#[allow(clippy::too_many_arguments)]
fn recv_message<T: Transport + ?Sized>(
    transport: &mut T,
    assembler: &mut Assembler,
    cid: u32,
    cmd: HidCommand,
    start: Instant,
    deadline: Instant,
    last: &mut Instant,
    reply: Duration,
) -> Result<Message, HidError> {
    loop {
        let now = Instant::now();
        let silent_until = *last + reply;
        if now >= deadline || now >= silent_until {
            let kind = if now >= deadline {
                TimeoutKind::Deadline
            } else {
                TimeoutKind::Silent
            };
            return Err(HidError::Timeout {
                cmd,
                kind,
                waited: now - start,
            });
        }
        let Some(report) = transport.recv(deadline.min(silent_until) - now)? else {
            continue;
        };
        let packet_cid = Packet::parse(&report).cid();
        if packet_cid != cid {
            tracing::trace!(
                cid = format_args!("{packet_cid:08x}"),
                "ignoring report on another channel"
            );
            continue;
        }
        *last = Instant::now();
        if let Some(m) = assembler.push(&report).map_err(HidError::Frame)? {
            return Ok(m);
        }
    }
}

/// INIT on `cid` (broadcast to allocate, or our own to resynchronise).
fn init<T: Transport + ?Sized>(
    transport: &mut T,
    timeouts: &Timeouts,
    cid: u32,
    nonce: &[u8; 8],
) -> Result<InitInfo, HidError> {
    for r in fragment(cid, HidCommand::INIT, nonce, MAX_MESSAGE_LEN).map_err(HidError::Request)? {
        transport.send(&r)?;
    }
    let start = Instant::now();
    let deadline = start + timeouts.reply.min(timeouts.transaction);
    let mut last = start;
    let mut assembler = Assembler::default();
    loop {
        let m = match recv_message(
            transport,
            &mut assembler,
            cid,
            HidCommand::INIT,
            start,
            deadline,
            &mut last,
            timeouts.reply,
        ) {
            // Other processes may talk on the broadcast channel: skip their noise.
            Err(HidError::Frame(_)) => continue,
            other => other?,
        };
        match m.cmd {
            HidCommand::INIT if m.payload.len() >= 8 && m.payload[..8] == nonce[..] => {
                let info = InitInfo::parse(&m.payload)?;
                if info.cid == RESERVED_CID || info.cid == BROADCAST_CID {
                    return Err(HidError::Malformed(format!(
                        "INIT allocated the reserved channel {:08x}",
                        info.cid
                    )));
                }
                return Ok(info);
            }
            // Someone else's INIT response.
            HidCommand::INIT | HidCommand::KEEPALIVE => continue,
            HidCommand::ERROR => {
                let code = HidErrorCode(m.payload.first().copied().unwrap_or(0));
                return Err(HidError::Device {
                    cmd: HidCommand::INIT,
                    code,
                });
            }
            got => {
                return Err(HidError::UnexpectedCommand {
                    sent: HidCommand::INIT,
                    got,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_info_round_trip_and_observed_yubikey_reply() {
        // Research §1.4: YubiKey 5 NFC 5.4.3 INIT response after the nonce.
        let mut payload = vec![0u8; 8];
        payload.extend_from_slice(&hex::decode("2133e1b90205040305").unwrap());
        let info = InitInfo::parse(&payload).unwrap();
        assert_eq!(info.cid, 0x2133_e1b9);
        assert_eq!(info.protocol_version, 2);
        assert_eq!(info.device_version, (5, 4, 3));
        assert!(info.capabilities.wink() && info.capabilities.cbor() && info.capabilities.msg());
        assert_eq!(info.encode(&[0; 8]).to_vec(), payload);
        assert!(InitInfo::parse(&payload[..16]).is_err());
        assert_eq!(
            format!("{:?}", Capabilities(0x0d)),
            "Capabilities(0x0d WINK CBOR NMSG)"
        );
    }

    use crate::ctaphid::packet::fragment;
    use crate::transport::memory::{pair, MemoryTransport};
    use crate::transport::Report;
    use std::thread;

    const CID: u32 = 0x0102_0304;

    /// Generous limits for exchanges expected to succeed on a loaded machine.
    fn relaxed() -> Timeouts {
        Timeouts {
            reply: Duration::from_secs(3),
            transaction: Duration::from_secs(10),
            busy_retry: Duration::from_millis(10),
        }
    }

    /// A scripted device: answers INIT, then for each request calls `script`,
    /// which returns the reports to send back.
    fn device(
        mut script: impl FnMut(&Message, &mut MemoryTransport) -> Vec<Report> + Send + 'static,
    ) -> (MemoryTransport, thread::JoinHandle<Vec<Message>>) {
        let (host, mut dev) = pair("unit");
        let h = thread::spawn(move || {
            let mut seen = Vec::new();
            let mut asm = Assembler::default();
            while let Ok(Some(r)) = dev.recv(Duration::from_secs(2)) {
                let Ok(Some(m)) = asm.push(&r) else { continue };
                let replies = if m.cmd == HidCommand::INIT {
                    let nonce: [u8; 8] = m.payload[..8].try_into().unwrap();
                    let info = InitInfo {
                        cid: CID,
                        protocol_version: 2,
                        device_version: (5, 7, 1),
                        capabilities: Capabilities(0x05),
                    };
                    fragment(m.cid, HidCommand::INIT, &info.encode(&nonce), 7609).unwrap()
                } else {
                    script(&m, &mut dev)
                };
                seen.push(m);
                for r in replies {
                    if dev.send(&r).is_err() {
                        return seen;
                    }
                }
            }
            seen
        });
        (host, h)
    }

    fn frames(cmd: HidCommand, payload: &[u8]) -> Vec<Report> {
        fragment(CID, cmd, payload, 7609).unwrap()
    }

    #[test]
    fn cbor_with_keepalives_and_noise_on_other_channels() {
        let (host, dev) = device(|m, _| {
            if m.cmd == HidCommand::MSG {
                return frames(HidCommand::MSG, &[0x90, 0x00]);
            }
            let mut out = fragment(0x0909_0909, HidCommand::CBOR, &[0xee; 80], 7609).unwrap();
            out.extend(frames(HidCommand::KEEPALIVE, &[1]));
            out.extend(frames(HidCommand::KEEPALIVE, &[2]));
            let mut reply = vec![0x00];
            reply.extend_from_slice(&m.payload);
            reply.extend_from_slice(&[0x55; 200]);
            out.extend(frames(HidCommand::CBOR, &reply));
            out
        });
        let mut ch = HidChannel::open(host, relaxed()).unwrap();
        assert_eq!(ch.cid(), CID);
        assert_eq!(ch.info().device_version, (5, 7, 1));
        let mut statuses = Vec::new();
        let reply = ch.cbor(&[0x04], &mut |s| statuses.push(s)).unwrap();
        assert_eq!(&reply[..2], &[0x00, 0x04]);
        assert_eq!(reply.len(), 202);
        assert_eq!(
            statuses,
            vec![KeepaliveStatus::PROCESSING, KeepaliveStatus::UPNEEDED]
        );
        assert_eq!(ch.msg(&[0; 4], &mut |_| {}).unwrap(), vec![0x90, 0x00]);
        drop(ch);
        let seen = dev.join().unwrap();
        assert_eq!(seen[0].cid, BROADCAST_CID);
        assert_eq!(seen[1].cid, CID);
    }

    #[test]
    fn error_frames_are_typed_and_busy_is_retried() {
        let mut calls = 0;
        let (host, _dev) = device(move |m, _| {
            calls += 1;
            match (m.cmd, calls) {
                (HidCommand::PING, 1) => frames(HidCommand::ERROR, &[0x06]),
                (HidCommand::PING, _) => frames(HidCommand::PING, &m.payload),
                _ => frames(HidCommand::ERROR, &[0x01]),
            }
        });
        let mut ch = HidChannel::open(host, relaxed()).unwrap();
        ch.ping(b"hello").unwrap();
        ch.resync().unwrap();
        assert_eq!(ch.cid(), CID);
        match ch.vendor(HidCommand(0x42), &[0]) {
            Err(HidError::Device { cmd, code }) => {
                assert_eq!((cmd, code), (HidCommand(0x42), HidErrorCode::INVALID_CMD))
            }
            other => panic!("{other:?}"),
        }
        let err = ch.vendor(HidCommand::CBOR, &[]).unwrap_err();
        assert!(matches!(err, HidError::NotVendor(_)), "{err:?}");
    }

    #[test]
    fn endless_keepalive_hits_the_deadline_and_cancels() {
        let (host, dev) = device(|m, dev| {
            if m.cmd == HidCommand::CANCEL {
                return frames(HidCommand::CBOR, &[0x2d]);
            }
            // 40 keepalives 10 ms apart cannot all arrive before a 150 ms deadline.
            for _ in 0..40 {
                thread::sleep(Duration::from_millis(10));
                let _ = dev.send(&frames(HidCommand::KEEPALIVE, &[2])[0]);
            }
            vec![]
        });
        let t = Timeouts {
            reply: Duration::from_secs(1),
            transaction: Duration::from_millis(300),
            busy_retry: Duration::from_millis(5),
        };
        let mut ch = HidChannel::open(host, t).unwrap();
        let err = ch.cbor(&[0x01], &mut |_| {}).unwrap_err();
        assert!(
            matches!(
                err,
                HidError::Timeout {
                    kind: TimeoutKind::Deadline,
                    ..
                }
            ),
            "{err:?}"
        );
        drop(ch);
        let seen = dev.join().unwrap();
        assert!(seen.iter().any(|m| m.cmd == HidCommand::CANCEL));
    }

    #[test]
    fn silence_and_garbage() {
        let (host, _dev) = device(|m, _| match m.payload.first() {
            Some(1) => vec![],
            Some(2) => {
                let mut r = frames(HidCommand::CBOR, &[0; 100]);
                r.swap(0, 1);
                r
            }
            _ => frames(HidCommand::PING, &[0]),
        });
        let mut ch = HidChannel::open(host, relaxed()).unwrap();
        ch.set_timeouts(Timeouts {
            reply: Duration::from_millis(800),
            ..relaxed()
        });
        let err = ch.cbor(&[1], &mut |_| {}).unwrap_err();
        assert!(
            matches!(
                err,
                HidError::Timeout {
                    kind: TimeoutKind::Silent,
                    ..
                }
            ),
            "{err:?}"
        );
        // The rest expects an answer: a short deadline would turn a slow
        // scheduler (busy CI) into a Timeout instead of the frame error.
        ch.set_timeouts(relaxed());
        let err = ch.cbor(&[2], &mut |_| {}).unwrap_err();
        assert!(
            matches!(
                err,
                HidError::Frame(FrameError::UnexpectedContinuation { .. })
            ),
            "{err:?}"
        );
        let err = ch.cbor(&[3], &mut |_| {}).unwrap_err();
        assert!(
            matches!(
                err,
                HidError::UnexpectedCommand {
                    got: HidCommand::PING,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn init_skips_foreign_nonces_and_times_out_on_silence() {
        let (host, mut dev) = pair("init");
        let t = thread::spawn(move || {
            let r = dev.recv(Duration::from_secs(2)).unwrap().unwrap();
            let nonce: [u8; 8] = r[7..15].try_into().unwrap();
            let good = InitInfo {
                cid: 9,
                protocol_version: 2,
                device_version: (1, 2, 3),
                capabilities: Capabilities(4),
            };
            let mut other = nonce;
            other[0] ^= 1;
            for n in [other, nonce] {
                for r in fragment(BROADCAST_CID, HidCommand::INIT, &good.encode(&n), 7609).unwrap()
                {
                    dev.send(&r).unwrap();
                }
            }
            dev
        });
        let ch = HidChannel::open(host, relaxed()).unwrap();
        assert_eq!(ch.cid(), 9);
        let _dev = t.join().unwrap();
        let (host, _dev2) = pair("silent");
        let err = HidChannel::open(host, Timeouts::short()).unwrap_err();
        assert!(
            matches!(
                err,
                HidError::Timeout {
                    cmd: HidCommand::INIT,
                    ..
                }
            ),
            "{err:?}"
        );
    }
}

//! Device side of CTAPHID framing (CTAP 2.1 §11.2.4 "Message and packet structure",
//! §11.2.9 commands). Pure state machine: packets in, actions out; time is passed in so
//! the tests below drive it without sleeping.
//!
//! Written for this test peer only, independently of prereg-station's host-side framing,
//! so that a bug shared by both sides cannot hide.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One HID report: fixed 64 bytes, no report-id byte (§11.2.4, SPEC §10 bridge).
pub const PACKET_SIZE: usize = 64;
/// Payload bytes in an initialization packet: 64 - CID(4) - CMD(1) - BCNT(2).
pub const INIT_DATA: usize = PACKET_SIZE - 7;
/// Payload bytes in a continuation packet: 64 - CID(4) - SEQ(1).
pub const CONT_DATA: usize = PACKET_SIZE - 5;
/// Largest message: one init packet plus continuation sequence numbers 0..=127 (§11.2.4).
pub const MAX_MESSAGE: usize = INIT_DATA + 128 * CONT_DATA;
/// Broadcast channel, valid only for INIT (§11.2.9.1.3).
pub const BROADCAST_CID: u32 = 0xFFFF_FFFF;
/// How long a half-received message may wait for its next continuation packet before the
/// transaction is dropped with ERR_MSG_TIMEOUT (§11.2.4 leaves the value to the device).
pub const REASSEMBLY_TIMEOUT: Duration = Duration::from_millis(1000);
/// How many allocated channels are remembered; the oldest is forgotten beyond this.
pub const MAX_CHANNELS: usize = 128;

/// CTAPHID command codes without the init-packet bit 0x80 (§11.2.9).
pub mod cmd {
    pub const PING: u8 = 0x01;
    pub const MSG: u8 = 0x03;
    pub const LOCK: u8 = 0x04;
    pub const INIT: u8 = 0x06;
    pub const WINK: u8 = 0x08;
    pub const CBOR: u8 = 0x10;
    pub const CANCEL: u8 = 0x11;
    pub const KEEPALIVE: u8 = 0x3B;
    pub const ERROR: u8 = 0x3F;
}

/// CTAPHID_ERROR payload codes (§11.2.9.1.6).
pub mod err {
    pub const INVALID_CMD: u8 = 0x01;
    pub const INVALID_LEN: u8 = 0x03;
    pub const INVALID_SEQ: u8 = 0x04;
    pub const MSG_TIMEOUT: u8 = 0x05;
    pub const CHANNEL_BUSY: u8 = 0x06;
    pub const INVALID_CHANNEL: u8 = 0x0B;
    pub const OTHER: u8 = 0x7F;
}

/// KEEPALIVE status byte (§11.2.9.2.1).
pub mod keepalive {
    pub const PROCESSING: u8 = 1;
    pub const UP_NEEDED: u8 = 2;
}

/// INIT capability flags (§11.2.9.1.3): WINK and CBOR; MSG is offered, so NMSG is clear.
pub const CAPABILITIES: u8 = 0x01 | 0x04;
/// CTAPHID protocol version reported by INIT.
pub const PROTOCOL_VERSION: u8 = 2;

/// Which request goes to the authenticator application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppCommand {
    /// CTAPHID_CBOR: a CTAP2 request.
    Cbor,
    /// CTAPHID_MSG: a CTAP1/U2F APDU.
    Msg,
}

/// What the caller must do after feeding the state machine.
#[derive(Debug, PartialEq, Eq)]
pub enum Action<P> {
    /// Send one report to `P`.
    Send(P, [u8; PACKET_SIZE]),
    /// Hand a complete request to the authenticator; answer with [`Device::on_response`].
    Dispatch(AppCommand, Vec<u8>),
    /// Ask the authenticator to abort the request in progress (CTAPHID_CANCEL).
    Cancel,
}

#[derive(Debug)]
enum State<P> {
    Idle,
    Receiving {
        peer: P,
        cid: u32,
        cmd: u8,
        total: usize,
        buf: Vec<u8>,
        next_seq: u8,
        deadline: Instant,
    },
    Busy {
        peer: P,
        cid: u32,
        cmd: u8,
        /// Set when INIT resynchronised the channel: the answer is dropped, not sent.
        discard: bool,
    },
}

/// The device's CTAPHID layer: channel allocation, reassembly, one transaction at a time.
#[derive(Debug)]
pub struct Device<P> {
    channels: VecDeque<u32>,
    next_cid: u32,
    state: State<P>,
    version: [u8; 3],
}

impl<P: Copy + Eq> Device<P> {
    /// `version` is the device version (major, minor, build) reported by INIT.
    pub fn new(version: [u8; 3]) -> Self {
        Self {
            channels: VecDeque::new(),
            next_cid: 1,
            state: State::Idle,
            version,
        }
    }

    /// The peer and channel of the request the authenticator is working on, if any (and
    /// its answer is still wanted): they get the KEEPALIVE reports.
    pub fn busy_with(&self) -> Option<(P, u32)> {
        match self.state {
            State::Busy {
                peer,
                cid,
                discard: false,
                ..
            } => Some((peer, cid)),
            _ => None,
        }
    }

    /// Feeds one received report.
    pub fn on_packet(&mut self, peer: P, pkt: &[u8], now: Instant, out: &mut Vec<Action<P>>) {
        if pkt.len() != PACKET_SIZE {
            // Not a report of this bridge; no channel id can be trusted, so no answer.
            return;
        }
        let cid = u32::from_be_bytes([pkt[0], pkt[1], pkt[2], pkt[3]]);
        if pkt[4] & 0x80 != 0 {
            let cmd = pkt[4] & 0x7F;
            let total = usize::from(u16::from_be_bytes([pkt[5], pkt[6]]));
            self.on_init_packet(peer, cid, cmd, total, &pkt[7..], now, out);
        } else {
            self.on_cont_packet(peer, cid, pkt[4], &pkt[5..], now, out);
        }
    }

    /// Drops a half-received message whose continuation did not arrive in time.
    pub fn on_tick(&mut self, now: Instant, out: &mut Vec<Action<P>>) {
        if let State::Receiving {
            peer,
            cid,
            deadline,
            ..
        } = self.state
        {
            if now >= deadline {
                self.state = State::Idle;
                send_error(out, peer, cid, err::MSG_TIMEOUT);
            }
        }
    }

    /// The authenticator's answer to the last [`Action::Dispatch`]: the response message,
    /// or a CTAPHID error code.
    pub fn on_response(&mut self, response: Result<Vec<u8>, u8>, out: &mut Vec<Action<P>>) {
        let State::Busy {
            peer,
            cid,
            cmd,
            discard,
        } = self.state
        else {
            return;
        };
        self.state = State::Idle;
        if discard {
            return;
        }
        match response {
            Ok(msg) if msg.len() <= MAX_MESSAGE => send_message(out, peer, cid, cmd, &msg),
            Ok(_) => send_error(out, peer, cid, err::OTHER),
            Err(code) => send_error(out, peer, cid, code),
        }
    }

    fn is_allocated(&self, cid: u32) -> bool {
        self.channels.contains(&cid)
    }

    fn allocate(&mut self) -> u32 {
        let cid = self.next_cid;
        // 0 is reserved and 0xFFFFFFFF is broadcast (§11.2.4); wrap around both.
        self.next_cid = match self.next_cid.wrapping_add(1) {
            0 | BROADCAST_CID => 1,
            n => n,
        };
        if self.channels.len() >= MAX_CHANNELS {
            self.channels.pop_front();
        }
        self.channels.push_back(cid);
        cid
    }

    #[allow(clippy::too_many_arguments)]
    fn on_init_packet(
        &mut self,
        peer: P,
        cid: u32,
        cmd: u8,
        total: usize,
        data: &[u8],
        now: Instant,
        out: &mut Vec<Action<P>>,
    ) {
        if cid == 0 {
            send_error(out, peer, cid, err::INVALID_CHANNEL);
            return;
        }
        if cmd == cmd::INIT {
            self.on_init_command(peer, cid, total, data, out);
            return;
        }
        if cid == BROADCAST_CID || !self.is_allocated(cid) {
            send_error(out, peer, cid, err::INVALID_CHANNEL);
            return;
        }
        if cmd == cmd::CANCEL {
            // §11.2.9.1.5: no answer to CANCEL itself; the cancelled request answers with
            // CTAP2_ERR_KEEPALIVE_CANCEL. A CANCEL for anything else is ignored.
            if matches!(self.state, State::Busy { cid: busy, discard: false, .. } if busy == cid) {
                out.push(Action::Cancel);
            }
            return;
        }
        match self.state {
            State::Idle => {}
            State::Receiving { cid: rx_cid, .. } if rx_cid == cid => {
                // A new request before the last one was complete: the sequence is broken.
                self.state = State::Idle;
                send_error(out, peer, cid, err::INVALID_SEQ);
                return;
            }
            State::Receiving { .. } | State::Busy { .. } => {
                send_error(out, peer, cid, err::CHANNEL_BUSY);
                return;
            }
        }
        if total > MAX_MESSAGE {
            send_error(out, peer, cid, err::INVALID_LEN);
            return;
        }
        if total <= INIT_DATA {
            self.execute(peer, cid, cmd, data[..total].to_vec(), out);
        } else {
            let mut buf = Vec::with_capacity(total);
            buf.extend_from_slice(data);
            self.state = State::Receiving {
                peer,
                cid,
                cmd,
                total,
                buf,
                next_seq: 0,
                deadline: now + REASSEMBLY_TIMEOUT,
            };
        }
    }

    fn on_init_command(
        &mut self,
        peer: P,
        cid: u32,
        total: usize,
        data: &[u8],
        out: &mut Vec<Action<P>>,
    ) {
        // §11.2.9.1.3: the request is an 8-byte nonce.
        if total != 8 {
            send_error(out, peer, cid, err::INVALID_LEN);
            return;
        }
        let new_cid = if cid == BROADCAST_CID {
            self.allocate()
        } else if self.is_allocated(cid) {
            // Resynchronise: abandon whatever this channel had in flight.
            match &mut self.state {
                State::Receiving { cid: c, .. } if *c == cid => self.state = State::Idle,
                State::Busy {
                    cid: c, discard, ..
                } if *c == cid && !*discard => {
                    *discard = true;
                    out.push(Action::Cancel);
                }
                _ => {}
            }
            cid
        } else {
            send_error(out, peer, cid, err::INVALID_CHANNEL);
            return;
        };
        let mut payload = Vec::with_capacity(17);
        payload.extend_from_slice(&data[..8]);
        payload.extend_from_slice(&new_cid.to_be_bytes());
        payload.push(PROTOCOL_VERSION);
        payload.extend_from_slice(&self.version);
        payload.push(CAPABILITIES);
        send_message(out, peer, cid, cmd::INIT, &payload);
    }

    fn on_cont_packet(
        &mut self,
        peer: P,
        cid: u32,
        seq: u8,
        data: &[u8],
        now: Instant,
        out: &mut Vec<Action<P>>,
    ) {
        let State::Receiving {
            cid: rx_cid,
            cmd,
            total,
            buf,
            next_seq,
            deadline,
            ..
        } = &mut self.state
        else {
            // §11.2.4: spurious continuation packets are ignored.
            return;
        };
        if *rx_cid != cid {
            return;
        }
        if seq != *next_seq {
            self.state = State::Idle;
            send_error(out, peer, cid, err::INVALID_SEQ);
            return;
        }
        let take = (*total - buf.len()).min(CONT_DATA);
        buf.extend_from_slice(&data[..take]);
        *next_seq += 1;
        *deadline = now + REASSEMBLY_TIMEOUT;
        if buf.len() == *total {
            let cmd = *cmd;
            let msg = std::mem::take(buf);
            self.state = State::Idle;
            self.execute(peer, cid, cmd, msg, out);
        }
    }

    fn execute(&mut self, peer: P, cid: u32, cmd: u8, msg: Vec<u8>, out: &mut Vec<Action<P>>) {
        let app = match cmd {
            cmd::PING => {
                send_message(out, peer, cid, cmd::PING, &msg);
                return;
            }
            cmd::WINK => {
                // Nothing to blink on a virtual device; the answer is an empty WINK.
                send_message(out, peer, cid, cmd::WINK, &[]);
                return;
            }
            cmd::CBOR => AppCommand::Cbor,
            cmd::MSG => AppCommand::Msg,
            cmd::LOCK => {
                // Optional (§11.2.9.2.2) and not offered.
                send_error(out, peer, cid, err::INVALID_CMD);
                return;
            }
            _ => {
                send_error(out, peer, cid, err::INVALID_CMD);
                return;
            }
        };
        if msg.is_empty() {
            send_error(out, peer, cid, err::INVALID_LEN);
            return;
        }
        self.state = State::Busy {
            peer,
            cid,
            cmd,
            discard: false,
        };
        out.push(Action::Dispatch(app, msg));
    }
}

/// Splits a message into reports (§11.2.4); `msg` must not exceed [`MAX_MESSAGE`].
pub fn fragment(cid: u32, cmd: u8, msg: &[u8]) -> Vec<[u8; PACKET_SIZE]> {
    let mut packets = Vec::with_capacity(1 + msg.len().saturating_sub(INIT_DATA) / CONT_DATA + 1);
    let mut first = [0u8; PACKET_SIZE];
    first[..4].copy_from_slice(&cid.to_be_bytes());
    first[4] = 0x80 | cmd;
    // Lossless: MAX_MESSAGE < 65536 and callers stay within it.
    let len = u16::try_from(msg.len()).unwrap_or(u16::MAX);
    first[5..7].copy_from_slice(&len.to_be_bytes());
    let head = msg.len().min(INIT_DATA);
    first[7..7 + head].copy_from_slice(&msg[..head]);
    packets.push(first);
    for (seq, chunk) in msg[head..].chunks(CONT_DATA).enumerate() {
        let mut pkt = [0u8; PACKET_SIZE];
        pkt[..4].copy_from_slice(&cid.to_be_bytes());
        pkt[4] = (seq & 0x7F) as u8;
        pkt[5..5 + chunk.len()].copy_from_slice(chunk);
        packets.push(pkt);
    }
    packets
}

/// A KEEPALIVE report (§11.2.9.2.1).
pub fn keepalive_packet(cid: u32, status: u8) -> [u8; PACKET_SIZE] {
    fragment(cid, cmd::KEEPALIVE, &[status])[0]
}

fn send_message<P: Copy>(out: &mut Vec<Action<P>>, peer: P, cid: u32, cmd: u8, msg: &[u8]) {
    out.extend(
        fragment(cid, cmd, msg)
            .into_iter()
            .map(|p| Action::Send(peer, p)),
    );
}

fn send_error<P: Copy>(out: &mut Vec<Action<P>>, peer: P, cid: u32, code: u8) {
    send_message(out, peer, cid, cmd::ERROR, &[code]);
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: u8 = 7;

    fn init_pkt(cid: u32, cmd: u8, total: usize, data: &[u8]) -> [u8; 64] {
        let mut p = [0u8; 64];
        p[..4].copy_from_slice(&cid.to_be_bytes());
        p[4] = 0x80 | cmd;
        p[5..7].copy_from_slice(&(total as u16).to_be_bytes());
        p[7..7 + data.len()].copy_from_slice(data);
        p
    }

    fn sent(out: &[Action<u8>]) -> Vec<[u8; 64]> {
        out.iter()
            .filter_map(|a| match a {
                Action::Send(_, p) => Some(*p),
                _ => None,
            })
            .collect()
    }

    fn open_channel(dev: &mut Device<u8>, now: Instant) -> u32 {
        let mut out = Vec::new();
        let nonce = [1, 2, 3, 4, 5, 6, 7, 8];
        dev.on_packet(
            PEER,
            &init_pkt(BROADCAST_CID, cmd::INIT, 8, &nonce),
            now,
            &mut out,
        );
        let p = sent(&out);
        assert_eq!(p.len(), 1);
        assert_eq!(&p[0][..4], &BROADCAST_CID.to_be_bytes());
        assert_eq!(p[0][4], 0x80 | cmd::INIT);
        assert_eq!(&p[0][5..7], &[0, 17]);
        assert_eq!(&p[0][7..15], &nonce);
        assert_eq!(p[0][19], PROTOCOL_VERSION);
        assert_eq!(&p[0][20..23], &[0, 4, 0]);
        assert_eq!(p[0][23], CAPABILITIES);
        u32::from_be_bytes([p[0][15], p[0][16], p[0][17], p[0][18]])
    }

    fn error_code(p: &[u8; 64]) -> Option<u8> {
        (p[4] == 0x80 | cmd::ERROR).then_some(p[7])
    }

    #[test]
    fn init_allocates_distinct_channels() {
        let now = Instant::now();
        let mut dev = Device::new([0, 4, 0]);
        let a = open_channel(&mut dev, now);
        let b = open_channel(&mut dev, now);
        assert_ne!(a, b);
        assert!(a != 0 && a != BROADCAST_CID);
    }

    #[test]
    fn init_with_wrong_nonce_length_is_invalid_len() {
        let mut dev = Device::new([0, 4, 0]);
        let mut out = Vec::new();
        let p = init_pkt(BROADCAST_CID, cmd::INIT, 4, &[1, 2, 3, 4]);
        dev.on_packet(PEER, &p, Instant::now(), &mut out);
        assert_eq!(error_code(&sent(&out)[0]), Some(err::INVALID_LEN));
    }

    #[test]
    fn unknown_channel_and_broadcast_non_init_are_rejected() {
        let mut dev = Device::new([0, 4, 0]);
        let mut out = Vec::new();
        dev.on_packet(
            PEER,
            &init_pkt(0x1234, cmd::PING, 1, &[9]),
            Instant::now(),
            &mut out,
        );
        dev.on_packet(
            PEER,
            &init_pkt(BROADCAST_CID, cmd::CBOR, 1, &[4]),
            Instant::now(),
            &mut out,
        );
        let p = sent(&out);
        assert_eq!(error_code(&p[0]), Some(err::INVALID_CHANNEL));
        assert_eq!(error_code(&p[1]), Some(err::INVALID_CHANNEL));
    }

    #[test]
    fn long_ping_is_reassembled_and_echoed() {
        let now = Instant::now();
        let mut dev = Device::new([0, 4, 0]);
        let cid = open_channel(&mut dev, now);
        let msg: Vec<u8> = (0..300u32).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        for p in fragment(cid, cmd::PING, &msg) {
            dev.on_packet(PEER, &p, now, &mut out);
        }
        let reply = sent(&out);
        assert_eq!(reply, fragment(cid, cmd::PING, &msg));
    }

    #[test]
    fn cbor_is_dispatched_and_answered_on_its_channel() {
        let now = Instant::now();
        let mut dev = Device::new([0, 4, 0]);
        let cid = open_channel(&mut dev, now);
        let mut out = Vec::new();
        dev.on_packet(PEER, &init_pkt(cid, cmd::CBOR, 1, &[0x04]), now, &mut out);
        assert_eq!(out, vec![Action::Dispatch(AppCommand::Cbor, vec![0x04])]);
        assert_eq!(dev.busy_with(), Some((PEER, cid)));
        // Another channel is told the device is busy.
        let other = open_channel(&mut dev, now);
        out.clear();
        dev.on_packet(PEER, &init_pkt(other, cmd::PING, 1, &[1]), now, &mut out);
        assert_eq!(error_code(&sent(&out)[0]), Some(err::CHANNEL_BUSY));
        out.clear();
        dev.on_response(Ok(vec![0x00, 0xA0]), &mut out);
        assert_eq!(sent(&out), fragment(cid, cmd::CBOR, &[0x00, 0xA0]));
        assert_eq!(dev.busy_with(), None);
    }

    #[test]
    fn cancel_is_forwarded_only_for_the_busy_channel_and_never_answered() {
        let now = Instant::now();
        let mut dev = Device::new([0, 4, 0]);
        let cid = open_channel(&mut dev, now);
        let other = open_channel(&mut dev, now);
        let mut out = Vec::new();
        dev.on_packet(PEER, &init_pkt(cid, cmd::CANCEL, 0, &[]), now, &mut out);
        assert!(out.is_empty());
        dev.on_packet(PEER, &init_pkt(cid, cmd::CBOR, 1, &[0x04]), now, &mut out);
        out.clear();
        dev.on_packet(PEER, &init_pkt(other, cmd::CANCEL, 0, &[]), now, &mut out);
        assert!(out.is_empty());
        dev.on_packet(PEER, &init_pkt(cid, cmd::CANCEL, 0, &[]), now, &mut out);
        assert_eq!(out, vec![Action::Cancel]);
    }

    #[test]
    fn init_on_busy_channel_resyncs_and_drops_the_stale_answer() {
        let now = Instant::now();
        let mut dev = Device::new([0, 4, 0]);
        let cid = open_channel(&mut dev, now);
        let mut out = Vec::new();
        dev.on_packet(PEER, &init_pkt(cid, cmd::CBOR, 1, &[0x04]), now, &mut out);
        out.clear();
        dev.on_packet(PEER, &init_pkt(cid, cmd::INIT, 8, &[9; 8]), now, &mut out);
        assert_eq!(out[0], Action::Cancel);
        let p = sent(&out);
        assert_eq!(&p[0][..4], &cid.to_be_bytes());
        assert_eq!(&p[0][15..19], &cid.to_be_bytes());
        assert_eq!(dev.busy_with(), None);
        out.clear();
        dev.on_response(Ok(vec![0x00]), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn wrong_sequence_and_timeout_abort_the_transaction() {
        let now = Instant::now();
        let mut dev = Device::new([0, 4, 0]);
        let cid = open_channel(&mut dev, now);
        let msg = vec![0x55u8; 200];
        let pkts = fragment(cid, cmd::CBOR, &msg);
        let mut out = Vec::new();
        dev.on_packet(PEER, &pkts[0], now, &mut out);
        dev.on_packet(PEER, &pkts[2], now, &mut out); // seq 1 instead of 0
        assert_eq!(error_code(&sent(&out)[0]), Some(err::INVALID_SEQ));
        out.clear();
        dev.on_packet(PEER, &pkts[0], now, &mut out);
        dev.on_tick(now + REASSEMBLY_TIMEOUT / 2, &mut out);
        assert!(out.is_empty());
        dev.on_tick(now + REASSEMBLY_TIMEOUT, &mut out);
        assert_eq!(error_code(&sent(&out)[0]), Some(err::MSG_TIMEOUT));
        // Spurious continuation afterwards is ignored.
        out.clear();
        dev.on_packet(PEER, &pkts[1], now, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn oversized_and_unknown_commands_get_errors() {
        let now = Instant::now();
        let mut dev = Device::new([0, 4, 0]);
        let cid = open_channel(&mut dev, now);
        let mut out = Vec::new();
        dev.on_packet(
            PEER,
            &init_pkt(cid, cmd::CBOR, MAX_MESSAGE + 1, &[]),
            now,
            &mut out,
        );
        dev.on_packet(PEER, &init_pkt(cid, cmd::LOCK, 1, &[1]), now, &mut out);
        dev.on_packet(PEER, &init_pkt(cid, cmd::CBOR, 0, &[]), now, &mut out);
        let codes: Vec<_> = sent(&out).iter().map(error_code).collect();
        assert_eq!(
            codes,
            vec![
                Some(err::INVALID_LEN),
                Some(err::INVALID_CMD),
                Some(err::INVALID_LEN)
            ]
        );
    }

    #[test]
    fn fragment_fills_max_message_exactly() {
        let msg = vec![0xAB; MAX_MESSAGE];
        let p = fragment(0x01020304, cmd::CBOR, &msg);
        assert_eq!(p.len(), 129);
        assert_eq!(p[128][4], 127);
    }
}

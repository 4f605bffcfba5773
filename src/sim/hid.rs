//! The device side of CTAPHID (CTAP 2.1 §11.2): channel allocation, message
//! reassembly with its errors, keepalives while the user is asked to touch,
//! CANCEL, and YubiKey's vendor READ_CONFIG (0xC2). Pure state: reports in,
//! reports queued out; time comes from the caller.

use super::authenticator::{Authenticator, Outcome};
use super::faults::{Emit, FaultPlan, PacketFaults};
use super::TouchMode;
use crate::ctaphid::packet::RESERVED_CID;
use crate::ctaphid::packet::{fragment, HidCommand, HidErrorCode, KeepaliveStatus, Packet};
use crate::ctaphid::{Assembler, Message, BROADCAST_CID, MAX_MESSAGE_LEN};
use crate::transport::Report;
use crate::yubikey::{DeviceInfo, READ_CONFIG};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

#[cfg(test)]
#[path = "hid_busy_tests.rs"]
mod busy_tests;

/// Interval between KEEPALIVEs while busy (research §1.6: about 100 ms).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(100);
/// A half-received message older than this is dropped with MSG_TIMEOUT
/// (CTAP 2.1 §11.2.5.3; RIOT uses 500 ms).
pub const MESSAGE_TIMEOUT: Duration = Duration::from_millis(500);
/// Bound on remembered refused channels (hosts retry a busy channel; a
/// forgotten one only costs an INVALID_SEQ answer to its stray tail).
const MAX_REFUSED: usize = 64;
/// INIT capability flags: WINK | CBOR (MSG supported, so NMSG clear).
pub const CAPABILITIES: u8 = 0x01 | 0x04;

struct Busy {
    cid: u32,
    request: Vec<u8>,
    started: Duration,
    last_keepalive: Duration,
    endless: bool,
}

/// One simulated key's CTAPHID endpoint and everything behind it.
pub struct HidDevice {
    pub(crate) auth: Authenticator,
    pub(crate) info: DeviceInfo,
    assembler: Assembler,
    partial_since: BTreeMap<u32, Duration>,
    channels: Vec<u32>,
    next_cid: u32,
    busy: Option<Busy>,
    /// Channels whose request was refused with CHANNEL_BUSY at its first packet:
    /// their continuation packets are dropped until their next init packet.
    refused: BTreeSet<u32>,
    outbox: VecDeque<Report>,
    pub(crate) faults: FaultPlan,
    packet_faults: PacketFaults,
    commands: u64,
    wrong_channel_now: bool,
    pub(crate) touch_mode: TouchMode,
    pub(crate) touch_timeout: Duration,
    pub(crate) touch_pressed: bool,
    pub(crate) present: bool,
    pub(crate) winks: u64,
    /// A request outside a CTAPHID busy state waits for a touch: the card
    /// path ([`super::card`]) or a U2F request answered 6985 ([`super::u2f`]).
    pub(crate) direct_waiting: bool,
}

impl std::fmt::Debug for HidDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HidDevice")
            .field("auth", &self.auth)
            .field("channels", &self.channels.len())
            .field("present", &self.present)
            .finish_non_exhaustive()
    }
}

impl HidDevice {
    pub(crate) fn new(
        auth: Authenticator,
        info: DeviceInfo,
        first_cid: u32,
        touch_mode: TouchMode,
        touch_timeout: Duration,
    ) -> Self {
        Self {
            auth,
            info,
            assembler: Assembler::with_channels(MAX_MESSAGE_LEN, 8),
            partial_since: BTreeMap::new(),
            channels: Vec::new(),
            next_cid: first_cid.clamp(1, 0xffff_0000),
            busy: None,
            refused: BTreeSet::new(),
            outbox: VecDeque::new(),
            faults: FaultPlan::default(),
            packet_faults: PacketFaults::default(),
            commands: 0,
            wrong_channel_now: false,
            touch_mode,
            touch_timeout,
            touch_pressed: false,
            present: true,
            winks: 0,
            direct_waiting: false,
        }
    }

    /// Whether a command is waiting for the user's touch.
    pub fn waiting_for_touch(&self) -> bool {
        self.busy.as_ref().is_some_and(|b| !b.endless) || self.direct_waiting
    }

    /// Power lost and restored: channels, half messages and volatile state go.
    pub(crate) fn power_cycle(&mut self, now: Duration) {
        self.assembler.clear();
        self.partial_since.clear();
        self.channels.clear();
        self.busy = None;
        self.refused.clear();
        self.outbox.clear();
        self.packet_faults.flush();
        self.touch_pressed = false;
        self.auth.power_up(now);
    }

    pub(crate) fn unplug(&mut self) {
        self.present = false;
        self.assembler.clear();
        self.partial_since.clear();
        self.channels.clear();
        self.busy = None;
        self.refused.clear();
        self.outbox.clear();
    }

    pub(crate) fn pop(&mut self) -> Option<Report> {
        self.outbox.pop_front()
    }

    /// One report from the host.
    pub(crate) fn input(&mut self, report: &Report, now: Duration) {
        if !self.present {
            return;
        }
        let packet = Packet::parse(report);
        let cid = packet.cid();
        match packet {
            Packet::Init { cmd, .. } => {
                self.refused.remove(&cid);
                // CTAP 2.1 §11.2.4: one transaction at a time; a request from another
                // channel "will immediately fail with a busy-error message sent to the
                // requesting channel". The transaction starts with the first packet of
                // its request, so a half-received message counts as well as one that
                // waits for a touch. The refused packet never reaches the assembler:
                // the transaction in progress completes undisturbed. INIT is answered
                // (it allocates or resyncs a channel and leaves the busy one alone;
                // hosts open a key with it), and CANCEL on a non-active channel is
                // ignored by `dispatch` (§11.2.9.1.5).
                if cmd != HidCommand::INIT && cmd != HidCommand::CANCEL && self.busy_elsewhere(cid)
                {
                    if self.refused.len() >= MAX_REFUSED {
                        self.refused.clear();
                    }
                    self.refused.insert(cid);
                    return self.error(cid, HidErrorCode::CHANNEL_BUSY);
                }
            }
            // The tail of a refused message: the host already has its answer.
            Packet::Cont { .. } if self.refused.contains(&cid) => return,
            Packet::Cont { .. } => {}
        }
        match self.assembler.push(report) {
            Err(e) => {
                self.partial_since.remove(&cid);
                self.error(cid, e.hid_error_code());
            }
            Ok(Some(msg)) => {
                self.partial_since.remove(&msg.cid);
                self.message(msg, now);
            }
            Ok(None) => {
                self.partial_since.entry(cid).or_insert(now);
            }
        }
    }

    /// Whether a transaction on a channel other than `cid` is in progress: a
    /// request half received, or one being processed (waiting for a touch).
    fn busy_elsewhere(&self, cid: u32) -> bool {
        self.busy.as_ref().is_some_and(|b| b.cid != cid)
            || self.assembler.channels_in_progress().any(|c| c != cid)
    }

    /// Advances time: message timeouts, keepalives, touches, touch timeouts.
    pub(crate) fn poll(&mut self, now: Duration) {
        if !self.present {
            return;
        }
        let expired: Vec<u32> = self
            .partial_since
            .iter()
            .filter(|(_, &t)| now.saturating_sub(t) > MESSAGE_TIMEOUT)
            .map(|(&c, _)| c)
            .collect();
        for cid in expired {
            self.partial_since.remove(&cid);
            if self.assembler.abandon(cid) {
                self.error(cid, HidErrorCode::MSG_TIMEOUT);
            }
        }
        let Some(busy) = self.busy.as_mut() else {
            return;
        };
        let cid = busy.cid;
        if busy.endless {
            if now.saturating_sub(busy.last_keepalive) >= KEEPALIVE_INTERVAL {
                busy.last_keepalive = now;
                self.send(cid, HidCommand::KEEPALIVE, &[KeepaliveStatus::PROCESSING.0]);
            }
            return;
        }
        let touched = std::mem::take(&mut self.touch_pressed)
            && self.touch_mode != TouchMode::Never
            && !self.faults.refuse_touch;
        if touched {
            let busy = self.busy.take().expect("checked above");
            self.sync_auth_faults();
            match self.auth.process(&busy.request, busy.started, true) {
                Outcome::Reply(r) => self.send(cid, HidCommand::CBOR, &r),
                // Cannot happen (every path proceeds once touched); answer rather than hang.
                Outcome::NeedsTouch => self.send(
                    cid,
                    HidCommand::CBOR,
                    &[Authenticator::timeout_status(busy.request[0]).0],
                ),
            }
            return;
        }
        if now.saturating_sub(busy.started) >= self.touch_timeout {
            let busy = self.busy.take().expect("checked above");
            let status = Authenticator::timeout_status(busy.request[0]);
            self.send(cid, HidCommand::CBOR, &[status.0]);
            return;
        }
        if now.saturating_sub(busy.last_keepalive) >= KEEPALIVE_INTERVAL {
            busy.last_keepalive = now;
            self.send(cid, HidCommand::KEEPALIVE, &[KeepaliveStatus::UPNEEDED.0]);
        }
    }

    fn sync_auth_faults(&mut self) {
        self.auth.faults.store_full = self.faults.store_full;
        self.auth.faults.flash_write_failure = self.faults.flash_write_failure;
        self.auth.faults.forget_key_agreement = self.faults.forget_key_agreement;
    }

    fn message(&mut self, msg: Message, now: Duration) {
        let index = self.commands;
        self.commands += 1;
        if self.faults.unplug_at_command == Some(index) {
            self.unplug();
            return;
        }
        self.wrong_channel_now = self.faults.wrong_channel_at_command == Some(index);
        self.dispatch(msg, now);
        self.wrong_channel_now = false;
    }

    fn dispatch(&mut self, msg: Message, now: Duration) {
        let Message { cid, cmd, payload } = msg;
        if cid == RESERVED_CID {
            return self.error(cid, HidErrorCode::INVALID_CHANNEL);
        }
        if cmd == HidCommand::INIT {
            // §11.2.9.1.3: 8-byte nonce; broadcast allocates, an own channel resyncs.
            let Ok(nonce) = <[u8; 8]>::try_from(payload.as_slice()) else {
                return self.error(cid, HidErrorCode::INVALID_LEN);
            };
            let new_cid = if cid == BROADCAST_CID {
                self.allocate()
            } else if self.channels.contains(&cid) {
                if self.busy.as_ref().is_some_and(|b| b.cid == cid) {
                    self.busy = None;
                }
                cid
            } else {
                return self.error(cid, HidErrorCode::INVALID_CHANNEL);
            };
            let v = self.auth.profile().firmware;
            let mut out = nonce.to_vec();
            out.extend(new_cid.to_be_bytes());
            out.extend([2, v.major, v.minor, v.patch, CAPABILITIES]);
            return self.send(cid, HidCommand::INIT, &out);
        }
        if cid == BROADCAST_CID || !self.channels.contains(&cid) {
            return self.error(cid, HidErrorCode::INVALID_CHANNEL);
        }
        if cmd == HidCommand::CANCEL {
            // §11.2.9.1.5: no answer to CANCEL; the pending request ends with KEEPALIVE_CANCEL.
            if self.busy.as_ref().is_some_and(|b| b.cid == cid) {
                self.busy = None;
                self.send(cid, HidCommand::CBOR, &[0x2d]);
            }
            return;
        }
        if self.busy.is_some() {
            return self.error(cid, HidErrorCode::CHANNEL_BUSY);
        }
        match cmd {
            HidCommand::PING => self.send(cid, HidCommand::PING, &payload),
            HidCommand::WINK => {
                if !payload.is_empty() {
                    return self.error(cid, HidErrorCode::INVALID_LEN);
                }
                self.winks += 1;
                self.send(cid, HidCommand::WINK, &[]);
            }
            HidCommand::MSG => {
                let reply = super::u2f::msg(self, &payload);
                self.send(cid, HidCommand::MSG, &reply);
            }
            HidCommand::CBOR => {
                if payload.is_empty() {
                    return self.error(cid, HidErrorCode::INVALID_LEN);
                }
                self.touch_pressed = false; // a touch before the request does not count
                if self.faults.endless_keepalive {
                    self.busy = Some(Busy {
                        cid,
                        request: payload,
                        started: now,
                        last_keepalive: now,
                        endless: true,
                    });
                    return self.send(cid, HidCommand::KEEPALIVE, &[KeepaliveStatus::PROCESSING.0]);
                }
                let auto = self.touch_mode == TouchMode::Auto && !self.faults.refuse_touch;
                self.sync_auth_faults();
                match self.auth.process(&payload, now, auto) {
                    Outcome::Reply(r) => self.send(cid, HidCommand::CBOR, &r),
                    Outcome::NeedsTouch if auto => {
                        self.send(cid, HidCommand::CBOR, &[0x7f]);
                    }
                    Outcome::NeedsTouch => {
                        self.busy = Some(Busy {
                            cid,
                            request: payload,
                            started: now,
                            last_keepalive: now,
                            endless: false,
                        });
                        self.send(cid, HidCommand::KEEPALIVE, &[KeepaliveStatus::UPNEEDED.0]);
                    }
                }
            }
            c if c == READ_CONFIG => {
                if payload.len() != 1 {
                    return self.error(cid, HidErrorCode::INVALID_LEN);
                }
                let page = self.info.encode_page(payload[0]);
                self.send(cid, READ_CONFIG, &page);
            }
            _ => self.error(cid, HidErrorCode::INVALID_CMD),
        }
    }

    fn allocate(&mut self) -> u32 {
        let cid = self.next_cid;
        self.next_cid = if self.next_cid >= 0xffff_0000 {
            1
        } else {
            self.next_cid + 1
        };
        self.channels.retain(|&c| c != cid);
        self.channels.push(cid);
        if self.channels.len() > 64 {
            self.channels.remove(0);
        }
        cid
    }

    fn error(&mut self, cid: u32, code: HidErrorCode) {
        self.send(cid, HidCommand::ERROR, &[code.0]);
    }

    fn send(&mut self, cid: u32, cmd: HidCommand, payload: &[u8]) {
        let cid = if self.wrong_channel_now {
            cid ^ 0x0101_0101
        } else {
            cid
        };
        let Ok(reports) = fragment(cid, cmd, payload, MAX_MESSAGE_LEN) else {
            // Replies are bounded by max_msg_size well below the CTAPHID limit.
            return self.send(cid, HidCommand::ERROR, &[HidErrorCode::OTHER.0]);
        };
        for r in reports {
            match self.packet_faults.emit(&self.faults, r) {
                Emit::Send(v) => self.outbox.extend(v),
                Emit::Unplug => {
                    self.unplug();
                    return;
                }
            }
        }
        // A reorder fault on the last report of a message still delivers it.
        if let Some(h) = self.packet_faults.flush() {
            if !self.faults.reorder_packets.is_empty() {
                self.outbox.push_back(h);
            }
        }
    }
}

//! Reassembly of CTAPHID messages from packets (CTAP 2.1 §11.2.4).
//!
//! The [`Assembler`] is pure and direction-neutral. The host feeds it the
//! reports of its own channel; the simulator feeds it every report it gets and
//! it keeps one message in progress per channel. Time is the caller's business
//! (message timeouts: see [`Assembler::abandon`]).

use super::packet::{HidCommand, Packet, CONT_DATA_LEN, INIT_DATA_LEN, MAX_MESSAGE_LEN, MAX_SEQ};
use super::FrameError;
use crate::transport::Report;

/// A complete CTAPHID message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub cid: u32,
    pub cmd: HidCommand,
    pub payload: Vec<u8>,
}

#[derive(Debug)]
struct Partial {
    cid: u32,
    cmd: HidCommand,
    len: usize,
    next_seq: u8,
    data: Vec<u8>,
}

/// Turns reports into messages, checking channel, sequence and declared length.
#[derive(Debug)]
pub struct Assembler {
    max_len: usize,
    max_channels: usize,
    partial: Vec<Partial>,
}

impl Default for Assembler {
    fn default() -> Self {
        Self::new(MAX_MESSAGE_LEN)
    }
}

impl Assembler {
    /// Default bound on channels with a message in progress at once.
    pub const DEFAULT_MAX_CHANNELS: usize = 8;

    /// An assembler accepting messages up to `max_len` bytes (capped at 7609).
    pub fn new(max_len: usize) -> Self {
        Self::with_channels(max_len, Self::DEFAULT_MAX_CHANNELS)
    }

    /// Same, tracking at most `max_channels` half-received messages (device side).
    pub fn with_channels(max_len: usize, max_channels: usize) -> Self {
        Self {
            max_len: max_len.min(MAX_MESSAGE_LEN),
            max_channels: max_channels.max(1),
            partial: Vec::new(),
        }
    }

    /// Feeds one report. Returns the message it completes, if any.
    ///
    /// On error the offending channel's half-received message is dropped, so
    /// the caller can answer (device: an ERROR frame) and carry on.
    /// An init packet arriving mid-message on the same channel is an error
    /// ([`FrameError::Interrupted`]) unless it is an INIT, which resynchronises
    /// the channel (§11.2.9.1.3) and is returned as a new message.
    pub fn push(&mut self, report: &Report) -> Result<Option<Message>, FrameError> {
        match Packet::parse(report) {
            Packet::Init {
                cid,
                cmd,
                len,
                data,
            } => {
                let len = len as usize;
                if let Some(i) = self.position(cid) {
                    let old = self.partial.swap_remove(i);
                    if cmd != HidCommand::INIT {
                        return Err(FrameError::Interrupted { cid, cmd: old.cmd });
                    }
                }
                if len > self.max_len {
                    return Err(FrameError::TooLong {
                        len,
                        max: self.max_len,
                    });
                }
                if len <= INIT_DATA_LEN {
                    return Ok(Some(Message {
                        cid,
                        cmd,
                        payload: data[..len].to_vec(),
                    }));
                }
                if self.partial.len() >= self.max_channels {
                    return Err(FrameError::TooManyChannels {
                        max: self.max_channels,
                    });
                }
                let mut buf = Vec::with_capacity(len);
                buf.extend_from_slice(data);
                self.partial.push(Partial {
                    cid,
                    cmd,
                    len,
                    next_seq: 0,
                    data: buf,
                });
                Ok(None)
            }
            Packet::Cont { cid, seq, data } => {
                let Some(i) = self.position(cid) else {
                    return Err(FrameError::UnexpectedContinuation { cid, seq });
                };
                let p = &mut self.partial[i];
                if seq != p.next_seq || seq > MAX_SEQ {
                    let expected = p.next_seq;
                    self.partial.swap_remove(i);
                    return Err(FrameError::BadSequence {
                        cid,
                        expected,
                        got: seq,
                    });
                }
                let want = (p.len - p.data.len()).min(CONT_DATA_LEN);
                p.data.extend_from_slice(&data[..want]);
                p.next_seq = p.next_seq.wrapping_add(1);
                if p.data.len() < p.len {
                    return Ok(None);
                }
                let p = self.partial.swap_remove(i);
                Ok(Some(Message {
                    cid: p.cid,
                    cmd: p.cmd,
                    payload: p.data,
                }))
            }
        }
    }

    /// Whether a message on `cid` is half received.
    pub fn in_progress(&self, cid: u32) -> bool {
        self.position(cid).is_some()
    }

    /// Channels with a half-received message.
    pub fn channels_in_progress(&self) -> impl Iterator<Item = u32> + '_ {
        self.partial.iter().map(|p| p.cid)
    }

    /// Drops the half-received message on `cid` (after a message timeout);
    /// returns whether there was one.
    pub fn abandon(&mut self, cid: u32) -> bool {
        match self.position(cid) {
            Some(i) => {
                self.partial.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// Drops every half-received message.
    pub fn clear(&mut self) {
        self.partial.clear();
    }

    fn position(&self, cid: u32) -> Option<usize> {
        self.partial.iter().position(|p| p.cid == cid)
    }
}

#[cfg(test)]
mod tests {
    use super::super::packet::fragment;
    use super::*;

    fn feed(a: &mut Assembler, reports: &[Report]) -> Result<Option<Message>, FrameError> {
        let mut out = None;
        for r in reports {
            assert!(out.is_none(), "message completed early");
            out = a.push(r)?;
        }
        Ok(out)
    }

    #[test]
    fn round_trip_every_length_class() {
        for len in [0, 1, 56, 57, 58, 116, 117, 1000, 7609] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let reports = fragment(0x0102_0304, HidCommand::CBOR, &payload, 7609).unwrap();
            let mut a = Assembler::default();
            let m = feed(&mut a, &reports).unwrap().expect("complete");
            assert_eq!(
                m,
                Message {
                    cid: 0x0102_0304,
                    cmd: HidCommand::CBOR,
                    payload
                }
            );
            assert!(!a.in_progress(0x0102_0304));
        }
    }

    #[test]
    fn interleaved_channels_are_kept_apart() {
        let a1 = fragment(1, HidCommand::CBOR, &[1; 200], 7609).unwrap();
        let b1 = fragment(2, HidCommand::MSG, &[2; 100], 7609).unwrap();
        let mut a = Assembler::default();
        assert_eq!(a.push(&a1[0]).unwrap(), None);
        assert_eq!(a.push(&b1[0]).unwrap(), None);
        assert_eq!(a.push(&a1[1]).unwrap(), None);
        let b = a.push(&b1[1]).unwrap().unwrap();
        assert_eq!((b.cid, b.payload.len()), (2, 100));
        assert_eq!(a.push(&a1[2]).unwrap(), None);
        let m = a.push(&a1[3]).unwrap().unwrap();
        assert_eq!((m.cid, m.payload), (1, vec![1; 200]));
    }

    #[test]
    fn sequence_errors_are_typed_and_reset_the_channel() {
        let r = fragment(9, HidCommand::CBOR, &[0; 200], 7609).unwrap();
        let mut a = Assembler::default();
        a.push(&r[0]).unwrap();
        assert_eq!(
            a.push(&r[2]).unwrap_err(),
            FrameError::BadSequence {
                cid: 9,
                expected: 0,
                got: 1
            }
        );
        assert!(!a.in_progress(9));
        assert_eq!(
            a.push(&r[1]).unwrap_err(),
            FrameError::UnexpectedContinuation { cid: 9, seq: 0 }
        );
        // Duplicate continuation.
        a.push(&r[0]).unwrap();
        a.push(&r[1]).unwrap();
        assert!(matches!(
            a.push(&r[1]),
            Err(FrameError::BadSequence {
                expected: 1,
                got: 0,
                ..
            })
        ));
    }

    #[test]
    fn declared_length_is_bounded() {
        let mut report = [0u8; 64];
        report[..7].copy_from_slice(&[0, 0, 0, 5, 0x90, 0x1d, 0xba]); // 7610
        let mut a = Assembler::default();
        assert_eq!(
            a.push(&report).unwrap_err(),
            FrameError::TooLong {
                len: 7610,
                max: 7609
            }
        );
        let mut small = Assembler::new(1024);
        report[5..7].copy_from_slice(&1025u16.to_be_bytes());
        assert_eq!(
            small.push(&report).unwrap_err(),
            FrameError::TooLong {
                len: 1025,
                max: 1024
            }
        );
        report[5..7].copy_from_slice(&0xffffu16.to_be_bytes());
        assert!(a.push(&report).is_err());
    }

    #[test]
    fn init_mid_message() {
        let r = fragment(3, HidCommand::CBOR, &[0; 100], 7609).unwrap();
        let mut a = Assembler::default();
        a.push(&r[0]).unwrap();
        assert_eq!(
            a.push(&r[0]).unwrap_err(),
            FrameError::Interrupted {
                cid: 3,
                cmd: HidCommand::CBOR
            }
        );
        a.push(&r[0]).unwrap();
        // INIT resynchronises the channel.
        let init = fragment(3, HidCommand::INIT, &[7; 8], 7609).unwrap();
        let m = a.push(&init[0]).unwrap().unwrap();
        assert_eq!(m.cmd, HidCommand::INIT);
        assert!(!a.in_progress(3));
    }

    #[test]
    fn channel_budget_and_abandon() {
        let mut a = Assembler::with_channels(7609, 2);
        for cid in 1..=2 {
            a.push(&fragment(cid, HidCommand::CBOR, &[0; 100], 7609).unwrap()[0])
                .unwrap();
        }
        let third = fragment(3, HidCommand::CBOR, &[0; 100], 7609).unwrap();
        assert_eq!(
            a.push(&third[0]).unwrap_err(),
            FrameError::TooManyChannels { max: 2 }
        );
        assert!(a.abandon(1));
        assert!(!a.abandon(1));
        assert_eq!(a.push(&third[0]).unwrap(), None);
        assert_eq!(a.channels_in_progress().count(), 2);
        a.clear();
        assert_eq!(a.channels_in_progress().count(), 0);
    }

    #[test]
    fn any_report_bytes_are_handled_without_panic() {
        let mut a = Assembler::default();
        let mut x: u32 = 0x1234_5678;
        for _ in 0..5000 {
            let mut r = [0u8; 64];
            for b in r.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            r[0..4].copy_from_slice(&[0, 0, 0, (x % 3) as u8]);
            let _ = a.push(&r);
        }
    }
}

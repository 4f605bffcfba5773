//! CTAPHID (CTAP 2.1 §11.2 "USB Human Interface Device").
//!
//! * [`packet`]: the 64-byte report shapes, wire enums ([`HidCommand`],
//!   [`HidErrorCode`], [`KeepaliveStatus`]) and [`fragment`];
//! * [`assemble`]: the [`Assembler`] that turns reports back into messages;
//! * [`channel`]: [`HidChannel`], the host side: INIT, CBOR / MSG / vendor
//!   exchanges, KEEPALIVE, CANCEL, with bounded [`Timeouts`].
//!
//! `packet` and `assemble` are pure and used by the simulator too.

pub mod assemble;
pub mod channel;
pub mod packet;

pub use assemble::{Assembler, Message};
pub use channel::{Capabilities, HidChannel, HidError, InitInfo, TimeoutKind, Timeouts};
pub use packet::{
    fragment, HidCommand, HidErrorCode, KeepaliveStatus, Packet, BROADCAST_CID, MAX_MESSAGE_LEN,
};

use thiserror::Error;

/// A packet sequence that does not form a valid message (§11.2.4).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Declared or actual payload longer than allowed.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLong { len: usize, max: usize },
    /// A continuation packet with no message in progress on its channel.
    #[error("continuation packet (seq {seq}) on channel {cid:08x} with no message in progress")]
    UnexpectedContinuation { cid: u32, seq: u8 },
    /// A continuation packet out of order (lost, duplicated or reordered packets).
    #[error("continuation on channel {cid:08x} has seq {got}, expected {expected}")]
    BadSequence { cid: u32, expected: u8, got: u8 },
    /// A new initialization packet arrived while a `cmd` message was half received.
    #[error("new message on channel {cid:08x} interrupted an unfinished {cmd} message")]
    Interrupted { cid: u32, cmd: HidCommand },
    /// Too many channels with half-received messages (device side).
    #[error("more than {max} channels with unfinished messages")]
    TooManyChannels { max: usize },
}

impl FrameError {
    /// The CTAPHID error a device answers with (§11.2.9.1.6).
    pub fn hid_error_code(&self) -> HidErrorCode {
        match self {
            FrameError::TooLong { .. } => HidErrorCode::INVALID_LEN,
            FrameError::UnexpectedContinuation { .. }
            | FrameError::BadSequence { .. }
            | FrameError::Interrupted { .. } => HidErrorCode::INVALID_SEQ,
            FrameError::TooManyChannels { .. } => HidErrorCode::CHANNEL_BUSY,
        }
    }
}

//! Rig controller (SPEC §9): the [`Rig`] trait the station drives, the pure
//! line [`codec`], the [`serial`] port driver, a simulated rig ([`sim`]) and
//! [`NoRig`] for stations where the operator does everything by hand.
//!
//! The trait is blocking on purpose: slot workers are threads (each owns its
//! key), and the rig's one-request-one-reply protocol serialises them anyway.
//! Every call returns within a bounded time with a typed [`RigError`]; a rig
//! that is down fails fast, it never blocks a worker.

pub mod codec;
pub mod serial;
pub mod sim;

use std::fmt;
use std::time::Duration;

use thiserror::Error;

pub use codec::{Capabilities, CodecError, ErrCode, Lamp, RequestKind, RigInfo, SlotMask};

/// A rig controller: touch actuators, port power and lamps for N slots.
///
/// Slots are numbered from 0, as on the wire (see [`codec`]).
pub trait Rig: Send + Sync + fmt::Debug {
    /// Asks the rig who it is (`HELLO`); also refreshes [`Rig::info`].
    fn hello(&self) -> Result<RigInfo, RigError>;
    /// The identity from the last successful `HELLO`; `None` if the rig was
    /// never reached (or there is none).
    fn info(&self) -> Option<RigInfo>;
    /// What the rig can do, from the last `HELLO` (none if unknown).
    fn capabilities(&self) -> Capabilities {
        self.info().map(|i| i.caps).unwrap_or_default()
    }
    /// Presses the slot's touch sensor for `press` (`TOUCH`). Returns once
    /// the rig confirms.
    fn touch(&self, slot: u8, press: Duration) -> Result<(), RigError>;
    /// Switches the slot's USB port power (`POWER`).
    fn power(&self, slot: u8, on: bool) -> Result<(), RigError>;
    /// Sets the slot lamp (`LED`).
    fn led(&self, slot: u8, lamp: Lamp) -> Result<(), RigError>;
    /// Which slots hold a key (`PRESENT?`).
    fn present(&self) -> Result<SlotMask, RigError>;
    /// Current health, without I/O.
    fn health(&self) -> RigHealth;

    /// Power-cycles a slot: off, wait `off_for`, on. A YubiKey only accepts
    /// `authenticatorReset` within 10 s of power-up (SPEC §7 step 2).
    fn power_cycle(&self, slot: u8, off_for: Duration) -> Result<(), RigError> {
        self.power(slot, false)?;
        std::thread::sleep(off_for);
        self.power(slot, true)
    }
}

/// Whether the rig is usable, for the status page and the station's
/// decision to ask the operator instead (SPEC §9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RigHealth {
    /// Answering; identity from its last `HELLO`.
    Up(RigInfo),
    /// Not answering, answering garbage, or gone; why, in words.
    Down { reason: String },
    /// No rig configured: the operator touches keys and reads the page.
    Absent,
}

impl RigHealth {
    pub fn is_up(&self) -> bool {
        matches!(self, RigHealth::Up(_))
    }

    pub fn down(reason: impl Into<String>) -> Self {
        RigHealth::Down {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for RigHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RigHealth::Up(info) => write!(f, "up ({}, {} slots)", info.name, info.slots),
            RigHealth::Down { reason } => write!(f, "down: {reason}"),
            RigHealth::Absent => f.write_str("no rig (operator only)"),
        }
    }
}

/// Why a rig call failed. Classified so the station can decide: anything
/// but [`RigError::Refused`] on a healthy rig means "ask the operator".
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RigError {
    /// No reply within the deadline; the rig is now reported down.
    #[error("rig did not answer {request} within {} ms; check its cable and power", after.as_millis())]
    Timeout {
        request: RequestKind,
        after: Duration,
    },
    /// The reply was garbage, too long, or did not fit the request.
    #[error("rig sent a bad reply to {request}: {source}")]
    Protocol {
        request: RequestKind,
        source: CodecError,
    },
    /// The rig answered `ERR`.
    #[error("rig refused {request}: ERR {code} {text}")]
    Refused {
        request: RequestKind,
        code: ErrCode,
        text: String,
    },
    /// Not connected (device gone, reconnecting with backoff).
    #[error("rig is down ({reason}); reconnecting")]
    Down { reason: String },
    /// The rig (or its absence) lacks this capability.
    #[error("rig cannot {0}; the operator must do it")]
    NotSupported(&'static str),
    /// The slot is not on this rig.
    #[error("slot {slot} is not on the rig ({slots} slots)")]
    NoSuchSlot { slot: u8, slots: u8 },
    /// The request itself is out of range (e.g. a zero-length touch).
    #[error("invalid rig request: {0}")]
    Invalid(CodecError),
}

/// The rig for stations without one: every action is the operator's.
/// [`Rig::health`] is [`RigHealth::Absent`] and every call is
/// [`RigError::NotSupported`], so the station shows "touch the key" instead.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRig;

impl Rig for NoRig {
    fn hello(&self) -> Result<RigInfo, RigError> {
        Err(RigError::NotSupported(
            "identify itself (no rig configured)",
        ))
    }
    fn info(&self) -> Option<RigInfo> {
        None
    }
    fn touch(&self, _slot: u8, _press: Duration) -> Result<(), RigError> {
        Err(RigError::NotSupported("touch keys"))
    }
    fn power(&self, _slot: u8, _on: bool) -> Result<(), RigError> {
        Err(RigError::NotSupported("switch port power"))
    }
    fn led(&self, _slot: u8, _lamp: Lamp) -> Result<(), RigError> {
        Err(RigError::NotSupported("light slot lamps"))
    }
    fn present(&self) -> Result<SlotMask, RigError> {
        Err(RigError::NotSupported("sense keys"))
    }
    fn health(&self) -> RigHealth {
        RigHealth::Absent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_rig_refuses_everything_typed() {
        let r = NoRig;
        assert_eq!(r.health(), RigHealth::Absent);
        assert!(r.capabilities() == Capabilities::none());
        assert!(matches!(
            r.touch(0, Duration::from_millis(100)),
            Err(RigError::NotSupported(_))
        ));
        assert!(matches!(
            r.power_cycle(0, Duration::ZERO),
            Err(RigError::NotSupported(_))
        ));
        assert!(matches!(r.present(), Err(RigError::NotSupported(_))));
    }
}

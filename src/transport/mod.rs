//! Transports for 64-byte CTAPHID reports (CTAP 2.1 §11.2.4).
//!
//! One blocking trait, many backends: real keys through hidapi, the UDP HID
//! bridge of SPEC §10, an in-memory pair for tests, and the in-process
//! simulator. The CTAPHID layer above is written once against [`Transport`].
//! Blocking I/O is deliberate: hidapi is blocking, each slot owns its key on its
//! own thread, and a pure synchronous stack is easy to fuzz and reason about.

use std::time::Duration;
use thiserror::Error;

/// Size of a full-speed FIDO HID report, without the report-id byte.
pub const REPORT_LEN: usize = 64;

/// One raw CTAPHID report.
pub type Report = [u8; REPORT_LEN];

/// A failure below CTAPHID.
#[derive(Debug, Error)]
pub enum TransportError {
    /// The device went away (unplugged, port powered off, peer closed).
    #[error("device disconnected")]
    Disconnected,
    /// The device could not be opened or addressed.
    #[error("cannot open device {device}: {reason}")]
    Open { device: String, reason: String },
    /// The device kind cannot be opened as a report transport here.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// Any other I/O failure, with the OS's words.
    #[error("I/O error: {0}")]
    Io(String),
}

/// A duplex channel of 64-byte HID reports to one authenticator.
pub trait Transport: Send {
    /// Sends one output report.
    fn send(&mut self, report: &Report) -> Result<(), TransportError>;

    /// Waits at most `timeout` for one input report; `Ok(None)` if none came.
    /// `Duration::ZERO` must not block: it polls for a report already waiting.
    fn recv(&mut self, timeout: Duration) -> Result<Option<Report>, TransportError>;

    /// A short human name for logs and `devices list` (path, address, profile).
    fn describe(&self) -> String;
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn send(&mut self, report: &Report) -> Result<(), TransportError> {
        (**self).send(report)
    }
    fn recv(&mut self, timeout: Duration) -> Result<Option<Report>, TransportError> {
        (**self).recv(timeout)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

pub mod hid;
pub mod memory;
pub mod spec;
pub mod udp;

pub use spec::{DeviceSpec, DeviceSpecError};

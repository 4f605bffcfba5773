//! Where a slot's keys come from: one trait over hidraw paths, UDP bridges and
//! in-process simulated keys, so the slot worker is written once.

use crate::ctap2::CtapDevice;
use crate::transport::{hid::HidTransport, udp::UdpTransport, DeviceSpec, Transport};
use crate::yubikey::DeviceInfo;
use std::fmt;
use std::path::Path;

/// How the worker reaches the key in a slot.
pub enum KeyLink {
    /// 64-byte CTAPHID reports (USB HID, UDP bridge, in-process simulator).
    Hid(Box<dyn Transport>),
    /// A link that already carries CTAP2 messages (PC/SC: NFCCTAP over APDUs),
    /// with the device info read through the management application.
    Ctap {
        device: Box<dyn CtapDevice>,
        device_info: Option<DeviceInfo>,
    },
}

impl fmt::Debug for KeyLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyLink::Hid(t) => write!(f, "KeyLink::Hid({})", t.describe()),
            KeyLink::Ctap { .. } => f.write_str("KeyLink::Ctap"),
        }
    }
}

/// A slot's supply of keys.
pub trait KeySource: Send + fmt::Debug {
    /// A connection to the key in the slot now, if any.
    fn connect(&mut self) -> Option<KeyLink>;
    /// The worker finished with the current key (PASS, FAIL or quarantine) and
    /// the operator takes it out. A simulated slot gets a fresh blank key.
    fn key_done(&mut self) {}
    /// Presses the key's touch sensor where the source can (simulator); `false`
    /// means a person or the rig must do it.
    fn touch(&mut self) -> bool {
        false
    }
}

/// A hidraw path (a rig's fixed USB port).
#[derive(Debug)]
pub struct HidSource {
    path: String,
}

impl KeySource for HidSource {
    fn connect(&mut self) -> Option<KeyLink> {
        if !Path::new(&self.path).exists() {
            return None;
        }
        HidTransport::open(&self.path)
            .ok()
            .map(|t| KeyLink::Hid(Box::new(t)))
    }
}

/// A key behind the UDP HID bridge (SPEC §10): present while it answers INIT.
#[derive(Debug)]
pub struct UdpSource {
    peer: String,
}

impl KeySource for UdpSource {
    fn connect(&mut self) -> Option<KeyLink> {
        UdpTransport::connect(&self.peer, None)
            .ok()
            .map(|t| KeyLink::Hid(Box::new(t)))
    }
}

/// Why a slot's device cannot be used by this build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceError(pub String);

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The key source for a configured hardware or network device (`hid`,
/// `udp:`, `pcsc:`); `None` for `sim:`, whose slots live in `simslot` (which
/// builds on this module, not the other way round: `Station::start` picks).
pub fn open_device(spec: &DeviceSpec) -> Option<Box<dyn KeySource>> {
    match spec {
        DeviceSpec::Hid(path) => Some(Box::new(HidSource { path: path.clone() })),
        DeviceSpec::Udp { host, port } => Some(Box::new(UdpSource {
            peer: format!("{host}:{port}"),
        })),
        DeviceSpec::Pcsc(reader) => Some(Box::new(PcscSource {
            reader: reader.clone(),
        })),
        DeviceSpec::Sim(_) => None,
    }
}

/// A key in a PC/SC reader (CCID or contactless; SPEC §11 `pcsc:READER`).
#[derive(Debug)]
pub struct PcscSource {
    reader: String,
}

impl KeySource for PcscSource {
    fn connect(&mut self) -> Option<KeyLink> {
        use crate::pcsc::{apdu::LengthMode, NfcCtap};
        // Serial, form factor and firmware through the management application;
        // a card without it is still usable, matched on its AAGUID alone.
        let device_info = crate::pcsc::device_info(&self.reader).ok();
        let device = NfcCtap::open(&self.reader, LengthMode::Short).ok()?;
        Some(KeyLink::Ctap {
            device: Box::new(device),
            device_info,
        })
    }
}

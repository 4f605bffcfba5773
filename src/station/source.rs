//! Where a slot's keys come from: one trait over hidraw paths, UDP bridges and
//! in-process simulated keys, so the slot worker is written once.

use crate::transport::{hid::HidTransport, udp::UdpTransport, DeviceSpec, Transport};
use std::fmt;
use std::path::Path;

/// A slot's supply of keys.
pub trait KeySource: Send + fmt::Debug {
    /// A connection to the key in the slot now, if any.
    fn connect(&mut self) -> Option<Box<dyn Transport>>;
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
    fn connect(&mut self) -> Option<Box<dyn Transport>> {
        if !Path::new(&self.path).exists() {
            return None;
        }
        HidTransport::open(&self.path)
            .ok()
            .map(|t| Box::new(t) as Box<dyn Transport>)
    }
}

/// A key behind the UDP HID bridge (SPEC §10): present while it answers INIT.
#[derive(Debug)]
pub struct UdpSource {
    peer: String,
}

impl KeySource for UdpSource {
    fn connect(&mut self) -> Option<Box<dyn Transport>> {
        UdpTransport::connect(&self.peer, None)
            .ok()
            .map(|t| Box::new(t) as Box<dyn Transport>)
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

/// The key source for a configured device.
pub fn open(
    spec: &DeviceSpec,
    slot_index: usize,
    seed: u64,
    sim_hook: Option<super::simslot::SimHook>,
) -> Result<Box<dyn KeySource>, SourceError> {
    match spec {
        DeviceSpec::Hid(path) => Ok(Box::new(HidSource { path: path.clone() })),
        DeviceSpec::Udp { host, port } => Ok(Box::new(UdpSource {
            peer: format!("{host}:{port}"),
        })),
        DeviceSpec::Sim(profile) => super::simslot::SimSource::new(profile, slot_index, seed)
            .map(|s| Box::new(s.with_hook(sim_hook)) as Box<dyn KeySource>),
        DeviceSpec::Pcsc(reader) => Err(SourceError(format!(
            "pcsc:{reader}: PC/SC slots are not wired into the station yet; use a hidraw path, udp: or sim:"
        ))),
    }
}
